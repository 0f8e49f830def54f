"""Max-pooling that runs the CPU kernel of :mod:`direct2event.snn.kernels` for 2x2 windows.

:class:`MaxPool2d` is a drop-in ``nn.MaxPool2d`` (same arguments, same results and gradients,
checked in the tests); for ``kernel_size = stride = 2`` without padding, dilation or ceil mode
on float32/float64 CPU tensors it keeps one byte per output instead of an int64 index and is
several times faster. Everything else goes to PyTorch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from direct2event.snn import kernels


class _MaxPool2x2Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        track = ctx.needs_input_grad[0]
        out, idx = kernels.maxpool2_forward(x, keep=track)
        if track:
            ctx.save_for_backward(idx)
            ctx.shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:  # type: ignore[override]
        (idx,) = ctx.saved_tensors
        return kernels.maxpool2_backward(grad_out, idx, ctx.shape)


def _pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
    return (v, v) if isinstance(v, int) else tuple(v)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with the CPU kernel for the 2x2, stride-2 case."""

    def _kernel_case(self, x: Tensor) -> bool:
        return (
            x.dim() == 4
            and _pair(self.kernel_size) == (2, 2)
            and _pair(self.stride or self.kernel_size) == (2, 2)
            and _pair(self.padding) == (0, 0)
            and _pair(self.dilation) == (1, 1)
            and not self.ceil_mode
            and not self.return_indices
            and x.shape[-1] >= 2
            and x.shape[-2] >= 2
            and kernels.usable(x)
        )

    def forward(self, x: Tensor) -> Tensor:
        if self._kernel_case(x):
            return _MaxPool2x2Function.apply(x)
        return F.max_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )
