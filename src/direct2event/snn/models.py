"""Spiking network architectures shared by network D (graded) and network E (binary).

Every network takes ``[T, B, C, H, W]`` input. Stateless layers (conv, batch norm, pooling,
linear) run once on time and batch folded together (``[T*B, ...]``, the SpikingJelly trick) and
only the LIF neurons loop over time. The readout is the last linear layer's output averaged over
the T steps (no spiking output layer), so logits are comparable between D and E.

Architectures (``ARCHITECTURES``):
- ``convnet``: conv3x3-BN-LIF-maxpool blocks (default widths 16, 32), optional hidden linear
  layer, linear readout: for 28-34 px inputs (MNIST, simulated N-MNIST).
- ``vgg``: VGG-style conv3x3-BN-LIF stacks with max-pool ("M") entries: for 32 px and larger
  images and DVS frames.
- ``resnet``: a spiking ResNet (BasicBlocks, spikes added as currents before the LIF) with a
  strided stem, for the same inputs.
Pooling (``pooling``): ``max`` pools the spikes after the LIF layer (max-pooling keeps binary
spikes binary); ``avg`` averages the currents before the LIF layer (conv-BN-avgpool-LIF), which
keeps them binary too and is what NIR can express (AvgPool2d; NIR has no max-pooling). ``avg``
is offered for ``convnet`` and ``vgg``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from direct2event.snn.neurons import LIF, LIFParameters, Mode
from direct2event.snn.pooling import MaxPool2d

ARCHITECTURES: tuple[str, ...] = ("convnet", "vgg", "resnet")
POOLINGS: tuple[str, ...] = ("max", "avg")
VGG_DEFAULT: tuple[int | str, ...] = (64, 128, "M", 256, 256, "M", 512, 512, "M", 512, "M")


def _fold(x: Tensor) -> Tensor:
    return x.flatten(0, 1)


class SpikingNet(nn.Module):
    """A sequence of stateless layers and multi-step layers with a time-averaged readout."""

    def __init__(self, layers: Sequence[nn.Module], arch: str, config: dict[str, Any]) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.arch = arch
        self.config = config

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, classes]`` for input ``[T, B, ...]``."""
        timesteps, batch = x.shape[:2]
        return self.run_folded(x).unflatten(0, (timesteps, batch)).mean(0)

    def run_folded(self, x: Tensor) -> Tensor:
        """Output of the last layer for every step, time and batch folded: ``[T*B, ...]``."""
        timesteps, batch = x.shape[:2]
        h = _fold(x)
        folded = True
        for layer in self.layers:
            if getattr(layer, "multistep", False):
                if folded:
                    h = h.unflatten(0, (timesteps, batch))
                h = layer(h)
                folded = False
            else:
                if not folded:
                    h = _fold(h)
                    folded = True
                h = layer(h)
        return h if folded else _fold(h)

    def spike_targets(self) -> list[tuple[str, str]]:
        """Each LIF layer's name (forward order) with the synaptic layer (Conv2d or Linear)
        its spikes reach next: where a spike's energy is spent."""
        names = [
            (n, m) for n, m in self.named_modules() if isinstance(m, LIF | nn.Conv2d | nn.Linear)
        ]
        pairs = []
        for i, (name, module) in enumerate(names):
            if isinstance(module, LIF):
                target = next((n for n, m in names[i + 1 :] if not isinstance(m, LIF)), "")
                pairs.append((name, target))
        return pairs

    def lif_layers(self) -> list[LIF]:
        """All LIF layers in forward order."""
        return [m for m in self.modules() if isinstance(m, LIF)]

    def set_mode(self, mode: Mode) -> SpikingNet:
        """Switch every LIF layer to ``graded`` (network D) or ``binary`` (network E)."""
        for lif in self.lif_layers():
            lif.mode = mode
        return self

    @property
    def mode(self) -> Mode:
        modes = {lif.mode for lif in self.lif_layers()}
        if len(modes) != 1:
            raise ValueError(f"Network has mixed neuron modes {modes}.")
        return modes.pop()


class ResidualBlock(nn.Module):
    """Spiking BasicBlock: LIF(BN(conv(LIF(BN(conv(s))))) + shortcut(s))."""

    multistep = True

    def __init__(self, c_in: int, c_out: int, stride: int, params: LIFParameters) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)
        )
        self.lif1 = LIF(c_out, params)
        self.branch2 = nn.Sequential(
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.lif2 = LIF(c_out, params)

    def forward(self, x: Tensor) -> Tensor:
        timesteps, batch = x.shape[:2]
        xf = _fold(x)
        h = self.lif1(self.branch1(xf).unflatten(0, (timesteps, batch)))
        y = self.branch2(_fold(h)) + self.shortcut(xf)
        return self.lif2(y.unflatten(0, (timesteps, batch)))


def _conv_block(c_in: int, c_out: int, params: LIFParameters, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(c_out),
        LIF(c_out, params),
    ]


def _pooled(block: list[nn.Module]) -> list[nn.Module]:
    """``block`` ending in a LIF layer with 2x2 average pooling of the currents before it."""
    return [*block[:-1], nn.AvgPool2d(2), block[-1]]


def _readout(
    features: list[nn.Module],
    input_shape: Sequence[int],
    classes: int,
    hidden: int,
    params: LIFParameters,
) -> list[nn.Module]:
    """Flatten, optional hidden spiking linear layer, linear readout; sizes from a dry run."""
    probe = SpikingNet(features, "probe", {}).eval()
    with torch.no_grad():
        n_features = probe.run_folded(torch.zeros(1, 1, *input_shape))[0].numel()
    layers: list[nn.Module] = [nn.Flatten()]
    if hidden:
        layers += [nn.Linear(n_features, hidden), nn.BatchNorm1d(hidden), LIF(hidden, params)]
        n_features = hidden
    layers.append(nn.Linear(n_features, classes))
    return layers


def build_model(
    arch: str,
    input_shape: Sequence[int],
    classes: int,
    params: LIFParameters | None = None,
    channels: Sequence[int | str] | None = None,
    hidden: int = 0,
    pooling: str = "max",
) -> SpikingNet:
    """Build a network D (graded mode) for ``input_shape = (C, H, W)`` and ``classes`` outputs.

    ``channels``: for ``convnet`` the width of each conv-LIF-maxpool block; for ``vgg`` a layer
    list of widths and ``"M"`` (max-pool); for ``resnet`` the width of each stage (the first
    stage keeps the stem's resolution, later ones halve it). ``pooling``: ``max`` (spikes, after
    the LIF layer) or ``avg`` (currents, before it).
    """
    params = params or LIFParameters()
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling '{pooling}'; use one of {POOLINGS}.")
    if pooling == "avg" and arch == "resnet":
        raise ValueError("pooling 'avg' is offered for convnet and vgg; resnet pools with max.")
    if arch not in _FEATURES:
        raise ValueError(f"Unknown architecture '{arch}'; use one of {ARCHITECTURES}.")
    features = _FEATURES[arch](int(input_shape[0]), input_shape, channels, pooling, params)
    layers = features + _readout(features, input_shape, classes, hidden, params)
    config = {
        "arch": arch,
        "input_shape": [int(s) for s in input_shape],
        "classes": int(classes),
        "channels": list(channels) if channels is not None else None,
        "hidden": int(hidden),
        "pooling": pooling,
        "lif": {
            "beta": params.beta,
            "width": params.width,
            "reset": params.reset,
            "surrogate": params.surrogate,
            "detach_reset": params.detach_reset,
        },
    }
    return SpikingNet(layers, arch, config)


def _convnet(
    c_in: int, _shape: Sequence[int], channels: Any, pooling: str, params: LIFParameters
) -> list[nn.Module]:
    """Conv-LIF-pool blocks of the given widths."""
    features: list[nn.Module] = []
    for width in list(channels or (16, 32)):
        block = _conv_block(c_in, int(width), params)
        features += _pooled(block) if pooling == "avg" else [*block, MaxPool2d(2)]
        c_in = int(width)
    return features


def _vgg(
    c_in: int, _shape: Sequence[int], channels: Any, pooling: str, params: LIFParameters
) -> list[nn.Module]:
    """Conv-LIF layers of the given widths, ``"M"`` a pooling."""
    features: list[nn.Module] = []
    for entry in channels or VGG_DEFAULT:
        if entry == "M" and pooling == "avg":
            if not features or not isinstance(features[-1], LIF):
                raise ValueError("vgg with pooling 'avg': each 'M' must follow a conv layer")
            features[-1:] = _pooled(features[-1:])
        elif entry == "M":
            features.append(MaxPool2d(2))
        else:
            features += _conv_block(c_in, int(entry), params)
            c_in = int(entry)
    return features


def _resnet(
    c_in: int, shape: Sequence[int], channels: Any, _pooling: str, params: LIFParameters
) -> list[nn.Module]:
    """A stem, then two residual blocks per stage (the first stage at the stem's resolution)."""
    widths = [int(w) for w in (channels or (64, 128, 256))]
    stem_stride = 2 if min(shape[1:]) > 64 else 1
    features: list[nn.Module] = [*_conv_block(c_in, widths[0], params, stride=stem_stride)]
    c_in = widths[0]
    for i, width in enumerate(widths):
        stride = 1 if i == 0 else 2
        features += [
            ResidualBlock(c_in, width, stride, params),
            ResidualBlock(width, width, 1, params),
        ]
        c_in = width
    features.append(MaxPool2d(2))
    return features


_FEATURES = {"convnet": _convnet, "vgg": _vgg, "resnet": _resnet}


def model_from_config(config: dict[str, Any]) -> SpikingNet:
    """Rebuild an (untrained) network from the ``config`` a :class:`SpikingNet` carries."""
    if config["arch"] == "nir":  # a network read from a NIR graph: its layer list
        return build_from_specs(config)
    return build_model(
        config["arch"],
        config["input_shape"],
        config["classes"],
        LIFParameters(**config["lif"]),
        config["channels"],
        config["hidden"],
        config.get("pooling", "max"),
    )


class Scale(nn.Module):
    """Multiplies by a constant (NIR's Scale; a SumPool2d read as average pooling times k*k)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def build_from_specs(config: dict[str, Any]) -> SpikingNet:
    """The (untrained) network a NIR import describes: ``config["layers"]`` in order."""
    layers: list[nn.Module] = []
    for spec in config["layers"]:
        kind = spec["type"]
        if kind == "conv2d":
            layers.append(
                nn.Conv2d(
                    spec["in"],
                    spec["out"],
                    tuple(spec["kernel"]),
                    tuple(spec["stride"]),
                    tuple(spec["padding"]),
                    tuple(spec["dilation"]),
                    spec["groups"],
                    bias=True,
                )
            )
        elif kind == "linear":
            layers.append(nn.Linear(spec["in"], spec["out"]))
        elif kind == "flatten":
            layers.append(nn.Flatten())
        elif kind == "avgpool":
            layers.append(nn.AvgPool2d(tuple(spec["kernel"]), tuple(spec["stride"])))
        elif kind == "maxpool":
            layers.append(MaxPool2d(tuple(spec["kernel"]), tuple(spec["stride"])))
        elif kind == "scale":
            layers.append(Scale(spec["factor"]))
        elif kind == "lif":
            params = LIFParameters(beta=spec["beta"], width=spec["width"], reset=spec["reset"])
            layers.append(LIF(spec["channels"], params))
        else:
            raise ValueError(f"unknown layer spec {kind!r} in a network read from NIR")
    return SpikingNet(layers, "nir", config)


def _fuse_sequential(seq: nn.Sequential) -> None:
    children = list(seq.children())
    for i in range(len(children) - 1):
        layer, norm = children[i], children[i + 1]
        if isinstance(norm, nn.BatchNorm2d | nn.BatchNorm1d) and isinstance(
            layer, nn.Conv2d | nn.Linear
        ):
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            bias = layer.bias if layer.bias is not None else torch.zeros_like(norm.running_mean)
            layer.weight.data = layer.weight.data * scale.view(shape)
            layer.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)
            seq[i + 1] = nn.Identity()


@torch.no_grad()
def fuse_batchnorm(model: SpikingNet) -> SpikingNet:
    """Fold every BatchNorm into the conv / linear layer before it (in place), as hardware runs it."""
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            _fuse_sequential(module)
    return model


def to_event_network(direct_model: SpikingNet) -> SpikingNet:
    """Network E: a copy of D with batch norm folded in and binary spiking neurons (theta = 1)."""
    event_model = copy.deepcopy(direct_model).eval()
    fuse_batchnorm(event_model)
    for lif in event_model.lif_layers():
        lif.threshold.fill_(1.0)
    return event_model.set_mode("binary")


def checkpoint(model: SpikingNet) -> dict[str, Any]:
    """What is saved of a network: architecture config, mode and weights (CPU tensors)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    fused = not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return {"config": model.config, "state_dict": state, "mode": model.mode, "fused": fused}


def restore(saved: dict[str, Any]) -> SpikingNet:
    """Rebuild a network from :func:`checkpoint`'s output."""
    net = model_from_config(saved["config"])
    if saved.get("fused", False):
        fuse_batchnorm(net.eval())
    net.load_state_dict(saved["state_dict"])
    return net.set_mode(saved.get("mode", "graded")).eval()
