from __future__ import annotations

import pytest

from direct2event.data.splits import DataSplits
from direct2event.glue.reports import TuningReport
from direct2event.pipelines.evaluation.nodes import (
    ABLATION_VARIANTS,
    evaluate_transfer,
    run_ablation,
)
from direct2event.pipelines.finetuning.nodes import finetune_lambda0
from tests.pipelines.conftest import NO_LOGITS, PROFILES, tiny


def test_evaluate_transfer_counts_d_as_macs_and_e_as_events(
    scaled, direct_model, digits_splits: DataSplits, settings
) -> None:
    results = evaluate_transfer(direct_model, scaled[0], digits_splits, settings)
    d, e = results["direct"], results["event"]
    assert 0.8 < d["accuracy"] <= 1 and 0.3 < e["accuracy"] <= 1
    assert d["mac_per_sample"] > 0 and d["ac_per_sample"] == 0
    assert e["mac_per_sample"] == 0 and e["ac_per_sample"] > 0
    for res in (d, e):  # per_event at 1 pJ: nJ = events * 1e-3
        assert res["energy_nJ_by_model"]["per_event"] == pytest.approx(
            res["events_per_sample"] * 1e-3
        )
        assert sum(res["layer_energy_nJ"]["per_event"].values()) == pytest.approx(
            res["energy_nJ_by_model"]["per_event"]
        )


def test_ablation_rows_in_order_with_their_lambda_and_share_of_es_gain(
    scaled, direct_model, digits_splits: DataSplits
) -> None:
    settings = tiny(transfer={"finetune": {"rate_lambda": 20.0}})
    evaluation = evaluate_transfer(direct_model, scaled[0], digits_splits, settings)
    lambda0 = finetune_lambda0(scaled[0], direct_model, digits_splits, settings, NO_LOGITS)
    rows = run_ablation(
        direct_model,
        scaled[0],
        evaluation,
        digits_splits,
        settings,
        TuningReport(rate_lambda=20.0, enabled=False),
        NO_LOGITS,
        lambda0,
    )
    assert [r["variant"] for r in rows] == list(ABLATION_VARIANTS)
    assert [r["rate_lambda"] for r in rows] == [None, None, 0.0, 20.0]
    by = {r["variant"]: r for r in rows}
    assert by["thresholds"]["accuracy"] == evaluation["event"]["accuracy"]  # the same network
    assert by["thresholds"]["energy_nJ"] == evaluation["event"]["energy_nJ_by_model"]["per_event"]
    # shares of E's gain against hand-set energies: D 10 nJ, the final E 2 nJ (a gain of 8)
    hand = {
        "direct": {**evaluation["direct"], "energy_nJ_by_model": {"per_event": 10.0}},
        "event": {**evaluation["event"], "energy_nJ_by_model": {"per_event": 2.0}},
    }
    shares = run_ablation(
        direct_model, scaled[0], hand, digits_splits, settings,
        TuningReport(rate_lambda=20.0, enabled=False), NO_LOGITS, lambda0,
    )  # fmt: skip
    final = next(r for r in shares if r["variant"] == "finetune_lambda")
    assert (final["energy_gain_fraction"], final["energy_reduction"]) == (1.0, 5.0)
    thresholds = next(r for r in shares if r["variant"] == "thresholds")
    e = thresholds["energy_nJ"]  # measured: the scaled network's events at 1 pJ
    assert thresholds["energy_gain_fraction"] == pytest.approx((10.0 - e) / 8.0)
    assert thresholds["energy_reduction"] == pytest.approx(10.0 / e)
    off = run_ablation(
        direct_model,
        scaled[0],
        evaluation,
        digits_splits,
        tiny(transfer={"ablation": {"enabled": False}}),
        TuningReport(rate_lambda=20.0, enabled=False),
        NO_LOGITS,
        {},
    )
    assert [r["variant"] for r in off] == ["finetune_lambda"]


def test_a_profile_added_in_yaml_alone_reaches_every_report(
    direct_model, scaled, digits_splits: DataSplits
) -> None:
    """A chip's figures added to energy_profiles, no code: the evaluation, the bit-matched ANN,
    the summary, its MLflow metrics and the registry tags all give its energy and reduction."""
    from direct2event.glue.params import load_settings
    from direct2event.pipelines.reporting.nodes import build_summary, version_tags

    chip = {"kind": "synops", "e_ac_pj": 2.0, "e_mac_pj": 8.0, "source": "my chip's datasheet"}
    raw = tiny().model_dump(exclude={"energy_profiles", "dataset"})
    settings = load_settings("digits", raw, {**PROFILES, "my_chip": chip})
    evaluation = evaluate_transfer(direct_model, scaled[0], digits_splits, settings)
    d, e = evaluation["direct"], evaluation["event"]
    # E's synops are ACs, D's MACs: 2 pJ and 8 pJ each
    assert e["energy_nJ_by_model"]["my_chip"] == pytest.approx(2.0 * e["ac_per_sample"] / 1e3)
    assert d["energy_nJ_by_model"]["my_chip"] == pytest.approx(8.0 * d["mac_per_sample"] / 1e3)
    assert "my_chip" in evaluation["bit_matched_ann"]["energy_nJ_by_model"]
    tuning = TuningReport(rate_lambda=5.0, enabled=False)
    summary, metrics = build_summary(digits_splits, settings, evaluation, [], tuning)
    reduction = summary.energy_reduction_by_model["my_chip"]
    assert reduction == pytest.approx(d["mac_per_sample"] * 8.0 / (e["ac_per_sample"] * 2.0))
    assert metrics["headline.energy_reduction.my_chip"]["value"] == float(f"{reduction:.4g}")
    assert "ann.event_reduction.my_chip" in metrics
    assert version_tags("event", summary, settings, "run")["energy_reduction.my_chip"] == reduction
