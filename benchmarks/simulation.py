"""Simulated N-MNIST's data preparation: the saccade simulation and binning of MNIST digits.

Times ``simulate_frames`` of this tree on the first ``--digits`` MNIST training digits, and, with
``--baseline FILE``, the same function of another version of ``nmnist_sim.py`` (for example
``git show d9ba06b:src/direct2event/data/nmnist_sim.py > /tmp/nmnist_sim_before.py``), in
alternating rounds in one process so that both see the same machine. Before timing, both must
give the same frames and event counts to the bit; the run stops otherwise.

    .venv/bin/python benchmarks/simulation.py --digits 4096 --rounds 3 \\
        --baseline /tmp/nmnist_sim_before.py --out benchmarks/results/simulation-nmnist_sim/<machine>.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from sweep_cost import machine

from direct2event.data import nmnist_sim
from direct2event.data.static import load_mnist
from direct2event.glue.machine import result_path


def _module(path: str):
    spec = importlib.util.spec_from_file_location("nmnist_sim_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--digits", type=int, default=4096)
    parser.add_argument("--timesteps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="another nmnist_sim.py to time against this one")
    parser.add_argument("--out", default=str(result_path("simulation-nmnist_sim")))
    args = parser.parse_args()
    digits = load_mnist(None).train.x[: args.digits, 0]
    versions = {"this tree": nmnist_sim}
    if args.baseline:
        versions = {"baseline": _module(args.baseline), **versions}
    results = {name: [] for name in versions}
    outputs = {}
    for _ in range(args.rounds):
        for name, module in versions.items():
            start = time.perf_counter()
            out = module.simulate_frames(digits, args.timesteps, progress=False)
            results[name].append(time.perf_counter() - start)
            outputs.setdefault(name, out)
    frames, events = outputs["this tree"]
    if args.baseline:
        base_frames, base_events = outputs["baseline"]
        if not (np.array_equal(frames, base_frames) and np.array_equal(events, base_events)):
            raise SystemExit("The two versions give different frames or event counts.")
    summary = {
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "digits": args.digits,
        "timesteps": args.timesteps,
        "events_per_digit": float(events.mean()),
        "identical_to_baseline": bool(args.baseline),
        "seconds": {k: [round(s, 2) for s in v] for k, v in results.items()},
        "digits_per_second": {
            k: round(args.digits / statistics.median(v), 1) for k, v in results.items()
        },
    }
    if args.baseline:
        summary["speedup"] = round(
            statistics.median(results["baseline"]) / statistics.median(results["this tree"]), 2
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
