"""No MLflow run left RUNNING by a process that is gone, and no stop that is lost.

Every pipeline run records where it runs (tags ``host`` and ``pid``) and a ``heartbeat`` tag
(Unix seconds) refreshed every :data:`HEARTBEAT_S` seconds while it runs. SIGTERM or SIGINT end
the run (and its open trial runs) as FAILED with the signal named and exit non-zero
(:func:`install_stop_handlers`). The handler's flag is the truth: the exception it raises can
be lost (Python drops exceptions raised in weakref callbacks and destructors), so the flag is
checked again at safe points that always come (every node boundary, every training step and
inference batch: :func:`raise_if_stopped`) and at exit, where a stopped process always ends
non-zero. A SIGKILL or a lost machine leaves the run RUNNING; the next pipeline run on the same
tracking store, or the command below, marks such runs FAILED with the reason: a run of this
host whose process no longer exists, or any run whose heartbeat stopped more than
:data:`STALE_AFTER_S` seconds ago, and the nested runs of those.

    python -m direct2event reap-runs [--dry-run]     (make reap-runs)
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from direct2event.snn import interrupts

logger = logging.getLogger(__name__)

HEARTBEAT_S = 60.0
STALE_AFTER_S = 5 * HEARTBEAT_S
EXPERIMENT = "direct2event"


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived: raised in the main thread, never inside a database write.

    It derives from :class:`KeyboardInterrupt`, not :class:`Exception`, so that library code
    (``except Exception`` in MLflow, Kedro, plugins) cannot swallow it, while Optuna still marks
    the running trial FAIL at once (it catches ``KeyboardInterrupt`` for that)."""


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


# Frames of these modules are inside a database read or write: a stop raised there could leave
# a transaction open and the SQLite file locked ("database is locked" for a minute, then a run
# left RUNNING), so the stop waits until the main thread is out of them.
DB_MODULES = ("sqlalchemy", "sqlite3", "psycopg2", "alembic", "mlflow.store", "optuna.storages")
RETRY_S = 0.05  # how often a deferred stop is tried again


class _Stop:
    """This process's stop state: the signal received (once), and the depth of sections in
    which a stop must wait (:func:`uninterrupted`)."""

    def __init__(self) -> None:
        self.signal: str | None = None  # set when Terminated has been raised
        self.pending: int | None = None  # a signal that waits for a safe point
        self.depth = 0
        self.installed = False


_stop = _Stop()


def _in_database(frame: Any) -> bool:
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(DB_MODULES):
            return True
        frame = frame.f_back
    return False


def _raise(signum: int) -> None:
    """Record the stop (the flag every safe point reads) and raise it here."""
    _stop.pending = None
    _stop.signal = _stop.signal or signal.Signals(signum).name
    raise Terminated(f"stopped by {_stop.signal}")


def _handler(signum: int, frame: Any) -> None:
    if _stop.signal is not None:  # already stopping: the flag is set, safe points raise it
        return
    if _stop.depth > 0 or _in_database(frame):
        _stop.pending = signum  # raised when the section ends, or tried again shortly
        if _stop.depth == 0:
            threading.Timer(RETRY_S, os.kill, (os.getpid(), signum)).start()
        return
    _raise(signum)


def raise_if_stopped() -> None:
    """A safe point: raise :class:`Terminated` when a stop has arrived, also when the exception
    the handler raised was lost (Python ignores exceptions raised in weakref callbacks and
    ``__del__``: "Exception ignored in ..."). Called at node boundaries and, through
    :mod:`direct2event.snn.interrupts`, at every training step and inference batch; never from
    inside a database write, so a stop waiting for one is raised here too."""
    if _stop.signal is not None:
        raise Terminated(f"stopped by {_stop.signal}")
    if _stop.pending is not None and _stop.depth == 0:
        _raise(_stop.pending)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """A section a stop must not cut (registering one model version with its tags and alias):
    a signal that arrives inside is raised as :class:`Terminated` when the section ends."""
    _stop.depth += 1
    try:
        yield
    finally:
        _stop.depth -= 1
    if _stop.depth == 0 and _stop.pending is not None and _stop.signal is None:
        signum, _stop.pending = _stop.pending, None
        _stop.signal = signal.Signals(signum).name
        raise Terminated(f"stopped by {_stop.signal}")


def stopped_by() -> str | None:
    """``"SIGTERM"`` / ``"SIGINT"`` once a stop has been raised in this process, else None."""
    return _stop.signal


def install_stop_handlers(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> bool:
    """From now on SIGTERM and SIGINT raise :class:`Terminated` in the main thread (never inside
    a database write), the library's safe points check for a stop (:func:`raise_if_stopped`),
    and at exit every MLflow run this process left open is ended FAILED with
    ``failure_reason`` (MLflow's own exit handler would mark it FINISHED) and the process exits
    with 128 + the signal's number, whatever the code was about to return. Only the main thread
    can set handlers; returns whether they are set."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for s in signals:
        signal.signal(s, _handler)
    interrupts.add_check(raise_if_stopped)
    if not _stop.installed:
        atexit.register(_end_stopped_process)  # after MLflow's own: runs before it (LIFO)
        _stop.installed = True
    return True


DIE_WITH_PARENT_ENV = "DIRECT2EVENT_DIE_WITH_PARENT"
PARENT_RUN_ENV = "DIRECT2EVENT_PARENT_RUN_ID"  # a seed study's run: the pipeline run is its child


def die_with_parent() -> None:
    """When started by a seeds study (``DIRECT2EVENT_DIE_WITH_PARENT`` = its pid), ask Linux
    for SIGTERM when that process dies, even by SIGKILL: a seed run left alone would race the
    next study on its files. Elsewhere, or when the study is already gone, SIGTERM now."""
    parent = os.environ.get(DIE_WITH_PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))
    if os.getppid() != int(parent):  # it died before the request: stop as it would have
        os.kill(os.getpid(), signal.SIGTERM)


def _end_stopped_process() -> None:
    """At exit after a stop (even one whose exception was lost and whose code went on to
    return 0): close the runs FAILED, then exit with ``128 + signal`` as a process killed by
    the signal would (``os._exit``: the exit handlers left would end the runs FINISHED)."""
    signum = _stop.pending if _stop.signal is None else signal.Signals[_stop.signal]
    if signum is None:
        return
    _stop.signal = signal.Signals(signum).name
    _close_stopped_runs()
    logging.shutdown()  # flushes the log files; os._exit would skip it
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more to write
            pass
    os._exit(STOPPED_EXIT_BASE + int(signum))


STOPPED_EXIT_BASE = 128  # a stopped process exits 128 + signal, as the shell reports a kill


def _close_stopped_runs() -> None:
    """After a stop: end every run still open in this process FAILED with the reason."""
    if _stop.signal is None:
        return
    reason = f"stopped by {_stop.signal}"
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut this short
        signal.signal(sig, signal.SIG_IGN)
    if mlflow.active_run() is None:  # nothing open (no client: it would create a store)
        return
    client = MlflowClient()
    while (run := mlflow.active_run()) is not None:
        try:
            client.set_tag(run.info.run_id, "failure_reason", reason)
            if run.data.tags.get("state") == "RUNNING":  # a sweep trial's own state tag
                client.set_tag(run.info.run_id, "state", "FAIL")
            mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        except Exception as err:  # the store is gone: the reaper marks it later
            logger.warning("Run %s not closed after the stop: %s", run.info.run_id, err)
            break


PAUSE_ENV = "DIRECT2EVENT_PAUSE_AT"  # test-only: names of pause points, comma-separated
PAUSE_FILE_ENV = "DIRECT2EVENT_PAUSE_FILE"  # each pause point reached is appended here
SIGNAL_IN_DEL_ENV = "DIRECT2EVENT_SIGNAL_IN_DEL_AT"  # test-only: SIGTERM inside a destructor
PAUSE_MAX_S = 600.0


class _SignalOnDelete:
    """Sends this process SIGTERM from its destructor: the handler runs inside ``__del__``,
    where Python prints "Exception ignored in ..." and drops the exception it raises."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


def pause_point(name: str) -> None:
    """A test-only pause: when ``name`` is listed in ``DIRECT2EVENT_PAUSE_AT``, append it to the
    file ``DIRECT2EVENT_PAUSE_FILE`` and wait (at most 10 min) for a signal. A test waits for
    that line, an observable event, before it stops the process, instead of sleeping a fixed
    time that a faster or slower machine gets wrong. When ``name`` is listed in
    ``DIRECT2EVENT_SIGNAL_IN_DEL_AT`` the process sends itself SIGTERM from a destructor there
    (a stop whose exception Python drops). Does nothing when the variables are unset."""
    if name in os.environ.get(SIGNAL_IN_DEL_ENV, "").split(","):
        _SignalOnDelete()  # collected at once: the signal arrives inside its __del__
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted or name not in wanted.split(","):
        return
    marker = os.environ.get(PAUSE_FILE_ENV)
    if marker:
        with open(marker, "a") as out:
            out.write(f"{name} {os.getpid()}\n")
    logger.warning("paused at %s (%s) until a signal arrives", name, PAUSE_ENV)
    deadline = time.monotonic() + PAUSE_MAX_S
    while time.monotonic() < deadline:
        time.sleep(0.05)


def alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs (an exited process not yet collected, a zombie, does not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited child not yet reaped) is not alive
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return True  # no /proc (not Linux): os.kill said it exists
    return state != "Z"


def stale_reason(tags: dict[str, str], now: float, host: str) -> str | None:
    """Why a RUNNING run's process is gone, or None when it may still be running or cannot be
    told: a run of this host whose process no longer exists (every run is tagged host and pid
    as it is created), or a run of any host whose heartbeat stopped. A run with no process tags
    (made by another tool) is never touched; nested runs follow their parent (:func:`reap`)."""
    if tags.get("host") == host and "pid" in tags and not alive(int(tags["pid"])):
        return f"process {tags['pid']} on {host} is gone (killed or crashed)"
    if "heartbeat" not in tags:
        return None
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
