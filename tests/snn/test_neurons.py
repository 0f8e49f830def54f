from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from direct2event.snn import kernels
from direct2event.snn.neurons import (
    LIF,
    LIFParameters,
    lif_multistep,
    lif_multistep_reference,
)
from tests.snn.conftest import require_compiler


@pytest.fixture(params=["kernel", "eager"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through the compiled CPU kernel and through the eager PyTorch version."""
    if request.param == "eager":
        monkeypatch.setenv("DIRECT2EVENT_CPU_KERNELS", "0")
    else:
        require_compiler()
    assert kernels.usable(torch.zeros(1)) == (request.param == "kernel")
    return request.param


def test_binary_membrane_trace_matches_hand_computation(backend: str) -> None:
    # beta 0.5, theta 1, reset by subtraction, constant input 0.6:
    # h1 = 0.6 -> no spike, u1 = 0.6; h2 = 0.3 + 0.6 = 0.9 -> no spike;
    # h3 = 0.45 + 0.6 = 1.05 -> spike, u3 = 0.05; h4 = 0.025 + 0.6 = 0.625 -> no spike
    x = torch.full((4, 1, 1), 0.6)
    out = lif_multistep(x, torch.ones(1), LIFParameters(beta=0.5), "binary")
    assert out.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]


def test_graded_activation_trace_matches_hand_computation(backend: str) -> None:
    # a = clamp(h - theta + 0.5, 0, 1) (w = 1), u = h - theta * a
    # h1 = 0.8 -> a1 = 0.3, u1 = 0.5; h2 = 0.25 + 0.8 = 1.05 -> a2 = 0.55, u2 = 0.5
    x = torch.full((2, 1), 0.8)
    out = lif_multistep(x, torch.ones(1), LIFParameters(beta=0.5), "graded")
    assert out.flatten().tolist() == pytest.approx([0.3, 0.55])


def test_zero_reset_and_per_channel_threshold(backend: str) -> None:
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
@pytest.mark.parametrize(
    ("shape", "theta_shape"),
    [((6, 3, 4, 5, 5), (4, 1, 1)), ((6, 3, 7), (7,)), ((6, 3, 4, 5, 5), ())],
    ids=["conv", "linear", "scalar"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_backward_equals_autograd(
    backend: str,
    mode: str,
    surrogate: str,
    detach_reset: bool,
    shape: tuple[int, ...],
    theta_shape: tuple[int, ...],
    dtype: torch.dtype,
) -> None:
    torch.manual_seed(0)
    params = LIFParameters(beta=0.7, width=0.8, surrogate=surrogate, detach_reset=detach_reset)
    x = (torch.randn(shape, dtype=dtype) * 1.5).requires_grad_()
    theta = (torch.rand(theta_shape, dtype=dtype) + 0.5).reshape(theta_shape)
    weights = torch.randn(shape, dtype=dtype)
    out = lif_multistep(x, theta, params, mode)
    (out * weights).sum().backward()
    fused = x.grad.clone()
    x.grad = None
    reference = lif_multistep_reference(x, theta, params, mode)
    (reference * weights).sum().backward()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(out, reference, atol=tol)
    with torch.no_grad():  # inference keeps nothing and gives the same outputs
        assert torch.equal(lif_multistep(x, theta, params, mode), out)
    assert torch.allclose(fused, x.grad, atol=tol)
    assert fused.abs().sum() > 0


def test_kernel_threads_split_neurons_without_changing_values() -> None:
    """A layer large enough to be split over threads gives the eager version's numbers."""
    require_compiler()
    assert kernels.usable(torch.zeros(1))
    torch.manual_seed(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = (torch.randn(4, 8, 16, 28, 28) * 1.5).requires_grad_()
        theta = (torch.rand(16) + 0.5).view(16, 1, 1)
        assert kernels._threads(x[0].numel()) == 2
        params = LIFParameters(beta=0.5, surrogate="atan")
        grad = torch.randn_like(x)
        outs = []
        for flag in ("1", "0"):
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("DIRECT2EVENT_CPU_KERNELS", flag)
                x.grad = None
                out = lif_multistep(x, theta, params, "binary")
                out.backward(grad)
                outs.append((out.detach(), x.grad.clone()))
    finally:
        torch.set_num_threads(threads)
    (k_out, k_grad), (e_out, e_grad) = outs
    assert (k_out != e_out).float().mean() < 1e-5  # a rounding tie at the threshold at most
    assert torch.allclose(k_grad, e_grad, atol=1e-4)
    assert 0.1 < k_out.mean() < 0.9


def test_channel_layout_maps_each_neuron_to_its_threshold() -> None:
    x = torch.zeros(4, 2, 3, 5, 6)
    assert kernels.channel_layout(x, torch.ones(3, 1, 1)) == (3, 30)
    assert kernels.channel_layout(x, torch.ones(())) == (1, 180)
    assert kernels.channel_layout(torch.zeros(4, 2, 7), torch.ones(7)) == (7, 1)
    assert kernels.channel_layout(x, torch.ones(6)) == (6, 1)  # last dim as channels
    assert kernels.channel_layout(x, torch.ones(3, 5, 1)) is None  # eager broadcasting instead
    assert kernels.channel_layout(x, torch.ones(4, 1, 1)) is None


def test_lif_module_broadcasts_channel_thresholds(backend: str) -> None:
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


def test_atan_backward_reuses_its_buffer_and_refuses_a_second_pass(backend: str) -> None:
    # the atan backward writes the gradient into the saved membrane buffer; autograd's version
    # check must then refuse a second backward through a retained graph rather than misread it
    x = torch.randn(3, 2, 4, requires_grad=True)
    out = lif_multistep(x * 1.0, torch.ones(1), LIFParameters(surrogate="atan"), "binary")
    loss = (out * torch.randn_like(out)).sum()
    loss.backward(retain_graph=True)
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_without_a_compiler_the_eager_version_runs(tmp_path: Path) -> None:
    """No C compiler: one warning, then the eager loop, with the autograd reference's numbers."""
    script = """
import torch
from direct2event.snn import kernels
from direct2event.snn.neurons import LIFParameters, lif_multistep, lif_multistep_reference
x = torch.randn(4, 2, 3, 5, requires_grad=True)
theta = torch.ones(3, 1)
p = LIFParameters(surrogate="atan")
out = lif_multistep(x, theta, p, "binary")
out.sum().backward()
g = x.grad.clone(); x.grad = None
lif_multistep_reference(x, theta, p, "binary").sum().backward()
assert not kernels.usable(x)
assert torch.allclose(g, x.grad, atol=1e-6)
print("eager ok")
"""
    env = {
        **os.environ,
        "CC": str(tmp_path / "no-such-compiler"),
        "DIRECT2EVENT_CACHE": str(tmp_path / "cache"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "eager ok" in result.stdout
    assert "CPU kernels unavailable" in result.stderr
    assert not list((tmp_path / "cache").glob("*.so"))


def test_an_unwritable_cache_folder_falls_back_to_the_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_compiler()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DIRECT2EVENT_CACHE", str(blocker / "cache"))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    built = kernels._build("float")
    assert built.parent == tmp_path / "tmp" / f"direct2event-{os.getuid()}"
    assert built.exists()


@pytest.mark.parametrize("surrogate", ["pwl", "atan"])
@pytest.mark.parametrize("kernel", [True, False])
def test_threshold_gradient_equals_autograd_of_the_reference(
    surrogate: str, kernel: bool, monkeypatch: pytest.MonkeyPatch, kernel_calls
) -> None:
    """A trained threshold gets the gradient autograd gives the plain step-by-step LIF, from
    the compiled kernel and from the eager version alike."""
    if not kernel:
        monkeypatch.setattr(kernels, "usable", lambda x: False)
    torch.manual_seed(0)
    params = LIFParameters(beta=0.5, width=1.0, surrogate=surrogate)
    x = torch.randn(4, 3, 5, 6, 6, dtype=torch.float64)
    theta = (torch.rand(5, 1, 1, dtype=torch.float64) + 0.5).requires_grad_()
    theta_ref = theta.detach().clone().requires_grad_()
    weights = torch.randn_like(x)
    (lif_multistep(x, theta, params, "binary") * weights).sum().backward()
    (lif_multistep_reference(x, theta_ref, params, "binary") * weights).sum().backward()
    assert theta.grad is not None and theta.grad.shape == theta.shape
    torch.testing.assert_close(theta.grad, theta_ref.grad, rtol=1e-9, atol=1e-9)
    ran = {"lif_forward": 1, "lif_backward": 1} if kernel else {}
    assert kernel_calls == ran  # the kernel computed it, or PyTorch alone did


def test_trained_thresholds_get_gradients_and_stay_positive() -> None:
    from direct2event.snn.neurons import LIF, THRESHOLD_FLOOR

    lif = LIF(4, LIFParameters(), mode="binary")
    lif.threshold.fill_(0.5)
    lif.train_threshold(True)
    assert isinstance(lif.threshold, torch.nn.Parameter)
    x = torch.rand(3, 2, 4, 5, 5)
    lif(x).sum().backward()
    assert lif.threshold.grad is not None and lif.threshold.grad.abs().sum() > 0
    assert torch.all(lif.threshold.grad < 0)  # a lower threshold means more spikes
    with torch.no_grad():
        lif.threshold.fill_(-1.0)  # an optimiser step past zero
    assert torch.all(lif.broadcast_threshold(x) == THRESHOLD_FLOOR)
    lif.train_threshold(False)
    assert "threshold" in dict(lif.named_buffers())
    assert torch.all(lif.threshold == THRESHOLD_FLOOR)
