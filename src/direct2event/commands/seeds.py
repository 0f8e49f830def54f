"""The multi-seed study: the whole dataset pipeline once per seed, then mean, std and worst.

    python -m direct2event seeds --key mnist --seeds 0 1 2 [--jobs 2]   (make seeds KEY=mnist)

Each seed is an ordinary ``kedro run --pipelines <key>`` with ``<key>.seed=<s>`` (the seed sets
the split, data order, initialisation, encoder noise and the sweep's sampler), writing its
reports under ``data/08_reporting/<key>/seed_<s>/`` and its MLflow run as a child of one parent
run ``<key>-seeds``. Seeds run side by side in ``--jobs`` processes, the cores shared among them.
The study is written to ``data/08_reporting/<key>/seeds.json`` with a figure of the per-seed
points on the accuracy-energy plane, both logged to the parent run.

A result is a distribution: seeded runs repeat bit for bit only on the same CPU (or GPU) model,
thread count and torch build, so the study records the machine and torch build beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow

from direct2event.glue.params import DATASET_KEYS, check_runtime_params
from direct2event.glue.runs import (
    DIE_WITH_PARENT_ENV,
    PARENT_RUN_ENV,
    Heartbeat,
    Terminated,
    install_stop_handlers,
    process_tags,
)
from direct2event.glue.tracking import prepare_store

logger = logging.getLogger(__name__)

RUN_FIELDS = (
    "direct_accuracy",
    "event_accuracy",
    "accuracy_retention",
    "energy_reduction",
    "events_per_sample",
    "synops_per_sample",
    "rate_lambda",
)
RETENTION_FLOOR = 0.995  # the retention the project aims at, drawn in the figure


def seed_folder(seed: int) -> str:
    """The runtime parameter that sends a seed's reports to ``<key>/seed_<s>``."""
    return f"/seed_{seed}"


def run_record(seed: int, summary: dict[str, Any]) -> dict[str, Any]:
    """One seed's row of ``seeds.json`` from its ``summary.json``."""
    return {
        "seed": seed,
        "direct_accuracy": summary["direct"]["accuracy"],
        "event_accuracy": summary["event"]["accuracy"],
        "accuracy_retention": summary["accuracy_retention"],
        "energy_reduction": summary["energy_reduction"],
        "energy_reduction_by_model": summary["energy_reduction_by_model"],
        # D's energy over what E's input alone costs (absent in summaries before 2026-12-02)
        "energy_reduction_ceiling": summary.get("energy_reduction_ceiling"),
        "events_per_sample": summary["event"]["events_per_sample"],
        "synops_per_sample": summary["event"]["synops_per_sample"],
        "rate_lambda": summary["rate_lambda"],
    }


def _by_model(runs: list[dict[str, Any]]) -> list[str]:
    return sorted(runs[0]["energy_reduction_by_model"]) if runs else []


def aggregate(dataset: str, runs: list[dict[str, Any]], machine: dict[str, str]) -> dict:
    """``seeds.json``: the runs, their mean and (sample) std per field, and the worst case: the
    lowest retention and the lowest energy reduction (under each energy model too)."""
    if not runs:
        raise ValueError("no seed finished: nothing to aggregate")

    def column(field: str) -> list[float]:
        return [float(r[field]) for r in runs]

    def spread(values: list[float]) -> float:
        return statistics.stdev(values) if len(values) > 1 else 0.0

    mean = {f: statistics.fmean(column(f)) for f in RUN_FIELDS}
    std = {f: spread(column(f)) for f in RUN_FIELDS}
    models = _by_model(runs)
    by_model = {m: [float(r["energy_reduction_by_model"][m]) for r in runs] for m in models}
    mean["energy_reduction_by_model"] = {m: statistics.fmean(v) for m, v in by_model.items()}
    std["energy_reduction_by_model"] = {m: spread(v) for m, v in by_model.items()}
    worst = {
        "accuracy_retention": min(column("accuracy_retention")),
        "energy_reduction": min(column("energy_reduction")),
        "energy_reduction_by_model": {m: min(v) for m, v in by_model.items()},
        "event_accuracy": min(column("event_accuracy")),
    }
    return {
        "dataset": dataset,
        "seeds": [r["seed"] for r in runs],
        "runs": runs,
        "mean": mean,
        "std": std,
        "worst": worst,
        "machine": machine["machine"],
        "torch": machine["torch"],
    }


SHIFT_FIELDS = (
    "recovered_fraction",
    "clean_cost_pp",
    "clean_events_change",
    "shift_events_change",
    "recovery_samples",
)


def _worst(field: str, values: list[float]) -> float:
    """The worst seed against the shift targets: least recovered, most clean cost, largest
    event change either way, slowest recovery."""
    if field == "recovered_fraction":
        return min(values)
    if field.endswith("events_change"):
        return max(values, key=abs)
    return max(values)


def shift_study(
    reports: list[dict[str, Any]], run_seconds: list[float | None], stage_inside: bool = True
) -> dict[str, Any] | None:
    """The shift benchmark over seeds (each seed's ``shift.json``): per adaptation method the
    mean, std and worst of every target figure; the recalibration baseline; the mean corruption
    errors; and the stage's share of the run time (``stage_inside``: the run's seconds include
    the stage, else it ran afterwards on the finished run)."""
    done = [r for r in reports if r.get("enabled")]
    if not done:
        return None

    def stats(values: list[Any], field: str) -> dict[str, Any]:
        if any(v is None for v in values):
            return {"mean": None, "std": None, "worst": None, "values": values}
        v = [float(x) for x in values]
        return {
            "mean": statistics.fmean(v),
            "std": statistics.stdev(v) if len(v) > 1 else 0.0,
            "worst": _worst(field, v),
            "values": v,
        }

    methods = list(done[0]["summary"])
    shares = [
        r["seconds"] / (t if stage_inside else t + r["seconds"])
        for r, t in zip(done, run_seconds, strict=False)
        if t
    ]
    recal = [r["baselines"]["recalibration"]["recovered_fraction"] for r in done]
    return {
        "seeds": [r["seed"] for r in done],
        "samples": done[0]["samples"],
        "methods": {
            m: {f: stats([r["summary"][m].get(f) for r in done], f) for f in SHIFT_FIELDS}
            | {"qualifying_shifts": [r["summary"][m]["qualifying_shifts"] for r in done]}
            for m in methods
        },
        "recalibration_recovered_fraction": stats(recal, "recovered_fraction"),
        "mean_corruption_error": {
            k: statistics.fmean(r["mean_corruption_error"][k] for r in done)
            for k in done[0]["mean_corruption_error"]
        },
        "stage_seconds": statistics.fmean(r["seconds"] for r in done),
        "stage_share": {"mean": statistics.fmean(shares), "worst": max(shares)} if shares else None,
    }


def machine_info(threads: int) -> dict[str, str]:
    """The CPU model, core and thread count, and torch build the study ran on."""
    import torch

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cuda = f", CUDA {torch.version.cuda}" if torch.cuda.is_available() else ""
    return {
        "machine": f"{model}, {os.cpu_count()} cores, {threads} torch thread{'s' if threads > 1 else ''} per seed"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "torch": f"{torch.__version__}{cuda}",
    }


def seeds_figure(study: dict[str, Any], energy_model: str = "per_event") -> Any:
    """Each seed on the accuracy-energy plane: D and E, joined by an arrow, mean marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_plane, ax_ret) = plt.subplots(1, 2, figsize=(10.5, 4))
    for r in study["runs"]:
        e_rel = 1 / r["energy_reduction"]
        ax_plane.annotate(
            "",
            (e_rel, 100 * r["event_accuracy"]),
            (1.0, 100 * r["direct_accuracy"]),
            arrowprops={"arrowstyle": "->", "color": "grey", "lw": 0.8},
        )
        ax_plane.scatter([1.0], [100 * r["direct_accuracy"]], color="C0", s=25)
        ax_plane.scatter([e_rel], [100 * r["event_accuracy"]], color="C1", s=25)
        ax_plane.annotate(f"seed {r['seed']}", (e_rel, 100 * r["event_accuracy"]), fontsize=7)
        ax_ret.scatter([r["energy_reduction"]], [r["accuracy_retention"]], color="C1")
        ax_ret.annotate(
            f"{r['seed']}", (r["energy_reduction"], r["accuracy_retention"]), fontsize=7
        )
    mean = study["mean"]
    ax_ret.errorbar(
        [mean["energy_reduction"]],
        [mean["accuracy_retention"]],
        xerr=[study["std"]["energy_reduction"]],
        yerr=[study["std"]["accuracy_retention"]],
        color="k",
        marker="x",
        label="mean ± std",
    )
    retentions = [r["accuracy_retention"] for r in study["runs"]]
    ax_ret.axhline(RETENTION_FLOOR, color="C3", ls=":", lw=1, label=f"retention {RETENTION_FLOOR}")
    ax_ret.set_ylim(min([*retentions, RETENTION_FLOOR]) - 0.002, max([*retentions, 1.0]) + 0.0005)
    ax_ret.ticklabel_format(axis="y", useOffset=False)
    ax_plane.set_xlabel(f"energy per sample relative to D ({energy_model})")
    ax_plane.set_ylabel("test accuracy (%)")
    ax_plane.set_title("D (blue) -> E (orange), one arrow per seed", fontsize=9)
    ax_ret.set_xlabel(f"energy reduction D/E ({energy_model})")
    ax_ret.set_ylabel("accuracy retention E/D")
    ax_ret.legend(fontsize=8)
    fig.suptitle(f"{study['dataset']}: {len(study['runs'])} seeds ({study['machine']})", fontsize=9)
    fig.tight_layout()
    return fig


def _run_seed(
    key: str,
    seed: int,
    threads: int,
    parent_run_id: str | None,
    log_dir: Path,
    params: str = "",
    name: str = "",
) -> tuple[int, int, float]:
    """``kedro run`` of one seed in its own process; returns (seed, exit code, seconds)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "KEDRO_DISABLE_TELEMETRY": "true",
    }
    if parent_run_id:
        env[PARENT_RUN_ENV] = parent_run_id
    env[DIE_WITH_PARENT_ENV] = str(os.getpid())  # no seed run goes on alone (runs.py)
    folder = seed_folder(seed) if not name else f"/{name}{seed_folder(seed)}"
    params = ",".join(
        p
        for p in (f"{key}.seed={seed},{key}.training.progress=false,seed_folder={folder}", params)
        if p
    )
    cmd = [sys.executable, "-m", "kedro", "run", "--pipelines", key, "--params", params]
    log_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (log_dir / f"seed_{seed}.log").open("w") as log:
        proc = subprocess.Popen(  # noqa: S603 (this interpreter running kedro, no shell)
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        _CHILDREN.add(proc)
        try:
            code = proc.wait()
        finally:
            _CHILDREN.discard(proc)
    return seed, code, time.perf_counter() - start


_CHILDREN: set[subprocess.Popen] = set()  # the seeds' kedro runs, stopped with the study


def stop_children(timeout_s: float = 120) -> None:
    """SIGTERM every seed run still going (each ends its MLflow run FAILED) and wait."""
    for proc in list(_CHILDREN):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in list(_CHILDREN):
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_study(
    key: str,
    seeds: list[int],
    jobs: int,
    root: Path = Path(),
    threads: int | None = None,
    params: str = "",
    name: str = "",
) -> dict[str, Any]:
    """Run every seed (``jobs`` at a time, ``threads`` torch threads each: by default the cores
    shared among the jobs), then write and log ``seeds.json`` and its figure. ``params`` are
    extra ``--params`` for every seed (e.g. ``mnist.model.pooling=avg``); a ``name`` keeps such
    a variant's files in ``data/08_reporting/<key>/<name>/``."""
    if key not in DATASET_KEYS:
        raise SystemExit(f"unknown dataset key {key!r}; use one of {', '.join(DATASET_KEYS)}")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise SystemExit(f"give distinct seeds, got {seeds}")
    jobs = max(1, min(jobs, len(seeds)))
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    report_dir = (
        root / "data" / "08_reporting" / key / name
        if name
        else root / "data" / "08_reporting" / key
    )
    install_stop_handlers()  # SIGTERM / Ctrl-C: the seed runs are stopped, the study FAILED
    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    prepare_store(uri)  # before the seeds' runs open the same fresh store
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("direct2event")
    parent = mlflow.start_run(
        run_name=f"{key}-seeds" + (f"-{name}" if name else ""),
        tags={"dataset": key, "kind": "seed_study", **process_tags()},
    )
    heartbeat = Heartbeat(parent.info.run_id).start()  # a lost study's run is marked FAILED
    logger.info("Seeds %s of %s, %d at a time (%d threads each)", seeds, key, jobs, threads)
    try:
        with ThreadPoolExecutor(jobs) as pool:
            done = list(
                pool.map(
                    lambda s: _run_seed(
                        key, s, threads, parent.info.run_id, report_dir / "logs", params, name
                    ),
                    seeds,
                )
            )
        runs = []
        for seed, code, seconds in done:
            logger.info("seed %d: exit %d after %.0f s", seed, code, seconds)
            path = report_dir / f"seed_{seed}" / "summary.json"
            if code != 0 or not path.exists():
                raise RuntimeError(
                    f"seed {seed} failed (exit {code}); see {report_dir / 'logs' / f'seed_{seed}.log'}"
                )
            runs.append(run_record(seed, json.loads(path.read_text())) | {"seconds": seconds})
        study = aggregate(key, runs, machine_info(threads))
        study["shift"] = shift_study(
            _shift_reports(report_dir, seeds), [r["seconds"] for r in runs]
        )
        out = report_dir / "seeds.json"
        out.write_text(json.dumps(study, indent=2))
        fig = seeds_figure(study)
        fig.savefig(report_dir / "seeds.png", dpi=110)
        mlflow.log_artifact(str(out), artifact_path="reports")
        mlflow.log_artifact(str(report_dir / "seeds.png"), artifact_path="plots")
        for stat in ("mean", "std", "worst"):
            for field in ("accuracy_retention", "energy_reduction"):
                mlflow.log_metric(f"{stat}.{field}", study[stat][field])
        for method, fields in ((study["shift"] or {}).get("methods") or {}).items():
            for field in SHIFT_FIELDS:
                for stat in ("mean", "worst"):
                    if fields[field][stat] is not None:
                        mlflow.log_metric(f"{stat}.shift.{method}.{field}", fields[field][stat])
        mlflow.log_params({"seeds": " ".join(map(str, seeds)), "jobs": jobs, "params": params})
        mlflow.end_run()
    except BaseException as err:
        stop_children()
        reason = str(err) if isinstance(err, Terminated) else f"{type(err).__name__}: {err}"
        mlflow.set_tag("failure_reason", reason[:500])
        mlflow.end_run("FAILED")
        raise
    finally:
        heartbeat.stop()
    return study


def _shift_reports(report_dir: Path, seeds: list[int]) -> list[dict[str, Any]]:
    out = []
    for seed in seeds:
        path = report_dir / f"seed_{seed}" / "shift.json"
        if path.exists():
            out.append(json.loads(path.read_text()))
    return out


def aggregate_only(key: str, seeds: list[int], name: str = "", root: Path = Path()) -> dict:
    """Rebuild ``seeds.json`` and its figure from the seeds' reports already written (e.g. after
    running a new stage on finished seeds), without running anything or logging to MLflow. The
    earlier study's run times are kept; its runs did not include a stage run afterwards."""
    report_dir = (
        root / "data" / "08_reporting" / key / name
        if name
        else root / "data" / "08_reporting" / key
    )
    old_path = report_dir / "seeds.json"
    old = json.loads(old_path.read_text()) if old_path.exists() else {}
    seconds = {r["seed"]: r.get("seconds") for r in old.get("runs", [])}
    runs = []
    for seed in seeds:
        path = report_dir / f"seed_{seed}" / "summary.json"
        if not path.exists():
            raise SystemExit(f"{path} is missing: run the seed first (without --aggregate-only)")
        runs.append(run_record(seed, json.loads(path.read_text())) | {"seconds": seconds.get(seed)})
    machine = {"machine": old.get("machine", "unknown"), "torch": old.get("torch", "unknown")}
    study = aggregate(key, runs, machine)
    study["shift"] = shift_study(
        _shift_reports(report_dir, seeds), [seconds.get(s) for s in seeds], stage_inside=False
    )
    old_path.write_text(json.dumps(study, indent=2))
    seeds_figure(study).savefig(report_dir / "seeds.png", dpi=110)
    return study


def _fmt(study: dict[str, Any]) -> str:
    m, s, w = study["mean"], study["std"], study["worst"]
    shift = ""
    for method, v in ((study.get("shift") or {}).get("methods") or {}).items():
        rf = v["recovered_fraction"]
        if rf["mean"] is not None:
            shift += f"; {method} recovers {rf['mean']:.2f} (worst {rf['worst']:.2f})"
    return (
        f"{study['dataset']} over seeds {study['seeds']}: retention {m['accuracy_retention']:.4f} "
        f"± {s['accuracy_retention']:.4f} (worst {w['accuracy_retention']:.4f}), energy reduction "
        f"{m['energy_reduction']:.2f}x ± {s['energy_reduction']:.2f} (worst "
        f"{w['energy_reduction']:.2f}x); {study['machine']}, torch {study['torch']}{shift}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m direct2event seeds", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--key", default="mnist", help="dataset key (default mnist)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--jobs",
        type=int,
        default=max(1, (os.cpu_count() or 1) // 4),
        help="seeds side by side, the cores shared among them (default: cores // 4; on 2 "
        "cores one seed at a time on both was faster than two side by side)",
    )
    parser.add_argument("--params", default="", help="extra --params for every seed")
    parser.add_argument("--name", default="", help="a variant's folder under the key's reports")
    parser.add_argument(
        "--aggregate-only",
        action="store_true",
        help="rebuild seeds.json from the seeds' reports already written; run nothing",
    )
    args = parser.parse_args(argv)
    if args.params and not args.name:
        parser.error("--params changes the runs: give the variant a --name")
    try:  # before any seed starts: a misnamed key would run the defaults without a word
        check_runtime_params(p.split("=", 1)[0] for p in args.params.split(",") if "=" in p)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.aggregate_only:
        study = aggregate_only(args.key, args.seeds, args.name)
        print(_fmt(study))
        return 0
    study = run_study(args.key, args.seeds, args.jobs, params=args.params, name=args.name)
    print(_fmt(study))
    if not all(math.isfinite(r["accuracy_retention"]) for r in study["runs"]):
        return 1
    return 0
