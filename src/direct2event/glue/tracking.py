"""Live MLflow logging of per-epoch figures (tracking side; the library only calls back).

Training of D, the sweep's trials and the final fine-tuning hand each epoch's record to an
:func:`epoch_logger` as the epoch ends, so the MLflow UI draws the curves while a run is going
instead of when its node finishes. Each record goes to the run that is active when the logger is
made (the pipeline's run, or a trial's nested run), under ``<prefix>.<name>`` at step = epoch.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.entities import Metric

from direct2event.glue.reports import Summary
from direct2event.snn.training import Callback, FitLoop


def epoch_metrics(record: dict[str, float], prefix: str, offset: int = 0) -> list[Metric]:
    """One epoch's finite figures as MLflow metrics ``<prefix>.<name>`` at step epoch + offset."""
    step, now = int(record["epoch"]) + offset, int(time.time() * 1000)
    return [
        Metric(f"{prefix}.{key}", float(value), now, step)
        for key, value in record.items()
        if key != "epoch" and math.isfinite(value)
    ]


class EpochLogger(Callback):
    """Logs each epoch's record to one MLflow run as the epoch ends (a training callback; also
    callable with a record)."""

    def __init__(self, run_id: str, prefix: str, offset: int = 0) -> None:
        self.client, self.run_id = mlflow.MlflowClient(), run_id
        self.prefix, self.offset = prefix, offset

    def __call__(self, record: dict[str, float]) -> None:
        self.client.log_batch(self.run_id, metrics=epoch_metrics(record, self.prefix, self.offset))

    def on_epoch_end(self, loop: FitLoop, record: dict[str, float]) -> None:
        self(record)


def epoch_logger(prefix: str, offset: int = 0) -> EpochLogger | None:
    """A callback logging each epoch to the active run as it ends (None when no run is active).
    ``offset`` numbers the epochs on (fine-tuning after a warm-up)."""
    run = mlflow.active_run()
    return None if run is None else EpochLogger(run.info.run_id, prefix, offset)


def epoch_callbacks(prefix: str, offset: int = 0) -> list[Callback]:
    """The training callbacks that log epochs live: :func:`epoch_logger`, when a run is active."""
    found = epoch_logger(prefix, offset)
    return [] if found is None else [found]


def log_epochs(history: list[dict[str, float]], prefix: str) -> None:
    """A finished epoch log, all at once (a network trained elsewhere in this run, now chosen)."""
    log = epoch_logger(prefix)
    if log is not None:
        for record in history:
            log(record)


SQLITE = "sqlite:///"
DEFAULT_URI = "sqlite:///mlflow.db"  # conf/base/mlflow.yml's default, for the project root


def use_configured_store() -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI`` (default: the project's ``mlflow.db``), as the
    pipelines do, for the commands that read the store outside a Kedro session."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)
    mlflow.set_tracking_uri(uri)
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working folder), else None."""
    if not uri.startswith(SQLITE):
        return None
    return Path(uri.removeprefix(SQLITE).split("?", 1)[0])


def prepare_store(uri: str) -> None:
    """Create or upgrade the MLflow schema of a SQLite store once, under a file lock beside it.

    MLflow creates the tables (and runs its migrations) the first time a process opens a store,
    without a guard: two processes opening a new ``mlflow.db`` at once fail with
    ``table _alembic_tmp_experiments already exists`` or ``duplicate column name``. Every
    process of this project (``kedro run``, the seeds study, sweep workers, tests) calls this
    first; the first one creates the schema, the others wait on the lock and then find it made.
    A server or another database URI is left alone (its server or its own DDL lock guards it).
    """
    path = sqlite_path(uri)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=600):
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # tracking tables, default experiment
        client.search_registered_models(max_results=1)  # the registry's tables


NJ_PER_UJ = 1000.0


def in_nanojoules(metrics: dict[str, float]) -> dict[str, float]:
    """MLflow shows metrics with few digits: energies of about 0.002 µJ showed as 0.00. Metrics
    ``*energy_uJ`` are logged as ``*energy_nJ`` (values x 1000); reports keep µJ."""
    shown = {k: v for k, v in metrics.items() if not k.endswith("energy_uJ")}
    for key, value in metrics.items():
        if key.endswith("energy_uJ"):
            shown[key.removesuffix("uJ") + "nJ"] = value * NJ_PER_UJ
    return shown


def headline(summary: Summary) -> str:
    """A run's result in a few lines (its description in the MLflow UI): dataset, D's and E's
    test accuracy, retention, energy reduction under every energy model, lambda."""
    d, e = summary.direct, summary.event
    reductions = ", ".join(
        f"{v:.2f}x ({k})"
        for k, v in summary.energy_reduction_by_model.items()
        if v is not None and math.isfinite(v)
    )
    ceiling = summary.energy_reduction_ceiling
    bound = (
        f" (at most {ceiling:.2f}x: E's input alone)"
        if ceiling is not None and math.isfinite(ceiling)
        else ""
    )
    return (
        f"**{summary.dataset}** (seed {summary.seed}): D {d.accuracy:.2%} -> "
        f"E {e.accuracy:.2%} test accuracy, retention {summary.accuracy_retention:.4f}; "
        f"energy reduction {reductions}{bound}; λ = {summary.rate_lambda:g}; E: "
        f"{summary.input_encoding} input, T = {summary.event_timesteps}, "
        f"{e.events_per_sample:.0f} events per sample ({1000 * e.energy_uJ:.3f} nJ, "
        f"{summary.energy_model})."
    )
