"""What a λ sweep of N trials costs, set against one full fine-tuning of E, with early stopping.

Runs the pipeline's own sweep node (``finetuning.tune_rate_lambda``) on the networks a finished
``make run`` saved (the latest versions of D and the threshold-scaled E of ``--key``), in a new
study in a temporary SQLite storage, and one full fine-tuning at the chosen λ measured the same
way (the ``finetune_event_model`` node with the sweep's network not handed on, so it trains),
once before the sweep and once after it (their mean is the unit: the VM's speed drifts).

    .venv/bin/kedro run                      # once: the networks the sweep starts from
    .venv/bin/python benchmarks/sweep_cost.py --key mnist --trials 20 [--params k=v,...]

Writes ``benchmarks/results/sweep_cost-<key>.json`` (or ``--out``): the sweep's seconds (the
trials and the chosen ones taken on to the whole fine-tuning), the full fine-tuning's seconds and
their ratio, every trial (λ, state, seconds, where it stopped and why, its checks), the
completions, the chosen λ, and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from direct2event.glue.params import load_settings
from direct2event.glue.tuning import TuningReport
from direct2event.pipelines.data_processing.nodes import prepare_data
from direct2event.pipelines.finetuning.nodes import (
    finetune_event_model,
    predict_direct_logits,
    tune_rate_lambda,
)

ROOT = Path(__file__).resolve().parents[1]


def deep_set(raw: dict, dotted: str, value: object) -> None:
    *path, last = dotted.split(".")
    for key in path:
        raw = raw.setdefault(key, {})
    raw[last] = value


def load_run(key: str, *names: str) -> tuple[dict, list]:
    """The project's parameters and the latest saved ``<key>.<name>`` datasets of a finished run."""
    bootstrap_project(ROOT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with KedroSession.create(project_path=ROOT) as session:
            context = session.load_context()
            loaded = [context.catalog.load(f"{key}.{name}") for name in names]
            return context.config_loader["parameters"], loaded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", default="mnist")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--params", default="", help="k=v,... over the key's parameters")
    parser.add_argument("--out", help="default benchmarks/results/sweep_cost-<key>.json")
    args = parser.parse_args()
    from profile_training import cpu_model, flags

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
    for item in filter(None, args.params.split(",")):
        k, v = item.split("=", 1)
        overrides[k] = json.loads(v) if v[:1] in "[{0123456789-tf" else v
    for k, v in overrides.items():
        deep_set(raw, k, v)
    settings = load_settings(args.key, raw, params.get("energy_profiles", {}))
    splits = prepare_data(raw_data, settings)
    logits = predict_direct_logits(direct_model, splits, settings)

    def full_finetuning(rate_lambda: float) -> float:
        t = time.perf_counter()
        once = TuningReport(rate_lambda=rate_lambda, enabled=False)
        finetune_event_model(scaled_model, direct_model, splits, settings, once, {}, logits, {})
        return time.perf_counter() - t

    # one full fine-tuning before the sweep and one after it: this VM's speed drifts by 10-20 %
    # within minutes, so the sweep is set against their mean
    before_s = full_finetuning(settings.transfer.finetune.rate_lambda)
    t = time.perf_counter()
    report, _, _ = tune_rate_lambda(scaled_model, direct_model, splits, settings, logits, {})
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
        "machine": f"{cpu_model()}, {os.cpu_count()} cores ({' '.join(flags())}), "
        f"torch {torch.__version__}, {platform.python_version()}",
        "sweep_seconds": round(sweep_s, 1),
        "full_finetuning_seconds": round(full_s, 1),
        "full_finetuning_seconds_before_after": [round(before_s, 1), round(after_s, 1)],
        "sweep_over_full": round(sweep_s / full_s, 2),
        "complete": sum(t["state"] == "COMPLETE" for t in trials),
        "stopped": sum(t["state"] == "PRUNED" for t in trials),
        "trial_epochs": report.trial_epochs,
        "finetune_epochs": settings.transfer.finetune.epochs,
        "completed": [c.model_dump() for c in report.completed],
        "chosen_rate_lambda": report.rate_lambda,
        "floor_met": report.floor_met,
        "direct_val_accuracy": report.direct_val_accuracy,
        "trial_list": trials,
    }
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"sweep_cost-{args.key}.json")
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
