"""Chaos run: SIGKILL and SIGTERM at random moments, each followed by the normal command again,
then a count of what the stops broke.

    python benchmarks/chaos.py [--seed 0] [--out benchmarks/results/chaos/<machine>.json]   (make chaos)

Twenty stops in four places, each in its own fresh project folder (a copy of conf/ with the
digits pipeline made tiny, as the tests do):
- 8 in a `kedro run --pipelines digits` (SQLite study, mlflow.db);
- 4 in a sweep of two `digits.sweep` workers on one SQLite study;
- 4 in a sweep of two workers on PostgreSQL with an MLflow server (make services);
- 4 in a `python -m direct2event seeds --key digits --seeds 0 1 --jobs 2` study.
A stop lands at a uniformly random time within the measured length of an uninterrupted run; the
signal is SIGKILL or SIGTERM at random. The moment is the node the log shows running then.

Written to the JSON: stops by moment and signal; runs left RUNNING (after the next normal
command, which reaps the runs of dead processes); completed trials lost or duplicated; registry
versions whose model does not load; data files that fail to load; whether the final results
equal an uninterrupted run of the same seed (summary.json without its timings).

Every phase (a stop and the normal command after it, a round of sweep workers, the seeds study)
has a deadline of ``--deadline-factor`` times the uninterrupted run (at least
``--deadline-min-s``). A phase past it is a failure, not a hang: its processes are killed, the
phase and the state of its study at that moment (each trial's state, parameters, attributes and
heartbeat) go to the JSON, and the command exits 1. The stops' random moments come from
``--seed`` (drawn and recorded when not given, so each run tries new moments and any one can be
repeated).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import mlflow
import optuna
import torch
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' tiny project
from direct2event.glue.machine import machine_name, result_path, torch_build  # noqa: E402
from tests.conftest import tiny_project  # noqa: E402

NODE = re.compile(r"Running node: (\w+)")
_LIVE: list[subprocess.Popen] = []  # every process started, killed when a phase overruns


class PhaseOverrun(RuntimeError):
    """A phase that did not end by its deadline: a failure, with what was found then."""

    def __init__(self, phase: str, limit_s: float, state: dict[str, Any]) -> None:
        super().__init__(f"phase '{phase}' did not end within {limit_s:.0f} s")
        self.phase, self.limit_s, self.state = phase, limit_s, state


class Deadline:
    """One phase's deadline; :meth:`wait` waits for a process until it, never longer."""

    limit_s = 600.0  # set by main from the uninterrupted run

    def __init__(self, phase: str, storage: str | None = None) -> None:
        self.phase, self.storage = phase, storage
        self.ends = time.monotonic() + self.limit_s

    def wait(self, proc: subprocess.Popen) -> int:
        try:
            return proc.wait(timeout=max(0.0, self.ends - time.monotonic()))
        except subprocess.TimeoutExpired:
            state = study_state(self.storage) if self.storage else {}
            for p in _LIVE:  # nothing of the overrun phase is left running
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=60)
            raise PhaseOverrun(self.phase, self.limit_s, state) from None


def study_state(storage: str) -> dict[str, Any]:
    """Every trial of the storage's studies as it is now: state, parameters, attributes, and
    the age of its heartbeat by the database's clock (None: no heartbeat row)."""
    from direct2event.glue.sweep.storage import open_storage

    try:
        db = open_storage(storage)
        out: dict[str, Any] = {}
        for name in optuna.get_all_study_names(db):
            study = optuna.load_study(study_name=name, storage=db)
            now, beats = db.heartbeats(study._study_id)
            out[name] = [
                {
                    "number": t.number,
                    "state": t.state.name,
                    "params": t.params,
                    "user_attrs": {k: v for k, v in t.user_attrs.items() if k != "checks"},
                    "system_attrs": t.system_attrs,
                    "heartbeat_age_s": (
                        (now - beats[t._trial_id]).total_seconds() if t._trial_id in beats else None
                    ),
                    "started": str(t.datetime_start),
                }
                for t in study.get_trials(deepcopy=False)
            ]
        return out
    except Exception as err:  # the report must still be written
        return {"error": f"{type(err).__name__}: {err}"}


def make_project(folder: Path) -> Path:
    """A project folder with its own conf (digits made tiny, as the tests do), data/, mlflow.db."""
    return tiny_project(folder)


def env_for(folder: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    # this process points MLflow at each place's store in turn (set_tracking_uri and
    # set_registry_uri export these): a child gets its own place's store only
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PGPASSFILE")
    }
    env.update(
        {
            "KEDRO_DISABLE_TELEMETRY": "true",
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
            **(extra or {}),
        }
    )
    return env


def start(folder: Path, cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd, cwd=folder, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    _LIVE[:] = [p for p in _LIVE if p.poll() is None] + [proc]
    return proc


def kedro(pipeline: str, params: str = "") -> list[str]:
    cmd = [sys.executable, "-m", "kedro", "run", "--pipelines", pipeline]
    return cmd + (["--params", params] if params else [])


def moment(log: Path, folder: Path | None = None, since: float = 0.0) -> str:
    """The node the log shows running last, or the phase around the nodes; for a seeds study
    (``folder`` given) the node of the seed runs' logs, by seed."""
    if folder is not None:
        seeds = sorted((folder / "data/08_reporting/digits/logs").glob("seed_*.log"))
        found = [
            f"{p.stem}: {moment(p)}" for p in seeds if p.stat().st_mtime >= log.stat().st_mtime - 1
        ]
        return "; ".join(found) or "start-up"
    text = log.read_text(errors="replace")
    nodes = NODE.findall(text)
    if not nodes:
        return "start-up"
    if "Pipeline execution completed" in text:
        return "after the last node"
    return nodes[-1]


def finish(
    folder: Path, cmd: list[str], env: dict[str, str], log: Path, deadline: Deadline
) -> float:
    t0 = time.perf_counter()
    proc = start(folder, cmd, log, env)
    if deadline.wait(proc) != 0:
        raise RuntimeError(f"the normal command failed after a stop: see {log}")
    return time.perf_counter() - t0


def stop_once(
    rng: random.Random,
    folder: Path,
    cmd: list[str],
    env: dict[str, str],
    log: Path,
    span_s: float,
    deadline: Deadline,
    seeds: bool = False,
) -> dict[str, Any]:
    """Start ``cmd``, stop it at a random moment within ``span_s``, report where and how."""
    sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
    delay = rng.uniform(0.2, span_s)
    started = time.time()
    proc = start(folder, cmd, log, env)
    try:
        proc.wait(timeout=delay)
        return {"signal": sig.name, "at_s": round(delay, 2), "moment": "finished before", "rc": 0}
    except subprocess.TimeoutExpired:
        pass
    where = moment(log, folder if seeds else None, started)
    proc.send_signal(sig)
    rc = deadline.wait(proc)
    return {"signal": sig.name, "at_s": round(delay, 2), "moment": where, "rc": rc}


def summary_core(path: Path) -> dict[str, Any]:
    """summary.json without what legitimately differs between runs (nothing timed is in it)."""
    return json.loads(path.read_text())


def running_runs(tracking_uri: str) -> list[str]:
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    found = []
    for exp in client.search_experiments():
        found += [
            r.info.run_id
            for r in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
        ]
    return found


def broken_versions(tracking_uri: str) -> list[str]:
    """Registry versions whose model does not load (or carry no tags: half-registered)."""
    from direct2event.glue import registry

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = mlflow.MlflowClient()
    broken = []
    for model in client.search_registered_models():
        for v in client.search_model_versions(f"name = '{model.name}'"):
            uri = f"models:/{model.name}/{v.version}"
            try:
                registry.load(uri)
                if registry.COMPLETE_TAG not in v.tags:
                    broken.append(f"{uri}: registered without its tags")
            except Exception as err:
                broken.append(f"{uri}: {type(err).__name__}: {err}"[:300])
    return broken


def unreadable_files(folder: Path) -> list[str]:
    """Data files under ``folder/data`` that do not load with their format's reader."""
    import nir
    from PIL import Image

    bad = []
    for path in (folder / "data").rglob("*"):
        if not path.is_file() or "services" in path.parts:
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix in (".pkl", ".pickle"):
                pickle.loads(path.read_bytes())
            elif path.suffix in (".pt", ".pth"):
                torch.load(path, map_location="cpu", weights_only=False)
            elif path.suffix == ".png":
                Image.open(path).verify()
            elif path.suffix == ".nir":
                nir.read(str(path))
            elif path.suffix == ".db":
                with sqlite3.connect(path) as db:
                    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
        except Exception as err:
            bad.append(f"{path.relative_to(folder)}: {type(err).__name__}: {err}"[:300])
    return bad


def trial_report(storage: str, before: dict[int, tuple], n_trials: int) -> dict[str, Any]:
    """Complete trials lost (complete before a stop, not after) or beyond ``n_trials``."""
    from direct2event.glue.sweep.storage import open_storage

    db = open_storage(storage)
    [name] = optuna.get_all_study_names(db)
    trials = optuna.load_study(study_name=name, storage=db).get_trials(deepcopy=False)
    complete = {t.number: tuple(t.values) for t in trials if t.state == TrialState.COMPLETE}
    lost = [n for n, v in before.items() if complete.get(n) != v]
    return {
        "complete": len(complete),
        "lost": len(lost),
        "duplicated": max(0, len(complete) - n_trials),
        "left_running": sum(t.state == TrialState.RUNNING for t in trials),
        "values": complete,
    }


def digits_runs(rng: random.Random, work: Path, ref: dict[str, Any], span: float, n: int) -> dict:
    folder = make_project(work / "digits")
    env = env_for(folder)
    stops, equal = [], []
    for i in range(n):
        deadline = Deadline(f"digits_run: stop {i} and the run after it")
        stops.append(
            stop_once(rng, folder, kedro("digits"), env, folder / f"stop{i}.log", span, deadline)
        )
        finish(folder, kedro("digits"), env, folder / f"again{i}.log", deadline)
        equal.append(summary_core(folder / "data/08_reporting/digits/summary.json") == ref)
    uri = env["MLFLOW_TRACKING_URI"]
    return {
        "stops": stops,
        "runs_left_running": len(running_runs(uri)),
        "versions_broken": broken_versions(uri),
        "files_unreadable": unreadable_files(folder),
        "final_equals_uninterrupted": all(equal),
        "reruns_equal": equal,
    }


def sweep(
    rng: random.Random,
    folder: Path,
    env: dict[str, str],
    storage: str,
    span: float,
    rounds: tuple[int, ...],
) -> dict[str, Any]:
    """Two workers per round (n_trials grows by round); each round one worker is stopped at a
    random moment and started again, twice."""
    place = "sweep_" + ("postgres" if storage.startswith("postgresql") else "sqlite")
    finish(
        folder,
        kedro("digits", "digits.tuning.enabled=false"),
        env,
        folder / "d.log",
        Deadline(f"{place}: network D"),
    )
    stops, trials = [], {}
    before: dict[int, tuple] = {}
    for r, n_trials in enumerate(rounds):
        params = (
            f"digits.source_model=latest,digits.tuning.storage={storage},"
            f"digits.tuning.n_trials={n_trials},digits.tuning.heartbeat_interval_s=2,"
            "digits.tuning.grace_period_s=20"
        )
        cmd = kedro("digits.sweep", params)
        deadline = Deadline(f"{place}: round {r} (n_trials {n_trials})", storage)
        procs = [start(folder, cmd, folder / f"w{r}_{k}.log", env) for k in range(2)]
        for k in range(2):  # stop worker k at a random moment, then start it again
            victim = rng.randrange(2)
            sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
            # a worker spends its first ~half-run starting up (Kedro, data, D, lambda = 0):
            # the window leans towards its trials
            delay = rng.uniform(0.4 * span, 1.3 * span)
            try:
                procs[victim].wait(timeout=delay)
                stops.append({"signal": sig.name, "moment": "finished before", "rc": 0})
            except subprocess.TimeoutExpired:
                where = moment(folder / f"w{r}_{victim}.log")
                if where == "tune_rate_lambda":
                    where = "tune_rate_lambda (inside a trial or waiting)"
                procs[victim].send_signal(sig)
                rc = deadline.wait(procs[victim])
                stops.append(
                    {"signal": sig.name, "at_s": round(delay, 2), "moment": where, "rc": rc}
                )
            procs[victim] = start(folder, cmd, folder / f"w{r}_{victim}_again{k}.log", env)
        codes = [deadline.wait(p) for p in procs]
        if codes != [0, 0]:
            raise RuntimeError(f"sweep workers failed after the stops: {codes} in {folder}")
        report = trial_report(storage, before, n_trials)
        before = report.pop("values")
        trials[f"round{r}"] = report
    final = kedro("digits", params)
    finish(folder, final, env, folder / "final.log", Deadline(f"{place}: final run", storage))
    uri = env["MLFLOW_TRACKING_URI"]
    return {
        "stops": stops,
        "trials": trials,
        "trials_lost": sum(t["lost"] for t in trials.values()),
        "trials_duplicated": sum(t["duplicated"] for t in trials.values()),
        "trials_left_running": sum(t["left_running"] for t in trials.values()),
        "runs_left_running": len(running_runs(uri)),
        "versions_broken": broken_versions(uri),
        "files_unreadable": unreadable_files(folder),
    }


def seeds_study(rng: random.Random, work: Path, n: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "direct2event",
        "seeds",
        "--key",
        "digits",
        "--seeds",
        "0",
        "1",
    ]
    cmd += ["--jobs", "2"]
    ref_folder = make_project(work / "seeds-ref")
    t0 = time.perf_counter()
    finish(
        ref_folder, cmd, env_for(ref_folder), ref_folder / "seeds.log", Deadline("seeds: reference")
    )
    span = time.perf_counter() - t0
    reference = {
        s: summary_core(ref_folder / f"data/08_reporting/digits/seed_{s}/summary.json")
        for s in (0, 1)
    }
    folder = make_project(work / "seeds")
    env = env_for(folder)
    stops = []
    for i in range(n):
        deadline = Deadline(f"seeds: stop {i} and the study after it")
        stops.append(
            stop_once(rng, folder, cmd, env, folder / f"stop{i}.log", span, deadline, seeds=True)
        )
        finish(folder, cmd, env, folder / f"again{i}.log", deadline)
    uri = env["MLFLOW_TRACKING_URI"]
    final = {
        s: summary_core(folder / f"data/08_reporting/digits/seed_{s}/summary.json") for s in (0, 1)
    }
    return {
        "stops": stops,
        "uninterrupted_s": round(span, 1),
        "runs_left_running": len(running_runs(uri)),
        "versions_broken": broken_versions(uri),
        "files_unreadable": unreadable_files(folder),
        "final_equals_uninterrupted": final == reference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="default: drawn and recorded")
    parser.add_argument("--out", type=Path, default=result_path("chaos"))
    parser.add_argument("--skip", nargs="*", default=[], help="places to skip (postgres, ...)")
    parser.add_argument("--deadline-factor", type=float, default=8.0)
    parser.add_argument("--deadline-min-s", type=float, default=300.0)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10_000)
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="d2e-chaos-"))
    t0 = time.perf_counter()
    places: dict[str, Any] = {}
    partial = args.out.with_suffix(".partial.json")
    partial.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": f"python benchmarks/chaos.py --seed {seed}",
        "machine": machine_name(),
        "torch": torch_build(),
    }

    def keep(name: str, result: dict[str, Any]) -> None:
        places[name] = result
        partial.write_text(json.dumps(places, indent=2))  # a crash later keeps what was found
        print(f"{name} done: {json.dumps(result)[:300]}", flush=True)

    overrun, error = None, None
    try:
        ref_folder = make_project(work / "reference")
        span = finish(
            ref_folder,
            kedro("digits"),
            env_for(ref_folder),
            ref_folder / "run.log",
            Deadline("reference run"),
        )
        reference = summary_core(ref_folder / "data/08_reporting/digits/summary.json")
        Deadline.limit_s = max(args.deadline_min_s, args.deadline_factor * span)
        result["uninterrupted_digits_run_s"] = round(span, 1)
        result["phase_deadline_s"] = round(Deadline.limit_s, 1)
        print(
            f"uninterrupted digits run: {span:.1f} s; each phase ends within "
            f"{Deadline.limit_s:.0f} s or fails",
            flush=True,
        )
        run_places(rng, work, reference, span, args.skip, keep)
    except PhaseOverrun as err:
        overrun = {"phase": err.phase, "limit_s": round(err.limit_s, 1), "study": err.state}
        print(f"FAILED: {err}; the study then: {json.dumps(err.state)[:2000]}", flush=True)
    except Exception as err:  # a normal command that failed after a stop: a finding, written
        error = f"{type(err).__name__}: {err}"
        print(f"FAILED: {error}", flush=True)
    for proc in _LIVE:  # nothing is left behind, whatever happened
        if proc.poll() is None:
            proc.kill()
    stops = [s for p in places.values() for s in p["stops"]]
    totals = {
        "stops": len(stops),
        "stops_by_moment": dict(Counter(s["moment"] for s in stops)),
        "stops_by_signal": dict(Counter(s["signal"] for s in stops)),
        "stops_landed": sum(s["moment"] != "finished before" for s in stops),
        "stopped_runs_exit_zero": sum(
            s["rc"] == 0 and s["moment"] != "finished before" for s in stops
        ),
        "phases_past_deadline": int(overrun is not None),
        "phases_failed": int(error is not None),
        "runs_left_running": sum(p["runs_left_running"] for p in places.values()),
        "trials_lost": sum(p.get("trials_lost", 0) for p in places.values()),
        "trials_duplicated": sum(p.get("trials_duplicated", 0) for p in places.values()),
        "versions_broken": sum(len(p["versions_broken"]) for p in places.values()),
        "files_unreadable": sum(len(p["files_unreadable"]) for p in places.values()),
        "final_equals_uninterrupted": all(
            p.get("final_equals_uninterrupted", True) for p in places.values()
        ),
    }
    result.update(
        seconds=round(time.perf_counter() - t0, 1),
        totals=totals,
        overrun=overrun,
        error=error,
        places=places,
        work_folder=str(work),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    partial.unlink(missing_ok=True)
    print(json.dumps(totals, indent=2))
    clean = (
        overrun is None
        and error is None
        and totals["runs_left_running"] == totals["trials_lost"] == 0
        and totals["trials_duplicated"] == 0
        and totals["versions_broken"] == totals["files_unreadable"] == 0
        and totals["stopped_runs_exit_zero"] == 0
        and totals["final_equals_uninterrupted"]
    )
    if clean:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept the folders for a look: {work}")
    raise SystemExit(0 if clean else 1)


def run_places(
    rng: random.Random,
    work: Path,
    reference: dict[str, Any],
    span: float,
    skip: list[str],
    keep: Any,
) -> None:
    """The four places, in order; each result is kept as soon as it is known."""
    keep("digits_run", digits_runs(rng, work, reference, span, 8))
    sq = make_project(work / "sweep-sqlite")
    keep("sweep_sqlite", sweep(rng, sq, env_for(sq), f"sqlite:///{sq / 'optuna.db'}", span, (4, 8)))
    if "postgres" not in skip:
        from direct2event.glue import services

        pg = make_project(work / "sweep-postgres")
        svc = services.start(pg / "data/services", pg_port=free_port(), mlflow_port=free_port())
        try:
            env = env_for(
                pg, {"MLFLOW_TRACKING_URI": svc.tracking_uri, "PGPASSFILE": str(svc.pgpass)}
            )
            os.environ["PGPASSFILE"] = str(svc.pgpass)  # this process reads the study too
            keep("sweep_postgres", sweep(rng, pg, env, svc.storage_url, span, (4, 8)))
        finally:
            services.stop(svc.folder)
            os.environ.pop("PGPASSFILE", None)
    keep("seeds", seeds_study(rng, work, 4))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
