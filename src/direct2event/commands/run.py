"""``python -m direct2event run [kedro run options]``: the pipelines, as ``kedro run`` runs them."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[1].name


def main(argv: list[str]) -> int:
    """Kedro's ``run`` command of this project with ``argv`` as its options."""
    # imported here: importing kedro.framework.project configures logging (a console line),
    # which the other commands and ``help`` should not print
    from kedro.framework.cli.utils import find_run_command
    from kedro.framework.project import configure_project

    configure_project(PACKAGE)
    run = find_run_command(PACKAGE)
    run(argv, standalone_mode=not hasattr(sys, "ps1"))  # standalone: Kedro exits with the code
    return 0
