"""The shift benchmark's parts: D and E on clean and shifted samples, E with each online
adaptation method, the recalibration and calibration-size baselines, and the stream test.
Evaluation only: no network is trained or saved here."""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from typing import Any

import torch

from direct2event.data.event_filters import EventFront
from direct2event.data.shifted import ShiftedSamples
from direct2event.data.splits import DataSplits
from direct2event.glue.params import PipelineParams
from direct2event.glue.reports import ShiftReport
from direct2event.pipelines.shift.samples import References, shifted_samples
from direct2event.snn.adaptation import (
    OnlineAdaptation,
    input_statistics,
    reference_statistics,
    stream_test,
)
from direct2event.snn.conversion import build_event_network, calibrate
from direct2event.snn.encoders import InputCoding
from direct2event.snn.evaluation import measure
from direct2event.snn.models import SpikingNet
from direct2event.snn.robustness import (
    corruption_error,
    front_summary,
    method_summary,
    qualifying_shifts,
    recovered_fraction,
)
from direct2event.snn.thresholds import ThresholdConfig, scale_thresholds
from direct2event.snn.training import Split, evaluate

logger = logging.getLogger(__name__)


def _row_measure(
    net: SpikingNet,
    data: Split,
    settings: PipelineParams,
    batch: int | None,
    coding: InputCoding | None = None,
) -> dict:
    return _measured(net, data, settings, batch, coding)[0]


def _measured(
    net: SpikingNet,
    data: Split,
    settings: PipelineParams,
    batch: int | None,
    coding: InputCoding | None = None,
) -> tuple[dict, list[float]]:
    """A row's measure of ``net`` on ``data`` and each LIF layer's firing rate on the same
    passes (for the layer diagnostics, which need not run them again)."""
    res = measure(
        net,
        data,
        coding or settings.event_coding,
        settings.device,
        settings.profiles(),
        settings.seed,
        batch,
    )
    kept = {
        "accuracy": res["accuracy"],
        "events_per_sample": res["events_per_sample"],
        "energy_nJ_by_model": res["energy_nJ_by_model"],
    }
    return kept, [round(v, 5) for v in res["firing_rates"].values()]


def _held(adaptation: OnlineAdaptation, event: SpikingNet) -> dict[str, Any]:
    """The method's per-channel gains as a chip would hold them, layer means: the threshold
    factor ``theta_eff / theta`` and the bias, and the encoder's where it adapts it."""
    held = adaptation.effective_thresholds()
    thetas = [layer.threshold.detach().cpu().flatten() for layer in event.lif_layers()]
    out: dict[str, Any] = {
        "threshold_factor": [
            round(float((t_eff / t.clamp(min=1e-6)).mean()), 4)
            for (t_eff, _), t in zip(held, thetas, strict=True)
        ],
        "bias": [round(float(b.mean()), 5) for _, b in held],
    }
    encoder = adaptation.method.input_gain_bias()
    if encoder is not None:  # the encoder's threshold factor 1 / g and bias b / g
        gain, bias = encoder
        out["encoder"] = {
            "threshold_factor": round(float((1.0 / gain).mean()), 4),
            "bias": round(float((bias / gain).mean()), 5),
        }
    return out


def _adapted(
    event: SpikingNet, refs: References, data: Split, warm: Split, settings: PipelineParams
) -> tuple[dict, dict]:
    """E with each adaptation method: from the calibrated state, adapted online on ``warm``
    (unlabelled samples of the same distribution, ``shift.adaptation.warmup`` of them), then
    measured while it goes on adapting over ``data`` (the transient: the stream test). Also,
    per method, each layer's firing rate on those passes and the gains it ended with (the
    layer diagnostics)."""
    a = settings.shift.adaptation
    out, layers = {}, {}
    for method in a.methods:
        online, coding = refs.adaptation(event, settings, method)
        with online as adaptation:
            if a.warmup:
                evaluate(
                    event, warm.head(a.warmup), coding, settings.device, a.batch_size, settings.seed
                )
            out[method], rates = _measured(event, data, settings, a.batch_size, coding)
            layers[method] = {"rate": rates, **_held(adaptation, event)}
    return out, layers


def _recalibrated(
    event: SpikingNet, refs: References, data: Split, settings: PipelineParams
) -> SpikingNet:
    """E with its thresholds scaled again on unlabelled shifted data, to the per-channel rates it
    had on clean calibration data (the project's threshold scaling; the upper reference)."""
    net = copy.deepcopy(event)
    scale_thresholds(
        net,
        data,
        settings.event_coding,
        settings.device,
        ThresholdConfig("isotonic", iterations=settings.transfer.thresholds.iterations),
        targets=[r.rate for r in refs.layers],
        starts=[layer.threshold.detach().cpu().flatten().clone() for layer in net.lif_layers()],
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
    against D on the same clean samples. A size at or above the run's own calibration set is
    the run's own conversion, reported once with its sample count (converting again from that
    set topped up with a few training samples took the longest of the sizes and told nothing)."""
    rows = []
    cal = settings.transfer.calibration
    own = min(cal.max_samples, len(splits.calibration))
    sizes = sorted({min(n, own) for n in settings.shift.calibration_sizes})
    for n in sizes:
        if n == own:
            net = scaled  # the run's own conversion used exactly these samples
        else:
            net = _convert(direct, splits.calibration.head(n), settings)
        res = _row_measure(net, clean, settings, None)
        d_energy = d_clean["d_energy_nJ_by_model"]
        rows.append(
            {
                "samples": n,
                **res,
                "retention": res["accuracy"] / d_clean["d_accuracy"],
                "energy_reduction_by_model": {
                    k: d_energy[k] / v if v > 0 else None
                    for k, v in res["energy_nJ_by_model"].items()
                },
            }
        )
    return rows


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
        th.config(),
        settings.seed,
    )
    return net


def _stream_test(
    event: SpikingNet,
    refs: References,
    shifted: ShiftedSamples,
    name: str,
    level: int,
    settings: PipelineParams,
) -> dict[str, Any]:
    """Clean -> shifted -> clean, one sample at a time, for E alone and each method."""
    p, a = settings.shift.stream, settings.shift.adaptation
    own = shifted.parts["stream"].stop - shifted.parts["stream"].start >= 3 * p.segment
    part = "stream" if own else "eval"  # its own samples where the data have them
    data, extra = shifted("clean", 0, part), shifted("clean", 0, "extra")
    sdata, sextra = shifted(name, level, part), shifted(name, level, "extra")
    n = min(p.segment, len(data) // 3)
    held = min(p.held_out, len(extra))
    segments = [
        (Split(data.x[:n], data.y[:n]), extra.head(held)),
        (Split(sdata.x[n : 2 * n], sdata.y[n : 2 * n]), sextra.head(held)),
        (Split(data.x[2 * n : 3 * n], data.y[2 * n : 3 * n]), extra.head(held)),
    ]
    result = stream_test(
        event,
        refs.layers,
        segments,
        {"none": None, **{m: a.config(m) for m in a.methods}},
        settings.event_coding,
        settings.device,
        p.config(settings.seed),
        refs.inputs,
    )
    return {"shift": name, "level": level, "held_out": held, **result}


class ShiftBench:
    """One run of the shift benchmark on networks D and E (and the threshold-scaled E before
    fine-tuning, for the calibration-size baseline): each part a method, timed."""

    def __init__(
        self,
        direct: SpikingNet,
        scaled: SpikingNet,
        event: SpikingNet,
        splits: DataSplits,
        raw: Any,
        settings: PipelineParams,
    ) -> None:
        self.direct, self.scaled, self.event = direct, scaled, event
        self.splits, self.settings = splits, settings
        self.shifted = shifted_samples(splits, raw, settings)
        calibration = splits.calibration.head(settings.transfer.calibration.max_samples)
        self.refs = References(
            reference_statistics(
                event, calibration, settings.event_coding, settings.device, settings.seed
            ),
            input_statistics(calibration, settings.event_coding),
        )
        self.start = time.perf_counter()
        self.parts: dict[str, float] = {}
        # (shift, level) -> E's layer rates and each method's rates and gains, from the rows
        self.diagnostics: dict[tuple[str, int], dict[str, Any]] = {}
        # (shift, level) -> the clean front's warm-up and evaluated samples, and its window
        self.front_samples: dict[tuple[str, int], tuple[Split, Split, float]] = {}
        self.calibrate_front()  # its budget, before a row filters

    def lap(self, part: str) -> None:
        """Time the part just done."""
        self.parts[part] = time.perf_counter() - self.start - sum(self.parts.values())

    def clean(self) -> dict[str, Any]:
        """D and E on the clean samples, E with each method (adapted on clean warm-up data)."""
        s, data = self.settings, self.shifted("clean", 0, "eval")
        e, rates = _measured(self.event, data, s, None)
        d = measure(self.direct, data, s.direct_coding, s.device, s.profiles(), s.seed)
        adapted, layers = _adapted(
            self.event, self.refs, data, self.shifted("clean", 0, "extra"), s
        )
        self.diagnostics[("clean", 0)] = {"rate": rates, "adapted": layers}
        clean = {
            "d_accuracy": d["accuracy"],
            "d_energy_nJ_by_model": d["energy_nJ_by_model"],
            "e_accuracy": e["accuracy"],
            "e_events_per_sample": e["events_per_sample"],
            "e_energy_nJ_by_model": e["energy_nJ_by_model"],
            "adapted": adapted,
        }
        logger.info(
            "Shift benchmark of %s on %d test samples: clean E %.4f",
            s.dataset,
            len(data),
            clean["e_accuracy"],
        )
        return clean

    def unchanged(self, name: str, level: int) -> bool:
        """Whether the shift leaves E's input as it was: every evaluated and warm-up sample
        equal to the clean one (on event data binned into frames that span each recording, a
        uniform slow-down changes no frame)."""
        return all(
            torch.equal(self.shifted(name, level, part).x, self.shifted("clean", 0, part).x)
            for part in ("eval", "extra")
        )

    def row(
        self, name: str, level: int, severity: float, clean: dict[str, Any], middle_level: int
    ) -> dict[str, Any]:
        """D, E and E with each method under one shift at one severity (the methods at the
        middle severity only where ``shift.adaptation.scope`` is ``middle``). A shift that
        leaves E's input unchanged gets the clean results (the same passes on the same samples
        would give them again), marked ``input_unchanged``."""
        # the clean front may measure a middle row: its recordings are kept to filter them
        ahead = level == middle_level and isinstance(self.shifted.front, EventFront)
        try:
            row = self._row(name, level, severity, clean, middle_level, ahead)
            lost = clean["e_accuracy"] - row["e_accuracy"]
            if (
                ahead
                and not row.get("input_unchanged")
                and lost >= self.settings.shift.qualifying_loss
            ):
                self.filtered(name, level)  # from the kept recordings, not shifted again
        finally:
            self.shifted.drop_kept()
        return row

    def _row(
        self,
        name: str,
        level: int,
        severity: float,
        clean: dict[str, Any],
        middle_level: int,
        keep: bool,
    ) -> dict[str, Any]:
        s, data = self.settings, self.shifted(name, level, "eval", keep=keep)
        row: dict[str, Any] = {"shift": name, "level": level, "severity": severity}
        if self.unchanged(name, level):
            self.diagnostics[(name, level)] = self.diagnostics[("clean", 0)]
            row |= {
                "d_accuracy": clean["d_accuracy"],
                "e_accuracy": clean["e_accuracy"],
                "e_events_per_sample": clean["e_events_per_sample"],
                "e_energy_nJ_by_model": clean["e_energy_nJ_by_model"],
                "adapted": copy.deepcopy(clean["adapted"]),
                "input_unchanged": True,
            }
            logger.info("shift %s %s leaves E's input unchanged: clean results", name, severity)
        else:
            e, rates = _measured(self.event, data, s, None)
            adapted, layers = {}, {}
            if s.shift.adaptation.scope == "all" or level == middle_level:
                warm = self.shifted(name, level, "extra", keep=keep)
                adapted, layers = _adapted(self.event, self.refs, data, warm, s)
            self.diagnostics[(name, level)] = {"rate": rates, "adapted": layers}
            row |= {
                "d_accuracy": evaluate(self.direct, data, s.direct_coding, s.device, seed=s.seed),
                "e_accuracy": e["accuracy"],
                "e_events_per_sample": e["events_per_sample"],
                "e_energy_nJ_by_model": e["energy_nJ_by_model"],
                "adapted": adapted,
            }
        row["retention"] = row["e_accuracy"] / row["d_accuracy"] if row["d_accuracy"] else None
        logger.info(
            "shift %s %s: D %.4f, E %.4f, adapted %s",
            name,
            severity,
            row["d_accuracy"],
            row["e_accuracy"],
            {m: round(v["accuracy"], 4) for m, v in row["adapted"].items()},
        )
        return row

    def rows(self, clean: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every shift at every severity; one that raises is named (logged and in the report's
        ``failed``) and the others go on, so no result already measured is lost."""
        rows, failed = [], []
        for name, (_, severities) in self.shifted.table.items():
            middle_level = len(severities) // 2 + 1  # robustness.middle's
            for level, severity in enumerate(severities, start=1):
                try:
                    rows.append(self.row(name, level, severity, clean, middle_level))
                except (KeyboardInterrupt, MemoryError):
                    raise
                except Exception as err:
                    logger.error("shift '%s' at severity %s failed: %r", name, severity, err)
                    failed.append(
                        {"shift": name, "level": level, "severity": severity, "error": repr(err)}
                    )
        if not rows:
            raise RuntimeError(f"every shift failed: {failed}")
        return rows, failed

    def recalibration(self, clean: dict[str, Any], qualifying: list[dict[str, Any]]) -> dict:
        """E recalibrated on each qualifying shift's unlabelled samples (kept in its row), and
        the share of the loss that wins back: the upper reference of the methods."""
        for r in qualifying:
            net = _recalibrated(
                self.event, self.refs, self.shifted(r["shift"], r["level"], "extra"), self.settings
            )
            eval_data = self.shifted(r["shift"], r["level"], "eval")
            r["recalibrated"] = _row_measure(net, eval_data, self.settings, None)
        recovered = [
            recovered_fraction(clean["e_accuracy"], r["e_accuracy"], r["recalibrated"]["accuracy"])
            for r in qualifying
        ]
        return {
            "samples": self.settings.shift.recalibration_samples,
            "recovered_fraction": statistics.fmean(recovered) if recovered else None,
        }

    def front(self, clean: dict[str, Any], qualifying: list[dict[str, Any]]) -> dict | None:
        """Event data: the clean front (hot pixels and background activity removed) as a
        baseline, alone and with each method, on the clean samples and the qualifying shifts;
        the events it removes and its cost per event."""
        front, shifted = self.shifted.front, self.shifted
        if not isinstance(front, EventFront):
            return None
        s = self.settings
        self.calibrate_front()

        def measured(name: str, level: int) -> dict[str, Any]:
            warm, data, window = self.filtered(name, level)
            res = _row_measure(self.event, data, s, None)
            ins, outs = shifted.front_counts[(name if level else "clean", level, "eval+front")]
            adapted, _ = _adapted(self.event, self.refs, data, warm, s)
            for v in adapted.values():
                v["events_change"] = v["events_per_sample"] / clean["e_events_per_sample"] - 1.0
            return {
                **res,
                "adapted": adapted,
                "removed_fraction": 1.0 - outs / ins if ins else 0.0,
                "window_us": window,
            }

        out: dict[str, Any] = {"hot_pixel_hz": front.hot_pixel_hz, "budget_events": front.budget}
        out |= {"filter_time_us": front.filter_time_us, "budget_tolerance": front.budget_tolerance}
        out["clean"] = measured("clean", 0)
        out["clean_cost_pp"] = 100 * (clean["e_accuracy"] - out["clean"]["accuracy"])
        out["clean_cost_pp_by_method"] = {
            m: 100 * (clean["e_accuracy"] - v["accuracy"])
            for m, v in out["clean"]["adapted"].items()
        }
        rows = []
        for r in qualifying:
            f = measured(r["shift"], r["level"])
            base, lost = r["e_accuracy"], clean["e_accuracy"]
            f["shift"], f["level"] = r["shift"], r["level"]
            f["recovered_fraction"] = recovered_fraction(lost, base, f["accuracy"])
            f["recovered_fraction_by_method"] = {
                m: recovered_fraction(lost, base, v["accuracy"]) for m, v in f["adapted"].items()
            }
            f["events_change"] = f["events_per_sample"] / clean["e_events_per_sample"] - 1.0
            rows.append(f)
        out["rows"] = rows
        out["seconds_per_event"] = front.seconds_per_event()
        out |= front_summary(rows, s.shift.adaptation.methods)
        return out

    def calibrate_front(self) -> None:
        """Event data: the clean front's budget, from the clean extra recordings (once)."""
        front = self.shifted.front
        if isinstance(front, EventFront) and front.budget_tolerance is not None:
            if front.budget is None:
                assert self.shifted.recordings is not None
                front.calibrate(self.shifted.recordings.events[self.shifted.parts["extra"]])

    def filtered(self, name: str, level: int) -> tuple[Split, Split, float]:
        """The clean front's samples of a shift: each row a deployment of its own, the front
        from its full window, warmed up on the extra recordings, then on the evaluated ones
        (its window goes on adapting); with the window it ended at."""
        if (name, level) not in self.front_samples:
            front = self.shifted.front
            assert isinstance(front, EventFront)
            front.reset()
            warm = self.shifted(name, level, "extra", filtered=True)
            data = self.shifted(name, level, "eval", filtered=True)
            self.front_samples[(name, level)] = (warm, data, front.window_us)
        return self.front_samples[(name, level)]

    def layer_diagnostics(self, name: str, level: int) -> dict[str, Any]:
        """Why a method works, on one shift: each LIF layer's firing rate on clean and shifted
        samples, unadapted and adapted by each method, and the method's per-channel gains as a
        chip would hold them (threshold factor ``theta_eff / theta``, bias), layer means; all
        from the passes of the clean row and the shift's row."""
        clean, shifted = self.diagnostics[("clean", 0)], self.diagnostics[(name, level)]
        return {
            "shift": name,
            "level": level,
            "layers": [n for n, m in self.event.named_modules() if m in self.event.lif_layers()],
            "reference_rate": [round(float(r.rate.mean()), 5) for r in self.refs.layers],
            "clean_rate": clean["rate"],
            "shifted_rate": shifted["rate"],
            "adapted": shifted["adapted"],
        }

    def stream(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The stream test on ``shift.stream.shift``, by default the shift that costs E most at
        its middle severity."""
        mids = {r["shift"]: r for r in qualifying_shifts(rows, math.inf, -math.inf)}
        name = (
            self.settings.shift.stream.shift
            or min(mids.values(), key=lambda r: r["e_accuracy"])["shift"]
        )
        return _stream_test(
            self.event, self.refs, self.shifted, name, mids[name]["level"], self.settings
        )

    def run(self) -> ShiftReport:
        """Every part, in order, into the report."""
        p = self.settings.shift
        methods = p.adaptation.methods
        clean = self.clean()
        self.lap("clean")
        rows, failed = self.rows(clean)
        self.lap("shifts")
        summary = {m: method_summary(m, rows, clean, p.qualifying_loss) for m in methods}
        qualifying = qualifying_shifts(rows, clean["e_accuracy"], p.qualifying_loss)
        recalibration = self.recalibration(clean, qualifying)
        self.lap("recalibration")
        clean_data = self.shifted("clean", 0, "eval")
        sizes = _calibration_sizes(
            self.direct, self.scaled, clean_data, clean, self.splits, self.settings
        )
        self.lap("calibration_sizes")
        stream = self.stream(rows)
        self.lap("stream")
        front = self.front(clean, qualifying)
        self.lap("front")
        layers = self.layer_diagnostics(stream["shift"], stream["level"])
        self.lap("layers")
        for m in methods:
            res = stream["methods"][m]
            done = [res["recovery_to_shift"], res["recovery_back"]]
            summary[m]["recovery_samples"] = None if None in done else max(done)
            summary[m]["recovery_to_shift"], summary[m]["recovery_back"] = done
        ce = {
            "event": corruption_error(rows),
            "direct": corruption_error(rows, "d_accuracy"),
            # a method's, where it ran at every severity (``shift.adaptation.scope: all``)
            **{
                m: corruption_error(rows, f"adapted/{m}/accuracy")
                for m in methods
                if all(m in r["adapted"] for r in rows)
            },
        }
        return ShiftReport.model_validate(
            {
                "enabled": True,
                "dataset": self.settings.dataset,
                "seed": self.settings.seed,
                "samples": len(clean_data),
                "energy_model": self.settings.transfer.energy_model,
                "adaptation": p.adaptation.model_dump(),
                "clean": clean,
                "rows": rows,
                "summary": summary,
                "mean_corruption_error": {k: sum(v.values()) / len(v) for k, v in ce.items() if v},
                "corruption_error": ce,
                "baselines": {"recalibration": recalibration, "calibration_sizes": sizes},
                "stream": stream,
                "seconds": time.perf_counter() - self.start,
                "seconds_by_part": self.parts,
                "failed": failed,
                "front": front,
                "layers": layers,
            }
        )
