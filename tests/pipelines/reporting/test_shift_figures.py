from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from direct2event.glue.reports import ShiftReport
from direct2event.pipelines.reporting import shift_figures


def _measure(accuracy: float, events: float) -> dict:
    return {
        "accuracy": accuracy,
        "events_per_sample": events,
        "energy_nJ_by_model": {"per_event": events * 1e-3},
    }


def _row(shift: str, level: int, severity: float, e: float, events: float, **extra) -> dict:
    return {
        "shift": shift,
        "level": level,
        "severity": severity,
        "d_accuracy": e + 0.01,
        "e_accuracy": e,
        "e_events_per_sample": events,
        "e_energy_nJ_by_model": {"per_event": events * 1e-3},
        "adapted": {"homeostasis": _measure(e + 0.05, events * 0.9)},
        "retention": e / (e + 0.01),
        **extra,
    }


RAW = {
    "enabled": True,
    "dataset": "digits",
    "samples": 100,
    "clean": {
        "d_accuracy": 0.98,
        "e_accuracy": 0.97,
        "e_events_per_sample": 1000.0,
        "d_energy_nJ_by_model": {"per_event": 0.1},
        "e_energy_nJ_by_model": {"per_event": 0.01},
        "adapted": {"homeostasis": _measure(0.96, 990.0)},
    },
    "rows": [
        _row("noise", 1, 0.1, 0.9, 1100.0),
        _row("noise", 2, 0.2, 0.8, 1300.0, recalibrated=_measure(0.85, 1000.0)),
        _row("noise", 3, 0.4, 0.6, 1600.0),
        _row("dropout", 1, 0.2, 0.95, 800.0),
    ],
    "stream": {
        "segment": 10,
        "window": 5,
        "held_out": 50,
        "shift": "noise",
        "level": 2,
        "methods": {
            "none": {"sliding_accuracy": [0.9, 0.5], "positions": [10, 20],
                     "held_out_accuracy": [0.9, 0.6], "recovery_to_shift": None,
                     "recovery_back": None, "plateau_to_shift": 0.6, "plateau_back": 0.9},
            "homeostasis": {"sliding_accuracy": [0.9, 0.7], "positions": [10, 20],
                            "held_out_accuracy": [0.9, 0.8], "recovery_to_shift": 8,
                            "recovery_back": None, "plateau_to_shift": 0.8, "plateau_back": 0.9},
        },
    },
}  # fmt: skip
REPORT = ShiftReport.model_validate(RAW)  # the report as the stage hands it on


def test_accuracy_panels_plot_each_shift_from_clean_on() -> None:
    fig = shift_figures.plot_shift_accuracy(REPORT)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert set(panels) == {"noise", "dropout"}
    lines = {line.get_label(): line for line in panels["noise"].get_lines()}
    assert list(lines["E"].get_ydata()) == pytest.approx([97.0, 90.0, 80.0, 60.0])
    assert list(lines["E + homeostasis"].get_ydata()) == pytest.approx([96.0, 95.0, 85.0, 65.0])
    assert list(lines["E recalibrated"].get_xdata()) == [2]  # only where it ran
    assert "E recalibrated" not in {line.get_label() for line in panels["dropout"].get_lines()}


def test_energy_bars_are_the_middle_severity_relative_to_clean_e() -> None:
    fig = shift_figures.plot_shift_energy(REPORT)
    heights = [round(b.get_height(), 3) for b in fig.axes[0].patches if b.get_width() < 1]
    # E then E + homeostasis; noise's middle severity is level 2, dropout's only row level 1
    assert heights == [1.3, 0.8, 1.17, 0.72]


def test_stream_says_where_adaptation_settles_and_off_is_a_note() -> None:
    fig = shift_figures.plot_stream(REPORT)
    labels = [line.get_label() for line in fig.axes[1].get_lines()]
    assert labels == ["E", "E + homeostasis (settles in 8, back: does not settle)"]
    off = shift_figures.plot_shift_accuracy(ShiftReport(enabled=False))
    assert "shift.enabled: false" in off.texts[0].get_text()


def test_a_method_run_at_the_middle_severity_only_is_plotted_where_it_ran() -> None:
    """``shift.adaptation.scope: middle``: the off-middle rows hold no method."""
    raw = {**RAW, "rows": [dict(r) for r in RAW["rows"]]}
    for r in raw["rows"]:
        if r["level"] != 2:
            r["adapted"] = {}
    fig = shift_figures.plot_shift_accuracy(ShiftReport.model_validate(raw))
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    lines = {line.get_label(): line for line in panels["noise"].get_lines()}
    assert list(lines["E + homeostasis"].get_xdata()) == [0, 2]  # clean and the middle one
    assert list(lines["E + homeostasis"].get_ydata()) == pytest.approx([96.0, 85.0])
    assert list(lines["E"].get_xdata()) == [0, 1, 2, 3]
    plt.close(fig)
