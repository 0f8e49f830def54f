"""The shift benchmark node on digits: every shift and severity, both adaptation methods, the
baselines, the stream test, its metrics; a user's shift by import path; switched off."""

from __future__ import annotations

import pytest

from direct2event.glue.params import ParameterError
from direct2event.glue.reports import ShiftReport
from direct2event.pipelines.shift.nodes import benchmark_shifts
from direct2event.pipelines.shift.samples import shifted_samples
from direct2event.snn.adaptation import ADAPTATION_METHODS
from direct2event.snn.models import restore
from direct2event.snn.shifts import IMAGE_SHIFTS
from direct2event.snn.training import evaluate
from tests.pipelines.conftest import tiny

SMALL = {
    "max_samples": 150,
    "calibration_sizes": [16, 64, 100_000],
    "recalibration_samples": 64,
    "stream": {"segment": 40, "held_out": 50, "checkpoint_every": 10},
}


@pytest.fixture(scope="module")
def benchmark(direct_model, scaled, digits_splits):
    """The report as saved (JSON), its metrics, and the settings."""
    settings = tiny(shift=SMALL)
    report, metrics = benchmark_shifts(
        direct_model, scaled[0], scaled[0], digits_splits, None, settings
    )
    return (report.model_dump(mode="json"), metrics), settings


def test_every_shift_and_severity_has_its_row(benchmark):
    (report, _), _ = benchmark
    rows = report["rows"]
    assert [(r["shift"], r["level"]) for r in rows] == [
        (name, level) for name in IMAGE_SHIFTS for level in (1, 2, 3)
    ]
    for r in rows:
        assert 0 <= r["e_accuracy"] <= 1 and 0 <= r["d_accuracy"] <= 1
        assert r["e_events_per_sample"] > 0
        assert set(r["e_energy_nJ_by_model"]) == {"per_event", "synops_45nm", "memory_45nm"}
        assert set(r["adapted"]) == set(ADAPTATION_METHODS)
    assert report["samples"] == 150
    # the extra (warm-up, recalibration, held-out) sample is as large as its largest use
    assert report["baselines"]["recalibration"]["samples"] == 64


def test_clean_accuracy_is_es_own_on_the_same_samples(benchmark, scaled, digits_splits):
    """The clean row is E measured on the benchmark's clean sample, nothing adapted."""
    (report, _), settings = benchmark
    clean = shifted_samples(digits_splits, None, settings)("clean", 0, "eval")
    assert len(clean) == report["samples"] == 150
    e = restore(scaled[0])
    own = evaluate(e, clean, settings.event_coding, settings.device, seed=settings.seed)
    assert report["clean"]["e_accuracy"] == own


def test_summary_holds_the_target_figures_per_method(benchmark, scaled, digits_splits):
    (report, _), settings = benchmark
    for method in ADAPTATION_METHODS:
        s = report["summary"][method]
        for key in (
            "recovered_fraction",
            "clean_cost_pp",
            "clean_events_change",
            "shift_events_change",
        ):
            assert key in s
        if s["qualifying_shifts"]:
            statistical = {
                k: v
                for k, v in s["recovered_fraction_by_shift"].items()
                if k not in s["geometric_shifts"]
            }
            if statistical:  # the geometric shifts are reported apart
                assert s["recovered_fraction"] == pytest.approx(
                    sum(statistical.values()) / len(statistical)
                )
        assert s["recovery_samples"] is None or 0 <= s["recovery_samples"] <= 40
    sizes = [row["samples"] for row in report["baselines"]["calibration_sizes"]]
    own = min(settings.transfer.calibration.max_samples, len(digits_splits.calibration))
    assert 64 < own < 100_000 and sizes == [16, 64, own]  # the largest: the run's own E
    clean = shifted_samples(digits_splits, None, settings)("clean", 0, "eval")
    own_e = evaluate(
        restore(scaled[0]), clean, settings.event_coding, settings.device, seed=settings.seed
    )
    assert report["baselines"]["calibration_sizes"][-1]["accuracy"] == own_e
    for row in report["baselines"]["calibration_sizes"]:
        assert 0 < row["retention"] <= 1.2 and row["energy_reduction_by_model"]["per_event"] > 0
    qualifying = report["summary"]["modulation"]["qualifying_shifts"]
    for r in report["rows"]:  # recalibrated exactly on the qualifying middle severities
        expected = r["shift"] in qualifying and r["level"] == 2
        assert (r["recalibrated"] is not None) == expected, (r["shift"], r["level"])


def test_metrics_are_a_few_dataset_neutral_figures(benchmark):
    """A dozen metrics at most: clean E, its corruption error and each method's targets; the
    rows are in shift.json (and the run's table tables/shift.json)."""
    (report, metrics), _ = benchmark
    methods = report["summary"]
    assert set(metrics) == {
        "shift.clean.event_accuracy",
        "shift.mce.event",
        *(f"shift.{m}.{k}" for m in methods for k in ("recovered_fraction", "shift_events_change")),
    }
    assert metrics["shift.clean.event_accuracy"]["value"] == round(report["clean"]["e_accuracy"], 4)
    modulation = methods["modulation"]["recovered_fraction"]
    assert metrics["shift.modulation.recovered_fraction"]["value"] == float(f"{modulation:.4g}")


def test_stream_runs_clean_shifted_clean(benchmark):
    (report, _), _ = benchmark
    st = report["stream"]
    assert st["segment"] == 40 and set(st["methods"]) == {"none", *ADAPTATION_METHODS}
    for res in st["methods"].values():
        assert len(res["sliding_accuracy"]) == 120
        assert res["positions"] == list(range(0, 121, 10))
    none = st["methods"]["none"]
    assert none["recovery_to_shift"] == 0 and none["recovery_back"] == 0  # nothing adapts


def test_a_user_shift_by_import_path_runs_in_the_stage(direct_model, scaled, digits_splits):
    settings = tiny(
        shift={
            **SMALL,
            "skip": list(IMAGE_SHIFTS),
            "custom": {
                "dim_rows": {
                    "function": "tests.pipelines.shift.user_shift:dim_rows",
                    "severities": [0.3, 0.6, 0.9],
                }
            },
            "calibration_sizes": [16],
        }
    )
    report, metrics = benchmark_shifts(
        direct_model, scaled[0], scaled[0], digits_splits, None, settings
    )
    assert [r.shift for r in report.rows] == ["dim_rows"] * 3
    assert report.rows[2].e_accuracy <= report.clean.e_accuracy
    assert metrics["shift.clean.event_accuracy"]["value"] == round(report.clean.e_accuracy, 4)


def test_a_shift_failing_mid_stage_is_named_and_the_rest_is_kept(
    direct_model, scaled, digits_splits, caplog
):
    settings = tiny(
        shift={
            "max_samples": 60,
            "skip": [n for n in IMAGE_SHIFTS if n != "contrast"],
            "custom": {
                "flaky": {"function": USER + ":fails_at_strong", "severities": [0.1, 0.3, 0.9]}
            },
            "calibration_sizes": [16],
            "recalibration_samples": 16,
            "stream": {"segment": 20, "held_out": 10, "checkpoint_every": 10},
        }
    )
    report, _ = benchmark_shifts(direct_model, scaled[0], scaled[0], digits_splits, None, settings)
    # contrast's three rows and flaky's two sound ones are kept; the strong one is named
    assert [(r.shift, r.level) for r in report.rows] == [
        ("contrast", 1), ("contrast", 2), ("contrast", 3), ("flaky", 1), ("flaky", 2)
    ]  # fmt: skip
    (failed,) = report.failed
    assert (failed.shift, failed.level, failed.severity) == ("flaky", 3, 0.9)
    assert "mat1 and mat2 shapes" in failed.error
    assert "shift 'flaky' at severity 0.9 failed" in caplog.text


def test_the_layer_diagnostics_are_the_rows_own_passes(benchmark, scaled, digits_splits):
    """The rates and gains of the layer diagnostics, taken from the rows, equal E measured
    again on the shift's samples: unadapted, and with each method warmed up then adapting."""
    from direct2event.pipelines.shift.bench import ShiftBench
    from direct2event.snn.evaluation import measure

    (report, _), s = benchmark
    layers, e = report["layers"], restore(scaled[0])
    bench = ShiftBench(e, e, e, digits_splits, None, s)
    data = bench.shifted(layers["shift"], layers["level"], "eval")
    warm = bench.shifted(layers["shift"], layers["level"], "extra").head(s.shift.adaptation.warmup)

    def rates(samples, coding=s.event_coding):
        res = measure(e, samples, coding, s.device, {}, s.seed)
        return [round(v, 5) for v in res["firing_rates"].values()]

    assert layers["clean_rate"] == rates(bench.shifted("clean", 0, "eval"))
    assert layers["shifted_rate"] == rates(data)
    for method in ADAPTATION_METHODS:
        online, coding = bench.refs.adaptation(e, s, method)
        with online as adaptation:
            evaluate(e, warm, coding, s.device, seed=s.seed)
            assert layers["adapted"][method]["rate"] == rates(data, coding)
            held = adaptation.effective_thresholds()
        factors = [
            round(float((t_eff / layer.threshold.detach().flatten()).mean()), 4)
            for (t_eff, _), layer in zip(held, e.lif_layers(), strict=True)
        ]
        assert layers["adapted"][method]["threshold_factor"] == factors


def test_methods_at_the_middle_severity_and_a_shift_e_cannot_see(
    benchmark, direct_model, scaled, digits_splits
):
    """``adaptation.scope: middle`` runs the methods at each shift's middle severity only, with
    the same figures there as at every severity; a shift that leaves every sample as it was
    gets the clean row's results, marked, at every severity."""
    (full, _), _ = benchmark
    settings = tiny(
        shift={
            **SMALL,
            "custom": {"unseen": {"function": USER + ":unchanged", "severities": [1, 2, 3]}},
            "adaptation": {"scope": "middle"},
        }
    )
    report, _ = benchmark_shifts(direct_model, scaled[0], scaled[0], digits_splits, None, settings)
    rows = {(r.shift, r.level): r for r in report.rows}
    for (name, level), r in rows.items():
        if name == "unseen":
            assert r.input_unchanged
            assert (r.e_accuracy, r.d_accuracy) == (
                report.clean.e_accuracy,
                report.clean.d_accuracy,
            )
            assert r.adapted == report.clean.adapted  # free: the clean row's passes
            continue
        assert not r.input_unchanged
        if level == 2:
            assert set(r.adapted) == set(ADAPTATION_METHODS)
        else:
            assert r.adapted == {}
    for f in full["rows"]:  # the same passes as with every severity
        r = rows[(f["shift"], f["level"])]
        assert r.e_accuracy == f["e_accuracy"] and r.d_accuracy == f["d_accuracy"]
        if f["level"] == 2:
            for m, v in r.adapted.items():
                assert v.accuracy == f["adapted"][m]["accuracy"]
                assert v.events_per_sample == f["adapted"][m]["events_per_sample"]
    # no method's corruption error over one severity beside E's over three
    assert set(report.mean_corruption_error) == {"event", "direct"}
    assert report.summary["budgeted"].recovered_fraction == pytest.approx(
        full["summary"]["budgeted"]["recovered_fraction"]
    )
    assert "unseen" not in report.summary["budgeted"].qualifying_shifts


def test_switched_off(direct_model, scaled, digits_splits):
    report, metrics = benchmark_shifts(
        direct_model, scaled[0], scaled[0], digits_splits, None, tiny(shift={"enabled": False})
    )
    assert report == ShiftReport(enabled=False) and metrics == {}


USER = "tests.pipelines.shift.user_shift"


@pytest.mark.parametrize(
    "shift, message",
    [
        (
            {"custom": {"mine": {"function": "nowhere_module_x:f", "severities": [1]}}},
            "shift.custom.mine",
        ),
        ({"severities": {"background_noise": [1, 2, 3]}}, "not built-in image shifts"),
        ({"calibration_sizes": [4]}, "below 16"),
        ({"stream": {"shift": "fog"}}, "not a shift of this run"),
        (  # a user's shift is tried on 2 samples: a wrong shape, range are named
            {"custom": {"crop": {"function": USER + ":crop", "severities": [1]}}},
            r"shift.custom.crop: shift 'crop' at severity 1.0 returned shape \[2, 1, 15, 15\] "
            r"for images \[2, 1, 16, 16\]",
        ),
        (
            {"custom": {"bright": {"function": USER + ":overexpose", "severities": [0.5]}}},
            r"shift 'bright' at severity 0.5 returned values in \[.*\].*clamp the result",
        ),
    ],
)
def test_bad_shift_parameters_fail_before_any_work(shift, message):
    with pytest.raises(ParameterError, match=message):
        tiny(shift=shift)


def test_event_data_are_shifted_as_recordings_then_binned():
    """For an event dataset the stage asks the source for raw test recordings, shifts the events
    (tonic) and bins them as the dataset's frames; the evaluation and extra samples are disjoint."""
    import numpy as np
    import torch

    from direct2event.data.event_shifts import EventRecordings
    from direct2event.data.events import events_to_frames
    from direct2event.data.nmnist_sim import SENSOR_SIZE, simulate_recordings
    from direct2event.data.static import load_digits
    from direct2event.glue.datasets import EventSource

    digits = load_digits().train.x[:40, 0]
    images = np.pad(
        np.kron(digits, np.ones((3, 3), dtype=np.float32))[:, :24, :24], ((0, 0), (2, 2), (2, 2))
    )
    events = simulate_recordings(images, saccade_ms=30)
    asked = []

    def recordings(n: int, seed: int) -> EventRecordings:
        asked.append((n, seed))
        return EventRecordings(events[:n], np.arange(n) % 10, SENSOR_SIZE)

    source = EventSource("nmnist_sim", "unused", {}, None, recordings)
    settings = load_settings_for_events(max_samples=20, recalibration_samples=16, held_out=10)
    shifted = shifted_samples(None, source, settings)  # type: ignore[arg-type]
    assert asked == [(36, settings.seed)]  # 20 evaluated + 16 extra
    clean, extra = shifted("clean", 0, "eval"), shifted("clean", 0, "extra")
    assert len(clean) == 20 and len(extra) == 16
    expected = np.stack(
        [events_to_frames(e, SENSOR_SIZE, settings.model.timesteps) for e in events[:20]]
    )
    assert np.array_equal(clean.x.numpy(), expected)
    noisy = shifted("background_noise", 3, "eval")
    assert noisy.x.sum() > clean.x.sum()  # 20 Hz per pixel of noise events
    assert shifted("background_noise", 3, "eval") is noisy  # made once
    # the clean front: the same samples through the filters before binning, counted
    filtered = shifted("background_noise", 3, "eval", filtered=True)
    assert clean.x.sum() * 0.5 < filtered.x.sum() < noisy.x.sum()
    ins, outs = shifted.front_counts[("background_noise", 3, "eval+front")]
    assert ins == sum(len(e) for e in shift_recordings_of(shifted, "background_noise", 3))
    assert int(filtered.x.sum()) <= outs  # kept events, in binary frames (one per cell)
    # a row's shifted recordings kept for its filtered samples give the same ones, counted alike
    again = shifted_samples(None, source, settings)  # type: ignore[arg-type]
    assert torch.equal(again("background_noise", 3, "eval", keep=True).x, noisy.x)
    assert torch.equal(again("background_noise", 3, "eval", filtered=True).x, filtered.x)
    assert again.front_counts == shifted.front_counts
    again("background_noise", 2, "eval", keep=True)
    again.drop_kept()
    assert again._kept == {}  # one row's recordings at most, then forgotten

    # the front as a baseline, alone and with each method, on a tiny E over these recordings
    from direct2event.pipelines.shift.bench import ShiftBench
    from direct2event.pipelines.shift.samples import References
    from direct2event.snn.adaptation import input_statistics, reference_statistics
    from direct2event.snn.models import build_model

    torch.manual_seed(0)
    net = build_model("convnet", (2, 34, 34), 10, channels=(4, 8))
    net = net.set_mode("binary").eval()
    bench = ShiftBench.__new__(ShiftBench)
    bench.event, bench.settings, bench.shifted = net, settings, shifted
    bench.front_samples = {}
    bench.refs = References(
        reference_statistics(net, extra, settings.event_coding, settings.device),
        input_statistics(extra, settings.event_coding),
    )
    assert bench.refs.inputs is None  # a sensor's events: the encoder is not adapted
    e_clean = evaluate(net, clean, settings.event_coding, settings.device)
    clean_row = {"e_accuracy": e_clean + 0.5, "e_events_per_sample": 100.0}  # E "lost" 0.5
    row = {"shift": "background_noise", "level": 3, "e_accuracy": e_clean}
    front = bench.front(clean_row, [row])
    assert front["hot_pixel_hz"] == 300.0 and 0 < front["seconds_per_event"] < 1e-3
    (f,) = front["rows"]
    assert f["removed_fraction"] == pytest.approx(1 - outs / ins)
    assert set(f["adapted"]) == set(ADAPTATION_METHODS)
    assert f["recovered_fraction"] == pytest.approx((f["accuracy"] - e_clean) / 0.5)
    assert front["recovered_fraction"] == f["recovered_fraction"]  # the only counted shift
    # the event budget: what a clean extra recording passes at the full window
    from direct2event.data.event_filters import denoise, drop_hot_pixels

    passed = [len(denoise(drop_hot_pixels(e, 300.0), 10_000.0)) for e in events[20:36]]
    assert front["budget_events"] == pytest.approx(np.mean(passed))
    assert front["clean"]["window_us"] == 10_000.0  # clean data keep the full window
    assert front["filter_time_us"] == 10_000.0 and front["budget_tolerance"] == 0.15
    for m, v in f["adapted"].items():
        assert v["events_change"] == pytest.approx(v["events_per_sample"] / 100.0 - 1.0)
        assert front["events_change_by_method"][m] == v["events_change"]  # one shift: its own
    assert front["clean_cost_pp_by_method"]["budgeted"] == pytest.approx(
        100 * (e_clean + 0.5 - front["clean"]["adapted"]["budgeted"]["accuracy"])
    )


def shift_recordings_of(shifted, name: str, level: int) -> list:
    """The shifted recordings of the evaluation part, as the samples made them."""
    from direct2event.data.event_shifts import EventRecordings, shift_recordings

    rec, part = shifted.recordings, shifted.parts["eval"]
    sub = EventRecordings(rec.events[part], rec.labels[part], rec.sensor_size)
    fn, severities = shifted.table[name]
    return shift_recordings(sub, fn, severities[level - 1], shifted._seed(name, level, part))


def load_settings_for_events(max_samples: int, recalibration_samples: int, held_out: int):
    from direct2event.glue.params import load_settings
    from tests.pipelines.conftest import PROFILES

    raw = {
        "model": {"timesteps": 8},
        "transfer": {"input_encoding": "frames", "timesteps": 8},
        "shift": {
            "max_samples": max_samples,
            "recalibration_samples": recalibration_samples,
            "stream": {"held_out": held_out},
            "adaptation": {"warmup": 10},
        },
    }
    return load_settings("nmnist_sim", raw, PROFILES)


def test_the_static_samples_are_disjoint_and_sized_by_their_use(digits_splits):

    settings = tiny(shift={**SMALL, "adaptation": {"warmup": 30}})
    shifted = shifted_samples(digits_splits, None, settings)
    evaluated, extra = shifted("clean", 0, "eval"), shifted("clean", 0, "extra")
    assert len(evaluated) == 150
    assert len(extra) == 64  # max(recalibration 64, held-out 50, warm-up 30)
    rows = {tuple(x.flatten().tolist()) for x in evaluated.x}
    assert not rows & {tuple(x.flatten().tolist()) for x in extra.x}
