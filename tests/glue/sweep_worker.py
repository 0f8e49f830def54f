"""A sweep worker process for the storage tests: the real trial (fine-tune E on digits, measure
it on the validation split) against a study in a shared storage; or, with ``toy``, a trial whose
result is a smooth function of lambda (no training), for the tests of the workers' bookkeeping
(a heartbeat every second, a grace period of 3 s).

    python tests/glue/sweep_worker.py <checkpoint dir> <storage url> <study name> <n_trials>
    python tests/glue/sweep_worker.py toy <storage url> <study name> <n_trials> [first lambdas]
"""

from __future__ import annotations

import logging
import math
import pickle
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests importable
from direct2event.data.splits import make_splits
from direct2event.data.static import load_digits
from direct2event.glue.sweep.config import StudyConfig
from direct2event.glue.sweep.study import run_study
from direct2event.pipelines.finetuning.trials import TrialRunner
from direct2event.snn.models import restore
from tests.pipelines.conftest import tiny


def toy_trial(lam: float, on_epoch: object = None, judge: object = None) -> dict[str, float]:
    """A trial measured at once: accuracy falls and energy with lambda, as a real trial's do."""
    energy = 1.0 / (1.0 + lam)
    return {
        "val_accuracy": 0.99 - 0.002 * math.log(lam),
        "energy_nJ": energy,
        "events_per_sample": energy * 1e3,
    }


def toy(url: str, name: str, n_trials: int, first: str = "") -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    lambdas = tuple(float(v) for v in first.split(",") if v)
    config = StudyConfig(
        storage=url, name=name, n_trials=n_trials, first_lambdas=lambdas, heartbeat_interval_s=1,
        grace_period_s=3,
    )  # fmt: skip
    run_study(config, toy_trial)


def main() -> None:
    if sys.argv[1] == "toy":
        toy(sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[5:6])
        return
    folder, url, name, n_trials = sys.argv[1:5]
    torch.set_num_threads(1)
    splits = make_splits(load_digits(), 0.05, 0.1, seed=0)
    saved = {
        k: pickle.loads((Path(folder) / f"{k}.pkl").read_bytes()) for k in ("scaled", "direct")
    }
    # the node tests' tiny digits settings (rate input at T = 4, one short fine-tuning)
    settings = tiny(transfer={"finetune": {"max_train": 400}}, training={"device": "cpu"})
    runner = TrialRunner(restore(saved["scaled"]), restore(saved["direct"]), splits, settings)
    config = StudyConfig(storage=url, name=name, n_trials=int(n_trials), first_lambdas=())
    run_study(config, runner.evaluate)


if __name__ == "__main__":
    main()
