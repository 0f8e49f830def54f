"""The whole dataset pipeline on digits: with a SequentialRunner on MemoryDatasets (and against
the summary the pre-restructure code wrote on this machine), then as `kedro run` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset

from direct2event.data.static import load_digits
from direct2event.glue import registry
from direct2event.glue.datasets import ReportDataset
from direct2event.glue.params import load_settings
from direct2event.pipeline_registry import create_dataset_pipeline
from direct2event.pipelines.evaluation.nodes import ABLATION_VARIANTS, TTFS_VARIANTS
from tests.conftest import run

pytestmark = pytest.mark.slow  # whole kedro runs

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = Path(__file__).with_name("reference_summary_digits.json")
TINY = {
    "training": {
        "epochs": 3,
        "lr": 1.0e-2,
        "batch_size": 64,
        "progress": False,
        "shift_augment": 0,
    },
    # the settings the reference summary was made with (defaults changed since: say so here)
    "transfer": {
        "finetune": {
            "epochs": 1,
            "lr": 2.0e-3,
            "batch_size": 64,
            "rate_lambda": 5.0,
            "train_thresholds": False,
        }
    },
}


def tiny_params(storage: Path) -> dict:
    params = yaml.safe_load((ROOT / "conf/base/parameters_digits.yml").read_text())["digits"]
    params["tuning"]["storage"] = f"sqlite:///{storage}"
    for section, values in TINY.items():
        for key, value in values.items():
            if isinstance(value, dict):
                params[section].setdefault(key, {}).update(value)
            else:
                params[section][key] = value
    params["model"]["channels"] = [8, 16]
    params["transfer"]["ablation"] = {"ttfs_rows": True}
    return params


def test_dataset_pipeline_with_sequential_runner(tmp_path: Path) -> None:
    params = tiny_params(tmp_path / "optuna.db")
    energy = yaml.safe_load((ROOT / "conf/base/parameters_energy.yml").read_text())[
        "energy_profiles"
    ]
    catalog = DataCatalog(
        {
            "raw_data": MemoryDataset(load_digits()),
            "settings": MemoryDataset(load_settings("digits", params, energy)),
            # reports on disk in their real format (memory datasets are released after use)
            **{
                name: JSONDataset(filepath=str(tmp_path / f"{name}.json"))
                for name in ("threshold_report", "registry_report")
            },
            "summary": ReportDataset(filepath=str(tmp_path / "summary.json"), report="Summary"),
            "tuning_report": ReportDataset(
                filepath=str(tmp_path / "tuning_report.json"), report="TuningReport"
            ),
        }
    )
    SequentialRunner().run(create_dataset_pipeline(), catalog)
    assert catalog.load("registry_report") == {"registered": False}  # no MLflow run here
    summary = catalog.load("summary").model_dump(mode="json")  # as saved
    assert summary["dataset"] == "digits" and summary["simulated"] is False
    assert summary["timesteps"] == 4 and summary["input_encoding"] == "rate"
    assert summary["direct"]["accuracy"] > 0.85
    assert summary["event"]["accuracy"] > 0.75
    assert [row["variant"] for row in summary["ablation"]] == [*ABLATION_VARIANTS, *TTFS_VARIANTS]
    rows = {row["variant"]: row for row in summary["ablation"]}
    # every fine-tuned row names its lambda: the TTFS pipeline rows use the chosen one
    chosen = summary["rate_lambda"]
    assert [rows[v]["rate_lambda"] for v in (*ABLATION_VARIANTS, *TTFS_VARIANTS)] == [
        None,
        None,
        0.0,
        chosen,
        None,
        0.0,
        0.0,
        chosen,
        chosen,
    ]
    assert rows["finetune_lambda"]["energy_gain_fraction"] == pytest.approx(1.0)
    # fine-tuning on TTFS input repairs the naive TTFS transfer
    assert rows["ttfs_finetune_ce"]["accuracy"] > rows["ttfs_naive"]["accuracy"]
    for net in ("direct", "event"):
        entry = summary[net]
        assert set(entry["energy_nJ_by_model"]) == {"per_event", "synops_45nm", "memory_45nm"}
        assert entry["energy_nJ"] == entry["energy_nJ_by_model"]["per_event"]
        # per_event at 1 pJ: energy in nJ is events * 1e-3
        assert entry["energy_nJ"] == pytest.approx(entry["events_per_sample"] * 1e-3)
    assert summary["direct"]["mac_per_sample"] > 0 and summary["direct"]["ac_per_sample"] == 0
    assert summary["event"]["mac_per_sample"] == 0 and summary["event"]["ac_per_sample"] > 0
    assert summary["energy_reduction"] == pytest.approx(
        summary["direct"]["energy_nJ"] / summary["event"]["energy_nJ"]
    )
    assert summary["energy_reduction"] > 1.5  # thresholds plus the rate penalty cut events
    tuning = summary["tuning"]
    # two finished trials (one may stop early: tuning.early_stop), lambda from the first_lambdas
    assert tuning["n_complete"] + tuning["n_stopped"] == 2 and tuning["n_complete"] >= 1
    assert summary["rate_lambda"] in (1.5, 5.0)
    assert catalog.load("tuning_report").rate_lambda == summary["rate_lambda"]  # used by E
    assert tuning["pareto"] and set(tuning["pareto"][0]) == {
        "rate_lambda",
        "val_accuracy",
        "energy_nJ",
    }
    energies = [p["energy_nJ"] for p in tuning["pareto"]]
    assert energies == sorted(energies)
    report = catalog.load("threshold_report")
    for layer in report["layers"]:
        assert layer["rate_mismatch_after"] < layer["rate_mismatch_before"]
    assert_same_as_reference(summary)


def flat_keys(value: object, prefix: str = "") -> set[str]:
    """Every key path of nested dicts (list items under ``[]``)."""
    if isinstance(value, dict):
        return set().union(
            *(flat_keys(v, f"{prefix}.{k}" if prefix else k) for k, v in value.items())
        )
    if isinstance(value, list):
        return set().union(*(flat_keys(v, f"{prefix}[]") for v in value)) if value else {prefix}
    return {prefix}


def assert_same_as_reference(summary: dict) -> None:
    """The summary keeps the contract of the reference (every key path, ``Summary`` schema
    version 2), the settings it echoes and the split sizes (whatever the CPU: the networks'
    numbers differ between CPU models and torch builds, the contract and the data do not).
    ``UPDATE_REFERENCE=1`` rewrites the reference when the contract changes on purpose (raise
    the schema version and add its upgrade in ``glue/report_versions.py`` first)."""
    if os.environ.get("UPDATE_REFERENCE") == "1":
        REFERENCE.write_text(json.dumps(summary, indent=2) + "\n")
    reference = json.loads(REFERENCE.read_text())
    assert flat_keys(summary) == flat_keys(reference)
    echoed = ("schema_version", "dataset", "simulated", "timesteps", "event_timesteps",
              "input_encoding", "energy_model", "splits")  # fmt: skip
    assert {k: summary[k] for k in echoed} == {k: reference[k] for k in echoed}
    assert [r["variant"] for r in summary["ablation"]] == [
        r["variant"] for r in reference["ablation"]
    ]


def store(project: Path) -> mlflow.MlflowClient:
    """A client of the project's own store, tracking and registry both (a registry URI another
    test left in the process would otherwise answer for the registry)."""
    uri = f"sqlite:///{project / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def runs(project: Path, trials: bool = False) -> list:
    """Pipeline runs (or, with ``trials``, the sweep's nested trial runs), oldest first."""
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    found = mlflow.search_runs(
        experiment_names=["direct2event"], output_format="list", order_by=["start_time ASC"]
    )
    return [r for r in found if ("mlflow.parentRunId" in r.data.tags) == trials]


def test_kedro_run_tracks_everything_and_failed_runs_keep_previous_outputs(project: Path) -> None:
    done = run(project, "digits.shift.enabled=true")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary_path = project / "data/08_reporting/digits/summary.json"
    summary = json.loads(summary_path.read_text())
    assert summary["dataset"] == "digits" and 0.5 < summary["direct"]["accuracy"] <= 1
    assert [r["variant"] for r in summary["ablation"]] == ["finetune_lambda"]
    assert "taken from the sweep's trial" in done.stdout + done.stderr  # not trained twice

    (first,) = runs(project)
    assert first.info.status == "FINISHED"
    assert first.data.tags["dataset"] == "digits"
    # every parameter, flattened, under the same names for every dataset
    assert first.data.params["training.lr"] == "0.01"
    # the lambda E was fine-tuned with; the configured one under its parameter's name
    assert first.data.params["transfer.finetune.rate_lambda"] == "5.0"
    assert float(first.data.params["rate_lambda"]) == summary["rate_lambda"]
    assert first.data.params["tuning.chosen_by"] == summary["tuning"]["chosen_by"]
    met = summary["tuning"]["validation_floor_met"]
    assert first.data.metrics["tuning.validation_floor_met"] == float(met)
    experiment = mlflow.get_experiment(first.info.experiment_id)
    assert "saved view **Results**" in experiment.tags["mlflow.note.content"]
    assert first.data.params["seed"] == "0" and first.data.params["dataset"] == "digits"
    client = store(project)
    history = client.get_metric_history(first.info.run_id, "direct.val_accuracy")
    assert [m.step for m in history] == [1, 2, 3]  # the tiny project trains D 3 epochs
    assert first.data.metrics["headline.direct_accuracy"] == round(summary["direct"]["accuracy"], 4)
    assert len(first.data.metrics) <= 80  # a run's metrics: the headline first, nothing repeated
    artifacts = {
        a.path
        for d in ("models", "plots", "reports")
        for a in client.list_artifacts(first.info.run_id, d)
    }
    # D and E are stored once in MLflow: as the registered models, not also as pickles
    assert "models/direct_model.pkl" not in artifacts and "models/scaled_model.pkl" in artifacts
    assert {
        "plots/direct_training_curve.png",
        "plots/calibration_curves.png",
    } <= artifacts
    assert "reports/summary.json" in artifacts
    # the shift benchmark: its report on disk and in MLflow, its plots, dataset-neutral metrics
    shift = json.loads((project / "data/08_reporting/digits/shift.json").read_text())
    assert shift["enabled"] and len(shift["rows"]) == 21
    assert {"reports/shift.json", "plots/shift.png", "plots/shift_energy.png"} <= artifacts
    assert "plots/stream_curve.png" in artifacts
    assert len([m for m in first.data.metrics if m.startswith("shift.")]) <= 10
    assert "shift.modulation.recovered_fraction" in first.data.metrics
    tables = {a.path for a in client.list_artifacts(first.info.run_id, "tables")}
    assert tables == {"tables/ablation.json", "tables/shift.json"}  # the rows, as tables
    table = json.loads(
        Path(client.download_artifacts(first.info.run_id, "tables/shift.json")).read_text()
    )
    assert len(table["data"]) == len(shift["rows"]) == 21
    model_versions = project / "data/06_models/digits/direct_model.pkl"
    assert len(list(model_versions.iterdir())) == 1

    # the sweep: nested MLflow runs, one per trial, and the chosen lambda in the summary
    trials = [
        r
        for r in runs(project, trials=True)
        if r.data.tags["mlflow.parentRunId"] == first.info.run_id
    ]
    tuning = summary["tuning"]
    assert len(trials) == tuning["n_complete"] + tuning["n_stopped"] == 2
    assert {float(t.data.params["rate_lambda"]) for t in trials} >= {summary["rate_lambda"]}
    for t in trials:  # opened when the trial started, epochs streamed while it ran
        assert t.info.status == "FINISHED"
        assert (t.info.end_time - t.info.start_time) / 1000 >= t.data.metrics["trial_seconds"]
        if t.data.tags["state"] == "PRUNED":  # stopped at a check: the reason and the check
            assert t.data.tags["stopped_reason"] and "check.accuracy_retention" in t.data.metrics
            continue
        assert t.data.tags["state"] == "COMPLETE"
        assert "val_accuracy" in t.data.metrics and "energy_nJ" in t.data.metrics
        steps = client.get_metric_history(t.info.run_id, "finetune.train_loss")
        assert [m.step for m in steps] == [1]  # one fine-tuning epoch in these settings
    storage = f"sqlite:///{project / 'data/07_model_output/optuna.db'}"
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    assert study.metric_names == ["val_accuracy", "energy_nJ"]
    assert study.user_attrs["dataset"] == "digits" and study.user_attrs["setup"]["seed"] == 0
    assert "plots/tuning.png" in artifacts  # the Pareto-front plot
    assert first.data.metrics["headline.rate_lambda"] == summary["rate_lambda"]

    # the pretrained-SNN database: D and E registered with their figures as tags
    direct_v = client.get_model_version("digits-direct", "1")
    event_v = client.get_model_version("digits-event", "1")
    assert float(direct_v.tags["accuracy"]) == pytest.approx(summary["direct"]["accuracy"])
    assert float(event_v.tags["energy_nJ"]) == pytest.approx(summary["event"]["energy_nJ"])
    assert float(event_v.tags["rate_lambda"]) == summary["rate_lambda"]
    assert direct_v.tags["timesteps"] == "4" and direct_v.tags["code_version"]
    assert (
        f"{summary['rate_lambda']:g}" in event_v.description and "Network E" in event_v.description
    )
    model_info = mlflow.models.get_model_info("models:/digits-event/1")
    assert model_info.signature.inputs is None  # the model checks its input itself
    assert model_info.metadata["input_shape"] == [1, 8, 8]  # raw images [batch, C, H, W]
    assert model_info.signature.outputs.inputs[0].shape == (-1, 10)  # class probabilities
    assert "Network E of digits" in client.get_registered_model("digits-event").description
    assert model_info.metadata["input_encoding"] == "rate" and model_info.metadata["timesteps"] == 4
    if summary["accuracy_retention"] >= 0.995:
        assert str(client.get_model_version_by_alias("digits-event", "champion").version) == "1"
    else:  # the registered model says why it has no champion
        why = client.get_registered_model("digits-event").tags["no_champion_because"]
        assert "test retention >= 0.995" in why and "0 pass the rule" in why

    # the dashboards open on the result
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    note = first.data.tags["mlflow.note.content"]  # the run's description: its headline
    for value in (
        f"D {summary['direct']['accuracy']:.2%}",
        f"E {summary['event']['accuracy']:.2%}",
        f"retention {summary['accuracy_retention']:.4f}",
        f"{summary['energy_reduction_by_model']['synops_45nm']:.2f}x (synops_45nm)",
        f"λ = {summary['rate_lambda']:g}",
        f"at most {summary['energy_reduction_ceiling']:.2f}x: E's input alone",
    ):
        assert value in note, (value, note)
    for model, reduction in summary["energy_reduction_by_model"].items():
        shown = first.data.metrics[f"headline.energy_reduction.{model}"]
        assert shown == pytest.approx(reduction, rel=5e-4)  # 4 significant figures
    view = json.loads(experiment.tags["mlflow.sharedViewState.results"])
    columns = json.loads(view["state"])["selectedColumns"]
    assert view["name"] == "Results" and "metrics.`headline.event_accuracy`" in columns
    assert "runner" not in first.data.tags and "run_id" not in first.data.tags
    assert not [m for m in first.data.metrics if m.startswith("node_seconds.")][1:]  # total only
    top = {a.path for a in client.list_artifacts(first.info.run_id)}
    assert {"summary.json", "tuning.png", "energy.png", "node_seconds.json"} <= top
    chosen = [t for t in client.search_runs([first.info.experiment_id], "tags.chosen = 'true'")]
    assert len(chosen) == 1 and chosen[0].data.tags["chosen_by_run"] == first.info.run_id
    assert chosen[0].data.tags["mlflow.runName"].endswith("-chosen")  # named in the runs table
    assert float(chosen[0].data.params["rate_lambda"]) == summary["rate_lambda"]
    assert study.user_attrs["chosen_trial"] == int(chosen[0].data.tags["trial_number"])
    assert str(client.get_model_version_by_alias("digits-direct", "champion").version) == "1"

    # started from the registered D: no training, the same evaluation numbers
    reused = run(project, "digits.source_model=models:/digits-direct/1")
    assert reused.returncode == 0, reused.stdout[-3000:] + reused.stderr[-3000:]
    assert "training skipped" in reused.stdout + reused.stderr
    again = json.loads(summary_path.read_text())
    for net in ("direct", "event"):
        for key in ("accuracy", "energy_nJ", "events_per_sample"):
            assert again[net][key] == summary[net][key], (net, key)
    assert "direct.train_loss" not in runs(project)[-1].data.metrics
    assert len(client.search_model_versions("name = 'digits-direct'")) == 1  # not registered again
    versions = client.search_model_versions("name = 'digits-event'")
    assert len(versions) == 2
    # champion: the lowest-energy E whose test retention reaches the floor (ties: the older)
    above = [v for v in versions if float(v.tags["accuracy_retention"]) >= 0.995]
    if above:
        best = min(above, key=lambda v: (float(v.tags["energy_nJ"]), int(v.version)))
        champion = client.get_model_version_by_alias("digits-event", "champion")
        assert str(champion.version) == str(best.version)

    # the comparison notebook runs top to bottom against these runs
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "notebooks/compare_runs.ipynb", as_version=4)
    (project / "notebooks").mkdir()
    env_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        NotebookClient(
            notebook, timeout=300, resources={"metadata": {"path": str(project / "notebooks")}}
        ).execute()
    finally:
        if env_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_uri
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2
    text = "".join(o.get("text", "") for o in outputs)
    assert "2 finished pipeline runs, 4 sweep trials" in text  # the reuse run is a new study
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "digits-event" in html and "digits-direct" in html

    # bad input stops before any node: a registry version that does not exist, a changed space
    for params, message in (
        ("digits.source_model=models:/digits-direct/9", "has no version 9"),
        ("digits.tuning.lambda_max=20.0", "lambda_min / lambda_max"),
        ("digits.tuning.storage=sqlite:////nonexistent-folder/optuna.db", "does not exist"),
    ):
        bad = run(project, params)
        out = bad.stdout + bad.stderr
        assert bad.returncode != 0 and message in out, out[-3000:]
        assert "Running node" not in out

    # a calibration split of 3 samples stops the run before training: no new model version,
    # the old summary kept
    before = summary_path.read_text()
    failed = run(project, "digits.data.calibration_fraction=0.002")
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "data.calibration_fraction = 0.002 leaves 3 calibration sample(s)" in out, out[-3000:]
    assert "Training network D" not in out
    assert summary_path.read_text() == before
    assert len(list(model_versions.iterdir())) == 2  # the two earlier runs' versions only
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


def test_runs_of_two_datasets_line_up_in_mlflow(project: Path) -> None:
    """MNIST (a small slice) and digits log the same parameter names and artifact paths, so
    MLflow's compare view lines them up; the dataset is a tag and the run name."""
    mnist = {
        "data": {"max_train": 600, "max_validation": 200, "max_test": 200},
        "model": {"channels": [8, 16], "hidden": 0},
        # one epoch on 600 images stays near chance: the quality gate is off for this check
        "training": {"epochs": 1, "progress": False, "min_accuracy_over_chance": 0},
        "transfer": {"finetune": {"epochs": 1}, "ablation": {"enabled": False}},
        "tuning": {"max_validation": 200},
        "shift": {"enabled": False},  # as in the tiny digits project
    }
    (project / "conf/local/parameters.yml").write_text(yaml.safe_dump({"mnist": mnist}))
    for key in ("digits", "mnist"):
        done = run(project, key=key)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    digits, mnist_run = runs(project)
    assert (digits.data.tags["dataset"], mnist_run.data.tags["dataset"]) == ("digits", "mnist")
    assert mnist_run.info.run_name == "mnist"
    assert set(digits.data.params) == set(mnist_run.data.params)
    assert digits.data.params["training.epochs"] == "3"  # each run's own values
    assert mnist_run.data.params["training.epochs"] == "1"
    client = store(project)

    def artifacts(run_id: str) -> set[str]:
        return {
            a.path
            for folder in ("models", "plots", "reports")
            for a in client.list_artifacts(run_id, folder)
        }

    assert artifacts(digits.info.run_id) == artifacts(mnist_run.info.run_id)
    assert "plots/ablation.png" in artifacts(digits.info.run_id)
    assert set(digits.data.metrics) == set(mnist_run.data.metrics)


def test_nir_graphs_are_written_registered_exported_and_read_back_as_d(project: Path) -> None:
    """Every run writes E's NIR graph beside the model (max-pooling included, as count + OR
    gate), logs it, attaches it to the registry version; with average pooling D's graph too
    (D's graded max-pool has no exact NIR form: the run says so and goes on); `export-nir`
    writes a registered version's graph; `source_model: nir:<path>` runs the pipeline from a
    NIR D, training skipped."""
    import nir

    from direct2event.snn.nir_io import from_nir

    first = run(project, "digits.tuning.enabled=false")  # max-pooling
    assert first.returncode == 0, first.stderr[-3000:]
    assert "No NIR graph of D for digits: network D max-pools" in first.stdout + first.stderr
    written = (project / "data/06_models/digits").rglob("*.nir/*/*.nir")
    [max_e] = [p.parent.parent.name for p in written]
    assert max_e == "event_model.nir"  # E only

    done = run(project, "digits.tuning.enabled=false,digits.model.pooling=avg")
    assert done.returncode == 0, done.stderr[-3000:]
    *_, e_file = sorted((project / "data/06_models/digits/event_model.nir").iterdir())  # newest
    [d_file] = (project / "data/06_models/digits/direct_model.nir").iterdir()  # avg: D too
    graph = nir.read(str(e_file / "event_model.nir"))
    assert graph.metadata["network"] == "E" and graph.metadata["timesteps"] == 4

    client = store(project)
    [version] = [
        v for v in client.search_model_versions("name = 'digits-event'") if str(v.version) == "2"
    ]
    assert version.tags["pooling"] == "avg"
    logged = [a.path for a in client.list_artifacts(version.run_id, "models")]
    assert "models/event_model.nir" in logged and "models/direct_model.nir" in logged
    files = mlflow.artifacts.download_artifacts(
        "models:/digits-event/2", dst_path=str(project / "m")
    )
    in_version = nir.read(str(Path(files) / "artifacts" / "digits-event.nir"))
    assert in_version.metadata["network"] == "E"

    cmd = [
        sys.executable,
        "-m",
        "direct2event",
        "export-nir",
        "models:/digits-event/2",
        str(project / "out.nir"),
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    exported = subprocess.run(
        cmd, cwd=project, capture_output=True, text=True, env=env, check=False
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    max_pooled = subprocess.run(
        [*cmd[:4], "models:/digits-event/1", str(project / "max.nir")],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert max_pooled.returncode == 0, max_pooled.stderr[-2000:]  # version 1 max-pools
    assert from_nir(project / "out.nir").mode == "binary"
    read = from_nir(project / "max.nir")
    assert "MaxPool2d" in [type(m).__name__ for m in read.layers]
    registered = registry.load("models:/digits-event/1")
    x = (torch.rand(4, 16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    with torch.no_grad():
        assert torch.equal(read(x), registered.eval()(x))

    from_graph = run(
        project,
        f"digits.tuning.enabled=false,digits.model.pooling=avg,"
        f"digits.source_model=nir:{d_file / 'direct_model.nir'}",
    )
    assert from_graph.returncode == 0, from_graph.stderr[-3000:]
    log = json.loads((project / "data/08_reporting/digits/direct_training_log.json").read_text())
    assert log == []  # D came from the graph: no training epoch
    summary = json.loads((project / "data/08_reporting/digits/summary.json").read_text())
    assert summary["direct"]["accuracy"] > 0.5 and summary["event"]["accuracy"] > 0.5
    missing = run(project, "digits.source_model=nir:nowhere.nir")
    assert missing.returncode != 0 and "no file nowhere.nir" in missing.stdout + missing.stderr
