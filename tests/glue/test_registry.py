"""The pretrained-SNN database in the MLflow Model Registry."""

from __future__ import annotations

import copy
from pathlib import Path

import mlflow
import pytest
import torch

from direct2event.glue import registry
from direct2event.glue.params import ModelParams
from direct2event.snn.encoders import InputCoding

DIGITS_MODEL = ModelParams(channels=[8, 16])


@pytest.fixture
def tracking(tmp_path: Path):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("registry-test", artifact_location=str(tmp_path / "art"))
    with mlflow.start_run(experiment_id=experiment):
        yield
    mlflow.set_tracking_uri(previous)


ANALOG4 = InputCoding("analog", 4)


def test_register_and_load_round_trip_weights_exactly(tracking, digits_direct_model) -> None:
    net = copy.deepcopy(digits_direct_model)
    tags = {**registry.architecture_tags(DIGITS_MODEL), "accuracy": 0.93, "energy_nJ": 0.01}
    uri = registry.register(net, "digits", "direct", tags, ANALOG4, 0, "Network D for digits.")
    assert uri == "models:/digits-direct/1"
    loaded = registry.load(uri)
    original = digits_direct_model.state_dict()
    assert loaded.state_dict().keys() == original.keys()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    x = torch.rand(4, 3, 1, 8, 8)
    assert torch.equal(loaded(x), digits_direct_model(x))
    version = mlflow.MlflowClient().get_model_version("digits-direct", "1")
    assert version.tags["accuracy"] == "0.93" and version.tags["channels"] == "[8, 16]"
    assert version.tags["timesteps"] == "4" and version.description == "Network D for digits."

    assert registry.check_source("latest", "digits", DIGITS_MODEL) == uri
    assert registry.check_source("models:/digits-direct/latest", "digits", DIGITS_MODEL) == uri
    assert registry.register(net, "digits", "direct", tags, ANALOG4, 0) == "models:/digits-direct/2"
    assert registry.check_source("latest", "digits", DIGITS_MODEL) == "models:/digits-direct/2"
    assert [r["version"] for r in registry.listing()] == [2, 1]


def test_missing_or_mismatched_models_are_refused(tracking, digits_direct_model) -> None:
    with pytest.raises(registry.RegistryError, match="No registered model 'digits-direct'"):
        registry.check_source("latest", "digits", DIGITS_MODEL)
    registry.register(
        copy.deepcopy(digits_direct_model),
        "digits",
        "direct",
        registry.architecture_tags(DIGITS_MODEL),
        ANALOG4,
        0,
    )
    with pytest.raises(registry.RegistryError, match="has no version 7"):
        registry.check_source("models:/digits-direct/7", "digits", DIGITS_MODEL)
    wider = ModelParams(channels=[16, 32], timesteps=8)
    with pytest.raises(registry.RegistryError, match=r"another architecture.*channels.*timesteps"):
        registry.check_source("models:/digits-direct/1", "digits", wider)
    with pytest.raises(registry.RegistryError, match="not a registry URI"):
        registry.check_source("runs:/abc/model", "digits", DIGITS_MODEL)


def test_champion_is_the_lowest_energy_version_above_the_floor(
    tracking, digits_direct_model
) -> None:
    net = copy.deepcopy(digits_direct_model)
    for retention, energy, accuracy in (
        (0.996, 0.020, 0.95),
        (0.990, 0.010, 0.97),
        (0.997, 0.015, 0.96),
    ):
        tags = {"accuracy_retention": retention, "energy_nJ": energy, "accuracy": accuracy}
        registry.register(net, "digits", "event", tags, ANALOG4, 0)
    assert registry.crown_champion("digits-event", 0.995) == "3"  # v2 is cheaper but below
    champion = mlflow.MlflowClient().get_model_version_by_alias("digits-event", "champion")
    assert str(champion.version) == "3"
    assert registry.crown_champion("digits-event", None) == "2"  # D's rule: the most accurate
    assert registry.crown_champion("digits-event", 0.999) is None


def test_a_version_that_misses_its_runs_target_is_never_champion(
    tracking, digits_direct_model
) -> None:
    """The cheapest version, tagged not eligible by its run (retention below the run's floor),
    is passed over, and it says why; a bare version (a registration cut short) is never used."""
    from direct2event.pipelines.reporting.nodes import champion_eligibility

    net = copy.deepcopy(digits_direct_model)
    ok = champion_eligibility(0.997, 0.996)
    missed = champion_eligibility(0.990, 0.996)
    assert ok == {registry.ELIGIBLE_TAG: "true"}
    assert missed[registry.ELIGIBLE_TAG] == "false"
    assert "0.99 is below this run's tuning.retention_floor 0.996" in missed[registry.WHY_NOT_TAG]
    # the sweep warned that no lambda kept the floor on validation: never champion, and why
    warned = champion_eligibility(0.997, 0.996, "most_accurate")
    assert warned[registry.ELIGIBLE_TAG] == "false"
    assert "no lambda kept retention_floor 0.996" in warned[registry.WHY_NOT_TAG]
    # the energy target chose lambda (an information, not a warning): the test retention decides
    assert champion_eligibility(0.997, 0.996, "energy_reduction_target") == ok
    base = {**registry.architecture_tags(DIGITS_MODEL), "accuracy": 0.9}
    registry.register(net, "digits", "event", base | ok | _e(0.997, 0.02), ANALOG4, 0)
    registry.register(net, "digits", "event", base | missed | _e(0.990, 0.01), ANALOG4, 0)
    # ... and a third one as a process killed inside MLflow's two-step registration left it
    client = mlflow.MlflowClient()
    source = client.get_model_version("digits-event", "1").source
    client.create_model_version("digits-event", source)  # no tags
    assert registry.crown_champion("digits-event", 0.98) == "1"
    assert registry.crown_champion("digits-event", None) == "1"
    assert registry.resolve("models:/digits-event/latest", "digits") == ("digits-event", "2")


def _e(retention: float, energy: float) -> dict[str, float]:
    return {"accuracy_retention": retention, "energy_nJ": energy}


def test_a_truncated_model_file_names_its_version_and_file(tracking, digits_direct_model) -> None:
    uri = registry.register(copy.deepcopy(digits_direct_model), "digits", "direct", {}, ANALOG4, 0)
    folder = Path(mlflow.artifacts.download_artifacts(uri))
    for data in folder.rglob("network.pt"):
        data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(registry.RegistryError) as err:
        registry.load(uri)
    assert "models:/digits-direct/1 cannot be loaded" in str(err.value)
    assert "damaged" in str(err.value)
