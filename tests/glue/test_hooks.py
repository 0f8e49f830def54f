"""Project hooks: a password given on the command line never reaches the tracking store, the log
or any file the run writes; a run reads back the versioned files it saved, not another run's."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from kedro.io import DataCatalog, Version
from kedro_datasets.pickle import PickleDataset

from direct2event.glue.hooks import ProjectHooks
from tests.conftest import run


def test_a_run_reads_back_its_own_version_when_another_run_saved_a_newer_one(
    tmp_path: Path,
) -> None:
    """Two sweep workers in one folder: worker B started later (its version is newer) but saves
    its network first; worker A then saves its own and reads it back. Kedro alone reads the
    newest version on disk, B's (and warns); with the hook, A reads A's."""
    versions = {"A": "2026-01-01T00.00.00.000Z", "B": "2026-01-01T00.00.01.000Z"}

    def worker(name: str, hooked: bool) -> DataCatalog:
        path = str(tmp_path / ("hooked" if hooked else "plain") / "scaled_model.pkl")
        dataset = PickleDataset(filepath=path, version=Version(None, versions[name]))
        catalog = DataCatalog({"digits.scaled_model": dataset})
        if hooked:
            hooks = ProjectHooks()
            hooks.after_catalog_created(catalog)
            hooks.before_dataset_saved("digits.scaled_model")
        catalog.save("digits.scaled_model", {"network": name})
        return catalog

    worker("B", hooked=True)
    assert worker("A", hooked=True).load("digits.scaled_model") == {"network": "A"}
    worker("B", hooked=False)
    with pytest.warns(UserWarning, match="did not match load version"):
        unhooked = worker("A", hooked=False)
    assert unhooked.load("digits.scaled_model") == {"network": "B"}


@pytest.mark.slow  # a kedro run
def test_a_password_on_the_command_line_is_written_nowhere(project: Path) -> None:
    secret = "S3cret-PW-do-not-log"
    url = f"postgresql+psycopg2://alice:{secret}@127.0.0.1:1/optuna"
    done = run(project, f"digits.tuning.storage={url}")
    out = done.stdout + done.stderr
    assert done.returncode != 0  # nothing listens on port 1: stopped before any node
    assert "Cannot open the Optuna storage" in out and "alice:***@127.0.0.1:1" in out
    assert secret not in out
    written = [p for p in project.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in written)
    for path in written:  # mlflow.db (params, tags), logs, artifacts
        assert secret.encode() not in path.read_bytes(), path
    # the failed run is in the store, with the command line's parameters masked
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    (failed,) = mlflow.search_runs(experiment_names=["direct2event"], output_format="list")
    assert failed.info.status == "FAILED"
    assert "alice:***@127.0.0.1:1" in failed.data.tags["runtime_params"]


@pytest.mark.slow  # a kedro run
def test_a_parameter_without_its_dataset_key_stops_the_run_before_any_node(project: Path) -> None:
    done = run(project, "tuning.n_trials=6")  # meant: digits.tuning.n_trials=6
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "--params tuning: no such parameter" in out and "mnist.tuning.n_trials=6" in out
    assert "Running node" not in out
    assert not (project / "data" / "06_models").exists() or not any(
        (project / "data" / "06_models").rglob("*.pkl")
    )
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    (failed,) = mlflow.search_runs(experiment_names=["direct2event"], output_format="list")
    assert failed.info.status == "FAILED"
    assert "no such parameter" in failed.data.tags["failure_reason"]
