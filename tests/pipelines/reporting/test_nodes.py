from __future__ import annotations

import pytest

from direct2event.data.splits import DataSplits
from direct2event.glue.reports import TuningReport
from direct2event.pipelines.reporting.nodes import (
    build_summary,
    register_networks,
)


def test_summary_ratios_and_metrics(measured, digits_splits: DataSplits, settings) -> None:
    evaluation, ablation = measured
    tuning = TuningReport(rate_lambda=5.0, enabled=False)
    summary, metrics = build_summary(digits_splits, settings, evaluation, ablation, tuning)
    d, e = summary["direct"], summary["event"]
    assert summary["dataset"] == "digits" and summary["seed"] == 0
    assert summary["input_encoding"] == "rate" and summary["timesteps"] == 4
    assert summary["energy_reduction"] == pytest.approx(d["energy_uJ"] / e["energy_uJ"])
    assert summary["energy_reduction_by_model"]["synops_45nm"] == pytest.approx(
        d["energy_uJ_by_model"]["synops_45nm"] / e["energy_uJ_by_model"]["synops_45nm"]
    )
    assert summary["accuracy_retention"] == pytest.approx(e["accuracy"] / d["accuracy"])
    # the ceiling: D's energy over what E's input alone costs (here rate-coded digits, 1 pJ each)
    assert e["input_energy_uJ_by_model"]["per_event"] == pytest.approx(
        e["input_events_per_sample"] * 1e-6
    )
    assert e["input_events_per_sample"] > 0
    ceiling = summary["energy_reduction_ceiling"]
    assert ceiling == pytest.approx(d["energy_uJ"] / (e["input_events_per_sample"] * 1e-6))
    assert ceiling > summary["energy_reduction"]
    assert metrics["energy_reduction_ceiling"]["value"] == pytest.approx(ceiling)
    assert (
        summary["energy_reduction_ceiling_by_model"]["synops_45nm"]
        > summary["energy_reduction_by_model"]["synops_45nm"]
    )
    assert summary["rate_lambda"] == 5.0
    assert [r["variant"] for r in summary["ablation"]] == [r["variant"] for r in ablation]
    assert metrics["event.test_accuracy"] == {"value": e["accuracy"], "step": 0}
    assert metrics["ablation.naive.energy_nJ"]["value"] == 1000 * ablation[0]["energy_uJ"]
    assert not [k for k in metrics if k.endswith("energy_uJ")]  # MLflow shows nJ


def test_no_registration_without_an_mlflow_run(direct_model, settings) -> None:
    import mlflow

    assert mlflow.active_run() is None
    assert register_networks(direct_model, direct_model, {}, settings) == {"registered": False}
