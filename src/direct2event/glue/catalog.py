"""The project's Kedro configuration outside a run: the same loader settings ``kedro run`` uses
(``settings.py`` reads them from here) and the catalog the pipelines write through, so that a
command reads a run's reports where the catalog put them, as their typed models."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from omegaconf.resolvers import oc

from direct2event.glue.reports import Report

CONFIG_LOADER_ARGS: dict[str, Any] = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},
    # mlflow.yml reads MLFLOW_TRACKING_URI (a tracking server for sweep workers); Kedro enables
    # oc.env only for credentials unless it is registered here
    "custom_resolvers": {"oc.env": oc.env},
}


def project_catalog(
    root: Path = Path(), runtime_params: dict[str, Any] | None = None
) -> DataCatalog:
    """The catalog of the project at ``root`` as a run with ``runtime_params`` sees it (e.g.
    ``{"seed_folder": "/seed_2"}``: a seed of a seeds study)."""
    with warnings.catch_warnings():  # omegaconf's resolver registration is noisy, and harmless
        warnings.simplefilter("ignore", UserWarning)
        loader = OmegaConfigLoader(
            conf_source=str(root / "conf"),
            runtime_params=runtime_params or {},
            **CONFIG_LOADER_ARGS,
        )
        config = loader["catalog"]
    for entry in config.values():  # paths relative to the project, as Kedro resolves them
        inner = entry.get("dataset", entry) if isinstance(entry, dict) else None
        if (
            isinstance(inner, dict)
            and "filepath" in inner
            and not Path(inner["filepath"]).is_absolute()
        ):
            inner["filepath"] = str(root / inner["filepath"])
    return DataCatalog.from_config(config)


def load_report(catalog: DataCatalog, key: str, name: str) -> Report:
    """``<key>.<name>`` (``summary``, ``shift``, ``tuning_report``) as its typed report."""
    return catalog.load(f"{key}.{name}")


def report_path(catalog: DataCatalog, key: str, name: str) -> Path:
    """Where the catalog keeps ``<key>.<name>``."""
    return Path(str(catalog.get(f"{key}.{name}")._filepath))
