"""What the shift benchmark measures on and steers back to: its clean and shifted samples,
and the clean references of the adaptation methods."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from direct2event.data.shifted import EventBinning, ShiftedSamples
from direct2event.data.splits import DataSplits
from direct2event.glue.datasets import EventSource
from direct2event.glue.params import PipelineParams
from direct2event.snn.adaptation import LayerReference, OnlineAdaptation
from direct2event.snn.encoders import InputCoding
from direct2event.snn.models import SpikingNet


def shifted_samples(splits: DataSplits, raw: Any, settings: PipelineParams) -> ShiftedSamples:
    """The stage's clean and shifted test samples: the test split's images, or (event data)
    raw test recordings from the dataset's event source, as many as the stage uses. Images
    also give the stream test its own three segments (``stream``); event data, whose
    recordings cost more to load and shift, run it on the table's samples."""
    p = settings.shift
    n_extra = max(p.recalibration_samples, p.stream.held_out, p.adaptation.warmup)
    where: dict[str, Any] = {}
    if settings.is_event_dataset:
        if not isinstance(raw, EventSource):
            raise TypeError(f"{settings.dataset}: the shift stage needs an event source.")
        where["recordings"] = raw.test_recordings(p.max_samples + n_extra, settings.seed)
    else:
        where["images"] = splits.test
    table = p.table(settings.is_event_dataset)
    return ShiftedSamples(
        table,
        settings.seed,
        p.max_samples,
        n_extra,
        **where,
        binning=EventBinning(
            settings.data.max_events_per_bin,
            p.front.make() if settings.is_event_dataset and p.front.enabled else None,
            settings.model.timesteps,
        ),
        n_stream=0 if settings.is_event_dataset else 3 * p.stream.segment,
    )


@dataclass(frozen=True)
class References:
    """What the adaptation methods steer back to: each LIF layer's statistics and (where E
    encodes intensities) the encoder's, on the clean calibration sample."""

    layers: list[LayerReference]
    inputs: LayerReference | None

    def adaptation(
        self, event: SpikingNet, settings: PipelineParams, method: str
    ) -> tuple[OnlineAdaptation, InputCoding]:
        """E adapted online by ``method`` (a context manager) and the coding to run it with."""
        online = OnlineAdaptation(
            event, self.layers, settings.shift.adaptation.config(method), self.inputs
        )
        return online, online.coding(settings.event_coding)
