"""Optuna sweep of the rate-penalty strength lambda (tracking side: Optuna and MLflow, no torch).

The study has two objectives, validation accuracy of network E (maximise) and its energy per
sample (minimise); lambda is drawn log-uniformly. It lives in an Optuna storage given by URL, so
a run that is started again continues the same study (the trial count only grows), and several
processes or machines can add trials to one study through a shared database. The study's
default name carries a fingerprint of everything that changes what a trial measures (data,
model, training, transfer settings, source model), so a changed setup starts a new study
instead of mixing incomparable trials.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import socket
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.distributions import FloatDistribution
from optuna.storages._rdb import models as rdb_models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field

from direct2event.glue.masking import mask_credentials
from direct2event.glue.runs import Terminated, alive, pause_point
from direct2event.glue.tracking import epoch_logger, in_nanojoules
from direct2event.snn.models import checkpoint

logger = logging.getLogger(__name__)

PARAM = "rate_lambda"
DIRECTIONS = (StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE)
OBJECTIVES = ("val_accuracy", "energy_uJ")
_SCHEMA_ATTEMPTS = 5
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts toward n_trials
POLL_S = 2.0  # how often a waiting worker looks at the study (a cheap query)
CONNECT_TIMEOUT_S = 5  # a PostgreSQL that does not answer fails the worker after this


class TuningError(ValueError):
    """A storage that cannot be opened, or a stored study that does not fit the configuration."""


def lambda_distribution(lambda_min: float, lambda_max: float) -> FloatDistribution:
    """The search space: lambda log-uniform in ``[lambda_min, lambda_max]``."""
    return FloatDistribution(lambda_min, lambda_max, log=True)


def study_name(dataset: str, setup: dict[str, Any]) -> str:
    """``<dataset>-<8 hex digits>``: the same setup gives the same study, a changed one a new."""
    digest = hashlib.sha256(json.dumps(setup, sort_keys=True, default=str).encode()).hexdigest()
    return f"{dataset}-{digest[:8]}"


def worker_identity() -> dict[str, Any]:
    """This process as the owner of the trials it runs: its host and pid."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


class OwnedStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage in which no trial is ever RUNNING without an owner.

    Optuna creates a trial (or turns an enqueued one RUNNING) in one transaction, starts its
    heartbeat in another, and the objective names its worker in a third: a worker killed
    between them left a RUNNING trial with no heartbeat row and no owner, which neither
    Optuna's ``fail_stale_trials`` (it looks only at trials with a heartbeat) nor a pid check
    could ever fail, so every other worker waited for it forever. Here the trial is created
    together with its owner (user attributes ``host`` and ``pid``) and its first heartbeat, in
    the same transaction: once any worker can see it RUNNING, a worker on its host fails it as
    soon as the pid is gone, and a worker on any machine fails it once the heartbeat is older
    than the grace period. The heartbeat is stamped and compared by the database's own clock,
    so machines whose clocks differ agree on its age.

    Optuna is pinned (5.0.0): the two methods below follow its own ``_get_prepared_new_trial``
    and ``set_trial_state_values`` and add the two writes inside their transaction."""

    def __init__(self, url: str, owner: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.owner = owner or worker_identity()
        super().__init__(url, **kwargs)

    def _own(self, session: Any, trial_id: int) -> None:
        """The owner and a first heartbeat of a trial turning RUNNING, in ``session``."""
        for key, value in self.owner.items():
            self._set_trial_attr_without_commit(
                session, rdb_models.TrialUserAttributeModel, trial_id, key, value
            )
        if rdb_models.TrialHeartbeatModel.where_trial_id(trial_id, session) is None:
            session.add(rdb_models.TrialHeartbeatModel(trial_id=trial_id))

    def _get_prepared_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None, session: Any
    ) -> Any:
        trial = super()._get_prepared_new_trial(study_id, template_trial, session)
        if trial.state == TrialState.RUNNING:  # a WAITING template (a requeue) has no owner yet
            self._own(session, trial.trial_id)
        return trial

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        frozen = super()._create_new_trial(study_id, template_trial)
        if frozen.state == TrialState.RUNNING:
            frozen.user_attrs.update(self.owner)  # what the storage now holds
            pause_point("trial:created")  # test-only: kill after creation, before Optuna's beat
        return frozen

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state != TrialState.RUNNING:
            return super().set_trial_state_values(trial_id, state, values)
        # an enqueued (WAITING) trial taken by this worker: RUNNING, owned and beating at once
        try:
            with _create_scoped_session(self.scoped_session) as session:
                trial = rdb_models.TrialModel.find_or_raise_by_id(
                    trial_id, session, for_update=True
                )
                self.check_trial_is_updatable(trial_id, trial.state)
                if trial.state != TrialState.WAITING:
                    return False
                trial.state = TrialState.RUNNING
                trial.datetime_start = datetime.now()
                self._own(session, trial_id)
        except sqlalchemy.exc.IntegrityError:
            return False
        pause_point("trial:created")
        return True

    def heartbeats(self, study_id: int) -> tuple[datetime, dict[int, datetime]]:
        """The database's time now and the last heartbeat of each RUNNING trial of the study
        (by trial id; a trial without a heartbeat row is absent)."""
        with _create_scoped_session(self.scoped_session) as session:
            now = session.execute(sqlalchemy.func.now()).scalar()
            rows = (
                session.query(rdb_models.TrialHeartbeatModel)
                .join(rdb_models.TrialModel)
                .filter(rdb_models.TrialModel.study_id == study_id)
                .filter(rdb_models.TrialModel.state == TrialState.RUNNING)
                .all()
            )
            beats = {row.trial_id: row.heartbeat.replace(tzinfo=None) for row in rows}
        return now.replace(tzinfo=None), beats


def open_storage(
    url: str,
    heartbeat_interval_s: int = 30,
    grace_period_s: int = 90,
    owner: dict[str, Any] | None = None,
) -> OwnedStorage:
    """An Optuna RDB storage (SQLite, PostgreSQL, MySQL URL); fails early with a clear message.

    A heartbeat (every ``heartbeat_interval_s`` while a trial runs, and one written with the
    trial) marks trials of killed workers as failed once it is ``grace_period_s`` old, so they
    are neither lost silently nor counted as finished; their lambda is queued again. Trials this
    storage starts carry their ``owner`` (default: this process, :func:`worker_identity`). A
    database that does not answer fails within seconds (no hang).
    """
    url = postgres_driver(url)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_absolute():  # inside the project (data/...): create it like Kedro does
            path.parent.mkdir(parents=True, exist_ok=True)
        if not path.parent.is_dir():
            raise TuningError(
                f"Cannot open the Optuna storage '{url}': the folder '{path.parent}' does not "
                "exist. Create it or set tuning.storage to another URL."
            )
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 120}  # several local workers share one file
    elif url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    # Workers started together against a new database all create its schema; Optuna does not
    # guard that, so the losers fail ("table ... already exists", a duplicate alembic version
    # row). The schema exists by then, so opening again succeeds.
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # the heartbeat is marked experimental in Optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return OwnedStorage(
                    url,
                    owner=owner,
                    engine_kwargs=kwargs,
                    heartbeat_interval=heartbeat_interval_s,
                    grace_period=grace_period_s,
                    heartbeat_stale_trial_callback=requeue_stale_trial,
                )
        except sqlalchemy.exc.IntegrityError as err:
            if attempt == _SCHEMA_ATTEMPTS - 1:
                raise _storage_error(url, err) from None
            time.sleep(0.2 * (attempt + 1))
        except sqlalchemy.exc.OperationalError as err:
            # a schema race ("table ... already exists", a locked SQLite file); a server that
            # cannot be reached is not retried
            retry = url.startswith("sqlite") or "already exists" in str(err)
            if not retry or attempt == _SCHEMA_ATTEMPTS - 1:
                raise _storage_error(url, err) from None
            time.sleep(0.2 * (attempt + 1))
        except Exception as err:  # driver missing, host unreachable, bad credentials, bad URL
            raise _storage_error(url, err) from None
    raise AssertionError("unreachable")


def _driver_hint(url: str) -> str:
    """What the URL's PostgreSQL driver needs, named for the URL form given."""
    if url.startswith("postgresql+psycopg://") or (
        url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None
    ):
        return "postgresql:// and postgresql+psycopg:// need psycopg 3 (pip install 'psycopg[binary]'), postgresql+psycopg2:// needs psycopg2 (pip install psycopg2-binary); the password goes in PGPASSFILE"
    if url.startswith("postgresql"):
        return "postgresql+psycopg2:// needs psycopg2 (pip install psycopg2-binary); the password goes in PGPASSFILE"
    return "a PostgreSQL URL needs its driver and its password in PGPASSFILE"


def postgres_driver(url: str) -> str:
    """``postgresql://...`` with the PostgreSQL driver that is installed. SQLAlchemy 2.1 reads
    a plain ``postgresql://`` as psycopg 3, which this project does not install (Optuna then
    says only "Failed to import DB access module"); with psycopg2 present and psycopg absent
    the URL is read as ``postgresql+psycopg2://``."""
    if not url.startswith("postgresql://"):
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def _storage_error(url: str, err: Exception) -> TuningError:
    return TuningError(
        mask_credentials(
            f"Cannot open the Optuna storage (the study's database) '{url}': "
            f"{type(err).__name__}: {str(err).strip()}. Check tuning.storage and that the "
            "database runs and is reachable from this machine (make services starts one here; "
            f"{_driver_hint(url)}), e.g. "
            "sqlite:///data/07_model_output/optuna.db or "
            "postgresql+psycopg2://d2e@127.0.0.1:5433/optuna."
        )
    )


def check_study(url: str, name: str, space: FloatDistribution) -> int:
    """Open the storage and, when the study exists, check its space and objectives.

    Returns the number of finished (complete or early-stopped) trials the study already holds
    (0 for a new study).
    """
    storage = open_storage(url)
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    directions = tuple(storage.get_study_directions(study_id))
    if directions != DIRECTIONS:
        raise TuningError(
            f"Study '{name}' in {url} optimises {[d.name for d in directions]}, not "
            f"{[d.name for d in DIRECTIONS]} (validation accuracy, energy). Set tuning.study_name "
            "to a new name."
        )
    complete = 0
    for trial in storage.get_all_trials(study_id, deepcopy=False):
        stored = dict(trial.distributions)
        if stored and stored != {PARAM: space}:
            raise TuningError(
                f"Study '{name}' in {url} was run over {stored}, but the configuration asks for "
                f"{{'{PARAM}': {space}}} (tuning.lambda_min / lambda_max). Restore the range, or "
                "set tuning.study_name to a new name to start another study."
            )
        complete += trial.state in FINISHED
    return complete


def reaching_target(
    trials: list[FrozenTrial], direct_energy: float, target: float | None
) -> list[FrozenTrial]:
    """The complete trials whose energy reduction on validation (D's energy over the trial's)
    reaches ``target``, weakest penalty (smallest lambda) first; none without a target."""
    if target is None or direct_energy <= 0:
        return []
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    reaching = [t for t in complete if t.values[1] > 0 and direct_energy / t.values[1] >= target]
    return sorted(reaching, key=lambda t: (t.params[PARAM], t.values[1], t.number))


def interpolated_lambda(
    trials: list[FrozenTrial], direct_energy: float, target: float | None
) -> float | None:
    """The lambda at which the energy reduction meets ``target`` at trial length, on the line in
    (log lambda, log reduction) between the weakest trial reaching it and the nearest weaker
    trial that does not; None when no trial on either side brackets it. The reduction grows
    smoothly with lambda and a short trial measures it well, so a lambda between two trials
    keeps more accuracy than the stronger one without missing the target (simulated N-MNIST
    seed 4: lambda = 1 at 3.02x, 3 at 4.97x, target 3.75)."""
    reaching = reaching_target(trials, direct_energy, target)
    if not reaching or target is None:
        return None
    hi = reaching[0]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    weaker = [t for t in complete if t.params[PARAM] < hi.params[PARAM] and t.values[1] > 0]
    if not weaker:
        return None
    lo = max(weaker, key=lambda t: t.params[PARAM])
    r_lo, r_hi = math.log(direct_energy / lo.values[1]), math.log(direct_energy / hi.values[1])
    if r_hi <= r_lo:  # not increasing between them: no line to follow
        return None
    x_lo, x_hi = math.log(lo.params[PARAM]), math.log(hi.params[PARAM])
    return math.exp(x_lo + (math.log(target) - r_lo) / (r_hi - r_lo) * (x_hi - x_lo))


def select_trial(
    trials: list[FrozenTrial],
    direct_accuracy: float,
    retention_floor: float,
    direct_energy: float = 0.0,
    energy_target: float | None = None,
) -> tuple[FrozenTrial, bool]:
    """The chosen trial: the lowest energy among those whose validation accuracy retention
    (E / D) reaches the floor; when none does, the most accurate trial. With an
    ``energy_target`` (an energy reduction, D's energy ``direct_energy`` over a trial's), the
    most accurate of the trials reaching it instead, when any does. Also returns whether the
    floor was met."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    if not complete:
        raise TuningError("The study has no complete trial to choose lambda from.")
    if reaching := reaching_target(complete, direct_energy, energy_target):
        best = max(reaching, key=lambda t: (t.values[0], -t.values[1], -t.number))
        return best, best.values[0] >= retention_floor * direct_accuracy
    passing = [t for t in complete if t.values[0] >= retention_floor * direct_accuracy]
    if passing:
        return min(passing, key=lambda t: (t.values[1], -t.values[0], t.number)), True
    return max(complete, key=lambda t: (t.values[0], -t.values[1], -t.number)), False


def accuracy_ties(
    trials: list[FrozenTrial], validation_size: int, standard_errors: float
) -> list[FrozenTrial]:
    """The trials whose accuracy lies within ``standard_errors`` binomial standard errors
    (``sqrt(p (1 - p) / n)`` of the most accurate one's accuracy ``p`` on ``validation_size``
    samples) of the most accurate: accuracies that close cannot rank their lambdas, so energy
    decides among them (the one-standard-error rule of Breiman et al., 1984, with the cheaper
    network as the simpler model). Lowest energy first; the most accurate alone at 0."""
    if not trials:
        return []
    best = max(trials, key=lambda t: (t.values[0], -t.values[1], -t.number))
    p = best.values[0]
    tolerance = standard_errors * math.sqrt(max(p * (1 - p), 0.0) / max(validation_size, 1))
    ties = [t for t in trials if t.values[0] >= p - tolerance]
    return sorted(ties, key=lambda t: (t.values[1], -t.values[0], t.number))


def completion_order(
    trials: list[FrozenTrial],
    direct_accuracy: float,
    required: float,
    validation_size: int = 1,
    tie_standard_errors: float = 0.0,
    direct_energy: float = 0.0,
    energy_target: float | None = None,
) -> list[FrozenTrial]:
    """Complete trials in the order they are taken on to the full fine-tuning when trials run
    only its first epochs: those whose retention reaches ``required`` at trial length, lowest
    energy first (the choice :func:`select_trial` makes, then the next ones); when none does,
    the :func:`accuracy_ties` of the most accurate, lowest energy first (the most accurate
    alone with ``tie_standard_errors`` 0).

    With an ``energy_target``, the trials whose energy reduction reaches it at trial length
    come first instead, weakest penalty first: a short trial measures its events well but not
    its accuracy (on simulated N-MNIST a quarter pass cannot rank lambdas), a weaker penalty
    keeps more accuracy, and the rest of the fine-tuning only lowers the events further."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    if reaching := reaching_target(complete, direct_energy, energy_target):
        logger.info(
            "λ = %s reach an energy reduction of %g at trial length: the weakest goes on first",
            ", ".join(f"{t.params[PARAM]:.4g}" for t in reaching),
            energy_target,
        )
        return reaching
    if energy_target is not None:
        logger.warning(
            "No trial reaches an energy reduction of %g at trial length (D: %.4g uJ); taken on "
            "by retention instead",
            energy_target,
            direct_energy,
        )
    passing = [t for t in complete if t.values[0] >= required * direct_accuracy]
    if passing:
        return sorted(passing, key=lambda t: (t.values[1], -t.values[0], t.number))
    ties = accuracy_ties(complete, validation_size, tie_standard_errors)
    if len(ties) > 1:
        logger.info(
            "No trial reaches retention %.4f at trial length; λ = %s tie within %g standard "
            "errors of the most accurate (n = %d): the lowest-energy tie goes on first",
            required,
            ", ".join(f"{t.params[PARAM]:.4g}" for t in ties),
            tie_standard_errors,
            validation_size,
        )
    return ties


def take_on(
    trials: list[FrozenTrial],
    direct_acc: float,
    required: float,
    completions: int,
    complete_trial: Callable[[float], tuple[Any, list[dict[str, float]], dict[str, float]]],
    candidate_at: float | None = None,
    validation_size: int = 1,
    tie_standard_errors: float = 0.0,
    direct_energy: float = 0.0,
    energy_target: float | None = None,
) -> tuple[TrialRecord, bool, list[TrialRecord], tuple[dict[str, Any], list[dict[str, float]]]]:
    """Trials that ran the first epochs of the fine-tuning taken on to its end, in
    :func:`tuning.completion_order` of those reaching ``candidate_at`` retention at trial
    length (default ``required``), until one reaches ``required`` on validation after the
    whole fine-tuning or ``completions`` are done.

    After a completion falls short, the next one must have a weaker penalty (lambda below it:
    a stronger penalty keeps less accuracy) and a trial-length accuracy that reaches the
    requirement once it changes as the short one's did from trial length to the end (so
    lambda = 3.71 is not tried after 3.72 fell short); when no candidate is left that way, the
    most accurate trial with a weaker penalty is the best chance. Returns the chosen completion
    (feasible with the lowest energy, else the most accurate), whether it is feasible, every
    completion's record, and the chosen network and history. ``direct_energy`` and
    ``energy_target``: see :func:`completion_order`; when two trials bracket the target, the
    :func:`interpolated_lambda` between them is the one completion instead (no trial number)."""
    if (lam := interpolated_lambda(trials, direct_energy, energy_target)) is not None:
        # between two trials: one whole fine-tuning at that lambda, the only completion
        logger.info("λ = %.4g meets the energy reduction target %g: taken on", lam, energy_target)
        net, history, res = complete_trial(lam)
        record = TrialRecord(
            rate_lambda=lam, val_accuracy=res["val_accuracy"], energy_uJ=res["energy_uJ"]
        )
        return (
            record,
            res["val_accuracy"] >= required * direct_acc,
            [record],
            (checkpoint(net.cpu()), history),
        )
    done: list[TrialRecord] = []
    nets: dict[float, tuple[dict[str, Any], list[dict[str, float]]]] = {}
    short_at = float("inf")  # the smallest lambda that fell short of the requirement
    needed = float("-inf")  # trial-length accuracy a candidate needs after a shortfall
    shortlist = required if candidate_at is None else candidate_at
    order = completion_order(
        trials,
        direct_acc,
        shortlist,
        validation_size,
        tie_standard_errors,
        direct_energy,
        energy_target,
    )
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    taken: set[int] = set()
    while len(done) < completions:
        left = [t for t in complete if t.params[PARAM] < short_at and t.number not in taken]
        ok = {t.number for t in left if t.values[0] >= needed}
        trial = next((t for t in order if t.number in ok), None)
        if trial is None and done and left:  # none predicted to reach it: the best chance
            trial = max(left, key=lambda t: (t.values[0], -t.values[1], -t.number))
        if trial is None:
            break
        lam = float(trial.params[PARAM])
        taken.add(trial.number)
        net, history, res = complete_trial(lam)
        nets[lam] = (checkpoint(net.cpu()), history)  # net: a SpikingNet
        done.append(
            TrialRecord(
                rate_lambda=lam,
                val_accuracy=res["val_accuracy"],
                energy_uJ=res["energy_uJ"],
                number=trial.number,
            )
        )
        logger.info(
            "Trial %d (λ = %.4g) taken on to the full fine-tuning: val accuracy %.4f "
            "(retention %.4f, %s %.4f), %.0f events/sample",
            trial.number,
            lam,
            res["val_accuracy"],
            res["accuracy_retention"],
            "reaches" if res["accuracy_retention"] >= required else "under",
            required,
            res["events_per_sample"],
        )
        if res["val_accuracy"] >= required * direct_acc:
            break
        short_at = lam
        needed = max(needed, trial.values[0] + required * direct_acc - res["val_accuracy"])
    passing = [r for r in done if r.val_accuracy >= required * direct_acc]
    if passing:
        chosen = min(passing, key=lambda r: (r.energy_uJ, -r.val_accuracy))
    else:
        chosen = max(done, key=lambda r: (r.val_accuracy, -r.energy_uJ))
    return chosen, bool(passing), done, nets[chosen.rate_lambda]


def non_dominated(scores: dict[Any, tuple[float, float]]) -> set[Any]:
    """Keys whose ``(accuracy, energy)`` no other entry beats on both (ties are kept)."""
    return {
        key
        for key, (acc, energy) in scores.items()
        if not any(a >= acc and e <= energy and (a, e) != (acc, energy) for a, e in scores.values())
    }


def pareto_front(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials no other trial beats on both objectives, by increasing energy."""
    complete = {
        t.number: t for t in trials if t.state == TrialState.COMPLETE and t.values is not None
    }
    front = non_dominated({n: (t.values[0], t.values[1]) for n, t in complete.items()})
    return sorted((complete[n] for n in front), key=lambda t: t.values[1])


EpochCallback = Callable[[dict[str, float]], None]


class TrialStopped(Exception):
    """A trial stopped early by :class:`EarlyStop` (recorded as PRUNED in Optuna and MLflow)."""


@dataclass(frozen=True)
class Bar:
    """What a trial must still be able to reach at a check to stay in the sweep: the final
    ``retention`` that could get it chosen; the ``events`` per sample (by check fraction) of the
    best feasible trial, when one exists; and by how much a check's retention overstates the
    final one (``offsets``, learnt from the study's complete trials)."""

    retention: float
    feasible: bool
    events: dict[float, float]
    offsets: dict[float, float]
    spreads: dict[float, float] = field(default_factory=dict)  # its prediction's std error
    # the overstatement's growth per unit of log(lambda) and the mean log(lambda) it is centred
    # on, by fraction (learnt from four complete trials; none: the same offset for every lambda)
    slopes: dict[float, tuple[float, float]] = field(default_factory=dict)
    # with an energy target: the weakest complete trial reaching it at trial length (its lambda)
    # and the nearest weaker complete trial, which misses it (its lambda and events by check
    # fraction): the only two trials the sweep can still choose from or interpolate between
    reaching_lambda: float | None = None
    weaker_lambda: float | None = None
    weaker_events: dict[float, float] = field(default_factory=dict)

    def offset(self, fraction: float, rate_lambda: float | None = None) -> float:
        """How much a check at ``fraction`` overstates the final retention of a trial at
        ``rate_lambda`` (0 while nothing is learnt)."""
        base = self.offsets.get(fraction, 0.0)
        if rate_lambda is None or fraction not in self.slopes:
            return base
        slope, centre = self.slopes[fraction]
        return base + slope * (math.log(rate_lambda) - centre)


@dataclass(frozen=True)
class EarlyStop:
    """When a sweep trial stops before the end of its fine-tuning. Optuna's pruners do not
    serve multi-objective studies, so the rule is written here.

    At each fraction ``at`` of its optimizer steps a trial is measured on the sweep's
    validation samples. Its final retention (E / D) is predicted as the check's retention less
    the overstatement the study's complete trials showed at that check (measured on MNIST: the
    rate penalty keeps lowering accuracy, so early checks overstate it by about 0.002, more for
    a stronger penalty): their mean from three complete trials, a line in log lambda from four
    (:func:`overstatement`). The
    trial stops when the prediction is more than ``slack`` under what it needs to be chosen:
    ``required`` (floor + margin) once a feasible trial exists, else the retention of the most
    accurate complete trial (the choice when none is feasible). Once a feasible trial exists it
    also stops when its events per sample exceed that trial's at the same check by more than
    ``events_tolerance`` (a smaller lambda: it ends with more events than the trial it would
    have to beat). Nothing stops before the first trial completes. The chosen trial is always
    a complete one. Once offsets are learnt the slack narrows to ``slack_sd`` standard errors
    of the learnt overstatement (between a quarter of ``slack`` and ``slack``): the prediction
    is then trusted as far as the study has shown it to hold.

    With an ``energy_target`` (an energy reduction, D's validation energy ``direct_energy`` over
    a trial's, when short trials are taken on: :func:`take_on`) the sweep keeps only the
    weakest trial reaching the target at trial length and the nearest weaker one (the two an
    interpolation uses). Once a complete trial reaches it, a trial with a stronger lambda stops
    before its first step (it can never be chosen; measured on MNIST, 20 trials: ten such trials
    ran a whole pass each), and a trial weaker than the nearest weaker one stops at a check
    where its events exceed that trial's at the same check (it is on course to miss the target
    too, and is not the nearer of the two).
    """

    at: tuple[float, ...]
    direct_accuracy: float
    required: float
    slack: float = 0.004
    events_tolerance: float | None = 0.01  # None: no trial stops for its events
    min_offset_trials: int = 3  # complete trials needed before offsets are used
    slack_sd: float | None = 2.0
    energy_target: float | None = None
    direct_energy: float = 0.0

    def steps(self, total: int) -> dict[int, float]:
        """The optimizer steps (of ``total``) after which the trial is checked, and their
        fractions; a check at the last step is dropped (the trial is measured there anyway)."""
        return {s: f for f in self.at if 0 < (s := max(1, round(f * total))) < total}

    def retention(self, accuracy: float) -> float:
        """Accuracy retention against D on the same validation samples."""
        return accuracy / self.direct_accuracy if self.direct_accuracy else 0.0

    def reason(
        self, check: dict[str, float], bar: Bar | None = None, rate_lambda: float | None = None
    ) -> str | None:
        """Why the trial at ``rate_lambda`` measured as ``check`` (``fraction``,
        ``val_accuracy``, ``events_per_sample``) stops, or None; ``bar`` from :meth:`bar` (None:
        no complete trial yet, nothing stops)."""
        if bar is None:
            return None
        if (stronger := self.outside_target(bar, rate_lambda)) is not None:
            return stronger
        fraction = check["fraction"]
        where = f"at {fraction:.0%} of its fine-tuning"
        predicted = self.retention(check["val_accuracy"]) - bar.offset(fraction, rate_lambda)
        slack = self.slack_at(fraction, bar)
        if predicted < bar.retention - slack:
            target = "required" if bar.feasible else "best trial's"
            return (
                f"retention {self.retention(check['val_accuracy']):.4f} {where} (final "
                f"predicted {predicted:.4f}) is more than {slack:.4g} under the {target} "
                f"{bar.retention:.4f}"
            )
        return self.events_reason(check, bar, rate_lambda)

    def events_reason(
        self, check: dict[str, float], bar: Bar, rate_lambda: float | None = None
    ) -> str | None:
        """Why a trial stops for its events at ``check`` (None: it runs on): more than the
        nearest trial under an energy target that misses it, for a weaker penalty still; or
        more than the best feasible trial's by over ``events_tolerance``."""
        fraction, events = check["fraction"], check["events_per_sample"]
        where = f"at {fraction:.0%} of its fine-tuning"
        weaker, lo = bar.weaker_events.get(fraction), bar.weaker_lambda
        busier = (
            weaker is not None
            and lo is not None
            and rate_lambda is not None
            and rate_lambda < lo
            and events > weaker
        )
        if busier:
            return (
                f"{events:.0f} events per sample {where} exceed the {weaker:.0f} of "
                f"λ = {lo:.4g} at the same check, which misses the energy "
                f"reduction target {self.energy_target:g} at trial length (this weaker penalty "
                "is on course to miss it too)"
            )
        reference = bar.events.get(fraction)
        if self.events_tolerance is None or reference is None:
            return None
        if events > reference * (1 + self.events_tolerance):
            return (
                f"{events:.0f} events per sample {where} exceed the best feasible trial's "
                f"{reference:.0f} (+{self.events_tolerance:.0%})"
            )
        return None

    def outside_target(self, bar: Bar | None, rate_lambda: float | None) -> str | None:
        """Why a trial at ``rate_lambda`` stops whatever it measures (None: it runs): a
        complete trial with a weaker penalty already reaches the energy target."""
        if bar is None or bar.reaching_lambda is None or rate_lambda is None:
            return None
        if rate_lambda <= bar.reaching_lambda:
            return None
        return (
            f"λ = {rate_lambda:.4g} is stronger than λ = {bar.reaching_lambda:.4g}, which "
            f"already reaches the energy reduction target {self.energy_target:g} at trial "
            "length: only the weakest trial reaching it can be taken on"
        )

    def slack_at(self, fraction: float, bar: Bar) -> float:
        """How far under the bar a prediction at ``fraction`` may fall: ``slack``, narrowed to
        ``slack_sd`` standard errors of the learnt overstatement once there is one, but never
        under a quarter of ``slack`` (three trials may agree by chance)."""
        spread = bar.spreads.get(fraction)
        if self.slack_sd is None or spread is None:
            return self.slack
        return min(self.slack, max(self.slack_sd * spread, self.slack / 4))

    def bar(self, trials: list[FrozenTrial]) -> Bar | None:
        """The bar for the study's trials now (None while no trial is complete)."""
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
        if not complete:
            return None
        best, feasible = select_trial(complete, self.direct_accuracy, self.required)
        gaps: dict[float, list[tuple[float, float]]] = {}  # fraction -> (log lambda, gap)
        for t in complete:
            final = self.retention(t.values[0])
            x = math.log(float(t.params.get(PARAM, 1.0)))
            for c in t.user_attrs.get("checks", []):
                gap = self.retention(c["val_accuracy"]) - final
                gaps.setdefault(c["fraction"], []).append((x, gap))
        offsets, spreads, slopes = {}, {}, {}
        for fraction, points in gaps.items():
            if len(points) < self.min_offset_trials:
                continue
            offset, spread, slope = overstatement(points)
            offsets[fraction], spreads[fraction] = offset, spread
            if slope is not None:
                slopes[fraction] = slope
        events = (
            {c["fraction"]: c["events_per_sample"] for c in best.user_attrs.get("checks", [])}
            if feasible
            else {}
        )
        bar = self.required if feasible else self.retention(best.values[0])
        target: dict[str, Any] = {}
        if reaching := reaching_target(complete, self.direct_energy, self.energy_target):
            hi = float(reaching[0].params[PARAM])
            target["reaching_lambda"] = hi
            weaker = [t for t in complete if t.params[PARAM] < hi and t.values[1] > 0]
            if weaker:
                lo = max(weaker, key=lambda t: t.params[PARAM])
                target["weaker_lambda"] = float(lo.params[PARAM])
                target["weaker_events"] = {
                    c["fraction"]: c["events_per_sample"] for c in lo.user_attrs.get("checks", [])
                }
        return Bar(bar, feasible, events, offsets, spreads, slopes, **target)


def overstatement(
    points: list[tuple[float, float]],
) -> tuple[float, float, tuple[float, float] | None]:
    """How much early checks overstate the final retention, from the complete trials' ``(log
    lambda, overstatement)``: the mean, the standard error of predicting one more trial, and
    from four trials on a line in log lambda (its slope, kept >= 0, and centre; None before).
    Measured on MNIST (30 % check of one-pass trials): 0.0014 at lambda = 2 to 0.0049 at 8, so
    one mean is too small for strong penalties and too large for weak ones. The error is the
    residual standard deviation times sqrt(1 + 1/n) (the leverage of the trial's own lambda
    left out)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    n, mean = len(points), statistics.fmean(ys)
    centre = statistics.fmean(xs)
    sxx = sum((x - centre) ** 2 for x in xs)
    if n < 4 or sxx <= 0:
        return mean, statistics.stdev(ys) * math.sqrt(1 + 1 / n), None
    # a stronger penalty keeps lowering accuracy for longer: the line never falls with lambda
    slope = max(0.0, sum((x - centre) * (y - mean) for x, y in zip(xs, ys)) / sxx)
    residuals = [y - mean - slope * (x - centre) for x, y in zip(xs, ys)]
    sd = math.sqrt(sum(r * r for r in residuals) / (n - 2))
    return mean, sd * math.sqrt(1 + 1 / n), (slope, centre)


class Judge:
    """One trial's early-stop checks: ``evaluate`` measures E at :meth:`steps` and calls the
    judge with the fraction and the measurement; it records the check and raises
    :class:`TrialStopped` when the rule says so."""

    def __init__(
        self,
        rule: EarlyStop,
        bar: Callable[[], Bar | None],
        on_check: Callable[[dict[str, float]], None] | None = None,
        rate_lambda: float | None = None,
    ) -> None:
        self.rule, self._bar, self._on_check = rule, bar, on_check
        self.rate_lambda = rate_lambda
        self.checks: list[dict[str, float]] = []

    def steps(self, total: int) -> dict[int, float]:
        """Optimizer step -> fraction of the trial's checks."""
        return self.rule.steps(total)

    def start(self) -> None:
        """Before the trial's first step: raise :class:`TrialStopped` when its lambda alone
        rules it out (:meth:`EarlyStop.outside_target`), so it costs no fine-tuning."""
        reason = self.rule.outside_target(self._bar(), self.rate_lambda)
        if reason is not None:
            raise TrialStopped(reason)

    def __call__(self, fraction: float, step: int, measured: dict[str, float]) -> None:
        check = {
            "fraction": fraction,
            "step": float(step),
            "val_accuracy": float(measured["val_accuracy"]),
            "events_per_sample": float(measured["events_per_sample"]),
        }
        check["accuracy_retention"] = self.rule.retention(check["val_accuracy"])
        self.checks.append(check)
        if self._on_check is not None:
            self._on_check(check)
        reason = self.rule.reason(check, self._bar(), self.rate_lambda)
        if reason is not None:
            raise TrialStopped(reason)


Evaluate = Callable[[float, EpochCallback | None, Judge | None], dict[str, float]]
# A trial's tracking: entered when the trial starts (number, lambda), it yields the callback for
# the trial's epochs; it receives the trial's results before it exits.
TrialRun = Callable[[int, float], AbstractContextManager["TrialTracker"]]


class TrialTracker:
    """What a trial's tracking context hands the objective: an epoch callback and a sink for
    the trial's results (both no-ops when nothing tracks)."""

    def __init__(self, on_epoch: EpochCallback | None = None) -> None:
        self.on_epoch = on_epoch

    def finish(self, results: dict[str, float], seconds: float) -> None:
        """Record the trial's results (nothing to do without tracking)."""

    def check(self, check: dict[str, float]) -> None:
        """Record one early-stop check (nothing to do without tracking)."""


class SurplusTrial(Exception):
    """A trial started while the study already held ``n_trials`` complete or running ones
    (several workers asked at once); it fails before any work and leaves no MLflow run."""


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


def run_study(
    url: str,
    name: str,
    space: FloatDistribution,
    evaluate: Evaluate,
    n_trials: int,
    timeout_s: float | None = None,
    seed: int = 0,
    trial_run: TrialRun | None = None,
    first: Sequence[float] = (),
    user_attrs: dict[str, Any] | None = None,
    heartbeat_interval_s: int = 30,
    grace_period_s: int = 90,
    early_stop: EarlyStop | None = None,
) -> optuna.Study:
    """Add trials until the study holds ``n_trials`` finished ones, complete or stopped early
    (or ``timeout_s`` passes).

    ``evaluate(lambda, on_epoch, judge)`` fine-tunes and measures network E and returns at
    least ``val_accuracy`` and ``energy_uJ``; everything it returns is kept as trial attributes,
    with the worker's host and pid. With ``early_stop``, ``judge`` checks the trial during its
    fine-tuning; a trial it stops is recorded as PRUNED (with ``stopped_reason`` and its
    ``checks``) and counts toward ``n_trials``. ``trial_run`` tracks each trial while it runs (see
    :func:`mlflow_trial_run`). ``first`` lambdas are queued when the study is new, so a short
    default sweep measures informative values. The objectives are named (``val_accuracy``,
    ``energy_uJ``) and ``user_attrs`` describe the study's setup, for optuna-dashboard.

    Several workers (processes, machines) may run this on one study at once; together they
    leave exactly ``n_trials`` complete trials. A worker starts a trial only while fewer than
    ``n_trials`` are complete or running; when the last ones run elsewhere it waits (polling
    every 2 s) until they complete, or until the heartbeat fails a trial
    whose worker died (after ``grace_period_s``) and it runs a trial in its place.
    """
    storage = open_storage(url, heartbeat_interval_s, grace_period_s)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=[d.name.lower() for d in DIRECTIONS],
        load_if_exists=True,
        # reseeded by the study's size so a resumed run or a second worker draws new values
        sampler=optuna.samplers.TPESampler(seed=seed + len(study_trials(storage, name))),
    )
    if study.metric_names != list(OBJECTIVES):
        with warnings.catch_warnings():  # experimental in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(OBJECTIVES))
    for key, value in (user_attrs or {}).items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    if not study.get_trials(deepcopy=False):
        for lam in first:
            study.enqueue_trial({PARAM: float(lam)}, skip_if_exists=True)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        # counted before any work: finished trials, and running ones that started earlier
        ahead = [
            t
            for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
            if t.state in FINISHED or t.number < trial.number
        ]
        if len(ahead) >= n_trials:
            trial.set_user_attr("fail_reason", "surplus: n_trials complete or running elsewhere")
            raise SurplusTrial(f"trial {trial.number}: the study needs no more trials")
        pause_point("trial:started")  # test-only: owned and beating, before its lambda
        lam = trial.suggest_float(PARAM, space.low, space.high, log=True)
        started = time.perf_counter()
        tracking = trial_run(trial.number, lam) if trial_run else nullcontext(TrialTracker())
        judge = None
        try:
            with tracking as tracker:
                if early_stop is not None:
                    judge = Judge(
                        early_stop,
                        lambda: early_stop.bar(study.get_trials(deepcopy=False)),
                        tracker.check,
                        lam,
                    )
                    judge.start()
                pause_point("trial:objective")
                result = evaluate(lam, tracker.on_epoch, judge)
                tracker.finish(result, time.perf_counter() - started)
        except Terminated as err:  # Optuna marks it FAIL; the next worker runs its lambda again
            trial.set_user_attr("fail_reason", str(err))
            raise
        except TrialStopped as err:
            trial.set_user_attr("stopped_reason", str(err))
            trial.set_user_attr("checks", judge.checks if judge else [])
            trial.set_user_attr("trial_seconds", time.perf_counter() - started)
            logger.info("Trial %d (λ = %.4g) stopped early: %s", trial.number, lam, err)
            raise optuna.TrialPruned(str(err)) from None
        for key, value in result.items():
            trial.set_user_attr(key, float(value))
        trial.set_user_attr("checks", judge.checks if judge else [])
        trial.set_user_attr("trial_seconds", time.perf_counter() - started)
        pause_point("trial:before_tell")  # measured, not yet told
        return float(result["val_accuracy"]), float(result["energy_uJ"])

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    watch = TrialWatch(grace_period_s, poll_s=min(heartbeat_interval_s, POLL_S))
    while deadline is None or time.monotonic() < deadline:
        fail_dead_local_trials(study)  # this host's dead workers: at once, not after the grace
        with warnings.catch_warnings():  # experimental in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # heartbeat too old -> FAIL, queued again
        trials = study.get_trials(deepcopy=False)
        watch.fail_silent_trials(study, trials)  # no sign of life for the grace period
        requeue_interrupted_trials(study)  # a stopped trial's lambda is measured again
        trials = study.get_trials(deepcopy=False)
        complete = sum(t.state in FINISHED for t in trials)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if complete >= n_trials:
            logger.info("Study %s holds %d finished trials (n_trials %d)", name, complete, n_trials)
            break
        if complete + len(running) >= n_trials:
            watch.report_wait(name, complete, running)
            time.sleep(watch.poll_s)
            continue
        watch.waiting_since = None
        if running:  # other workers share the sampler's seed: draw apart from them
            study.sampler.reseed_rng()
        try:
            study.optimize(objective, n_trials=1, catch=(SurplusTrial,), gc_after_trial=True)
        except (ValueError, RuntimeError) as err:
            # another worker failed this worker's trial as stale (no heartbeat for
            # grace_period_s: an overloaded machine); its result cannot be told any more
            if "Cannot tell a" not in str(err) and "has already finished" not in str(err):
                raise
            logger.warning(
                "A trial of this worker was failed by another worker while it ran (heartbeat "
                "older than %d s; raise tuning.grace_period_s on a loaded machine); its result "
                "is dropped and the sweep goes on: %s",
                grace_period_s,
                err,
            )
    return study


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


def study_trials(storage: optuna.storages.BaseStorage, name: str) -> list[FrozenTrial]:
    """All trials of a stored study (none when it does not exist yet)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return []
    return storage.get_all_trials(study_id, deepcopy=False)


class TrialRecord(BaseModel):
    """One measured fine-tuning of E on the sweep's validation samples: a complete trial
    (``number``), or E at lambda = 0 (``number`` None)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_lambda: float
    val_accuracy: float
    energy_uJ: float
    number: int | None = None


def trial_record(trial: FrozenTrial, numbered: bool = True) -> TrialRecord:
    """A complete trial's lambda, validation accuracy and energy (and its number)."""
    return TrialRecord(
        rate_lambda=float(trial.params[PARAM]),
        val_accuracy=float(trial.values[0]),
        energy_uJ=float(trial.values[1]),
        number=trial.number if numbered else None,
    )


class StoppedRecord(BaseModel):
    """A trial stopped early: its lambda, where (fraction of its fine-tuning) and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: int
    rate_lambda: float
    fraction: float
    reason: str
    seconds: float | None = None


def stopped_record(trial: FrozenTrial) -> StoppedRecord:
    """A pruned trial as reported: its last check says where it stopped."""
    checks = trial.user_attrs.get("checks") or [{}]
    return StoppedRecord(
        number=trial.number,
        rate_lambda=float(trial.params[PARAM]),
        fraction=float(checks[-1].get("fraction", 0.0)),
        reason=str(trial.user_attrs.get("stopped_reason", "")),
        seconds=trial.user_attrs.get("trial_seconds"),
    )


class TuningReport(BaseModel):
    """What the lambda sweep decided (``tuning_report.json``): ``rate_lambda`` is the strength
    E's final fine-tuning uses (the configured one when the sweep is off or no trial completed).
    The fields after ``trials`` are set when a trial chose it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_lambda: float
    enabled: bool
    n_trials: int = 0  # complete trials
    pareto: list[TrialRecord] = Field(default_factory=list)
    trials: list[TrialRecord] = Field(default_factory=list)
    stopped: list[StoppedRecord] = Field(default_factory=list)  # early-stopped (PRUNED) trials
    study_name: str | None = None
    storage: str | None = None  # credentials masked
    lambda0: TrialRecord | None = None
    # trials taken on to the full fine-tuning (when trials run only its first trial_epochs),
    # with their final validation accuracy and energy; the chosen one is among them
    trial_epochs: int | float | None = None  # int when whole (as before fractions)
    completed: list[TrialRecord] = Field(default_factory=list)
    chosen_trial: int | None = None
    floor_met: bool | None = None  # None: no trial chose lambda
    retention_floor: float | None = None
    retention_margin: float | None = None
    direct_val_accuracy: float | None = None
    energy_model: str | None = None
    energy_reduction_target: float | None = None
    direct_val_energy_uJ: float | None = None

    @property
    def chosen_by_sweep(self) -> bool:
        """Whether a trial of the sweep chose ``rate_lambda``."""
        return self.floor_met is not None


def mlflow_trial_run(
    dataset: str, name: str, prefix: str = "finetune", offset: int = 0
) -> TrialRun | None:
    """Each trial as a nested MLflow run under the active (pipeline) run, opened when the trial
    starts and closed when it ends (so it spans the trial's real time), with the trial's epochs
    streamed as ``<prefix>.<name>`` while it runs (numbered on by ``offset``: after a warm-up)
    and its early-stop checks as ``check.<name>`` by optimizer step; a trial stopped early ends
    FINISHED with the tag ``state=PRUNED``, one that raises ends FAILED. None when no run is
    active."""
    if mlflow.active_run() is None:
        return None

    class MlflowTrial(TrialTracker):
        def finish(self, results: dict[str, float], seconds: float) -> None:
            mlflow.log_metrics({**in_nanojoules(results), "trial_seconds": seconds})
            mlflow.set_tag("state", TrialState.COMPLETE.name)

        def check(self, check: dict[str, float]) -> None:
            values = {k: v for k, v in check.items() if k not in ("step", "fraction")}
            metrics = {f"check.{k}": v for k, v in values.items()}
            mlflow.log_metrics(
                {**metrics, "check.fraction": check["fraction"]}, step=int(check["step"])
            )

    @contextmanager
    def run(number: int, lam: float) -> Iterator[TrialTracker]:
        # the trial number is a tag written with the run itself, so a run whose worker dies right
        # after its creation (SIGKILL) still names its trial; the params follow in a second write
        tags = {"dataset": dataset, "study": name, "kind": "tuning_trial", "state": "RUNNING"}
        tags["trial_number"] = str(number)
        stopped, started = None, time.perf_counter()
        with mlflow.start_run(run_name=f"{dataset}-trial-{number}", nested=True, tags=tags):
            mlflow.log_params({PARAM: lam, "trial_number": number})
            try:
                yield MlflowTrial(epoch_logger(prefix, offset))
            except TrialStopped as err:  # the run ends FINISHED, its state tag says PRUNED
                mlflow.set_tags({"state": TrialState.PRUNED.name, "stopped_reason": str(err)})
                mlflow.log_metric("trial_seconds", time.perf_counter() - started)
                stopped = err
            except BaseException:
                mlflow.set_tag("state", TrialState.FAIL.name)
                raise
        if stopped is not None:
            raise stopped

    return run


CHOSEN_ATTR = "chosen_trial"  # the study's user attribute: the trial the final run chose


def mark_chosen(url: str, name: str, record: TrialRecord) -> None:
    """Name the chosen trial where people look: the study's user attributes (``chosen_trial``,
    ``chosen_rate_lambda``; Optuna refuses to change a finished trial's own attributes) and,
    on the trial's MLflow run, the tag ``chosen=true`` with the choosing run's id."""
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    study.set_user_attr(CHOSEN_ATTR, record.number)
    study.set_user_attr("chosen_rate_lambda", record.rate_lambda)
    active = mlflow.active_run()
    if active is None:
        return
    client = mlflow.MlflowClient()
    query = (
        f"tags.kind = 'tuning_trial' and tags.study = '{name}' "
        f"and tags.trial_number = '{record.number}'"
    )
    for run in client.search_runs([active.info.experiment_id], query):
        set_tag_once(client, run.info.run_id, "chosen", "true")
        set_tag_once(client, run.info.run_id, "chosen_by_run", active.info.run_id)


def set_tag_once(client: mlflow.MlflowClient, run_id: str, key: str, value: str) -> None:
    """Set a run's tag that several workers may set at the same instant (each worker that
    finishes a shared study marks the chosen trial): an MLflow server on PostgreSQL inserts a
    new tag without an upsert, so the second of two simultaneous writers gets a unique-key
    error although the tag now exists. It reads the tag back and, when another value won,
    sets it again (then an update); any other failure still raises."""
    try:
        client.set_tag(run_id, key, value)
    except mlflow.exceptions.MlflowException:
        if client.get_run(run_id).data.tags.get(key) != value:
            client.set_tag(run_id, key, value)
