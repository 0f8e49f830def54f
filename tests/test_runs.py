"""No run left RUNNING: SIGTERM ends a real `kedro run` FAILED; after SIGKILL the command (and the
next run) marks the run FAILED because its process is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow

from direct2event import runs


def test_stale_reason_names_why_a_process_is_gone() -> None:
    now, host = 10_000.0, "here"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert runs.stale_reason({}, now, host) is None  # no process tags: cannot tell
    alive = {"host": host, "pid": str(os.getpid()), "heartbeat": str(now - 10)}
    assert runs.stale_reason(alive, now, host) is None
    gone = {**alive, "pid": str(dead.pid)}
    assert f"process {dead.pid} on here is gone" in runs.stale_reason(gone, now, host)
    silent = {"host": "elsewhere", "pid": "1", "heartbeat": str(now - runs.STALE_AFTER_S - 60)}
    assert "no heartbeat from elsewhere for 6 min" in runs.stale_reason(silent, now, host)


def start(project: Path) -> subprocess.Popen:
    """`kedro run --pipelines digits` in its own process, as a user starts it, tracked in the
    project's mlflow.db (mlflow.set_tracking_uri in this process exports MLFLOW_TRACKING_URI)."""
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
    }
    log = (project / "run.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "kedro", "run", "--pipelines", "digits"],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def running_run(project: Path, pid: int, timeout_s: float = 180) -> str:
    """The id of the pipeline run of process ``pid`` once it is RUNNING with its heartbeat."""
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        time.sleep(1.0)
        try:
            found = mlflow.search_runs(experiment_names=["direct2event"], output_format="list")
        except Exception:
            continue
        for run in found:
            if run.data.tags.get("pid") == str(pid) and run.info.status == "RUNNING":
                return run.info.run_id
    raise AssertionError((project / "run.log").read_text()[-3000:])


def test_sigterm_ends_the_run_failed_and_exits_non_zero(project: Path) -> None:
    proc = start(project)
    run_id = running_run(project, proc.pid)
    time.sleep(3)  # inside the first nodes
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) != 0
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "stopped by SIGTERM"
    left = mlflow.search_runs(
        experiment_names=["direct2event"], filter_string="attributes.status = 'RUNNING'"
    )
    assert len(left) == 0


def test_a_sigkilled_run_is_marked_failed_by_the_command(project: Path) -> None:
    proc = start(project)
    run_id = running_run(project, proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.status == "RUNNING"  # what SIGKILL leaves behind
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    dry = subprocess.run(
        [sys.executable, "-m", "direct2event.runs", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert f"would mark run {run_id} FAILED" in dry.stdout
    assert client.get_run(run_id).info.status == "RUNNING"
    done = subprocess.run(
        [sys.executable, "-m", "direct2event.runs"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "1 run(s) marked FAILED" in done.stdout
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert f"process {proc.pid}" in run.data.tags["failure_reason"]
    assert "is gone" in run.data.tags["failure_reason"]


def test_reap_marks_a_dead_processs_run_and_its_nested_runs(tmp_path: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("direct2event")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with mlflow.start_run() as ghost:  # a run whose process died without closing it
        mlflow.set_tags({**runs.process_tags(), "pid": str(dead.pid)})
        with mlflow.start_run(nested=True) as trial:
            pass
    client = mlflow.MlflowClient()
    client.update_run(ghost.info.run_id, "RUNNING")
    client.update_run(trial.info.run_id, "RUNNING")
    reaped = runs.reap(client, keep=None, log=lambda _m: None)
    assert set(reaped) == {ghost.info.run_id, trial.info.run_id}
    assert client.get_run(trial.info.run_id).info.status == "FAILED"
    assert "parent run" in client.get_run(trial.info.run_id).data.tags["failure_reason"]
