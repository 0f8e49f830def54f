"""The study's database: opened by several workers at once, with the installed PostgreSQL
driver and a clear error when it cannot be reached; a trial is never RUNNING without its owner
and first heartbeat."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from direct2event.glue.sweep import storage as storage_mod
from direct2event.glue.sweep.policy import TuningError

OPEN_AT = """
import sys, time
from pathlib import Path
from direct2event.glue.sweep.storage import open_storage
ready, go = Path(sys.argv[2]), Path(sys.argv[3])
ready.write_text("imported")
while not go.exists():  # a barrier: all four open the new database at the same instant
    time.sleep(0.001)
storage = open_storage(sys.argv[1])
print(len(storage.get_all_studies()))
"""


def test_workers_opening_a_new_database_together_all_succeed(tmp_path: Path) -> None:
    """Optuna's schema creation races; every worker must still get the storage."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT, url, str(tmp_path / f"ready{i}"), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(4)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(4)):  # all have imported
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.write_text("go")
    outs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(outs)[-2000:]
    assert [o.split()[-1] for o in outs] == ["0"] * 4
    storage = storage_mod.open_storage(url)
    assert storage.get_all_studies() == []


def test_plain_postgresql_urls_use_the_installed_driver() -> None:
    """SQLAlchemy 2.1 reads postgresql:// as psycopg 3; with psycopg2 here it is used."""
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        assert (
            storage_mod.postgres_driver("postgresql://u@h:1/o") == "postgresql+psycopg2://u@h:1/o"
        )
    assert storage_mod.postgres_driver("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(TuningError) as err:  # a closed port: refused, with the hint
        storage_mod.open_storage("postgresql://u@127.0.0.1:1/o")
    assert "Failed to import DB access module" not in str(err.value)
    assert "postgresql+psycopg2:// needs psycopg2" in str(err.value)


def test_a_trial_is_owned_and_beating_from_the_write_that_makes_it_running(
    tmp_path: Path,
) -> None:
    """New and enqueued trials alike: by the time any worker can read a trial as RUNNING it
    names its worker and has a heartbeat row (the gap `make chaos` hung in is closed)."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    owner = {"host": "worker-a", "pid": 123}
    db = storage_mod.open_storage(url, owner=owner)
    study = optuna.create_study(study_name="s", storage=db, directions=["maximize", "minimize"])
    study.enqueue_trial({"rate_lambda": 2.0})
    queued, fresh = study.ask(), study.ask()  # taken from the queue; created
    reader = storage_mod.open_storage(url)  # another process's view
    running = reader.get_all_trials(study._study_id, states=(TrialState.RUNNING,))
    assert [t.number for t in running] == [queued.number, fresh.number]
    assert all(t.user_attrs == owner for t in running)
    _, beats = reader.heartbeats(study._study_id)
    assert set(beats) == {t._trial_id for t in running}
    assert storage_mod.worker_identity() == {"host": os.uname().nodename, "pid": os.getpid()}
