from __future__ import annotations

import pytest
import torch
from torch import nn

from direct2event.snn import kernels
from direct2event.snn.pooling import MaxPool2d


@pytest.mark.parametrize(
    "shape",
    # odd sizes; MNIST's planes; rows over several scratch blocks (even and odd widths); rows
    # longer than the scratch (one window at a time)
    [
        (3, 4, 8, 6),
        (2, 3, 7, 9),
        (64, 16, 28, 28),
        (1, 2, 600, 28),
        (1, 2, 301, 29),
        (1, 1, 4, 8193),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("binary", [False, True])
def test_kernel_pooling_equals_pytorch_values_and_gradients(
    shape: tuple[int, ...], dtype: torch.dtype, binary: bool, kernel_calls
) -> None:
    """Odd sizes, big planes and spikes (windows full of ties) give PyTorch's exact numbers."""
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=dtype)
    if binary:
        x = (x > 0.3).to(dtype)
    x.requires_grad_()
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, dtype=dtype)
    ours = MaxPool2d(2)
    assert ours._kernel_case(x)
    out = ours(x)
    out.backward(grad)
    ours_grad = x.grad.clone()
    x.grad = None
    reference = nn.MaxPool2d(2)(x)
    reference.backward(grad)
    assert torch.equal(out, reference)
    assert torch.equal(ours_grad, x.grad)
    with torch.no_grad():
        assert torch.equal(ours(x), reference)
    # the kernel computed ours (forward with and without indices, backward), PyTorch the rest
    assert kernel_calls == {"maxpool2_forward": 2, "maxpool2_backward": 1}


def test_kernel_pooling_follows_pytorch_on_ties_and_nan(kernel_calls) -> None:
    # window 1: all equal (the first wins); window 2: NaN in the third position; window 3: -inf
    x = torch.tensor(
        [[[[1.0, 1.0, 0.5, 2.0, -float("inf"), -float("inf")],
           [1.0, 1.0, float("nan"), 0.0, -float("inf"), -float("inf")]]]],
        requires_grad=True,
    )  # fmt: skip
    out = MaxPool2d(2)(x)
    out.sum().backward()
    expected = nn.MaxPool2d(2)(x.detach().clone().requires_grad_())
    assert torch.equal(out.isnan(), expected.isnan())
    assert torch.equal(out.nan_to_num(), expected.nan_to_num())
    assert x.grad.tolist() == [[[[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]]]]
    assert kernel_calls == {"maxpool2_forward": 1, "maxpool2_backward": 1}


@pytest.mark.parametrize("shape", [(4, 8, 28, 28), (2, 3, 15, 17)])
def test_kernel_pooling_follows_pytorch_on_scattered_nan_and_ties(
    shape: tuple[int, ...], kernel_calls
) -> None:
    torch.manual_seed(1)
    x = torch.randint(0, 3, shape).float()  # most windows hold ties
    x[torch.rand(shape) < 0.05] = float("nan")
    x.requires_grad_()
    out = MaxPool2d(2)(x)
    grad = torch.randn_like(out)
    out.backward(grad)
    ours_grad, x.grad = x.grad.clone(), None
    expected = nn.MaxPool2d(2)(x)
    expected.backward(grad)
    assert torch.equal(out.isnan(), expected.isnan())
    assert torch.equal(out.nan_to_num(), expected.nan_to_num())
    assert torch.equal(ours_grad, x.grad)
    assert kernel_calls == {"maxpool2_forward": 1, "maxpool2_backward": 1}


def test_other_pooling_settings_use_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(2, 3, 9, 9)
    for pool in (MaxPool2d(3), MaxPool2d(2, stride=1), MaxPool2d(2, ceil_mode=True)):
        assert not pool._kernel_case(x)
        params = {k: getattr(pool, k) for k in ("kernel_size", "stride", "padding", "ceil_mode")}
        assert torch.equal(pool(x), nn.MaxPool2d(**params)(x))
    monkeypatch.setenv("DIRECT2EVENT_CPU_KERNELS", "0")
    assert not MaxPool2d(2)._kernel_case(x)
    assert not MaxPool2d(2)._kernel_case(x.to(torch.bfloat16))
    assert kernels.usable(x) is False
