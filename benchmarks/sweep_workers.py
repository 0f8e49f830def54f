"""Scale-out sweep on this machine: one 12-trial lambda sweep of `digits` with 1, 2 and 3
`kedro run --pipelines digits.sweep` workers against the project's services (PostgreSQL +
MLflow server, started here in a temporary folder), and the storage overhead per trial (a trial
that trains nothing, tracked like a real one: SQLite + mlflow.db vs PostgreSQL + MLflow server).

    python benchmarks/sweep_workers.py [--workers 1 2 3] [--trials 12]

Writes benchmarks/results/sweep_workers/<machine>.json. Workers share this machine's cores: each gets
cores // N torch threads (OMP_NUM_THREADS), as `make seeds` does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
import torch
from optuna.trial import TrialState

from direct2event.glue import services
from direct2event.glue.machine import result_path
from direct2event.glue.sweep.config import StudyConfig
from direct2event.glue.sweep.study import run_study
from direct2event.glue.sweep.tracking import mlflow_trial_run

ROOT = Path(__file__).resolve().parents[1]


def kedro(pipeline: str, params: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "kedro", "run", "--pipelines", pipeline, "--params", params]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def noop_overhead(storage: str, n: int, tracking_uri: str) -> float:
    """Seconds per trial of a sweep whose trials train nothing, each a nested MLflow run with a
    few epochs logged: what Optuna's storage and MLflow tracking add to every trial."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("direct2event-bench")

    def evaluate(lam: float, on_epoch, judge=None) -> dict[str, float]:
        for epoch in range(3):
            if on_epoch:
                on_epoch({"epoch": epoch, "loss": 1.0 / lam, "val_accuracy": 0.9})
        return {"val_accuracy": 0.9, "energy_nJ": 1.0 / lam}

    name = f"noop-{time.time_ns()}"
    with mlflow.start_run(run_name="noop-overhead"):
        t0 = time.perf_counter()
        study = StudyConfig(storage=storage, name=name, n_trials=n, first_lambdas=())
        run_study(study, evaluate, trial_run=mlflow_trial_run("bench", name))
        return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    folder = Path(tempfile.mkdtemp(prefix="d2e-bench-"))
    svc = services.start(folder / "services", pg_port=5443, mlflow_port=5011)
    os.environ["PGPASSFILE"] = str(svc.pgpass)
    base_env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", **svc.env()}
    results: dict = {
        "machine": f"{platform.machine()} {cores} cores ({platform.processor() or 'cpu'})",
        "torch": torch.__version__,
        "dataset": "digits (conf/base/parameters_digits.yml)",
        "n_trials": args.trials,
        "sweeps": [],
    }
    try:
        t0 = time.perf_counter()
        first = kedro("digits", "digits.tuning.enabled=false", base_env, folder / "d.log")
        assert first.wait() == 0, (folder / "d.log").read_text()[-3000:]
        results["network_d_run_s"] = time.perf_counter() - t0
        for n in args.workers:
            name = f"digits-bench-{n}w-{time.time_ns()}"
            params = ",".join(
                [
                    "digits.source_model=latest",
                    f"digits.tuning.storage={svc.storage_url}",
                    f"digits.tuning.n_trials={args.trials}",
                    f"digits.tuning.study_name={name}",
                ]
            )
            env = {**base_env, "OMP_NUM_THREADS": str(max(1, cores // n))}
            t0 = time.perf_counter()
            procs = [kedro("digits.sweep", params, env, folder / f"w{n}-{i}.log") for i in range(n)]
            codes = [p.wait() for p in procs]
            wall = time.perf_counter() - t0
            assert codes == [0] * n, [
                (folder / f"w{n}-{i}.log").read_text()[-2000:] for i in range(n)
            ]
            trials = optuna.load_study(study_name=name, storage=svc.storage_url).get_trials()
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
            first_start = min(t.datetime_start for t in trials).timestamp()
            last_end = max(t.datetime_complete for t in done).timestamp()
            results["sweeps"].append(
                {
                    "workers": n,
                    "threads_per_worker": max(1, cores // n),
                    "wall_s": round(wall, 1),
                    "trials_span_s": round(last_end - first_start, 1),
                    "complete": len(done),
                    "other_states": sorted(t.state.name for t in trials if t not in done),
                    "trial_s_mean": round(sum(durations) / len(durations), 2),
                }
            )
            print(json.dumps(results["sweeps"][-1]), flush=True)
        local = folder / "local"
        local.mkdir()
        results["overhead_per_trial_s"] = {
            "sqlite + mlflow.db": round(
                noop_overhead(
                    f"sqlite:///{local / 'optuna.db'}", 20, f"sqlite:///{local / 'mlflow.db'}"
                ),
                3,
            ),
            "postgresql + mlflow server": round(
                noop_overhead(svc.storage_url, 20, svc.tracking_uri), 3
            ),
        }
        print(json.dumps(results["overhead_per_trial_s"]), flush=True)
    finally:
        services.stop(svc.folder)
    out = result_path("sweep_workers")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
