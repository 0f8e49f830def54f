"""The 2x2 max-pooling kernel of ``cpu_kernels.c`` at the training shapes of MNIST and simulated
N-MNIST (T x batch planes, graded inputs as D pools them, binary spikes as E does), forward and
backward, against another version of the kernel source.

    git show d9ba06b:src/direct2event/snn/cpu_kernels.c > /tmp/cpu_kernels_before.c
    .venv/bin/python benchmarks/pooling.py --baseline /tmp/cpu_kernels_before.c \\
        --out benchmarks/results/pooling/<machine>.json

Both sources are compiled with the flags the package uses and called in alternating rounds in
one process, on torch's thread count; values, winners and gradients must be identical (the run
stops otherwise). Medians of ``--rounds`` calls, in milliseconds.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from sweep_cost import machine

from direct2event.glue.machine import result_path
from direct2event.snn import kernels

SHAPES = {  # [T * batch, channels, H, W] of each pooling layer in a training step
    "mnist pool1": (3 * 128, 16, 28, 28),
    "mnist pool2": (3 * 128, 32, 14, 14),
    "nmnist_sim pool1": (8 * 32, 16, 34, 34),
    "nmnist_sim pool2": (8 * 32, 32, 17, 17),
}


def _library(source: Path, folder: Path, name: str) -> ctypes.CDLL:
    target = folder / f"{name}.so"
    cmd = [kernels._compiler(), *kernels.FLAGS, kernels.OPENMP, "-DREAL=float"]
    subprocess.run([*cmd, "-o", str(target), str(source)], check=True)
    lib = ctypes.CDLL(str(target))
    p, n, i = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    for fn in (lib.maxpool2_forward, lib.maxpool2_backward):
        fn.argtypes = [p, p, p, n, n, n, i]
        fn.restype = None
    return lib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True, help="another cpu_kernels.c")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default=str(result_path("pooling")))
    args = parser.parse_args()
    threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        libs = {
            "baseline": _library(Path(args.baseline), Path(tmp), "baseline"),
            "this tree": _library(kernels.SOURCE, Path(tmp), "this"),
        }
        for layer, shape in SHAPES.items():
            planes, h, w = shape[0] * shape[1], shape[2], shape[3]
            for kind in ("graded", "binary"):
                x = torch.rand(shape, generator=gen)
                x = (x < 0.2).float() if kind == "binary" else torch.where(x < 0.6, 0.0, x)
                out = torch.empty(shape[0], shape[1], h // 2, w // 2)
                idx = torch.empty(out.shape, dtype=torch.uint8)
                grad = torch.randn(out.shape, generator=gen)
                grad_x = torch.empty(shape)
                times: dict[str, list[float]] = {}
                results = {}
                for _ in range(args.rounds):
                    for name, lib in libs.items():
                        t = time.perf_counter()
                        lib.maxpool2_forward(
                            x.data_ptr(), out.data_ptr(), idx.data_ptr(), planes, h, w, threads
                        )
                        times.setdefault(f"{name} forward", []).append(time.perf_counter() - t)
                        t = time.perf_counter()
                        lib.maxpool2_backward(
                            grad.data_ptr(),
                            idx.data_ptr(),
                            grad_x.data_ptr(),
                            planes,
                            h,
                            w,
                            threads,
                        )
                        times.setdefault(f"{name} backward", []).append(time.perf_counter() - t)
                        results[name] = (out.clone(), idx.clone(), grad_x.clone())
                same = all(
                    torch.equal(a, b)
                    for a, b in zip(results["baseline"], results["this tree"], strict=True)
                )
                if not same:
                    raise SystemExit(f"{layer} {kind}: the two kernels differ.")
                row = {k: round(1000 * statistics.median(v), 2) for k, v in times.items()}
                base = row["baseline forward"] + row["baseline backward"]
                row["speedup"] = round(
                    base / (row["this tree forward"] + row["this tree backward"]), 2
                )
                rows[f"{layer} {kind} {list(shape)}"] = row
                print(layer, kind, row)
    summary = {"machine": machine(), "threads": threads, "ms_median": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
