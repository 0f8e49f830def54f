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
import logging
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
from kedro.io import DataCatalog

from direct2event.glue.catalog import load_report, project_catalog, report_path
from direct2event.glue.params import DATASET_KEYS, check_runtime_params
from direct2event.glue.reports import SeedStudy, ShiftReport, Summary, TuningReport
from direct2event.glue.runs import (
    DIE_WITH_PARENT_ENV,
    PARENT_RUN_ENV,
    Heartbeat,
    Terminated,
    install_stop_handlers,
    process_tags,
)
from direct2event.glue.seed_study import aggregate, machine_info, run_record, shift_study
from direct2event.glue.tracking import as_headline, prepare_store

logger = logging.getLogger(__name__)


def seed_folder(seed: int, name: str = "") -> str:
    """The runtime parameter that sends a seed's reports to ``<key>[/<name>]/seed_<s>``."""
    return f"/{name}/seed_{seed}" if name else f"/seed_{seed}"


def study_catalog(root: Path, name: str = "") -> DataCatalog:
    """The catalog where a study (or its variant ``name``) keeps ``seeds.json`` and its figure."""
    return project_catalog(root, {"seed_folder": f"/{name}" if name else ""})


def seed_reports(
    key: str, seed: int, root: Path, name: str = ""
) -> tuple[Summary, ShiftReport | None, TuningReport]:
    """One seed's summary, shift report (None when absent) and tuning report, read where the
    catalog put them."""
    catalog = project_catalog(root, {"seed_folder": seed_folder(seed, name)})
    shift = None
    if report_path(catalog, key, "shift").exists():
        shift = load_report(catalog, key, "shift")
    return (
        load_report(catalog, key, "summary"),
        shift,
        load_report(catalog, key, "tuning_report"),
    )


def seeds_figure(study: SeedStudy, energy_model: str = "per_event") -> Any:
    """Each seed on the accuracy-energy plane: D and E, joined by an arrow, mean marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_plane, ax_ret) = plt.subplots(1, 2, figsize=(10.5, 4))
    for r in study.runs:
        e_rel = 1 / r.energy_reduction
        ax_plane.annotate(
            "",
            (e_rel, 100 * r.event_accuracy),
            (1.0, 100 * r.direct_accuracy),
            arrowprops={"arrowstyle": "->", "color": "grey", "lw": 0.8},
        )
        ax_plane.scatter([1.0], [100 * r.direct_accuracy], color="C0", s=25)
        ax_plane.scatter([e_rel], [100 * r.event_accuracy], color="C1", s=25)
        ax_plane.annotate(f"seed {r.seed}", (e_rel, 100 * r.event_accuracy), fontsize=7)
        ax_ret.scatter([r.energy_reduction], [r.accuracy_retention], color="C1")
        ax_ret.annotate(f"{r.seed}", (r.energy_reduction, r.accuracy_retention), fontsize=7)
    ax_ret.errorbar(
        [study.mean["energy_reduction"]],
        [study.mean["accuracy_retention"]],
        xerr=[study.std["energy_reduction"]],
        yerr=[study.std["accuracy_retention"]],
        color="k",
        marker="x",
        label="mean ± std",
    )
    retentions = [r.accuracy_retention for r in study.runs]
    floor = study.retention_floor
    if floor is not None:  # the floor the runs' sweeps aimed at
        ax_ret.axhline(floor, color="C3", ls=":", lw=1, label=f"retention floor {floor}")
        retentions.append(floor)
    ax_ret.set_ylim(min(retentions) - 0.002, max([*retentions, 1.0]) + 0.0005)
    ax_ret.ticklabel_format(axis="y", useOffset=False)
    ax_plane.set_xlabel(f"energy per sample relative to D ({energy_model})")
    ax_plane.set_ylabel("test accuracy (%)")
    ax_plane.set_title("D (blue) -> E (orange), one arrow per seed", fontsize=9)
    ax_ret.set_xlabel(f"energy reduction D/E ({energy_model})")
    ax_ret.set_ylabel("accuracy retention E/D")
    ax_ret.legend(fontsize=8)
    fig.suptitle(f"{study.dataset}: {len(study.runs)} seeds ({study.machine})", fontsize=9)
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
    folder = seed_folder(seed, name)
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


def _run_all(key: str, seeds: list[int], jobs: int, threads: int, run_id: str, logs: Path,
             params: str, name: str) -> list[tuple[int, int, float]]:  # fmt: skip
    """Every seed's kedro run, ``jobs`` at a time: (seed, exit code, seconds) each."""
    with ThreadPoolExecutor(jobs) as pool:
        return list(
            pool.map(lambda s: _run_seed(key, s, threads, run_id, logs, params, name), seeds)
        )


def collect(
    key: str,
    done: list[tuple[int, int, float]],
    root: Path,
    name: str,
    threads: int,
    logs: Path,
) -> SeedStudy:
    """The study from the seeds' reports (a seed that failed or wrote none stops it)."""
    runs, shifts, tunings = [], [], []
    for seed, code, seconds in done:
        logger.info("seed %d: exit %d after %.0f s", seed, code, seconds)
        if code != 0:
            raise RuntimeError(f"seed {seed} failed (exit {code}); see {logs / f'seed_{seed}.log'}")
        summary, shift, tuning = seed_reports(key, seed, root, name)
        runs.append(run_record(seed, summary, seconds))
        shifts += [shift] if shift is not None else []
        tunings.append(tuning)
    study = aggregate(key, runs, machine_info(threads), tunings)
    return study.model_copy(update={"shift": shift_study(shifts, [r.seconds for r in runs])})


def study_headline(study: SeedStudy) -> dict[str, float]:
    """The study's mean over seeds under a run's own headline names, so the Results view's
    columns show the study's row as they show a run's."""
    m = study.mean
    values: dict[str, float | None] = {
        k: m.get(k)
        for k in ("direct_accuracy", "event_accuracy", "accuracy_retention", "rate_lambda")
    }
    values["event_events_per_sample"] = m.get("events_per_sample")
    for model, reduction in (m.get("energy_reduction_by_model") or {}).items():
        values[f"energy_reduction.{model}"] = reduction
    return as_headline(values)


def log_study(study: SeedStudy, seeds: list[int], jobs: int, params: str) -> None:
    """The study's figures of merit as the parent run's metrics and parameters: the mean over
    seeds as its headline, mean, std and worst of retention and reduction."""
    mlflow.log_metrics(study_headline(study))
    for stat in ("mean", "std", "worst"):
        for field in ("accuracy_retention", "energy_reduction"):
            mlflow.log_metric(f"{stat}.{field}", getattr(study, stat)[field])
    for method, fields in (study.shift.methods if study.shift else {}).items():
        for field in ("recovered_fraction", "clean_cost_pp", "clean_events_change",
                      "shift_events_change", "recovery_samples"):  # fmt: skip
            for stat in ("mean", "worst"):
                value = getattr(getattr(fields, field), stat)
                if value is not None:
                    mlflow.log_metric(f"{stat}.shift.{method}.{field}", value)
    mlflow.log_params({"seeds": " ".join(map(str, seeds)), "jobs": jobs, "params": params})


def run_study(
    key: str,
    seeds: list[int],
    jobs: int,
    root: Path = Path(),
    threads: int | None = None,
    params: str = "",
    name: str = "",
) -> SeedStudy:
    """Run every seed (``jobs`` at a time, ``threads`` torch threads each: by default the cores
    shared among the jobs), then write and log ``seeds.json`` and its figure. ``params`` are
    extra ``--params`` for every seed (e.g. ``mnist.model.pooling=avg``); a ``name`` keeps such
    a variant's files in its own folder under the key's reports."""
    if key not in DATASET_KEYS:
        raise SystemExit(f"unknown dataset key {key!r}; use one of {', '.join(DATASET_KEYS)}")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise SystemExit(f"give distinct seeds, got {seeds}")
    jobs = max(1, min(jobs, len(seeds)))
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    catalog = study_catalog(root, name)
    logs = report_path(catalog, key, "seeds").parent / "logs"
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
        done = _run_all(key, seeds, jobs, threads, parent.info.run_id, logs, params, name)
        study = collect(key, done, root, name, threads, logs)
        catalog.save(f"{key}.seeds", study)  # written, and logged to the study's run
        catalog.save(f"{key}.seeds_plot", seeds_figure(study))
        log_study(study, seeds, jobs, params)
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


def aggregate_only(key: str, seeds: list[int], name: str = "", root: Path = Path()) -> SeedStudy:
    """Rebuild ``seeds.json`` and its figure from the seeds' reports already written (e.g. after
    running a new stage on finished seeds), without running anything or logging to MLflow. The
    earlier study's run times are kept; its runs did not include a stage run afterwards."""
    catalog = study_catalog(root, name)
    path = report_path(catalog, key, "seeds")
    old = load_report(catalog, key, "seeds") if path.exists() else None
    seconds = {r.seed: r.seconds for r in old.runs} if old else {}
    runs, shifts, tunings = [], [], []
    for seed in seeds:
        try:
            summary, shift, tuning = seed_reports(key, seed, root, name)
        except Exception as err:  # the catalog's DatasetError names the missing file
            raise SystemExit(f"seed {seed}: {err}; run the seed first (without --aggregate-only)")
        runs.append(run_record(seed, summary, seconds.get(seed)))
        shifts += [shift] if shift is not None else []
        tunings.append(tuning)
    machine = {"machine": old.machine, "torch": old.torch} if old else {}
    study = aggregate(key, runs, machine or {"machine": "unknown", "torch": "unknown"}, tunings)
    study = study.model_copy(
        update={"shift": shift_study(shifts, [seconds.get(s) for s in seeds], stage_inside=False)}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(study.model_dump_json(indent=2) + "\n")
    seeds_figure(study).savefig(path.with_name("seeds.png"), dpi=110)
    return study


def _fmt(study: SeedStudy) -> str:
    m, s, w = study.mean, study.std, study.worst
    shift = ""
    for method, v in (study.shift.methods if study.shift else {}).items():
        rf = v.recovered_fraction
        if rf.mean is not None:
            shift += f"; {method} recovers {rf.mean:.2f} (worst {rf.worst:.2f})"
    return (
        f"{study.dataset} over seeds {study.seeds}: retention {m['accuracy_retention']:.4f} "
        f"± {s['accuracy_retention']:.4f} (worst {w['accuracy_retention']:.4f}), energy reduction "
        f"{m['energy_reduction']:.2f}x ± {s['energy_reduction']:.2f} (worst "
        f"{w['energy_reduction']:.2f}x); {study.machine}, torch {study.torch}{shift}"
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
        help="seeds side by side, the cores shared among them (default: cores // 4: one seed on "
        "every core runs faster than several side by side on few cores)",
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
    if not all(math.isfinite(r.accuracy_retention) for r in study.runs):
        return 1
    return 0
