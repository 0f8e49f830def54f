"""Summaries of a shift benchmark: corruption errors, recovered accuracy, event budgets.

Pure arithmetic on the benchmark's rows (one per shift and severity), so that the figures in
``shift.json`` are computed in one tested place.
"""

from __future__ import annotations

import statistics
from typing import Any


def middle(levels: list[Any]) -> Any:
    """The middle severity of a shift (the second of three)."""
    return levels[len(levels) // 2]


def corruption_error(rows: list[dict[str, Any]], key: str = "e_accuracy") -> dict[str, float]:
    """Mean error over severities per shift (``1 - accuracy``), the unnormalised corruption
    error of ImageNet-C, for the accuracy under ``key``."""
    by_shift: dict[str, list[float]] = {}
    for row in rows:
        by_shift.setdefault(row["shift"], []).append(1.0 - _get(row, key))
    return {name: statistics.fmean(errs) for name, errs in by_shift.items()}


def _get(row: dict[str, Any], key: str) -> float:
    value: Any = row
    for part in key.split("/"):
        value = value[part]
    return float(value)


def qualifying_shifts(
    rows: list[dict[str, Any]], clean_accuracy: float, min_loss: float
) -> list[dict[str, Any]]:
    """The middle-severity row of every shift where E loses at least ``min_loss`` accuracy."""
    by_shift: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_shift.setdefault(row["shift"], []).append(row)
    picked = []
    for shift_rows in by_shift.values():
        row = middle(sorted(shift_rows, key=lambda r: r["level"]))
        if clean_accuracy - row["e_accuracy"] >= min_loss:
            picked.append(row)
    return picked


def recovered_fraction(clean: float, shifted: float, adapted: float) -> float:
    """Share of the accuracy lost to a shift that adaptation wins back (1: all, 0: none,
    negative: adaptation made it worse)."""
    lost = clean - shifted
    if lost <= 0:
        raise ValueError(f"no accuracy lost (clean {clean}, shifted {shifted}).")
    return (adapted - shifted) / lost


# shifts that move or hide the pattern: per-channel statistics cannot undo them, so their
# recovery is reported apart from the others' (``recovered_fraction_geometric``)
GEOMETRIC_SHIFTS = frozenset({"rotation", "occlusion", "occluded_area"})


def method_summary(
    method: str,
    rows: list[dict[str, Any]],
    clean: dict[str, Any],
    min_loss: float,
) -> dict[str, Any]:
    """What one adaptation method achieves, against the targets of the shift benchmark:
    ``recovered_fraction`` (mean over the qualifying shifts), ``clean_cost_pp`` (accuracy it
    costs on clean data, in points), ``clean_events_change`` and ``shift_events_change``
    (events per sample relative to clean unadapted E; the latter the qualifying shift with the
    largest change, signed). ``recovered_fraction`` leaves out the geometric shifts
    (:data:`GEOMETRIC_SHIFTS`), reported apart in ``recovered_fraction_geometric``; the event
    change counts every qualifying shift."""
    e_clean = clean["e_accuracy"]
    picked = qualifying_shifts(rows, e_clean, min_loss)
    adapted_clean = clean["adapted"][method]
    out: dict[str, Any] = {
        "qualifying_shifts": [r["shift"] for r in picked],
        "geometric_shifts": [r["shift"] for r in picked if r["shift"] in GEOMETRIC_SHIFTS],
        "recovered_fraction": None,
        "recovered_fraction_geometric": None,
        "recovered_fraction_by_shift": {},
        "clean_cost_pp": 100.0 * (e_clean - adapted_clean["accuracy"]),
        "clean_events_change": adapted_clean["events_per_sample"] / clean["e_events_per_sample"]
        - 1.0,
        "shift_events_change": None,
        "shift_events_change_by_shift": {},
    }
    if picked:
        for r in picked:
            out["recovered_fraction_by_shift"][r["shift"]] = recovered_fraction(
                e_clean, r["e_accuracy"], r["adapted"][method]["accuracy"]
            )
            out["shift_events_change_by_shift"][r["shift"]] = (
                r["adapted"][method]["events_per_sample"] / clean["e_events_per_sample"] - 1.0
            )
        by_shift = out["recovered_fraction_by_shift"]
        statistical = [v for k, v in by_shift.items() if k not in GEOMETRIC_SHIFTS]
        geometric = [v for k, v in by_shift.items() if k in GEOMETRIC_SHIFTS]
        out["recovered_fraction"] = statistics.fmean(statistical) if statistical else None
        out["recovered_fraction_geometric"] = statistics.fmean(geometric) if geometric else None
        # the worst shift, not a mean: +30 % on one shift and -30 % on another keep no budget
        out["shift_events_change"] = max(out["shift_events_change_by_shift"].values(), key=abs)
    return out


def front_summary(rows: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """The clean front over its qualifying rows (each with ``recovered_fraction``,
    ``recovered_fraction_by_method``, ``events_change`` and per method ``adapted[m]
    ["events_change"]``): the mean recovered share alone and with each method (geometric shifts
    left out, as in :func:`method_summary`), and the events change furthest from clean E's under
    any row, alone and with each method (geometric ones included: the budget holds for all)."""
    counted = [f for f in rows if f["shift"] not in GEOMETRIC_SHIFTS]
    mean = statistics.fmean
    return {
        "recovered_fraction": mean(f["recovered_fraction"] for f in counted) if counted else None,
        "recovered_fraction_by_method": {
            m: mean(f["recovered_fraction_by_method"][m] for f in counted)
            for m in methods
            if counted
        },
        "events_change": max((f["events_change"] for f in rows), key=abs, default=None),
        "events_change_by_method": {
            m: max((f["adapted"][m]["events_change"] for f in rows), key=abs, default=None)
            for m in methods
        },
    }
