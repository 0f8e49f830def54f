"""Shared fixtures: small real data (scikit-learn digits) and a deterministic torch setup."""

from __future__ import annotations

import os
from contextlib import contextmanager

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from direct2event.data.splits import DataSplits, make_splits
from direct2event.data.static import load_digits
from direct2event.snn.encoders import InputCoding

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
ROOT = Path(__file__).resolve().parents[1]
# the peer frameworks the tests read E and D with; their own dependencies would replace the CPU
# torch build, so they are installed without them (make install-dev)
PEERS = "sinabs==3.1.3 norse==1.1.0 snntorch==1.0.0"


def peer(module: str) -> Any:
    """Import a peer framework; a missing one fails the test saying how to install it (a
    required part of the test environment is never a reason to skip)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        pytest.fail(
            f"{module} is missing ({err}): pip install --no-deps {PEERS} nirtorch==2.6 pbr "
            "(make install-dev installs them)"
        )


@pytest.fixture(autouse=True)
def _mlflow_store_restored() -> Iterator[None]:
    """A test that points MLflow at its own store (``set_tracking_uri``, which also exports
    ``MLFLOW_TRACKING_URI`` to child processes) leaves the next test as it found it."""
    with mlflow_store_kept():
        yield


@contextmanager
def mlflow_store_kept() -> Iterator[None]:
    """MLflow's tracking and registry URIs (and the variables that carry them to child
    processes) as they were before the block, whatever it set: for tests and module fixtures
    that open their own store (a module fixture runs outside any test's own restore)."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    env = {k: os.environ.get(k) for k in names}
    uris = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    try:
        yield
    finally:
        import mlflow

        while mlflow.active_run() is not None:  # a run a failed test left open
            mlflow.end_run()
        tracking_utils._tracking_uri, registry_utils._registry_uri = uris
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def digits_splits() -> DataSplits:
    """scikit-learn digits split with a fixed seed (1222 train / 72 cal / 144 val / 359 test)."""
    return make_splits(load_digits(), 0.05, 0.1, seed=0)


@pytest.fixture(scope="session")
def digits_direct_model(digits_splits: DataSplits):
    """A small network D trained on digits (a few seconds); tests must not modify it."""
    from direct2event.snn.models import build_model
    from direct2event.snn.training import FitConfig, fit

    torch.manual_seed(0)
    net = build_model("convnet", digits_splits.input_shape, 10, channels=(8, 16))
    cfg = FitConfig(
        epochs=6, lr=1e-2, batch_size=64, coding=InputCoding("analog", 4), seed=0, progress=False
    )
    fit(net, digits_splits.train, cfg, torch.device("cpu"))
    return net.eval()


def tiny_project(folder: Path) -> Path:
    """A copy of the project's configuration in ``folder`` (own data/ and mlflow.db), with the
    digits parameters made tiny (the tests' and the chaos benchmark's project)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    shutil.copytree(ROOT / "conf", folder / "conf", ignore=shutil.ignore_patterns("local"))
    (folder / "conf" / "local").mkdir()
    (folder / "src").mkdir()  # the package itself is installed
    path = folder / "conf/base/parameters_digits.yml"
    params = yaml.safe_load(path.read_text())
    digits = params["digits"]
    digits["model"]["channels"] = [8, 16]
    digits["training"].update(epochs=3, progress=False)  # 2 left seed 1 at chance (1 thread)
    digits["transfer"]["finetune"]["epochs"] = 1
    digits["transfer"]["ablation"] = {"enabled": False}
    digits["shift"]["enabled"] = False  # one test turns it on (test_dataset_pipeline)
    path.write_text(yaml.safe_dump(params))
    return folder


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny digits project in a temporary folder (:func:`tiny_project`)."""
    return tiny_project(tmp_path)


def run(
    project: Path, params: str = "", key: str = "digits", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``kedro run --pipelines <key>`` in its own process, exactly as a user runs it; tracked in
    the project's own mlflow.db unless ``env`` names a tracking server."""
    cmd = [sys.executable, "-m", "kedro", "run", "--pipelines", key]
    if params:
        cmd += ["--params", params]
    full = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full.update({"KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200", **(env or {})})
    return subprocess.run(
        cmd, check=False, cwd=project, capture_output=True, text=True, env=full, timeout=600
    )
