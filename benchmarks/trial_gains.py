"""What short sweep trials gain from trial length to the end of the fine-tuning, from the
``tuning_report.json`` of runs whose trials ran part of it (``tuning.trial_epochs``).

A short trial measures E's validation accuracy partway through its fine-tuning; a trial taken on
to the end is measured again there. Each report's completions hold both: the gain is
``(end accuracy - trial-length accuracy) / D's validation accuracy``. Printed per completion,
with the least-squares line in ln(lambda) over all of them and its residual spread (whether the
gain could be predicted from lambda: on simulated N-MNIST's quarter-pass trials it could not,
docs/archive/diary.md, 2026-12-02 evening).

    .venv/bin/python benchmarks/trial_gains.py \\
        data/08_reporting/nmnist_sim/<name>/seed_*/tuning_report.json [--out <file>.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from direct2event.glue.reports import TuningReport


def gains(report: TuningReport) -> list[dict[str, float]]:
    """Each completion's lambda, trial-length and end retention, and their difference."""
    short = {t.number: t for t in report.trials}
    direct = report.direct_val_accuracy
    if not direct:
        return []
    rows = []
    for done in report.completed:
        trial = short.get(done.number)
        if trial is None:
            continue
        rows.append(
            {
                "rate_lambda": done.rate_lambda,
                "trial_retention": trial.val_accuracy / direct,
                "end_retention": done.val_accuracy / direct,
                "gain": (done.val_accuracy - trial.val_accuracy) / direct,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="tuning_report.json files")
    parser.add_argument("--out", type=Path, help="write the points and the line as JSON")
    args = parser.parse_args()
    rows = []
    for path in args.reports:
        report = TuningReport.model_validate_json(path.read_text())
        if report.trial_epochs is None:
            parser.error(f"{path}: every trial ran the whole fine-tuning; no gain to measure")
        rows += [{"report": str(path), **r} for r in gains(report)]
    if not rows:
        parser.error("no completed short trial in these reports")
    for r in rows:
        print(
            f"λ = {r['rate_lambda']:.4g}: retention {r['trial_retention']:.4f} at trial length, "
            f"{r['end_retention']:.4f} at the end, gain {r['gain']:+.5f}  ({r['report']})"
        )
    result: dict[str, object] = {"points": rows}
    x = np.log([r["rate_lambda"] for r in rows])
    y = np.array([r["gain"] for r in rows])
    if len(rows) > 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        residual = y - (intercept + slope * x)
        sd = math.sqrt(float(residual @ residual) / (len(rows) - 2))
        print(f"line: gain = {intercept:+.5f} {slope:+.5f} ln λ, residual sd {sd:.5f}")
        result["line"] = {"intercept": intercept, "per_log_lambda": slope, "residual_sd": sd}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
