"""The run's figures, each a node of its own: data in, a matplotlib figure out (the catalog saves
it as a PNG and logs it to MLflow)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from direct2event.glue.params import PipelineParams
from direct2event.glue.reports import TuningReport

# What the paper reports for the share of the final energy gain (unverified secondary summary).
PAPER_GAIN_CLAIM = {"thresholds": 0.6, "finetune_lambda": 0.8}


def note_figure(text: str) -> Figure:
    """A small figure that says why there is nothing to plot."""
    fig = plt.figure(figsize=(5, 1.5))
    fig.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def _layer_panels(n: int) -> tuple[Figure, list]:
    """One small panel per LIF layer, side by side."""
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    return fig, list(axes[0])


def _finish(fig: Figure, axes: list) -> Figure:
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def training_curve(history: list[dict[str, float]], title: str) -> Figure:
    """Loss and accuracy per epoch."""
    if not history:
        return note_figure(f"{title}: no training epochs")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    if all("val_accuracy" in h for h in history):
        ax_acc.plot(epochs, [h["val_accuracy"] for h in history], "s-", label="validation")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_direct_training(log: list[dict[str, float]], settings: PipelineParams) -> Figure:
    """Network D's training curve (a note when D came from the registry)."""
    if not log and settings.source_model is not None:
        return note_figure(f"Network D loaded from {settings.source_model} (not trained)")
    return training_curve(log, f"Network D on {settings.dataset}")


def plot_finetuning(log: list[dict[str, float]], tuning_report: TuningReport) -> Figure:
    """Network E's fine-tuning curve at the chosen lambda."""
    return training_curve(log, f"Network E fine-tuning (λ = {tuning_report.rate_lambda:.3g})")


def plot_calibration(calibration: dict[str, Any]) -> Figure:
    """Each layer's fitted map g, with D's mean activation per channel against E's rate."""
    maps, stats = calibration["maps"], calibration["stats"]
    fig, axes = _layer_panels(len(maps))
    for ax, m, s in zip(axes, maps, stats, strict=True):
        ax.scatter(s.direct_mean, s.event_rate, s=8, alpha=0.6, label="channel means")
        ax.plot(m.knots_a, m.knots_r, "r-", lw=2, label="g (isotonic)")
        ax.set_title(f"{m.layer}\nrmse {m.rmse:.3f}, R² {m.r2:.2f}", fontsize=9)
        ax.set_xlabel("D activation per step")
        ax.set_ylabel("E spikes per step (θ = 1)")
    return _finish(fig, axes)


def plot_thresholds(threshold_report: dict[str, Any]) -> Figure:
    """Per channel: target rate (D) against E's rate before (θ = 1) and after scaling."""
    layers = threshold_report["layers"]
    fig, axes = _layer_panels(len(layers))
    for ax, layer in zip(axes, layers, strict=True):
        target, before, after = layer["target_rate"], layer["rate_before"], layer["rate_after"]
        top = max(*target, *before, *after, 1e-3)
        ax.plot([0, top], [0, top], "k:", lw=1)
        ax.scatter(target, before, s=8, alpha=0.5, label="θ = 1 (naive)")
        ax.scatter(target, after, s=8, alpha=0.8, label="scaled θ")
        ax.set_title(layer["layer"], fontsize=9)
        ax.set_xlabel("D mean activation per step")
        ax.set_ylabel("E spikes per step")
    return _finish(fig, axes)


def plot_tuning(report: TuningReport, settings: PipelineParams) -> Figure:
    """Every trial (energy vs validation accuracy), the Pareto front and the chosen trial."""
    if not report.trials:
        why = "tuning disabled" if not report.enabled else "no complete trial"
        return note_figure(f"{why}: λ from transfer.finetune.rate_lambda")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    _trials(ax, report)
    _completions(ax, report, settings.transfer.finetune.epochs)
    _floor(ax, report)
    ax.set_xlabel(f"energy per sample (nJ, {report.energy_model})")
    ax.set_ylabel("validation accuracy of E (%)")
    stopped = report.stopped
    if stopped:  # no final accuracy or energy to place them by: their lambdas in a corner
        lams = ", ".join(
            f"{t.rate_lambda:.2g}" for t in sorted(stopped, key=lambda t: t.rate_lambda)
        )
        ax.text(0.01, 0.01, f"stopped early: λ = {lams}", transform=ax.transAxes, fontsize=7)
    epochs = settings.transfer.finetune.epochs
    length = f"trials of {report.trial_epochs:g} of {epochs} epochs, " if report.completed else ""
    ax.set_title(
        f"λ sweep on {settings.dataset}: {length}{report.n_complete} complete, {len(stopped)} "
        f"stopped early ({report.study_name})",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _trials(ax: Any, report: TuningReport) -> None:
    """The trials, their lambdas, the Pareto front and E at lambda = 0."""
    trials, front = report.trials, report.pareto
    ax.scatter(
        [t.energy_nJ for t in trials],
        [100 * t.val_accuracy for t in trials],
        c="grey",
        alpha=0.6,
        label="trials",
    )
    ax.plot(
        [t.energy_nJ for t in front],
        [100 * t.val_accuracy for t in front],
        "o-",
        color="C0",
        label="Pareto front",
    )
    if report.lambda0 is not None:  # the accuracy the penalty trades against
        ax.scatter(
            [report.lambda0.energy_nJ],
            [100 * report.lambda0.val_accuracy],
            marker="D",
            color="C2",
            label="E at λ = 0 (reference)",
        )
    for t in trials:
        ax.annotate(
            f"{t.rate_lambda:.2g}",
            (t.energy_nJ, 100 * t.val_accuracy),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )


def _completions(ax: Any, report: TuningReport, epochs: int) -> None:
    """Trials taken on to the whole fine-tuning (an arrow from trial length to the end) and
    the chosen one."""
    by_number = {t.number: t for t in report.trials}
    for done in report.completed:
        start = by_number.get(done.number)
        if start is not None:
            ax.annotate(
                "",
                xy=(done.energy_nJ, 100 * done.val_accuracy),
                xytext=(start.energy_nJ, 100 * start.val_accuracy),
                arrowprops={"arrowstyle": "->", "color": "C1", "lw": 1},
            )
    if report.completed:
        ax.scatter(
            [t.energy_nJ for t in report.completed],
            [100 * t.val_accuracy for t in report.completed],
            marker="s",
            color="C1",
            label=f"taken on to the whole fine-tuning ({epochs} epochs)",
        )
    completed = {t.number: t for t in report.completed}
    chosen = completed.get(report.chosen_trial) or by_number[report.chosen_trial]
    ax.scatter(
        [chosen.energy_nJ],
        [100 * chosen.val_accuracy],
        marker="*",
        s=260,
        color="C3",
        zorder=5,
        label=f"chosen: λ = {chosen.rate_lambda:.3g}",
    )


def _floor(ax: Any, report: TuningReport) -> None:
    """The retention floor (and floor + margin, what the choice needs) in D's accuracy."""
    direct = report.direct_val_accuracy or 0.0
    floor = 100 * (report.retention_floor or 0.0) * direct
    ax.axhline(
        floor, color="C3", ls=":", lw=1, label=f"retention floor {report.retention_floor} x D"
    )
    margin = report.retention_margin or 0.0
    if margin:
        ax.axhline(
            floor + 100 * margin * direct,
            color="C3",
            ls="--",
            lw=1,
            label=f"floor + margin {margin}: the choice needs this",
        )


def plot_energy(evaluation: dict[str, Any]) -> Figure:
    """Energy per sample of each layer, D beside E, one panel per energy model, with the
    bit-matched ANN's total in each title."""
    direct, event = evaluation["direct"], evaluation["event"]
    ann = evaluation.get("bit_matched_ann")
    models = list(direct["energy_nJ_by_model"])
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.6), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        d, e = direct["layer_energy_nJ"][name], event["layer_energy_nJ"][name]
        layers = list(dict.fromkeys([*d, *e]))
        xs = range(len(layers))
        ax.bar([x - 0.2 for x in xs], [d.get(k, 0.0) for k in layers], 0.4, label="D (direct)")
        ax.bar([x + 0.2 for x in xs], [e.get(k, 0.0) for k in layers], 0.4, label="E (event)")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(layers, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("nJ per sample")
        title = (
            f"{name}: D {direct['energy_nJ_by_model'][name]:.3f} nJ, "
            f"E {event['energy_nJ_by_model'][name]:.3f} nJ"
        )
        if ann:
            title += f",\n{ann['bits']}-bit ANN {ann['energy_nJ_by_model'][name]:.3f} nJ"
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_ablation(
    ablation: list[dict[str, Any]], evaluation: dict[str, Any], settings: PipelineParams
) -> Figure:
    """Accuracy and energy of each ablation row in pipeline order, D as the baseline, the
    paper's claimed share of the gain marked."""
    energy_model, direct = settings.transfer.energy_model, evaluation["direct"]
    fig, (ax_acc, ax_e) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = ["direct (D)"] + [
        r["variant"] + ("" if r.get("rate_lambda") is None else f"\nλ={r['rate_lambda']:.2g}")
        for r in ablation
    ]
    accs = [direct["accuracy"]] + [r["accuracy"] for r in ablation]
    energies = [direct["energy_nJ_by_model"][energy_model]] + [r["energy_nJ"] for r in ablation]
    ax_acc.bar(names, [100 * a for a in accs], color=["grey"] + ["C0"] * len(ablation))
    ax_acc.set_ylim(max(0.0, 100 * min(accs) - 5), 100)
    ax_acc.set_ylabel("test accuracy (%)")
    ax_e.bar(names, energies, color=["grey"] + ["C1"] * len(ablation))
    ax_e.set_ylabel(f"nJ per sample ({energy_model})")
    for i, r in enumerate(ablation, start=1):
        text = f"{100 * r['energy_gain_fraction']:.0f}% of gain"
        claim = PAPER_GAIN_CLAIM.get(r["variant"])
        if claim is not None:
            text += f"\n(paper: {'~' if claim < 0.7 else '>'}{100 * claim:.0f}%)"
        ax_e.annotate(text, (i, r["energy_nJ"]), ha="center", va="bottom", fontsize=7)
    for ax in (ax_acc, ax_e):
        ax.tick_params(axis="x", labelrotation=25, labelsize=8)
    fig.suptitle(f"Ablation on {settings.dataset}")
    fig.tight_layout()
    return fig
