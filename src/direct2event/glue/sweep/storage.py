"""Where a study lives: an Optuna RDB storage (SQLite for one machine, PostgreSQL for several)
whose trials always carry their owner and a first heartbeat, opened with a clear error when the
database cannot be reached, its credentials never shown."""

from __future__ import annotations

import importlib.util
import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.distributions import FloatDistribution
from optuna.storages._rdb import models as rdb_models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

from direct2event.glue.masking import mask_credentials
from direct2event.glue.runs import pause_point
from direct2event.glue.sweep.config import StudyConfig
from direct2event.glue.sweep.policy import TuningError

_SCHEMA_ATTEMPTS = 5
CONNECT_TIMEOUT_S = 5  # a PostgreSQL that does not answer fails the worker after this
StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


def lambda_distribution(lambda_min: float, lambda_max: float) -> FloatDistribution:
    """The search space: lambda log-uniform in ``[lambda_min, lambda_max]``."""
    return FloatDistribution(lambda_min, lambda_max, log=True)


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
    heartbeat_interval_s: int = StudyConfig.heartbeat_interval_s,
    grace_period_s: int = StudyConfig.grace_period_s,
    owner: dict[str, Any] | None = None,
    on_stale: StaleCallback | None = None,
) -> OwnedStorage:
    """An Optuna RDB storage (SQLite, PostgreSQL, MySQL URL); fails early with a clear message.

    A heartbeat (every ``heartbeat_interval_s`` while a trial runs, and one written with the
    trial) marks trials of killed workers as failed once it is ``grace_period_s`` old, so they
    are neither lost silently nor counted as finished; ``on_stale(study, trial)`` is called for
    each (the sweep queues its lambda again). Trials this storage starts carry their ``owner``
    (default: this process, :func:`worker_identity`). A database that does not answer fails
    within seconds (no hang).
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
                    heartbeat_stale_trial_callback=on_stale,
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
