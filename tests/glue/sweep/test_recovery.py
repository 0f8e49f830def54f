"""Dead and stopped workers never cost the sweep a trial nor make it wait forever: a worker
killed at every moment of a trial's life (SQLite and PostgreSQL), a dead worker on another
machine, a RUNNING trial with no owner and no heartbeat; stopped trials' lambdas measured again
once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from direct2event.glue.sweep.config import PARAM
from direct2event.glue.sweep.recovery import (
    fail_dead_local_trials,
    requeue_interrupted_trials,
    retry_params,
)
from direct2event.glue.sweep.storage import lambda_distribution, open_storage
from direct2event.glue.sweep.study import FINISHED
from tests.glue.sweep.trials import WORKER, trial

pytestmark = pytest.mark.slow  # workers killed at every moment of a trial


def test_a_dead_workers_trial_on_this_host_fails_at_once(tmp_path: Path) -> None:
    """A trial whose worker process on this host is gone is failed without waiting for the
    heartbeat's grace period; a live worker's trial is left running."""
    import socket

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=open_storage(url), directions=["maximize"] * 2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone, live = study.ask(), study.ask()
    for running, pid in ((gone, dead.pid), (live, os.getpid())):
        running.set_user_attr("host", socket.gethostname())
        running.set_user_attr("pid", pid)
    assert fail_dead_local_trials(study) == [gone.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {gone.number: TrialState.FAIL, live.number: TrialState.RUNNING}
    assert f"worker process {dead.pid}" in study.get_trials()[gone.number].user_attrs["fail_reason"]


def test_a_stopped_trials_lambda_is_measured_again_once(tmp_path: Path) -> None:
    """A trial failed by a stop or a dead worker is queued again with its lambda (once); one
    failed by an error is not."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=open_storage(url), directions=["maximize"] * 2)
    space = lambda_distribution(0.5, 50.0)
    for reason in ("stopped by SIGTERM", "ValueError: nan", None):
        trial = study.ask({PARAM: space})
        if reason:
            trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
    stopped = study.get_trials()[0]
    assert requeue_interrupted_trials(study) == [0]
    assert requeue_interrupted_trials(study) == []  # once
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [stopped.params]
    assert waiting[0].user_attrs == {"retry_of": 0}
    retried = study.ask()  # taken as an enqueued lambda is: the same value again
    assert retried.number == waiting[0].number
    assert retried.suggest_float(PARAM, 0.5, 50.0, log=True) == stopped.params[PARAM]


# --- workers killed at every moment of a trial's life ---------------------------------------

N_TOY = 3
KILL_POINTS = ("trial:created", "trial:started", "trial:objective", "trial:before_tell")


def toy_worker(
    url: str, name: str, folder: Path, first: str = "", pause_at: str = "", log: str = "w.log"
) -> subprocess.Popen:
    """A sweep worker on ``url`` whose trials cost nothing (``sweep_worker.py toy``: heartbeat
    every second, grace period 3 s); with ``pause_at`` it waits at that point of its first
    trial and writes ``<point> <pid>`` to ``folder/paused.txt``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pause_at:
        env.update(
            {
                "DIRECT2EVENT_PAUSE_AT": pause_at,
                "DIRECT2EVENT_PAUSE_FILE": str(folder / "paused.txt"),
            }
        )
    cmd = [sys.executable, str(WORKER), "toy", url, name, str(N_TOY), first]
    out = (folder / log).open("w")
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_pause(folder: Path, proc: subprocess.Popen, point: str) -> None:
    marker, deadline = folder / "paused.txt", time.monotonic() + 120
    while time.monotonic() < deadline:
        if marker.exists() and f"{point} {proc.pid}" in marker.read_text():
            return
        assert proc.poll() is None, (folder / "w.log").read_text()[-3000:]
        time.sleep(0.02)  # polling an event
    raise AssertionError(f"the worker never reached {point}")


def kill_then_finish(url: str, name: str, folder: Path, point: str, first: str = "") -> list:
    """Kill a worker (SIGKILL) at ``point`` of its first trial, let a second worker finish the
    sweep, and return the study's trials."""
    victim = toy_worker(url, name, folder, first, pause_at=point)
    wait_for_pause(folder, victim, point)
    victim.kill()
    victim.wait(timeout=30)
    left = optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()
    (orphan,) = [t for t in left if t.state == TrialState.RUNNING]
    # owned and beating from the transaction that made it RUNNING: never without an owner
    assert orphan.user_attrs["pid"] == victim.pid and orphan.user_attrs["host"]
    survivor = toy_worker(url, name, folder, first, log="survivor.log")
    assert survivor.wait(timeout=120) == 0, (folder / "survivor.log").read_text()[-3000:]
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()


def check_exactly_n_trials(trials: list, killed_point: str, first: str = "") -> None:
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == N_TOY
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.user_attrs["fail_reason"].startswith("worker process")
    assert failed.number == 0
    drawn = killed_point in ("trial:objective", "trial:before_tell") or first
    if drawn:  # its lambda is measured again, once
        (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == failed.number]
        assert retry.state == TrialState.COMPLETE
        assert retry.params == retry_params(failed)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_worker_killed_at_any_moment_leaves_exactly_n_trials_sqlite(
    tmp_path: Path, point: str
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    trials = kill_then_finish(url, "toy", tmp_path, point)
    check_exactly_n_trials(trials, point)


def test_a_worker_killed_as_it_takes_an_enqueued_trial_leaves_exactly_n_trials(
    tmp_path: Path,
) -> None:
    """The first lambdas are enqueued (WAITING); taking one turns it RUNNING in another write,
    which now carries the owner and the first heartbeat too."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    trials = kill_then_finish(url, "toy", tmp_path, "trial:created", first="2.0,3.0")
    check_exactly_n_trials(trials, "trial:created", first="2.0,3.0")
    assert sorted(t.params[PARAM] for t in trials if t.state == TrialState.COMPLETE)[:2] == [
        2.0,
        3.0,
    ]


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """The project's PostgreSQL (``make services``), started once for the tests below."""
    from direct2event.glue import services

    folder = tmp_path_factory.mktemp("services")
    svc = services.start(folder, pg_port=_free_port(), mlflow_port=_free_port())
    before = os.environ.get("PGPASSFILE")
    os.environ["PGPASSFILE"] = str(svc.pgpass)  # the workers inherit it
    yield svc
    if before is None:
        os.environ.pop("PGPASSFILE", None)
    else:
        os.environ["PGPASSFILE"] = before
    services.stop(svc.folder)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_worker_killed_at_any_moment_leaves_exactly_n_trials_postgres(
    tmp_path: Path, point: str, postgres
) -> None:
    name = f"toy-{point.split(':')[1]}"
    trials = kill_then_finish(postgres.storage_url, name, tmp_path, point)
    check_exactly_n_trials(trials, point)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_trial_of_a_dead_worker_on_another_machine_fails_after_the_grace_period(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """A worker on another host made trial 0 RUNNING and died before its heartbeat thread ran:
    its pid cannot be checked from here, but the heartbeat written with the trial ages, so a
    worker here fails it after the grace period and the sweep ends with n_trials."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'optuna.db'}"
    else:
        url = request.getfixturevalue("postgres").storage_url
    name = f"elsewhere-{backend}"
    elsewhere = open_storage(url, owner={"host": "another-machine", "pid": 4242})
    study = optuna.create_study(
        study_name=name, storage=elsewhere, directions=["maximize", "minimize"]
    )
    study.ask()  # created, owned and beating, then never heard of again
    survivor = toy_worker(url, name, tmp_path, log="survivor.log")
    assert survivor.wait(timeout=120) == 0, (tmp_path / "survivor.log").read_text()[-3000:]
    trials = optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()
    assert len([t for t in trials if t.state in FINISHED]) == N_TOY
    (orphan,) = [t for t in trials if t.state == TrialState.FAIL]
    assert orphan.user_attrs == {"host": "another-machine", "pid": 4242}


def test_a_running_trial_with_no_owner_and_no_heartbeat_never_blocks_the_sweep(
    tmp_path: Path,
) -> None:
    """The state `make chaos` left (n_trials 3): two finished trials and one RUNNING trial with
    no params, no owner and no heartbeat row, made outside this project's storage. The worker
    waits for it, says so, fails it once it has been silent for the grace period, and runs the
    last trial: it never waits forever."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    plain = optuna.storages.RDBStorage(url)
    study = optuna.create_study(
        study_name="legacy", storage=plain, directions=["maximize", "minimize"]
    )
    for lam in (1.0, 5.0):
        study.add_trial(trial(lam, 0.98, 0.1, 0))
    study.ask()  # RUNNING, nothing else
    survivor = toy_worker(url, "legacy", tmp_path, log="survivor.log")
    assert survivor.wait(timeout=120) == 0, (tmp_path / "survivor.log").read_text()[-3000:]
    log = (tmp_path / "survivor.log").read_text()
    assert "2 finished, waiting" in log and "trial 2 (no λ yet, worker ?:?" in log
    assert "Trial 2 failed: no heartbeat for" in log
    trials = optuna.load_study(study_name="legacy", storage=open_storage(url)).get_trials()
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    assert trials[2].user_attrs["fail_reason"].startswith("no heartbeat for")
