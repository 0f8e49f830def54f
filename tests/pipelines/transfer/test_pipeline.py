"""The template pipeline on digits: node by node on MemoryDatasets, then as `kedro run` does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from direct2event.data.static import load_digits
from direct2event.pipelines.transfer.nodes import ABLATION_VARIANTS
from direct2event.pipelines.transfer.pipeline import create_pipeline

ROOT = Path(__file__).resolve().parents[3]
TINY = {
    "training": {
        "epochs": 3,
        "lr": 1.0e-2,
        "batch_size": 64,
        "progress": False,
        "shift_augment": 0,
    },
    "transfer": {"finetune": {"epochs": 1, "lr": 2.0e-3, "batch_size": 64, "rate_lambda": 5.0}},
}


def tiny_params(storage: Path) -> dict:
    params = yaml.safe_load((ROOT / "conf/base/parameters_digits.yml").read_text())["digits"]
    params["tuning"]["storage"] = f"sqlite:///{storage}"
    for section, values in TINY.items():
        for key, value in values.items():
            if isinstance(value, dict):
                params[section][key].update(value)
            else:
                params[section][key] = value
    params["model"]["channels"] = [8, 16]
    params["transfer"]["ablation"]["ttfs_rows"] = True
    return params


def test_template_pipeline_with_sequential_runner(tmp_path: Path) -> None:
    params = tiny_params(tmp_path / "optuna.db")
    energy = yaml.safe_load((ROOT / "conf/base/parameters_energy.yml").read_text())[
        "energy_profiles"
    ]
    catalog = DataCatalog(
        {
            "raw_data": MemoryDataset(load_digits()),
            **{f"params:{k}": MemoryDataset(v) for k, v in params.items()},
            "params:energy_profiles": MemoryDataset(energy),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    summary = catalog.load("summary")
    assert summary["dataset"] == "digits" and summary["simulated"] is False
    assert summary["timesteps"] == 4 and summary["input_encoding"] == "rate"
    assert summary["direct"]["accuracy"] > 0.85
    assert summary["event"]["accuracy"] > 0.75
    assert [row["variant"] for row in summary["ablation"]] == [
        *ABLATION_VARIANTS,
        "ttfs_naive",
        "ttfs_finetune_ce",
        "ttfs_skd",
        "ttfs_pipeline",
        "ttfs_pipeline_skd",
    ]
    rows = {row["variant"]: row for row in summary["ablation"]}
    # fine-tuning on TTFS input repairs the naive TTFS transfer
    assert rows["ttfs_finetune_ce"]["accuracy"] > rows["ttfs_naive"]["accuracy"]
    for net in ("direct", "event"):
        entry = summary[net]
        assert set(entry["energy_uJ_by_model"]) == {"per_event", "synops_45nm"}
        assert entry["energy_uJ"] == entry["energy_uJ_by_model"]["per_event"]
        # per_event at 1 pJ: energy in uJ is events * 1e-6
        assert entry["energy_uJ"] == pytest.approx(entry["events_per_sample"] * 1e-6)
    assert summary["direct"]["mac_per_sample"] > 0 and summary["direct"]["ac_per_sample"] == 0
    assert summary["event"]["mac_per_sample"] == 0 and summary["event"]["ac_per_sample"] > 0
    assert summary["energy_reduction"] == pytest.approx(
        summary["direct"]["energy_uJ"] / summary["event"]["energy_uJ"]
    )
    assert summary["energy_reduction"] > 1.5  # thresholds plus the rate penalty cut events
    tuning = summary["tuning"]
    assert tuning["n_trials"] == 2 and 0.5 <= tuning["best_lambda"] <= 50.0
    assert summary["rate_lambda"] == tuning["best_lambda"]  # the final fine-tuning used it
    assert tuning["pareto"] and set(tuning["pareto"][0]) == {"lambda", "val_accuracy", "energy_uJ"}
    energies = [p["energy_uJ"] for p in tuning["pareto"]]
    assert energies == sorted(energies)
    report = catalog.load("threshold_report")
    for layer in report["layers"]:
        assert layer["rate_mismatch_after"] < layer["rate_mismatch_before"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's configuration in a temporary folder (own data/ and mlflow.db),
    with the digits parameters made tiny."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()  # the package itself is installed
    path = tmp_path / "conf/base/parameters_digits.yml"
    params = yaml.safe_load(path.read_text())
    digits = params["digits"]
    digits["model"]["channels"] = [8, 16]
    digits["training"].update(epochs=2, progress=False)
    digits["transfer"]["finetune"]["epochs"] = 1
    digits["transfer"]["ablation"]["enabled"] = False
    path.write_text(yaml.safe_dump(params))
    return tmp_path


def run(project: Path, params: str = "") -> subprocess.CompletedProcess:
    """``kedro run --pipelines digits`` in its own process, exactly as a user runs it."""
    cmd = [sys.executable, "-m", "kedro", "run", "--pipelines", "digits"]
    if params:
        cmd += ["--params", params]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200"}
    return subprocess.run(
        cmd, check=False, cwd=project, capture_output=True, text=True, env=env, timeout=600
    )


def runs(project: Path) -> list:
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    return mlflow.search_runs(
        experiment_names=["direct2event"], output_format="list", order_by=["start_time ASC"]
    )


def test_kedro_run_tracks_everything_and_failed_runs_keep_previous_outputs(project: Path) -> None:
    done = run(project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary_path = project / "data/08_reporting/digits/summary.json"
    summary = json.loads(summary_path.read_text())
    assert summary["dataset"] == "digits" and 0.5 < summary["direct"]["accuracy"] <= 1
    assert [r["variant"] for r in summary["ablation"]] == ["finetune_lambda"]

    (first,) = runs(project)
    assert first.info.status == "FINISHED"
    assert first.data.tags["dataset"] == "digits"
    assert first.data.params["digits.training.lr"] == "0.01"  # every parameter, flattened
    assert first.data.params["digits.transfer.finetune.rate_lambda"] == "5.0"
    client = mlflow.MlflowClient()
    history = client.get_metric_history(first.info.run_id, "direct.val_accuracy")
    assert [m.step for m in history] == [1, 2]
    assert first.data.metrics["direct.test_accuracy"] == pytest.approx(
        summary["direct"]["accuracy"]
    )
    artifacts = {
        a.path
        for d in ("digits/models", "digits/plots", "digits/reports")
        for a in client.list_artifacts(first.info.run_id, d)
    }
    assert {"digits/models/direct_model.pkl", "digits/models/event_model.pkl"} <= artifacts
    assert {
        "digits/plots/direct_training_curve.png",
        "digits/plots/calibration_curves.png",
    } <= artifacts
    assert "digits/reports/summary.json" in artifacts
    model_versions = project / "data/06_models/digits/direct_model.pkl"
    assert len(list(model_versions.iterdir())) == 1

    # a run that fails after training (a calibration split of 3 samples) keeps the old summary
    before = summary_path.read_text()
    failed = run(project, "digits.data.calibration_fraction=0.002")
    assert failed.returncode != 0
    assert "at least 16" in failed.stdout + failed.stderr
    assert summary_path.read_text() == before
    assert len(list(model_versions.iterdir())) == 2  # a new version; the old one is kept
    assert runs(project)[-1].info.status == "FAILED"

    # invalid parameters stop the run before any node; the MLflow run is marked FAILED
    invalid = run(project, "digits.training.lr=-1.0")
    assert invalid.returncode != 0
    out = invalid.stdout + invalid.stderr
    assert "digits.training.lr" in out and "greater than 0" in out
    assert "Running node" not in out
    assert runs(project)[-1].info.status == "FAILED"
    assert len(list(model_versions.iterdir())) == 2
    assert summary_path.read_text() == before


def test_unknown_dataset_key_is_refused_with_a_suggestion(project: Path) -> None:
    cmd = [sys.executable, "-m", "kedro", "run", "--pipelines", "mnsit"]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200"}
    done = subprocess.run(cmd, check=False, cwd=project, capture_output=True, text=True, env=env)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Failed to find the pipeline named 'mnsit'" in out and "mnist" in out
    assert not (project / "data").exists()  # nothing ran
