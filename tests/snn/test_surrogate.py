from __future__ import annotations

import math

import pytest
import torch

from direct2event.snn.surrogate import graded, spike, surrogate_grad


def test_graded_is_hard_sigmoid_with_box_gradient() -> None:
    z = torch.tensor([-1.0, -0.25, 0.0, 0.25, 1.0], requires_grad=True)
    a = graded(z, width=1.0)
    assert a.tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    a.sum().backward()
    assert z.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_spike_forward_is_heaviside_backward_is_surrogate() -> None:
    z = torch.tensor([-0.6, -0.2, 0.0, 0.3, 0.7], requires_grad=True)
    s = spike(z, width=1.0, name="pwl")
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    s.sum().backward()
    assert z.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_atan_surrogate_peak_and_decay() -> None:
    # alpha = 2 / w: peak alpha / 2 at z = 0
    g = surrogate_grad(torch.tensor([0.0, 1.0]), width=1.0, name="atan")
    assert g[0].item() == pytest.approx(1.0)
    assert g[1].item() == pytest.approx(1.0 / (1.0 + math.pi**2))


def test_unknown_surrogate() -> None:
    with pytest.raises(ValueError, match="Unknown surrogate"):
        surrogate_grad(torch.zeros(1), 1.0, "sigmoid")  # type: ignore[arg-type]
