"""Thin Kedro nodes of the per-dataset template pipeline: each calls the library and returns data."""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor

from direct2event import registry, tuning
from direct2event.data.containers import RawData
from direct2event.data.kedro_datasets import EventSource
from direct2event.data.splits import DataSplits, make_splits
from direct2event.params import (
    DataParams,
    ModelParams,
    TrainingParams,
    TransferParams,
    TuningParams,
)
from direct2event.snn.calibration import CalibrationMap, LayerStatistics
from direct2event.snn.energy import EnergyProfile, load_profiles
from direct2event.snn.evaluation import evaluate_with_counts
from direct2event.snn.models import (
    SpikingNet,
    build_model,
    checkpoint,
    restore,
    to_event_network,
)
from direct2event.snn.neurons import LIFParameters
from direct2event.snn.thresholds import ThresholdReport
from direct2event.snn.training import FitConfig, Split, fit, predict_logits, resolve_device
from direct2event.snn.transfer import (
    build_event_network,
    calibrate,
    finetune_event_network,
)

logger = logging.getLogger(__name__)


def direct_encoding(splits: DataSplits) -> str:
    """How network D sees the data: analog images, or event frames fed as analog values."""
    return "frames" if splits.kind == "events" else "direct"


def prepare_data(
    raw_data: RawData | EventSource, data: dict[str, Any], model: dict[str, Any]
) -> DataSplits:
    """Bin events to ``timesteps`` frames when needed and split with a fixed seed."""
    data_p, model_p = DataParams(**data), ModelParams(**model)
    raw = raw_data.frames(model_p.timesteps) if isinstance(raw_data, EventSource) else raw_data
    splits = make_splits(
        raw,
        data_p.calibration_fraction,
        data_p.validation_fraction,
        data_p.seed,
        data_p.max_train,
        data_p.max_validation,
        data_p.max_test,
    )
    logger.info("%s splits: %s (input %s)", splits.name, splits.sizes(), splits.input_shape)
    return splits


def _fit_config(training: TrainingParams, model: ModelParams, encoding: str) -> FitConfig:
    return FitConfig(
        epochs=training.epochs,
        lr=training.lr,
        batch_size=training.batch_size,
        timesteps=model.timesteps,
        encoding=encoding,  # type: ignore[arg-type]
        weight_decay=training.weight_decay,
        optimizer=training.optimizer,
        schedule=training.schedule,
        shift_augment=training.shift_augment,
        seed=training.seed,
        bf16=training.bf16,
    )


def training_curve(history: list[dict[str, float]], title: str) -> Figure:
    """Loss and accuracy per epoch."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    if all("val_accuracy" in h for h in history):
        ax_acc.plot(epochs, [h["val_accuracy"] for h in history], "s-", label="validation")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def history_metrics(history: list[dict[str, float]], prefix: str) -> dict[str, list[dict]]:
    """Per-epoch records in kedro-mlflow's metrics-history format (step = epoch)."""
    keys = [k for k in history[0] if k != "epoch"] if history else []
    return {
        f"{prefix}.{k}": [{"value": float(h[k]), "step": int(h["epoch"])} for h in history]
        for k in keys
        if all(math.isfinite(h.get(k, float("nan"))) for h in history)
    }


def train_direct_model(
    splits: DataSplits,
    model: dict[str, Any],
    training: dict[str, Any],
    dataset: str,
    source_model: str | None,
) -> tuple[dict[str, Any], dict[str, list[dict]], Figure]:
    """Surrogate-gradient BPTT of network D on direct (analog) input, or, with
    ``source_model``, network D loaded from the model registry (no training)."""
    model_p, train_p = ModelParams(**model), TrainingParams(**training)
    if source_model is not None:
        uri = registry.check_source(source_model, dataset, model_p)
        net = registry.load(uri)
        expected = (list(splits.input_shape), splits.classes)
        found = (net.config["input_shape"], net.config["classes"])
        if list(found[0]) != expected[0] or found[1] != expected[1]:
            raise registry.RegistryError(
                f"{uri} takes input {found[0]} with {found[1]} classes; {splits.name} has "
                f"input {expected[0]} with {expected[1]} classes."
            )
        logger.info("Network D loaded from %s; training skipped", uri)
        return checkpoint(net), {}, _empty_figure(f"Network D loaded from {uri} (not trained)")
    device = resolve_device(train_p.device)
    torch.manual_seed(train_p.seed)
    net = build_model(
        model_p.arch,
        splits.input_shape,
        splits.classes,
        LIFParameters(beta=model_p.beta, width=model_p.surrogate_width, reset=model_p.reset),
        model_p.channels,
        model_p.hidden,
    )
    logger.info("Training network D (%s) on %s for %d epochs", model_p.arch, device, train_p.epochs)
    history = fit(
        net,
        splits.train,
        splits.validation,
        _fit_config(train_p, model_p, direct_encoding(splits)),
        device,
        progress=train_p.progress,
        desc=f"{splits.name} direct",
    )
    for h in history:
        logger.info("epoch %d: %s", int(h["epoch"]), {k: round(v, 4) for k, v in h.items()})
    return (
        checkpoint(net.cpu()),
        history_metrics(history, "direct"),
        training_curve(history, f"Network D on {splits.name}"),
    )


def event_encoding(splits: DataSplits, transfer: TransferParams) -> str:
    """How network E sees the data: native event frames, or the configured static encoding."""
    return "frames" if splits.kind == "events" else transfer.input_encoding


def _setting(
    model: dict[str, Any], transfer: dict[str, Any], training: dict[str, Any]
) -> tuple[ModelParams, TransferParams, TrainingParams, torch.device]:
    model_p, transfer_p, train_p = (
        ModelParams(**model),
        TransferParams(**transfer),
        TrainingParams(**training),
    )
    return model_p, transfer_p, train_p, resolve_device(train_p.device)


def calibrate_surrogate(
    direct_model: dict[str, Any],
    splits: DataSplits,
    model: dict[str, Any],
    transfer: dict[str, Any],
    training: dict[str, Any],
) -> tuple[dict[str, Any], Figure, dict[str, dict]]:
    """Step 3: fit the monotonic map g: D's activation -> E's spikes per step, per layer."""
    model_p, transfer_p, train_p, device = _setting(model, transfer, training)
    cal = splits.calibration.head(transfer_p.calibration.max_samples)
    maps, stats = calibrate(
        restore(direct_model),
        cal,
        direct_encoding(splits),  # type: ignore[arg-type]
        model_p.timesteps,
        event_encoding(splits, transfer_p),  # type: ignore[arg-type]
        transfer_p.timesteps,
        device,
        transfer_p.calibration.max_points,
        train_p.seed,
    )
    for m in maps:
        logger.info(
            "calibration %s: rmse %.4f, R2 %.3f (%d points)", m.layer, m.rmse, m.r2, m.points
        )
    metrics = {}
    for m in maps:
        metrics[f"calibration.{m.layer}.rmse"] = {"value": m.rmse, "step": 0}
        if math.isfinite(m.r2):
            metrics[f"calibration.{m.layer}.r2"] = {"value": m.r2, "step": 0}
    return (
        {"maps": maps, "stats": stats, "samples": len(cal)},
        calibration_plot(maps, stats),
        metrics,
    )


def _layer_panels(n: int) -> tuple[Figure, list]:
    """One small panel per LIF layer, side by side."""
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    return fig, list(axes[0])


def _finish(fig: Figure, axes: list) -> Figure:
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def calibration_plot(maps: list[CalibrationMap], stats: list[LayerStatistics]) -> Figure:
    """Each layer's fitted map g, with D's mean activation per channel against E's rate."""
    fig, axes = _layer_panels(len(maps))
    for ax, m, s in zip(axes, maps, stats, strict=True):
        ax.scatter(s.direct_mean, s.event_rate, s=8, alpha=0.6, label="channel means")
        ax.plot(m.knots_a, m.knots_r, "r-", lw=2, label="g (isotonic)")
        ax.set_title(f"{m.layer}\nrmse {m.rmse:.3f}, R² {m.r2:.2f}", fontsize=9)
        ax.set_xlabel("D activation per step")
        ax.set_ylabel("E spikes per step (θ = 1)")
    return _finish(fig, axes)


def scale_event_thresholds(
    direct_model: dict[str, Any],
    calibration: dict[str, Any],
    splits: DataSplits,
    model: dict[str, Any],
    transfer: dict[str, Any],
    training: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], Figure, dict[str, dict]]:
    """Step 4: per-channel thresholds of E so its rates match D's activations (calibration split)."""
    _, transfer_p, train_p, device = _setting(model, transfer, training)
    cal = splits.calibration.head(transfer_p.calibration.max_samples)
    stats: list[LayerStatistics] = calibration["stats"]
    event_model, reports = build_event_network(
        restore(direct_model),
        stats,
        cal,
        event_encoding(splits, transfer_p),  # type: ignore[arg-type]
        transfer_p.timesteps,
        device,
        transfer_p.thresholds.method,
        transfer_p.thresholds.percentile,
        transfer_p.thresholds.iterations,
        train_p.seed,
    )
    report: dict[str, Any] = {"method": transfer_p.thresholds.method, "layers": []}
    metrics: dict[str, dict] = {}
    for r, s in zip(reports, stats, strict=True):
        before = ThresholdReport.mismatch(s.event_rate, s.direct_mean)
        after = ThresholdReport.mismatch(r.rate_after, s.direct_mean)
        report["layers"].append(
            {
                "layer": r.layer,
                "rate_mismatch_before": before,
                "rate_mismatch_after": after,
                "threshold_mean": float(r.thresholds.mean()),
                "threshold_min": float(r.thresholds.min()),
                "threshold_max": float(r.thresholds.max()),
            }
        )
        metrics[f"thresholds.{r.layer}.rate_mismatch_before"] = {"value": before, "step": 0}
        metrics[f"thresholds.{r.layer}.rate_mismatch_after"] = {"value": after, "step": 0}
        logger.info("thresholds %s: rate mismatch %.3f -> %.3f", r.layer, before, after)
    return checkpoint(event_model), report, threshold_plot(reports, stats), metrics


def threshold_plot(reports: list[ThresholdReport], stats: list[LayerStatistics]) -> Figure:
    """Per channel: target rate (D) against E's rate before (θ = 1) and after scaling."""
    fig, axes = _layer_panels(len(reports))
    for ax, r, s in zip(axes, reports, stats, strict=True):
        top = float(max(s.direct_mean.max(), s.event_rate.max(), r.rate_after.max(), 1e-3))
        ax.plot([0, top], [0, top], "k:", lw=1)
        ax.scatter(s.direct_mean, s.event_rate, s=8, alpha=0.5, label="θ = 1 (naive)")
        ax.scatter(s.direct_mean, r.rate_after, s=8, alpha=0.8, label="scaled θ")
        ax.set_title(r.layer, fontsize=9)
        ax.set_xlabel("D mean activation per step")
        ax.set_ylabel("E spikes per step")
    return _finish(fig, axes)


def _finetune_train(
    splits: DataSplits, transfer_p: TransferParams, train_p: TrainingParams
) -> Split:
    """The training samples of one fine-tuning run (a seeded subset when ``max_train`` is set)."""
    ft, train = transfer_p.finetune, splits.train
    if ft.max_train is not None and ft.max_train < len(train):
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(train_p.seed))
        idx = pick[: ft.max_train].sort().values
        train = Split(train.x[idx], train.y[idx])
    return train


def _teacher_logits(
    direct: SpikingNet,
    splits: DataSplits,
    model_p: ModelParams,
    transfer_p: TransferParams,
    train_p: TrainingParams,
    device: torch.device,
) -> Tensor:
    """D's logits on the fine-tuning samples, for runs that distil from D and share them."""
    train = _finetune_train(splits, transfer_p, train_p)
    return predict_logits(direct, train, direct_encoding(splits), model_p.timesteps, device)  # type: ignore[arg-type]


def _finetune(
    scaled: SpikingNet,
    direct: SpikingNet,
    splits: DataSplits,
    model_p: ModelParams,
    transfer_p: TransferParams,
    train_p: TrainingParams,
    device: torch.device,
    rate_lambda: float,
    encoding: str | None = None,
    distill: bool | None = None,
    teacher_logits: Tensor | None = None,
) -> tuple[SpikingNet, list[dict[str, float]]]:
    """Fine-tune E as configured; ``encoding`` and ``distill`` override the configuration;
    ``teacher_logits`` (from :func:`_teacher_logits`) saves recomputing D's logits."""
    ft = transfer_p.finetune
    if ft.epochs == 0:
        return scaled, []
    cfg = FitConfig(
        epochs=ft.epochs,
        lr=ft.lr,
        batch_size=ft.batch_size,
        timesteps=transfer_p.timesteps,
        encoding=(encoding or event_encoding(splits, transfer_p)),  # type: ignore[arg-type]
        weight_decay=ft.weight_decay,
        optimizer=ft.optimizer,
        schedule=ft.schedule,
        shift_augment=0,
        seed=train_p.seed,
        bf16=train_p.bf16,
    )
    return finetune_event_network(
        scaled,
        direct,
        _finetune_train(splits, transfer_p, train_p),
        splits.validation,
        cfg,
        device,
        rate_lambda,
        ft.distill if distill is None else distill,
        direct_encoding(splits),  # type: ignore[arg-type]
        model_p.timesteps,
        ft.alpha,
        ft.temperature,
        progress=train_p.progress,
        teacher_logits=teacher_logits,
    )


def setup_fingerprint(
    data: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
    transfer: dict[str, Any],
    source_model: str | None,
) -> dict[str, Any]:
    """What changes a sweep trial's result: the study name is derived from it."""
    train = TrainingParams(**training).model_dump(exclude={"progress", "device"})
    return {
        "data": DataParams(**data).model_dump(),
        "model": ModelParams(**model).model_dump(),
        "training": train,
        "transfer": TransferParams(**transfer).model_dump(exclude={"ablation"}),
        "source_model": source_model,
    }


TrainedTrial = tuple[dict[str, Any], list[dict[str, float]], tuple[float, float]]


def study_name_for(
    dataset: str,
    tune_p: TuningParams,
    data: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
    transfer: dict[str, Any],
    source_model: str | None,
) -> str:
    """``tuning.study_name``, or ``<key>-<fingerprint>`` of the setup (used by the node and by
    the check before the run, so both name the same study)."""
    return tune_p.study_name or tuning.study_name(
        dataset, setup_fingerprint(data, model, training, transfer, source_model)
    )


def _drop_dominated(trained: dict[float, TrainedTrial]) -> None:
    """Forget networks of trials another trial beats on validation accuracy and energy (only a
    Pareto-optimal trial can be chosen), so a long sweep holds few networks in memory."""
    keep = tuning.non_dominated({lam: entry[2] for lam, entry in trained.items()})
    for lam in set(trained) - keep:
        del trained[lam]


def trial_evaluator(
    scaled: SpikingNet,
    direct: SpikingNet,
    splits: DataSplits,
    model_p: ModelParams,
    transfer_p: TransferParams,
    train_p: TrainingParams,
    device: torch.device,
    profiles: dict[str, EnergyProfile],
    max_validation: int | None,
    trained: dict[float, TrainedTrial] | None = None,
) -> tuple[tuning.Evaluate, float]:
    """One sweep trial as a function of lambda (fine-tune E, measure it on the validation
    split), and D's validation accuracy on the same samples (the retention reference).
    ``trained`` keeps, by lambda, the network and history of this run's trials that no other
    trial beats on both accuracy and energy: the chosen trial is always one of them."""
    val = splits.validation.head(max_validation or len(splits.validation))
    enc = event_encoding(splits, transfer_p)
    energy_model = transfer_p.energy_model
    direct_acc = measure(direct, val, direct_encoding(splits), model_p.timesteps, device, profiles)[
        "accuracy"
    ]
    distill = transfer_p.finetune.distill and transfer_p.finetune.epochs > 0

    @functools.cache
    def teacher_logits() -> Tensor:
        """D's logits for distillation: computed by the first trial, shared by the others."""
        return _teacher_logits(direct, splits, model_p, transfer_p, train_p, device)

    def evaluate(lam: float) -> dict[str, float]:
        net, history = _finetune(
            scaled,
            direct,
            splits,
            model_p,
            transfer_p,
            train_p,
            device,
            lam,
            teacher_logits=teacher_logits() if distill else None,
        )
        res = measure(net, val, enc, transfer_p.timesteps, device, profiles, train_p.seed)
        if trained is not None:
            score = (res["accuracy"], res["energy_uJ_by_model"][energy_model])
            trained[lam] = (checkpoint(net), history, score)
            _drop_dominated(trained)
        logger.info(
            "trial λ = %.4g: val accuracy %.4f, %.0f events/sample",
            lam,
            res["accuracy"],
            res["events_per_sample"],
        )
        return {
            "val_accuracy": res["accuracy"],
            "energy_uJ": res["energy_uJ_by_model"][energy_model],
            "events_per_sample": res["events_per_sample"],
            "accuracy_retention": res["accuracy"] / direct_acc if direct_acc > 0 else 0.0,
        }

    return evaluate, direct_acc


def tune_rate_lambda(
    scaled_model: dict[str, Any],
    direct_model: dict[str, Any],
    splits: DataSplits,
    dataset: str,
    data: dict[str, Any],
    model: dict[str, Any],
    transfer: dict[str, Any],
    training: dict[str, Any],
    tuning_params: dict[str, Any],
    source_model: str | None,
    energy_profiles: dict[str, Any],
) -> tuple[dict[str, Any], Figure, dict[str, dict], dict[str, Any]]:
    """Optuna sweep of lambda (validation accuracy of E vs energy); picks the lowest-energy
    trial whose accuracy retention reaches ``tuning.retention_floor``.

    Also returns the chosen trial's network when this run trained it (``{}`` otherwise): a trial
    fine-tunes exactly as the final fine-tuning does, so that node can reuse it."""
    model_p, transfer_p, train_p, device = _setting(model, transfer, training)
    tune_p = TuningParams(**tuning_params)
    configured = transfer_p.finetune.rate_lambda
    if not tune_p.enabled:
        return (
            {"best_lambda": configured, "n_trials": 0, "pareto": [], "enabled": False},
            _empty_figure("tuning disabled: λ from transfer.finetune.rate_lambda"),
            {},
            {},
        )
    energy_model = transfer_p.energy_model
    trained: dict[float, TrainedTrial] = {}
    evaluate, direct_acc = trial_evaluator(
        restore(scaled_model),
        restore(direct_model),
        splits,
        model_p,
        transfer_p,
        train_p,
        device,
        load_profiles(energy_profiles),
        tune_p.max_validation,
        trained,
    )
    name = study_name_for(dataset, tune_p, data, model, training, transfer, source_model)
    space = tuning.lambda_distribution(tune_p.lambda_min, tune_p.lambda_max)
    study = tuning.run_study(
        tune_p.storage,
        name,
        space,
        evaluate,
        tune_p.n_trials,
        tune_p.timeout_s,
        tune_p.seed,
        tuning.mlflow_trial_logger(dataset, name),
        tune_p.first_lambdas,
    )
    trials = study.get_trials(deepcopy=False)
    if not any(t.state == tuning.TrialState.COMPLETE for t in trials):
        logger.warning("No complete trial in study %s: λ from the configuration", name)
        return (
            {
                "best_lambda": configured,
                "n_trials": 0,
                "pareto": [],
                "enabled": True,
                "study_name": name,
                "storage": tune_p.storage,
            },
            _empty_figure("no complete trial"),
            {},
            {},
        )
    chosen, floor_met = tuning.select_trial(trials, direct_acc, tune_p.retention_floor)
    if not floor_met:
        logger.warning(
            "No trial reaches accuracy retention %.3f on validation; chose the most accurate "
            "(λ = %.4g)",
            tune_p.retention_floor,
            chosen.params[tuning.PARAM],
        )
    front = tuning.pareto_front(trials)
    complete = [t for t in trials if t.state == tuning.TrialState.COMPLETE]
    report = {
        "enabled": True,
        "best_lambda": float(chosen.params[tuning.PARAM]),
        "n_trials": len(complete),
        "pareto": [tuning.trial_record(t) for t in front],
        "trials": [tuning.trial_record(t) | {"number": t.number} for t in complete],
        "chosen_trial": chosen.number,
        "floor_met": floor_met,
        "retention_floor": tune_p.retention_floor,
        "direct_val_accuracy": direct_acc,
        "energy_model": energy_model,
        "study_name": name,
        "storage": tune_p.storage,
    }
    metrics = {
        "tuning.best_lambda": {"value": report["best_lambda"], "step": 0},
        "tuning.n_trials": {"value": float(len(complete)), "step": 0},
        "tuning.chosen_val_accuracy": {"value": float(chosen.values[0]), "step": 0},
        "tuning.chosen_energy_uJ": {"value": float(chosen.values[1]), "step": 0},
    }
    best = trained.get(report["best_lambda"])
    reuse = (
        {"rate_lambda": report["best_lambda"], "model": best[0], "history": best[1]} if best else {}
    )
    return report, pareto_plot(report, splits.name), metrics, reuse


def _empty_figure(text: str) -> Figure:
    fig = plt.figure(figsize=(5, 1.5))
    fig.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def pareto_plot(report: dict[str, Any], dataset: str) -> Figure:
    """Every trial (energy vs validation accuracy), the Pareto front and the chosen trial."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    trials, front = report["trials"], report["pareto"]
    ax.scatter(
        [t["energy_uJ"] for t in trials],
        [100 * t["val_accuracy"] for t in trials],
        c="grey",
        alpha=0.6,
        label="trials",
    )
    ax.plot(
        [t["energy_uJ"] for t in front],
        [100 * t["val_accuracy"] for t in front],
        "o-",
        color="C0",
        label="Pareto front",
    )
    chosen = next(t for t in trials if t["number"] == report["chosen_trial"])
    ax.scatter(
        [chosen["energy_uJ"]],
        [100 * chosen["val_accuracy"]],
        marker="*",
        s=260,
        color="C3",
        zorder=5,
        label=f"chosen: λ = {chosen['lambda']:.3g}",
    )
    floor = 100 * report["retention_floor"] * report["direct_val_accuracy"]
    ax.axhline(
        floor, color="C3", ls=":", lw=1, label=f"retention floor {report['retention_floor']} x D"
    )
    for t in trials:
        ax.annotate(
            f"{t['lambda']:.2g}",
            (t["energy_uJ"], 100 * t["val_accuracy"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set_xlabel(f"energy per sample (µJ, {report['energy_model']})")
    ax.set_ylabel("validation accuracy of E (%)")
    ax.set_title(
        f"λ sweep on {dataset}: {report['n_trials']} trials ({report['study_name']})", fontsize=9
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def finetune_event_model(
    scaled_model: dict[str, Any],
    direct_model: dict[str, Any],
    splits: DataSplits,
    model: dict[str, Any],
    transfer: dict[str, Any],
    training: dict[str, Any],
    tuning_report: dict[str, Any],
    tuned_event_model: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, list[dict]], Figure]:
    """Step 5: event-driven fine-tuning of E with ``CE + lambda * mean spike rate``, lambda
    chosen by the sweep (or ``transfer.finetune.rate_lambda`` when the sweep is off). When the
    sweep trained that very network in this run (same lambda, same settings and seed), it is
    taken as it is instead of being trained a second time."""
    model_p, transfer_p, train_p, device = _setting(model, transfer, training)
    rate_lambda = float(tuning_report["best_lambda"])
    if tuned_event_model and tuned_event_model["rate_lambda"] == rate_lambda:
        logger.info(
            "Network E for λ = %.4g taken from the sweep's trial (not trained twice)", rate_lambda
        )
        net, history = restore(tuned_event_model["model"]), tuned_event_model["history"]
    else:
        net, history = _finetune(
            restore(scaled_model),
            restore(direct_model),
            splits,
            model_p,
            transfer_p,
            train_p,
            device,
            rate_lambda,
        )
    title = f"Network E fine-tuning on {splits.name} (λ = {rate_lambda:.3g})"
    curve = training_curve(history, title) if history else _empty_figure("no fine-tuning epochs")
    return checkpoint(net.cpu()), history_metrics(history, "finetune"), curve


def measure(
    net: SpikingNet,
    split: Split,
    encoding: str,
    timesteps: int,
    device: torch.device,
    profiles: dict[str, EnergyProfile],
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, counted events and synops, firing rates and energy of one network."""
    accuracy, counts = evaluate_with_counts(net, split, encoding, timesteps, device, seed=seed)  # type: ignore[arg-type]
    return {
        "accuracy": accuracy,
        **counts.summary(),
        "energy_uJ_by_model": {k: p.energy_uj_per_sample(counts) for k, p in profiles.items()},
        "layer_energy_uJ": {k: p.layer_energy_uj_per_sample(counts) for k, p in profiles.items()},
        "firing_rates": counts.firing_rates(),
        "synops_by_layer": {
            k: {"op": c.op, "per_sample": counts.per_sample(c.synops)}
            for k, c in counts.layers.items()
        },
    }


def evaluate_transfer(
    direct_model: dict[str, Any],
    event_model: dict[str, Any],
    splits: DataSplits,
    model: dict[str, Any],
    transfer: dict[str, Any],
    training: dict[str, Any],
    energy_profiles: dict[str, Any],
) -> tuple[dict[str, Any], Figure]:
    """Steps 6-7: test accuracy, counted activity and energy of D and E on the same samples."""
    model_p, transfer_p, train_p, device = _setting(model, transfer, training)
    profiles = load_profiles(energy_profiles)
    direct = measure(
        restore(direct_model),
        splits.test,
        direct_encoding(splits),
        model_p.timesteps,
        device,
        profiles,
    )
    event = measure(
        restore(event_model),
        splits.test,
        event_encoding(splits, transfer_p),
        transfer_p.timesteps,
        device,
        profiles,
        train_p.seed,
    )
    for name, res in (("D", direct), ("E", event)):
        logger.info(
            "%s on %s test: accuracy %.4f, %.0f events/sample, energy %s uJ",
            name,
            splits.name,
            res["accuracy"],
            res["events_per_sample"],
            {k: round(v, 4) for k, v in res["energy_uJ_by_model"].items()},
        )
    return {"direct": direct, "event": event}, energy_plot(direct, event, list(profiles))


def energy_plot(direct: dict[str, Any], event: dict[str, Any], models: list[str]) -> Figure:
    """Energy per sample of each layer, D beside E, one panel per energy model."""
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.6), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        d, e = direct["layer_energy_uJ"][name], event["layer_energy_uJ"][name]
        layers = list(dict.fromkeys([*d, *e]))
        xs = range(len(layers))
        ax.bar([x - 0.2 for x in xs], [d.get(k, 0.0) for k in layers], 0.4, label="D (direct)")
        ax.bar([x + 0.2 for x in xs], [e.get(k, 0.0) for k in layers], 0.4, label="E (event)")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(layers, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("µJ per sample")
        ax.set_title(
            f"{name}: D {direct['energy_uJ_by_model'][name]:.3f} µJ, "
            f"E {event['energy_uJ_by_model'][name]:.3f} µJ",
            fontsize=9,
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


ABLATION_VARIANTS = ("naive", "thresholds", "finetune_lambda0", "finetune_lambda")


def run_ablation(
    direct_model: dict[str, Any],
    scaled_model: dict[str, Any],
    evaluation: dict[str, Any],
    splits: DataSplits,
    model: dict[str, Any],
    transfer: dict[str, Any],
    training: dict[str, Any],
    energy_profiles: dict[str, Any],
) -> tuple[list[dict[str, Any]], Figure]:
    """Step 8: naive transfer, + thresholds, + fine-tuning with lambda = 0, + the configured lambda."""
    model_p, transfer_p, train_p, device = _setting(model, transfer, training)
    profiles = load_profiles(energy_profiles)
    energy_model = transfer_p.energy_model
    enc = event_encoding(splits, transfer_p)
    direct = restore(direct_model)
    scaled = restore(scaled_model)
    rows: list[dict[str, Any]] = []
    if transfer_p.ablation.enabled:
        candidates = {
            "naive": lambda: to_event_network(direct),
            "thresholds": lambda: scaled,
            "finetune_lambda0": lambda: _finetune(
                scaled, direct, splits, model_p, transfer_p, train_p, device, 0.0
            )[0],
        }
        for variant, make in candidates.items():
            res = measure(
                make(), splits.test, enc, transfer_p.timesteps, device, profiles, train_p.seed
            )
            rows.append(_ablation_row(variant, res, energy_model))
    rows.append(_ablation_row("finetune_lambda", evaluation["event"], energy_model))
    if transfer_p.ablation.ttfs_rows:
        ttfs = _ttfs_variants(direct, splits, model_p, transfer_p, train_p, device)
        for variant, net in ttfs.items():
            res = measure(
                net, splits.test, "ttfs", transfer_p.timesteps, device, profiles, train_p.seed
            )
            rows.append(_ablation_row(variant, res, energy_model))
    direct_energy = evaluation["direct"]["energy_uJ_by_model"][energy_model]
    final_saving = direct_energy - rows[-1]["energy_uJ"]
    for row in rows:
        saved = direct_energy - row["energy_uJ"]
        row["energy_gain_fraction"] = saved / final_saving if final_saving > 0 else float("nan")
        row["energy_reduction"] = (
            direct_energy / row["energy_uJ"] if row["energy_uJ"] > 0 else float("inf")
        )
    for row in rows:
        logger.info(
            "ablation %s", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        )
    return rows, ablation_plot(rows, evaluation["direct"], energy_model, splits.name)


def _ttfs_variants(
    direct: SpikingNet,
    splits: DataSplits,
    model_p: ModelParams,
    transfer_p: TransferParams,
    train_p: TrainingParams,
    device: torch.device,
) -> dict[str, SpikingNet]:
    """The distillation reading's rows, all with TTFS input: naive, CE-only fine-tuning, SKD
    (distillation, no thresholds), and this pipeline (thresholds + lambda) without / with SKD."""
    lam = transfer_p.finetune.rate_lambda
    naive = to_event_network(direct)
    cal = splits.calibration.head(transfer_p.calibration.max_samples)
    _, stats = calibrate(
        direct,
        cal,
        direct_encoding(splits),  # type: ignore[arg-type]
        model_p.timesteps,
        "ttfs",
        transfer_p.timesteps,
        device,
        transfer_p.calibration.max_points,
        train_p.seed,
    )
    scaled, _ = build_event_network(
        direct,
        stats,
        cal,
        "ttfs",
        transfer_p.timesteps,
        device,
        transfer_p.thresholds.method,
        transfer_p.thresholds.percentile,
        transfer_p.thresholds.iterations,
        train_p.seed,
    )
    args = (direct, splits, model_p, transfer_p, train_p, device)
    return {
        "ttfs_naive": naive,
        "ttfs_finetune_ce": _finetune(naive, *args, 0.0, "ttfs", False)[0],
        "ttfs_skd": _finetune(naive, *args, 0.0, "ttfs", True)[0],
        "ttfs_pipeline": _finetune(scaled, *args, lam, "ttfs", False)[0],
        "ttfs_pipeline_skd": _finetune(scaled, *args, lam, "ttfs", True)[0],
    }


def _ablation_row(variant: str, res: dict[str, Any], energy_model: str) -> dict[str, Any]:
    return {
        "variant": variant,
        "accuracy": res["accuracy"],
        "energy_uJ": res["energy_uJ_by_model"][energy_model],
        "events_per_sample": res["events_per_sample"],
    }


SEED_GAIN_CLAIM = {"thresholds": 0.6, "finetune_lambda": 0.8}


def ablation_plot(
    rows: list[dict[str, Any]], direct: dict[str, Any], energy_model: str, dataset: str
) -> Figure:
    """Accuracy and energy of each ablation variant, D as reference, the seed's claim marked."""
    fig, (ax_acc, ax_e) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = ["direct (D)"] + [r["variant"] for r in rows]
    accs = [direct["accuracy"]] + [r["accuracy"] for r in rows]
    energies = [direct["energy_uJ_by_model"][energy_model]] + [r["energy_uJ"] for r in rows]
    ax_acc.bar(names, [100 * a for a in accs], color=["grey"] + ["C0"] * len(rows))
    ax_acc.set_ylim(max(0.0, 100 * min(accs) - 5), 100)
    ax_acc.set_ylabel("test accuracy (%)")
    ax_e.bar(names, energies, color=["grey"] + ["C1"] * len(rows))
    ax_e.set_ylabel(f"µJ per sample ({energy_model})")
    for i, r in enumerate(rows, start=1):
        text = f"{100 * r['energy_gain_fraction']:.0f}% of gain"
        claim = SEED_GAIN_CLAIM.get(r["variant"])
        if claim is not None:
            text += f"\n(seed: {'~' if claim < 0.7 else '>'}{100 * claim:.0f}%)"
        ax_e.annotate(text, (i, r["energy_uJ"]), ha="center", va="bottom", fontsize=7)
    for ax in (ax_acc, ax_e):
        ax.tick_params(axis="x", labelrotation=25, labelsize=8)
    fig.suptitle(f"Ablation on {dataset}")
    fig.tight_layout()
    return fig


def build_summary(
    dataset: str,
    splits: DataSplits,
    model: dict[str, Any],
    transfer: dict[str, Any],
    evaluation: dict[str, Any],
    ablation: list[dict[str, Any]],
    tuning_report: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, dict]]:
    """The run's report (``summary.json``), built in this one place, and its MLflow metrics."""
    transfer_p = TransferParams(**transfer)
    energy_model = transfer_p.energy_model

    def network(res: dict[str, Any]) -> dict[str, Any]:
        return {
            "accuracy": float(res["accuracy"]),
            "energy_uJ": float(res["energy_uJ_by_model"][energy_model]),
            "energy_uJ_by_model": {k: float(v) for k, v in res["energy_uJ_by_model"].items()},
            "events_per_sample": float(res["events_per_sample"]),
            "synops_per_sample": float(res["synops_per_sample"]),
            "ac_per_sample": float(res["ac_per_sample"]),
            "mac_per_sample": float(res["mac_per_sample"]),
            "firing_rates": {k: float(v) for k, v in res["firing_rates"].items()},
        }

    direct, event = network(evaluation["direct"]), network(evaluation["event"])
    summary: dict[str, Any] = {
        "dataset": dataset,
        "simulated": bool(splits.simulated),
        "timesteps": int(ModelParams(**model).timesteps),
        "event_timesteps": int(transfer_p.timesteps),
        "input_encoding": event_encoding(splits, transfer_p),
        "energy_model": energy_model,
        "splits": splits.sizes(),
        "direct": direct,
        "event": event,
        "energy_reduction": direct["energy_uJ"] / event["energy_uJ"]
        if event["energy_uJ"] > 0
        else None,
        "energy_reduction_by_model": {
            k: direct["energy_uJ_by_model"][k] / v if v > 0 else None
            for k, v in event["energy_uJ_by_model"].items()
        },
        "accuracy_retention": event["accuracy"] / direct["accuracy"]
        if direct["accuracy"] > 0
        else None,
        "rate_lambda": float(tuning_report["best_lambda"]),
        "tuning": {
            "best_lambda": float(tuning_report["best_lambda"]),
            "n_trials": int(tuning_report["n_trials"]),
            "pareto": tuning_report["pareto"],
        },
        "ablation": [
            {
                k: row[k]
                for k in (
                    "variant",
                    "accuracy",
                    "energy_uJ",
                    "events_per_sample",
                    "energy_gain_fraction",
                )
            }
            for row in ablation
        ],
    }
    metrics = {
        "direct.test_accuracy": direct["accuracy"],
        "event.test_accuracy": event["accuracy"],
        "direct.energy_uJ": direct["energy_uJ"],
        "event.energy_uJ": event["energy_uJ"],
        "direct.events_per_sample": direct["events_per_sample"],
        "event.events_per_sample": event["events_per_sample"],
        "energy_reduction": summary["energy_reduction"],
        "accuracy_retention": summary["accuracy_retention"],
    }
    for row in ablation:
        metrics[f"ablation.{row['variant']}.accuracy"] = row["accuracy"]
        metrics[f"ablation.{row['variant']}.energy_uJ"] = row["energy_uJ"]
    clean = {
        k: {"value": float(v), "step": 0}
        for k, v in metrics.items()
        if v is not None and math.isfinite(v)
    }
    return summary, clean


def register_networks(
    direct_model: dict[str, Any],
    event_model: dict[str, Any],
    summary: dict[str, Any],
    dataset: str,
    model: dict[str, Any],
    source_model: str | None,
    register_models: bool,
) -> dict[str, Any]:
    """Register D (unless it came from the registry) and E as ``<key>-direct`` / ``<key>-event``
    in the MLflow Model Registry, tagged with accuracy, energy, timesteps, lambda, code version."""
    import mlflow

    if not register_models or mlflow.active_run() is None:
        logger.info("Models not registered (register_models is off or no MLflow run is active)")
        return {"registered": False}
    common = {
        **registry.architecture_tags(ModelParams(**model)),
        "dataset": dataset,
        "energy_model": summary["energy_model"],
        "code_version": registry.code_version(),
        "run_id": mlflow.active_run().info.run_id,
    }
    uris: dict[str, Any] = {"registered": True}
    for kind, saved in (("direct", direct_model), ("event", event_model)):
        if kind == "direct" and source_model is not None:
            uris[kind] = source_model
            continue
        tags = {
            **common,
            "accuracy": summary[kind]["accuracy"],
            "energy_uJ": summary[kind]["energy_uJ"],
            "events_per_sample": summary[kind]["events_per_sample"],
            "input_encoding": "direct" if kind == "direct" else summary["input_encoding"],
        }
        if kind == "event":
            tags |= {"rate_lambda": summary["rate_lambda"], "timesteps": summary["event_timesteps"]}
        uris[kind] = registry.register(restore(saved), dataset, kind, tags)
    return uris
