"""The benchmark networks, built identically in this project, SpikingJelly, snnTorch and as a
plain ANN (the dense floor), with weights copied from ours so outputs can be compared.

Neuron: LIF with decay beta, threshold 1, reset by subtraction, arctangent surrogate (alpha = 2).
SpikingJelly's ``LIFNode(tau = 1 / (1 - beta), decay_input=False, v_reset=None)`` has exactly our
dynamics. snnTorch's ``Leaky`` subtracts the reset of step t-1 *after* the decay
(``u_t = beta u_{t-1} + x_t - theta s_{t-1}``), so its spikes equal ours only for beta = 1; the
equality check therefore runs at beta = 1 for all four and at the benchmark's beta for
SpikingJelly (the arithmetic per step, and so the timing, does not depend on beta).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from direct2event.snn.models import VGG_DEFAULT, SpikingNet, build_model
from direct2event.snn.neurons import LIFParameters

Spec = Sequence[int | str]
CASES: dict[str, dict] = {
    "mnist_convnet": {"input_shape": (1, 28, 28), "spec": (16, "M", 32, "M"), "classes": 10},
    "vgg_cifar": {"input_shape": (3, 32, 32), "spec": VGG_DEFAULT, "classes": 10},
    # the simulated N-MNIST network E fine-tunes (convnet, hidden spiking layer of 128) on event
    # frames, T = 8: the end-to-end case
    "nmnist_sim_convnet": {
        "input_shape": (2, 34, 34),
        "spec": (16, "M", 32, "M"),
        "classes": 10,
        "hidden": 128,
        "timesteps": 8,
        "input": "frames",
    },
}
CONTESTANTS: tuple[str, ...] = ("ours", "spikingjelly", "snntorch", "dense_floor")


def ours(case: str, beta: float, detach_reset: bool = False) -> SpikingNet:
    """This project's network (binary spikes, ATan surrogate), built by the library.

    ``detach_reset`` matches snnTorch, whose reset term carries no gradient."""
    c = CASES[case]
    params = LIFParameters(beta=beta, width=1.0, surrogate="atan", detach_reset=detach_reset)
    if case in ("mnist_convnet", "nmnist_sim_convnet"):
        widths = [e for e in c["spec"] if e != "M"]
        net = build_model(
            "convnet", c["input_shape"], c["classes"], params, widths, c.get("hidden", 0)
        )
    else:
        net = build_model("vgg", c["input_shape"], c["classes"], params, list(c["spec"]), 0)
    return net.set_mode("binary")


def _features(spec: Spec, c_in: int, neuron: Callable[[], nn.Module], m) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for entry in spec:
        if entry == "M":
            layers.append(m.MaxPool2d(2))
        else:
            layers += [m.Conv2d(c_in, int(entry), 3, 1, 1, bias=False), m.BatchNorm2d(int(entry))]
            layers.append(neuron())
            c_in = int(entry)
    return layers


def _head(case: str, neuron: Callable[[], nn.Module], m) -> list[nn.Module]:
    """Flatten, the optional hidden spiking layer (linear, batch norm, neuron), the readout."""
    c, n = CASES[case], _n_features(case)
    layers: list[nn.Module] = [m.Flatten()]
    if c.get("hidden"):
        layers += [m.Linear(n, c["hidden"]), m.BatchNorm1d(c["hidden"]), neuron()]
        n = c["hidden"]
    return [*layers, m.Linear(n, c["classes"])]


def _n_features(case: str) -> int:
    c = CASES[case]
    side = c["input_shape"][1] // 2 ** sum(1 for e in c["spec"] if e == "M")
    last = [e for e in c["spec"] if e != "M"][-1]
    return int(last) * side * side


class DenseFloor(nn.Module):
    """The same layers with ReLU, run on a batch of T*B: what the convolutions alone cost."""

    def __init__(self, case: str) -> None:
        super().__init__()
        c = CASES[case]
        feats = _features(c["spec"], c["input_shape"][0], nn.ReLU, nn)
        self.net = nn.Sequential(*feats, *_head(case, nn.ReLU, nn))

    def forward(self, x: Tensor) -> Tensor:
        t, b = x.shape[:2]
        return self.net(x.flatten(0, 1)).unflatten(0, (t, b)).mean(0)


class SpikingJellyNet(nn.Module):
    """SpikingJelly multi-step network (its default ``torch`` backend); state reset per call."""

    def __init__(self, case: str, beta: float) -> None:
        super().__init__()
        from spikingjelly.activation_based import functional, layer, neuron, surrogate

        c = CASES[case]
        tau = float("inf") if beta == 1.0 else 1.0 / (1.0 - beta)

        def lif() -> nn.Module:
            node = neuron.LIFNode(
                tau=tau,
                decay_input=False,
                v_threshold=1.0,
                v_reset=None,
                surrogate_function=surrogate.ATan(alpha=2.0),
                step_mode="m",
            )
            if beta == 1.0:  # tau = inf: keep the exact arithmetic of a non-leaky neuron
                node.tau = 1e30
            return node

        feats = _features(c["spec"], c["input_shape"][0], lif, layer)
        self.net = nn.Sequential(*feats, *_head(case, lif, layer))
        functional.set_step_mode(self.net, "m")
        self._reset = functional.reset_net

    def forward(self, x: Tensor) -> Tensor:
        self._reset(self.net)
        return self.net(x).mean(0)


class SnnTorchNet(nn.Module):
    """snnTorch network written the way its tutorials do: a Python loop over time steps."""

    def __init__(self, case: str, beta: float) -> None:
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        c = CASES[case]

        def lif() -> nn.Module:
            return snn.Leaky(
                beta=beta,
                threshold=1.0,
                spike_grad=surrogate.atan(alpha=2.0),
                reset_mechanism="subtract",
            )

        self.net = nn.Sequential(
            *_features(c["spec"], c["input_shape"][0], lif, nn), *_head(case, lif, nn)
        )
        self.lifs = [m for m in self.net if isinstance(m, snn.Leaky)]

    def forward(self, x: Tensor) -> Tensor:
        mems = {id(m): m.reset_mem() for m in self.lifs}
        out = 0.0
        for t in range(x.shape[0]):
            h = x[t]
            for m in self.net:
                if id(m) in mems:
                    h, mems[id(m)] = m(h, mems[id(m)])
                else:
                    h = m(h)
            out = out + h
        return out / x.shape[0]


def build(contestant: str, case: str, beta: float) -> nn.Module:
    """One contestant's network for ``case``."""
    if contestant == "ours":
        return ours(case, beta)
    if contestant == "spikingjelly":
        return SpikingJellyNet(case, beta)
    if contestant == "snntorch":
        return SnnTorchNet(case, beta)
    if contestant == "dense_floor":
        return DenseFloor(case)
    raise ValueError(f"Unknown contestant '{contestant}'; use one of {CONTESTANTS}.")


@torch.no_grad()
def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """Copy parameters and batch-norm statistics in order (the layer orders are identical)."""
    src_p, dst_p = list(source.parameters()), list(target.parameters())
    src_b = [b for n, b in source.named_buffers() if "running" in n]
    dst_b = [b for n, b in target.named_buffers() if "running" in n]
    if [p.shape for p in src_p] != [p.shape for p in dst_p] or len(src_b) != len(dst_b):
        raise ValueError("The two networks do not have the same layers; cannot copy weights.")
    for s, d in zip(src_p + src_b, dst_p + dst_b, strict=True):
        d.copy_(s)
