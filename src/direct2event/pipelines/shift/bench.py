"""The shift benchmark's parts, in order: D and E on clean and shifted samples, E with each
online adaptation method, the recalibration and calibration-size baselines, the stream test,
the clean front and the layer diagnostics (the measurements themselves: ``measures``).
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
from direct2event.data.splits import DataSplits
from direct2event.glue.params import PipelineParams
from direct2event.glue.reports import ShiftReport
from direct2event.pipelines.shift.measures import (
    adapt_and_measure,
    calibration_sizes,
    measured,
    recalibrated,
    row_measure,
    shift_stream_test,
)
from direct2event.pipelines.shift.samples import References, shifted_samples
from direct2event.snn.adaptation import input_statistics, reference_statistics
from direct2event.snn.evaluation import measure
from direct2event.snn.models import SpikingNet
from direct2event.snn.robustness import (
    corruption_error,
    front_summary,
    method_summary,
    qualifying_shifts,
    recovered_fraction,
)
from direct2event.snn.training import Split, evaluate

logger = logging.getLogger(__name__)


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
        e, rates = measured(self.event, data, s, None)
        d = measure(self.direct, data, s.direct_coding, s.device, s.profiles(), s.seed)
        adapted, layers = adapt_and_measure(
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
            loss = self.settings.shift.qualifying_loss
            if (
                ahead
                and not row.get("input_unchanged")
                and qualifying_shifts([row], clean["e_accuracy"], loss)  # the front's rule
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
            e, rates = measured(self.event, data, s, None)
            adapted, layers = {}, {}
            if s.shift.adaptation.scope == "all" or level == middle_level:
                warm = self.shifted(name, level, "extra", keep=keep)
                adapted, layers = adapt_and_measure(self.event, self.refs, data, warm, s)
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
            net = recalibrated(
                self.event, self.refs, self.shifted(r["shift"], r["level"], "extra"), self.settings
            )
            eval_data = self.shifted(r["shift"], r["level"], "eval")
            r["recalibrated"] = row_measure(net, eval_data, self.settings, None)
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
            res = row_measure(self.event, data, s, None)
            ins, outs = shifted.front_counts[(name if level else "clean", level, "eval+front")]
            adapted, _ = adapt_and_measure(self.event, self.refs, data, warm, s)
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
        return shift_stream_test(
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
        sizes = calibration_sizes(
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
