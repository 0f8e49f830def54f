"""Online threshold adaptation: near the identity on the calibration distribution, recovers
accuracy under a shift, and the stream test's recovery count on hand-made traces."""

from __future__ import annotations

import math

import pytest
import torch

from direct2event.snn.adaptation import (
    METHODS,
    AdaptationConfig,
    AdaptationMethod,
    OnlineAdaptation,
    frozen,
    input_statistics,
    plateau,
    recovery_samples,
    reference_statistics,
    register,
    settle_tolerance,
    sliding_accuracy,
    stream,
)
from direct2event.snn.adaptation.core import LayerReference, channel_view, ema, within_noise
from direct2event.snn.adaptation.homeostasis import Steering, steer_rate
from direct2event.snn.conversion import build_event_network, calibrate
from direct2event.snn.encoders import InputCoding, encode
from direct2event.snn.evaluation import evaluate_with_counts
from direct2event.snn.shifts import blur, brightness, contrast
from direct2event.snn.training import Split, evaluate

CPU = torch.device("cpu")
EVENT = InputCoding("regular", 8)


def encode_one(x: torch.Tensor) -> torch.Tensor:
    """One sample, encoded as E sees it."""
    return encode(x.float().unsqueeze(0), EVENT.encoding, EVENT.timesteps)


@pytest.fixture(scope="module")
def event_net(digits_direct_model, digits_splits):
    """E converted from the digits D (calibration + threshold scaling)."""
    cal = digits_splits.calibration
    _, stats = calibrate(digits_direct_model, cal, InputCoding("analog", 4), EVENT, CPU)
    net, _ = build_event_network(digits_direct_model, stats, cal, EVENT, CPU)
    return net.eval()


@pytest.fixture(scope="module")
def references(event_net, digits_splits):
    return reference_statistics(event_net, digits_splits.train.head(400), EVENT, CPU)


def test_a_batch_update_equals_the_same_samples_one_by_one():
    g = torch.Generator().manual_seed(0)
    start, samples = torch.rand(5, generator=g), torch.rand(7, 5, generator=g)
    one_by_one = start.clone()
    for s in samples:
        one_by_one = 0.9 * one_by_one + 0.1 * s
    assert torch.allclose(ema(start, samples, 0.9), one_by_one, atol=1e-6)


@pytest.mark.parametrize("method", ["modulation", "homeostasis", "budgeted"])
def test_thresholds_stay_put_on_the_calibration_distribution(
    method, event_net, references, digits_splits
):
    """Fed clean samples it was not calibrated on, every channel's effective threshold stays
    within 10 % of the calibrated one (median within 3 %), and accuracy moves by <= 1 point
    (3 of 359 digits; measured: modulation 0, homeostasis 3)."""
    clean = Split(digits_splits.train.x[400:800], digits_splits.train.y[400:800])
    base = evaluate(event_net, digits_splits.test, EVENT, CPU)
    thresholds = [layer.threshold.clone() for layer in event_net.lif_layers()]
    with OnlineAdaptation(event_net, references, AdaptationConfig(method)) as adapt:
        evaluate(event_net, clean, EVENT, CPU, batch_size=16)
        ratios = torch.cat(
            [
                (theta / ref)[r.rate > 1e-4]
                for (theta, _), ref, r in zip(adapt.effective_thresholds(), thresholds, references)
            ]
        )
        adapted = evaluate(event_net, digits_splits.test, EVENT, CPU, batch_size=16)
    change = (ratios - 1).abs()
    print(f"{method}: threshold change median {change.median():.4f}, max {change.max():.4f}")
    assert float(change.median()) < 0.03 and float(change.max()) < 0.10
    # at most 1 point lost, 1.5 moved either way (measured: budgeted +1.1, 4 of 359 digits)
    assert adapted >= base - 0.01 and abs(adapted - base) <= 0.015
    # the hooks are gone afterwards: E is the calibrated network again
    assert evaluate(event_net, digits_splits.test, EVENT, CPU) == base


def _events(net, data) -> tuple[float, float]:
    accuracy, counts = evaluate_with_counts(net, data, EVENT, CPU, batch_size=16)
    return accuracy, counts.summary()["events_per_sample"]


def test_adaptation_recovers_accuracy_and_events_under_lower_contrast(
    event_net, references, digits_splits
):
    """Modulation wins back accuracy; homeostasis brings E's events back toward their clean
    level (its purpose: the energy budget)."""
    test = digits_splits.test
    shifted = Split(contrast(test.x, 0.7, torch.Generator()), test.y)
    (clean_acc, clean_ev), (shifted_acc, shifted_ev) = (
        _events(event_net, test),
        _events(event_net, shifted),
    )
    adapted = {}
    for method in ("modulation", "homeostasis"):
        with OnlineAdaptation(event_net, references, AdaptationConfig(method)):
            adapted[method] = _events(event_net, shifted)
    print(
        f"clean {clean_acc:.3f} / {clean_ev:.0f} ev, shifted {shifted_acc:.3f} / {shifted_ev:.0f}, adapted {adapted}"
    )
    assert clean_acc - shifted_acc > 0.1  # the shift hurts E
    # measured: modulation wins back 41 % of the 24 points lost
    assert adapted["modulation"][0] - shifted_acc >= 0.3 * (clean_acc - shifted_acc)
    assert abs(adapted["homeostasis"][1] - clean_ev) < 0.5 * abs(shifted_ev - clean_ev)


def test_budgeted_recovers_accuracy_with_the_events_held_to_their_budget(
    event_net, references, digits_splits
):
    """Under blur E loses accuracy and a fifth of its spikes; modulation wins some accuracy
    back and fires fewer still; budgeted wins some back with its hidden events within 15 % of
    clean E's (measured: 0.17 of the loss at -4 %, modulation 0.27 at -24 %). Its noise band
    costs it here (0.24 without): on 400 reference digits a blurred second layer moves its
    currents by only about 3 standard errors, and the band takes 2 of them as noise."""
    test = digits_splits.test
    blurred = Split(blur(test.x.float(), 1.0, torch.Generator()), test.y)

    def hidden(data: Split) -> tuple[float, float]:
        accuracy, counts = evaluate_with_counts(event_net, data, EVENT, CPU, batch_size=16)
        return accuracy, sum(counts.neuron_events.values()) / counts.samples

    (clean_acc, clean_ev), (blur_acc, blur_ev) = hidden(test), hidden(blurred)
    warm = Split(blur(digits_splits.train.x[:300].float(), 1.0, torch.Generator()),
                 digits_splits.train.y[:300])  # fmt: skip
    adapted = {}
    for method in ("modulation", "budgeted"):
        with OnlineAdaptation(event_net, references, AdaptationConfig(method)):
            evaluate(event_net, warm, EVENT, CPU, batch_size=16)
            adapted[method] = hidden(blurred)
    print(f"clean {clean_acc:.3f}/{clean_ev:.0f}, blur {blur_acc:.3f}/{blur_ev:.0f}, {adapted}")
    assert clean_acc - blur_acc > 0.1 and blur_ev < 0.85 * clean_ev  # the shift hurts E
    acc, events = adapted["budgeted"]
    assert acc - blur_acc >= 0.15 * (clean_acc - blur_acc)  # wins back a part
    assert abs(events / clean_ev - 1) <= 0.15  # within the budget
    assert abs(adapted["modulation"][1] / clean_ev - 1) > 0.15  # modulation is not


def test_recovery_counts_on_hand_made_traces():
    positions = [0, 20, 40, 60, 80, 100, 120]
    rising = [0.50, 0.60, 0.80, 0.89, 0.90, 0.91, 0.90]
    assert recovery_samples(positions, rising, 0.90, 0.01) == 60
    dips = [0.50, 0.90, 0.80, 0.89, 0.90, 0.91, 0.90]  # in, out again, back in at 60
    assert recovery_samples(positions, dips, 0.90, 0.01) == 60
    assert recovery_samples(positions, [0.9] * 7, 0.90, 0.01) == 0
    assert recovery_samples(positions, [0.5] * 6 + [0.7], 0.90, 0.01) is None
    assert plateau([0.1, 0.2, 0.3, 0.6, 0.8, 1.0]) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="positions"):
        recovery_samples([0, 1], [0.5], 0.5)


def test_sliding_accuracy_by_hand():
    assert sliding_accuracy([1, 0, 1, 1, 0], 2) == [1.0, 0.5, 0.5, 1.0, 0.5]


def test_the_stream_checkpoints_every_segment_from_its_start(event_net, references, digits_splits):
    test = digits_splits.test
    seg = [(test.head(30), test.head(40)), (Split(test.x[30:60], test.y[30:60]), test.head(40))]
    with OnlineAdaptation(event_net, references, AdaptationConfig("modulation")) as adapt:
        trace = stream(event_net, seg, EVENT, CPU, adapt, checkpoint_every=10)
    assert trace["positions"] == [0, 10, 20, 30, 40, 50, 60]
    assert trace["checkpoint_segment"] == [0, 0, 0, 1, 1, 1, 1]
    assert len(trace["correct"]) == 60 and set(trace["correct"]) <= {0, 1}
    # unadapted E runs in batches: the same trace as one sample at a time
    alone = stream(event_net, seg, EVENT, CPU, None, checkpoint_every=10)
    one_by_one = [
        int(event_net(encode_one(x)).argmax(1)[0] == y)
        for part, _ in seg
        for x, y in zip(part.x, part.y, strict=True)
    ]
    assert alone["correct"] == one_by_one and alone["positions"] == trace["positions"]
    assert alone["checkpoint_segment"] == trace["checkpoint_segment"]
    held = [evaluate(event_net, test.head(40), EVENT, CPU)] * 7
    assert alone["held_out_accuracy"] == pytest.approx(held)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="Unknown adaptation method"):
        AdaptationConfig("entropy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="momentum"):
        AdaptationConfig("modulation", momentum=1.0)


def test_a_new_method_is_one_registered_class(event_net, references, digits_splits) -> None:
    """A method that only scales every channel's current by a fixed gain, written as one
    class: the stage runs it by name, and its effective thresholds are theta / gain."""

    class Halve(AdaptationMethod):
        name = "halve_for_test"

        def gain_bias(self, i: int):
            ref = self.reference[i]
            return torch.full_like(ref.mean, 0.5), torch.zeros_like(ref.mean)

    register(Halve)
    try:
        test = digits_splits.test.head(64)
        with OnlineAdaptation(event_net, references, AdaptationConfig("halve_for_test")) as adapt:
            halved = evaluate_with_counts(event_net, test, EVENT, CPU)[1].summary()
            thetas = adapt.effective_thresholds()
        plain = evaluate_with_counts(event_net, test, EVENT, CPU)[1].summary()
        assert halved["events_per_sample"] < plain["events_per_sample"]  # half the current
        for (theta, bias), layer in zip(thetas, event_net.lif_layers(), strict=True):
            assert torch.equal(theta, layer.threshold.detach().flatten() / 0.5)
            assert torch.equal(bias, torch.zeros_like(bias))
        x = torch.ones(2, 3, len(references[0].mean), 4, 4)
        assert channel_view(torch.arange(len(references[0].mean)).float(), x).shape == (
            1,
            1,
            len(references[0].mean),
            1,
            1,
        )
    finally:
        del METHODS["halve_for_test"]


def test_budgeted_releases_a_raised_threshold_back_to_one_at_its_release_step():
    """A channel whose threshold was raised (factor e^0.5) fires at half its budget once the
    shift ends: with ``release`` 0.05 the log factor falls by 0.05 * log(2) per sample and stops
    at exactly 0 (no overshoot below the calibrated threshold); a plain integrator (no release)
    moves at ``step`` 0.01, five times slower, for the same samples."""
    ref = LayerReference(mean=torch.zeros(1), std=torch.ones(1), rate=torch.tensor([0.2]))
    spikes = torch.zeros(4, 1, 1, 10)
    spikes[:, :, :, :1] = 1.0  # 0.1 per neuron and step: half the budget
    config = AdaptationConfig("budgeted", momentum=0.0)
    fast = {"rate": ref.rate.clone(), "log_factor": torch.tensor([0.5])}
    slow = {"rate": ref.rate.clone(), "log_factor": torch.tensor([0.5])}
    steer_rate(fast, ref, spikes, config, Steering(0.01, every_channel=True, release=0.05))
    steer_rate(slow, ref, spikes, config, Steering(0.01, every_channel=True))
    drop = math.log(2.0)
    assert float(fast["log_factor"]) == pytest.approx(0.5 - 0.05 * drop, abs=1e-6)
    assert float(slow["log_factor"]) == pytest.approx(0.5 - 0.01 * drop, abs=1e-6)
    for _ in range(13):
        steer_rate(fast, ref, spikes, config, Steering(0.01, every_channel=True, release=0.05))
    assert float(fast["log_factor"]) == pytest.approx(0.5 - 14 * 0.05 * drop, abs=1e-5)
    steer_rate(fast, ref, spikes, config, Steering(0.01, every_channel=True, release=0.05))
    assert float(fast["log_factor"]) == 0.0  # the 15th would cross: stopped at the threshold
    steer_rate(fast, ref, spikes, config, Steering(0.01, every_channel=True, release=0.05))
    assert float(fast["log_factor"]) == pytest.approx(-0.01 * drop, abs=1e-6)  # then at step


def test_the_relative_error_holds_a_noisy_rate_to_its_budget_where_the_log_error_does_not():
    """A channel whose true rate equals its budget, read through a short noisy average (half
    the samples fire at 0.05, half at 0.35: mean 0.2 = the budget): the log error is biased
    low (Jensen), so its controller lowers the threshold and lets E fire above the budget; the
    relative error is unbiased and keeps the factor at 1 on average."""
    ref = LayerReference(mean=torch.zeros(1), std=torch.ones(1), rate=torch.tensor([0.2]))
    config = AdaptationConfig("budgeted", momentum=0.0)
    low, high = torch.zeros(1, 1, 1, 20), torch.zeros(1, 1, 1, 20)
    low[..., :1], high[..., :7] = 1.0, 1.0  # 0.05 and 0.35 per neuron and step
    states = {r: {"rate": ref.rate.clone(), "log_factor": torch.zeros(1)} for r in (False, True)}
    for k in range(200):
        for relative, s in states.items():
            steer_rate(
                s, ref, high if k % 2 else low, config, Steering(0.01, True, relative=relative)
            )
    assert float(states[True]["log_factor"]) == pytest.approx(0.0, abs=0.01)
    assert float(states[False]["log_factor"]) < -0.2  # thresholds lowered: over the budget


def test_the_encoder_is_left_alone_on_clean_data_and_held_to_its_events_under_brightness(
    event_net, references, digits_splits
):
    """E encodes intensities, so its encoder's events are part of the budget. On clean data
    the budgeted encoder stays the identity: intensities within 0.02, events within 10 %
    (digits' intensities are sixteenths, and at 8 steps a sixteenth is exactly half a spike:
    the encoder's rounding flips there on the smallest change; measured -7 %). A
    brightness offset of 0.3 lights the dark background and doubles E's input events, and the
    budgeted method brings them back within 15 % of clean while winning back accuracy
    (measured: input events +66 % unadapted, -3 % adapted; accuracy 0.655 -> 0.930 of 0.944)."""
    inputs = input_statistics(digits_splits.train.head(400), EVENT)
    assert (
        inputs is not None
        and input_statistics(digits_splits.train, InputCoding("frames", 4)) is None
    )
    test = digits_splits.test
    bright = Split(brightness(test.x.float(), 0.3, torch.Generator()), test.y)
    warm = Split(brightness(digits_splits.train.x[:300].float(), 0.3, torch.Generator()),
                 digits_splits.train.y[:300])  # fmt: skip

    def run(data: Split, coding: InputCoding) -> tuple[float, float]:
        accuracy, counts = evaluate_with_counts(event_net, data, coding, CPU, batch_size=16)
        return accuracy, counts.summary()["input_events_per_sample"]

    (clean_acc, clean_in), (bright_acc, bright_in) = run(test, EVENT), run(bright, EVENT)
    config = AdaptationConfig("budgeted")
    clean = Split(digits_splits.train.x[400:800], digits_splits.train.y[400:800])
    with OnlineAdaptation(event_net, references, config, inputs) as adapt:
        coding = adapt.coding(EVENT)
        evaluate(event_net, clean, coding, CPU, batch_size=16)
        x = test.x.float()[:64]
        with frozen(adapt):
            assert (coding.adapter(x) - x).abs().max() < 0.02
        assert abs(run(test, coding)[1] / clean_in - 1) < 0.1
    with OnlineAdaptation(event_net, references, config, inputs) as adapt:
        coding = adapt.coding(EVENT)
        evaluate(event_net, warm, coding, CPU, batch_size=16)
        acc, events = run(bright, coding)
        gain, bias = adapt.method.input_gain_bias()
    print(f"clean {clean_acc:.3f}/{clean_in:.0f}, bright {bright_acc:.3f}/{bright_in:.0f}, "
          f"adapted {acc:.3f}/{events:.0f}, encoder gain {gain} bias {bias}")  # fmt: skip
    assert bright_in > 1.5 * clean_in  # the shift spends events
    assert abs(events / clean_in - 1) <= 0.15  # within the budget
    assert acc >= bright_acc and float(bias.mean()) < 0  # the offset is taken back


def test_settled_means_within_the_tolerance_or_the_held_out_standard_error():
    assert settle_tolerance(0.999, 150, 0.01) == 0.01  # 2 SE 0.005: the tolerance
    assert settle_tolerance(0.9, 150, 0.01) == pytest.approx(2 * math.sqrt(0.09 / 150))
    assert settle_tolerance(0.9, 40_000, 0.01) == 0.01
    positions, trace = [0, 25, 50, 75, 100], [0.2, 0.85, 0.92, 0.88, 0.9]
    assert recovery_samples(positions, trace, 0.9, 0.01) == 100
    assert recovery_samples(positions, trace, 0.9, settle_tolerance(0.9, 150, 0.01)) == 50
    # the case that asked for two: a settled curve jittering by one standard error each way
    jitter, plateau_level = [0.28, 0.6, 0.453, 0.5, 0.507, 0.587, 0.5], 0.5435
    tol = settle_tolerance(plateau_level, 150, 0.01)  # 0.081
    assert recovery_samples(list(range(0, 175, 25)), jitter, plateau_level, tol) == 75
    one_se = math.sqrt(plateau_level * (1 - plateau_level) / 150)
    assert recovery_samples(list(range(0, 175, 25)), jitter, plateau_level, one_se) is None


def test_a_large_batch_corrects_at_most_half_of_a_rate_error_in_one_update():
    """A batch sees its new thresholds only at the next batch: 85 samples at release 0.05 would
    correct 99 % of the error at once (and cycle); one update corrects at most half of it. One
    sample corrects its ``step``, as before."""
    ref = LayerReference(mean=torch.zeros(1), std=torch.ones(1), rate=torch.tensor([0.2]))
    config = AdaptationConfig("budgeted", momentum=0.0)
    spikes = torch.zeros(1, 85, 1, 10)
    spikes[..., :1] = 1.0  # 0.1: half the budget, relative error -0.5
    state = {"rate": ref.rate.clone(), "log_factor": torch.tensor([0.5])}
    steer_rate(state, ref, spikes, config, Steering(0.01, True, release=0.05, relative=True))
    assert float(state["log_factor"]) == pytest.approx(0.5 - 0.5 * 0.5, abs=1e-5)
    one = {"rate": ref.rate.clone(), "log_factor": torch.tensor([0.5])}
    steer_rate(one, ref, spikes[:, :1], config, Steering(0.01, True, release=0.05, relative=True))
    assert float(one["log_factor"]) == pytest.approx(0.5 - 0.05 * 0.5, abs=1e-5)


def test_a_running_statistic_s_noise_and_the_band_that_reads_it_as_none():
    """The standard error of a running average against the reference's mean is the spread
    times sqrt((1 - m) / (1 + m) + 1 / samples); ``within_noise`` takes ``band`` of them off a
    deviation's size and leaves 0 inside."""
    ref = LayerReference(
        torch.zeros(2), torch.ones(2), torch.full((2,), 0.2),
        rate_spread=torch.tensor([0.1, 0.4]), samples=100,
    )  # fmt: skip
    expected = torch.tensor([0.1, 0.4]) * math.sqrt(0.05 / 1.95 + 0.01)
    assert torch.allclose(ref.noise(ref.rate_spread, 0.95), expected)
    assert ref.noise(None, 0.95) == 0.0  # no recorded spread: no band
    noise = torch.tensor([0.1, 0.1, 0.1])
    assert torch.allclose(
        within_noise(torch.tensor([0.15, -0.5, 0.3]), noise, 2.0), torch.tensor([0.0, -0.3, 0.1])
    )
    assert torch.equal(within_noise(torch.tensor([0.15]), 0.1, 0.0), torch.tensor([0.15]))


def test_the_reference_records_how_much_a_clean_sample_varies(digits_splits):
    """Per channel, the std over samples of each sample's mean intensity, by hand."""
    data = digits_splits.train.head(300)
    ref = input_statistics(data, EVENT)
    per_sample_mean = data.x.float().mean(dim=(2, 3))  # [B, C]
    assert ref.samples == 300
    assert torch.allclose(ref.mean_spread, per_sample_mean.std(0, unbiased=False), atol=1e-5)
    assert torch.allclose(ref.rate_spread, ref.mean_spread)  # the encoder's rate is its mean


def test_the_band_holds_a_rate_within_its_noise_and_steps_past_it():
    """A channel whose running rate sits 1 standard error over its budget (noise) keeps its
    threshold with a band of 2; 5 standard errors over, it corrects the error less the band."""
    spread, m = 0.01, 0.0
    ref = LayerReference(
        torch.zeros(1), torch.ones(1), torch.tensor([0.2]),
        rate_spread=torch.tensor([spread]), samples=100,
    )  # fmt: skip
    se = float(ref.noise(ref.rate_spread, m))  # 0.01 * sqrt(1 + 0.01)
    config = AdaptationConfig("budgeted", momentum=0.0)
    steering = Steering(0.1, True, release=0.05, momentum=m, relative=True, band=2.0)
    for k, expected in ((1, 0.0), (5, 0.1 * (0.25 - 2 * se / 0.2))):
        spikes = torch.zeros(1, 1, 1, 1000)
        spikes[..., : round((0.2 + k * se) * 1000)] = 1.0  # 0.21 and 0.25 per neuron and step
        state = {"rate": ref.rate.clone(), "log_factor": torch.zeros(1)}
        steer_rate(state, ref, spikes, config, steering)
        assert float(state["log_factor"]) == pytest.approx(expected, abs=1e-5)


def test_the_band_leaves_a_clean_e_as_it_was_chosen(event_net, references, digits_splits):
    """Fed clean samples it was not calibrated on, budgeted with its band (2 standard errors)
    keeps most channels' thresholds exactly as calibrated and E's accuracy where it was;
    without a band every channel wanders."""
    clean = Split(digits_splits.train.x[400:800], digits_splits.train.y[400:800])
    base = evaluate(event_net, digits_splits.test, EVENT, CPU)
    untouched = {}
    for band in (0.0, 2.0):
        config = AdaptationConfig("budgeted", noise_band=band)
        with OnlineAdaptation(event_net, references, config) as adapt:
            evaluate(event_net, clean, EVENT, CPU, batch_size=16)
            thetas = [layer.threshold.detach().flatten() for layer in event_net.lif_layers()]
            pairs = list(zip(adapt.effective_thresholds(), thetas, strict=True))
            same = torch.cat([(t == theta) & (b == 0) for (t, b), theta in pairs])
            untouched[band] = float(same.float().mean())
            if band:
                assert evaluate(event_net, digits_splits.test, EVENT, CPU, batch_size=16) == base
    print(f"channels left as calibrated: {untouched}")
    assert untouched[0.0] < 0.05 and untouched[2.0] > 0.5
