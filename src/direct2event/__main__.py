"""``python -m direct2event <command> [options]``: the project's one command-line entry point.

Each command is a module of :mod:`direct2event.commands` with ``main(argv) -> int``. ``run``
(Kedro's ``run``) is also what options alone start (``python -m direct2event --pipelines
digits``), as Kedro's own ``__main__`` does; no argument prints the commands instead of starting
the long default run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from direct2event.commands import (
    export_nir,
    mlflow_ui,
    params,
    reap_runs,
    registry,
    results,
    run,
    screenshots,
    seeds,
    services,
)

COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "run": (run.main, "run the pipelines (as `kedro run`), e.g. run --pipelines digits"),
    "seeds": (seeds.main, "the pipeline once per seed, then mean, std and worst (make seeds)"),
    "params": (params.main, "print a dataset's effective parameters: params <key>"),
    "export-nir": (export_nir.main, "write a registered network's NIR graph: <uri> <out.nir>"),
    "mlflow-ui": (mlflow_ui.main, "the MLflow UI, opening on the runs' Results view"),
    "registry": (registry.main, "list every registered network version"),
    "reap-runs": (reap_runs.main, "mark runs left RUNNING by gone processes FAILED"),
    "services": (services.main, "PostgreSQL + MLflow server for sweep workers: start|stop|..."),
    "results": (results.main, "README's results table and docs/results.md from result files"),
    "screenshots": (screenshots.main, "PNGs of the MLflow UI (make screenshots)"),
}

HELP = (
    "usage: python -m direct2event <command> [options]\n\ncommands:\n"
    + "\n".join(f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items())
    + "\n  help         this text\n\n`python -m direct2event <command> --help` describes a command."
)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default: the command line) to its command; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("help", "-h", "--help"):
        print(HELP)
        return 0
    if args[0].startswith("-"):  # options alone: Kedro's run, as before
        args = ["run", *args]
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{HELP}", file=sys.stderr)
        return 2
    return COMMANDS[name][0](rest)


if __name__ == "__main__":
    sys.exit(main())
