"""Project hooks: validate parameters once before anything runs and hand them to the nodes, tag
the MLflow run and log the parameters, time each node."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset, DataCatalog, Version
from kedro.pipeline import Node, Pipeline
from mlflow.entities import RunStatus

from direct2event.glue import registry, runs
from direct2event.glue.masking import mask_credentials, mask_logs, masked
from direct2event.glue.params import (
    SWEEP_SUFFIX,
    PipelineParams,
    check_runtime_params,
    load_settings,
)
from direct2event.glue.reports import TuningReport
from direct2event.glue.runs import PARENT_RUN_ENV
from direct2event.glue.services import ServiceError, health
from direct2event.glue.sweep.storage import lambda_distribution
from direct2event.glue.sweep.study import check_study
from direct2event.glue.tracking import describe_experiment, headline, prepare_store
from direct2event.snn.training import resolve_device

logger = logging.getLogger(__name__)


def pipeline_namespaces(pipeline: Pipeline) -> list[str]:
    """Dataset keys (top-level namespaces) present in ``pipeline``."""
    return sorted({n.namespace.split(".")[0] for n in pipeline.nodes if n.namespace})


def check_reuse_and_sweep(key: str, params: PipelineParams) -> PipelineParams:
    """Before any training: the source model exists and fits; the Optuna storage opens and a
    stored study has the configured search space. Returns the parameters with ``source_model``
    resolved to its version (``latest`` -> ``models:/<key>-direct/3``), so that the study's name
    and the logged parameter say which network D was used, and sweep workers started at
    different times join one study only when they start from the same D."""
    if params.source_model is not None:
        resolved = registry.check_source(params.source_model, key, params.model)
        params = params.model_copy(update={"source_model": resolved})
    if params.tuning.enabled:
        space = lambda_distribution(params.tuning.lambda_min, params.tuning.lambda_max)
        done = check_study(params.tuning.storage, params.study_name, space)
        logger.info("%s: Optuna study %s holds %d complete trials", key, params.study_name, done)
    return params


def check_tracking_server(uri: str) -> None:
    """Raise :class:`direct2event.glue.services.ServiceError` when ``uri`` is an MLflow server that
    does not answer its health check within a few seconds (file and database URIs pass)."""
    if not uri.startswith(("http://", "https://")):
        return
    problem = health(uri)
    if problem is not None:
        raise ServiceError(
            f"Cannot reach the MLflow tracking server {mask_credentials(uri)}: {problem}. Check "
            "that it runs and is reachable from this machine (make services starts one here; "
            "python -m direct2event services status) and MLFLOW_TRACKING_URI, or unset "
            "MLFLOW_TRACKING_URI to track in the project's mlflow.db."
        )


def log_choice(report: TuningReport, prefix: str = "") -> None:
    """What the sweep chose, as the run's parameters and metrics: ``rate_lambda`` (the lambda E
    is fine-tuned with; ``transfer.finetune.rate_lambda`` is the configured one),
    ``tuning.chosen_by`` (what chose it) and ``tuning.validation_floor_met`` (1/0: whether the
    chosen lambda kept retention floor + margin on validation) when a sweep chose it."""
    mlflow.log_param(prefix + "rate_lambda", report.rate_lambda)
    mlflow.log_param(prefix + "tuning.chosen_by", report.chosen_by)
    if report.chosen_by_sweep:
        mlflow.log_metric(
            prefix + "tuning.validation_floor_met", float(bool(report.validation_floor_met))
        )


TOP_LEVEL_ARTIFACTS = ("summary", "tuning_plot", "energy_plot")  # also at the run's top level


class CredentialMask:
    """Runs before every other ``before_pipeline_run`` hook: credentials given on the command line
    (``--params ...tuning.storage=postgresql://user:password@...``) are masked in the run's
    parameters that kedro-mlflow copies into MLflow tags, so the password is never written to the
    tracking store (the configuration Kedro already resolved keeps the real value)."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        mask_logs()
        for key, value in run_params.items():
            run_params[key] = masked(value)
        # kedro-mlflow tags the run with every run parameter that has a value: Kedro's session
        # id is no MLflow run id, and the runner is an object's repr
        run_params["kedro_session_id"] = run_params.get("run_id")
        run_params["run_id"] = run_params["runner"] = None


class ProjectHooks:
    """Checks and bookkeeping around every ``kedro run``."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._catalog: DataCatalog | None = None
        self.node_seconds: dict[str, float] = {}
        self._keys: list[str] = []
        self._heartbeat: runs.Heartbeat | None = None
        self._run_id: str | None = None

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        """Before kedro-mlflow contacts the tracking store: SIGTERM / SIGINT from now on end the
        run FAILED (runs.py), a fresh SQLite store gets its schema once under a lock (several
        runs may start together), and a tracking server that does not answer stops the run
        within seconds, saying what to check (MLflow's own client would retry for minutes)."""
        runs.install_stop_handlers()  # for the life of the process: a stop while kedro-mlflow
        runs.die_with_parent()  # a seed of a seeds study ends with the study
        runs.pause_point("start")  # closes the run still ends it FAILED, never half-written
        try:
            uri = str(context.config_loader["mlflow"]["server"]["mlflow_tracking_uri"] or "")
        except (KeyError, TypeError):
            return
        check_tracking_server(uri)
        prepare_store(uri)
        if mask_credentials(uri) != uri:  # MLflow prints run links with the URI's password
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: DataCatalog
    ) -> None:
        """Validate every dataset's parameters before the first node and put the result in the
        catalog as ``<key>.settings``, the one object every node reads its parameters from; log
        them to MLflow; fail the MLflow run if they are bad."""
        runs.pause_point("run_created")  # kedro-mlflow has created the run (its hook runs first)
        self._watch_run()
        keys = pipeline_namespaces(pipeline)
        settings: dict[str, PipelineParams] = {}
        try:
            check_runtime_params(run_params.get("runtime_params") or {})
            profiles = catalog.load("params:energy_profiles")
            for key in keys:
                raw = catalog.load(f"params:{key}") if f"params:{key}" in catalog else {}
                settings[key] = load_settings(key, raw, profiles)
                resolve_device(settings[key].training.device)
                settings[key] = check_reuse_and_sweep(key, settings[key])
        except Exception as error:
            self._unwatch_run()
            if mlflow.active_run() is not None:
                reason = mask_credentials(f"{type(error).__name__}: {error}")[:500]
                mlflow.set_tag("failure_reason", reason)
                mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
            raise
        for key, params in settings.items():
            catalog[f"{key}.settings"] = params
        if mlflow.active_run() is not None and keys:
            name = ",".join(keys)
            parent = os.environ.get(PARENT_RUN_ENV)
            if parent:  # one seed of a multi-seed study: a child of the study's run
                seeds = ",".join(str(settings[k].seed) for k in keys)
                mlflow.set_tags({"mlflow.parentRunId": parent, "kind": "seed_run"})
                name = f"{name}-seed{seeds}"
            if any(n.endswith(SWEEP_SUFFIX) for n in run_params.get("pipeline_names") or ()):
                name = f"{name}-sweep-worker"  # one of several: its trials are nested under it
                mlflow.set_tag("kind", "sweep_worker")
            mlflow.set_tags({"dataset": ",".join(keys), "mlflow.runName": name})
            for key, params in settings.items():
                prefix = "" if len(keys) == 1 else f"{key}."
                mlflow.log_params({prefix + k: v for k, v in params.loggable().items()})
            first = next(iter(settings.values()))
            describe_experiment(
                mlflow.active_run().info.experiment_id, sorted(first.energy_profiles)
            )
        self.node_seconds = {}
        self._keys = keys

    @hook_impl
    def after_catalog_created(self, catalog: DataCatalog) -> None:
        self._catalog = catalog

    @hook_impl
    def before_dataset_saved(self, dataset_name: str) -> None:
        """A versioned file this run saves is read back from this run's version. Kedro reads the
        newest version on disk, which is another run's when two runs share the folder (sweep
        workers on one machine): that run's network, or its file still half-written."""
        if self._catalog is None:
            return
        dataset = self._catalog.get(dataset_name)
        if isinstance(dataset, AbstractVersionedDataset) and dataset._version:
            save = dataset.resolve_save_version()
            dataset._version = Version(load=save, save=save)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        """Log a saved versioned file to MLflow when its catalog metadata asks for it."""
        if mlflow.active_run() is None or self._catalog is None:
            return
        dataset = self._catalog.get(dataset_name)
        artifact_path = (getattr(dataset, "metadata", None) or {}).get("mlflow_artifact_path")
        if artifact_path and isinstance(dataset, AbstractVersionedDataset):
            path = dataset._get_versioned_path(dataset.resolve_save_version())
            if Path(path).exists():  # a dataset may write nothing (no NIR graph of D max-pooled)
                mlflow.log_artifact(str(path), artifact_path=artifact_path)
        if dataset_name.rsplit(".", 1)[-1] in TOP_LEVEL_ARTIFACTS and len(self._keys) == 1:
            # the compare view lists only artifacts common to the runs at their top level
            path = getattr(dataset, "_filepath", None)
            if path is not None and Path(path).exists():
                mlflow.log_artifact(str(path))

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        runs.raise_if_stopped()  # a safe point: a stop whose exception was lost ends here
        runs.pause_point(f"node:{node.name.rsplit('.', 1)[-1]}")
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node, outputs: dict[str, Any]) -> None:
        runs.raise_if_stopped()
        seconds = time.perf_counter() - self._started.pop(node.name, time.perf_counter())
        if mlflow.active_run() is not None:
            for name, value in outputs.items():
                if name.rsplit(".", 1)[-1] == "tuning_report":
                    prefix = "" if len(self._keys) == 1 else f"{name.split('.')[0]}."
                    log_choice(value, prefix)
                if name.rsplit(".", 1)[-1] == "summary" and len(self._keys) == 1:
                    mlflow.set_tag("mlflow.note.content", headline(value))
        # one dataset per run: the metric drops its key, so runs of datasets line up in MLflow
        name = node.name.split(".", 1)[1] if len(self._keys) == 1 and node.namespace else node.name
        self.node_seconds[name] = seconds
        logger.info("node %s took %.1f s", node.name, seconds)

    def _watch_run(self) -> None:
        """Keep the run's heartbeat (host and pid are tagged as MLflow creates it: run_context)
        and mark runs that gone processes left RUNNING as FAILED (runs.py)."""
        run = mlflow.active_run()
        if run is None:
            return
        mlflow.set_tag("heartbeat", str(int(time.time())))
        self._heartbeat = runs.Heartbeat(run.info.run_id).start()
        self._run_id = run.info.run_id
        try:
            runs.reap(
                experiment=mlflow.get_experiment(run.info.experiment_id).name,
                keep=run.info.run_id,
                log=logger.warning,
            )
        except Exception as err:
            logger.warning("Could not check for runs left RUNNING: %s", err)

    def _unwatch_run(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None

    @hook_impl
    def on_pipeline_error(self, error: Exception) -> None:
        """The run failed or was stopped: say why on the run (kedro-mlflow ends it FAILED)."""
        self._unwatch_run()
        if self._run_id is not None:
            # a stop (runs.Terminated, not an Exception) never gets here: runs.py closes its runs
            reason = mask_credentials(f"{type(error).__name__}: {error}")
            mlflow.MlflowClient().set_tag(self._run_id, "failure_reason", reason[:500])

    @hook_impl(tryfirst=True)  # before kedro-mlflow ends the run FINISHED
    def after_pipeline_run(self) -> None:
        self._unwatch_run()
        runs.raise_if_stopped()  # a lost stop never ends a run FINISHED with exit 0
        total = sum(self.node_seconds.values())
        logger.info(
            "node times (s): %s; total %.1f s",
            {k: round(v, 1) for k, v in self.node_seconds.items()},
            total,
        )
        if mlflow.active_run() is not None:  # one metric; the nodes' times in one file
            mlflow.log_metric("node_seconds.total", total)
            mlflow.log_dict(
                {k: round(v, 3) for k, v in self.node_seconds.items()}, "node_seconds.json"
            )
