"""The multi-seed study on digits: real `kedro run`s, one per seed, side by side."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import mlflow
import pytest

from direct2event.commands import seeds
from tests.conftest import tiny_project


def test_aggregate_mean_std_and_worst() -> None:
    runs = [
        {
            "seed": s,
            "direct_accuracy": d,
            "event_accuracy": e,
            "accuracy_retention": e / d,
            "energy_reduction": r,
            "energy_reduction_by_model": {"per_event": r, "synops_45nm": 3 * r},
            "events_per_sample": 100.0 * s,
            "synops_per_sample": 1000.0 * s,
            "rate_lambda": 2.0,
        }
        for s, d, e, r in ((0, 0.99, 0.985, 7.0), (1, 0.98, 0.977, 6.0), (2, 0.99, 0.99, 8.5))
    ]
    study = seeds.aggregate("mnist", runs, {"machine": "cpu", "torch": "2"})
    assert study["seeds"] == [0, 1, 2] and study["machine"] == "cpu"
    assert study["mean"]["energy_reduction"] == pytest.approx(7.1666666)
    assert study["std"]["energy_reduction"] == pytest.approx(statistics.stdev([7.0, 6.0, 8.5]))
    assert study["worst"]["accuracy_retention"] == pytest.approx(0.985 / 0.99)
    assert study["worst"]["energy_reduction"] == 6.0
    assert study["worst"]["energy_reduction_by_model"] == {"per_event": 6.0, "synops_45nm": 18.0}
    with pytest.raises(ValueError, match="no seed"):
        seeds.aggregate("mnist", [], {"machine": "cpu", "torch": "2"})


def shift_report(seed: int, recovered: float, cost: float, recovery: int | None) -> dict:
    """A hand-made ``shift.json`` with one method (the fields shift_study reads)."""
    return {
        "enabled": True,
        "seed": seed,
        "samples": 500,
        "seconds": 30.0,
        "summary": {
            "modulation": {
                "recovered_fraction": recovered,
                "clean_cost_pp": cost,
                "clean_events_change": -0.02 * (seed + 1),
                "shift_events_change": 0.1 * (-1) ** seed,
                "recovery_samples": recovery,
                "qualifying_shifts": ["contrast"],
            }
        },
        "baselines": {"recalibration": {"recovered_fraction": 0.8}},
        "mean_corruption_error": {"event": 0.2, "modulation": 0.1},
    }


def test_shift_study_mean_std_and_worst_against_the_targets() -> None:
    reports = [shift_report(0, 0.6, 0.1, 120), shift_report(1, 0.4, -0.1, 200)]
    study = seeds.shift_study(reports, [300.0, 270.0])
    m = study["methods"]["modulation"]
    assert m["recovered_fraction"]["mean"] == pytest.approx(0.5)
    assert m["recovered_fraction"]["worst"] == 0.4  # least recovered
    assert m["clean_cost_pp"]["worst"] == 0.1  # most costly
    assert m["clean_events_change"]["worst"] == pytest.approx(-0.04)  # largest either way
    assert m["recovery_samples"]["worst"] == 200
    assert study["stage_share"]["worst"] == pytest.approx(30 / 270)
    separately = seeds.shift_study(reports, [300.0, 270.0], stage_inside=False)
    assert separately["stage_share"]["worst"] == pytest.approx(30 / 300)
    never = seeds.shift_study([shift_report(0, 0.6, 0.1, None)], [300.0])
    assert never["methods"]["modulation"]["recovery_samples"]["mean"] is None
    assert seeds.shift_study([{"enabled": False}], [1.0]) is None


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
    assert written == json.loads(json.dumps(study))
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

    # a stage run afterwards on the finished seeds: seeds.json rebuilt from their reports
    assert written["shift"] is None  # the tiny project runs no shift benchmark
    for seed, recovered in ((0, 0.7), (1, 0.5)):
        path = project / f"data/08_reporting/digits/seed_{seed}/shift.json"
        path.write_text(json.dumps(shift_report(seed, recovered, 0.0, 100)))
    rebuilt = seeds.aggregate_only("digits", [0, 1], root=project)
    assert rebuilt["mean"] == written["mean"]  # the transfer figures are the same seeds'
    assert rebuilt["shift"]["methods"]["modulation"]["recovered_fraction"]["mean"] == pytest.approx(
        0.6
    )
    assert json.loads((project / "data/08_reporting/digits/seeds.json").read_text())["shift"]

    # the same seed again (a new study, same thread count) gives the same run on this machine
    again = seeds.run_study("digits", [1], jobs=1, root=project, threads=1)
    first = {k: v for k, v in runs[1].items() if k != "seconds"}
    assert {k: v for k, v in again["runs"][0].items() if k != "seconds"} == first


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
