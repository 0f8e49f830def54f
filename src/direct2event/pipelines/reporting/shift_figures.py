"""The shift stage's figures (E under distribution shift, with and without online adaptation),
each a node of its own: the shift report in, a matplotlib figure out."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from direct2event.glue.reports import ShiftReport, ShiftRow
from direct2event.pipelines.reporting.figures import note_figure


def _by_shift(report: ShiftReport) -> dict[str, list[ShiftRow]]:
    out: dict[str, list[ShiftRow]] = {}
    for row in report.rows:
        out.setdefault(row.shift, []).append(row)
    return out


def plot_shift_accuracy(shift: ShiftReport) -> Figure:
    """Accuracy against severity, one panel per shift: D, E, E with each adaptation method
    (at the severities it ran at) and E recalibrated on shifted data at the middle severity,
    where it ran."""
    if not shift.enabled:
        return note_figure("shift benchmark off (shift.enabled: false)")
    groups = _by_shift(shift)
    cols = min(4, len(groups))
    rows_n = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.3 * cols, 2.8 * rows_n), squeeze=False)
    clean = shift.clean
    for ax, (name, rows) in zip(axes.flat, groups.items(), strict=False):
        levels = [0] + [r.level for r in rows]
        ax.plot(
            levels,
            [100 * clean.d_accuracy] + [100 * r.d_accuracy for r in rows],
            "k--",
            label="D",
        )
        ax.plot(
            levels,
            [100 * clean.e_accuracy] + [100 * r.e_accuracy for r in rows],
            "o-",
            label="E",
        )
        for method in clean.adapted:
            ran = [r for r in rows if method in r.adapted]  # scope middle: one severity
            ax.plot(
                [0] + [r.level for r in ran],
                [100 * clean.adapted[method].accuracy]
                + [100 * r.adapted[method].accuracy for r in ran],
                "s-",
                ms=3,
                label=f"E + {method}",
            )
        recal = [r for r in rows if r.recalibrated is not None]
        if recal:
            ax.plot(
                [r.level for r in recal],
                [100 * r.recalibrated.accuracy for r in recal],
                "k*",
                ms=9,
                label="E recalibrated",
            )
        ax.set_xticks(levels)
        ax.set_xticklabels(["clean"] + [f"{r.severity:g}" for r in rows], fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=6)
    fig.suptitle(
        f"{shift.dataset}: accuracy under shift ({shift.samples} test samples)", fontsize=10
    )
    fig.tight_layout()
    return fig


def plot_shift_energy(shift: ShiftReport) -> Figure:
    """E's events per sample at each shift's middle severity, with and without adaptation,
    relative to clean E (the +-15 % band of the target shaded), and energy under each model."""
    if not shift.enabled:
        return note_figure("shift benchmark off (shift.enabled: false)")
    clean = shift.clean
    base = clean.e_events_per_sample
    mids = [rows[len(rows) // 2] for rows in _by_shift(shift).values()]
    names = [r.shift for r in mids]
    series = {"E": [r.e_events_per_sample / base for r in mids]}
    for method in clean.adapted:
        series[f"E + {method}"] = [r.adapted[method].events_per_sample / base for r in mids]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 3.6))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        ax.bar(
            [x + (i - (len(series) - 1) / 2) * width for x in range(len(names))],
            values,
            width,
            label=label,
        )
    ax.axhspan(0.85, 1.15, color="green", alpha=0.1, label="±15 % of clean E")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    models = ", ".join(f"{k} {v:.4g} nJ" for k, v in clean.e_energy_nJ_by_model.items())
    ax.set_ylabel("events per sample / clean E")
    ax.set_title(
        f"{shift.dataset}: E's events at the middle severity (clean E: {base:.0f} events, {models})",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _settles(samples: int | None) -> str:
    return "does not settle" if samples is None else f"settles in {samples}"


def plot_stream(shift: ShiftReport) -> Figure:
    """The stream test: online accuracy over a sliding window (top) and the held-out accuracy
    of the adaptation's state at each checkpoint (bottom), clean -> shifted -> clean."""
    if not shift.enabled:
        return note_figure("shift benchmark off (shift.enabled: false)")
    st = shift.stream
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.2), sharex=True)
    for method, res in st.methods.items():
        label = "E" if method == "none" else f"E + {method}"
        top.plot(
            range(len(res.sliding_accuracy)),
            [100 * v for v in res.sliding_accuracy],
            lw=1,
            label=label,
        )
        extra = (
            ""
            if method == "none"
            else f" ({_settles(res.recovery_to_shift)}, back: {_settles(res.recovery_back)})"
        )
        bottom.plot(
            res.positions,
            [100 * v for v in res.held_out_accuracy],
            "o-",
            ms=2,
            label=label + extra,
        )
    n = st.segment
    for ax in (top, bottom):
        ax.axvspan(n, 2 * n, color="red", alpha=0.08)
        ax.grid(alpha=0.3)
    top.set_ylabel(f"accuracy, last {st.window} (%)")
    bottom.set_ylabel(f"held-out accuracy (%)\n({st.held_out} samples)")
    bottom.set_xlabel("stream samples")
    top.set_title(
        f"{shift.dataset}: stream clean -> {st.shift} (level {st.level}) -> clean",
        fontsize=9,
    )
    top.legend(fontsize=7)
    bottom.legend(fontsize=7)
    fig.tight_layout()
    return fig
