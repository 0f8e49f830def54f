"""No run left RUNNING, on any machine: a stop at any moment (start-up, each node, between two
registry versions) ends the run FAILED with a non-zero exit; after SIGKILL the command (and the
next run) marks the run FAILED because its process is gone; runs started together on a fresh
store all succeed.

No test waits a fixed time: each waits for an observable event, the line a test-only pause
point (``runs.pause_point``) appends to a file, or a run in the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from direct2event.glue import registry, runs
from direct2event.glue.tracking import prepare_store

DIGITS_NODES = (
    "prepare_data",
    "train_direct_model",
    "predict_direct_logits",
    "plot_direct_training",
    "calibrate_surrogate",
    "plot_calibration",
    "scale_event_thresholds",
    "finetune_lambda0",
    "plot_thresholds",
    "tune_rate_lambda",
    "finetune_event_model",
    "plot_tuning",
    "evaluate_transfer",
    "export_nir",
    "plot_finetuning",
    "run_ablation",
    "plot_energy",
    "benchmark_shifts",
    "plot_shift",
    "plot_shift_energy",
    "plot_stream",
    "build_summary",
    "result_tables",
    "plot_ablation",
    "register_networks",
)

pytestmark = pytest.mark.slow  # kedro runs stopped by signals


def test_stale_reason_names_why_a_process_is_gone() -> None:
    now, host = 10_000.0, "here"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert runs.stale_reason({}, now, host) is None  # no process tags: cannot tell
    alive = {"host": host, "pid": str(os.getpid()), "heartbeat": str(now - 10)}
    assert runs.stale_reason(alive, now, host) is None
    gone = {**alive, "pid": str(dead.pid)}
    assert f"process {dead.pid} on here is gone" in runs.stale_reason(gone, now, host)
    # tagged at creation, stopped before its first heartbeat: still told apart by its pid
    untimed = {"host": host, "pid": str(dead.pid)}
    assert f"process {dead.pid} on here is gone" in runs.stale_reason(untimed, now, host)
    assert runs.stale_reason({"host": "elsewhere", "pid": "1"}, now, host) is None
    silent = {"host": "elsewhere", "pid": "1", "heartbeat": str(now - runs.STALE_AFTER_S - 60)}
    assert "no heartbeat from elsewhere for 6 min" in runs.stale_reason(silent, now, host)


def test_the_pipeline_node_list_is_the_one_stopped_here() -> None:
    """The per-node stop test below covers every node of the digits pipeline."""
    from kedro.framework.project import configure_project, pipelines

    configure_project("direct2event")
    names = tuple(n.name.split(".", 1)[1].split(".", 1)[1] for n in pipelines["digits"].nodes)
    assert sorted(names) == sorted(DIGITS_NODES)


def env_for(project: Path, pause_at: str = "") -> dict[str, str]:
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
    }
    if pause_at:
        env[runs.PAUSE_ENV] = pause_at
        env[runs.PAUSE_FILE_ENV] = str(project / "paused.txt")
    return env


def start(project: Path, pause_at: str = "", log: str = "run.log") -> subprocess.Popen:
    """`kedro run --pipelines digits` in its own process, as a user starts it, tracked in the
    project's mlflow.db; with ``pause_at`` it stops at that pause point and says so in
    ``paused.txt``."""
    out = (project / log).open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "kedro", "run", "--pipelines", "digits"],
        cwd=project,
        env=env_for(project, pause_at),
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def wait_paused(project: Path, proc: subprocess.Popen, point: str, timeout_s: float = 300) -> None:
    """Wait until ``proc`` reports that it reached the pause point (or fail with its log)."""
    marker = project / "paused.txt"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if marker.exists() and f"{point} {proc.pid}" in marker.read_text():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)  # polling an event, not waiting a fixed time before acting
    raise AssertionError(
        f"never paused at {point} (exit {proc.poll()}):\n"
        + (project / "run.log").read_text()[-3000:]
    )


def store(project: Path) -> MlflowClient:
    uri = f"sqlite:///{project / 'mlflow.db'}"
    prepare_store(uri)  # the same lock as kedro's: never two processes creating the schema
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri, registry_uri=uri)


def assert_nothing_left_running(client: MlflowClient, pid: int, signame: str) -> None:
    exp = client.get_experiment_by_name("direct2event")
    found = client.search_runs([exp.experiment_id]) if exp else []
    mine = [r for r in found if r.data.tags.get("pid") == str(pid)]
    (pipeline_run,) = [r for r in mine if "mlflow.parentRunId" not in r.data.tags]
    assert pipeline_run.info.status == "FAILED"
    assert pipeline_run.data.tags["failure_reason"] == f"stopped by {signame}"
    assert not [r for r in found if r.info.status == "RUNNING"]
    for trial in mine:  # sweep trials: finished before the stop, or ended FAILED by it
        if trial.info.status == "FAILED":
            assert trial.data.tags["failure_reason"] == f"stopped by {signame}"


def assert_whole_versions(client: MlflowClient) -> None:
    """Every registered version carries all its tags; none of a failed run is champion."""
    for model in client.search_registered_models():
        for version in client.search_model_versions(f"name = '{model.name}'"):
            assert registry.COMPLETE_TAG in version.tags, (model.name, version.version)
            assert "accuracy" in version.tags and "arch" in version.tags
        assert registry.CHAMPION not in model.aliases


def stop_at(project: Path, point: str, sig: int = signal.SIGTERM) -> int:
    proc = start(project, pause_at=point)
    wait_paused(project, proc, point)
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    assert code != 0, (project / "run.log").read_text()[-3000:]
    return proc.pid


# a stop in training, in the sweep (with its trials' nested runs open) and in the registry: the
# three kinds of node; every node boundary is checked in-process below
STOPPED_NODES = ("train_direct_model", "tune_rate_lambda", "register_networks")


@pytest.mark.parametrize("node", STOPPED_NODES)
def test_sigterm_in_each_node_ends_the_run_failed(project: Path, node: str) -> None:
    pid = stop_at(project, f"node:{node}")
    client = store(project)
    assert_nothing_left_running(client, pid, "SIGTERM")
    assert_whole_versions(client)


@pytest.mark.parametrize(
    ("point", "sig"),
    [
        ("start", signal.SIGTERM),  # before kedro-mlflow creates the run
        ("run_created", signal.SIGTERM),  # the run exists, before its heartbeat
        ("run_created", signal.SIGINT),  # Ctrl-C there used to mark the empty run FINISHED
        ("registered:direct", signal.SIGTERM),  # between the two registry versions
    ],
)
def test_a_stop_at_start_up_or_in_registration_ends_clean(
    project: Path, point: str, sig: int
) -> None:
    pid = stop_at(project, point, sig)
    client = store(project)
    if point == "start":  # no run was created: nothing to close
        exp = client.get_experiment_by_name("direct2event")
        assert exp is None or not client.search_runs([exp.experiment_id])
        return
    assert_nothing_left_running(client, pid, signal.Signals(sig).name)
    assert_whole_versions(client)
    if point == "registered:direct":
        assert [str(v.version) for v in client.search_model_versions("name = 'digits-direct'")] == [
            "1"
        ]
        assert not client.search_model_versions("name = 'digits-event'")


def test_a_stop_inside_a_database_write_waits_for_its_end(tmp_path: Path) -> None:
    """SIGTERM arriving while the main thread is inside SQLAlchemy is raised only after it."""
    script = tmp_path / "stop_in_db.py"
    script.write_text(
        "import os, signal, sys\n"
        "import sqlalchemy\n"
        "from direct2event.glue import runs\n"
        "runs.install_stop_handlers()\n"
        f"engine = sqlalchemy.create_engine('sqlite:///{tmp_path / 'x.db'}')\n"
        "with engine.begin() as conn:\n"
        "    conn.exec_driver_sql('create table t (x int)')\n"
        "def inside(*_a):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    inside.done = True\n"
        "sqlalchemy.event.listen(engine, 'before_cursor_execute', inside)\n"
        "try:\n"
        "    with engine.begin() as conn:\n"
        "        conn.exec_driver_sql('insert into t values (1)')\n"
        "        conn.exec_driver_sql('insert into t values (2)')\n"
        "    import time\n"
        "    deadline = time.monotonic() + 120\n"  # waits for the deferred stop, not a set time
        "    while time.monotonic() < deadline:\n"
        "        time.sleep(0.01)\n"
        "except runs.Terminated as err:\n"
        "    print('raised after the write:', err)\n"
        "    with engine.connect() as conn:\n"
        "        print('rows', conn.exec_driver_sql('select count(*) from t').scalar())\n"
        "    sys.exit(3)\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    # a stopped process ends 128 + SIGTERM whatever code it was about to return
    assert out.returncode == 128 + signal.SIGTERM, out.stderr
    # the signal came inside the first insert; the transaction still committed both rows
    assert out.stdout.splitlines() == ["raised after the write: stopped by SIGTERM", "rows 2"]


LOST_STOP = """
import os, signal, sys, weakref
import torch
from direct2event.glue import runs
from direct2event.snn.encoders import InputCoding
from direct2event.snn.models import build_model
from direct2event.snn.training import Callback, FitConfig, Split, fit

runs.install_stop_handlers()
class Thing:
    pass
thing = Thing()
weakref.finalize(thing, os.kill, os.getpid(), signal.SIGTERM)  # the handler runs in the callback
del thing
print("went on after the stop:", runs.stopped_by(), flush=True)
if sys.argv[1] == "train":
    net = build_model("convnet", (1, 8, 8), 10, channels=(4,))
    data = Split(torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    cfg = FitConfig(epochs=3, lr=1e-2, batch_size=16, coding=InputCoding("analog", 2), progress=False)
    steps = []
    class Count(Callback):
        def on_step_end(self, loop):
            steps.append(1)
    try:
        fit(net, data, cfg, torch.device("cpu"), callbacks=[Count()])
    finally:
        print("optimizer steps made:", len(steps), flush=True)
print("reached the end", flush=True)
"""


@pytest.mark.parametrize("work", ["train", "nothing"])
def test_a_stop_lost_in_a_weakref_callback_still_stops_the_process(
    tmp_path: Path, work: str
) -> None:
    """SIGTERM whose handler runs inside a weakref callback: Python prints "Exception ignored"
    and goes on. The flag still stops the training at its first safe point (no optimizer step
    is made), and a process with no safe point left still exits 128 + SIGTERM, not 0."""
    out = subprocess.run(
        [sys.executable, "-c", LOST_STOP, work],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert "Exception ignored in" in out.stderr  # the exception really was lost
    assert out.returncode == 128 + signal.SIGTERM, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "went on after the stop: SIGTERM"
    if work == "train":
        assert lines[1:] == ["optimizer steps made: 0"]
        assert "runs.Terminated: stopped by SIGTERM" in out.stderr.rsplit("Exception ignored")[-1]
    else:
        assert lines[1:] == ["reached the end"]
    assert not (tmp_path / "mlflow.db").exists()  # no run was open: no store was made


def test_a_stop_lost_in_a_destructor_ends_the_kedro_run_failed(project: Path) -> None:
    """SIGTERM delivered inside a ``__del__`` just before D's training: the exception is lost,
    the run still stops at D's first training step, exits non-zero, its run ends FAILED and
    nothing is registered (before: D trained, all nodes ran, exit 0)."""
    env = {**env_for(project), runs.SIGNAL_IN_DEL_ENV: "node:train_direct_model"}
    out = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--pipelines", "digits"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = out.stdout + out.stderr
    assert "Exception ignored in" in log and "_SignalOnDelete.__del__" in log
    assert out.returncode != 0, log[-3000:]
    assert "Running node: calibrate_surrogate" not in log  # stopped inside D's training
    client = store(project)
    exp = client.get_experiment_by_name("direct2event")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "stopped by SIGTERM"
    assert not client.search_registered_models()


def test_terminated_is_not_swallowed_by_except_exception() -> None:
    """Library code's ``except Exception`` (MLflow's dependency check did this) lets it pass."""
    assert not issubclass(runs.Terminated, Exception)
    with pytest.raises(runs.Terminated):
        try:
            raise runs.Terminated("stopped by SIGTERM")
        except Exception:  # what MLflow, Kedro and plugins write
            pytest.fail("swallowed")


PREPARE_AT = """
import sys, time
from pathlib import Path
import mlflow
from direct2event.glue.tracking import prepare_store
uri, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ready.write_text("imported")
while not go.exists():  # a barrier: all three prepare the new store at the same instant
    time.sleep(0.001)
prepare_store(uri)
mlflow.set_tracking_uri(uri)
run = mlflow.MlflowClient().create_run("0")
print(run.info.run_id)
"""


def test_processes_preparing_a_fresh_store_together_all_succeed(tmp_path: Path) -> None:
    """Three processes open a new mlflow.db at the same instant, as runs started together do:
    one creates the schema under the lock, the others wait for it (before: `table
    _alembic_tmp_experiments already exists`), and each can then write a run."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PREPARE_AT, uri, str(tmp_path / f"ready{i}"), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(3)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(3)):  # all have imported
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.write_text("go")
    outs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outs)[-3000:]
    ids = {o.split()[-1] for o in outs}
    client = MlflowClient(uri)
    assert {r.info.run_id for r in client.search_runs(["0"])} == ids and len(ids) == 3


def test_every_node_boundary_is_a_safe_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, for every node of the digits pipeline: once a stop has arrived (its
    exception lost or not), the hooks before and after the node raise it."""
    from kedro.framework.project import configure_project, pipelines

    from direct2event.glue.hooks import ProjectHooks

    configure_project("direct2event")
    hooks = ProjectHooks()
    nodes = list(pipelines["digits"].nodes)
    assert len(nodes) == len(DIGITS_NODES)
    for node in nodes:  # nothing stopped: the boundaries pass
        hooks.before_node_run(node)
        hooks.after_node_run(node, {})
    monkeypatch.setattr(runs._stop, "signal", "SIGTERM")  # a stop whose exception was lost
    for node in nodes:
        with pytest.raises(runs.Terminated, match="stopped by SIGTERM"):
            hooks.before_node_run(node)
        with pytest.raises(runs.Terminated, match="stopped by SIGTERM"):
            hooks.after_node_run(node, {})
    with pytest.raises(runs.Terminated):  # and the run never ends FINISHED
        hooks.after_pipeline_run()


def test_a_sigkilled_run_is_marked_failed_by_the_command(project: Path) -> None:
    proc = start(project, pause_at="node:train_direct_model")
    wait_paused(project, proc, "node:train_direct_model")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    client = store(project)
    (run,) = [
        r
        for r in mlflow.search_runs(experiment_names=["direct2event"], output_format="list")
        if r.data.tags.get("pid") == str(proc.pid)
    ]
    run_id = run.info.run_id
    assert client.get_run(run_id).info.status == "RUNNING"  # what SIGKILL leaves behind
    env = env_for(project)
    dry = subprocess.run(
        [sys.executable, "-m", "direct2event", "reap-runs", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert f"would mark run {run_id} FAILED" in dry.stdout
    assert client.get_run(run_id).info.status == "RUNNING"
    done = subprocess.run(
        [sys.executable, "-m", "direct2event", "reap-runs"],
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


def test_every_run_is_tagged_with_its_process_when_created(tmp_path: Path) -> None:
    """The run-context provider tags host and pid in the run's first write."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("tagged")
    with mlflow.start_run() as run:
        tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["pid"] == str(os.getpid())
    assert tags["host"]
