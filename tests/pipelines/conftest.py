"""Fixtures of the node tests: small real data (digits), tiny settings, the stages' outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from direct2event.data.splits import DataSplits
from direct2event.glue.params import PipelineParams, load_settings
from direct2event.glue.reports import TuningReport
from direct2event.snn.models import checkpoint

ROOT = Path(__file__).resolve().parents[2]
NO_LOGITS: dict[str, Any] = {"logits": None}  # no shared D logits: each fine-tuning makes its own
PROFILES = yaml.safe_load((ROOT / "conf/base/parameters_energy.yml").read_text())["energy_profiles"]


def tiny(**overrides: Any) -> PipelineParams:
    """Digits settings matching the session's network D (8/16 channels, T = 4, analog input),
    E on rate input at T = 4, one short fine-tuning; ``overrides`` are merged section-wise."""
    raw: dict[str, Any] = {
        "data": {"calibration_fraction": 0.05, "max_validation": None},
        "model": {"channels": [8, 16], "hidden": 0, "timesteps": 4},
        "training": {"epochs": 2, "lr": 1e-2, "batch_size": 64, "shift_augment": 0},
        "transfer": {
            "input_encoding": "rate",
            "timesteps": 4,
            "finetune": {
                "epochs": 1,
                "lr": 2e-3,
                "batch_size": 64,
                "distill": False,
                "train_thresholds": False,
            },
        },
        "tuning": {"enabled": False},
    }
    raw["training"]["progress"] = False
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            for key, value in values.items():
                if isinstance(value, dict):
                    raw[section].setdefault(key, {}).update(value)
                else:
                    raw[section][key] = value
        else:
            raw[section] = values
    return load_settings("digits", raw, PROFILES)


@pytest.fixture(scope="session")
def settings() -> PipelineParams:
    return tiny()


@pytest.fixture(scope="session")
def direct_model(digits_direct_model) -> dict[str, Any]:
    """The session's network D as the pipeline saves it."""
    return checkpoint(digits_direct_model)


@pytest.fixture(scope="session")
def calibration(direct_model, digits_splits: DataSplits, settings) -> dict[str, Any]:
    from direct2event.pipelines.conversion.nodes import calibrate_surrogate

    return calibrate_surrogate(direct_model, digits_splits, settings)[0]


@pytest.fixture(scope="session")
def scaled(direct_model, calibration, digits_splits: DataSplits, settings) -> tuple:
    """``(scaled_model, threshold_report)`` of the threshold-scaling node."""
    from direct2event.pipelines.conversion.nodes import scale_event_thresholds

    model, report, _ = scale_event_thresholds(direct_model, calibration, digits_splits, settings)
    return model, report


@pytest.fixture(scope="session")
def measured(scaled, direct_model, digits_splits: DataSplits, settings) -> tuple:
    """``(evaluation, ablation)`` of the evaluation nodes at lambda 5, for the report's tests."""
    from direct2event.pipelines.evaluation.nodes import evaluate_transfer, run_ablation
    from direct2event.pipelines.finetuning.nodes import finetune_lambda0

    evaluation = evaluate_transfer(direct_model, scaled[0], digits_splits, settings)
    lambda0 = finetune_lambda0(scaled[0], direct_model, digits_splits, settings, NO_LOGITS)
    ablation = run_ablation(
        direct_model,
        scaled[0],
        evaluation,
        digits_splits,
        settings,
        TuningReport(rate_lambda=5.0, enabled=False),
        NO_LOGITS,
        lambda0,
    )
    return evaluation, ablation


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures made by a test are closed after it (pyplot keeps them open otherwise)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
