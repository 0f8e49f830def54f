"""Surrogate functions: the graded activation of network D and the spike of network E.

Both networks use the same piecewise-linear surrogate ``s``:

    s(z) = clamp(z / w + 1/2, 0, 1),        s'(z) = 1/w  if |z| < w/2 else 0

where ``z = u - theta`` and ``w`` is the surrogate width. Network D emits ``s(z)`` itself (a
graded message in [0, 1]); network E emits ``Heaviside(z)`` and back-propagates ``s'(z)``.
An arctangent surrogate gradient (``atan``) is offered for E as in the distillation reading of
the method.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

SurrogateName = Literal["pwl", "atan"]
SURROGATES: tuple[str, ...] = ("pwl", "atan")


def graded(z: Tensor, width: float = 1.0) -> Tensor:
    """Graded activation of network D: the hard-sigmoid ``clamp(z/w + 1/2, 0, 1)``."""
    return torch.clamp(z / width + 0.5, 0.0, 1.0)


def surrogate_grad(z: Tensor, width: float = 1.0, name: SurrogateName = "pwl") -> Tensor:
    """Derivative used in place of the spike's (zero almost everywhere) derivative."""
    if name == "pwl":
        return (z.abs() < 0.5 * width).to(z.dtype) / width
    if name == "atan":
        alpha = 2.0 / width  # (alpha / 2) / (1 + (pi / 2 * alpha * z)^2), three passes
        kz = z.mul(math.pi / 2.0 * alpha)
        grad = torch.addcmul(torch.ones((), dtype=z.dtype, device=z.device), kz, kz).reciprocal_()
        return grad if alpha == 2.0 else grad.mul_(alpha / 2.0)
    raise ValueError(f"Unknown surrogate '{name}'; choose one of {SURROGATES}.")


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward (spike when ``z >= 0``), surrogate derivative backward."""

    @staticmethod
    def forward(ctx, z: Tensor, width: float, name: str) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.width = width
        ctx.name = name
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return grad_out * surrogate_grad(z, ctx.width, ctx.name), None, None


def spike(z: Tensor, width: float = 1.0, name: SurrogateName = "pwl") -> Tensor:
    """Binary spike of network E with a surrogate gradient."""
    return SpikeFunction.apply(z, width, name)
