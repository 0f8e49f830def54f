"""What a λ sweep of N trials costs, set against one full fine-tuning of E, with early stopping.

Runs the pipeline's own sweep node (``finetuning.tune_rate_lambda``) on the networks a finished
``make run`` saved (the latest versions of D and the threshold-scaled E of ``--key``), in a new
study in a temporary SQLite storage, and one full fine-tuning at the chosen λ measured the same
way (the ``finetune_event_model`` node with the sweep's network not handed on, so it trains),
once before the sweep and once after it (their mean is the unit: the VM's speed drifts). Where
the fine-tuning starts from a lambda = 0 warm-up (simulated N-MNIST), the warm-up is trained
once first and shared by both, outside the ratio (a run trains it for its ablation row anyway).
A one-trial sweep of whole trials costs one full fine-tuning (the final node reuses it).

    .venv/bin/kedro run                      # once: the networks the sweep starts from
    .venv/bin/python benchmarks/sweep_cost.py --key mnist --trials 20 [--params k=v,...]
    .venv/bin/python benchmarks/sweep_cost.py --key nmnist_sim --trials 6 \
        --params tuning.trial_epochs=0.25

Writes ``benchmarks/results/sweep_cost-<key>/<machine>.json`` (or ``--out``): the sweep's seconds (the
trials and the chosen ones taken on to the whole fine-tuning), the full fine-tuning's seconds and
their ratio, every trial (λ, state, seconds, where it stopped and why, its checks), the
completions, the chosen λ, and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from direct2event.glue.machine import result_path
from direct2event.glue.params import load_settings
from direct2event.glue.reports import TuningReport
from direct2event.pipelines.data_processing.nodes import prepare_data
from direct2event.pipelines.finetuning.nodes import (
    finetune_event_model,
    finetune_lambda0,
    predict_direct_logits,
    tune_rate_lambda,
)

ROOT = Path(__file__).resolve().parents[1]


def deep_set(raw: dict, dotted: str, value: object) -> None:
    *path, last = dotted.split(".")
    for key in path:
        raw = raw.setdefault(key, {})
    raw[last] = value


def load_run(key: str, *names: str, **runtime_params: str) -> tuple[dict, list]:
    """The project's parameters and the latest saved ``<key>.<name>`` datasets of a finished run
    (``runtime_params``: e.g. ``seed_folder="/seed_1"`` for one seed of a seeds study)."""
    bootstrap_project(ROOT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with KedroSession.create(project_path=ROOT, runtime_params=runtime_params) as session:
            context = session.load_context()
            loaded = [context.catalog.load(f"{key}.{name}") for name in names]
            return context.config_loader["parameters"], loaded


def parse_overrides(text: str) -> dict[str, object]:
    """``k=v,...`` (dotted keys under the dataset's parameters; numbers, lists, booleans as JSON)."""
    overrides: dict[str, object] = {}
    for item in filter(None, re.split(r",(?![^\[]*\])", text)):  # not inside [...]
        k, v = item.split("=", 1)
        overrides[k] = json.loads(v) if v[:1] in "[{0123456789-tf" else v
    return overrides


def machine() -> str:
    """The CPU, its cores and flags, torch's build and Python's version, for a results file."""
    from profile_training import cpu_model, flags

    return (
        f"{cpu_model()}, {os.cpu_count()} cores ({' '.join(flags())}), "
        f"torch {torch.__version__}, {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", default="mnist")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--params", default="", help="k=v,... over the key's parameters")
    parser.add_argument("--out", help="default benchmarks/results/sweep_cost-<key>/<machine>.json")
    args = parser.parse_args()
    params, (raw_data, direct_model, scaled_model) = load_run(
        args.key, "raw_data", "direct_model", "scaled_model"
    )
    raw = dict(params.get(args.key) or {})
    storage = Path(tempfile.mkdtemp(prefix="d2e-sweep-")) / "optuna.db"
    overrides = {
        "tuning.n_trials": args.trials,
        "tuning.storage": f"sqlite:///{storage}",
        "tuning.study_name": f"{args.key}-cost-{time.time_ns()}",
        "training.progress": False,
    }
    overrides.update(parse_overrides(args.params))
    for k, v in overrides.items():
        deep_set(raw, k, v)
    settings = load_settings(args.key, raw, params.get("energy_profiles", {}))
    splits = prepare_data(raw_data, settings)
    logits = predict_direct_logits(direct_model, splits, settings)
    # the lambda = 0 warm-up every fine-tuning continues from (simulated N-MNIST): trained once,
    # shared by the sweep and the full fine-tunings, so outside the ratio
    t = time.perf_counter()
    warm = settings.transfer.finetune.warmup_epochs
    lambda0 = finetune_lambda0(scaled_model, direct_model, splits, settings, logits) if warm else {}
    warmup_s = time.perf_counter() - t

    def full_finetuning(rate_lambda: float) -> float:
        t = time.perf_counter()
        once = TuningReport(rate_lambda=rate_lambda, enabled=False)
        finetune_event_model(
            scaled_model, direct_model, splits, settings, once, {}, logits, lambda0
        )
        return time.perf_counter() - t

    # one full fine-tuning before the sweep and one after it: this VM's speed drifts by 10-20 %
    # within minutes, so the sweep is set against their mean
    before_s = full_finetuning(settings.transfer.finetune.rate_lambda)
    t = time.perf_counter()
    report, _, _ = tune_rate_lambda(scaled_model, direct_model, splits, settings, logits, lambda0)
    sweep_s = time.perf_counter() - t
    after_s = full_finetuning(report.rate_lambda)
    full_s = (before_s + after_s) / 2
    study = optuna.load_study(study_name=settings.study_name, storage=f"sqlite:///{storage}")
    trials = [
        {
            "number": t.number,
            "rate_lambda": t.params.get("rate_lambda"),
            "state": t.state.name,
            "seconds": t.user_attrs.get("trial_seconds"),
            "val_accuracy": t.values[0] if t.values else None,
            "accuracy_retention": t.user_attrs.get("accuracy_retention"),
            "events_per_sample": t.user_attrs.get("events_per_sample"),
            "stopped_reason": t.user_attrs.get("stopped_reason"),
            "checks": t.user_attrs.get("checks", []),
        }
        for t in study.get_trials()
    ]
    result = {
        "key": args.key,
        "trials": args.trials,
        "params": overrides,
        "machine": machine(),
        "sweep_seconds": round(sweep_s, 1),
        "full_finetuning_seconds": round(full_s, 1),
        "full_finetuning_seconds_before_after": [round(before_s, 1), round(after_s, 1)],
        "warmup_seconds": round(warmup_s, 1),
        "sweep_over_full": round(sweep_s / full_s, 2),
        "complete": sum(t["state"] == "COMPLETE" for t in trials),
        "stopped": sum(t["state"] == "PRUNED" for t in trials),
        "trial_epochs": report.trial_epochs,
        "finetune_epochs": settings.transfer.finetune.epochs,
        "completed": [c.model_dump() for c in report.completed],
        "trials_seconds": round(sum(t["seconds"] or 0 for t in trials), 1),
        "chosen_rate_lambda": report.rate_lambda,
        "floor_met": report.floor_met,
        "direct_val_accuracy": report.direct_val_accuracy,
        "trial_list": trials,
    }
    out = Path(args.out) if args.out else result_path(f"sweep_cost-{args.key}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "trial_list"}, indent=1))
    for t in trials:
        print(
            t["number"],
            t["state"],
            f"λ={t['rate_lambda']:.3g}",
            t["seconds"] and round(t["seconds"], 1),
            t["val_accuracy"],
            [
                (c["fraction"], round(c["accuracy_retention"], 4), round(c["events_per_sample"]))
                for c in t["checks"]
            ],
            t["stopped_reason"] or "",
        )


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
