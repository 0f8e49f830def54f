"""``python -m direct2event mlflow-ui``: the MLflow UI on the project's store, opening on the
runs in their Results view (``make mlflow-ui``).

    python -m direct2event mlflow-ui [--port 5000]

MLflow 3's UI opens on its GenAI pages unless the URL asks for the runs; this command prints
the URL that opens the runs table with the headline columns, then serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import subprocess

import mlflow

from direct2event.glue import tracking
from direct2event.glue.runs import EXPERIMENT


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m direct2event mlflow-ui", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    uri = tracking.use_configured_store()
    base = f"http://127.0.0.1:{args.port}"
    experiment = mlflow.MlflowClient().get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        print(f"No {EXPERIMENT!r} experiment in {uri} yet: run `make run` first. Serving {base}")
    else:
        print(f"open {tracking.ui_url(base, experiment.experiment_id)}", flush=True)
    try:
        return subprocess.call(tracking.ui_command(uri, args.port))  # noqa: S603
    except KeyboardInterrupt:
        return 0
