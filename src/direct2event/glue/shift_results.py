"""The results page's shift benchmark tables, written from a seed study's ``shift``."""

from __future__ import annotations

from collections.abc import Callable

from direct2event.glue.reports import SeedStudy, ShiftStudy, Stat


def shift_rows(study: SeedStudy) -> str:
    """The shift benchmark over a study's seeds: each method's targets, and for event data the
    clean front alone and with each method."""
    shift = study.shift
    if shift is None:
        return ""
    lines = [
        f"Shift benchmark ({shift.samples} test samples per shift and severity, middle "
        "severity, the shifts where E loses 2 points or more, geometric ones apart): share of "
        "E's accuracy loss won back, mean ± std (worst seed); E's events under the qualifying "
        "shift that moves them most (input events included); samples until the stream test's "
        "accuracy settles, per seed (the later of the change to the shift and back).",
        "",
        "| method | recovered share | clean cost (pp) | events under shift | recovery (samples) |",
        "|---|---|---|---|---|",
    ]
    for name, method in shift.methods.items():
        rec, cost, ev = method.recovered_fraction, method.clean_cost_pp, method.shift_events_change
        recovery = ", ".join(
            "never" if v is None else f"{v:.0f}" for v in method.recovery_samples.values
        )
        recovered = "-" if rec.mean is None else f"{rec.mean:.2f} ± {rec.std:.2f} ({rec.worst:.2f})"
        events = (
            "-" if ev.mean is None else f"{100 * ev.mean:+.0f} % (worst {100 * ev.worst:+.0f} %)"
        )
        lines.append(
            f"| `{name}` | {recovered} | {cost.mean:+.2f} ± {cost.std:.2f} | {events} "
            f"| {recovery} |"
        )
    if shift.front and shift.front["alone"].mean is not None:
        lines += ["", *_front_rows(shift)]
    if shift.stage_share is not None:
        share = shift.stage_share
        lines += [
            "",
            f"The stage took {shift.stage_seconds:.0f} s a seed on average: "
            f"{100 * share['mean']:.1f} % of the run (worst seed {100 * share['worst']:.1f} %).",
        ]
    return "\n".join(lines)


def _or_dash(value: Stat | None, text: Callable[[Stat], str]) -> str:
    return "-" if value is None or value.mean is None else text(value)


def _front_rows(shift: ShiftStudy) -> list[str]:
    """Event data: the clean front before E, alone and with each method."""
    assert shift.front is not None
    events, costs = shift.front_events_change or {}, shift.front_clean_cost_pp or {}
    lines = [
        "With the clean front (hot pixels, then background activity removed before E, its "
        "window narrowed to hold the events it passes to a clean recording's; events against "
        "clean E without the front):",
        "",
        "| front and | recovered share | clean cost (pp) | events under shift |",
        "|---|---|---|---|",
    ]
    for m, rec in shift.front.items():
        name = "nothing" if m == "alone" else f"`{m}`"
        ev, cost = events.get(m), costs.get(m)
        lines.append(
            f"| {name} | {rec.mean:.2f} ± {rec.std:.2f} ({rec.worst:.2f}) "
            f"| {_or_dash(cost, lambda c: f'{c.mean:+.2f} ± {c.std:.2f}')} "
            f"| {_or_dash(ev, lambda e: f'{100 * e.mean:+.0f} % (worst {100 * e.worst:+.0f} %)')} |"
        )
    return lines
