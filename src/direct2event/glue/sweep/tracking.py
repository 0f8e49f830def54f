"""The sweep in MLflow: each trial as a nested run of the pipeline's run (its epochs and
early-stop checks streamed as it runs), and the chosen trial named where people look."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
import optuna
from optuna.trial import TrialState

from direct2event.glue.reports import TrialRecord
from direct2event.glue.sweep.config import PARAM
from direct2event.glue.sweep.early_stop import TrialStopped
from direct2event.glue.sweep.storage import open_storage
from direct2event.glue.sweep.study import TrialRun, TrialTracker
from direct2event.glue.tracking import epoch_logger


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
            mlflow.log_metrics({**results, "trial_seconds": seconds})
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
                mlflow.set_tags(
                    {
                        "state": TrialState.PRUNED.name,
                        "stopped_reason": str(err),
                        "mlflow.runName": f"{dataset}-trial-{number}-stopped",
                    }
                )
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
        name = run.data.tags.get("mlflow.runName", "")
        if not name.endswith("-chosen"):  # the runs table names the chosen trial
            set_tag_once(client, run.info.run_id, "mlflow.runName", f"{name}-chosen")


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
