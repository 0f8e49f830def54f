"""The shift benchmark: D and E on shifted test data, E with online threshold adaptation, the
recalibration and calibration-size baselines, and the stream test. Evaluation only: no network
is trained or saved here."""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from typing import Any

import torch

from direct2event.data.shifted import ShiftedSamples
from direct2event.data.splits import DataSplits
from direct2event.glue import tracking
from direct2event.glue.datasets import EventSource
from direct2event.glue.params import PipelineParams
from direct2event.glue.reports import ShiftReport
from direct2event.snn.adaptation import OnlineAdaptation, reference_statistics, stream_test
from direct2event.snn.conversion import build_event_network, calibrate
from direct2event.snn.evaluation import measure
from direct2event.snn.models import SpikingNet, restore
from direct2event.snn.robustness import (
    corruption_error,
    method_summary,
    qualifying_shifts,
    recovered_fraction,
)
from direct2event.snn.thresholds import scale_thresholds
from direct2event.snn.training import Split, evaluate

logger = logging.getLogger(__name__)


def shifted_samples(splits: DataSplits, raw: Any, settings: PipelineParams) -> ShiftedSamples:
    """The stage's clean and shifted test samples: the test split's images, or (event data)
    raw test recordings from the dataset's event source, as many as the stage uses."""
    p = settings.shift
    n_extra = max(p.recalibration_samples, p.stream.held_out, p.adaptation.warmup)
    where: dict[str, Any] = {}
    if settings.is_event_dataset:
        if not isinstance(raw, EventSource):
            raise TypeError(f"{settings.dataset}: the shift stage needs an event source.")
        where["recordings"] = raw.test_recordings(p.max_samples + n_extra, settings.seed)
    else:
        where["images"] = splits.test
    table = p.table(settings.is_event_dataset)
    return ShiftedSamples(
        table,
        settings.seed,
        p.max_samples,
        n_extra,
        settings.model.timesteps,
        **where,
        max_events_per_bin=settings.data.max_events_per_bin,
    )


def _row_measure(net: SpikingNet, data: Split, settings: PipelineParams, batch: int | None) -> dict:
    res = measure(
        net, data, settings.event_coding, settings.device, settings.profiles(), settings.seed, batch
    )
    return {
        "accuracy": res["accuracy"],
        "events_per_sample": res["events_per_sample"],
        "energy_uJ_by_model": res["energy_uJ_by_model"],
    }


def _adapted(
    event: SpikingNet, refs: list, data: Split, warm: Split, settings: PipelineParams
) -> dict:
    """E with each adaptation method: from the calibrated state, adapted online on ``warm``
    (unlabelled samples of the same distribution, ``shift.adaptation.warmup`` of them), then
    measured while it goes on adapting over ``data`` (the transient: the stream test)."""
    a = settings.shift.adaptation
    out = {}
    for method in a.methods:
        with OnlineAdaptation(event, refs, a.config(method)):
            if a.warmup:
                evaluate(
                    event,
                    warm.head(a.warmup),
                    settings.event_coding,
                    settings.device,
                    a.batch_size,
                    settings.seed,
                )
            out[method] = _row_measure(event, data, settings, a.batch_size)
    return out


def _recalibrated(
    event: SpikingNet, refs: list, data: Split, settings: PipelineParams
) -> SpikingNet:
    """E with its thresholds scaled again on unlabelled shifted data, to the per-channel rates it
    had on clean calibration data (the project's threshold scaling; the upper reference)."""
    net = copy.deepcopy(event)
    scale_thresholds(
        net,
        data,
        settings.event_coding,
        settings.device,
        "isotonic",
        targets=[r.rate for r in refs],
        starts=[layer.threshold.detach().cpu().flatten().clone() for layer in net.lif_layers()],
        iterations=settings.transfer.thresholds.iterations,
        seed=settings.seed,
    )
    return net


def _calibration_sizes(
    direct: SpikingNet,
    scaled: SpikingNet,
    clean: Split,
    d_clean: dict[str, Any],
    splits: DataSplits,
    settings: PipelineParams,
) -> list[dict]:
    """Conversion (calibration + threshold scaling, no fine-tuning) from clean calibration sets
    of each size: how many samples E's thresholds need, with retention and energy reduction
    against D on the same clean samples."""
    rows = []
    cal = settings.transfer.calibration
    for n in settings.shift.calibration_sizes:
        if n == min(cal.max_samples, len(splits.calibration)):
            net = scaled  # the run's own conversion used exactly these samples
        else:
            net = _convert(direct, _calibration_sample(splits, n), settings)
        res = _row_measure(net, clean, settings, None)
        d_energy = d_clean["d_energy_uJ_by_model"]
        rows.append(
            {
                "samples": n,
                **res,
                "retention": res["accuracy"] / d_clean["d_accuracy"],
                "energy_reduction_by_model": {
                    k: d_energy[k] / v if v > 0 else None
                    for k, v in res["energy_uJ_by_model"].items()
                },
            }
        )
    return rows


def _calibration_sample(splits: DataSplits, n: int) -> Split:
    """``n`` clean samples for calibration: the calibration split, topped up from the training
    split when it holds fewer (calibration uses no labels, so any clean sample serves)."""
    cal = splits.calibration
    if n <= len(cal):
        return cal.head(n)
    more = splits.train.head(n - len(cal))
    return Split(torch.cat([cal.x, more.x]), torch.cat([cal.y, more.y]))


def _convert(direct: SpikingNet, data: Split, settings: PipelineParams) -> SpikingNet:
    """Calibration and threshold scaling of D on ``data``, as the conversion stage does."""
    th, cal = settings.transfer.thresholds, settings.transfer.calibration
    _, stats = calibrate(
        direct,
        data,
        settings.direct_coding,
        settings.event_coding,
        settings.device,
        cal.max_points,
        settings.seed,
    )
    net, _ = build_event_network(
        direct,
        stats,
        data,
        settings.event_coding,
        settings.device,
        th.method,
        th.percentile,
        th.iterations,
        settings.seed,
    )
    return net


def _stream_test(
    event: SpikingNet,
    refs: list,
    shifted: ShiftedSamples,
    name: str,
    level: int,
    settings: PipelineParams,
) -> dict[str, Any]:
    """Clean -> shifted -> clean, one sample at a time, for E alone and each method."""
    p, a = settings.shift.stream, settings.shift.adaptation
    data, extra = shifted("clean", 0, "eval"), shifted("clean", 0, "extra")
    sdata, sextra = shifted(name, level, "eval"), shifted(name, level, "extra")
    n = min(p.segment, len(data) // 3)
    held = min(p.held_out, len(extra))
    segments = [
        (Split(data.x[:n], data.y[:n]), extra.head(held)),
        (Split(sdata.x[n : 2 * n], sdata.y[n : 2 * n]), sextra.head(held)),
        (Split(data.x[2 * n : 3 * n], data.y[2 * n : 3 * n]), extra.head(held)),
    ]
    result = stream_test(
        event,
        refs,
        segments,
        {"none": None, **{m: a.config(m) for m in a.methods}},
        settings.event_coding,
        settings.device,
        p.config(settings.seed),
    )
    return {"shift": name, "level": level, "held_out": held, **result}


def benchmark_shifts(
    direct_model: dict[str, Any],
    scaled_model: dict[str, Any],
    event_model: dict[str, Any],
    splits: DataSplits,
    raw_data: Any,
    settings: PipelineParams,
) -> tuple[ShiftReport, dict[str, dict]]:
    """``shift.json`` and its MLflow metrics ``shift.<name>.<level>.*`` (level 1..3 = mild,
    middle, strong severity), or a report that says the stage is off (``shift.enabled``)."""
    p = settings.shift
    if not p.enabled:
        logger.info("Shift benchmark off (shift.enabled: false).")
        return ShiftReport(enabled=False), {}
    start = time.perf_counter()
    device = settings.device
    direct, event = restore(direct_model), restore(event_model)
    shifted = shifted_samples(splits, raw_data, settings)
    refs = reference_statistics(
        event,
        splits.calibration.head(settings.transfer.calibration.max_samples),
        settings.event_coding,
        device,
        settings.seed,
    )
    clean_data = shifted("clean", 0, "eval")
    e_clean = _row_measure(event, clean_data, settings, None)
    d_clean = measure(
        direct, clean_data, settings.direct_coding, device, settings.profiles(), settings.seed
    )
    clean = {
        "d_accuracy": d_clean["accuracy"],
        "d_energy_uJ_by_model": d_clean["energy_uJ_by_model"],
        "e_accuracy": e_clean["accuracy"],
        "e_events_per_sample": e_clean["events_per_sample"],
        "e_energy_uJ_by_model": e_clean["energy_uJ_by_model"],
        "adapted": _adapted(event, refs, clean_data, shifted("clean", 0, "extra"), settings),
    }
    logger.info(
        "Shift benchmark of %s on %d test samples: clean E %.4f",
        settings.dataset,
        len(clean_data),
        clean["e_accuracy"],
    )
    parts = {"clean": time.perf_counter() - start}
    rows = []
    for name, (_, severities) in shifted.table.items():
        for level, severity in enumerate(severities, start=1):
            data = shifted(name, level, "eval")
            e = _row_measure(event, data, settings, None)
            row = {
                "shift": name,
                "level": level,
                "severity": severity,
                "d_accuracy": evaluate(
                    direct, data, settings.direct_coding, device, seed=settings.seed
                ),
                "e_accuracy": e["accuracy"],
                "e_events_per_sample": e["events_per_sample"],
                "e_energy_uJ_by_model": e["energy_uJ_by_model"],
                "adapted": _adapted(event, refs, data, shifted(name, level, "extra"), settings),
            }
            row["retention"] = row["e_accuracy"] / row["d_accuracy"] if row["d_accuracy"] else None
            rows.append(row)
            logger.info(
                "shift %s %s: D %.4f, E %.4f, adapted %s",
                name,
                severity,
                row["d_accuracy"],
                row["e_accuracy"],
                {m: round(v["accuracy"], 4) for m, v in row["adapted"].items()},
            )
    parts["shifts"] = time.perf_counter() - start - sum(parts.values())
    summary = {m: method_summary(m, rows, clean, p.qualifying_loss) for m in p.adaptation.methods}
    qualifying = qualifying_shifts(rows, clean["e_accuracy"], p.qualifying_loss)
    for r in qualifying:
        net = _recalibrated(event, refs, shifted(r["shift"], r["level"], "extra"), settings)
        r["recalibrated"] = _row_measure(
            net, shifted(r["shift"], r["level"], "eval"), settings, None
        )
    parts["recalibration"] = time.perf_counter() - start - sum(parts.values())
    baseline = {
        "recalibration": {
            "samples": p.recalibration_samples,
            "recovered_fraction": statistics.fmean(
                recovered_fraction(
                    clean["e_accuracy"], r["e_accuracy"], r["recalibrated"]["accuracy"]
                )
                for r in qualifying
            )
            if qualifying
            else None,
        },
        "calibration_sizes": _calibration_sizes(
            direct, restore(scaled_model), clean_data, clean, splits, settings
        ),
    }
    # The stream test runs on the shift that costs E most at its middle severity.
    mids = {r["shift"]: r for r in qualifying_shifts(rows, math.inf, -math.inf)}
    stream_shift = p.stream.shift or min(mids.values(), key=lambda r: r["e_accuracy"])["shift"]
    level = mids[stream_shift]["level"]
    parts["calibration_sizes"] = time.perf_counter() - start - sum(parts.values())
    stream_result = _stream_test(event, refs, shifted, stream_shift, level, settings)
    parts["stream"] = time.perf_counter() - start - sum(parts.values())
    for m in p.adaptation.methods:
        res = stream_result["methods"][m]
        done = [res["recovery_to_shift"], res["recovery_back"]]
        summary[m]["recovery_samples"] = None if None in done else max(done)
        summary[m]["recovery_to_shift"], summary[m]["recovery_back"] = done
    ce = {
        "event": corruption_error(rows),
        "direct": corruption_error(rows, "d_accuracy"),
        **{m: corruption_error(rows, f"adapted/{m}/accuracy") for m in p.adaptation.methods},
    }
    report = {
        "enabled": True,
        "dataset": settings.dataset,
        "seed": settings.seed,
        "samples": len(clean_data),
        "energy_model": settings.transfer.energy_model,
        "adaptation": p.adaptation.model_dump(),
        "clean": clean,
        "rows": rows,
        "summary": summary,
        "mean_corruption_error": {k: sum(v.values()) / len(v) for k, v in ce.items() if v},
        "corruption_error": ce,
        "baselines": baseline,
        "stream": stream_result,
        "seconds": time.perf_counter() - start,
        "seconds_by_part": parts,
    }
    typed = ShiftReport.model_validate(report)
    return typed, _metrics(typed)


def _metrics(report: ShiftReport) -> dict[str, dict]:
    """Dataset-neutral MLflow metrics of the report (energy in nJ, as every energy metric)."""
    m: dict[str, float | None] = {
        "shift.clean.event_accuracy": report.clean.e_accuracy,
        "shift.clean.direct_accuracy": report.clean.d_accuracy,
        "shift.seconds": report.seconds,
    }
    for method, v in report.clean.adapted.items():
        m[f"shift.clean.{method}.event_accuracy"] = v.accuracy
        m[f"shift.clean.{method}.events_per_sample"] = v.events_per_sample
    for r in report.rows:
        base = f"shift.{r.shift}.{r.level}"
        m[f"{base}.direct_accuracy"] = r.d_accuracy
        m[f"{base}.event_accuracy"] = r.e_accuracy
        m[f"{base}.events_per_sample"] = r.e_events_per_sample
        for model, uj in r.e_energy_uJ_by_model.items():
            m[f"{base}.{model}.energy_uJ"] = uj
        for method, v in r.adapted.items():
            m[f"{base}.{method}.event_accuracy"] = v.accuracy
            m[f"{base}.{method}.events_per_sample"] = v.events_per_sample
        if r.recalibrated is not None:
            m[f"{base}.recalibrated.event_accuracy"] = r.recalibrated.accuracy
    for method, s in report.summary.items():
        for key in (
            "recovered_fraction",
            "clean_cost_pp",
            "clean_events_change",
            "shift_events_change",
            "recovery_samples",
        ):
            m[f"shift.{method}.{key}"] = getattr(s, key)
    for name, value in report.mean_corruption_error.items():
        m[f"shift.mce.{name}"] = value
    return {
        k: {"value": float(v), "step": 0}
        for k, v in tracking.in_nanojoules(m).items()
        if v is not None and math.isfinite(v)
    }
