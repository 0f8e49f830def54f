"""The multi-seed study on digits: real `kedro run`s, one per seed, side by side."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import mlflow
import pytest

from direct2event.commands import seeds
from tests.conftest import tiny_project
from tests.glue.test_seed_study import shift_report

pytestmark = pytest.mark.slow  # a seeds study of kedro runs


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tests' tiny digits project, as the working folder (the study runs where it is)."""
    tiny_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_seed_study_on_digits(project: Path) -> None:
    study = seeds.run_study("digits", [0, 1], jobs=2, root=project, threads=1)
    written = json.loads((project / "data/08_reporting/digits/seeds.json").read_text())
    assert written == json.loads(study.model_dump_json())
    assert written["retention_floor"] == 0.995  # the seeds' sweeps aimed at this
    assert (project / "data/08_reporting/digits/seeds.png").stat().st_size > 10_000
    runs = {r["seed"]: r for r in written["runs"]}
    for seed in (0, 1):  # each row is that seed's own summary
        summary = json.loads(
            (project / f"data/08_reporting/digits/seed_{seed}/summary.json").read_text()
        )
        assert summary["seed"] == seed
        assert runs[seed]["event_accuracy"] == summary["event"]["accuracy"]
        assert runs[seed]["accuracy_retention"] == summary["accuracy_retention"]
        ceiling = runs[seed]["energy_reduction_ceiling"]
        assert ceiling == summary["energy_reduction_ceiling"] > runs[seed]["energy_reduction"]
    assert runs[0]["event_accuracy"] != runs[1]["event_accuracy"] or (
        runs[0]["events_per_sample"] != runs[1]["events_per_sample"]
    )  # another seed, another network
    retention = [r["accuracy_retention"] for r in written["runs"]]
    assert written["mean"]["accuracy_retention"] == pytest.approx(statistics.fmean(retention))
    assert written["std"]["accuracy_retention"] == pytest.approx(statistics.stdev(retention))
    assert written["worst"]["accuracy_retention"] == min(retention)
    reduction = [r["energy_reduction"] for r in written["runs"]]
    assert written["worst"]["energy_reduction"] == min(reduction)
    assert "per seed" in written["machine"] and written["torch"]

    # MLflow: one parent run, one child per seed
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=["direct2event"], output_format="list")
    (parent,) = [r for r in found if r.data.tags.get("kind") == "seed_study"]
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["seed"] for r in children) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in [parent, *children])
    assert parent.data.metrics["worst.accuracy_retention"] == min(retention)
    # the Results view's columns show the study's mean, as a run's headline
    mean_retention = parent.data.metrics["headline.accuracy_retention"]
    assert mean_retention == pytest.approx(statistics.fmean(retention), rel=1e-3)
    assert parent.data.metrics["headline.energy_reduction.per_event"] == pytest.approx(
        statistics.fmean(reduction), rel=1e-3
    )

    # a stage run afterwards on the finished seeds: seeds.json rebuilt from their reports
    assert written["shift"] is None  # the tiny project runs no shift benchmark
    for seed, recovered in ((0, 0.7), (1, 0.5)):
        path = project / f"data/08_reporting/digits/seed_{seed}/shift.json"
        path.write_text(shift_report(seed, recovered, 0.0, 100).model_dump_json())
    rebuilt = seeds.aggregate_only("digits", [0, 1], root=project)
    assert rebuilt.mean == written["mean"]  # the transfer figures are the same seeds'
    assert rebuilt.shift.methods["modulation"].recovered_fraction.mean == pytest.approx(0.6)
    assert json.loads((project / "data/08_reporting/digits/seeds.json").read_text())["shift"]

    # the same seed again (a new study, same thread count) gives the same run on this machine
    again = seeds.run_study("digits", [1], jobs=1, root=project, threads=1)
    first = {k: v for k, v in runs[1].items() if k != "seconds"}
    assert again.runs[0].model_dump(exclude={"seconds"}) == first


def test_a_study_whose_params_lack_the_dataset_key_is_refused_before_any_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        seeds.main(
            ["--key", "digits", "--params", "tuning.n_trials=6,digits.seed=2", "--name", "x"]
        )
    assert stop.value.code == 2
    assert "--params tuning: no such parameter" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no run, no store, no report
