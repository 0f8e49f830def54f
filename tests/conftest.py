"""Shared fixtures: small real data (scikit-learn digits) and a deterministic torch setup."""

from __future__ import annotations

import os

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from direct2event.data.splits import DataSplits, make_splits
from direct2event.data.static import load_digits
from direct2event.snn.encoders import InputCoding

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
ROOT = Path(__file__).resolve().parents[1]


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
