from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest
import torch
from optuna.trial import TrialState

from direct2event.data.splits import DataSplits
from direct2event.glue.reports import TuningReport
from direct2event.pipelines.finetuning.nodes import (
    finetune_event_model,
    finetune_lambda0,
    tune_rate_lambda,
)
from direct2event.snn.encoders import InputCoding
from direct2event.snn.evaluation import measure
from direct2event.snn.finetuning import finetune_event_network
from direct2event.snn.models import restore
from tests.pipelines.conftest import NO_LOGITS, tiny


def final_at(lam: float, scaled, direct_model, splits, settings, warm=None) -> tuple:
    """The final fine-tuning at ``lam`` with the sweep off (no trial network to reuse)."""
    report = TuningReport(rate_lambda=lam, enabled=False)
    return finetune_event_model(
        scaled[0], direct_model, splits, settings, report, {}, NO_LOGITS, warm or {}
    )


def test_sweep_off_uses_the_configured_lambda(scaled, direct_model, digits_splits) -> None:
    settings = tiny(transfer={"finetune": {"rate_lambda": 7.0}})
    report, metrics, reuse = tune_rate_lambda(
        scaled[0], direct_model, digits_splits, settings, NO_LOGITS, {}
    )
    assert report.rate_lambda == 7.0 and report.enabled is False
    assert report.n_complete == 0 and metrics == {} and reuse == {}
    assert report.chosen_by == "configured"


def test_sweep_chooses_a_first_lambda_and_hands_its_network_on(
    scaled, direct_model, digits_splits: DataSplits, tmp_path: Path
) -> None:
    settings = tiny(
        tuning={
            "enabled": True,
            "n_trials": 2,
            "first_lambdas": [1.5, 30.0],
            "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
            "early_stop": {"enabled": False},  # both trials measured to the end
        }
    )
    report, metrics, reuse = tune_rate_lambda(
        scaled[0], direct_model, digits_splits, settings, NO_LOGITS, {}
    )
    assert (
        report.n_complete == 2
        and report.lambda0 is None
        and {t.rate_lambda for t in report.trials} == {1.5, 30.0}
    )
    assert report.study_name == settings.study_name
    by_lambda = {t.rate_lambda: t for t in report.trials}
    assert by_lambda[30.0].energy_nJ < by_lambda[1.5].energy_nJ  # stronger penalty
    required = report.retention_floor + report.retention_margin
    passing = [t for t in report.trials if t.val_accuracy >= required * report.direct_val_accuracy]
    if passing:  # the lowest energy over floor + margin
        expected = min(passing, key=lambda t: t.energy_nJ)
        assert report.validation_floor_met and report.chosen_by == "retention_floor"
    else:  # none: the most accurate, and the report says the floor was missed
        expected = max(report.trials, key=lambda t: (t.val_accuracy, -t.energy_nJ))
        assert report.validation_floor_met is False and report.chosen_by == "most_accurate"
    assert report.rate_lambda == expected.rate_lambda
    assert metrics["tuning.n_complete"]["value"] == 2.0
    # a margin above the floor no trial reaches: the most accurate trial, floor not met
    strict = tiny(tuning={**settings.tuning.model_dump(), "retention_margin": 0.09})
    assert strict.study_name == settings.study_name  # the same study, no new trials
    again, _, _ = tune_rate_lambda(scaled[0], direct_model, digits_splits, strict, NO_LOGITS, {})
    best = max(report.trials, key=lambda t: (t.val_accuracy, -t.energy_nJ))
    assert again.validation_floor_met is False and again.rate_lambda == best.rate_lambda
    assert again.retention_margin == 0.09 and again.n_complete == 2
    assert reuse["rate_lambda"] == report.rate_lambda
    # the final fine-tuning takes the sweep's network instead of training it again
    event, log = finetune_event_model(
        scaled[0], direct_model, digits_splits, settings, report, reuse, NO_LOGITS, {}
    )
    assert event is reuse["model"] and log == reuse["history"]


def test_lambda0_network_is_trained_once_and_reported_beside_the_trials(
    scaled, direct_model, digits_splits: DataSplits, tmp_path: Path
) -> None:
    settings = tiny(
        tuning={
            "enabled": True,
            "n_trials": 1,
            "first_lambdas": [40.0],
            "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
            "retention_floor": 0.999,  # unreachable: the trial runs to the end all the same
        }
    )
    lambda0 = finetune_lambda0(scaled[0], direct_model, digits_splits, settings, NO_LOGITS)
    assert lambda0["rate_lambda"] == 0.0 and [h["epoch"] for h in lambda0["history"]] == [1]
    # exactly the network the final fine-tuning trains at lambda = 0
    same, _ = final_at(0.0, scaled, direct_model, digits_splits, settings)
    for key, value in same["state_dict"].items():
        assert torch.equal(value, lambda0["model"]["state_dict"][key]), key
    report, _, reuse = tune_rate_lambda(
        scaled[0], direct_model, digits_splits, settings, NO_LOGITS, lambda0
    )
    trial, ref = report.trials[0], report.lambda0
    assert ref.rate_lambda == 0.0 and ref.energy_nJ > trial.energy_nJ  # no penalty: busier
    # a floor of 0.999 + 0.001: the only trial misses it and is still chosen (E at lambda = 0
    # is a reference, not a candidate: it would give up most of the energy gain)
    assert report.validation_floor_met is False and report.rate_lambda == 40.0
    assert reuse["rate_lambda"] == 40.0
    off = tiny(transfer={"ablation": {"enabled": False}})
    assert finetune_lambda0(scaled[0], direct_model, digits_splits, off, NO_LOGITS) == {}


def test_finetune_event_model_trains_at_the_chosen_lambda(
    scaled, direct_model, digits_splits: DataSplits, settings
) -> None:
    low, log = final_at(0.0, scaled, direct_model, digits_splits, settings)
    high, _ = final_at(30.0, scaled, direct_model, digits_splits, settings)
    assert [h["epoch"] for h in log] == [1]
    x = digits_splits.test.x[:64].float()
    inputs = (torch.rand(4, *x.shape, generator=torch.Generator().manual_seed(0)) < x).float()

    def spikes(saved: dict) -> float:
        net = restore(saved).eval()
        counts = []
        hooks = [
            lif.register_forward_hook(lambda m, i, o: counts.append(o.sum()))
            for lif in net.lif_layers()
        ]
        with torch.no_grad():
            net(inputs)
        for h in hooks:
            h.remove()
        return float(sum(counts))

    assert spikes(high) < spikes(low)  # the rate penalty cuts spikes


def test_fine_tuning_can_train_the_thresholds(scaled, direct_model, digits_splits) -> None:
    from direct2event.snn.neurons import THRESHOLD_FLOOR

    settings = tiny(transfer={"finetune": {"train_thresholds": True}})
    tuned, _ = final_at(5.0, scaled, direct_model, digits_splits, settings)
    fixed, _ = finetune_event_model(
        scaled[0],
        direct_model,
        digits_splits,
        tiny(),
        TuningReport(rate_lambda=5.0, enabled=False),
        {},
        NO_LOGITS,
        {},
    )
    before = [lif.threshold for lif in restore(scaled[0]).lif_layers()]
    after = [lif.threshold for lif in restore(tuned).lif_layers()]
    kept = [lif.threshold for lif in restore(fixed).lif_layers()]
    assert all(torch.equal(a, b) for a, b in zip(before, kept, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(torch.all(t >= THRESHOLD_FLOOR) for t in after)
    # saved as fixed buffers again: E restores like any other network
    assert all("threshold" in dict(lif.named_buffers()) for lif in restore(tuned).lif_layers())


def test_d_logits_are_computed_once_and_change_nothing(
    scaled, direct_model, digits_splits: DataSplits
) -> None:
    from direct2event.pipelines.finetuning.nodes import predict_direct_logits
    from direct2event.snn.training import predict_logits

    assert predict_direct_logits(direct_model, digits_splits, tiny()) == {"logits": None}
    distil = tiny(transfer={"finetune": {"distill": True}})
    logits = predict_direct_logits(direct_model, digits_splits, distil)["logits"]
    expected = predict_logits(
        restore(direct_model), digits_splits.train, InputCoding("analog", 4), torch.device("cpu")
    )
    assert torch.equal(logits, expected) and logits.shape == (len(digits_splits.train), 10)
    # the final fine-tuning with the shared table equals the one that computes its own
    shared, _ = finetune_event_model(
        scaled[0],
        direct_model,
        digits_splits,
        distil,
        TuningReport(rate_lambda=5.0, enabled=False),
        {},
        {"logits": logits},
        {},
    )
    own, _ = final_at(5.0, scaled, direct_model, digits_splits, distil)
    for key, value in own["state_dict"].items():
        assert torch.equal(shared["state_dict"][key], value), key
    ttfs = tiny(transfer={"ablation": {"ttfs_rows": True}})  # the SKD rows distil
    assert predict_direct_logits(direct_model, digits_splits, ttfs)["logits"] is not None


def test_lambda_warm_up_trains_lambda0_once_and_every_lambda_continues_from_it(
    scaled, direct_model, digits_splits: DataSplits, tmp_path: Path
) -> None:
    settings = tiny(
        transfer={"finetune": {"warmup_epochs": 1, "epochs": 1}},
        tuning={
            "enabled": True,
            "n_trials": 1,
            "first_lambdas": [5.0],
            "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        },
    )
    warm = finetune_lambda0(scaled[0], direct_model, digits_splits, settings, NO_LOGITS)
    assert [h["epoch"] for h in warm["history"]] == [1]
    # E = the warm-up network fine-tuned at lambda: the same weights as doing it by hand
    event, log = final_at(5.0, scaled, direct_model, digits_splits, settings, warm)
    by_hand, _ = finetune_event_network(
        restore(warm["model"]),
        restore(direct_model),
        digits_splits.train,
        settings.finetune_config(5.0),
        settings.device,
    )
    for key, value in by_hand.state_dict().items():
        assert torch.equal(event["state_dict"][key], value), key
    assert [h["epoch"] for h in log] == [1, 2] and log[0] == warm["history"][0]
    # the sweep's trial continues from the same warm-up: its network is E, handed on
    report, _, reuse = tune_rate_lambda(
        scaled[0], direct_model, digits_splits, settings, NO_LOGITS, warm
    )
    assert report.rate_lambda == 5.0 and [t.rate_lambda for t in report.trials] == [5.0]
    for key, value in event["state_dict"].items():
        assert torch.equal(reuse["model"]["state_dict"][key], value), key
    assert [h["epoch"] for h in reuse["history"]] == [1, 2]
    # without the ablation the warm-up is still trained (every lambda starts from it)
    no_ablation = tiny(
        transfer={"finetune": {"warmup_epochs": 1, "epochs": 1}, "ablation": {"enabled": False}}
    )
    assert finetune_lambda0(scaled[0], direct_model, digits_splits, no_ablation, NO_LOGITS)


def test_doomed_trials_stop_at_their_first_check_and_a_good_one_runs_to_the_end(
    scaled, direct_model, digits_splits: DataSplits, tmp_path: Path
) -> None:
    """lambda = 1000 silences E (retention 0.86 of D at the first check, measured); lambda =
    0.05 spends more events than the feasible lambda = 2 at the same check. Both stop there, as
    PRUNED in Optuna and in MLflow; lambda = 2 (retention 0.93 at the checks) runs to the end and
    is chosen. Adam's steps hardly grow with lambda, so the learning rate is raised to let the
    absurd penalty act within a quarter of one epoch."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    settings = tiny(
        transfer={"finetune": {"lr": 1e-2}},
        tuning={
            "enabled": True,
            "n_trials": 3,
            "lambda_min": 0.01,
            "lambda_max": 2000.0,
            "first_lambdas": [2.0, 1000.0, 0.05],
            "retention_floor": 0.9,
            "storage": url,
            "early_stop": {"check_at": [0.25, 0.5]},
        },
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("early-stop")
    with mlflow.start_run() as parent:
        report, metrics, reuse = tune_rate_lambda(
            scaled[0], direct_model, digits_splits, settings, NO_LOGITS, {}
        )
    study = optuna.load_study(study_name=settings.study_name, storage=url)
    by_lambda = {t.params["rate_lambda"]: t for t in study.get_trials()}
    good, silent, busy = by_lambda[2.0], by_lambda[1000.0], by_lambda[0.05]
    assert good.state == TrialState.COMPLETE
    assert [c["fraction"] for c in good.user_attrs["checks"]] == [0.25, 0.5]
    for doomed, why in ((silent, "retention"), (busy, "events per sample")):
        assert doomed.state == TrialState.PRUNED
        assert len(doomed.user_attrs["checks"]) == 1  # stopped at its first check
        assert why in doomed.user_attrs["stopped_reason"]
    first = silent.user_attrs["checks"][0]
    assert first["accuracy_retention"] < 0.9 - 0.004
    assert (
        busy.user_attrs["checks"][0]["events_per_sample"]
        > 1.01 * (good.user_attrs["checks"][0]["events_per_sample"])
    )
    # the report: one complete trial chosen, two stopped; a stopped trial is never chosen
    assert report.rate_lambda == 2.0 and report.validation_floor_met and report.n_complete == 1
    assert sorted(t.rate_lambda for t in report.stopped) == [0.05, 1000.0]
    assert {t.fraction for t in report.stopped} == {0.25}
    assert metrics["tuning.n_stopped"]["value"] == 2 and reuse["rate_lambda"] == 2.0
    # MLflow: the stopped trials' runs end FINISHED with state PRUNED and their check logged
    runs = mlflow.search_runs(
        [parent.info.experiment_id], "tags.kind = 'tuning_trial'", output_format="list"
    )
    states = {float(r.data.params["rate_lambda"]): r for r in runs}
    assert {k: r.data.tags["state"] for k, r in states.items()} == {
        2.0: "COMPLETE",
        1000.0: "PRUNED",
        0.05: "PRUNED",
    }
    assert all(r.info.status == "FINISHED" for r in runs)
    assert "retention" in states[1000.0].data.tags["stopped_reason"]
    assert states[1000.0].data.metrics["check.accuracy_retention"] == first["accuracy_retention"]


@pytest.mark.parametrize(
    ("trial_epochs", "penalty"), [(1, "rate"), (0.5, "rate"), (1, "energy"), (0.5, "energy")]
)
def test_trials_run_the_first_epoch_and_the_chosen_one_goes_on_to_the_whole_fine_tuning(
    scaled, direct_model, digits_splits: DataSplits, tmp_path: Path, trial_epochs, penalty
) -> None:
    """Trials of one epoch of three (tuning.trial_epochs = 1), or of half the first epoch (0.5,
    measured where they stop): the chosen trial is taken on from where it stopped, and the
    network the sweep hands on equals the whole three-epoch fine-tuning at its lambda trained
    from scratch (weights and epoch history). With the energy-priced penalty too: its prices
    are counted once on the starting E and carried into the taken-on part (counted again on the
    stopped trial's E, the two ended with different weights)."""
    settings = tiny(
        transfer={"finetune": {"epochs": 3, "penalty": penalty, "penalty_model": "synops_45nm"}},
        tuning={
            "enabled": True,
            "n_trials": 2,
            "first_lambdas": [1.5, 30.0],
            "retention_floor": 0.9,
            "trial_epochs": trial_epochs,
            "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
            "early_stop": {"enabled": False},
        },
    )
    assert settings.trial_epochs == trial_epochs
    report, metrics, reuse = tune_rate_lambda(
        scaled[0], direct_model, digits_splits, settings, NO_LOGITS, {}
    )
    assert report.trial_epochs == trial_epochs and report.n_complete == 2 and report.completed
    assert metrics["tuning.n_taken_on"]["value"] == len(report.completed)
    chosen = next(c for c in report.completed if c.number == report.chosen_trial)
    assert chosen.rate_lambda == report.rate_lambda == reuse["rate_lambda"]
    assert metrics["tuning.chosen_val_accuracy"]["value"] == chosen.val_accuracy
    assert [h["epoch"] for h in reuse["history"]] == [1.0, 2.0, 3.0]
    # the whole fine-tuning at the chosen lambda, from scratch (the sweep off)
    event, history = final_at(report.rate_lambda, scaled, direct_model, digits_splits, settings)
    assert history == reuse["history"]  # epochs validated by the trial's measurement: equal
    # the chosen completion's result is its last epoch's measurement: that of the network
    val = digits_splits.validation.head(settings.tuning.max_validation)
    net = restore(reuse["model"])
    again = measure(
        net, val, settings.event_coding, settings.device, settings.profiles(), settings.seed
    )
    assert (chosen.val_accuracy, chosen.energy_nJ) == (
        again["accuracy"],
        again["energy_nJ_by_model"][settings.transfer.energy_model],
    )
    assert chosen.val_accuracy == history[-1]["val_accuracy"]
    for (key, a), b in zip(
        restore(event).state_dict().items(),
        restore(reuse["model"]).state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b), key
    # the trial's own (trial-length) result is what Optuna and the report's trials hold
    trial = next(t for t in report.trials if t.number == report.chosen_trial)
    assert trial.val_accuracy != chosen.val_accuracy or trial.energy_nJ != chosen.energy_nJ


def test_with_an_energy_target_the_weakest_penalty_reaching_it_is_taken_on(
    scaled, direct_model, digits_splits: DataSplits, tmp_path: Path
) -> None:
    """Half-epoch trials at lambda = 1.5 and 30 with an energy reduction target both reach:
    the weaker penalty goes on to the whole fine-tuning (the lowest energy would be 30's), and
    the report holds the target and D's validation energy it was judged against."""
    settings = tiny(
        transfer={"finetune": {"epochs": 3}},
        tuning={
            "enabled": True,
            "n_trials": 2,
            "first_lambdas": [30.0, 1.5],
            "retention_floor": 0.5,
            "trial_epochs": 0.5,
            "energy_reduction_target": 1.01,
            "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        },
    )
    report, _, reuse = tune_rate_lambda(
        scaled[0], direct_model, digits_splits, settings, NO_LOGITS, {}
    )
    val = digits_splits.validation.head(settings.tuning.max_validation)
    direct = measure(
        restore(direct_model),
        val,
        settings.direct_coding,
        settings.device,
        settings.profiles(),
        settings.seed,
    )
    assert report.direct_val_energy_nJ == direct["energy_nJ_by_model"]["per_event"]
    assert report.energy_reduction_target == 1.01
    by_lambda = {t.rate_lambda: t for t in report.trials}
    assert sorted(by_lambda) == [1.5, 30.0] and not report.stopped  # no stop for events
    assert by_lambda[30.0].energy_nJ < by_lambda[1.5].energy_nJ  # the stronger penalty: cheaper
    assert report.direct_val_energy_nJ / by_lambda[1.5].energy_nJ >= 1.01  # both reach 1.01x
    assert [c.rate_lambda for c in report.completed] == [1.5]
    assert report.rate_lambda == reuse["rate_lambda"] == 1.5
