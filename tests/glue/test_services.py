"""The scale-out mode for real: a PostgreSQL (Optuna study + MLflow backend) and an MLflow
tracking server started by the project, three `kedro run --pipelines digits.sweep` workers at
once, one SIGKILLed mid-trial and restarted, then the final run; and workers that cannot reach
a service stop within seconds saying which one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from direct2event.glue import registry, services
from direct2event.glue.sweep.tracking import set_tag_once
from tests.conftest import run

pytestmark = pytest.mark.slow  # real PostgreSQL, MLflow servers and worker processes

N_TRIALS = 6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """PostgreSQL and the MLflow server, stopped by pid at the end (checked)."""
    svc = services.start(tmp_path / "services", pg_port=free_port(), mlflow_port=free_port())
    monkeypatch.setenv("PGPASSFILE", str(svc.pgpass))  # this process reads the study too
    yield svc
    stopped = services.stop(svc.folder)
    assert len(stopped) == 2, stopped
    assert not services.alive(svc.postgres_pid) and not services.alive(svc.mlflow_pid)


def worker(project: Path, params: str, env: dict[str, str], n: int) -> subprocess.Popen:
    """A sweep worker as a user starts it on another machine."""
    full = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full.update({"KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200", **env})
    log = (project / f"worker{n}.log").open("a")
    cmd = [sys.executable, "-m", "kedro", "run", "--pipelines", "digits.sweep", "--params", params]
    return subprocess.Popen(cmd, cwd=project, env=full, stdout=log, stderr=subprocess.STDOUT)


def running_trial_of(storage: str, pid: int, timeout_s: float = 300) -> int:
    """The number of a trial process ``pid`` is running, as soon as there is one."""
    db = optuna.storages.RDBStorage(storage)  # one connection pool for all the polling
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for summary in optuna.get_all_study_summaries(db):
            study = optuna.load_study(study_name=summary.study_name, storage=db)
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.user_attrs.get("pid") == pid:
                    db.engine.dispose()
                    return t.number
        time.sleep(0.2)
    db.engine.dispose()
    raise AssertionError(f"worker {pid} never ran a trial")


def wait_for_trial_run(tracking_uri: str, number: int, timeout_s: float = 120) -> None:
    """Wait until the MLflow run of trial ``number`` exists (the worker opens it right after
    Optuna marks the trial RUNNING), so that a kill lands inside the tracked trial."""
    client = mlflow.MlflowClient(tracking_uri)
    query = f"tags.kind = 'tuning_trial' and tags.trial_number = '{number}'"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        exp = client.get_experiment_by_name("direct2event")
        if exp is not None and client.search_runs([exp.experiment_id], query):
            return
        time.sleep(0.2)
    raise AssertionError(f"trial {number} never got its MLflow run")


def test_three_workers_one_killed_share_postgres_and_an_mlflow_server(
    project: Path, started: services.Services
) -> None:
    svc = started
    env = {"MLFLOW_TRACKING_URI": svc.tracking_uri, "PGPASSFILE": str(svc.pgpass)}
    # 1. network D, registered on the server (a run without sweep)
    first = run(project, "digits.tuning.enabled=false", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert not (project / "mlflow.db").exists()  # everything went to the server

    # 2. three workers on one PostgreSQL study; worker 0 is SIGKILLed inside a trial
    params = ",".join(
        [
            "digits.source_model=latest",
            f"digits.tuning.storage={svc.storage_url}",
            f"digits.tuning.n_trials={N_TRIALS}",
            "digits.tuning.heartbeat_interval_s=2",
            "digits.tuning.grace_period_s=20",  # room for a loaded CPU
        ]
    )
    procs = [worker(project, params, env, n) for n in range(3)]
    try:
        killed_trial = running_trial_of(svc.storage_url, procs[0].pid)
        wait_for_trial_run(svc.tracking_uri, killed_trial)
        procs[0].send_signal(signal.SIGKILL)
        assert procs[0].wait(timeout=30) == -signal.SIGKILL
        killed_pid = procs[0].pid
        procs[0] = worker(project, params, env, 0)  # restarted
        codes = [p.wait(timeout=900) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    failed = {n: code for n, code in enumerate(codes) if code != 0}
    assert not failed, (
        "\n".join(  # the failed workers' own logs, their ends
            f"worker {n} exited {code}:\n{(project / f'worker{n}.log').read_text()[-4000:]}"
            for n, code in failed.items()
        )
    )

    [name] = optuna.get_all_study_names(svc.storage_url)
    study = optuna.load_study(study_name=name, storage=svc.storage_url)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    stopped = [t for t in trials if t.state == TrialState.PRUNED]  # tuning.early_stop
    assert len(complete) + len(stopped) == N_TRIALS and complete
    killed = trials[killed_trial]
    assert killed.state == TrialState.FAIL and killed.user_attrs["pid"] == killed_pid
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]

    # 3. the final run: choice, fine-tuning, evaluation and registration, once
    final = run(project, params, env=env)
    assert final.returncode == 0, final.stderr[-3000:]
    assert study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) == complete  # no new

    mlflow.set_tracking_uri(svc.tracking_uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("direct2event")
    trial_runs = client.search_runs(
        [exp.experiment_id], f"tags.kind = 'tuning_trial' and tags.study = '{name}'"
    )
    by_number: dict[int, list] = {}
    for r in trial_runs:
        by_number.setdefault(int(r.data.tags["trial_number"]), []).append(r)
    worker_runs = client.search_runs([exp.experiment_id], "tags.kind = 'sweep_worker'")
    assert len(worker_runs) == 4  # three workers and the restarted one
    for t in complete:
        [r] = by_number[t.number]  # exactly one MLflow run per complete trial
        assert r.info.status == "FINISHED"
        assert r.data.metrics["val_accuracy"] == pytest.approx(t.values[0])
        assert r.data.metrics["energy_nJ"] == pytest.approx(t.values[1])  # nJ in both
        assert r.data.tags["mlflow.parentRunId"] in {w.info.run_id for w in worker_runs}
    for t in stopped:  # a stopped trial's run ends FINISHED, marked PRUNED with its reason
        [r] = by_number[t.number]
        assert r.info.status == "FINISHED" and r.data.tags["state"] == "PRUNED"
        assert r.data.tags["stopped_reason"] == t.user_attrs["stopped_reason"]
    # the killed worker's run and its trial run were marked FAILED by the restarted worker
    [killed_run] = by_number[killed_trial]
    assert killed_run.info.status == "FAILED"
    [killed_worker] = [w for w in worker_runs if w.data.tags["pid"] == str(killed_pid)]
    assert killed_worker.info.status == "FAILED"

    # the final run: its Pareto plot downloads from the server, its E is registered
    [final_run] = client.search_runs(
        [exp.experiment_id],
        "attributes.run_name = 'digits' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert final_run.data.params["tuning.storage"] == svc.storage_url
    png = mlflow.artifacts.download_artifacts(
        run_id=final_run.info.run_id, artifact_path="plots/tuning.png", dst_path=str(project / "dl")
    )
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    served = Path(svc.folder, "mlflow-artifacts").rglob(f"{final_run.info.run_id}/**/tuning.png")
    # stored by the server, not in the project: under plots/ and at the run's top level
    assert sorted(p.parent.name for p in served) == ["artifacts", "plots"]
    chosen = float(final_run.data.params["rate_lambda"])
    assert chosen in [pytest.approx(t.params["rate_lambda"]) for t in complete]
    versions = client.search_model_versions("name = 'digits-event'")
    assert len(versions) == 2  # the first run's E (configured lambda) and the final run's
    [event] = [v for v in versions if v.run_id == final_run.info.run_id]
    assert float(event.tags["rate_lambda"]) == pytest.approx(chosen)
    net = registry.load(f"models:/digits-event/{event.version}")
    assert net.config["classes"] == 10


def test_a_worker_without_its_database_or_server_stops_within_seconds(
    project: Path, started: services.Services
) -> None:
    svc = started
    closed = free_port()  # nothing listens here
    env = {"MLFLOW_TRACKING_URI": svc.tracking_uri, "PGPASSFILE": str(svc.pgpass)}
    t0 = time.monotonic()
    no_db = run(
        project,
        f"digits.tuning.storage=postgresql+psycopg2://d2e@127.0.0.1:{closed}/optuna",
        key="digits.sweep",
        env=env,
    )
    assert no_db.returncode != 0
    assert "Cannot open the Optuna storage (the study's database)" in no_db.stderr
    assert f"127.0.0.1:{closed}" in no_db.stderr and "tuning.storage" in no_db.stderr
    no_server = run(
        project,
        f"digits.tuning.storage={svc.storage_url}",
        key="digits.sweep",
        env={**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed}"},
    )
    assert no_server.returncode != 0
    assert f"Cannot reach the MLflow tracking server http://127.0.0.1:{closed}" in no_server.stderr
    assert "MLFLOW_TRACKING_URI" in no_server.stderr
    assert time.monotonic() - t0 < 120  # two kedro start-ups, no retries


def test_no_secret_reaches_disk_after_a_run_with_a_real_postgresql(
    project: Path, started: services.Services
) -> None:
    """The study's password in libpq's ``?password=`` form and in PGPASSWORD, and a tracking URI
    with user:password: after a successful run none of them is in any file under the project,
    the MLflow server's artifact store and database files (PostgreSQL's WAL included), or the
    console. Only ``pgpass``, the password file itself, holds it."""
    svc = started
    password = svc.pgpass.read_text().strip().rsplit(":", 1)[-1]
    tracking_secret = "Track-Secret-42x"
    storage = (
        f"postgresql+psycopg2://{services.USER}@{svc.host}:{svc.pg_port}/optuna"
        f"?connect_timeout=5&password={password}"
    )
    env = {
        "MLFLOW_TRACKING_URI": f"http://viewer:{tracking_secret}@{svc.host}:{svc.mlflow_port}",
        "PGPASSWORD": password,
    }
    done = run(project, f"digits.tuning.storage={storage},digits.tuning.n_trials=2", env=env)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]
    assert "password=***" in console or "password=" not in console
    for secret in (password, tracking_secret):
        assert secret not in console
        for root in (project, Path(svc.folder)):
            for path in root.rglob("*"):
                if path.is_file() and path.name != "pgpass":
                    assert secret.encode() not in path.read_bytes(), path
    reports = list(project.rglob("tuning_report.json"))
    assert reports and "password=***" in reports[0].read_text()


def test_workers_marking_the_chosen_trial_at_once_all_succeed(started: services.Services) -> None:
    """Every worker that finishes a shared study tags the chosen trial's MLflow run; on the
    PostgreSQL-backed server two simultaneous first writes of one tag collide on its unique key
    (seen in `make test`: a worker failed with UniqueViolation on tag "chosen"). Four threads
    released together write each new tag, 15 rounds: every write returns, and each tag holds a
    value one of them wrote."""
    client = mlflow.MlflowClient(svc_uri := started.tracking_uri)
    exp = client.create_experiment("race")
    run_id = client.create_run(exp).info.run_id
    writers, rounds = 4, 15
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        own = mlflow.MlflowClient(svc_uri)
        for r in range(rounds):
            barrier.wait()
            try:
                set_tag_once(own, run_id, f"chosen_{r}", "true")
                set_tag_once(own, run_id, f"chosen_by_run_{r}", f"worker-{n}")
            except BaseException as err:  # collected and asserted below
                errors.append(err)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[:3]
    tags = client.get_run(run_id).data.tags
    assert all(tags[f"chosen_{r}"] == "true" for r in range(rounds))
    assert {tags[f"chosen_by_run_{r}"] for r in range(rounds)} <= {
        f"worker-{n}" for n in range(writers)
    }
