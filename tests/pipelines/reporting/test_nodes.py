from __future__ import annotations

import pytest

from direct2event.data.splits import DataSplits
from direct2event.glue.reports import TuningReport
from direct2event.pipelines.reporting.nodes import (
    build_summary,
    register_networks,
    result_tables,
    version_tags,
)


def test_summary_ratios_and_metrics(measured, digits_splits: DataSplits, settings) -> None:
    evaluation, ablation = measured
    tuning = TuningReport(rate_lambda=5.0, enabled=False)
    typed, metrics = build_summary(digits_splits, settings, evaluation, ablation, tuning)
    summary = typed.model_dump()
    d, e = summary["direct"], summary["event"]
    assert summary["dataset"] == "digits" and summary["seed"] == 0
    assert summary["input_encoding"] == "rate" and summary["timesteps"] == 4
    assert summary["energy_reduction"] == pytest.approx(d["energy_nJ"] / e["energy_nJ"])
    assert summary["energy_reduction_by_model"]["synops_45nm"] == pytest.approx(
        d["energy_nJ_by_model"]["synops_45nm"] / e["energy_nJ_by_model"]["synops_45nm"]
    )
    assert summary["accuracy_retention"] == pytest.approx(e["accuracy"] / d["accuracy"])
    # the ceiling: D's energy over what E's input alone costs (here rate-coded digits, 1 pJ each)
    assert e["input_energy_nJ_by_model"]["per_event"] == pytest.approx(
        e["input_events_per_sample"] * 1e-3
    )
    assert e["input_events_per_sample"] > 0
    ceiling = summary["energy_reduction_ceiling"]
    assert ceiling == pytest.approx(d["energy_nJ"] / (e["input_events_per_sample"] * 1e-3))
    assert ceiling > summary["energy_reduction"]
    assert metrics["headline.energy_reduction_ceiling"]["value"] == pytest.approx(ceiling, rel=1e-3)
    assert (
        summary["energy_reduction_ceiling_by_model"]["synops_45nm"]
        > summary["energy_reduction_by_model"]["synops_45nm"]
    )
    assert summary["rate_lambda"] == 5.0
    assert [r["variant"] for r in summary["ablation"]] == [r["variant"] for r in ablation]
    # the headline, under one prefix and rounded to 4 significant figures
    assert metrics["headline.event_accuracy"] == {"value": round(e["accuracy"], 4), "step": 0}
    assert metrics["headline.event_energy_nJ"]["value"] == float(f"{e['energy_nJ']:.4g}")
    assert metrics["headline.energy_reduction.synops_45nm"]["value"] == float(
        f"{summary['energy_reduction_by_model']['synops_45nm']:.4g}"
    )
    headline = [k for k in metrics if k.startswith("headline.")]
    models = list(summary["energy_reduction_by_model"])
    assert len(headline) == 8 + len(models) and list(metrics)[: len(headline)] == headline
    # NeuroBench's figures of D and E and the bit-matched ANN, under dataset-neutral names
    assert {k.split(".")[0] for k in metrics} == {"headline", "neurobench", "ann"}
    assert metrics["neurobench.event.effective_acs"]["value"] == float(
        f"{e['neurobench']['effective_acs']:.4g}"
    )
    ann = summary["bit_matched_ann"]
    assert ann["bits"] == 3  # E's T = 4: ceil(log2(5))
    for model in models:  # E against the ANN: the ANN's energy over E's
        assert ann["event_reduction_by_model"][model] == pytest.approx(
            ann["energy_nJ_by_model"][model] / e["energy_nJ_by_model"][model]
        )
        assert f"ann.event_reduction.{model}" in metrics
    assert len(metrics) <= 80
    # the registry's E carries its energy and reduction under every model too
    tags = version_tags("event", typed, settings, "run-id")
    for model in models:
        assert tags[f"energy_reduction.{model}"] == summary["energy_reduction_by_model"][model]
        assert tags[f"energy_nJ.{model}"] == e["energy_nJ_by_model"][model]


def test_no_registration_without_an_mlflow_run(direct_model, settings) -> None:
    import mlflow

    assert mlflow.active_run() is None
    assert register_networks(direct_model, direct_model, None, settings) == {"registered": False}


def test_the_shift_table_has_every_method_column_on_every_row(
    measured, digits_splits: DataSplits, settings
) -> None:
    """A method that ran at the middle severity only (``shift.adaptation.scope: middle``) has
    empty cells elsewhere, so the table keeps one set of columns."""
    from direct2event.glue.reports import ShiftReport
    from tests.pipelines.reporting.test_shift_figures import RAW

    raw = {**RAW, "rows": [dict(r) for r in RAW["rows"]]}
    raw["rows"][0]["adapted"] = {}
    evaluation, ablation = measured
    summary, _ = build_summary(
        digits_splits, settings, evaluation, ablation, TuningReport(rate_lambda=5.0, enabled=False)
    )
    _, rows = result_tables(summary, ShiftReport.model_validate(raw))
    assert len({tuple(r) for r in rows}) == 1  # the same columns on every row
    assert rows[0]["homeostasis.event_accuracy"] is None
    assert rows[1]["homeostasis.event_accuracy"] == pytest.approx(0.85)
    assert rows[1]["recalibrated.event_accuracy"] == pytest.approx(0.85)
