"""The shift benchmark's measurements: a row's network on its samples (with the layers' rates
for the diagnostics), E with each online adaptation method, the recalibration and
calibration-size baselines, and the stream test on the benchmark's samples."""

from __future__ import annotations

import copy
from typing import Any

from direct2event.data.shifted import ShiftedSamples
from direct2event.data.splits import DataSplits
from direct2event.glue.params import PipelineParams
from direct2event.pipelines.shift.samples import References
from direct2event.snn.adaptation import OnlineAdaptation, stream_test
from direct2event.snn.conversion import build_event_network, calibrate
from direct2event.snn.encoders import InputCoding
from direct2event.snn.evaluation import measure
from direct2event.snn.models import SpikingNet
from direct2event.snn.thresholds import ThresholdConfig, scale_thresholds
from direct2event.snn.training import Split, evaluate


def row_measure(
    net: SpikingNet,
    data: Split,
    settings: PipelineParams,
    batch: int | None,
    coding: InputCoding | None = None,
) -> dict:
    return measured(net, data, settings, batch, coding)[0]


def measured(
    net: SpikingNet,
    data: Split,
    settings: PipelineParams,
    batch: int | None,
    coding: InputCoding | None = None,
) -> tuple[dict, list[float]]:
    """A row's measure of ``net`` on ``data`` and each LIF layer's firing rate on the same
    passes (for the layer diagnostics, which need not run them again)."""
    res = measure(
        net,
        data,
        coding or settings.event_coding,
        settings.device,
        settings.profiles(),
        settings.seed,
        batch,
    )
    kept = {
        "accuracy": res["accuracy"],
        "events_per_sample": res["events_per_sample"],
        "energy_nJ_by_model": res["energy_nJ_by_model"],
    }
    return kept, [round(v, 5) for v in res["firing_rates"].values()]


def held_gains(adaptation: OnlineAdaptation, event: SpikingNet) -> dict[str, Any]:
    """The method's per-channel gains as a chip would hold them, layer means: the threshold
    factor ``theta_eff / theta`` and the bias, and the encoder's where it adapts it."""
    held = adaptation.effective_thresholds()
    thetas = [layer.threshold.detach().cpu().flatten() for layer in event.lif_layers()]
    out: dict[str, Any] = {
        "threshold_factor": [
            round(float((t_eff / t.clamp(min=1e-6)).mean()), 4)
            for (t_eff, _), t in zip(held, thetas, strict=True)
        ],
        "bias": [round(float(b.mean()), 5) for _, b in held],
    }
    encoder = adaptation.method.input_gain_bias()
    if encoder is not None:  # the encoder's threshold factor 1 / g and bias b / g
        gain, bias = encoder
        out["encoder"] = {
            "threshold_factor": round(float((1.0 / gain).mean()), 4),
            "bias": round(float((bias / gain).mean()), 5),
        }
    return out


def adapt_and_measure(
    event: SpikingNet, refs: References, data: Split, warm: Split, settings: PipelineParams
) -> tuple[dict, dict]:
    """E with each adaptation method: from the calibrated state, adapted online on ``warm``
    (unlabelled samples of the same distribution, ``shift.adaptation.warmup`` of them), then
    measured while it goes on adapting over ``data`` (the transient: the stream test). Also,
    per method, each layer's firing rate on those passes and the gains it ended with (the
    layer diagnostics)."""
    a = settings.shift.adaptation
    out, layers = {}, {}
    for method in a.methods:
        online, coding = refs.adaptation(event, settings, method)
        with online as adaptation:
            if a.warmup:
                evaluate(
                    event, warm.head(a.warmup), coding, settings.device, a.batch_size, settings.seed
                )
            out[method], rates = measured(event, data, settings, a.batch_size, coding)
            layers[method] = {"rate": rates, **held_gains(adaptation, event)}
    return out, layers


def recalibrated(
    event: SpikingNet, refs: References, data: Split, settings: PipelineParams
) -> SpikingNet:
    """E with its thresholds scaled again on unlabelled shifted data, to the per-channel rates it
    had on clean calibration data (the project's threshold scaling; the upper reference)."""
    net = copy.deepcopy(event)
    scale_thresholds(
        net,
        data,
        settings.event_coding,
        settings.device,
        ThresholdConfig("isotonic", iterations=settings.transfer.thresholds.iterations),
        targets=[r.rate for r in refs.layers],
        starts=[layer.threshold.detach().cpu().flatten().clone() for layer in net.lif_layers()],
        seed=settings.seed,
    )
    return net


def calibration_sizes(
    direct: SpikingNet,
    scaled: SpikingNet,
    clean: Split,
    d_clean: dict[str, Any],
    splits: DataSplits,
    settings: PipelineParams,
) -> list[dict]:
    """Conversion (calibration + threshold scaling, no fine-tuning) from clean calibration sets
    of each size: how many samples E's thresholds need, with retention and energy reduction
    against D on the same clean samples. A size at or above the run's own calibration set is
    the run's own conversion, reported once with its sample count (converting again from that
    set topped up with a few training samples took the longest of the sizes and told nothing)."""
    rows = []
    cal = settings.transfer.calibration
    own = min(cal.max_samples, len(splits.calibration))
    sizes = sorted({min(n, own) for n in settings.shift.calibration_sizes})
    for n in sizes:
        if n == own:
            net = scaled  # the run's own conversion used exactly these samples
        else:
            net = convert(direct, splits.calibration.head(n), settings)
        res = row_measure(net, clean, settings, None)
        d_energy = d_clean["d_energy_nJ_by_model"]
        rows.append(
            {
                "samples": n,
                **res,
                "retention": res["accuracy"] / d_clean["d_accuracy"],
                "energy_reduction_by_model": {
                    k: d_energy[k] / v if v > 0 else None
                    for k, v in res["energy_nJ_by_model"].items()
                },
            }
        )
    return rows


def convert(direct: SpikingNet, data: Split, settings: PipelineParams) -> SpikingNet:
    """Calibration and threshold scaling of D on ``data``, as the conversion stage does."""
    th, cal = settings.transfer.thresholds, settings.transfer.calibration
    _, stats = calibrate(
        direct,
        data,
        settings.direct_coding,
        settings.event_coding,
        settings.device,
        cal.max_points,
        settings.seed,
    )
    net, _ = build_event_network(
        direct,
        stats,
        data,
        settings.event_coding,
        settings.device,
        th.config(),
        settings.seed,
    )
    return net


def shift_stream_test(
    event: SpikingNet,
    refs: References,
    shifted: ShiftedSamples,
    name: str,
    level: int,
    settings: PipelineParams,
) -> dict[str, Any]:
    """Clean -> shifted -> clean, one sample at a time, for E alone and each method."""
    p, a = settings.shift.stream, settings.shift.adaptation
    own = shifted.parts["stream"].stop - shifted.parts["stream"].start >= 3 * p.segment
    part = "stream" if own else "eval"  # its own samples where the data have them
    data, extra = shifted("clean", 0, part), shifted("clean", 0, "extra")
    sdata, sextra = shifted(name, level, part), shifted(name, level, "extra")
    n = min(p.segment, len(data) // 3)
    held = min(p.held_out, len(extra))
    segments = [
        (Split(data.x[:n], data.y[:n]), extra.head(held)),
        (Split(sdata.x[n : 2 * n], sdata.y[n : 2 * n]), sextra.head(held)),
        (Split(data.x[2 * n : 3 * n], data.y[2 * n : 3 * n]), extra.head(held)),
    ]
    result = stream_test(
        event,
        refs.layers,
        segments,
        {"none": None, **{m: a.config(m) for m in a.methods}},
        settings.event_coding,
        settings.device,
        p.config(settings.seed),
        refs.inputs,
    )
    return {"shift": name, "level": level, "held_out": held, **result}
