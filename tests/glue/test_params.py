from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from direct2event.data.splits import make_splits
from direct2event.glue.masking import mask_credentials
from direct2event.glue.params import (
    DATASET_KEYS,
    ParameterError,
    PipelineParams,
    check_runtime_params,
    load_settings,
)

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"
PROFILES = yaml.safe_load((CONF / "parameters_energy.yml").read_text())["energy_profiles"]


def shipped(key: str) -> dict:
    return yaml.safe_load((CONF / f"parameters_{key}.yml").read_text())[key]


def validate_params(key: str, raw: dict, profiles: dict | None = None) -> PipelineParams:
    return load_settings(key, raw, PROFILES if profiles is None else profiles)


@pytest.mark.parametrize("key", DATASET_KEYS)
def test_every_shipped_parameter_file_is_valid(key: str) -> None:
    params = validate_params(key, shipped(key))
    assert params.dataset == key
    assert set(params.profiles()) == {"per_event", "synops_45nm", "memory_45nm"}


def test_defaults_live_in_one_place_and_files_hold_only_differences() -> None:
    """The mnist file holds only its energy target (a target depends on a dataset's input, so
    the default is none) and the fine-tuning its three-seed study chose (the library's defaults
    are the settings the other datasets were tuned from); no other file repeats a default
    value; every key a file sets changes something."""
    defaults = validate_params("mnist", {}).model_dump()
    assert shipped("mnist") == {
        "transfer": {
            "finetune": {"epochs": 5, "penalty": "energy", "penalty_model": "synops_45nm"}
        },
        "tuning": {"energy_reduction_target": 8.0},
    }
    assert defaults["tuning"]["energy_reduction_target"] is None

    def walk(raw: dict, base: dict, where: str) -> None:
        for key, value in raw.items():
            if isinstance(value, dict):
                walk(value, base[key], f"{where}.{key}")
            else:
                assert base[key] != value, f"{where}.{key} repeats the default {value!r}"

    for key in DATASET_KEYS:
        walk(shipped(key), defaults, key)
    digits = validate_params("digits", shipped("digits"))
    assert digits.training.epochs == 8 and digits.training.weight_decay == 1e-4  # file + default
    assert digits.direct_coding.encoding == "analog" and digits.event_coding.encoding == "rate"
    sim = validate_params("nmnist_sim", shipped("nmnist_sim"))
    assert (sim.direct_coding.encoding, sim.direct_coding.timesteps) == ("frames", 8)


def test_one_seed_and_masked_credentials_in_what_is_logged() -> None:
    url = "postgresql+psycopg2://alice:s3cr3t@db.example:5432/optuna"
    params = validate_params("digits", {"seed": 3, "tuning": {"storage": url}})
    logged = params.loggable()
    assert logged["seed"] == 3 and "data.seed" not in logged
    assert logged["tuning.storage"] == "postgresql+psycopg2://alice:***@db.example:5432/optuna"
    assert "s3cr3t" not in repr(logged)
    assert mask_credentials("sqlite:///data/x.db") == "sqlite:///data/x.db"
    with pytest.raises(ParameterError) as err:
        validate_params("digits", {"tuning": {"storage": url, "n_trials": -1}, "seed": "x"})
    assert "s3cr3t" not in str(err.value)


def test_study_name_follows_the_setup_but_not_the_display_settings() -> None:
    base = validate_params("digits", {})
    assert base.study_name.startswith("digits-") and len(base.study_name) == len("digits-") + 8
    assert validate_params("digits", {"training": {"progress": False}}).study_name == (
        base.study_name
    )
    assert validate_params("digits", {"seed": 1}).study_name != base.study_name
    assert validate_params("digits", {"tuning": {"study_name": "mine"}}).study_name == "mine"


def test_trials_may_run_part_of_a_pass_and_whole_passes_keep_their_study_name() -> None:
    """``tuning.trial_epochs`` takes a fraction of a pass (long passes: simulated N-MNIST); a
    whole number given as a float is the same setup (same study name) as the int; zero or a
    negative length is refused by name."""
    whole = {"transfer": {"finetune": {"epochs": 3}}}
    part = validate_params("digits", {**whole, "tuning": {"trial_epochs": 0.25}})
    assert part.trial_epochs == 0.25
    one = validate_params("digits", {**whole, "tuning": {"trial_epochs": 1}})
    one_f = validate_params("digits", {**whole, "tuning": {"trial_epochs": 1.0}})
    assert one.trial_epochs == 1 and isinstance(one_f.trial_epochs, int)
    assert one.study_name == one_f.study_name != part.study_name
    # longer than the fine-tuning, or None: every trial runs it all
    assert validate_params("digits", {**whole, "tuning": {"trial_epochs": 7.5}}).trial_epochs == 3
    for bad in (0, -0.5):
        with pytest.raises(ParameterError, match="digits.tuning.trial_epochs"):
            validate_params("digits", {"tuning": {"trial_epochs": bad}})


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
        (("tuning", "grace_period_s"), 30, "must exceed tuning.heartbeat_interval_s (30)"),
        (("model", "pooling"), "min", "model.pooling"),
    ],
)
def test_bad_parameters_name_key_and_allowed_values(
    path: tuple, value: object, message: str
) -> None:
    raw: dict = copy.deepcopy(shipped("mnist"))
    node = raw
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    with pytest.raises(ParameterError, match="parameters_mnist.yml") as err:
        validate_params("mnist", raw)
    assert message in str(err.value)


def test_average_pooling_is_offered_for_convnet_and_vgg_only() -> None:
    assert validate_params("mnist", {"model": {"pooling": "avg"}}).model.pooling == "avg"
    with pytest.raises(ParameterError, match="offered for convnet and vgg"):
        validate_params("mnist", {"model": {"pooling": "avg", "arch": "resnet"}})


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


def test_the_event_cap_is_for_event_data_and_names_its_own_study() -> None:
    with pytest.raises(ParameterError, match="max_events_per_bin caps event frames"):
        validate_params("digits", {"data": {"max_events_per_bin": 1}})
    raw = copy.deepcopy(shipped("nmnist_sim"))
    assert validate_params("nmnist_sim", raw).data.max_events_per_bin == 1  # shipped: binary
    raw["data"] = {}
    counts = validate_params("nmnist_sim", raw)
    raw["data"] = {"max_events_per_bin": 0}
    with pytest.raises(ParameterError, match="max_events_per_bin"):
        validate_params("nmnist_sim", raw)
    raw["data"] = {"max_events_per_bin": 1}
    binary = validate_params("nmnist_sim", raw)
    assert binary.data.max_events_per_bin == 1 and counts.data.max_events_per_bin is None
    assert binary.study_name != counts.study_name  # other input, other trials
    # unset, it leaves the fingerprint (and the study names) of before the cap existed
    assert "max_events_per_bin" not in counts.setup_fingerprint()["data"]


def test_unknown_energy_model_or_bad_profile() -> None:
    with pytest.raises(ParameterError, match="not a profile.*per_event"):
        validate_params("mnist", {"transfer": {"energy_model": "loihi2"}})
    broken = {**PROFILES, "mine": {"kind": "per_event"}}
    with pytest.raises(ParameterError, match=r"missing \['e_event_pj'\]"):
        validate_params("mnist", {}, broken)


def test_namespace_and_dataset_must_agree() -> None:
    with pytest.raises(ParameterError, match="it must be 'digits'"):
        validate_params("digits", {"dataset": "mnist"})


def test_gpu_check_reads_the_mnist_pipelines_effective_parameters() -> None:
    """benchmarks/gpu_check.py runs where only torch, numpy and PyYAML are: it reads a dump of
    the MNIST parameters, which must equal what the pipeline would use."""
    dumped = yaml.safe_load((CONF.parents[1] / "benchmarks/mnist_params.yml").read_text())
    effective = validate_params("mnist", shipped("mnist")).model_dump(exclude={"energy_profiles"})
    assert dumped == effective, (
        "regenerate: python -m direct2event params mnist > benchmarks/mnist_params.yml"
    )


# Property tests over the parameter schema (hypothesis): what passes validation runs or stops with
# a named error; what fails validation names the key and never reaches a node.

_ENERGY = PROFILES

# (section path, a strategy of values the schema must refuse there)
_INVALID = [
    (("training", "lr"), st.floats(max_value=0.0, allow_nan=False)),
    (("training", "epochs"), st.integers(max_value=0)),
    (("training", "batch_size"), st.integers(max_value=0)),
    (
        ("data", "calibration_fraction"),
        st.one_of(st.floats(max_value=0.0), st.floats(min_value=0.5)),
    ),
    (("data", "validation_fraction"), st.floats(min_value=0.5, allow_infinity=False)),
    (("transfer", "timesteps"), st.integers(min_value=257)),
    (
        ("transfer", "input_encoding"),
        st.text(min_size=1).filter(
            lambda s: s not in ("rate", "regular", "ttfs", "analog", "frames")
        ),
    ),
    (("tuning", "retention_floor"), st.floats(min_value=1.0001, allow_infinity=False)),
    (("model", "beta"), st.floats(min_value=1.0001, allow_infinity=False)),
    (("transfer", "finetune", "warmup_epochs"), st.integers(max_value=-1)),
]


def _nested(path: tuple[str, ...], value: object) -> dict:
    out: dict = {path[-1]: value}
    for key in reversed(path[:-1]):
        out = {key: out}
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(range(len(_INVALID))).flatmap(
        lambda i: st.tuples(st.just(_INVALID[i][0]), _INVALID[i][1])
    )
)
def test_invalid_values_are_refused_naming_the_key(case: tuple) -> None:
    path, value = case
    with pytest.raises(ParameterError) as err:
        load_settings("digits", _nested(path, value), _ENERGY)
    assert f"digits.{'.'.join(path)}" in str(err.value)


@settings(
    max_examples=4,
    deadline=None,
    phases=(Phase.generate,),  # each example is a whole pipeline run: no shrinking
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    calibration=st.sampled_from([0.0005, 0.005, 0.05]),
    timesteps=st.sampled_from([1, 2, 4]),
    encoding=st.sampled_from(["rate", "regular", "ttfs", "analog"]),
    warmup=st.integers(0, 1),
)
def test_valid_small_configurations_run_or_stop_with_a_named_error(
    tmp_path_factory: pytest.TempPathFactory,
    calibration: float,
    timesteps: int,
    encoding: str,
    warmup: int,
) -> None:
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.runner import SequentialRunner

    from direct2event.data.static import load_digits
    from direct2event.glue.datasets import ReportDataset
    from direct2event.pipeline_registry import create_dataset_pipeline

    storage = tmp_path_factory.mktemp("optuna") / "optuna.db"
    raw = {
        "data": {"calibration_fraction": calibration, "max_validation": 100, "max_test": 200},
        "model": {"channels": [4], "hidden": 0, "timesteps": 2},
        # one epoch of a 4-channel net is about wiring, not quality: the gate is tested elsewhere
        "training": {
            "epochs": 1,
            "batch_size": 128,
            "shift_augment": 0,
            "progress": False,
            "min_accuracy_over_chance": 0,
        },
        "transfer": {
            "input_encoding": encoding,
            "timesteps": timesteps,
            "finetune": {"epochs": 1, "warmup_epochs": warmup, "max_train": 200},
        },
        "tuning": {"n_trials": 1, "first_lambdas": [2.0], "storage": f"sqlite:///{storage}"},
        "register_models": False,
    }
    params = load_settings("digits", raw, _ENERGY)  # valid: it must not raise here
    data = load_digits()
    too_small = round(calibration * len(data.train)) < 16
    summary_path = tmp_path_factory.mktemp("summary") / "summary.json"
    catalog = DataCatalog(
        {
            "raw_data": MemoryDataset(data),
            "settings": MemoryDataset(params),
            # kept after the run, in its real format
            "summary": ReportDataset(filepath=str(summary_path), report="Summary"),
        }
    )
    if too_small:  # stopped by the first node, before any training, naming the parameter
        with pytest.raises(Exception, match="data.calibration_fraction"):
            SequentialRunner().run(create_dataset_pipeline(), catalog)
        return
    make_splits(data, calibration, 0.1, 0)  # the splits this run uses are sound
    SequentialRunner().run(create_dataset_pipeline(), catalog)
    summary = catalog.load("summary")
    assert summary.event_timesteps == timesteps and summary.input_encoding == encoding
    assert 0 < summary.event.accuracy <= 1 and summary.energy_reduction > 0


def test_command_line_parameters_must_start_with_a_parameter_name() -> None:
    check_runtime_params(
        ["mnist.tuning.n_trials", "nmnist_sim.seed", "seed_folder", "energy_profiles"]
    )
    with pytest.raises(
        ValueError, match=r"--params trial_epochs, tuning: no such parameter"
    ) as err:
        check_runtime_params(["tuning.n_trials", "trial_epochs", "mnist.seed"])
    assert "mnist.tuning.n_trials=6" in str(err.value) and "nmnist_sim" in str(err.value)


# --- one home per default -----------------------------------------------------------------

SHARED_DEFAULTS = [  # (parameter model, its field, library dataclass, its field)
    *[
        ("EarlyStopParams", f, "EarlyStop", g)
        for f, g in [
            ("check_at", "at"),
            ("slack", "slack"),
            ("slack_sd", "slack_sd"),
            ("events_tolerance", "events_tolerance"),
        ]
    ],
    *[
        ("TuningParams", f, "StudyConfig", f)
        for f in (
            "n_trials",
            "timeout_s",
            "lambda_min",
            "lambda_max",
            "first_lambdas",
            "storage",
            "heartbeat_interval_s",
            "grace_period_s",
        )
    ],
    *[
        ("TuningParams", f, "ChoiceConfig", f)
        for f in (
            "retention_floor",
            "retention_margin",
            "completions",
            "tie_standard_errors",
            "energy_reduction_target",
        )
    ],
    *[
        ("FinetuneParams", f, "FinetuneConfig", f)
        for f in ("distill", "alpha", "temperature", "max_train", "train_thresholds")
    ],
    *[("FinetuneParams", f, "FitConfig", f) for f in ("optimizer", "weight_decay")],
    *[("TrainingParams", f, "FitConfig", f) for f in ("optimizer", "schedule", "bf16", "progress")],
    *[("ThresholdParams", f, "ThresholdConfig", f) for f in ("method", "percentile", "iterations")],
    *[("AdaptationParams", f, "AdaptationConfig", f) for f in ("momentum", "step", "max_gain")],
    *[("StreamParams", f, "StreamConfig", f) for f in ("checkpoint_every", "window", "tolerance")],
]


def test_every_shared_default_is_the_librarys() -> None:
    """A knob the library and the parameter files share has one default, the library
    dataclass's; the parameter models read it from there (and would fail this if they did
    not)."""
    import dataclasses

    from direct2event.glue import params
    from direct2event.glue.sweep.config import ChoiceConfig, StudyConfig
    from direct2event.glue.sweep.early_stop import EarlyStop
    from direct2event.snn.adaptation import AdaptationConfig, StreamConfig
    from direct2event.snn.finetuning import FinetuneConfig
    from direct2event.snn.thresholds import ThresholdConfig
    from direct2event.snn.training import FitConfig

    library = {c.__name__: c for c in (ChoiceConfig, StudyConfig, EarlyStop, AdaptationConfig,
                                       StreamConfig, FinetuneConfig, ThresholdConfig, FitConfig)}  # fmt: skip
    for model_name, field, owner_name, attr in SHARED_DEFAULTS:
        model = getattr(params, model_name)
        pydantic_default = model.model_fields[field].get_default(call_default_factory=True)
        (dc_field,) = [f for f in dataclasses.fields(library[owner_name]) if f.name == attr]
        library_default = (
            dc_field.default
            if dc_field.default is not dataclasses.MISSING
            else dc_field.default_factory()
        )
        if isinstance(library_default, tuple):
            library_default = list(library_default)
        assert pydantic_default == library_default, (model_name, field, owner_name, attr)


def test_validating_parameters_imports_no_optuna_mlflow_or_sqlalchemy() -> None:
    """Checking a parameter file is cheap: it loads none of the tracking and storage stack."""
    import subprocess
    import sys

    script = (
        "import sys, yaml\n"
        "from direct2event.glue.params import load_settings\n"
        "energy = yaml.safe_load(open('conf/base/parameters_energy.yml'))['energy_profiles']\n"
        "for key in ('mnist', 'nmnist_sim', 'digits'):\n"
        "    raw = yaml.safe_load(open(f'conf/base/parameters_{key}.yml'))[key]\n"
        "    load_settings(key, raw, energy).sweep_config()\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'optuna', 'mlflow', 'sqlalchemy', 'kedro'})\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_the_energy_penalty_prices_by_its_own_model_or_the_runs() -> None:
    energy = PROFILES
    priced = load_settings(
        "mnist",
        {"transfer": {"finetune": {"penalty": "energy", "penalty_model": "synops_45nm"}}},
        energy,
    )
    assert priced.finetune_config(2.0).price == priced.profiles()["synops_45nm"]
    own = load_settings("mnist", {"transfer": {"finetune": {"penalty": "energy"}}}, energy)
    assert own.finetune_config(2.0).price == own.profiles()["per_event"]  # energy_model's
    assert load_settings("mnist", {}, energy).finetune_config(2.0).price is None  # rate
    with pytest.raises(ParameterError, match="penalty_model is 'loihi'"):
        load_settings("mnist", {"transfer": {"finetune": {"penalty_model": "loihi"}}}, energy)
