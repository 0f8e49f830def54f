"""Event evaluation and energy estimation of D and E on the test split (steps 6-7), and the
ablation (step 8): each step of the transfer added in turn, measured alike."""

from __future__ import annotations

import logging
from typing import Any

from torch import Tensor

from direct2event.data.splits import DataSplits
from direct2event.glue.neurobench import neurobench_metrics
from direct2event.glue.params import PipelineParams
from direct2event.glue.reports import TuningReport
from direct2event.snn.conversion import build_event_network, calibrate
from direct2event.snn.encoders import InputCoding
from direct2event.snn.evaluation import ann_reference, measure, measure_counts
from direct2event.snn.finetuning import finetune_event_network
from direct2event.snn.models import SpikingNet, restore, to_event_network

logger = logging.getLogger(__name__)

ABLATION_VARIANTS = ("naive", "thresholds", "finetune_lambda0", "finetune_lambda")
TTFS_VARIANTS = (
    "ttfs_naive",
    "ttfs_finetune_ce",
    "ttfs_skd",
    "ttfs_pipeline",
    "ttfs_pipeline_skd",
)


def evaluate_transfer(
    direct_model: dict[str, Any],
    event_model: dict[str, Any],
    splits: DataSplits,
    settings: PipelineParams,
) -> dict[str, Any]:
    """Test accuracy, counted activity and energy of D and E on the same samples, NeuroBench's
    metrics of each (computed by the neurobench package) and the bit-matched ANN beside them."""
    device, profiles = settings.device, settings.profiles()
    networks = {
        "direct": (restore(direct_model), settings.direct_coding),
        "event": (restore(event_model), settings.event_coding),
    }
    results: dict[str, Any] = {}
    counts = {}
    for name, (net, coding) in networks.items():
        res, counts[name] = measure_counts(
            net, splits.test, coding, device, profiles, settings.seed
        )
        sample = splits.test.head(settings.transfer.neurobench_samples or len(splits.test))
        res["neurobench"] = neurobench_metrics(net, sample, coding, device, settings.seed)
        results[name] = res
        logger.info(
            "%s on %s test: accuracy %.4f, %.0f events/sample, energy %s nJ",
            "D" if name == "direct" else "E",
            splits.name,
            res["accuracy"],
            res["events_per_sample"],
            {k: round(v, 4) for k, v in res["energy_nJ_by_model"].items()},
        )
    results["bit_matched_ann"] = ann_reference(profiles, counts["direct"], counts["event"])
    return results


def _ttfs_variants(
    direct: SpikingNet,
    splits: DataSplits,
    settings: PipelineParams,
    rate_lambda: float,
    logits: Tensor | None,
) -> dict[str, SpikingNet]:
    """The distillation reading's rows, all with TTFS input: naive, CE-only fine-tuning, SKD
    (distillation, no thresholds), and this pipeline (thresholds + the chosen lambda) without /
    with SKD."""
    device, th = settings.device, settings.transfer.thresholds
    cal = splits.calibration.head(settings.transfer.calibration.max_samples)
    ttfs = InputCoding("ttfs", settings.event_coding.timesteps)
    _, stats = calibrate(
        direct,
        cal,
        settings.direct_coding,
        ttfs,
        device,
        settings.transfer.calibration.max_points,
        settings.seed,
    )
    scaled, _ = build_event_network(
        direct,
        stats,
        cal,
        ttfs,
        device,
        th.config(),
        settings.seed,
    )
    naive = to_event_network(direct)

    def tuned(start: SpikingNet, lam: float, distill: bool) -> SpikingNet:
        cfg = settings.finetune_config(lam).with_changes(coding=ttfs, distill=distill)
        shared = logits if distill else None
        return finetune_event_network(
            start, direct, splits.train, cfg, device, shared, val=splits.validation
        )[0]

    return {
        "ttfs_naive": naive,
        "ttfs_finetune_ce": tuned(naive, 0.0, False),
        "ttfs_skd": tuned(naive, 0.0, True),
        "ttfs_pipeline": tuned(scaled, rate_lambda, False),
        "ttfs_pipeline_skd": tuned(scaled, rate_lambda, True),
    }


def _row(variant: str, rate_lambda: float | None, res: dict[str, Any], energy_model: str) -> dict:
    return {
        "variant": variant,
        "rate_lambda": rate_lambda,
        "accuracy": res["accuracy"],
        "energy_nJ": res["energy_nJ_by_model"][energy_model],
        "events_per_sample": res["events_per_sample"],
    }


def run_ablation(
    direct_model: dict[str, Any],
    scaled_model: dict[str, Any],
    evaluation: dict[str, Any],
    splits: DataSplits,
    settings: PipelineParams,
    tuning_report: TuningReport,
    direct_logits: dict[str, Tensor | None],
    lambda0_event_model: dict[str, Any],
) -> list[dict[str, Any]]:
    """Naive transfer, + thresholds, + fine-tuning with lambda = 0 (the finetuning stage's
    ``lambda0_event_model``, not trained again), + fine-tuning with the chosen lambda (E itself),
    then the TTFS rows when asked; every fine-tuned row names its lambda. Each row's share of the
    final energy gain is measured against D."""
    device, profiles = settings.device, settings.profiles()
    energy_model, coding = settings.transfer.energy_model, settings.event_coding
    chosen = tuning_report.rate_lambda
    direct, scaled = restore(direct_model), restore(scaled_model)
    logits = direct_logits["logits"]
    rows: list[dict[str, Any]] = []
    if settings.transfer.ablation.enabled:
        candidates = {
            "naive": (None, lambda: to_event_network(direct)),
            "thresholds": (None, lambda: scaled),
            "finetune_lambda0": (0.0, lambda: restore(lambda0_event_model["model"])),
        }
        for variant, (lam, make) in candidates.items():
            res = measure(make(), splits.test, coding, device, profiles, settings.seed)
            rows.append(_row(variant, lam, res, energy_model))
    rows.append(_row("finetune_lambda", chosen, evaluation["event"], energy_model))
    if settings.transfer.ablation.ttfs_rows:
        ttfs_coding = InputCoding("ttfs", coding.timesteps)
        lambdas = {"ttfs_naive": None, "ttfs_pipeline": chosen, "ttfs_pipeline_skd": chosen}
        for variant, net in _ttfs_variants(direct, splits, settings, chosen, logits).items():
            res = measure(net, splits.test, ttfs_coding, device, profiles, settings.seed)
            rows.append(_row(variant, lambdas.get(variant, 0.0), res, energy_model))
    direct_energy = evaluation["direct"]["energy_nJ_by_model"][energy_model]
    final = next(row for row in rows if row["variant"] == "finetune_lambda")
    final_saving = direct_energy - final["energy_nJ"]  # E's gain: each row's share is of this
    for row in rows:
        saved = direct_energy - row["energy_nJ"]
        row["energy_gain_fraction"] = saved / final_saving if final_saving > 0 else float("nan")
        row["energy_reduction"] = (
            direct_energy / row["energy_nJ"] if row["energy_nJ"] > 0 else float("inf")
        )
        logger.info(
            "ablation %s", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        )
    return rows
