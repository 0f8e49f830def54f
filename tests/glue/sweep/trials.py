"""What the sweep's tests share: the lambda space, the worker script, a hand-made trial."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import create_trial

from direct2event.glue.sweep.config import PARAM
from direct2event.glue.sweep.storage import lambda_distribution

SPACE = lambda_distribution(0.5, 50.0)
WORKER = Path(__file__).parents[1] / "sweep_worker.py"


def trial(lam: float, acc: float, energy: float, number: int) -> optuna.trial.FrozenTrial:
    """A complete trial at ``lam`` with its two objective values."""
    t = create_trial(params={PARAM: lam}, distributions={PARAM: SPACE}, values=[acc, energy])
    t.number = number
    return t
