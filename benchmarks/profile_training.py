"""Where a fine-tuning step of E spends its time, and how far it is from this CPU's peak.

For each dataset key, E (the dataset's network as its parameters build it, converted to the
event network) is fine-tuned on inputs of the dataset's shape for ``--steps`` steps, exactly as
a sweep trial trains (``snn.finetuning``: spikes forward, surrogate backward, rate penalty,
distillation logits looked up). Each step is split into phases by wall clock:

- ``data``: indexing the stored frames, uint8 -> float, encoding to ``[T, B, ...]``;
- ``forward``: E's forward pass and the loss (cross-entropy, KL, rate penalty);
- ``backward``: autograd through T steps (surrogate gradients);
- ``optimizer``: AdamW and the learning-rate schedule;
- ``validation``: one validation pass per epoch (``tuning.max_validation`` samples), per step;

and the aten ops by self time (``torch.profiler``). FLOPs per step come from PyTorch's
``FlopCounterMode`` (convolutions and matrix products: the arithmetic), bytes per step from a
dispatch mode that adds up every aten op's inputs and outputs (an upper bound of the memory
traffic; the C LIF/pooling kernels are called outside aten and are not in it). The peak is
``cores x clock x`` the fp32 FLOP per cycle of its vector units (64 with AVX-512, 32 with
AVX2 + FMA) and the memory bandwidth a measured large copy; together they place the step on
the roofline.

    python benchmarks/profile_training.py --keys mnist nmnist_sim [--steps 30] [--network direct]

writes benchmarks/results/profile/<machine>.json (``--network direct``: D's training step instead,
``profile-<cpu>-direct.json``). Inputs are random with the datasets' densities
(time does not depend on the values: the layers are dense).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from direct2event.glue.machine import result_path
from direct2event.glue.params import PipelineParams, load_settings
from direct2event.snn.activity import record_activity
from direct2event.snn.encoders import encode
from direct2event.snn.losses import TransferLoss
from direct2event.snn.models import LIFParameters, build_model, to_event_network
from direct2event.snn.training import Split, as_float, batches, evaluate

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"mnist": ((1, 28, 28), 55000, 5000), "nmnist_sim": ((2, 34, 34), 55000, 5000)}


def settings_for(key: str) -> PipelineParams:
    """The dataset's effective parameters (conf/base over the defaults)."""
    from kedro.config import OmegaConfigLoader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        conf = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")
        params = conf["parameters"]
    return load_settings(key, params.get(key), params.get("energy_profiles", {}))


def cpu_model() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = re.search(r"model name\s*:\s*(.+)", text)
    return found.group(1).strip() if found else platform.processor()


def clock_ghz() -> float:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = re.findall(r"cpu MHz\s*:\s*([\d.]+)", text)
    return max(map(float, found)) / 1000 if found else float("nan")


def flags() -> list[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = re.search(r"flags\s*:\s*(.+)", text)
    have = set(found.group(1).split()) if found else set()
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
    return [f for f in wanted if f in have]


def flop_per_cycle(have: list[str]) -> int:
    """fp32 FLOP per cycle and core, from the vector units the flags name: two FMA units of 16
    (AVX-512), 8 (AVX2 + FMA) or 4 (SSE) lanes, two FLOP per FMA. An estimate: some cores
    (AMD Zen 4) run AVX-512 at half width, and none counts turbo."""
    lanes = 16 if "avx512f" in have else 8 if "fma" in have else 4
    return 2 * 2 * lanes


def peak_gflops(cores: int, ghz: float, have: list[str]) -> float:
    """This CPU's fp32 peak estimate in GFLOP/s: cores x clock x :func:`flop_per_cycle`."""
    return cores * ghz * flop_per_cycle(have)


def bandwidth_gbs() -> float:
    """Bytes read + written per second by a copy of 256 MiB (best of 5)."""
    src = torch.ones(64 * 2**20)
    dst = torch.empty_like(src)
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * 4 / best / 1e9


class ByteCounter(TorchDispatchMode):
    """Adds up the bytes of every aten op's tensor inputs and outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in (*args, *(kwargs or {}).values(), out):
            items = value if isinstance(value, list | tuple) else [value]
            self.bytes += sum(
                t.numel() * t.element_size() for t in items if isinstance(t, torch.Tensor)
            )
        return out


def data(key: str, n: int, settings: PipelineParams) -> Split:
    shape, _, _ = SHAPES[key]
    g = torch.Generator().manual_seed(0)
    coding = settings.event_coding
    if coding.encoding == "frames":  # stored event counts per time bin, 2 % of pixels active
        x = (torch.rand(n, coding.timesteps, *shape, generator=g) < 0.02).to(torch.uint8)
    else:
        x = torch.rand(n, *shape, generator=g) * (torch.rand(n, *shape, generator=g) < 0.2)
    return Split(x, torch.randint(0, 10, (n,), generator=g))


def profile_key(
    key: str, steps: int, network: str = "event", memory_format: str = "contiguous"
) -> dict:
    """One dataset's step profile: E's fine-tuning step (``network`` = event) or D's
    direct-coded training step (direct: cross-entropy only, D's batch size and learning rate).
    ``memory_format`` channels_last: the network's weights in NHWC, so oneDNN's convolutions run
    (and hand on) channels-last tensors, a candidate measured against the default."""
    settings = settings_for(key)
    model = settings.model
    ft = settings.training if network == "direct" else settings.transfer.finetune
    shape, n_train, _ = SHAPES[key]
    n_val = settings.tuning.max_validation or 5000
    torch.manual_seed(0)
    direct = build_model(
        model.arch,
        shape,
        10,
        LIFParameters(beta=model.beta, width=model.surrogate_width, reset=model.reset),
        model.channels,
        model.hidden,
        model.pooling,
    )
    net = direct if network == "direct" else to_event_network(direct)
    if memory_format == "channels_last":
        net = net.to(memory_format=torch.channels_last)
    train = data(key, steps * ft.batch_size, settings)
    val = data(key, n_val, settings)
    coding = settings.direct_coding if network == "direct" else settings.event_coding
    logits_all = torch.randn(len(train), 10)
    distill = network == "event" and settings.transfer.finetune.distill
    loss_fn = TransferLoss(
        rate_lambda=3.0 if network == "event" else 0.0,
        teacher=direct if distill else None,
        teacher_coding=settings.direct_coding,
        alpha=settings.transfer.finetune.alpha,
        temperature=settings.transfer.finetune.temperature,
        teacher_logits=logits_all if distill else None,
    )
    opt = torch.optim.AdamW(net.parameters(), lr=ft.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    phases: dict[str, float] = defaultdict(float)
    gen = torch.Generator().manual_seed(0)
    net.train()

    def step(idx: torch.Tensor, timed: bool) -> None:
        t0 = time.perf_counter()
        xb = as_float(train.x[idx])
        yb = train.y[idx]
        inputs = encode(xb, coding.encoding, coding.timesteps, gen)
        t1 = time.perf_counter()
        with record_activity(net) as acts:
            logits = net(inputs)
            loss = F.cross_entropy(logits, yb) + loss_fn(logits, yb, acts, xb, idx)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        sched.step()
        t4 = time.perf_counter()
        if timed:
            for name, dt in zip(
                ("data", "forward", "backward", "optimizer"),
                (t1 - t0, t2 - t1, t3 - t2, t4 - t3),
                strict=True,
            ):
                phases[name] += dt

    order = list(batches(len(train), ft.batch_size, gen))
    for idx in order[:3]:  # warm-up: kernels built, allocator primed
        step(idx, timed=False)
    t = time.perf_counter()
    for idx in order:
        step(idx, timed=True)
    total = time.perf_counter() - t
    per_step = {k: v / len(order) for k, v in phases.items()}
    per_step["other"] = total / len(order) - sum(per_step.values())
    t = time.perf_counter()
    evaluate(net, val, coding, torch.device("cpu"))
    val_s = time.perf_counter() - t
    steps_per_epoch = math.ceil(n_train / ft.batch_size)
    per_step["validation"] = val_s / steps_per_epoch  # one pass per epoch, spread over its steps
    idx = order[0]
    xb = as_float(train.x[idx])
    inputs = encode(xb, coding.encoding, coding.timesteps, gen)
    with FlopCounterMode(display=False) as flops:
        with record_activity(net) as acts:
            logits = net(inputs)
            loss = F.cross_entropy(logits, train.y[idx]) + loss_fn(
                logits, train.y[idx], acts, xb, idx
            )
        loss.backward()
    counter = ByteCounter()
    with counter:
        with record_activity(net) as acts:
            logits = net(inputs)
            loss = F.cross_entropy(logits, train.y[idx]) + loss_fn(
                logits, train.y[idx], acts, xb, idx
            )
        loss.backward()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for idx in order[:5]:
            step(idx, timed=False)
    table = prof.key_averages()
    busy = sum(e.self_cpu_time_total for e in table)
    ops = sorted(table, key=lambda e: -e.self_cpu_time_total)[:12]
    step_s = sum(v for k, v in per_step.items() if k != "validation")
    flop = flops.get_total_flops()
    return {
        "dataset": key,
        "step": "D training" if network == "direct" else "E fine-tuning",
        "network": f"{model.arch} channels {model.channels} hidden {model.hidden}, "
        f"{model.pooling} pooling, T = {coding.timesteps} ({coding.encoding})",
        "batch_size": ft.batch_size,
        "memory_format": memory_format,
        "steps_timed": len(order),
        "ms_per_step": {k: round(1000 * v, 2) for k, v in per_step.items()},
        "share": {k: round(v / sum(per_step.values()), 3) for k, v in per_step.items()},
        "samples_per_s": round(ft.batch_size / step_s, 1),
        "gflop_per_step": round(flop / 1e9, 3),
        "mbyte_per_step_aten": round(counter.bytes / 1e6, 1),
        "gflops_achieved": round(flop / step_s / 1e9, 2),
        "arithmetic_intensity_flop_per_byte": round(flop / max(counter.bytes, 1), 2),
        "top_ops_self_share": [
            {"op": e.key, "share": round(e.self_cpu_time_total / busy, 3)} for e in ops
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", nargs="+", default=["mnist", "nmnist_sim"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--network",
        choices=("event", "direct"),
        default="event",
        help="E's fine-tuning step (default) or D's direct-coded training step",
    )
    parser.add_argument(
        "--memory-format", choices=("contiguous", "channels_last"), default="contiguous"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="results JSON (default benchmarks/results/profile[-direct]/<machine>.json)",
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    ghz = clock_ghz()
    peak = peak_gflops(cores, ghz, flags())
    bw = bandwidth_gbs()
    results = {
        "cpu": cpu_model(),
        "cores": cores,
        "flags": flags(),
        "clock_ghz": ghz,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "peak_gflops_fp32": round(peak, 1),
        "copy_bandwidth_gbs": round(bw, 1),
        "ridge_flop_per_byte": round(peak / bw, 1),
        "datasets": [],
    }
    for key in args.keys:
        res = profile_key(key, args.steps, args.network, args.memory_format)
        res["roofline_bound_gflops"] = round(
            min(peak, bw * res["arithmetic_intensity_flop_per_byte"]), 1
        )
        res["share_of_peak"] = round(res["gflops_achieved"] / peak, 3)
        results["datasets"].append(res)
        print(json.dumps(res, indent=1))
    out = args.out or result_path("profile-direct" if args.network == "direct" else "profile")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"peak {peak:.0f} GFLOP/s, copy {bw:.1f} GB/s -> {out}")


if __name__ == "__main__":
    main()
