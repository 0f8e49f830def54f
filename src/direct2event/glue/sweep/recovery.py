"""Workers that die or stop never cost the sweep a trial nor make it wait forever: trials of
dead workers are failed (at once on their own host, after the grace period elsewhere), and the
lambda of a trial failed by a stop or a death is queued again."""

from __future__ import annotations

import logging
import math
import socket
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from direct2event.glue.runs import alive
from direct2event.glue.sweep.config import PARAM
from direct2event.glue.sweep.policy import TuningError
from direct2event.glue.sweep.storage import OwnedStorage

logger = logging.getLogger(__name__)

POLL_S = 2.0  # how often a waiting worker looks at the study (a cheap query)


def rdb_backend(study: optuna.Study) -> OwnedStorage | None:
    """The study's :class:`OwnedStorage` under Optuna's cache (None for another storage)."""
    storage = getattr(study._storage, "_backend", study._storage)
    return storage if isinstance(storage, OwnedStorage) else None


class TrialWatch:
    """A worker's watch over the trials other workers run: how long since each RUNNING trial
    last showed a sign of life (its heartbeat changed, or it appeared), on this worker's own
    clock, so no clock of another machine is trusted.

    A trial silent for longer than ``grace_period_s`` (plus a poll) is failed with the reason
    and its lambda queued again (:func:`requeue_interrupted_trials`). Optuna's heartbeat check
    fails most such trials first; this one also covers a trial with no heartbeat row (a worker
    of an older version, or any storage write made outside :class:`OwnedStorage`), which Optuna
    never fails, so no wait lasts longer than the grace period without a decision. While it
    waits the worker logs, every ``grace_period_s``, which trials it waits for and how long
    each has been silent."""

    def __init__(self, grace_period_s: float, poll_s: float = POLL_S) -> None:
        self.grace_period_s, self.poll_s = grace_period_s, poll_s
        self.seen: dict[int, tuple[Any, float]] = {}  # trial id -> (last heartbeat, since)
        self.waiting_since: float | None = None
        self.logged_at = -math.inf

    def silence(self, study: optuna.Study, running: list[FrozenTrial]) -> dict[int, float]:
        """Seconds since each running trial (by number) last showed a sign of life."""
        backend = rdb_backend(study)
        beats = backend.heartbeats(study._study_id)[1] if backend is not None else {}
        now, out = time.monotonic(), {}
        alive_ids = {t._trial_id for t in running}
        for trial_id in set(self.seen) - alive_ids:
            del self.seen[trial_id]
        for t in running:
            beat = beats.get(t._trial_id)
            last = self.seen.get(t._trial_id)
            if last is None or last[0] != beat:
                self.seen[t._trial_id] = (beat, now)
            out[t.number] = now - self.seen[t._trial_id][1]
        return out

    def fail_silent_trials(self, study: optuna.Study, trials: list[FrozenTrial]) -> list[int]:
        """Fail the running trials silent for longer than the grace period; their numbers."""
        running = [t for t in trials if t.state == TrialState.RUNNING]
        silent = self.silence(study, running)
        failed = []
        for t in running:
            quiet = silent[t.number]
            if quiet <= self.grace_period_s + self.poll_s:
                continue
            owner = f"{t.user_attrs.get('host', 'unknown host')}:{t.user_attrs.get('pid', '?')}"
            reason = (
                f"no heartbeat for {quiet:.0f} s (grace period {self.grace_period_s:g} s) from "
                f"worker {owner}: it died or lost the database"
            )
            try:
                study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except (RuntimeError, ValueError):  # it finished, or another worker failed it
                continue
            except Exception as err:
                raise TuningError(
                    f"Trial {t.number} ({_lambda_text(t)}) of worker {owner} has shown no sign "
                    f"of life for {quiet:.0f} s and cannot be failed ({type(err).__name__}: "
                    f"{err}). Fail it by hand (optuna.load_study(...).tell({t.number}, "
                    "state=TrialState.FAIL)) or start a new study (tuning.study_name)."
                ) from None
            logger.warning("Trial %d failed: %s", t.number, reason)
            failed.append(t.number)
        return failed

    def report_wait(self, name: str, complete: int, running: list[FrozenTrial]) -> None:
        """Log, when the wait starts and every grace period after, what it waits for."""
        now = time.monotonic()
        if self.waiting_since is None:
            self.waiting_since, self.logged_at = now, -math.inf
        if now - self.logged_at < self.grace_period_s:
            return
        self.logged_at = now
        waited = now - self.waiting_since
        parts = []
        for t in running:
            since = self.seen.get(t._trial_id, (None, now))[1]
            owner = f"{t.user_attrs.get('host', '?')}:{t.user_attrs.get('pid', '?')}"
            parts.append(
                f"trial {t.number} ({_lambda_text(t)}, worker {owner}, silent {now - since:.0f} s)"
            )
        logger.info(
            "Study %s: %d finished, waiting %.0f s for %s; a trial silent for %g s is failed "
            "and its lambda run again here",
            name,
            complete,
            waited,
            "; ".join(parts),
            self.grace_period_s,
        )


def _lambda_text(trial: FrozenTrial) -> str:
    value = retry_params(trial).get(PARAM)
    return "no λ yet" if value is None else f"λ = {value:.4g}"


def fail_dead_local_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the running trials of workers on this host whose process is gone (SIGKILL, a
    crash): known dead at once, so the sweep need not wait ``grace_period_s`` for the heartbeat
    to lapse. Returns their numbers."""
    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != host or not isinstance(pid, int) or alive(pid):
            continue
        storage = study._storage  # Optuna's own API for this (fail_stale_trials) uses it too
        try:
            storage.set_trial_user_attr(
                trial._trial_id, "fail_reason", f"worker process {pid} on {host} is gone"
            )
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except (RuntimeError, ValueError):  # another worker failed it first
            continue
        logger.warning("Trial %d failed: its worker %d on %s is gone", trial.number, pid, host)
        failed.append(trial.number)
    return failed


RETRIED_REASONS = ("stopped by", "worker process", "no heartbeat")  # not errors: run again


def retry_params(trial: FrozenTrial) -> dict[str, Any]:
    """The lambda a trial measured or was given: its parameters, or, for an enqueued trial
    whose worker died before it drew the lambda, the fixed parameters it was queued with."""
    return dict(trial.params) or dict(trial.system_attrs.get("fixed_params") or {})


def _queue_again(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Queue ``trial``'s lambda again (once per failed trial); False when it had none yet, so
    the sampler draws a new one in its place."""
    params = retry_params(trial)
    if not params:
        logger.debug(
            "Trial %d failed before it drew λ (%s): a new λ is drawn", trial.number, reason
        )
        return False
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            user_attrs={"retry_of": trial.number},
            system_attrs={"failed_trial": trial.number, "fixed_params": params},
        )
    )
    logger.info("Trial %d (%s) queued again: %s", trial.number, params, reason)
    return True


def requeue_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's heartbeat check failed ``trial`` (its heartbeat is older than the grace period):
    its lambda is measured again, as a stopped trial's is (the storage's stale-trial callback;
    Optuna allows no reason on a trial it has failed)."""
    retried = {t.system_attrs.get("failed_trial") for t in study.get_trials(deepcopy=False)}
    if trial.number not in retried:
        _queue_again(study, trial, "no heartbeat for over the grace period")


def requeue_interrupted_trials(study: optuna.Study) -> list[int]:
    """Queue again the lambda of every trial a stop or a dead worker failed (once per failed
    trial), so that an interrupted sweep ends with the same trials as an uninterrupted one
    instead of drawing a new lambda in their place. A trial that failed by an error is not
    retried. Returns the numbers of the trials queued again."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    queued = []
    for t in trials:
        reason = str(t.user_attrs.get("fail_reason", ""))
        if t.state != TrialState.FAIL or t.number in retried:
            continue
        if reason.startswith(RETRIED_REASONS) and _queue_again(study, t, reason):
            queued.append(t.number)
    return queued
