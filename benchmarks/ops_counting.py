"""What counting events costs on top of the accuracy pass, and the two reductions that make it.

A sweep trial's checks and its result are measurements (``snn.evaluation.measure``): accuracy
plus events and synaptic operations counted by hooks on the same forward passes. This script
times, on the validation samples a trial uses and the threshold-scaled E a finished
``make run`` saved:

- ``evaluate`` (accuracy alone) against ``measure`` (accuracy and counts), median of ``--reps``;
- per layer, on one batch's real activity, the counting reductions as they were
  (``(x != 0).sum()`` per LIF output; messages summed over batch and channels, times the
  fan-out map) and as they are (spike sums; one matrix-vector product with the fan-out map),
  with their values, which must be equal.

    .venv/bin/kedro run          # once: the networks
    .venv/bin/python benchmarks/ops_counting.py --key mnist [--reps 5]

writes benchmarks/results/ops_counting-<key>/<machine>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from direct2event.glue.machine import result_path
from direct2event.glue.params import load_settings
from direct2event.pipelines.data_processing.nodes import prepare_data
from direct2event.snn.evaluation import measure
from direct2event.snn.models import restore
from direct2event.snn.neurons import LIF
from direct2event.snn.ops import conv_fanout
from direct2event.snn.training import encoded_batches, evaluate

ROOT = Path(__file__).resolve().parents[1]


def seconds(fn, reps: int) -> float:
    """Median wall time of ``fn()`` over ``reps`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", default="mnist")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    from profile_training import cpu_model, flags
    from sweep_cost import load_run

    params, (raw_data, scaled_model) = load_run(args.key, "raw_data", "scaled_model")
    settings = load_settings(args.key, dict(params.get(args.key) or {}), params["energy_profiles"])
    splits = prepare_data(raw_data, settings)
    val = splits.validation.head(settings.tuning.max_validation or len(splits.validation))
    net, device, coding = restore(scaled_model), settings.device, settings.event_coding
    passes = {
        "evaluate_s": seconds(
            lambda: evaluate(net, val, coding, device, seed=settings.seed), args.reps
        ),
        "measure_s": seconds(
            lambda: measure(net, val, coding, device, settings.profiles(), settings.seed), args.reps
        ),
    }
    # one batch's real activity: every synaptic layer's input and every LIF layer's output
    inputs = next(iter(encoded_batches(val, coding, device, None, settings.seed)))[1]
    seen: list[tuple[str, nn.Module, torch.Tensor]] = []
    handles = [
        m.register_forward_pre_hook(lambda m, i, n=n: seen.append((n, m, i[0].detach())))
        for n, m in net.named_modules()
        if isinstance(m, nn.Conv2d)
    ] + [
        m.register_forward_hook(lambda m, i, o, n=n: seen.append((n, m, o.detach())))
        for n, m in net.named_modules()
        if isinstance(m, LIF)
    ]
    with torch.no_grad():
        net.eval()(inputs)
    for h in handles:
        h.remove()
    layers = []
    for name, module, x in seen:
        if isinstance(module, LIF):
            before = lambda x=x: float((x != 0).sum())  # noqa: E731
            after = lambda x=x: float(x.sum(dim=0).double().sum())  # noqa: E731
        else:
            fan = conv_fanout(module, *x.shape[-2:])
            w = x.abs()
            before = lambda w=w, fan=fan: float((w.sum(dim=(0, 1)) * fan).sum())  # noqa: E731
            after = lambda w=w, fan=fan: float(  # noqa: E731
                (w.reshape(-1, fan.numel()) @ fan.reshape(-1)).double().sum()
            )
        layers.append(
            {
                "layer": name,
                "kind": type(module).__name__,
                "shape": list(x.shape),
                "before_ms": round(seconds(before, 20) * 1e3, 3),
                "after_ms": round(seconds(after, 20) * 1e3, 3),
                "value_before": before(),
                "value_after": after(),
            }
        )
    result = {
        "key": args.key,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores ({' '.join(flags())}), "
        f"torch {torch.__version__}, {platform.python_version()}",
        "validation_samples": len(val),
        **{k: round(v, 3) for k, v in passes.items()},
        "counting_over_accuracy_pass": round(passes["measure_s"] / passes["evaluate_s"], 2),
        "layers": layers,
        "reductions_before_ms": round(sum(r["before_ms"] for r in layers), 2),
        "reductions_after_ms": round(sum(r["after_ms"] for r in layers), 2),
        "equal": all(r["value_before"] == r["value_after"] for r in layers),
    }
    out = result_path(f"ops_counting-{args.key}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "layers"}, indent=1))


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
