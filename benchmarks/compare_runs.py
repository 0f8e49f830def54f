"""Whether two runs of a dataset pipeline gave the same results: a refactor must not change what
a run computes.

    python benchmarks/compare_runs.py --before <project> --after <project> --key digits

Reads ``summary.json``, ``shift.json`` and ``tuning_report.json`` of ``<key>`` under each
project's ``data/08_reporting`` and the trials of the study the report names in each project's
Optuna storage (``data/07_model_output/optuna.db``), and prints every difference. Keys renamed
or added on purpose are listed in :data:`RENAMED` / :data:`ADDED` and compared under their new
name; wall-clock times are left out (they differ between any two runs). Exits 1 when anything
else differs.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
from pathlib import Path
from typing import Any

REPORTS = ("summary.json", "shift.json", "tuning_report.json")
TIMES = {"seconds", "seconds_by_part", "trial_seconds"}  # wall clock: never equal
RENAMED: dict[str, dict[str, str]] = {}  # report -> {old key path: new key path}
# keys a report gained on purpose: the schema version (typed reports), and keys now always
# written that were left out when empty (a shift row's ``recalibrated``: null where none ran)
ADDED: dict[str, set[str]] = {
    "tuning_report.json": {"schema_version"},
    "summary.json": {"schema_version"},
    "shift.json": {"schema_version", "recalibrated"},
}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.0": leaf}`` for every leaf of nested dicts and lists."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out |= flatten(v, f"{prefix}.{i}" if prefix else str(i))
        return out
    return {prefix: value}


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def compare_report(name: str, before: dict, after: dict) -> list[str]:
    """Differences between two reports, after mapping renamed keys and dropping times."""
    old, new = flatten(before), flatten(after)
    for path_old, path_new in RENAMED.get(name, {}).items():
        for key in [k for k in old if k == path_old or k.startswith(path_old + ".")]:
            old[path_new + key[len(path_old) :]] = old.pop(key)
    drop = {k for k in {*old, *new} if set(k.split(".")) & TIMES}
    added = ADDED.get(name, set())
    drop |= {
        k
        for k in set(new) - set(old)
        if k == "schema_version" or (k.split(".")[-1] in added and new[k] is None)
    }
    diffs = []
    for key in sorted({*old, *new} - drop):
        if key not in new:
            diffs.append(f"{name}: {key} gone (was {old[key]!r})")
        elif key not in old:
            diffs.append(f"{name}: {key} new ({new[key]!r})")
        elif not same(old[key], new[key]):
            diffs.append(f"{name}: {key} {old[key]!r} -> {new[key]!r}")
    return diffs


def study_trials(project: Path, study: str) -> list[tuple]:
    """Each trial of ``study``: number, state, parameters and values (no times)."""
    db = project / "data/07_model_output/optuna.db"
    with sqlite3.connect(db) as con:
        (study_id,) = con.execute(
            "select study_id from studies where study_name = ?", (study,)
        ).fetchone()
        trials = con.execute(
            "select trial_id, number, state from trials where study_id = ? order by number",
            (study_id,),
        ).fetchall()
        out = []
        for trial_id, number, state in trials:
            params = con.execute(
                "select param_name, param_value from trial_params where trial_id = ?", (trial_id,)
            ).fetchall()
            values = con.execute(
                "select objective, value from trial_values where trial_id = ? order by objective",
                (trial_id,),
            ).fetchall()
            out.append((number, state, sorted(params), values))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    diffs: list[str] = []
    reports = {}
    for name in REPORTS:
        pair = [
            json.loads((p / "data/08_reporting" / args.key / name).read_text())
            for p in (args.before, args.after)
        ]
        reports[name] = pair
        diffs += compare_report(name, *pair)
    names = [r.get("study_name") for r in reports["tuning_report.json"]]
    if all(names):
        trials = [study_trials(p, n) for p, n in zip((args.before, args.after), names, strict=True)]
        if trials[0] != trials[1]:
            diffs.append(f"study trials differ:\n  before {trials[0]}\n  after  {trials[1]}")
        else:
            print(f"study {names[1]}: {len(trials[1])} trials, identical")
    renamed = {k: v for k, v in RENAMED.items() if v}
    print(f"renamed keys mapped: {renamed or 'none'}; added keys: {ADDED}")
    for line in diffs:
        print(line)
    print(f"{args.key}: {'identical' if not diffs else f'{len(diffs)} differences'}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
