"""The accuracy-energy frontier of E's fine-tuning over seeds, for levers not (yet) in the default.

After ``make seeds KEY=mnist SEEDS="0 1 2"``, each seed's network D and threshold-scaled E are in
``data/06_models/mnist/seed_<s>/``. This script fine-tunes E again from them with other settings
(each variant a set of ``transfer.finetune`` overrides and a lambda) and measures it on the
validation split (what a choice may use) and on the test split (what is reported):

    .venv/bin/python benchmarks/frontier.py --key mnist --seeds 0 1 2 \
        --variant "epochs=3 rate_lambda=3" --variant "epochs=3 rate_lambda=5"

Results go to ``benchmarks/results/frontier-<key>/<machine>.json`` (appended, one record per variant and
seed, with the machine and torch build).
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import time
from pathlib import Path

import torch
from kedro.config import OmegaConfigLoader

from direct2event.data.splits import make_splits
from direct2event.glue.datasets import MNISTDataset
from direct2event.glue.machine import result_path
from direct2event.glue.params import load_settings
from direct2event.snn.evaluation import measure
from direct2event.snn.finetuning import finetune_event_network, teacher_logits
from direct2event.snn.models import restore

ROOT = Path(__file__).resolve().parents[1]


def latest(path: Path) -> dict:
    """The newest Kedro version of a versioned pickle."""
    version = sorted(p for p in path.iterdir() if p.is_dir())[-1]
    return pickle.loads((version / path.name).read_bytes())


def parse(variant: str) -> dict[str, float | int | bool]:
    out: dict[str, float | int | bool] = {}
    for item in variant.split():
        key, value = item.split("=")
        out[key] = (value == "true") if value in ("true", "false") else float(value)
        if key in ("epochs", "max_train"):
            out[key] = int(float(value))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", default="mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", action="append", required=True)
    args = parser.parse_args()
    if args.key != "mnist":
        raise SystemExit("only mnist is wired here (its raw data loads without the catalog)")
    conf = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")
    params = conf["parameters"]
    raw = MNISTDataset().load()
    out = result_path(f"frontier-{args.key}")
    out.parent.mkdir(parents=True, exist_ok=True)
    records = json.loads(out.read_text()) if out.exists() else []
    for seed in args.seeds:
        base = {**(params.get(args.key) or {}), "seed": seed}
        base["training"] = {**base.get("training", {}), "progress": False}
        settings = load_settings(args.key, base, params["energy_profiles"])
        d = settings.data  # the split prepare_data makes for this seed
        splits = make_splits(
            raw,
            d.calibration_fraction,
            d.validation_fraction,
            seed,
            d.max_train,
            d.max_validation,
            d.max_test,
        )
        folder = ROOT / "data/06_models" / args.key / f"seed_{seed}"
        direct = restore(latest(folder / "direct_model.pkl"))
        scaled = restore(latest(folder / "scaled_model.pkl"))
        device, profiles = settings.device, settings.profiles()
        logits = teacher_logits(direct, splits.train, settings.finetune_config(0.0), device)
        ref = {
            name: measure(direct, split, settings.direct_coding, device, profiles, seed)
            for name, split in (("validation", splits.validation), ("test", splits.test))
        }
        for variant in args.variant:
            change = parse(variant)
            lam = float(change.pop("rate_lambda", settings.transfer.finetune.rate_lambda))
            ft = settings.transfer.finetune.model_copy(update=change)
            tuned = settings.model_copy(
                update={"transfer": settings.transfer.model_copy(update={"finetune": ft})}
            )
            start = time.perf_counter()
            net, _ = finetune_event_network(
                scaled,
                direct,
                splits.train,
                tuned.finetune_config(lam),
                device,
                logits=logits if ft.distill else None,
            )
            seconds = time.perf_counter() - start
            record = {"key": args.key, "seed": seed, "variant": variant, "seconds": seconds}
            for name, split in (("validation", splits.validation), ("test", splits.test)):
                res = measure(net, split, settings.event_coding, device, profiles, seed)
                dres = ref[name]
                record[name] = {
                    "direct_accuracy": dres["accuracy"],
                    "event_accuracy": res["accuracy"],
                    "retention": res["accuracy"] / dres["accuracy"],
                    "events_per_sample": res["events_per_sample"],
                    "energy_reduction": dres["energy_nJ_by_model"]["per_event"]
                    / res["energy_nJ_by_model"]["per_event"],
                    "energy_reduction_synops_45nm": dres["energy_nJ_by_model"]["synops_45nm"]
                    / res["energy_nJ_by_model"]["synops_45nm"],
                }
            record["machine"] = platform.processor() or platform.machine()
            record["torch"] = torch.__version__
            records.append(record)
            out.write_text(json.dumps(records, indent=2))
            v, t = record["validation"], record["test"]
            print(
                f"seed {seed} {variant}: val {v['event_accuracy']:.4f} (ret {v['retention']:.4f}, "
                f"{v['energy_reduction']:.2f}x); test {t['event_accuracy']:.4f} "
                f"(ret {t['retention']:.4f}, {t['energy_reduction']:.2f}x) in {seconds:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
