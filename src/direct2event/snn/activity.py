"""Recording what the LIF layers emit during a forward pass (for losses, calibration, counting)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor

from direct2event.snn.models import SpikingNet


@contextmanager
def record_activity(model: SpikingNet, detach: bool = False) -> Iterator[list[Tensor]]:
    """Collect each LIF layer's output ``[T, B, ...]`` (forward order) while the block runs.

    The hooks are removed on exit, so no state stays on the model. With ``detach=False`` the
    recorded tensors keep their graph (needed by the spike-rate regulariser).
    """
    outputs: list[Tensor] = []

    def hook(_module: object, _inputs: object, output: Tensor) -> None:
        outputs.append(output.detach() if detach else output)

    handles = [lif.register_forward_hook(hook) for lif in model.lif_layers()]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
