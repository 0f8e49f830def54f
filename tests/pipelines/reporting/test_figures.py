from __future__ import annotations

from direct2event.glue.reports import TrialRecord, TuningReport
from direct2event.pipelines.reporting import figures
from tests.pipelines.conftest import tiny


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_each_figure_shows_its_data(scaled, calibration, measured, settings) -> None:
    layers = len(calibration["maps"])
    assert len(figures.plot_calibration(calibration).axes) == layers
    fig = figures.plot_thresholds(scaled[1])
    assert len(fig.axes) == len(scaled[1]["layers"])
    # two series per panel: naive and scaled rates, one point per channel
    assert [len(c.get_offsets()) for c in fig.axes[0].collections] == [
        len(scaled[1]["layers"][0]["target_rate"])
    ] * 2
    log = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_accuracy": 0.6}]
    assert len(figures.plot_direct_training(log, settings).axes) == 2
    assert (
        "not trained"
        in figures.plot_direct_training([], tiny(source_model="models:/digits-direct/1"))
        .texts[0]
        .get_text()
    )
    evaluation, ablation = measured
    energy = figures.plot_energy(evaluation)
    assert [t.split(":")[0] for t in titles(energy)] == ["per_event", "synops_45nm", "memory_45nm"]
    fig = figures.plot_ablation(ablation, evaluation, settings)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[0] == "direct (D)" and labels[1] == "naive" and labels[-1].endswith("λ=5")
    assert "paper: >80%" in " ".join(t.get_text() for t in fig.axes[1].texts)


def test_tuning_figure_marks_the_choice_and_says_when_there_is_none(settings) -> None:
    trials = [
        TrialRecord(number=0, rate_lambda=1.5, val_accuracy=0.95, energy_nJ=2.0),
        TrialRecord(number=1, rate_lambda=5.0, val_accuracy=0.93, energy_nJ=1.0),
    ]
    report = TuningReport(
        rate_lambda=5.0,
        enabled=True,
        trials=trials,
        pareto=trials[::-1],
        chosen_trial=1,
        validation_floor_met=True,
        chosen_by="retention_floor",
        retention_floor=0.95,
        direct_val_accuracy=0.97,
        energy_model="per_event",
        n_complete=2,
        study_name="digits-x",
    )
    fig = figures.plot_tuning(report, settings)
    assert "chosen: λ = 5" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    # trials of one epoch, the chosen one taken on: the star sits at its whole-run values
    final = TrialRecord(number=1, rate_lambda=5.0, val_accuracy=0.945, energy_nJ=0.8)
    short = report.model_copy(update={"trial_epochs": 1, "completed": [final]})
    fig = figures.plot_tuning(short, settings)
    ax = fig.axes[0]
    star = next(c for c in ax.collections if c.get_label().startswith("chosen"))
    assert star.get_offsets().tolist() == [[0.8, 94.5]]
    arrows = [a for a in ax.texts if getattr(a, "xyann", None) is not None and a.arrow_patch]
    assert len(arrows) == 1 and arrows[0].xy == (0.8, 94.5)
    assert "trials of 1 of" in ax.get_title()
    empty = figures.plot_tuning(TuningReport(rate_lambda=5.0, enabled=False), settings)
    assert "tuning disabled" in empty.texts[0].get_text()
