"""Project hooks: validate parameters once before anything runs and hand them to the nodes, tag
the MLflow run and log the parameters, time each node."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset, DataCatalog
from kedro.pipeline import Node, Pipeline
from mlflow.entities import RunStatus

from direct2event.params import PipelineParams, load_settings
from direct2event.seeds import PARENT_RUN_ENV
from direct2event.snn.training import resolve_device

logger = logging.getLogger(__name__)


def pipeline_namespaces(pipeline: Pipeline) -> list[str]:
    """Dataset keys (top-level namespaces) present in ``pipeline``."""
    return sorted({n.namespace.split(".")[0] for n in pipeline.nodes if n.namespace})


def check_reuse_and_sweep(key: str, params: PipelineParams) -> None:
    """Before any training: the source model exists and fits; the Optuna storage opens and a
    stored study has the configured search space."""
    from direct2event import registry, tuning

    if params.source_model is not None:
        registry.check_source(params.source_model, key, params.model)
    if params.tuning.enabled:
        space = tuning.lambda_distribution(params.tuning.lambda_min, params.tuning.lambda_max)
        done = tuning.check_study(params.tuning.storage, params.study_name, space)
        logger.info("%s: Optuna study %s holds %d complete trials", key, params.study_name, done)


class ProjectHooks:
    """Checks and bookkeeping around every ``kedro run``."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._catalog: DataCatalog | None = None
        self.node_seconds: dict[str, float] = {}
        self._keys: list[str] = []

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: DataCatalog
    ) -> None:
        """Validate every dataset's parameters before the first node and put the result in the
        catalog as ``<key>.settings``, the one object every node reads its parameters from; log
        them to MLflow; fail the MLflow run if they are bad."""
        keys = pipeline_namespaces(pipeline)
        settings: dict[str, PipelineParams] = {}
        try:
            profiles = catalog.load("params:energy_profiles")
            for key in keys:
                raw = catalog.load(f"params:{key}") if f"params:{key}" in catalog else {}
                settings[key] = load_settings(key, raw, profiles)
                resolve_device(settings[key].training.device)
                check_reuse_and_sweep(key, settings[key])
        except Exception:
            if mlflow.active_run() is not None:
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
            mlflow.set_tags({"dataset": ",".join(keys), "mlflow.runName": name})
            for key, params in settings.items():
                prefix = "" if len(keys) == 1 else f"{key}."
                mlflow.log_params({prefix + k: v for k, v in params.loggable().items()})
        self.node_seconds = {}
        self._keys = keys

    @hook_impl
    def after_catalog_created(self, catalog: DataCatalog) -> None:
        self._catalog = catalog

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        """Log a saved versioned file to MLflow when its catalog metadata asks for it."""
        if mlflow.active_run() is None or self._catalog is None:
            return
        dataset = self._catalog.get(dataset_name)
        artifact_path = (getattr(dataset, "metadata", None) or {}).get("mlflow_artifact_path")
        if artifact_path and isinstance(dataset, AbstractVersionedDataset):
            path = dataset._get_versioned_path(dataset.resolve_save_version())
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node) -> None:
        seconds = time.perf_counter() - self._started.pop(node.name, time.perf_counter())
        # one dataset per run: the metric drops its key, so runs of datasets line up in MLflow
        name = node.name.split(".", 1)[1] if len(self._keys) == 1 and node.namespace else node.name
        self.node_seconds[name] = seconds
        logger.info("node %s took %.1f s", node.name, seconds)
        if mlflow.active_run() is not None:
            mlflow.log_metric(f"node_seconds.{name}", seconds)

    @hook_impl
    def after_pipeline_run(self) -> None:
        total = sum(self.node_seconds.values())
        logger.info(
            "node times (s): %s; total %.1f s",
            {k: round(v, 1) for k, v in self.node_seconds.items()},
            total,
        )
        if mlflow.active_run() is not None:
            mlflow.log_metric("node_seconds.total", total)
