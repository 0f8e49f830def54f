"""No MLflow run left RUNNING by a process that is gone.

Every pipeline run records where it runs (tags ``host`` and ``pid``) and a ``heartbeat`` tag
(Unix seconds) refreshed every :data:`HEARTBEAT_S` seconds while it runs. SIGTERM or SIGINT end
the run (and its open trial runs) as FAILED with the signal named and exit non-zero
(:func:`stop_on_signals`). A SIGKILL or a lost machine leaves the run RUNNING; the next pipeline
run on the same tracking store, or the command below, marks such runs FAILED with the reason:
a run of this host whose process no longer exists, or any run whose heartbeat stopped more than
:data:`STALE_AFTER_S` seconds ago, and the nested runs of those.

    python -m direct2event.runs [--dry-run]     (make reap-runs)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

HEARTBEAT_S = 60.0
STALE_AFTER_S = 5 * HEARTBEAT_S
EXPERIMENT = "direct2event"


class Terminated(Exception):
    """SIGTERM or SIGINT arrived: raised in the main thread so that the runner's error path
    (Kedro's and kedro-mlflow's hooks, Optuna's trial bookkeeping) closes everything."""


def termination(error: BaseException | None) -> Terminated | None:
    """The :class:`Terminated` behind ``error`` (Kedro wraps errors raised while a dataset
    loads or saves), or None when the run failed for another reason."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, Terminated):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def process_tags() -> dict[str, str]:
    """Where this run lives: host, pid and a first heartbeat."""
    return {
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "heartbeat": str(int(time.time())),
    }


class Heartbeat:
    """Refreshes the ``heartbeat`` tag of a run from a daemon thread until stopped."""

    def __init__(self, run_id: str, interval_s: float = HEARTBEAT_S) -> None:
        self.run_id, self.interval_s = run_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="mlflow-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _beat(self) -> None:
        client = MlflowClient()
        while not self._stop.wait(self.interval_s):
            try:
                client.set_tag(self.run_id, "heartbeat", str(int(time.time())))
            except Exception as err:
                logger.debug("heartbeat of run %s not written: %s", self.run_id, err)

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def stop_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT raise :class:`Terminated` in the main thread (elsewhere
    nothing changes: handlers can only be set there). The previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        raise Terminated(f"stopped by {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_reason(tags: dict[str, str], now: float, host: str) -> str | None:
    """Why a RUNNING run's process is gone, or None when it may still be running (or the run
    carries no process tags: made before they existed, or by another tool)."""
    if "heartbeat" not in tags:
        return None
    if tags.get("host") == host and "pid" in tags and not _alive(int(tags["pid"])):
        return f"process {tags['pid']} on {host} is gone (killed or crashed)"
    age = now - float(tags["heartbeat"])
    if age > STALE_AFTER_S:
        return f"no heartbeat from {tags.get('host', '?')} for {age / 60:.0f} min"
    return None


def reap(
    client: MlflowClient | None = None,
    experiment: str = EXPERIMENT,
    keep: str | None = None,
    dry_run: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, str]:
    """Mark RUNNING runs whose process is gone FAILED (with tag ``failure_reason``), and the
    nested runs under them; ``keep`` is the caller's own run. Returns ``{run_id: reason}``."""
    client = client or MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    running = client.search_runs(
        [found.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000
    )
    now, host = time.time(), socket.gethostname()
    stale: dict[str, str] = {}
    for run in running:
        reason = stale_reason(run.data.tags, now, host)
        if reason and run.info.run_id != keep:
            stale[run.info.run_id] = reason
    grew = True
    while grew:  # nested runs (trials, seeds) of a stale run are stale too
        grew = False
        for run in running:
            parent = run.data.tags.get("mlflow.parentRunId")
            if parent in stale and run.info.run_id not in stale and run.info.run_id != keep:
                stale[run.info.run_id] = (
                    f"its parent run {parent} was left running: {stale[parent]}"
                )
                grew = True
    for run_id, reason in stale.items():
        log(f"{'would mark' if dry_run else 'marking'} run {run_id} FAILED: {reason}")
        if not dry_run:
            client.set_tag(run_id, "failure_reason", reason)
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
    return stale


def main() -> None:
    """``python -m direct2event.runs``: mark the runs left RUNNING by gone processes FAILED."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="only list what would be marked")
    parser.add_argument("--experiment", default=EXPERIMENT)
    args = parser.parse_args()
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    stale = reap(experiment=args.experiment, dry_run=args.dry_run)
    print(f"{len(stale)} run(s) {'to mark' if args.dry_run else 'marked'} FAILED")


if __name__ == "__main__":
    main()
