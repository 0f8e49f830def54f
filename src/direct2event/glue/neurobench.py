"""The field's metrics for D and E, computed by the NeuroBench package itself (``neurobench``).

NeuroBench (Yik et al., Nature Communications 2025) runs a model through its ``Benchmark`` with
hooks on the connection layers (Linear, Conv) and on the activation modules it is told about;
this adapter tells it that our LIF layers are the network's neurons and feeds it the inputs
exactly as the evaluation encodes them (same seed, same batches), so its counts and ours come
from the same forward passes.

Two differences from our own counts (:mod:`direct2event.snn.ops`), both by definition:

- NeuroBench books a layer's operations as ACs only when its input is binary (values in
  {-1, 0, 1}); an input carrying counts (event frames with several events in a cell) or graded
  values is booked as MACs, each non-zero entry once. Our counts weigh a cell by its events (a
  cell of 3 events is 3 ACs). Where inputs are binary, ``Effective_ACs`` equals our AC count.
- ``MembraneUpdates`` reads the membrane of snnTorch neurons; ours are multi-step modules, so
  the adapter gives NeuroBench each step's membrane (recomputed with :func:`lif_step`) in the
  form its hooks record, and NeuroBench counts the updates.

The energy models use our counts (they are the ones that weigh events).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from direct2event.snn.encoders import InputCoding
from direct2event.snn.models import SpikingNet
from direct2event.snn.neurons import LIF, lif_step
from direct2event.snn.training import INFERENCE_FOLDED_BATCH, Split, encoded_batches

logger = logging.getLogger(__name__)

# NeuroBench's result keys -> ours (dataset-neutral, one word per figure)
METRICS = {
    "Footprint": "footprint_bytes",
    "ConnectionSparsity": "connection_sparsity",
    "ActivationSparsity": "activation_sparsity",
    "MembraneUpdates": "membrane_updates",
}
SYNOPS = {"Effective_MACs": "effective_macs", "Effective_ACs": "effective_acs", "Dense": "dense"}


def available() -> bool:
    """Whether ``neurobench`` (and the snnTorch it imports) can be imported here."""
    return all(importlib.util.find_spec(m) is not None for m in ("neurobench", "snntorch"))


class _Batches:
    """The evaluation's encoded batches as NeuroBench iterates a data loader: ``(x, y)`` with
    the batch first (``[B, T, ...]``), generated again on each pass."""

    def __init__(self, data: Split, coding: InputCoding, device: torch.device, seed: int,
                 batch_size: int | None) -> None:  # fmt: skip
        self.args = (data, coding, device, batch_size, seed)
        self.dataset = range(len(data))
        size = batch_size or max(8, INFERENCE_FOLDED_BATCH // coding.timesteps)
        self._len = -(-len(data) // size)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        data = self.args[0]
        for idx, x in encoded_batches(*self.args):
            yield x.transpose(0, 1), data.y[idx]


def _model(net: SpikingNet) -> Any:
    """``net`` as a NeuroBench model whose neurons are our LIF layers."""
    from neurobench.hooks.layer import LayerHook
    from neurobench.hooks.neuron import NeuronHook
    from neurobench.models.neurobench_model import NeuroBenchModel

    class MembraneHook(NeuronHook):
        """NeuroBench's neuron hook for a multi-step LIF layer: each step's output, and the
        membrane before and after it (what snnTorch neurons expose as ``mem``)."""

        def __init__(self, layer: LIF, name: str) -> None:
            super().__init__(layer, name)
            self.spiking = True

        def pre_hook_fn(self, layer: nn.Module, input: tuple[Tensor, ...]) -> None:
            self.activation_inputs.append(input)

        def hook_fn(self, layer: nn.Module, input: tuple[Tensor, ...], output: Tensor) -> None:
            x = input[0].detach()
            threshold = layer.broadcast_threshold(x).detach()
            u = torch.zeros_like(x[0])
            for t in range(x.shape[0]):
                _, new = lif_step(x[t], u, threshold, layer.params, layer.mode)
                self.pre_fire_mem_potential.append(u)
                self.post_fire_mem_potential.append(new)
                u = new
            self.activation_outputs.append(output.detach())

    class Model(NeuroBenchModel):
        def __init__(self, network: SpikingNet) -> None:
            super().__init__()
            self.net = network.eval()
            self.add_activation_module(LIF)

        def __call__(self, batch: Tensor) -> Tensor:
            with torch.no_grad():
                return self.net(batch.transpose(0, 1))

        def __net__(self) -> nn.Module:
            return self.net

        def register_hooks(self) -> None:
            for name, layer in self.net.named_modules():
                if isinstance(layer, LIF):
                    self.activation_hooks.append(MembraneHook(layer, name))
            for layer in self.connection_layers():
                self.connection_hooks.append(LayerHook(layer))

    return Model(net)


def neurobench_metrics(
    net: SpikingNet,
    data: Split,
    coding: InputCoding,
    device: torch.device,
    seed: int = 0,
    batch_size: int | None = None,
) -> dict[str, float] | None:
    """NeuroBench's footprint, connection and activation sparsity, synaptic operations
    (effective MACs and ACs, dense) and membrane updates per sample of ``net`` on ``data``,
    encoded as the evaluation encodes it; None (said once in the log) without ``neurobench``."""
    if not available():
        logger.info(
            "NeuroBench metrics skipped: neurobench is not installed "
            "(pip install --no-deps neurobench==2.3.0 snntorch==1.0.0)."
        )
        return None
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import (
        ActivationSparsity,
        MembraneUpdates,
        SynapticOperations,
    )

    model = _model(net.to(device))
    loader = _Batches(data, coding, device, seed, batch_size)
    metrics = [[Footprint, ConnectionSparsity], [ActivationSparsity, SynapticOperations,
                                                 MembraneUpdates]]  # fmt: skip
    bench = Benchmark(model, loader, [], [], metrics)
    try:
        results = bench.run(quiet=True)
    finally:
        bench.workload_metric_manager.cleanup_hooks(model)
    out = {ours: float(results[theirs]) for theirs, ours in METRICS.items()}
    out.update({ours: float(results["SynapticOperations"][k]) for k, ours in SYNOPS.items()})
    return out
