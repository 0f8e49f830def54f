"""``python -m direct2event results``: the README's results table, docs/results.md and the
index of benchmarks/results, written from the result files (``make results``).

    python -m direct2event results                   # rewrite the pages from benchmarks/results
    python -m direct2event results --take mnist      # first take data/08_reporting/mnist/seeds.json
    python -m direct2event results --candidate mnist epochs5 "mnist.transfer.finetune.epochs=5"
                                                     # first add a variant's study (make seeds NAME=)
    python -m direct2event results --check           # exit 1 when a page differs from the files
"""

from __future__ import annotations

import argparse
import sys

from direct2event.glue.machine import ROOT
from direct2event.glue.results import stale_pages, take_candidate, take_seed_study, write_pages


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m direct2event results",
        description="Write the README's results, docs/results.md and benchmarks/results/README.md "
        "from the result files.",
    )
    parser.add_argument(
        "--take", nargs="+", default=[], metavar="KEY",
        help="first copy these datasets' seed studies (make seeds) into benchmarks/results",
    )  # fmt: skip
    parser.add_argument(
        "--candidate", nargs=3, metavar=("KEY", "NAME", "PARAMS"),
        help="first add the study of variant NAME (make seeds KEY=.. PARAMS=.. NAME=..) to "
        "KEY's candidate defaults",
    )  # fmt: skip
    parser.add_argument("--check", action="store_true", help="only say which pages are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages(ROOT)
        for path in stale:
            print(f"{path.relative_to(ROOT)} differs from benchmarks/results: run `make results`")
        return 1 if stale else 0
    try:
        for key in args.take:
            print(f"took {take_seed_study(key, ROOT).relative_to(ROOT)}")
        if args.candidate:
            print(f"took {take_candidate(*args.candidate, root=ROOT).relative_to(ROOT)}")
    except (FileNotFoundError, ValueError) as err:
        print(err, file=sys.stderr)
        return 2
    for path in write_pages(ROOT):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0
