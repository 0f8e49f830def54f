"""``python -m direct2event reap-runs [--dry-run]``: MLflow runs left RUNNING by gone processes
marked FAILED, each with its reason (``make reap-runs``)."""

from __future__ import annotations

import argparse

from direct2event.glue import runs, tracking


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m direct2event reap-runs",
        description="Mark the MLflow runs left RUNNING by gone processes FAILED.",
    )
    parser.add_argument("--dry-run", action="store_true", help="only list what would be marked")
    parser.add_argument("--experiment", default=runs.EXPERIMENT)
    args = parser.parse_args(argv)
    tracking.use_configured_store()
    stale = runs.reap(experiment=args.experiment, dry_run=args.dry_run)
    print(f"{len(stale)} run(s) {'to mark' if args.dry_run else 'marked'} FAILED")
    return 0
