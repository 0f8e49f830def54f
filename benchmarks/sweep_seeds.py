"""The sweep and the final fine-tuning rerun on the saved networks of several seeds, under other
tuning settings: what a sweep setting changes in E (test retention, energy reduction, chosen λ)
and what it costs, without training D again (on simulated N-MNIST D is a third of a seed).

For each seed it loads that seed's D and threshold-scaled E (``seed_folder=/seed_<s>``, as
``python -m direct2event seeds`` saved them), then runs the pipeline's own nodes: the data split,
D's logits, the lambda = 0 warm-up, the sweep (``tune_rate_lambda``, in a new study in a
temporary SQLite storage), the final fine-tuning (``finetune_event_model``, which takes the
sweep's network) and the test evaluation (``evaluate_transfer``), timing each.

    .venv/bin/python benchmarks/sweep_seeds.py --key nmnist_sim --seeds 0 1 2 \\
        --params tuning.n_trials=6,tuning.trial_epochs=0.25 --out <file>.json

(``--name binary``: the seeds of ``python -m direct2event seeds --name binary``.)

Writes one row per seed (chosen λ, trials complete / stopped / taken on, D and E test accuracy,
retention, ``per_event`` reduction, node seconds) and their mean, std and worst.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from sweep_cost import ROOT, deep_set, load_run, machine, parse_overrides

from direct2event.glue.params import load_settings
from direct2event.pipelines.data_processing.nodes import prepare_data
from direct2event.pipelines.evaluation.nodes import evaluate_transfer
from direct2event.pipelines.finetuning.nodes import (
    finetune_event_model,
    finetune_lambda0,
    predict_direct_logits,
    tune_rate_lambda,
)


def run_seed(key: str, seed: int, overrides: dict, name: str = "") -> dict:
    """The sweep stage of one seed's saved run under ``overrides`` (``name``: the seeds
    study's variant folder); its results and seconds."""
    folder = f"/{name}/seed_{seed}" if name else f"/seed_{seed}"
    params, (raw_data, direct, scaled) = load_run(
        key, "raw_data", "direct_model", "scaled_model", seed_folder=folder
    )
    raw = dict(params.get(key) or {})
    storage = Path(tempfile.mkdtemp(prefix="d2e-seeds-")) / "optuna.db"
    for k, v in {
        **overrides,
        "seed": seed,
        "tuning.storage": f"sqlite:///{storage}",
        "training.progress": False,
    }.items():
        deep_set(raw, k, v)
    settings = load_settings(key, raw, params.get("energy_profiles", {}))
    seconds: dict[str, float] = {}

    def timed(name: str, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        seconds[name] = round(time.perf_counter() - t, 1)
        return out

    splits = prepare_data(raw_data, settings)
    logits = timed("direct_logits", predict_direct_logits, direct, splits, settings)
    lambda0 = timed("warmup", finetune_lambda0, scaled, direct, splits, settings, logits)
    report, _, reuse = timed(
        "sweep", tune_rate_lambda, scaled, direct, splits, settings, logits, lambda0
    )
    event, _ = timed(
        "finetune",
        finetune_event_model,
        scaled,
        direct,
        splits,
        settings,
        report,
        reuse,
        logits,
        lambda0,
    )
    results = timed("evaluation", evaluate_transfer, direct, event, splits, settings)
    energy_model = settings.transfer.energy_model
    d, e = results["direct"], results["event"]
    return {
        "seed": seed,
        "rate_lambda": report.rate_lambda,
        "complete": report.n_trials,
        "stopped": len(report.stopped),
        "taken_on": [c.rate_lambda for c in report.completed],
        "floor_met": report.floor_met,
        "trials": [(t.rate_lambda, t.val_accuracy, t.energy_nJ) for t in report.trials],
        "direct_val_energy_nJ": report.direct_val_energy_nJ,
        "direct_accuracy": d["accuracy"],
        "event_accuracy": e["accuracy"],
        "accuracy_retention": e["accuracy"] / d["accuracy"],
        "energy_reduction": d["energy_nJ_by_model"][energy_model]
        / e["energy_nJ_by_model"][energy_model],
        "events_per_sample": e["events_per_sample"],
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", default="nmnist_sim")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--params", default="", help="k=v,... over the key's parameters")
    parser.add_argument("--name", default="", help="the seeds study's --name (its folder)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    overrides = parse_overrides(args.params)
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(args.key, seed, overrides, args.name))
        print(json.dumps(rows[-1]), flush=True)
    summary = {
        name: {
            "mean": statistics.fmean(r[name] for r in rows),
            "std": statistics.stdev(r[name] for r in rows) if len(rows) > 1 else 0.0,
            "worst": min(r[name] for r in rows),
        }
        for name in ("accuracy_retention", "energy_reduction")
    }
    result = {
        "key": args.key,
        "params": overrides,
        "machine": machine(),
        "seeds": rows,
        **summary,
    }
    out = Path(args.out)
    out = out if out.is_absolute() else ROOT / out
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
