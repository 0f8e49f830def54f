"""Leaky integrate-and-fire (LIF) neurons, multi-step over the leading time dimension.

Dynamics per step t (``u`` the membrane, ``x`` the input current, ``theta`` the threshold):

    h_t = beta * u_{t-1} + x_t                       (charge)
    a_t = s(h_t - theta)   (graded, network D)  or  Heaviside(h_t - theta)  (binary, network E)
    u_t = h_t - theta * a_t   (reset by subtraction)  or  h_t * (1 - a_t)   (reset to zero)

The neuron is a pure function (:func:`lif_multistep`) over a ``[T, B, ...]`` tensor, in the
spirit of Norse; :class:`LIF` is a thin ``nn.Module`` that holds the per-channel thresholds and
the mode. No state survives between calls, so nothing has to be reset by the caller.

For the default (reset by subtraction) the backward pass is written by hand
(:class:`_LIFSubtractFunction`): it keeps one boolean mask per step for the piecewise-linear
surrogate instead of the several float tensors autograd would keep, which saves memory and time;
``tests/snn/test_neurons.py`` checks it against the autograd reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from direct2event.snn.surrogate import SURROGATES, SurrogateName, graded, spike, surrogate_grad

Mode = Literal["graded", "binary"]
MODES: tuple[str, ...] = ("graded", "binary")
Reset = Literal["subtract", "zero"]


@dataclass(frozen=True)
class LIFParameters:
    """Parameters shared by all LIF layers of a network.

    Attributes:
        beta: membrane decay per step, in [0, 1] (1 is a non-leaky integrate-and-fire).
        width: width ``w`` of the piecewise-linear surrogate.
        reset: ``subtract`` (keeps the residual charge) or ``zero``.
        surrogate: surrogate derivative used for binary spikes (``pwl`` or ``atan``).
        detach_reset: stop the gradient through the reset term.
    """

    beta: float = 0.5
    width: float = 1.0
    reset: Reset = "subtract"
    surrogate: SurrogateName = "pwl"
    detach_reset: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"LIF beta must lie in [0, 1], got {self.beta}.")
        if self.width <= 0:
            raise ValueError(f"Surrogate width must be > 0, got {self.width}.")
        if self.reset not in ("subtract", "zero"):
            raise ValueError(f"Unknown reset '{self.reset}'; use 'subtract' or 'zero'.")
        if self.surrogate not in SURROGATES:
            raise ValueError(f"Unknown surrogate '{self.surrogate}'; use one of {SURROGATES}.")


def lif_step(
    x: Tensor, u: Tensor, threshold: Tensor, params: LIFParameters, mode: Mode
) -> tuple[Tensor, Tensor]:
    """One LIF step: returns ``(output, new membrane)``. Differentiable through autograd."""
    h = params.beta * u + x
    z = h - threshold
    a = graded(z, params.width) if mode == "graded" else spike(z, params.width, params.surrogate)
    a_reset = a.detach() if params.detach_reset else a
    u_new = h - threshold * a_reset if params.reset == "subtract" else h * (1.0 - a_reset)
    return a, u_new


def lif_multistep_reference(
    x: Tensor, threshold: Tensor, params: LIFParameters, mode: Mode
) -> Tensor:
    """Loop of :func:`lif_step` over ``x[T, ...]``; autograd builds the backward pass."""
    u = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        a, u = lif_step(x[t], u, threshold, params, mode)
        out.append(a)
    return torch.stack(out)


class _LIFSubtractFunction(torch.autograd.Function):
    """Multi-step LIF with reset by subtraction and a hand-written BPTT backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        x: Tensor,
        threshold: Tensor,
        beta: float,
        width: float,
        is_graded: bool,
        surrogate: str,
        detach_reset: bool,
    ) -> Tensor:
        out = torch.empty_like(x)
        u = torch.zeros_like(x[0])
        keep = []
        if is_graded:  # the graded activation's own derivative is the box: the pwl surrogate
            surrogate = "pwl"
        half = 0.5 * width
        track = ctx.needs_input_grad[0]  # inference keeps nothing for a backward pass
        for t in range(x.shape[0]):
            z = torch.add(x[t], u, alpha=beta).sub_(threshold)  # h - theta
            if track:
                keep.append(z.abs() < half if surrogate == "pwl" else z.clone())
            if is_graded:
                torch.clamp(z.mul(1.0 / width).add_(0.5), 0.0, 1.0, out=out[t])
            else:
                out[t].copy_(z >= 0)
            u = torch.addcmul(z.add_(threshold), threshold, out[t], value=-1.0)  # h - theta * a
        if not track:
            return out
        ctx.save_for_backward(threshold, torch.stack(keep))
        ctx.consts = (beta, width, surrogate, detach_reset)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        threshold, kept = ctx.saved_tensors
        beta, width, surrogate, detach_reset = ctx.consts
        grad_x = torch.empty_like(grad_out)
        eps = None  # dL/du_t arriving from step t+1
        for t in range(grad_out.shape[0] - 1, -1, -1):
            if surrogate == "pwl":
                fp = kept[t].to(grad_out.dtype) / width
            else:
                fp = surrogate_grad(kept[t], width, "atan")
            delta = grad_out[t] * fp
            if eps is not None:
                delta = delta + (eps if detach_reset else eps * (1.0 - threshold * fp))
            grad_x[t] = delta
            eps = beta * delta
        return grad_x, None, None, None, None, None, None


def lif_multistep(x: Tensor, threshold: Tensor, params: LIFParameters, mode: Mode) -> Tensor:
    """Run LIF neurons over ``x[T, B, ...]`` and return their outputs, same shape.

    ``threshold`` broadcasts against ``x[t]`` (a scalar, ``[C]`` or ``[C, 1, 1]``). The fused
    hand-written backward is used for reset by subtraction; reset to zero uses autograd.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown neuron mode '{mode}'; use one of {MODES}.")
    if params.reset == "subtract":
        return _LIFSubtractFunction.apply(
            x,
            threshold.to(x.dtype),
            params.beta,
            params.width,
            mode == "graded",
            params.surrogate,
            params.detach_reset,
        )
    return lif_multistep_reference(x, threshold.to(x.dtype), params, mode)


class LIF(nn.Module):
    """Multi-step LIF layer for ``[T, B, C, ...]`` input with one threshold per channel.

    ``mode`` selects network D (``graded``) or network E (``binary``); both read the same weights
    upstream. Thresholds are a buffer (not trained by the optimiser); threshold scaling sets them.
    """

    multistep = True

    def __init__(self, channels: int, params: LIFParameters, mode: Mode = "graded") -> None:
        super().__init__()
        self.params = params
        self.mode: Mode = mode
        self.channels = channels
        self.register_buffer("threshold", torch.ones(channels))

    def broadcast_threshold(self, x: Tensor) -> Tensor:
        """Threshold shaped to broadcast over one step ``x[t]`` of shape ``[B, C, ...]``."""
        return self.threshold.view(-1, *([1] * (x.dim() - 3)))

    def forward(self, x: Tensor) -> Tensor:
        return lif_multistep(x, self.broadcast_threshold(x), self.params, self.mode)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, mode={self.mode}, beta={self.params.beta}"
