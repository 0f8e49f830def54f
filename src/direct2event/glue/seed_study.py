"""A seeds study from its runs' reports: each seed's row, the mean, std and worst of every
figure, the shift benchmark over the seeds, and the machine it ran on (``seeds.json``)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from direct2event.glue.machine import machine_name, torch_build
from direct2event.glue.reports import (
    MethodStudy,
    SeedRun,
    SeedStudy,
    ShiftReport,
    ShiftStudy,
    Stat,
    Summary,
    TuningReport,
)

RUN_FIELDS = (
    "direct_accuracy",
    "event_accuracy",
    "accuracy_retention",
    "energy_reduction",
    "events_per_sample",
    "synops_per_sample",
    "rate_lambda",
)
SHIFT_FIELDS = (
    "recovered_fraction",
    "clean_cost_pp",
    "clean_events_change",
    "shift_events_change",
    "recovery_samples",
)


def run_record(seed: int, summary: Summary, seconds: float | None = None) -> SeedRun:
    """One seed's row of the study, from its summary."""
    return SeedRun(
        seed=seed,
        direct_accuracy=summary.direct.accuracy,
        event_accuracy=summary.event.accuracy,
        accuracy_retention=summary.accuracy_retention,
        energy_reduction=summary.energy_reduction,
        energy_reduction_by_model=summary.energy_reduction_by_model,
        energy_reduction_ceiling=summary.energy_reduction_ceiling,
        events_per_sample=summary.event.events_per_sample,
        synops_per_sample=summary.event.synops_per_sample,
        rate_lambda=summary.rate_lambda,
        seconds=seconds,
        neurobench_direct=summary.direct.neurobench,
        neurobench_event=summary.event.neurobench,
        ann_event_reduction_by_model=(
            summary.bit_matched_ann.event_reduction_by_model if summary.bit_matched_ann else {}
        ),
    )


def _add_dicts(
    mean: dict[str, Any],
    std: dict[str, Any],
    worst: dict[str, Any],
    field: str,
    runs: Sequence[SeedRun],
    worst_is: Any = None,
) -> None:
    """Mean and std (and, with ``worst_is``, the worst) of a per-run mapping of figures, for
    the keys every run has a value of."""
    rows = [getattr(r, field) or {} for r in runs]
    keys = [k for k in rows[0] if all(row.get(k) is not None for row in rows)]
    if not keys:
        return
    mean[field] = {k: statistics.fmean(float(row[k]) for row in rows) for k in keys}
    std[field] = {k: _spread([float(row[k]) for row in rows]) for k in keys}
    if worst_is is not None:
        worst[field] = {k: worst_is(float(row[k]) for row in rows) for k in keys}


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(
    dataset: str,
    runs: Sequence[SeedRun],
    machine: dict[str, str],
    tuning: Sequence[TuningReport] = (),
) -> SeedStudy:
    """The study: the runs, their mean and (sample) std per field, and the worst case: the
    lowest retention and the lowest energy reduction (under each energy model too)."""
    if not runs:
        raise ValueError("no seed finished: nothing to aggregate")
    column = {f: [float(getattr(r, f)) for r in runs] for f in RUN_FIELDS}
    models = sorted(runs[0].energy_reduction_by_model)
    by_model = {m: [float(r.energy_reduction_by_model[m]) for r in runs] for m in models}
    mean: dict[str, Any] = {f: statistics.fmean(v) for f, v in column.items()}
    std: dict[str, Any] = {f: _spread(v) for f, v in column.items()}
    mean["energy_reduction_by_model"] = {m: statistics.fmean(v) for m, v in by_model.items()}
    std["energy_reduction_by_model"] = {m: _spread(v) for m, v in by_model.items()}
    worst = {
        "accuracy_retention": min(column["accuracy_retention"]),
        "energy_reduction": min(column["energy_reduction"]),
        "energy_reduction_by_model": {m: min(v) for m, v in by_model.items()},
        "event_accuracy": min(column["event_accuracy"]),
    }
    _add_dicts(mean, std, worst, "ann_event_reduction_by_model", runs, worst_is=min)
    for network in ("direct", "event"):
        _add_dicts(mean, std, worst, f"neurobench_{network}", runs)
    floors = {t.retention_floor for t in tuning if t.retention_floor is not None}
    return SeedStudy(
        dataset=dataset,
        seeds=[r.seed for r in runs],
        runs=list(runs),
        mean=mean,
        std=std,
        worst=worst,
        machine=machine["machine"],
        torch=machine["torch"],
        retention_floor=floors.pop() if len(floors) == 1 else None,
    )


def _worst(field: str, values: list[float]) -> float:
    """The worst seed against the shift targets: least recovered, most clean cost, largest
    event change either way, slowest recovery."""
    if field == "recovered_fraction":
        return min(values)
    if field.endswith("events_change"):
        return max(values, key=abs)
    return max(values)


def stat(values: list[Any], field: str) -> Stat:
    """Mean, std and worst of one figure over the seeds (all None when a seed has none)."""
    if any(v is None for v in values):
        return Stat(mean=None, std=None, worst=None, values=values)
    v = [float(x) for x in values]
    return Stat(mean=statistics.fmean(v), std=_spread(v), worst=_worst(field, v), values=v)


# the front's figures over seeds: each alone (its key) and with each method (``<key>_by_method``)
FRONT_FIELDS = ("recovered_fraction", "events_change", "clean_cost_pp")


def _front_stats(reports: Sequence[ShiftReport], field: str) -> dict[str, Stat]:
    """One figure of the clean front over the seeds, alone and with each method (None where a
    seed's report predates the figure)."""
    out = {"alone": stat([r.front.get(field) for r in reports], field)}
    for m in reports[0].front["recovered_fraction_by_method"]:
        out[m] = stat([r.front.get(f"{field}_by_method", {}).get(m) for r in reports], field)
    return out


def shift_study(
    reports: Sequence[ShiftReport], run_seconds: Sequence[float | None], stage_inside: bool = True
) -> ShiftStudy | None:
    """The shift benchmark over seeds: per adaptation method the mean, std and worst of every
    target figure; the recalibration baseline; the mean corruption errors; and the stage's share
    of the run time (``stage_inside``: the run's seconds include the stage, else it ran
    afterwards on the finished run)."""
    done = [r for r in reports if r.enabled]
    if not done:
        return None
    shares = [
        r.seconds / (t if stage_inside else t + r.seconds)
        for r, t in zip(done, run_seconds, strict=False)
        if t
    ]
    methods = {
        m: MethodStudy(
            **{f: stat([getattr(r.summary[m], f) for r in done], f) for f in SHIFT_FIELDS},
            qualifying_shifts=[r.summary[m].qualifying_shifts for r in done],
        )
        for m in done[0].summary
    }
    recal = [r.baselines.recalibration.recovered_fraction for r in done]
    front = front_events = front_cost = None
    if all(r.front for r in done):
        front, front_events, front_cost = (_front_stats(done, field) for field in FRONT_FIELDS)
    return ShiftStudy(
        seeds=[r.seed for r in done],
        samples=done[0].samples,
        methods=methods,
        recalibration_recovered_fraction=stat(recal, "recovered_fraction"),
        mean_corruption_error={
            k: statistics.fmean(r.mean_corruption_error[k] for r in done)
            for k in done[0].mean_corruption_error
        },
        stage_seconds=statistics.fmean(r.seconds for r in done),
        stage_share={"mean": statistics.fmean(shares), "worst": max(shares)} if shares else None,
        front=front,
        front_events_change=front_events,
        front_clean_cost_pp=front_cost,
    )


def machine_info(threads: int) -> dict[str, str]:
    """The CPU model, core and thread count, and torch build the study ran on."""
    plural = "s" if threads > 1 else ""
    return {
        "machine": f"{machine_name()}, {threads} torch thread{plural} per seed",
        "torch": torch_build(),
    }
