"""What the MLflow UI shows of a run: live per-epoch figures, the headline metrics, the
experiment's description and its saved runs view, and the tracking store's preparation.

Training of D, the sweep's trials and the final fine-tuning hand each epoch's record to an
:func:`epoch_logger` as the epoch ends, so the MLflow UI draws the curves while a run is going
instead of when its node finishes. Each record goes to the run that is active when the logger is
made (the pipeline's run, or a trial's nested run), under ``<prefix>.<name>`` at step = epoch.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

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
        f"{e.events_per_sample:.0f} events per sample ({e.energy_nJ:.3f} nJ, "
        f"{summary.energy_model})."
    )


HEADLINE = "headline."  # the run's result: the prefix of the metrics the results view shows
SIGNIFICANT = 4  # headline metrics are logged rounded to this many significant figures


def rounded(value: float, digits: int = SIGNIFICANT) -> float:
    """``value`` to ``digits`` significant figures (what the runs table shows in full)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def headline_metrics(summary: Summary) -> dict[str, float]:
    """The run's result as metrics under ``headline.``, rounded: D's and E's test accuracy,
    the retention, the energy reduction under every energy model and its ceiling (E's input
    alone), E's energy and events, and the lambda E was fine-tuned with."""
    d, e = summary.direct, summary.event
    values: dict[str, float | None] = {
        "direct_accuracy": d.accuracy,
        "event_accuracy": e.accuracy,
        "accuracy_retention": summary.accuracy_retention,
        "direct_energy_nJ": d.energy_nJ,
        "event_energy_nJ": e.energy_nJ,
        "event_events_per_sample": e.events_per_sample,
        "energy_reduction_ceiling": summary.energy_reduction_ceiling,
        "rate_lambda": summary.rate_lambda,
    }
    for model, reduction in summary.energy_reduction_by_model.items():
        values[f"energy_reduction.{model}"] = reduction
    return as_headline(values)


def as_headline(values: dict[str, float | None]) -> dict[str, float]:
    """``values`` under ``headline.``, rounded, the missing and non-finite left out."""
    return {
        HEADLINE + k: rounded(float(v))
        for k, v in values.items()
        if v is not None and math.isfinite(v)
    }


def energy_metrics(summary: Summary) -> dict[str, float]:
    """NeuroBench's metrics of D and E (``neurobench.<network>.<metric>``) and the bit-matched
    ANN (``ann.energy_nJ.<model>``, E's reduction against it ``ann.event_reduction.<model>``,
    the spike rate where E breaks even ``ann.break_even_rate.<model>``), rounded."""
    values: dict[str, float | None] = {}
    for network in ("direct", "event"):
        for k, v in (getattr(summary, network).neurobench or {}).items():
            values[f"neurobench.{network}.{k}"] = v
    ann = summary.bit_matched_ann
    if ann is not None:
        for part in ("energy_nJ", "event_reduction", "break_even_rate"):
            for model, v in getattr(ann, f"{part}_by_model").items():
                values[f"ann.{part}.{model}"] = v
    return {k: rounded(float(v)) for k, v in values.items() if v is not None and math.isfinite(v)}


RESULTS_VIEW = "results"  # the runs table's saved view: ?viewStateShareKey=results
VIEW_TAG = "mlflow.sharedViewState."  # how the MLflow UI keeps a saved runs view


def results_view(models: list[str]) -> dict[str, Any]:
    """The runs table as a user wants it first: the headline columns (each energy model's
    reduction), the lambda and seed, and the trials' state and choice; newest first."""
    metrics = [
        "direct_accuracy",
        "event_accuracy",
        "accuracy_retention",
        *(f"energy_reduction.{m}" for m in models),
        "energy_reduction_ceiling",
        "event_energy_nJ",
    ]
    columns = [f"metrics.`{HEADLINE}{m}`" for m in metrics]
    columns += ["params.`rate_lambda`", "params.`seed`", "tags.`state`", "tags.`chosen`"]
    return {"searchFilter": "", "selectedColumns": columns, "orderByAsc": False}


def view_tag(name: str, state: dict[str, Any], created_ms: int | None = None) -> str:
    """A saved view as the MLflow UI writes it: an envelope with its name, times and the
    view's state as a JSON string (read in MLflow 3's own code, where saved and shared runs
    views are experiment tags ``mlflow.sharedViewState.<key>``)."""
    now = int(time.time() * 1000)
    return json.dumps(
        {"name": name, "createdAt": created_ms or now, "updatedAt": now, "state": json.dumps(state)}
    )


EXPERIMENT_DESCRIPTION = """direct2event: network D (direct input coding, graded surrogate
activations) transferred to an event-driven network E. One run per dataset key (tag `dataset`),
its trials and seeds nested under it. Open the saved view **Results** (Views menu) for the headline
columns: D's and E's test accuracy, retention, energy reduction under each energy model, E's
energy (nJ), lambda, and each trial's state (PRUNED: stopped early) and choice. The run's
description is its result in a sentence; reports/summary.json holds every figure, tables/ the
ablation and shift tables. Models: registry `<key>-direct` and `<key>-event`."""
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # the UI opens on runs


def describe_experiment(experiment_id: str, models: list[str]) -> None:
    """The experiment's description, its kind (a model-development experiment: the UI opens on
    its runs, not the GenAI overview) and the saved runs view ``Results``, kept up to date."""
    client = mlflow.MlflowClient()
    tags = client.get_experiment(experiment_id).tags
    wanted = {"mlflow.note.content": EXPERIMENT_DESCRIPTION, EXPERIMENT_KIND[0]: EXPERIMENT_KIND[1]}
    state, key = results_view(models), VIEW_TAG + RESULTS_VIEW
    old = json.loads(tags[key]) if key in tags else None
    if old is None or json.loads(old.get("state", "{}")) != state:
        wanted[key] = view_tag("Results", state, old.get("createdAt") if old else None)
    for tag, value in wanted.items():
        if tags.get(tag) != value:
            client.set_experiment_tag(experiment_id, tag, value)


def ui_command(uri: str, port: int) -> list[str]:
    """``mlflow ui`` on 127.0.0.1 for the store ``uri``, with this interpreter's MLflow."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip


def ui_url(base: str, experiment_id: str) -> str:
    """The runs table in Model training mode, in the results view."""
    view = f"workflowType=machine_learning&viewStateShareKey={RESULTS_VIEW}"
    return f"{base}/#/experiments/{experiment_id}/runs?{view}"
