"""What each lever of E's energy gives, on validation only: one fine-tuning per variant from a
finished run's threshold-scaled E at a fixed lambda, measured on the validation split under
every energy model.

    .venv/bin/kedro run --pipelines mnist          # once: the networks
    .venv/bin/python benchmarks/levers.py --key mnist --lambda 2 \\
        --variant rate= --variant energy=transfer.finetune.penalty=energy,transfer.energy_model=synops_45nm \\
        --variant thresholds=transfer.finetune.train_thresholds=true \\
        --variant longer=transfer.finetune.epochs=5

A variant is ``name=k=v,...`` over the dataset's parameters (the baseline: none). Every variant
starts from the same E with the same seed and batches; the sweep is not run (``--lambda``).
Writes ``benchmarks/results/levers-<key>/<machine>.json``: per variant the validation
accuracy, retention against D, events per sample and reduction under every energy model, with
the input's ceiling, and the fine-tuning's seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sweep_cost import deep_set, load_run, parse_overrides  # noqa: E402

from direct2event.glue.machine import machine_name, result_path, torch_build  # noqa: E402
from direct2event.glue.params import load_settings  # noqa: E402
from direct2event.pipelines.data_processing.nodes import prepare_data  # noqa: E402
from direct2event.snn.evaluation import measure  # noqa: E402
from direct2event.snn.finetuning import finetune_event_network  # noqa: E402
from direct2event.snn.models import restore  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", default="mnist")
    parser.add_argument("--lambda", dest="lam", type=float, default=2.0)
    parser.add_argument("--variant", action="append", default=[], help="name=k=v,...")
    args = parser.parse_args()
    params, (raw, direct_model, scaled_model) = load_run(
        args.key, "raw_data", "direct_model", "scaled_model"
    )
    base = dict(params.get(args.key) or {})
    deep_set(base, "training.progress", False)
    settings = load_settings(args.key, base, params["energy_profiles"])
    splits = prepare_data(raw, settings)
    val = splits.validation.head(settings.tuning.max_validation or len(splits.validation))
    profiles, device = settings.profiles(), settings.device
    direct = restore(direct_model)
    d = measure(direct, val, settings.direct_coding, device, profiles, settings.seed)
    rows = []
    for spec in args.variant or ["rate="]:
        name, _, text = spec.partition("=")
        raw_v = json.loads(json.dumps(base))
        for k, v in parse_overrides(text).items():
            deep_set(raw_v, k, v)
        s = load_settings(args.key, raw_v, params["energy_profiles"])
        start = time.perf_counter()
        event, _ = finetune_event_network(
            restore(scaled_model), direct, splits.train, s.finetune_config(args.lam), device
        )
        seconds = time.perf_counter() - start
        e = measure(event, val, s.event_coding, device, profiles, s.seed)
        rows.append(
            {
                "variant": name,
                "overrides": text,
                "val_accuracy": e["accuracy"],
                "retention": e["accuracy"] / d["accuracy"],
                "events_per_sample": e["events_per_sample"],
                "reduction_by_model": {
                    k: d["energy_nJ_by_model"][k] / v for k, v in e["energy_nJ_by_model"].items()
                },
                "ceiling_by_model": {
                    k: d["energy_nJ_by_model"][k] / v
                    for k, v in e["input_energy_nJ_by_model"].items()
                    if v > 0
                },
                "seconds": round(seconds, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    out = {
        "command": "python benchmarks/levers.py " + " ".join(sys.argv[1:]),
        "machine": machine_name(),
        "torch": torch_build(),
        "rate_lambda": args.lam,
        "validation_samples": len(val),
        "direct_val_accuracy": d["accuracy"],
        "variants": rows,
    }
    path = result_path(f"levers-{args.key}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
