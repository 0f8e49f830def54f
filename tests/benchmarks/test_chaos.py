"""The chaos harness (``make chaos``) can fail, never hang: a phase past its deadline kills its
processes and reports the study as it stood."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import optuna
import pytest

from direct2event.glue.sweep.storage import open_storage

ROOT = Path(__file__).resolve().parents[2]


def load_chaos():
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "benchmarks/chaos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_phase_past_its_deadline_fails_with_the_study_state(tmp_path: Path) -> None:
    chaos = load_chaos()
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(
        study_name="s", storage=open_storage(url), directions=["maximize", "minimize"]
    )
    study.ask()  # a RUNNING trial, owned and beating
    hung = chaos.start(tmp_path, [sys.executable, "-c", "import time; time.sleep(600)"],
                       tmp_path / "hung.log", {})  # fmt: skip
    chaos.Deadline.limit_s = 0.5
    deadline = chaos.Deadline("a phase that hangs", url)
    started = time.monotonic()
    with pytest.raises(chaos.PhaseOverrun) as err:
        deadline.wait(hung)
    assert time.monotonic() - started < 60  # a hang guard, not a speed check
    assert hung.poll() is not None  # killed, not left behind
    assert err.value.phase == "a phase that hangs"
    (row,) = err.value.state["s"]
    assert row["state"] == "RUNNING" and row["number"] == 0
    assert row["user_attrs"]["pid"] > 0 and row["heartbeat_age_s"] is not None
