"""Networks D and E to and from NIR (the Neuromorphic Intermediate Representation, ``nir``).

NIR is what sinabs, snnTorch, Norse, Rockpool, Spyx, Lava-DL and SpiNNaker2 read. A network is
exported as a chain ``Input -> Conv2d / AvgPool2d / LIF / Flatten / Affine ... -> Output`` with
batch norm folded into the conv and linear layers, and this convention for the neurons:

- our discrete LIF ``h_t = beta * u_{t-1} + x_t`` is NIR's ``tau * dv/dt = (v_leak - v) + r * I``
  under forward Euler with the time step ``dt`` (graph metadata ``dt``, default 1e-4 s, the
  snnTorch / SpikingJelly convention): ``tau = dt / (1 - beta)``, ``r = tau / dt``,
  ``v_leak = 0``; beta = 1 is NIR's ``IF`` with ``r = 1 / dt``. (sinabs reads ``tau`` in steps,
  ``alpha = exp(-1 / tau)``: give it ``tau = -1 / ln(beta)``; see the tests.)
- ``v_threshold`` holds the per-channel thresholds, repeated over each channel's positions
  (NIR types are full neuron shapes); ``v_reset = 0``. NIR has no reset-by-subtraction flag:
  each LIF node's metadata says ``reset: subtract`` (or ``zero``); readers that reset to zero
  differ from ours after a spike.
- the readout is the last Affine; logits are its output **averaged over the T steps**
  (metadata ``readout``).
- graph metadata: ``network`` (D or E), ``neuron_output`` (``binary`` spikes for E; ``graded``
  for D: ``clamp((h - theta) / width + 1/2, 0, 1)``, which a NIR reader runs as spikes),
  ``input_shape`` ``[C, H, W]``, ``timesteps``, ``input_encoding``, ``beta``, ``reset``,
  ``surrogate_width``, ``dt``.

Max-pooling has no NIR node: build the network with ``pooling="avg"`` (``model.pooling: avg``).
:func:`from_nir` reads such graphs back, and graphs written by other frameworks whose nodes are
in :data:`SUPPORTED`. ``nir`` is imported only here, when used: the rest of the library runs with
torch and numpy alone.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from direct2event.snn.models import SpikingNet, build_from_specs, fuse_batchnorm
from direct2event.snn.neurons import LIF, LIFParameters

DT = 1e-4  # seconds per time step written to the graph (snnTorch's and SpikingJelly's)
# Max-pooling of binary spikes in E is written as SumPool2d -> IF "gate": r = 1, threshold 0.5,
# reset to zero. The count in a window is a whole number, so the gate fires exactly when it is
# at least 1 whether the reader compares with > or >=, and after a reset to zero nothing is
# left over (v is 0, or at least 1 and fires). A reader that subtracts the threshold instead
# would carry 0.5 or more into the next step: the gate's node says reset: zero.
OR_GATE = "max_pool_or_gate"
OR_GATE_THRESHOLD = 0.5
SUPPORTED = (
    "Input",
    "Output",
    "Conv2d",
    "Affine",
    "Linear",
    "Flatten",
    "AvgPool2d",
    "SumPool2d",
    "LIF",
    "IF",
    "Scale",
)


class NIRError(ValueError):
    """A network NIR cannot express, or a graph this project cannot run; says what to change."""


@dataclass(frozen=True)
class NotExported:
    """Stands where a graph would be when a network cannot be exported, and says why."""

    reason: str


def _nir():
    try:
        import nir
    except ImportError:
        raise NIRError(
            "NIR export and import need the nir package: pip install nir==1.0.8"
        ) from None
    return nir


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def to_nir(
    net: SpikingNet,
    timesteps: int,
    input_encoding: str,
    network: str | None = None,
    dt: float = DT,
) -> Any:
    """The NIR graph of ``net`` (network D or E; not modified: batch norm is folded in a copy).
    ``timesteps`` and ``input_encoding`` describe how the graph is meant to be fed."""
    nir = _nir()
    if net.mode != "binary" and any(isinstance(m, nn.MaxPool2d) for m in net.modules()):
        raise NIRError(
            "network D max-pools graded outputs, which NIR cannot express exactly (it has no "
            "max-pooling node; on E's binary spikes max-pooling is an OR, which it can). Export "
            "E, or build D with average pooling (model.pooling: avg) to export D too."
        )
    if any(type(m).__name__ == "ResidualBlock" for m in net.modules()):
        raise NIRError(
            "NIR export writes chains (convnet, vgg); resnet's residual adds are not exported."
        )
    folded = fuse_batchnorm(copy.deepcopy(net).cpu().eval())
    shape = list(net.config["input_shape"])
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(shape)})}
    order = ["input"]
    params: LIFParameters | None = None
    for i, layer in enumerate(folded.layers):
        name = f"{i}_{type(layer).__name__.lower()}"
        if isinstance(layer, nn.Identity):  # a batch norm folded away
            continue
        if isinstance(layer, nn.Conv2d):
            bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_channels)
            node = nir.Conv2d(
                input_shape=(shape[1], shape[2]),
                weight=_np(layer.weight),
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                groups=layer.groups,
                bias=_np(bias),
            )
            out = torch.nn.functional.conv2d(
                torch.zeros(1, *shape),
                layer.weight,
                None,
                layer.stride,
                layer.padding,
                layer.dilation,
                layer.groups,
            )
            shape = list(out.shape[1:])
        elif isinstance(layer, nn.AvgPool2d):
            k = _pair(layer.kernel_size)
            st = _pair(layer.stride or layer.kernel_size)
            conv = nodes[order[-1]]
            if not isinstance(conv, nir.Conv2d):
                raise NIRError(f"layer {i}: average pooling must follow a convolution")
            # written as SumPool2d (sinabs, Norse and Speck read it; snnTorch reads AvgPool2d)
            # with the 1 / (k*k) folded into the convolution before it: a power of two for 2x2
            # windows, so the graph computes exactly the same currents
            conv.weight = conv.weight / (k[0] * k[1])
            conv.bias = conv.bias / (k[0] * k[1])
            node = nir.SumPool2d(
                kernel_size=np.array(k), stride=np.array(st), padding=np.array((0, 0))
            )
            shape = [shape[0], (shape[1] - k[0]) // st[0] + 1, (shape[2] - k[1]) // st[1] + 1]
        elif isinstance(layer, nn.MaxPool2d):
            k = _pair(layer.kernel_size)
            st = _pair(layer.stride or layer.kernel_size)
            if any(_pair(layer.padding)) or _pair(layer.dilation) != (1, 1) or layer.ceil_mode:
                raise NIRError(f"layer {i}: max-pooling with padding or dilation is not exported")
            # E max-pools binary spikes: the window's maximum is an OR, written exactly as the
            # count of spikes in the window (SumPool2d) and a gate that fires when the count is
            # at least 1 and keeps nothing (see OR_GATE)
            nodes[name] = nir.SumPool2d(
                kernel_size=np.array(k), stride=np.array(st), padding=np.array((0, 0))
            )
            order.append(name)
            shape = [shape[0], (shape[1] - k[0]) // st[0] + 1, (shape[2] - k[1]) // st[1] + 1]
            name = f"{i}_or_gate"
            node = nir.IF(
                r=np.ones(shape, np.float32),
                v_threshold=np.full(shape, OR_GATE_THRESHOLD, np.float32),
                v_reset=np.zeros(shape, np.float32),
                metadata={"reset": "zero", "role": OR_GATE},
            )
        elif isinstance(layer, nn.Flatten):
            node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
            shape = [int(np.prod(shape))]
        elif isinstance(layer, nn.Linear):
            bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
            node = nir.Affine(weight=_np(layer.weight), bias=_np(bias))
            shape = [layer.out_features]
        elif isinstance(layer, LIF):
            params = layer.params
            theta = layer.threshold.detach().reshape(-1)
            full = np.broadcast_to(_np(theta).reshape([-1] + [1] * (len(shape) - 1)), shape).copy()
            zeros = np.zeros(shape, dtype=np.float32)
            meta = {"reset": params.reset}
            if params.beta >= 1.0:  # r is the per-step input gain (snnTorch's, sinabs' reading)
                node = nir.IF(
                    r=np.ones(shape, np.float32),
                    v_threshold=full,
                    v_reset=zeros,
                    metadata=meta,
                )
            else:
                tau = dt / (1.0 - params.beta)
                node = nir.LIF(
                    tau=np.full(shape, tau, np.float32),
                    r=np.full(shape, tau / dt, np.float32),
                    v_leak=zeros,
                    v_threshold=full,
                    v_reset=zeros,
                    metadata=meta,
                )
        else:
            raise NIRError(f"layer {i} ({type(layer).__name__}) has no NIR counterpart here")
        nodes[name] = node
        order.append(name)
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    order.append("output")
    edges = list(itertools.pairwise(order))
    mode = net.mode
    lif = params or LIFParameters()
    metadata = {
        "producer": "direct2event",
        "network": network or ("E" if mode == "binary" else "D"),
        "neuron_output": mode,
        "input_shape": [int(v) for v in net.config["input_shape"]],
        "classes": int(net.config["classes"]),
        "timesteps": int(timesteps),
        "input_encoding": input_encoding,
        "dt": dt,
        "beta": lif.beta,
        "reset": lif.reset,
        "surrogate_width": lif.width,
        "readout": "logits = mean over the T steps of the last Affine's output",
        "layout": "per step [C, H, W] (no batch, no time dimension in node types)",
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def save_nir(
    net: SpikingNet,
    path: str | Path,
    timesteps: int,
    input_encoding: str,
    network: str | None = None,
) -> Path:
    """Write ``net``'s NIR graph to ``path`` (HDF5, ``nir.write``)."""
    nir = _nir()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(path), to_nir(net, timesteps, input_encoding, network))
    return path


def _ints2(value: Any, node: str) -> list[int]:
    """Two ints from an int, a pair or an array (NIR writers differ)."""
    if isinstance(value, str):
        raise NIRError(f"node '{node}': padding '{value}' is not supported; give numbers")
    flat = [int(v) for v in np.asarray(value).reshape(-1)]
    if len(flat) == 1:
        return flat * 2
    if len(flat) != 2:
        raise NIRError(f"node '{node}': expected one or two values, got {flat}")
    return flat


def _chain(graph: Any) -> list[str]:
    """The node names from the input to the output; the graph must be a chain."""
    nxt: dict[str, str] = {}
    for src, dst in graph.edges:
        if src in nxt:
            raise NIRError(f"node '{src}' feeds several nodes: only chains are read")
        nxt[src] = dst
    starts = [n for n, node in graph.nodes.items() if type(node).__name__ == "Input"]
    if len(starts) != 1:
        raise NIRError(f"the graph needs exactly one Input node, found {len(starts)}")
    order = [starts[0]]
    while order[-1] in nxt:
        order.append(nxt[order[-1]])
        if len(order) > len(graph.nodes):
            raise NIRError("the graph has a cycle")
    if len(order) != len(graph.nodes):
        raise NIRError("the graph has nodes off the input-to-output chain")
    return order


def _uniform(values: np.ndarray, what: str, node: str) -> float:
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.allclose(flat, flat[0], rtol=1e-6, atol=0):
        raise NIRError(
            f"node '{node}': {what} differs between neurons; this project needs one value"
        )
    return float(flat[0])


def _per_channel(values: np.ndarray, node: str) -> torch.Tensor:
    """Per-channel thresholds from a full-shape array (constant over each channel's positions)."""
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim <= 1:
        return torch.from_numpy(arr.reshape(-1).copy())
    per = arr.reshape(arr.shape[0], -1)
    if not np.allclose(per, per[:, :1]):
        raise NIRError(
            f"node '{node}': thresholds vary within a channel; one per channel is needed"
        )
    return torch.from_numpy(per[:, 0].copy())


def _is_or_gate(node: Any) -> bool:
    """Whether ``node`` is the gate :func:`to_nir` writes after a SumPool2d for max-pooling."""
    meta = getattr(node, "metadata", None) or {}
    return type(node).__name__ == "IF" and meta.get("role") == OR_GATE


def from_nir(graph_or_path: Any, width: float = 1.0, reset_default: str = "subtract") -> SpikingNet:
    """A :class:`SpikingNet` from a NIR graph (this project's or another framework's), in the
    mode the graph's metadata names (``graded`` for a D, else ``binary``).

    Neurons: ``LIF`` with ``v_leak = 0`` (beta = 1 - dt / tau, the input gain r * dt / tau
    folded into the layer before), ``IF`` (beta = 1, gain r per step, as snnTorch and sinabs
    read it); ``v_reset`` 0. The reset is the node's metadata ``reset`` when it has one, else
    ``reset_default``: NIR itself says "reset to v_reset", but sinabs' and Norse's networks
    usually subtract, so say what the source framework did. ``dt`` comes from the graph's
    metadata (default 1e-4). ``width`` is the surrogate width when the graph does not give one.
    Unsupported nodes are listed in the error."""
    nir = _nir()
    graph = nir.read(str(graph_or_path)) if isinstance(graph_or_path, str | Path) else graph_or_path
    unsupported = sorted({type(n).__name__ for n in graph.nodes.values()} - set(SUPPORTED))
    if unsupported:
        raise NIRError(
            f"the NIR graph has nodes this project cannot run: {unsupported}; supported: "
            f"{list(SUPPORTED)}"
        )
    meta = dict(graph.metadata or {})
    dt = float(meta.get("dt", DT))
    width = float(meta.get("surrogate_width", width))
    order = _chain(graph)
    input_node = graph.nodes[order[0]]
    input_shape = [int(v) for v in np.asarray(input_node.input_type["input"]).reshape(-1)]
    specs: list[dict[str, Any]] = []
    state: dict[str, torch.Tensor] = {}
    gain_pending: list[int] = []  # index of the last synaptic layer (gain of a neuron folds in)
    inner = order[1:-1]
    gates = {
        after
        for before, after in itertools.pairwise(inner)
        if type(graph.nodes[before]).__name__ == "SumPool2d" and _is_or_gate(graph.nodes[after])
    }
    for position, name in enumerate(inner):
        node = graph.nodes[name]
        kind = type(node).__name__
        idx = len(specs)
        if name in gates:  # read with the SumPool2d before it as max-pooling
            continue
        if kind == "SumPool2d" and position + 1 < len(inner) and inner[position + 1] in gates:
            if any(_ints2(node.padding, name)):
                raise NIRError(f"node '{name}': padded pooling is not supported")
            k, s = _ints2(node.kernel_size, name), _ints2(node.stride, name)
            specs.append({"type": "maxpool", "kernel": k, "stride": s})
            continue
        if kind == "Conv2d":
            w = torch.from_numpy(np.asarray(node.weight, dtype=np.float32).copy())
            b = node.bias
            specs.append(
                {
                    "type": "conv2d",
                    "in": int(w.shape[1]) * int(node.groups),
                    "out": int(w.shape[0]),
                    "kernel": list(w.shape[2:]),
                    "stride": _ints2(node.stride, name),
                    "padding": _ints2(node.padding, name),
                    "dilation": _ints2(node.dilation, name),
                    "groups": int(node.groups),
                }
            )
            state[f"layers.{idx}.weight"] = w
            state[f"layers.{idx}.bias"] = (
                torch.from_numpy(np.asarray(b, dtype=np.float32).reshape(-1).copy())
                if b is not None and np.size(b)
                else torch.zeros(w.shape[0])
            )
            gain_pending = [idx]
        elif kind in ("Affine", "Linear"):
            w = torch.from_numpy(np.asarray(node.weight, dtype=np.float32).copy())
            specs.append({"type": "linear", "in": int(w.shape[1]), "out": int(w.shape[0])})
            state[f"layers.{idx}.weight"] = w
            bias = getattr(node, "bias", None)
            state[f"layers.{idx}.bias"] = (
                torch.from_numpy(np.asarray(bias, dtype=np.float32).reshape(-1).copy())
                if bias is not None
                else torch.zeros(w.shape[0])
            )
            gain_pending = [idx]
        elif kind == "Flatten":
            specs.append({"type": "flatten"})
        elif kind in ("AvgPool2d", "SumPool2d"):
            k = _ints2(node.kernel_size, name)
            s = _ints2(node.stride, name)
            if any(_ints2(node.padding, name)):
                raise NIRError(f"node '{name}': padded pooling is not supported")
            window = float(k[0] * k[1])
            if kind == "SumPool2d" and specs and specs[-1]["type"] == "conv2d":
                # a sum is the average times the window: folded back into the convolution
                for key in (f"layers.{idx - 1}.weight", f"layers.{idx - 1}.bias"):
                    state[key] = state[key] * window
                specs.append({"type": "avgpool", "kernel": k, "stride": s})
            else:
                specs.append({"type": "avgpool", "kernel": k, "stride": s})
                if kind == "SumPool2d":
                    specs.append({"type": "scale", "factor": window})
        elif kind == "Scale":
            specs.append({"type": "scale", "factor": _uniform(node.scale, "scale", name)})
        elif kind in ("LIF", "IF"):
            if kind == "LIF":
                if np.any(np.asarray(node.v_leak)):
                    raise NIRError(f"node '{name}': v_leak must be 0")
                tau = _uniform(node.tau, "tau", name)
                beta = 1.0 - dt / tau
                # tau is stored in float32: take the exact beta the producer states, if it is
                # this one up to that rounding
                stated = meta.get("beta")
                if isinstance(stated, float) and abs(stated - beta) < 1e-5:
                    beta = stated
                gain = _uniform(node.r, "r", name) * dt / tau
            else:
                beta, gain = 1.0, _uniform(node.r, "r", name)  # r: the per-step gain
            if not 0.0 <= beta <= 1.0:
                raise NIRError(
                    f"node '{name}': tau = {tau} gives beta = {beta} outside [0, 1] at dt = {dt}"
                )
            v_reset = getattr(node, "v_reset", None)
            if v_reset is not None and np.any(np.asarray(v_reset)):
                raise NIRError(f"node '{name}': v_reset must be 0")
            reset = (getattr(node, "metadata", None) or {}).get("reset", reset_default)
            theta = _per_channel(node.v_threshold, name)
            if not math.isclose(gain, 1.0, rel_tol=1e-6):
                if not gain_pending:
                    raise NIRError(
                        f"node '{name}': an input gain r*dt/tau = {gain} needs a layer before it"
                    )
                for key in (f"layers.{gain_pending[0]}.weight", f"layers.{gain_pending[0]}.bias"):
                    state[key] = state[key] * gain
            specs.append(
                {
                    "type": "lif",
                    "channels": int(theta.numel()),
                    "beta": beta,
                    "reset": reset,
                    "width": width,
                }
            )
            state[f"layers.{idx}.threshold"] = theta
            gain_pending = []
        else:  # pragma: no cover - SUPPORTED and this dispatch list the same kinds
            raise NIRError(f"node '{name}' ({kind}) is not supported")
    config = {
        "arch": "nir",
        "input_shape": input_shape,
        "classes": int(specs and specs[-1].get("out", 0)),
        "channels": None,
        "hidden": 0,
        "pooling": "max" if any(s["type"] == "maxpool" for s in specs) else "avg",
        "layers": specs,
        "lif": {
            "beta": next((s["beta"] for s in specs if s["type"] == "lif"), 0.5),
            "width": width,
            "reset": "subtract",
            "surrogate": "pwl",
            "detach_reset": False,
        },
        "nir_metadata": {k: v for k, v in meta.items() if isinstance(v, str | int | float | list)},
    }
    net = build_from_specs(config)
    missing, unexpected = net.load_state_dict(
        {k: v.reshape(net.state_dict()[k].shape) for k, v in state.items()}, strict=False
    )
    if unexpected or [k for k in missing if not k.endswith("threshold")]:
        raise NIRError(
            f"weights do not fit the graph's layers: missing {missing}, unexpected {unexpected}"
        )
    mode = "graded" if meta.get("neuron_output") == "graded" else "binary"
    return net.set_mode(mode).eval()
