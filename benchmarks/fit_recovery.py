"""Fit ``tuning.trial_recovery`` from the tuning reports of a few seeds, or check a given one.

A short trial (``tuning.trial_epochs`` below the fine-tuning's epochs) measures E's validation
accuracy inside the rate penalty's dip; the trial taken on to the end then gains retention by
the end. Each report's completions hold both ends for their lambdas: the gain is
``(end accuracy - trial-length accuracy) / D's validation accuracy``. This fits the gain as a
line in ln(lambda) (least squares; the intercept alone from one lambda) and, with
``--intercept/--per-log-lambda``, shows how a given line predicts these reports' gains (an
out-of-sample check when the reports come from other seeds than the fit's).

    .venv/bin/python benchmarks/fit_recovery.py \\
        data/08_reporting/nmnist_sim/<name>/seed_*/tuning_report.json \\
        [--intercept 0.00221 --per-log-lambda 0.00115] [--out <file>.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from direct2event.glue.tuning import Recovery, TuningReport


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


def fit(rows: list[dict[str, float]]) -> Recovery:
    """Least squares line of the gain in ln(lambda); its mean alone from a single lambda."""
    x = np.log([r["rate_lambda"] for r in rows])
    y = np.array([r["gain"] for r in rows])
    if len(set(x.round(12))) < 2:
        return Recovery(intercept=float(y.mean()))
    slope, intercept = np.polyfit(x, y, 1)
    return Recovery(intercept=float(intercept), per_log_lambda=float(slope))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="tuning_report.json files")
    parser.add_argument("--intercept", type=float, help="a line to check against the reports")
    parser.add_argument("--per-log-lambda", type=float, default=0.0)
    parser.add_argument("--out", type=Path, help="write the points and the fit as JSON")
    args = parser.parse_args()
    rows = []
    for path in args.reports:
        report = TuningReport.model_validate_json(path.read_text())
        if report.trial_epochs is None:
            parser.error(f"{path}: every trial ran the whole fine-tuning; nothing to fit")
        rows += [{"report": str(path), **r} for r in gains(report)]
    if not rows:
        parser.error("no completed short trial in these reports")
    line = fit(rows)
    result: dict[str, object] = {
        "points": rows,
        "fit": {"intercept": line.intercept, "per_log_lambda": line.per_log_lambda},
    }
    for r in rows:
        print(
            f"λ = {r['rate_lambda']:.4g}: retention {r['trial_retention']:.4f} at trial length, "
            f"{r['end_retention']:.4f} at the end, gain {r['gain']:+.5f}  ({r['report']})"
        )
    print(f"fit: gain = {line.intercept:+.5f} {line.per_log_lambda:+.5f} ln λ")
    if args.intercept is not None:
        given = Recovery(intercept=args.intercept, per_log_lambda=args.per_log_lambda)
        errors = [r["gain"] - given(r["rate_lambda"]) for r in rows]
        for r, e in zip(rows, errors):
            print(
                f"λ = {r['rate_lambda']:.4g}: predicted {given(r['rate_lambda']):+.5f}, off {e:+.5f}"
            )
        rms = math.sqrt(sum(e * e for e in errors) / len(errors))
        print(
            f"given line {given.intercept:+.5f} {given.per_log_lambda:+.5f} ln λ: rms error {rms:.5f}"
        )
        result["check"] = {
            "intercept": given.intercept,
            "per_log_lambda": given.per_log_lambda,
            "errors": errors,
            "rms_error": rms,
        }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
