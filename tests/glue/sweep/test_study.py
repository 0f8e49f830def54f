"""Running a study: resumed where it stopped, shared by workers, its trials stopped early by
the rule and counted; a stored study that does not fit the configuration is refused."""

from __future__ import annotations

import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from direct2event.glue.sweep.config import PARAM, StudyConfig, study_name
from direct2event.glue.sweep.early_stop import EarlyStop
from direct2event.glue.sweep.policy import Choice, TuningError, interpolated_lambda, select_trial
from direct2event.glue.sweep.storage import lambda_distribution, open_storage
from direct2event.glue.sweep.study import check_study, complete_records, run_study, stopped_record
from direct2event.snn.models import checkpoint, to_event_network
from tests.glue.sweep.trials import SPACE, WORKER, trial


def test_unreachable_storage_and_changed_space_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TuningError, match="does not exist"):
        check_study("sqlite:////nonexistent-folder/optuna.db", "s", SPACE)
    with pytest.raises(TuningError, match="Cannot open the Optuna storage"):
        check_study("postgresql+psycopg2://nobody@127.0.0.1:9/none", "s", SPACE)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert check_study(url, "s", SPACE) == 0  # a new study is fine
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    study.add_trial(trial(1.0, 0.9, 0.01, 0))
    assert check_study(url, "s", SPACE) == 1
    with pytest.raises(TuningError, match="lambda_min / lambda_max"):
        check_study(url, "s", lambda_distribution(1.0, 10.0))
    optuna.create_study(study_name="single", storage=url, direction="maximize")
    with pytest.raises(TuningError, match="optimises"):
        check_study(url, "single", SPACE)


def test_study_names_follow_the_setup() -> None:
    a = study_name("mnist", {"model": {"timesteps": 4}})
    assert a == study_name("mnist", {"model": {"timesteps": 4}})
    assert a != study_name("mnist", {"model": {"timesteps": 8}})
    assert a.startswith("mnist-") and len(a) == len("mnist-") + 8


@pytest.fixture(scope="module")
def saved_networks(tmp_path_factory: pytest.TempPathFactory, digits_direct_model) -> Path:
    folder = tmp_path_factory.mktemp("networks")
    (folder / "direct.pkl").write_bytes(pickle.dumps(checkpoint(digits_direct_model)))
    (folder / "scaled.pkl").write_bytes(
        pickle.dumps(checkpoint(to_event_network(digits_direct_model)))
    )
    return folder


def worker(folder: Path, url: str, n_trials: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(WORKER), str(folder), url, "study", str(n_trials)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def complete(url: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="study", storage=open_storage(url))
    return [t for t in study.get_trials() if t.state == TrialState.COMPLETE]


@pytest.mark.slow  # worker processes
def test_two_workers_share_one_study(saved_networks: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    procs = [worker(saved_networks, url, 6) for _ in range(2)]
    for p in procs:
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, out[-2000:]
    study = optuna.load_study(study_name="study", storage=url)
    assert study.metric_names == ["val_accuracy", "energy_nJ"]  # named axes in optuna-dashboard
    trials = study.get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    # both stop once the study holds 6 complete trials; one may finish a trial in flight
    assert 6 <= len(done) <= 7
    assert all(t.state == TrialState.COMPLETE for t in trials)  # none lost or left running
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert len({t.datetime_start for t in done}) == len(done)
    for t in done:  # each trial measured a real fine-tuned network
        assert 0.5 <= t.params[PARAM] <= 50
        assert 0.3 < t.values[0] <= 1 and t.values[1] > 0
        assert t.user_attrs["events_per_sample"] == pytest.approx(t.values[1] * 1e3)


@pytest.mark.slow  # worker processes
def test_a_killed_sweep_resumes_without_losing_or_repeating_trials(
    saved_networks: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = worker(saved_networks, url, 50)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # the event: two trials complete in the store
        try:
            if len(complete(url)) >= 2:
                break
        except KeyError:  # the study is not created yet
            pass
        assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = {t.number: t.values for t in complete(url)}
    assert len(before) >= 2
    resumed = worker(saved_networks, url, len(before) + 2)
    out = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, out[-2000:]
    after = {t.number: t.values for t in complete(url)}
    assert len(after) == len(before) + 2  # the count only grows, by exactly what was missing
    assert {k: after[k] for k in before} == before  # finished trials keep their values
    assert torch.tensor(list(after)).unique().numel() == len(after)


def test_with_an_energy_target_stronger_trials_stop_before_any_step(tmp_path: Path) -> None:
    """A study on a smooth toy: energy 0.01 / sqrt(lambda) against D's 0.03 (reduction 3 sqrt
    lambda, so lambda >= 4 reaches 6x), events at the half-way check twice the final ones."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    rule = EarlyStop(
        at=(0.5,),
        direct_accuracy=1.0,
        required=0.9,
        events_tolerance=None,
        energy_target=6.0,
        direct_energy=0.03,
    )
    steps: list[float] = []

    def evaluate(lam: float, on_epoch=None, judge=None) -> dict[str, float]:
        steps.append(lam)  # the fine-tuning starts
        energy = 0.01 / math.sqrt(lam)
        judge(0.5, 5, {"val_accuracy": 0.99, "events_per_sample": 2e6 * energy})
        return {"val_accuracy": 0.99 - 1e-4 * lam, "energy_nJ": energy}

    config = StudyConfig(
        storage=url, name="s", n_trials=7, first_lambdas=(8.0, 20.0, 2.0, 1.0, 5.0)
    )
    study = run_study(config, evaluate, early_stop=rule)
    got = {t.number: t for t in study.get_trials()}
    assert [got[n].state for n in range(5)] == [
        TrialState.COMPLETE,  # 8: reaches 8.49x
        TrialState.PRUNED,  # 20: stronger than 8
        TrialState.COMPLETE,  # 2: 4.24x, the weaker neighbour
        TrialState.PRUNED,  # 1: weaker than 2 with more events at its check
        TrialState.COMPLETE,  # 5: 6.71x, the weakest reaching now
    ]
    assert 20.0 not in steps  # it never started its fine-tuning
    stopped = stopped_record(got[1])
    assert stopped.fraction == 0.0 and got[1].user_attrs["checks"] == []
    assert stopped.reason.startswith("λ = 20 is stronger than λ = 8")
    assert stopped_record(got[3]).fraction == 0.5
    assert "exceed the 14142 of λ = 2" in got[3].user_attrs["stopped_reason"]
    # the sampler's two trials obey the same rule against the study as it stands at the end
    complete = [t for t in got.values() if t.state == TrialState.COMPLETE]
    reach = min(t.params[PARAM] for t in complete if t.params[PARAM] >= 4)
    weaker = max(t.params[PARAM] for t in complete if t.params[PARAM] < 4)
    for t in got.values():
        lam = t.params[PARAM]
        if t.state == TrialState.PRUNED and "stronger" in t.user_attrs["stopped_reason"]:
            assert lam > reach and lam not in steps
        elif t.state == TrialState.PRUNED:
            assert lam < weaker and "events per sample" in t.user_attrs["stopped_reason"]
    # between lambda = 2 and the weakest reaching trial the line gives lambda = 4 exactly
    records = complete_records(study.get_trials())
    assert interpolated_lambda(records, 0.03, 6.0) == pytest.approx(4.0)


def test_pruned_trials_count_toward_n_trials_and_are_never_chosen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    rule = EarlyStop(at=(0.5,), direct_accuracy=1.0, required=0.9)

    def evaluate(lam: float, on_epoch=None, judge=None) -> dict[str, float]:
        accuracy = 1.0 - lam / 100  # lambda > 10.4: under the required 0.9 - 0.004
        judge(0.5, 5, {"val_accuracy": accuracy, "events_per_sample": 100 / lam})
        return {"val_accuracy": accuracy, "energy_nJ": 1 / lam}

    config = StudyConfig(storage=url, name="s", n_trials=6, first_lambdas=(40.0, 5.0, 30.0))
    study = run_study(config, evaluate, early_stop=rule)
    states = [t.state for t in study.get_trials()]
    # lambda = 40 runs to the end: no trial was feasible yet (it could have been the choice)
    assert len(states) == 6 and states[:3] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED]
    assert check_study(url, "s", SPACE) == 6
    chosen, met = select_trial(complete_records(study.get_trials()), Choice(1.0, 0.9))
    assert met
    pruned = [t for t in study.get_trials() if t.state == TrialState.PRUNED]
    best = chosen.rate_lambda
    for t in pruned:  # too strong a penalty, or more events than the trial chosen later
        lam, why = t.params[PARAM], t.user_attrs["stopped_reason"]
        assert (lam > 10.4 and why.startswith("retention")) or (lam < best and "events" in why)
    record = stopped_record(pruned[0])
    assert record.number == 2 and record.fraction == 0.5 and "retention 0.7000" in record.reason
