"""The run's report: ``summary.json`` and its MLflow metrics, NIR graphs of networks D and E,
and their registration in the MLflow Model Registry."""

from __future__ import annotations

import logging
from typing import Any

from direct2event.data.splits import DataSplits
from direct2event.glue import registry, runs, tracking
from direct2event.glue.params import PipelineParams
from direct2event.glue.reports import (
    AblationRow,
    BitMatchedAnn,
    NetworkResult,
    ParetoPoint,
    ShiftReport,
    Summary,
    TuningReport,
    TuningSummary,
)
from direct2event.snn.models import restore
from direct2event.snn.nir_io import NIRError, NotExported, to_nir

logger = logging.getLogger(__name__)


def _network(res: dict[str, Any], energy_model: str) -> NetworkResult:
    return NetworkResult(
        accuracy=float(res["accuracy"]),
        energy_nJ=float(res["energy_nJ_by_model"][energy_model]),
        energy_nJ_by_model={k: float(v) for k, v in res["energy_nJ_by_model"].items()},
        events_per_sample=float(res["events_per_sample"]),
        input_events_per_sample=float(res["input_events_per_sample"]),
        input_energy_nJ_by_model={k: float(v) for k, v in res["input_energy_nJ_by_model"].items()},
        synops_per_sample=float(res["synops_per_sample"]),
        ac_per_sample=float(res["ac_per_sample"]),
        mac_per_sample=float(res["mac_per_sample"]),
        firing_rates={k: float(v) for k, v in res["firing_rates"].items()},
        neurobench=res.get("neurobench"),
    )


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _tuning(report: TuningReport) -> TuningSummary:
    return TuningSummary(
        chosen_by=report.chosen_by,
        n_complete=report.n_complete,
        n_stopped=len(report.stopped),
        n_taken_on=len(report.completed),
        validation_floor_met=report.validation_floor_met,
        pareto=[ParetoPoint(**t.model_dump(exclude={"number"})) for t in report.pareto],
    )


def build_summary(
    splits: DataSplits,
    settings: PipelineParams,
    evaluation: dict[str, Any],
    ablation: list[dict[str, Any]],
    tuning_report: TuningReport,
) -> tuple[Summary, dict[str, dict]]:
    """The run's report (``summary.json``), built in this one place, and its MLflow metrics.
    ``energy_reduction_ceiling``: what E would reach if none of its hidden neurons fired (its
    input alone costs that much), so no lambda brings the reduction past it."""
    model = settings.transfer.energy_model
    direct, event = _network(evaluation["direct"], model), _network(evaluation["event"], model)
    ceiling = {
        k: _ratio(direct.energy_nJ_by_model[k], v)
        for k, v in event.input_energy_nJ_by_model.items()
    }
    summary = Summary(
        dataset=settings.dataset,
        seed=settings.seed,
        simulated=bool(splits.simulated),
        timesteps=settings.direct_coding.timesteps,
        event_timesteps=settings.event_coding.timesteps,
        input_encoding=settings.event_coding.encoding,
        energy_model=model,
        splits=splits.sizes(),
        direct=direct,
        event=event,
        energy_reduction=_ratio(direct.energy_nJ, event.energy_nJ),
        energy_reduction_by_model={
            k: _ratio(direct.energy_nJ_by_model[k], v) for k, v in event.energy_nJ_by_model.items()
        },
        energy_reduction_ceiling=ceiling[model],
        energy_reduction_ceiling_by_model=ceiling,
        accuracy_retention=_ratio(event.accuracy, direct.accuracy),
        rate_lambda=tuning_report.rate_lambda,
        tuning=_tuning(tuning_report),
        ablation=[AblationRow(**{k: row[k] for k in ABLATION_FIELDS}) for row in ablation],
        bit_matched_ann=BitMatchedAnn(**evaluation["bit_matched_ann"])
        if "bit_matched_ann" in evaluation
        else None,
    )
    return summary, summary_metrics(summary)


ABLATION_FIELDS = tuple(AblationRow.model_fields)


def summary_metrics(summary: Summary) -> dict[str, dict]:
    """The run's MLflow metrics: its headline (``headline.*``), NeuroBench's metrics and the
    bit-matched ANN, rounded; every figure is in ``summary.json``, the ablation in the table
    ``tables/ablation.json``."""
    metrics = {**tracking.headline_metrics(summary), **tracking.energy_metrics(summary)}
    return {k: {"value": v, "step": 0} for k, v in metrics.items()}


def result_tables(summary: Summary, shift: ShiftReport) -> tuple[list[dict], list[dict]]:
    """The ablation and the shift benchmark as tables (MLflow shows them as tables, searchable
    and sortable): one row per ablation step; one per shift and severity, with E adapted by each
    method and E recalibrated."""
    ablation = [row.model_dump() for row in summary.ablation]
    rows = []
    for r in shift.rows if shift.enabled else []:
        row: dict[str, Any] = {
            "shift": r.shift,
            "level": r.level,
            "severity": r.severity,
            "direct_accuracy": r.d_accuracy,
            "event_accuracy": r.e_accuracy,
            "event_events_per_sample": r.e_events_per_sample,
        }
        for method in shift.clean.adapted:  # None where it did not run (scope middle)
            m = r.adapted.get(method)
            row[f"{method}.event_accuracy"] = m.accuracy if m else None
            row[f"{method}.events_per_sample"] = m.events_per_sample if m else None
        row["recalibrated.event_accuracy"] = r.recalibrated.accuracy if r.recalibrated else None
        rows.append(row)
    return ablation, rows


def export_nir(
    direct_model: dict[str, Any], event_model: dict[str, Any], settings: PipelineParams
) -> tuple[Any, Any]:
    """NIR graphs of D and E (for sinabs, snnTorch, Norse and neuromorphic chips), with the
    input encoding and T each is meant to be fed; for a network NIR cannot express (max-pooling:
    set ``model.pooling: avg``) a :class:`NotExported` with the reason, logged: as a warning for
    E (the network meant for hardware), as information for D (whose default max-pooling NIR
    cannot express; every default run would warn)."""
    graphs = []
    for saved, coding, network in (
        (direct_model, settings.direct_coding, "D"),
        (event_model, settings.event_coding, "E"),
    ):
        try:
            graphs.append(to_nir(restore(saved), coding.timesteps, coding.encoding, network))
        except NIRError as err:
            log = logger.warning if network == "E" else logger.info
            log("No NIR graph of %s for %s: %s", network, settings.dataset, err)
            graphs.append(NotExported(str(err)))
    return graphs[0], graphs[1]


def register_networks(
    direct_model: dict[str, Any],
    event_model: dict[str, Any],
    summary: Summary,
    settings: PipelineParams,
    direct_nir: Any = None,
    event_nir: Any = None,
) -> dict[str, Any]:
    """Register D (unless it came from the registry) and E as ``<key>-direct`` / ``<key>-event``
    in the MLflow Model Registry, tagged with accuracy, energy, timesteps, lambda, code version;
    each version carries its NIR graph (``<name>.nir`` among the model's files) when there is
    one."""
    import mlflow

    if not settings.register_models or mlflow.active_run() is None:
        logger.info("Models not registered (register_models is off or no MLflow run is active)")
        return {"registered": False}
    uris: dict[str, Any] = {"registered": True}
    graphs = {"direct": direct_nir, "event": event_nir}
    for network, saved in (("direct", direct_model), ("event", event_model)):
        if network == "direct" and registry.is_registry_uri(settings.source_model):
            uris[network] = settings.source_model
            continue
        tags = version_tags(network, summary, settings, mlflow.active_run().info.run_id)
        description = version_description(network, summary, tags["input_encoding"])
        if registry.WHY_NOT_TAG in tags:
            description += f" Never champion: {tags[registry.WHY_NOT_TAG]}."
        graph = graphs[network]
        uris[network] = registry.register(
            restore(saved),
            settings.dataset,
            network,
            tags,
            settings.direct_coding if network == "direct" else settings.event_coding,
            settings.seed,
            description,
            nir_graph=None if isinstance(graph, NotExported) else graph,
        )
        runs.pause_point(f"registered:{network}")
    floor = settings.tuning.retention_floor
    uris["champion"] = {
        network: registry.crown_champion(
            registry.model_name(settings.dataset, network), floor if network == "event" else None
        )
        for network in ("direct", "event")
    }
    return uris


def version_tags(
    network: str, summary: Summary, settings: PipelineParams, run_id: str
) -> dict[str, Any]:
    """A registry version's tags: what it is (architecture, dataset, seed, coding), how it
    scores on the test split, where it came from (run, code version) and, for E, the lambda,
    retention, reduction and whether it may become champion."""
    result = summary.direct if network == "direct" else summary.event
    coding = settings.direct_coding if network == "direct" else settings.event_coding
    tags = {
        **registry.architecture_tags(settings.model),
        "dataset": settings.dataset,
        "seed": settings.seed,
        "energy_model": summary.energy_model,
        "code_version": registry.code_version(),
        "run_id": run_id,
        "accuracy": result.accuracy,
        "energy_nJ": result.energy_nJ,
        **{f"energy_nJ.{model}": v for model, v in result.energy_nJ_by_model.items()},
        "events_per_sample": result.events_per_sample,
        "input_encoding": coding.encoding,
        "timesteps": coding.timesteps,
    }
    if network == "event":
        tags |= {
            "rate_lambda": summary.rate_lambda,
            "accuracy_retention": summary.accuracy_retention,
            "energy_reduction": summary.energy_reduction,
            **{
                f"energy_reduction.{model}": value
                for model, value in summary.energy_reduction_by_model.items()
            },
            "chosen_by": summary.tuning.chosen_by,
            "validation_floor_met": summary.tuning.validation_floor_met,
        }
        tags |= champion_eligibility(
            summary.accuracy_retention, settings.tuning.retention_floor, summary.tuning.chosen_by
        )
    return tags


def champion_eligibility(
    retention: float | None, floor: float, chosen_by: str = "retention_floor"
) -> dict[str, str]:
    """Whether this run's E may become ``champion``: only when its test accuracy retention
    reaches the run's own ``tuning.retention_floor``, and not when the sweep warned that no
    lambda kept the floor on validation (``chosen_by`` ``most_accurate``): a run never warns
    that its floor failed while its E becomes champion. Otherwise the version says why."""
    if chosen_by == "most_accurate":
        why = (
            f"no lambda kept retention_floor {floor} plus its margin on validation; the sweep "
            "took the most accurate trial"
        )
    elif retention is None or retention < floor:
        why = f"test accuracy retention {retention} is below this run's tuning.retention_floor {floor}"
    else:
        return {registry.ELIGIBLE_TAG: "true"}
    return {registry.ELIGIBLE_TAG: "false", registry.WHY_NOT_TAG: why}


def version_description(network: str, summary: Summary, encoding: str) -> str:
    """What a registry version is, in a sentence a person reads on its page."""
    res, dataset = (summary.direct if network == "direct" else summary.event), summary.dataset
    if network == "direct":
        return (
            f"Network D for {dataset} (seed {summary.seed}): direct-coded ({encoding} input, "
            f"T = {summary.timesteps}), graded surrogate activations. Test accuracy "
            f"{res.accuracy:.2%}, {res.events_per_sample:.0f} events per sample "
            f"({res.energy_nJ:.3f} nJ, {summary.energy_model})."
        )
    return (
        f"Network E for {dataset} (seed {summary.seed}): event-driven ({encoding} input, "
        f"T = {summary.event_timesteps}), fine-tuned with rate penalty lambda = "
        f"{summary.rate_lambda:g}. Test accuracy {res.accuracy:.2%} (retention "
        f"{summary.accuracy_retention:.4f} of D), {res.events_per_sample:.0f} events per "
        f"sample ({res.energy_nJ:.3f} nJ, {summary.energy_reduction:.2f}x less than D under "
        f"{summary.energy_model}). Serves with mlflow.pyfunc: raw inputs in (images [batch, C, "
        "H, W] in [0, 1], or event frames), class probabilities out."
    )
