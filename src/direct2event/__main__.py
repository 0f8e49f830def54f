"""direct2event file for ensuring the package is executable as `direct2event` and `python -m direct2event`."""

from __future__ import annotations

import sys
from pathlib import Path

from kedro.framework.cli.utils import find_run_command
from kedro.framework.project import configure_project

USAGE = "python -m direct2event export-nir models:/<name>/<version> <out.nir>"


def export_nir(argv: list[str]) -> None:
    """``export-nir <model URI> <out.nir>``: a registered network's NIR graph, written to a file."""
    import os

    import mlflow

    from direct2event import registry
    from direct2event.snn.nir_io import NIRError

    if len(argv) != 2:
        raise SystemExit(f"usage: {USAGE}")
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    try:
        path = registry.export_nir(argv[0], argv[1])
    except (registry.RegistryError, NIRError) as err:
        raise SystemExit(f"export-nir: {err}") from None
    print(f"wrote {path} (NIR graph of {argv[0]})")


HELP = """usage: python -m direct2event <command> [options]

commands:
  run [kedro run options]   run the pipelines (as `kedro run`), e.g. run --pipelines digits
  export-nir <model URI> <out.nir>
                            write a registered network's NIR graph
  help                      this text

other commands of the project: python -m direct2event.seeds (make seeds),
python -m direct2event.runs (make reap-runs), python -m direct2event.services (make services),
python -m direct2event.registry (list registered networks)"""


def main(*args: str, **kwargs: object) -> object:
    """Run the Kedro CLI for this project (``export-nir`` exports a registered network). With
    no argument it prints the commands instead of starting the long default run."""
    if not args and (len(sys.argv) == 1 or sys.argv[1] in ("help", "-h", "--help")):
        print(HELP)
        return None
    if len(sys.argv) > 1 and sys.argv[1] == "export-nir" and not args:
        return export_nir(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "run" and not args:
        del sys.argv[1]
    package_name = Path(__file__).parent.name
    configure_project(package_name)
    interactive = hasattr(sys, "ps1")
    kwargs["standalone_mode"] = not interactive
    run = find_run_command(package_name)
    return run(*args, **kwargs)


if __name__ == "__main__":
    main()
