from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from direct2event.params import (
    DATASET_KEYS,
    ParameterError,
    validate_energy_profiles,
    validate_params,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "base"


def shipped(key: str) -> dict:
    return yaml.safe_load((CONF / f"parameters_{key}.yml").read_text())[key]


@pytest.mark.parametrize("key", DATASET_KEYS)
def test_every_shipped_parameter_file_is_valid(key: str) -> None:
    params = validate_params(key, shipped(key))
    assert params.dataset == key
    profiles = yaml.safe_load((CONF / "parameters_energy.yml").read_text())["energy_profiles"]
    validate_energy_profiles(profiles, params.transfer.energy_model, key)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("model", "timesteps"), 0, "model.timesteps: Input should be greater than or equal to 1"),
        (("training", "lr"), -0.1, "training.lr: Input should be greater than 0"),
        (("model", "arch"), "transformer", "model.arch"),
        (("transfer", "finetune", "rate_lambda"), -1.0, "transfer.finetune.rate_lambda"),
        (("training", "device"), "tpu", "device must be 'auto'"),
        (("training", "epoch"), 3, "training.epoch: Extra inputs are not permitted"),
        (("transfer", "input_encoding"), "frames", "needs an event dataset"),
        (("tuning", "lambda_min"), 60.0, "must be below tuning.lambda_max"),
        (("tuning", "first_lambdas"), [0.1, 5.0], "[0.1] lie outside"),
        (("tuning", "retention_floor"), 1.2, "tuning.retention_floor"),
        (("tuning", "n_trials"), -1, "tuning.n_trials"),
    ],
)
def test_bad_parameters_name_key_and_allowed_values(
    path: tuple, value: object, message: str
) -> None:
    raw = copy.deepcopy(shipped("mnist"))
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ParameterError, match="parameters_mnist.yml") as err:
        validate_params("mnist", raw)
    assert message in str(err.value)


def test_event_dataset_needs_frames_and_dividing_timesteps() -> None:
    raw = copy.deepcopy(shipped("nmnist_sim"))
    raw["transfer"]["input_encoding"] = "rate"
    with pytest.raises(ParameterError, match="must be 'frames'"):
        validate_params("nmnist_sim", raw)
    raw = copy.deepcopy(shipped("nmnist_sim"))
    raw["model"]["timesteps"], raw["transfer"]["timesteps"] = 8, 3
    with pytest.raises(ParameterError, match="must divide model.timesteps"):
        validate_params("nmnist_sim", raw)
    raw["transfer"]["timesteps"] = 4  # E's steps each sum two of the eight bins
    assert validate_params("nmnist_sim", raw).transfer.timesteps == 4


def test_unknown_energy_model_or_bad_profile() -> None:
    profiles = yaml.safe_load((CONF / "parameters_energy.yml").read_text())["energy_profiles"]
    with pytest.raises(ParameterError, match="not a profile.*per_event"):
        validate_energy_profiles(profiles, "loihi2", "mnist")
    broken = {**profiles, "mine": {"kind": "per_event"}}
    with pytest.raises(ParameterError, match="e_event_pj > 0"):
        validate_energy_profiles(broken, "per_event", "mnist")


def test_namespace_and_dataset_must_agree() -> None:
    with pytest.raises(ParameterError, match="it must be 'digits'"):
        validate_params("digits", shipped("mnist"))
