"""A sweep worker process for the storage tests: the real trial (fine-tune E on digits, measure
it on the validation split) against a study in a shared storage.

    python tests/glue/sweep_worker.py <checkpoint dir> <storage url> <study name> <n_trials>
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests importable
from direct2event.data.splits import make_splits
from direct2event.data.static import load_digits
from direct2event.glue import tuning
from direct2event.pipelines.finetuning.trials import trial_evaluator
from direct2event.snn.models import restore
from tests.pipelines.conftest import tiny


def main() -> None:
    folder, url, name, n_trials = sys.argv[1:5]
    torch.set_num_threads(1)
    splits = make_splits(load_digits(), 0.05, 0.1, seed=0)
    saved = {
        k: pickle.loads((Path(folder) / f"{k}.pkl").read_bytes()) for k in ("scaled", "direct")
    }
    # the node tests' tiny digits settings (rate input at T = 4, one short fine-tuning)
    settings = tiny(transfer={"finetune": {"max_train": 400}}, training={"device": "cpu"})
    evaluate = trial_evaluator(
        restore(saved["scaled"]), restore(saved["direct"]), splits, settings
    ).evaluate
    space = tuning.lambda_distribution(0.5, 50.0)
    tuning.run_study(url, name, space, evaluate, int(n_trials))


if __name__ == "__main__":
    main()
