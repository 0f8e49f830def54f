"""Leaky integrate-and-fire (LIF) neurons, multi-step over the leading time dimension.

Dynamics per step t (``u`` the membrane, ``x`` the input current, ``theta`` the threshold):

    h_t = beta * u_{t-1} + x_t                       (charge)
    a_t = s(h_t - theta)   (graded, network D)  or  Heaviside(h_t - theta)  (binary, network E)
    u_t = h_t - theta * a_t   (reset by subtraction)  or  h_t * (1 - a_t)   (reset to zero)

The neuron is a pure function (:func:`lif_multistep`) over a ``[T, B, ...]`` tensor, in the
spirit of Norse; :class:`LIF` is a thin ``nn.Module`` that holds the per-channel thresholds and
the mode. No state survives between calls, so nothing has to be reset by the caller.

For the default (reset by subtraction) the backward pass is written by hand
(:class:`_LIFSubtractFunction`): it keeps one byte per neuron-step for the piecewise-linear
surrogate instead of the several float tensors autograd would keep, which saves memory and time.
On the CPU it runs the C kernel of :mod:`direct2event.snn.kernels` (every tensor read or written
once per pass); elsewhere (CUDA, bf16) the eager PyTorch loop below. ``tests/snn/test_neurons.py``
checks both against the autograd reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from direct2event.snn import kernels
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


def _store_box(z: Tensor, width: float, box: Tensor) -> None:
    """``box = |z| < w/2`` (the pwl surrogate's support), overwriting ``z``; compared in float
    and then copied, since a comparison straight into bool is several times slower on CPUs."""
    box.copy_(torch.lt(z.abs_(), 0.5 * width, out=z))


class _LIFSubtractFunction(torch.autograd.Function):
    """Multi-step LIF with reset by subtraction and a hand-written BPTT backward.

    A LIF layer's cost is memory traffic, so both passes walk the time steps and do a few
    in-place operations on one step's slice while it is still in cache; nothing is stacked or
    copied afterwards. With ``z_t = h_t - theta`` the forward recursion is

        z_t = beta * z_{t-1} + x_t - theta + beta * theta * (1 - a_{t-1})

    (the constant part is subtracted from all steps at once), and the backward one is
    ``delta_t = s'(z_t) * (g_t - beta * theta * delta_{t+1}) + beta * delta_{t+1}``, where ``g``
    is the incoming gradient and ``delta = dL/dx``. The pwl surrogate keeps one byte per
    neuron-step (the box ``|z| < w/2``); atan keeps ``z``.
    """

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
        if is_graded:  # the graded activation's own derivative is the box: the pwl surrogate
            surrogate = "pwl"
        track = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]  # inference keeps nothing
        ctx.consts = (beta, width, surrogate, detach_reset)
        layout = kernels.channel_layout(x, threshold) if kernels.usable(x) else None
        ctx.layout = layout
        # a trained threshold needs the outputs for its gradient (the reset term)
        ctx.theta_grad = bool(ctx.needs_input_grad[1])
        if layout is not None:
            keep = None if not track else ("box" if surrogate == "pwl" else "z")
            out, kept = kernels.lif_forward(x, threshold, layout, beta, width, is_graded, keep)
            if track:
                ctx.save_for_backward(threshold, kept, out if ctx.theta_grad else None)
            return out
        z = torch.sub(x, threshold, alpha=1.0 - beta)
        z[0].sub_(threshold, alpha=beta)
        out = torch.empty_like(x)
        keep_box = track and surrogate == "pwl"
        box = torch.empty(x.shape, dtype=torch.bool, device=x.device) if keep_box else None
        for t in range(x.shape[0]):
            if t > 0:
                z[t].add_(z[t - 1], alpha=beta).addcmul_(out[t - 1], threshold, value=-beta)
            if is_graded:
                torch.mul(z[t], 1.0 / width, out=out[t]).add_(0.5).clamp_(0.0, 1.0)
            else:
                torch.ge(z[t], 0.0, out=out[t])  # a float result: far faster than bool on CPUs
            if box is not None and t > 0:
                _store_box(z[t - 1], width, box[t - 1])
        if not track:
            return out
        if box is not None:
            _store_box(z[-1], width, box[-1])
        ctx.save_for_backward(
            threshold, box if surrogate == "pwl" else z, out if ctx.theta_grad else None
        )
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        threshold, kept, out = ctx.saved_tensors
        beta, width, surrogate, detach_reset = ctx.consts
        if ctx.layout is not None:
            grad_x = kernels.lif_backward(
                grad_out, kept, threshold, ctx.layout, beta, width, detach_reset
            )
            return grad_x, _threshold_grad(grad_x, out, threshold, beta), *([None] * 5)
        # atan keeps z, this function's own buffer: step t's gradient overwrites z_t once z_t has
        # been read, which spares a fresh allocation (a second backward through a retained graph
        # is refused by autograd's version check instead of reading overwritten values)
        grad_x = torch.empty_like(grad_out) if surrogate == "pwl" else kept
        for t in range(grad_out.shape[0] - 1, -1, -1):
            if surrogate == "pwl":  # via uint8: bool -> float copies are slow on CPUs
                fp = torch.empty_like(grad_out[t]).copy_(kept[t].view(torch.uint8)).mul_(1 / width)
            else:
                fp = surrogate_grad(kept[t], width, "atan")
            if t == grad_out.shape[0] - 1:
                torch.mul(grad_out[t], fp, out=grad_x[t])
            elif detach_reset:
                torch.add(grad_out[t] * fp, grad_x[t + 1], alpha=beta, out=grad_x[t])
            else:
                inner = torch.addcmul(grad_out[t], threshold, grad_x[t + 1], value=-beta)
                torch.addcmul(grad_x[t + 1].mul(beta), fp, inner, out=grad_x[t])
        return grad_x, _threshold_grad(grad_x, out, threshold, beta), *([None] * 5)


def _threshold_grad(grad_x: Tensor, out: Tensor | None, threshold: Tensor, beta: float):
    """``dL/dtheta`` from ``delta_t = dL/dx_t`` (= ``dL/dz_t``): theta enters ``z_t`` directly
    as ``-1 + beta * (1 - a_{t-1})`` (``a_{-1} = 1``: the first step has no reset), summed
    over steps, batch and every position that shares a threshold. None when not asked for."""
    if out is None:
        return None
    if threshold.dim() == 0:
        threshold = threshold.reshape(1)
    prev = torch.cat([torch.ones_like(out[:1]), out[:-1]])
    grad = (grad_x * prev.mul_(-beta).add_(beta - 1.0)).sum(dim=(0, 1))
    dims = [i for i, n in enumerate(threshold.shape) if n == 1 and grad.shape[i] != 1]
    grad = grad.sum(dim=dims, keepdim=True) if dims else grad
    return grad.sum() if grad.numel() != threshold.numel() else grad.reshape(threshold.shape)


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


THRESHOLD_FLOOR = 1e-3  # the smallest threshold a trained one may take (keeps spikes finite)


class LIF(nn.Module):
    """Multi-step LIF layer for ``[T, B, C, ...]`` input with one threshold per channel.

    ``mode`` selects network D (``graded``) or network E (``binary``); both read the same weights
    upstream. Thresholds are a buffer that threshold scaling sets; :meth:`train_threshold` makes
    them a parameter the optimiser trains (fine-tuning with ``train_thresholds``).
    """

    multistep = True

    def __init__(self, channels: int, params: LIFParameters, mode: Mode = "graded") -> None:
        super().__init__()
        self.params = params
        self.mode: Mode = mode
        self.channels = channels
        self.register_buffer("threshold", torch.ones(channels))

    def broadcast_threshold(self, x: Tensor) -> Tensor:
        """Threshold shaped to broadcast over one step ``x[t]`` of shape ``[B, C, ...]``; a
        trained threshold is kept at or above ``THRESHOLD_FLOOR``."""
        theta = self.threshold
        if theta.requires_grad:
            theta = theta.clamp(min=THRESHOLD_FLOOR)
        return theta.view(-1, *([1] * (x.dim() - 3)))

    def train_threshold(self, on: bool = True) -> None:
        """Make the thresholds a trained parameter (``on``) or a fixed buffer again (values
        clamped to ``THRESHOLD_FLOOR``, as the forward pass used them)."""
        value = self.threshold.detach().clamp(min=THRESHOLD_FLOOR).clone()
        del self.threshold
        if on:
            self.threshold = nn.Parameter(value)
        else:
            self.register_buffer("threshold", value)

    def forward(self, x: Tensor) -> Tensor:
        return lif_multistep(x, self.broadcast_threshold(x), self.params, self.mode)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, mode={self.mode}, beta={self.params.beta}"
