from __future__ import annotations

import pytest
import torch

from direct2event.snn.neurons import (
    LIF,
    LIFParameters,
    lif_multistep,
    lif_multistep_reference,
)


def test_binary_membrane_trace_matches_hand_computation() -> None:
    # beta 0.5, theta 1, reset by subtraction, constant input 0.6:
    # h1 = 0.6 -> no spike, u1 = 0.6; h2 = 0.3 + 0.6 = 0.9 -> no spike;
    # h3 = 0.45 + 0.6 = 1.05 -> spike, u3 = 0.05; h4 = 0.025 + 0.6 = 0.625 -> no spike
    x = torch.full((4, 1, 1), 0.6)
    out = lif_multistep(x, torch.ones(1), LIFParameters(beta=0.5), "binary")
    assert out.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]


def test_graded_activation_trace_matches_hand_computation() -> None:
    # a = clamp(h - theta + 0.5, 0, 1) (w = 1), u = h - theta * a
    # h1 = 0.8 -> a1 = 0.3, u1 = 0.5; h2 = 0.25 + 0.8 = 1.05 -> a2 = 0.55, u2 = 0.5
    x = torch.full((2, 1), 0.8)
    out = lif_multistep(x, torch.ones(1), LIFParameters(beta=0.5), "graded")
    assert out.flatten().tolist() == pytest.approx([0.3, 0.55])


def test_zero_reset_and_per_channel_threshold() -> None:
    # two channels, thresholds 1 and 2, input 1.2 at each step, beta 1 (no leak), reset to zero
    x = torch.full((3, 1, 2), 1.2)
    params = LIFParameters(beta=1.0, reset="zero")
    out = lif_multistep(x, torch.tensor([1.0, 2.0]), params, "binary")
    # ch0: 1.2 spike, reset 0 -> 1.2 spike -> 1.2 spike; ch1: 1.2, 2.4 spike, reset -> 1.2
    assert out[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert out[:, 0, 1].tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("mode", ["graded", "binary"])
@pytest.mark.parametrize("surrogate", ["pwl", "atan"])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_fused_backward_equals_autograd(mode: str, surrogate: str, detach_reset: bool) -> None:
    torch.manual_seed(0)
    params = LIFParameters(beta=0.7, width=0.8, surrogate=surrogate, detach_reset=detach_reset)
    x = (torch.randn(6, 3, 4, 5, 5) * 1.5).requires_grad_()
    theta = (torch.rand(4) + 0.5).view(4, 1, 1)
    weights = torch.randn(6, 3, 4, 5, 5)
    (lif_multistep(x, theta, params, mode) * weights).sum().backward()
    fused = x.grad.clone()
    x.grad = None
    (lif_multistep_reference(x, theta, params, mode) * weights).sum().backward()
    assert torch.allclose(fused, x.grad, atol=1e-5)
    assert fused.abs().sum() > 0


def test_lif_module_broadcasts_channel_thresholds() -> None:
    lif = LIF(3, LIFParameters(beta=1.0), mode="binary")
    lif.threshold.copy_(torch.tensor([0.5, 1.0, 10.0]))
    out = lif(torch.full((2, 1, 3, 2, 2), 0.6))
    assert out[:, 0, 0].sum() == 8  # spikes at both steps everywhere (0.6 >= 0.5, then 0.7)
    assert out[:, 0, 1].sum() == 4  # 0.6 then 1.2 >= 1: spikes at step 2 only
    assert out[:, 0, 2].sum() == 0


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="beta"):
        LIFParameters(beta=1.5)
    with pytest.raises(ValueError, match="width"):
        LIFParameters(width=0)
    with pytest.raises(ValueError, match="mode"):
        lif_multistep(torch.zeros(1, 1), torch.ones(1), LIFParameters(), "analog")  # type: ignore[arg-type]


def test_atan_backward_reuses_its_buffer_and_refuses_a_second_pass() -> None:
    # the atan backward writes the gradient into the saved membrane buffer; autograd's version
    # check must then refuse a second backward through a retained graph rather than misread it
    x = torch.randn(3, 2, 4, requires_grad=True)
    out = lif_multistep(x * 1.0, torch.ones(1), LIFParameters(surrogate="atan"), "binary")
    loss = (out * torch.randn_like(out)).sum()
    loss.backward(retain_graph=True)
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
