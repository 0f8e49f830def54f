"""The lambda sweep: selection rule, Pareto front, storage errors, resume and parallel workers."""

from __future__ import annotations

import dataclasses
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
from optuna.trial import TrialState, create_trial

from direct2event.glue import tuning
from direct2event.snn.models import checkpoint, to_event_network

SPACE = tuning.lambda_distribution(0.5, 50.0)
WORKER = Path(__file__).with_name("sweep_worker.py")


def trial(lam: float, acc: float, energy: float, number: int) -> optuna.trial.FrozenTrial:
    t = create_trial(
        params={tuning.PARAM: lam}, distributions={tuning.PARAM: SPACE}, values=[acc, energy]
    )
    t.number = number
    return t


HAND_MADE = [
    trial(0.5, 0.981, 0.025, 0),
    trial(1.0, 0.979, 0.020, 1),
    trial(3.0, 0.976, 0.012, 2),
    trial(10.0, 0.970, 0.008, 3),
    trial(2.0, 0.975, 0.030, 4),  # dominated by trial 1 and 2
]


def test_selection_takes_lowest_energy_above_the_retention_floor() -> None:
    # D has 0.98 on validation; floor 0.995 -> accuracy >= 0.9751: trials 0, 1, 2 qualify
    chosen, met = tuning.select_trial(HAND_MADE, 0.98, 0.995)
    assert (chosen.number, met) == (2, True)
    # a looser floor (0.985 -> 0.9653) admits trial 3, the cheapest
    assert tuning.select_trial(HAND_MADE, 0.98, 0.985)[0].number == 3
    # against a D with 0.99 nobody reaches 0.995 * 0.99 = 0.985: the most accurate, flagged
    chosen, met = tuning.select_trial(HAND_MADE, 0.99, 0.995)
    assert (chosen.number, met) == (0, False)
    with pytest.raises(tuning.TuningError, match="no complete trial"):
        tuning.select_trial([], 0.98, 0.995)


def test_short_trials_within_one_standard_error_of_the_most_accurate_are_ties(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Quarter-pass trials on simulated N-MNIST (D 0.9918, none at the 0.995 floor): accuracies
    within sqrt(p (1 - p) / n) of the best cannot rank lambda, so the cheapest of them goes on."""
    trials = [
        trial(3.0, 0.9824, 0.060, 0),
        trial(6.26, 0.9780, 0.050, 1),  # 0.0044 under the best: more than 2 standard errors
        trial(0.50, 0.9838, 0.090, 2),  # the most accurate
        trial(3.7, 0.9821, 0.058, 3),  # 0.0017 under it: within one standard error (0.00179)
        trial(1.2, 0.9830, 0.075, 4),
    ]
    se = math.sqrt(0.9838 * 0.0162 / 5000)
    assert 0.9838 - se < 0.9821 < 0.9838 - se + 1e-4  # trial 3 just inside
    with caplog.at_level("INFO", logger=tuning.__name__):
        order = tuning.completion_order(trials, 0.9918, 0.995, 5000, 1.0)
    assert [t.number for t in order] == [3, 0, 4, 2]  # lowest energy first; 6.26 out
    assert "λ = 3.7, 3, 1.2, 0.5 tie within 1 standard errors" in caplog.text
    # two standard errors admit lambda = 6.26 too? 0.9838 - 2 * 0.0018 = 0.9802 > 0.9780: no
    assert [t.number for t in tuning.completion_order(trials, 0.9918, 0.995, 5000, 2.0)] == [
        3,
        0,
        4,
        2,
    ]
    # on 400 samples the standard error is 0.0063: every trial is a tie, the cheapest leads
    assert tuning.completion_order(trials, 0.9918, 0.995, 400, 1.0)[0].number == 1
    # 0 standard errors: the most accurate alone, as before
    assert [t.number for t in tuning.completion_order(trials, 0.9918, 0.995, 5000, 0.0)] == [2]
    # a trial at the floor at trial length is a candidate: ties play no part then
    trials.append(trial(2.0, 0.9870, 0.070, 5))
    assert [t.number for t in tuning.completion_order(trials, 0.9918, 0.995, 5000, 1.0)] == [5]


def test_an_energy_reduction_target_takes_the_weakest_penalty_reaching_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Quarter-pass trials on binary simulated N-MNIST frames (D spends 0.0553 uJ per sample on
    validation): the weakest lambda whose reduction reaches the target at trial length goes on."""
    trials = [
        trial(3.0, 0.9828, 0.00869, 0),  # 0.0553 / 0.00869 = 6.36x
        trial(6.26, 0.9784, 0.00670, 1),  # 8.25x
        trial(1.0, 0.9836, 0.01250, 2),  # 4.42x
        trial(0.5, 0.9840, 0.01800, 3),  # 3.07x
        trial(3.52, 0.9798, 0.00836, 4),  # 6.61x
    ]
    reached = tuning.reaching_target(trials, 0.0553, 4.0)
    assert [t.number for t in reached] == [2, 0, 4, 1]  # lambda 1, 3, 3.52, 6.26
    with caplog.at_level("INFO", logger=tuning.__name__):
        order = tuning.completion_order(trials, 0.9864, 0.995, 5000, 1.0, 0.0553, 4.0)
    assert [t.number for t in order] == [2, 0, 4, 1]
    assert "λ = 1, 3, 3.52, 6.26 reach an energy reduction of 4 at trial length" in caplog.text
    # a target of 7x: only lambda = 6.26 reaches it
    assert [
        t.number for t in tuning.completion_order(trials, 0.9864, 0.995, 5000, 1.0, 0.0553, 7.0)
    ] == [1]
    # none reaches 10x: taken on by retention (here the accuracy ties), with a warning
    caplog.clear()
    with caplog.at_level("INFO", logger=tuning.__name__):
        order = tuning.completion_order(trials, 0.9864, 0.995, 5000, 1.0, 0.0553, 10.0)
    assert order == tuning.completion_order(trials, 0.9864, 0.995, 5000, 1.0)
    assert "No trial reaches an energy reduction of 10 at trial length" in caplog.text
    # without a target (or without D's energy) nothing changes
    assert tuning.reaching_target(trials, 0.0553, None) == []
    assert tuning.reaching_target(trials, 0.0, 4.0) == []
    # whole trials: the most accurate reaching the target (lambda = 1 at 0.9836; 0.9836 / 0.9864
    # = 0.99716 reaches the 0.995 floor), lowest energy reaching the floor without a target
    chosen, met = tuning.select_trial(trials, 0.9864, 0.995, 0.0553, 4.0)
    assert (chosen.number, met) == (2, True)
    chosen, met = tuning.select_trial(trials, 0.9864, 0.995, 0.0553, 7.0)  # 0.9784: under it
    assert (chosen.number, met) == (1, False)
    # without: the lowest energy reaching 0.995 * 0.9864 = 0.98147 (lambda 3, 1, 0.5): lambda 3
    assert tuning.select_trial(trials, 0.9864, 0.995)[0].number == 0


def test_between_two_trials_the_lambda_meeting_the_target_is_interpolated() -> None:
    """Simulated N-MNIST seed 4 (binary frames, D 0.04287 uJ on validation): lambda = 1 reaches
    3.02x at trial length, 3 reaches 4.97x; a 3.75x target lies between them on the line in
    (log lambda, log reduction): lambda = exp(0.4364 * ln 3) = 1.615."""
    trials = [
        trial(3.0, 0.9760, 0.04287 / 4.966, 0),
        trial(1.0, 0.9820, 0.04287 / 3.017, 1),
        trial(6.215, 0.9760, 0.04287 / 6.625, 3),
    ]
    t = (math.log(3.75) - math.log(3.017)) / (math.log(4.966) - math.log(3.017))
    assert t == pytest.approx(0.4364, abs=1e-4)
    lam = tuning.interpolated_lambda(trials, 0.04287, 3.75)
    assert lam == pytest.approx(math.exp(t * math.log(3.0))) and lam == pytest.approx(1.615, 1e-3)
    # the weakest trial reaches it already, or nothing weaker was tried: no interpolation
    assert tuning.interpolated_lambda(trials, 0.04287, 2.5) is None
    assert tuning.interpolated_lambda(trials[:1], 0.04287, 3.75) is None
    # no trial reaches it, or no target
    assert tuning.interpolated_lambda(trials, 0.04287, 8.0) is None
    assert tuning.interpolated_lambda(trials, 0.04287, None) is None


def test_pareto_front_drops_dominated_trials_and_sorts_by_energy() -> None:
    front = tuning.pareto_front(HAND_MADE)
    assert [t.number for t in front] == [3, 2, 1, 0]
    assert tuning.trial_record(front[0]) == tuning.TrialRecord(
        rate_lambda=10.0, val_accuracy=0.97, energy_uJ=0.008, number=3
    )


def test_unreachable_storage_and_changed_space_are_refused(tmp_path: Path) -> None:
    with pytest.raises(tuning.TuningError, match="does not exist"):
        tuning.check_study("sqlite:////nonexistent-folder/optuna.db", "s", SPACE)
    with pytest.raises(tuning.TuningError, match="Cannot open the Optuna storage"):
        tuning.check_study("postgresql+psycopg2://nobody@127.0.0.1:9/none", "s", SPACE)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert tuning.check_study(url, "s", SPACE) == 0  # a new study is fine
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    study.add_trial(trial(1.0, 0.9, 0.01, 0))
    assert tuning.check_study(url, "s", SPACE) == 1
    with pytest.raises(tuning.TuningError, match="lambda_min / lambda_max"):
        tuning.check_study(url, "s", tuning.lambda_distribution(1.0, 10.0))
    optuna.create_study(study_name="single", storage=url, direction="maximize")
    with pytest.raises(tuning.TuningError, match="optimises"):
        tuning.check_study(url, "single", SPACE)


def test_study_names_follow_the_setup() -> None:
    a = tuning.study_name("mnist", {"model": {"timesteps": 4}})
    assert a == tuning.study_name("mnist", {"model": {"timesteps": 4}})
    assert a != tuning.study_name("mnist", {"model": {"timesteps": 8}})
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
    study = optuna.load_study(study_name="study", storage=tuning.open_storage(url))
    return [t for t in study.get_trials() if t.state == TrialState.COMPLETE]


OPEN_AT = """
import sys, time
from pathlib import Path
from direct2event.glue import tuning
ready, go = Path(sys.argv[2]), Path(sys.argv[3])
ready.write_text("imported")
while not go.exists():  # a barrier: all four open the new database at the same instant
    time.sleep(0.001)
storage = tuning.open_storage(sys.argv[1])
print(len(storage.get_all_studies()))
"""


def test_workers_opening_a_new_database_together_all_succeed(tmp_path: Path) -> None:
    """Optuna's schema creation races; every worker must still get the storage."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT, url, str(tmp_path / f"ready{i}"), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(4)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(4)):  # all have imported
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.write_text("go")
    outs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(outs)[-2000:]
    assert [o.split()[-1] for o in outs] == ["0"] * 4
    storage = tuning.open_storage(url)
    assert storage.get_all_studies() == []


def test_two_workers_share_one_study(saved_networks: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    procs = [worker(saved_networks, url, 6) for _ in range(2)]
    for p in procs:
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, out[-2000:]
    study = optuna.load_study(study_name="study", storage=url)
    assert study.metric_names == ["val_accuracy", "energy_uJ"]  # named axes in optuna-dashboard
    trials = study.get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    # both stop once the study holds 6 complete trials; one may finish a trial in flight
    assert 6 <= len(done) <= 7
    assert all(t.state == TrialState.COMPLETE for t in trials)  # none lost or left running
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert len({t.datetime_start for t in done}) == len(done)
    for t in done:  # each trial measured a real fine-tuned network
        assert 0.5 <= t.params[tuning.PARAM] <= 50
        assert 0.3 < t.values[0] <= 1 and t.values[1] > 0
        assert t.user_attrs["events_per_sample"] == pytest.approx(t.values[1] * 1e6)


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


def test_a_dead_workers_trial_on_this_host_fails_at_once(tmp_path: Path) -> None:
    """A trial whose worker process on this host is gone is failed without waiting for the
    heartbeat's grace period; a live worker's trial is left running."""
    import socket

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=tuning.open_storage(url), directions=["maximize"] * 2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone, live = study.ask(), study.ask()
    for trial, pid in ((gone, dead.pid), (live, os.getpid())):
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", pid)
    assert tuning.fail_dead_local_trials(study) == [gone.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {gone.number: TrialState.FAIL, live.number: TrialState.RUNNING}
    assert f"worker process {dead.pid}" in study.get_trials()[gone.number].user_attrs["fail_reason"]


def test_plain_postgresql_urls_use_the_installed_driver() -> None:
    """SQLAlchemy 2.1 reads postgresql:// as psycopg 3; with psycopg2 here it is used."""
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        assert tuning.postgres_driver("postgresql://u@h:1/o") == "postgresql+psycopg2://u@h:1/o"
    assert tuning.postgres_driver("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(tuning.TuningError) as err:  # a closed port: refused, with the hint
        tuning.open_storage("postgresql://u@127.0.0.1:1/o")
    assert "Failed to import DB access module" not in str(err.value)
    assert "postgresql+psycopg2:// needs psycopg2" in str(err.value)


def test_a_stopped_trials_lambda_is_measured_again_once(tmp_path: Path) -> None:
    """A trial failed by a stop or a dead worker is queued again with its lambda (once); one
    failed by an error is not."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=tuning.open_storage(url), directions=["maximize"] * 2)
    space = tuning.lambda_distribution(0.5, 50.0)
    for reason in ("stopped by SIGTERM", "ValueError: nan", None):
        trial = study.ask({tuning.PARAM: space})
        if reason:
            trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
    stopped = study.get_trials()[0]
    assert tuning.requeue_interrupted_trials(study) == [0]
    assert tuning.requeue_interrupted_trials(study) == []  # once
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [stopped.params]
    assert waiting[0].user_attrs == {"retry_of": 0}
    retried = study.ask()  # taken as an enqueued lambda is: the same value again
    assert retried.number == waiting[0].number
    assert retried.suggest_float(tuning.PARAM, 0.5, 50.0, log=True) == stopped.params[tuning.PARAM]


def test_the_early_stop_rule_with_values() -> None:
    rule = tuning.EarlyStop(
        at=(0.1, 0.5), direct_accuracy=0.99, required=0.996, slack=0.004, events_tolerance=0.01
    )
    assert rule.steps(100) == {10: 0.1, 50: 0.5}
    assert rule.steps(4) == {1: 0.1, 2: 0.5}  # 0.1 of 4 steps rounds to 0: checked after 1
    assert rule.steps(1) == {}  # a check at the last step is the trial's own measurement
    check = {"fraction": 0.1, "val_accuracy": 0.9821, "events_per_sample": 1000.0}
    assert rule.reason(check, None) is None  # no complete trial yet: nothing stops
    bar = tuning.Bar(retention=0.996, feasible=True, events={0.1: 991.0}, offsets={})
    # 0.9821 / 0.99 = 0.99202 >= 0.996 - 0.004, and 1000 events <= 991 * 1.01 = 1000.91
    assert rule.reason(check, bar) is None
    low = {**check, "val_accuracy": 0.9819}  # 0.99182 < 0.992
    assert rule.reason(low, bar) == (
        "retention 0.9918 at 10% of its fine-tuning (final predicted 0.9918) is more than 0.004 "
        "under the required 0.9960"
    )
    busier = {**check, "events_per_sample": 1001.0}
    assert rule.reason(busier, bar) == (
        "1001 events per sample at 10% of its fine-tuning exceed the best feasible trial's 991 (+1%)"
    )
    # checks that overstated the final retention by 0.002: the same check now predicts 0.99002
    learnt = tuning.Bar(retention=0.996, feasible=True, events={}, offsets={0.1: 0.002})
    assert "final predicted 0.9900" in rule.reason(check, learnt)
    # a learnt spread narrows the slack to 2 standard errors: 0.0012 * 2 = 0.0024, so the
    # same check (predicted 0.99002) now stops; never under slack / 4 = 0.001
    narrow = tuning.Bar(0.996, True, {}, offsets={0.1: 0.002}, spreads={0.1: 0.0012})
    assert rule.slack_at(0.1, narrow) == pytest.approx(0.0024)
    assert "more than 0.0024 under the required" in rule.reason(check, narrow)
    tight = tuning.Bar(0.996, True, {}, offsets={0.1: 0.002}, spreads={0.1: 0.0001})
    assert rule.slack_at(0.1, tight) == 0.001 and rule.slack_at(0.5, tight) == 0.004
    wide = tuning.Bar(0.996, True, {}, offsets={0.1: 0.002}, spreads={0.1: 0.01})
    assert rule.slack_at(0.1, wide) == 0.004
    fixed = tuning.EarlyStop(at=(0.1,), direct_accuracy=0.99, required=0.996, slack_sd=None)
    assert fixed.slack_at(0.1, narrow) == 0.004
    # no feasible trial: the bar is the most accurate trial's retention, events do not count
    fallback = tuning.Bar(retention=0.9954, feasible=False, events={}, offsets={})
    assert rule.reason(busier, fallback) is None
    # with an energy target the weaker penalties are wanted: no stop for events
    targeted = dataclasses.replace(rule, events_tolerance=None)
    assert targeted.reason(busier, bar) is None
    assert "under the required 0.9960" in targeted.reason(low, bar)
    assert "under the best trial's 0.9954" in rule.reason(
        {**check, "val_accuracy": 0.981}, fallback
    )


def test_with_an_energy_target_only_the_trials_that_can_be_chosen_run() -> None:
    """MNIST seed 0's 20-trial sweep (AVX-512 EPYC), events per sample in units where D spends
    23241 (its 7.64x over lambda = 2): lambda = 2 reaches 7x, 1.303 misses it (6.29x)."""

    def made(lam: float, events: float, check: float, number: int) -> optuna.trial.FrozenTrial:
        t = trial(lam, 0.9890, events * 1e-6, number)
        t.user_attrs["checks"] = [
            {"fraction": 0.1, "val_accuracy": 0.9900, "events_per_sample": check}
        ]
        return t

    trials = [made(2.0, 3042.15, 5599.1, 0), made(0.549, 5095.46, 6961.3, 10)]
    trials.append(made(1.303, 3693.48, 6696.6, 13))
    rule = tuning.EarlyStop(
        at=(0.1, 0.3),
        direct_accuracy=0.9924,
        required=0.996,
        events_tolerance=None,
        energy_target=7.0,
        direct_energy=0.023241,
    )
    bar = rule.bar(trials)
    assert bar.reaching_lambda == 2.0 and bar.weaker_lambda == 1.303
    assert bar.weaker_events == {0.1: 6696.6}
    # stronger than lambda = 2: out whatever it measures (before its first step, see below)
    assert rule.outside_target(bar, 2.25) == (
        "λ = 2.25 is stronger than λ = 2, which already reaches the energy reduction target 7 "
        "at trial length: only the weakest trial reaching it can be taken on"
    )
    good = {"fraction": 0.1, "val_accuracy": 0.9900, "events_per_sample": 5470.1}
    assert rule.reason(good, bar, 2.25).startswith("λ = 2.25 is stronger than λ = 2")
    assert rule.outside_target(bar, 2.0) is None and rule.outside_target(bar, 1.6) is None
    # weaker than lambda = 1.303 and busier at the same check: on course to miss 7x too
    busy = {**good, "events_per_sample": 6813.3}
    assert rule.reason(busy, bar, 0.946) == (
        "6813 events per sample at 10% of its fine-tuning exceed the 6697 of λ = 1.303 at the "
        "same check, which misses the energy reduction target 7 at trial length (this weaker "
        "penalty is on course to miss it too)"
    )
    assert rule.reason({**busy, "events_per_sample": 6600.0}, bar, 0.946) is None
    assert rule.reason(busy, bar, 1.6) is None  # between the two: the interpolation's range
    assert rule.reason({**busy, "fraction": 0.3}, bar, 0.946) is None  # no check to compare
    # no trial reaches 8x yet: nothing stops for its lambda or for the weaker trial's events
    unreached = dataclasses.replace(rule, energy_target=8.0).bar(trials)
    assert unreached.reaching_lambda is None and unreached.weaker_events == {}
    assert rule.outside_target(unreached, 40.0) is None
    # without a target (or whole trials, where the node passes none) the rule is off
    off = dataclasses.replace(rule, energy_target=None)
    assert (
        off.bar(trials).reaching_lambda is None and off.reason(busy, off.bar(trials), 40.0) is None
    )


def test_with_an_energy_target_stronger_trials_stop_before_any_step(tmp_path: Path) -> None:
    """A study on a smooth toy: energy 0.01 / sqrt(lambda) against D's 0.03 (reduction 3 sqrt
    lambda, so lambda >= 4 reaches 6x), events at the half-way check twice the final ones."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    rule = tuning.EarlyStop(
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
        return {"val_accuracy": 0.99 - 1e-4 * lam, "energy_uJ": energy}

    study = tuning.run_study(
        url, "s", SPACE, evaluate, 7, first=[8.0, 20.0, 2.0, 1.0, 5.0], early_stop=rule
    )
    got = {t.number: t for t in study.get_trials()}
    assert [got[n].state for n in range(5)] == [
        TrialState.COMPLETE,  # 8: reaches 8.49x
        TrialState.PRUNED,  # 20: stronger than 8
        TrialState.COMPLETE,  # 2: 4.24x, the weaker neighbour
        TrialState.PRUNED,  # 1: weaker than 2 with more events at its check
        TrialState.COMPLETE,  # 5: 6.71x, the weakest reaching now
    ]
    assert 20.0 not in steps  # it never started its fine-tuning
    stopped = tuning.stopped_record(got[1])
    assert stopped.fraction == 0.0 and got[1].user_attrs["checks"] == []
    assert stopped.reason.startswith("λ = 20 is stronger than λ = 8")
    assert tuning.stopped_record(got[3]).fraction == 0.5
    assert "exceed the 14142 of λ = 2" in got[3].user_attrs["stopped_reason"]
    # the sampler's two trials obey the same rule against the study as it stands at the end
    complete = [t for t in got.values() if t.state == TrialState.COMPLETE]
    reach = min(t.params[tuning.PARAM] for t in complete if t.params[tuning.PARAM] >= 4)
    weaker = max(t.params[tuning.PARAM] for t in complete if t.params[tuning.PARAM] < 4)
    for t in got.values():
        lam = t.params[tuning.PARAM]
        if t.state == TrialState.PRUNED and "stronger" in t.user_attrs["stopped_reason"]:
            assert lam > reach and lam not in steps
        elif t.state == TrialState.PRUNED:
            assert lam < weaker and "events per sample" in t.user_attrs["stopped_reason"]
    # between lambda = 2 and the weakest reaching trial the line gives lambda = 4 exactly
    assert tuning.interpolated_lambda(study.get_trials(), 0.03, 6.0) == pytest.approx(4.0)


def test_the_overstatement_grows_with_lambda_on_a_line_learnt_from_four_trials() -> None:
    import numpy as np

    # the 30 % checks of MNIST's one-pass trials (lambda 2, 3, 6.26, 8.03; seed 0)
    lams, gaps = [2.0, 3.0, 6.26, 8.03], [0.0014, 0.0022, 0.0043, 0.0049]
    points = [(math.log(lam), gap) for lam, gap in zip(lams, gaps, strict=True)]
    mean, error, (slope, centre) = tuning.overstatement(points)
    fitted_slope, fitted_icpt = np.polyfit([p[0] for p in points], gaps, 1)
    assert slope == pytest.approx(fitted_slope) and mean == pytest.approx(np.mean(gaps))
    residuals = np.array(gaps) - np.polyval([fitted_slope, fitted_icpt], [p[0] for p in points])
    assert error == pytest.approx(np.sqrt((residuals**2).sum() / 2) * np.sqrt(1 + 1 / 4))
    bar = tuning.Bar(0.996, True, {}, {0.3: mean}, {0.3: error}, {0.3: (slope, centre)})
    assert bar.offset(0.3, 8.03) == pytest.approx(
        np.polyval([fitted_slope, fitted_icpt], math.log(8.03))
    )
    assert bar.offset(0.3, 2.0) < mean < bar.offset(0.3, 8.03) and bar.offset(0.3) == mean
    # the same check stops a strong penalty and keeps a weak one
    rule = tuning.EarlyStop(at=(0.3,), direct_accuracy=1.0, required=0.996)
    check = {"fraction": 0.3, "val_accuracy": 0.9972, "events_per_sample": 1.0}
    assert rule.reason(check, bar, 2.0) is None
    predicted = 0.9972 - bar.offset(0.3, 8.0)  # 0.9923, under 0.996 - 0.001 (slack / 4)
    assert f"final predicted {predicted:.4f}) is more than 0.001 under" in rule.reason(
        check, bar, 8.0
    )
    # three trials: the mean alone; a falling line is held flat
    assert tuning.overstatement(points[:3])[2] is None
    flat = tuning.overstatement([(x, -g) for x, g in points])
    assert flat[2][0] == 0.0


def test_the_bar_comes_from_the_studys_complete_trials() -> None:
    rule = tuning.EarlyStop(at=(0.1,), direct_accuracy=0.99, required=0.996)
    made = [trial(2.0, 0.987, 0.010, 0), trial(3.0, 0.9865, 0.008, 1), trial(9.0, 0.97, 0.004, 2)]
    for t in made:  # every check read 0.00198 above the trial's final accuracy
        t.user_attrs["checks"] = [
            {
                "fraction": 0.1,
                "val_accuracy": t.values[0] + 0.00198,
                "events_per_sample": 1e6 * t.values[1],
            }
        ]
    bar = rule.bar(made)
    # lambda = 3 is feasible (0.9865 / 0.99 = 0.99646) and spends least: its events are the bar
    assert bar.feasible and bar.retention == 0.996 and bar.events == {0.1: 8000.0}
    assert bar.offsets[0.1] == pytest.approx(0.002)
    assert bar.spreads[0.1] == pytest.approx(0.0, abs=1e-12)  # they agree: no spread
    made[0].user_attrs["checks"][0]["val_accuracy"] += 0.001  # overstated by 0.003, 0.002, 0.002
    spread = rule.bar(made).spreads[0.1]
    assert spread == pytest.approx(0.001 / 0.99 / math.sqrt(3) * math.sqrt(1 + 1 / 3))
    assert rule.bar(made[:2]).offsets == {}  # fewer than 3 complete trials: no offset learnt
    none_feasible = rule.bar(made[2:])
    assert not none_feasible.feasible and none_feasible.events == {}
    assert none_feasible.retention == pytest.approx(0.97 / 0.99)
    assert rule.bar([]) is None


def test_pruned_trials_count_toward_n_trials_and_are_never_chosen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    rule = tuning.EarlyStop(at=(0.5,), direct_accuracy=1.0, required=0.9)

    def evaluate(lam: float, on_epoch=None, judge=None) -> dict[str, float]:
        accuracy = 1.0 - lam / 100  # lambda > 10.4: under the required 0.9 - 0.004
        judge(0.5, 5, {"val_accuracy": accuracy, "events_per_sample": 100 / lam})
        return {"val_accuracy": accuracy, "energy_uJ": 1 / lam}

    study = tuning.run_study(url, "s", SPACE, evaluate, 6, first=[40.0, 5.0, 30.0], early_stop=rule)
    states = [t.state for t in study.get_trials()]
    # lambda = 40 runs to the end: no trial was feasible yet (it could have been the choice)
    assert len(states) == 6 and states[:3] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED]
    assert tuning.check_study(url, "s", SPACE) == 6
    chosen, met = tuning.select_trial(study.get_trials(), 1.0, 0.9)
    assert chosen.state == TrialState.COMPLETE and met
    pruned = [t for t in study.get_trials() if t.state == TrialState.PRUNED]
    best = chosen.params[tuning.PARAM]
    for t in pruned:  # too strong a penalty, or more events than the trial chosen later
        lam, why = t.params[tuning.PARAM], t.user_attrs["stopped_reason"]
        assert (lam > 10.4 and why.startswith("retention")) or (lam < best and "events" in why)
    record = tuning.stopped_record(pruned[0])
    assert record.number == 2 and record.fraction == 0.5 and "retention 0.7000" in record.reason


# --- workers killed at every moment of a trial's life ---------------------------------------

N_TOY = 3
KILL_POINTS = ("trial:created", "trial:started", "trial:objective", "trial:before_tell")


def toy_worker(
    url: str, name: str, folder: Path, first: str = "", pause_at: str = "", log: str = "w.log"
) -> subprocess.Popen:
    """A sweep worker on ``url`` whose trials cost nothing (``sweep_worker.py toy``: heartbeat
    every second, grace period 3 s); with ``pause_at`` it waits at that point of its first
    trial and writes ``<point> <pid>`` to ``folder/paused.txt``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pause_at:
        env.update(
            {
                "DIRECT2EVENT_PAUSE_AT": pause_at,
                "DIRECT2EVENT_PAUSE_FILE": str(folder / "paused.txt"),
            }
        )
    cmd = [sys.executable, str(WORKER), "toy", url, name, str(N_TOY), first]
    out = (folder / log).open("w")
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_pause(folder: Path, proc: subprocess.Popen, point: str) -> None:
    marker, deadline = folder / "paused.txt", time.monotonic() + 120
    while time.monotonic() < deadline:
        if marker.exists() and f"{point} {proc.pid}" in marker.read_text():
            return
        assert proc.poll() is None, (folder / "w.log").read_text()[-3000:]
        time.sleep(0.02)  # polling an event
    raise AssertionError(f"the worker never reached {point}")


def kill_then_finish(url: str, name: str, folder: Path, point: str, first: str = "") -> list:
    """Kill a worker (SIGKILL) at ``point`` of its first trial, let a second worker finish the
    sweep, and return the study's trials."""
    victim = toy_worker(url, name, folder, first, pause_at=point)
    wait_for_pause(folder, victim, point)
    victim.kill()
    victim.wait(timeout=30)
    left = optuna.load_study(study_name=name, storage=tuning.open_storage(url)).get_trials()
    (orphan,) = [t for t in left if t.state == TrialState.RUNNING]
    # owned and beating from the transaction that made it RUNNING: never without an owner
    assert orphan.user_attrs["pid"] == victim.pid and orphan.user_attrs["host"]
    survivor = toy_worker(url, name, folder, first, log="survivor.log")
    assert survivor.wait(timeout=120) == 0, (folder / "survivor.log").read_text()[-3000:]
    return optuna.load_study(study_name=name, storage=tuning.open_storage(url)).get_trials()


def check_exactly_n_trials(trials: list, killed_point: str, first: str = "") -> None:
    finished = [t for t in trials if t.state in tuning.FINISHED]
    assert len(finished) == N_TOY
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.user_attrs["fail_reason"].startswith("worker process")
    assert failed.number == 0
    drawn = killed_point in ("trial:objective", "trial:before_tell") or first
    if drawn:  # its lambda is measured again, once
        (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == failed.number]
        assert retry.state == TrialState.COMPLETE
        assert retry.params == tuning.retry_params(failed)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_worker_killed_at_any_moment_leaves_exactly_n_trials_sqlite(
    tmp_path: Path, point: str
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    trials = kill_then_finish(url, "toy", tmp_path, point)
    check_exactly_n_trials(trials, point)


def test_a_worker_killed_as_it_takes_an_enqueued_trial_leaves_exactly_n_trials(
    tmp_path: Path,
) -> None:
    """The first lambdas are enqueued (WAITING); taking one turns it RUNNING in another write,
    which now carries the owner and the first heartbeat too."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    trials = kill_then_finish(url, "toy", tmp_path, "trial:created", first="2.0,3.0")
    check_exactly_n_trials(trials, "trial:created", first="2.0,3.0")
    assert sorted(t.params[tuning.PARAM] for t in trials if t.state == TrialState.COMPLETE)[:2] == [
        2.0,
        3.0,
    ]


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """The project's PostgreSQL (``make services``), started once for the tests below."""
    from direct2event.glue import services

    folder = tmp_path_factory.mktemp("services")
    svc = services.start(folder, pg_port=_free_port(), mlflow_port=_free_port())
    before = os.environ.get("PGPASSFILE")
    os.environ["PGPASSFILE"] = str(svc.pgpass)  # the workers inherit it
    yield svc
    if before is None:
        os.environ.pop("PGPASSFILE", None)
    else:
        os.environ["PGPASSFILE"] = before
    services.stop(svc.folder)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_worker_killed_at_any_moment_leaves_exactly_n_trials_postgres(
    tmp_path: Path, point: str, postgres
) -> None:
    name = f"toy-{point.split(':')[1]}"
    trials = kill_then_finish(postgres.storage_url, name, tmp_path, point)
    check_exactly_n_trials(trials, point)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_trial_of_a_dead_worker_on_another_machine_fails_after_the_grace_period(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """A worker on another host made trial 0 RUNNING and died before its heartbeat thread ran:
    its pid cannot be checked from here, but the heartbeat written with the trial ages, so a
    worker here fails it after the grace period and the sweep ends with n_trials."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'optuna.db'}"
    else:
        url = request.getfixturevalue("postgres").storage_url
    name = f"elsewhere-{backend}"
    elsewhere = tuning.open_storage(url, owner={"host": "another-machine", "pid": 4242})
    study = optuna.create_study(
        study_name=name, storage=elsewhere, directions=["maximize", "minimize"]
    )
    study.ask()  # created, owned and beating, then never heard of again
    survivor = toy_worker(url, name, tmp_path, log="survivor.log")
    assert survivor.wait(timeout=120) == 0, (tmp_path / "survivor.log").read_text()[-3000:]
    trials = optuna.load_study(study_name=name, storage=tuning.open_storage(url)).get_trials()
    assert len([t for t in trials if t.state in tuning.FINISHED]) == N_TOY
    (orphan,) = [t for t in trials if t.state == TrialState.FAIL]
    assert orphan.user_attrs == {"host": "another-machine", "pid": 4242}


def test_a_running_trial_with_no_owner_and_no_heartbeat_never_blocks_the_sweep(
    tmp_path: Path,
) -> None:
    """The state `make chaos` left (n_trials 3): two finished trials and one RUNNING trial with
    no params, no owner and no heartbeat row, made outside this project's storage. The worker
    waits for it, says so, fails it once it has been silent for the grace period, and runs the
    last trial: it never waits forever."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    plain = optuna.storages.RDBStorage(url)
    study = optuna.create_study(
        study_name="legacy", storage=plain, directions=["maximize", "minimize"]
    )
    for lam in (1.0, 5.0):
        study.add_trial(trial(lam, 0.98, 0.1, 0))
    study.ask()  # RUNNING, nothing else
    survivor = toy_worker(url, "legacy", tmp_path, log="survivor.log")
    assert survivor.wait(timeout=120) == 0, (tmp_path / "survivor.log").read_text()[-3000:]
    log = (tmp_path / "survivor.log").read_text()
    assert "2 finished, waiting" in log and "trial 2 (no λ yet, worker ?:?" in log
    assert "Trial 2 failed: no heartbeat for" in log
    trials = optuna.load_study(study_name="legacy", storage=tuning.open_storage(url)).get_trials()
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    assert trials[2].user_attrs["fail_reason"].startswith("no heartbeat for")
