"""Reading a report of any schema version: each version's upgrade to the next, applied in turn
until the file is in the current form of its model (:mod:`direct2event.glue.reports`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from direct2event.glue.reports import (
    Report,
    SeedStudy,
    ShiftReport,
    Summary,
    TuningReport,
)

R = TypeVar("R", bound=Report)
Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


def _summary_v0(data: dict[str, Any]) -> dict[str, Any]:
    """Summaries from before the ceiling was reported: none is known for them."""
    return {
        "energy_reduction_ceiling": None,
        "energy_reduction_ceiling_by_model": {},
        **data,
    }


def _seeds_v0(data: dict[str, Any]) -> dict[str, Any]:
    runs = [{"energy_reduction_ceiling": None, **r} for r in data.get("runs", [])]
    return {**data, "runs": runs}


def to_nanojoules(value: Any) -> Any:
    """Version 1 kept energies in microjoules (``*energy_uJ*`` keys); version 2 keeps them in
    nanojoules under ``*energy_nJ*``: keys renamed and values times 1000, at every depth."""
    if isinstance(value, list):
        return [to_nanojoules(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if isinstance(key, str) and "energy_uJ" in key:
            scaled = (
                {k: None if v is None else 1000.0 * v for k, v in item.items()}
                if isinstance(item, dict)
                else (None if item is None else 1000.0 * item)
            )
            out[key.replace("energy_uJ", "energy_nJ")] = scaled
        else:
            out[key] = to_nanojoules(item)
    return out


def _tuning_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 counted ``n_trials`` and said ``floor_met``; version 2 names what they count
    and mean, and what chose lambda."""
    out = {k: v for k, v in to_nanojoules(data).items() if k not in ("n_trials", "floor_met")}
    met = data.get("floor_met")
    chosen = "configured" if met is None else "unknown"
    if met is not None:
        target = data.get("energy_reduction_target")
        chosen = (
            "energy_reduction_target" if target else ("retention_floor" if met else "most_accurate")
        )
    return {
        **out,
        "n_complete": data.get("n_trials", 0),
        "validation_floor_met": met,
        "chosen_by": chosen,
    }


def _summary_v1(data: dict[str, Any]) -> dict[str, Any]:
    out = to_nanojoules(data)
    old = out["tuning"]
    met = old.get("floor_met")
    out["tuning"] = {
        "chosen_by": "configured" if met is None else "unknown",
        "n_complete": old.get("n_trials", 0),
        "n_stopped": old.get("n_stopped", 0),  # summaries before early stops had none
        "n_taken_on": old.get("n_completed", 0),
        "validation_floor_met": met,
        "pareto": old.get("pareto", []),
    }
    return out


# version -> the upgrade from it to the next; files without schema_version are version 0
UPGRADES: dict[type[Report], dict[int, Upgrade]] = {
    Summary: {0: _summary_v0, 1: _summary_v1},
    TuningReport: {0: lambda d: d, 1: _tuning_v1},
    ShiftReport: {0: lambda d: d, 1: to_nanojoules},
    SeedStudy: {0: _seeds_v0, 1: to_nanojoules},
}


def upgrade(model: type[R], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` of any schema version raised to ``model``'s current one."""
    current = model.model_fields["schema_version"].default
    version = int(data.get("schema_version", 0))
    if version > current:
        raise ValueError(
            f"{model.__name__} schema version {version} is newer than this code's {current}: "
            "update direct2event to read it."
        )
    steps = UPGRADES.get(model, {})
    while version < current:
        data = {**steps[version](data), "schema_version": version + 1}
        version += 1
    return data


def read_report(model: type[R], source: Path | str | dict[str, Any]) -> R:
    """A report file (or its parsed JSON) as ``model``, whatever schema version wrote it."""
    data = source if isinstance(source, dict) else json.loads(Path(source).read_text())
    return model.model_validate(upgrade(model, data))


REPORT_MODELS: dict[str, type[Report]] = {
    m.__name__: m for m in (TuningReport, Summary, ShiftReport, SeedStudy)
}
