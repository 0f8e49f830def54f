from __future__ import annotations

import pytest
import torch

from direct2event.snn.models import build_model, fuse_batchnorm, model_from_config, to_event_network


@pytest.mark.parametrize(
    ("arch", "shape", "channels"),
    [
        ("convnet", (1, 28, 28), (16, 32)),
        ("convnet", (2, 34, 34), (8, 16)),
        ("vgg", (3, 32, 32), (8, 16, "M", 16, "M")),
        ("resnet", (2, 32, 32), (8, 16)),
    ],
)
def test_architectures_give_logits(arch: str, shape: tuple, channels: tuple) -> None:
    net = build_model(arch, shape, 7, channels=channels, hidden=12)
    out = net(torch.rand(3, 2, *shape))
    assert out.shape == (2, 7)
    rebuilt = model_from_config(net.config)
    rebuilt.load_state_dict(net.state_dict())
    net.eval(), rebuilt.eval()
    x = torch.rand(3, 2, *shape)
    assert torch.allclose(net(x), rebuilt(x))


def test_batchnorm_fusion_keeps_outputs() -> None:
    torch.manual_seed(0)
    net = build_model("resnet", (1, 16, 16), 5, channels=(4, 8))
    net.train()
    for _ in range(3):  # give batch norm non-trivial running statistics
        net(torch.rand(2, 8, 1, 16, 16) * 3)
    net.eval()
    x = torch.rand(2, 4, 1, 16, 16)
    before = net(x)
    fuse_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert torch.allclose(before, net(x), atol=1e-4)


def test_event_network_is_binary_copy() -> None:
    net = build_model("convnet", (1, 8, 8), 3, channels=(4,))
    event = to_event_network(net)
    assert net.mode == "graded" and event.mode == "binary"
    assert all(torch.all(lif.threshold == 1) for lif in event.lif_layers())
    with torch.no_grad():
        event.lif_layers()[0].threshold.fill_(2.0)
    assert torch.all(net.lif_layers()[0].threshold == 1)  # D untouched


def test_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="Unknown architecture"):
        build_model("transformer", (1, 8, 8), 3)
