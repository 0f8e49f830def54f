"""A network trained in snnTorch, exported by snnTorch to NIR, goes through the whole transfer
as network D (`source_model: nir:<path>`): its accuracy as read here is snnTorch's own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import peer, run

pytestmark = pytest.mark.slow  # snnTorch training and a kedro run

ROOT = Path(__file__).resolve().parents[2]


def test_an_snntorch_network_is_transferred_with_its_own_accuracy(project: Path) -> None:
    peer("snntorch")
    graph = project / "snntorch_digits.nir"
    made = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/snntorch_source.py"), "--out", str(graph)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    source = json.loads(graph.with_suffix(".json").read_text())
    assert source["nodes"]["1"] == "LIF" and source["reset"] == "zero"
    assert source["test_accuracy"] > 0.5  # a trained network (chance: 0.1)

    done = run(
        project,
        f"digits.source_model=nir:{graph},digits.model.reset=zero,digits.tuning.enabled=false",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((project / "data/08_reporting/digits/summary.json").read_text())
    log = json.loads((project / "data/08_reporting/digits/direct_training_log.json").read_text())
    assert log == []  # D is snnTorch's network: not trained here
    # the same test images, the same predictions: 348 of 359 both, say (float32 vs float64 mean)
    tested = summary["splits"]["test"]
    assert tested == source["test_samples"]
    assert round(summary["direct"]["accuracy"] * tested) == round(source["test_accuracy"] * tested)
    # E's result is reported like any run's
    assert 0.5 < summary["accuracy_retention"] <= 1.05
    assert summary["energy_reduction"] > 1.0
    assert summary["energy_reduction_by_model"]["synops_45nm"] > 1.0
