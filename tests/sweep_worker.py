"""A sweep worker process for the storage tests: the real trial (fine-tune E on digits, measure
it on the validation split) against a study in a shared storage.

    python tests/sweep_worker.py <checkpoint dir> <storage url> <study name> <n_trials>
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import torch

from direct2event import tuning
from direct2event.data.splits import make_splits
from direct2event.data.static import load_digits
from direct2event.params import load_settings
from direct2event.pipelines.finetuning.nodes import trial_evaluator
from direct2event.snn.models import restore

PROFILES = {"per_event": {"kind": "per_event", "e_event_pj": 1.0}}


def main() -> None:
    folder, url, name, n_trials = sys.argv[1:5]
    torch.set_num_threads(1)
    splits = make_splits(load_digits(), 0.05, 0.1, seed=0)
    saved = {
        k: pickle.loads((Path(folder) / f"{k}.pkl").read_bytes()) for k in ("scaled", "direct")
    }
    settings = load_settings(
        "digits",
        {
            "model": {"channels": [8, 16], "hidden": 0},
            "training": {"progress": False, "device": "cpu"},
            "transfer": {
                "input_encoding": "rate",
                "timesteps": 4,
                "finetune": {
                    "epochs": 1,
                    "lr": 2e-3,
                    "batch_size": 64,
                    "max_train": 400,
                    "distill": False,
                },
            },
            "tuning": {"max_validation": None},
        },
        PROFILES,
    )
    evaluate, _ = trial_evaluator(
        restore(saved["scaled"]), restore(saved["direct"]), splits, settings
    )
    space = tuning.lambda_distribution(0.5, 50.0)
    tuning.run_study(url, name, space, evaluate, int(n_trials))


if __name__ == "__main__":
    main()
