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


@pytest.mark.parametrize(("arch", "channels"), [("convnet", (4, 8)), ("vgg", (4, "M", 8, "M"))])
def test_average_pooling_pools_currents_before_the_neurons(arch: str, channels: tuple) -> None:
    """conv -> BN -> 2x2 average -> LIF: E's neurons still send binary spikes, at the pooled
    resolution; the config rebuilds the same layout."""
    from direct2event.snn.neurons import LIF

    net = build_model(arch, (1, 8, 8), 3, channels=channels, pooling="avg")
    kinds = [type(m).__name__ for m in net.layers]
    assert kinds[:4] == ["Conv2d", "BatchNorm2d", "AvgPool2d", "LIF"]
    assert "MaxPool2d" not in kinds
    event = to_event_network(net.eval())
    spikes = []
    for lif in event.lif_layers():
        lif.register_forward_hook(lambda _m, _i, out: spikes.append(out))
    event(torch.rand(2, 3, 1, 8, 8))
    assert spikes[0].shape[-2:] == (4, 4)  # the neurons sit after the pooling
    assert all(bool(((s == 0) | (s == 1)).all()) for s in spikes)
    assert model_from_config(net.config).config["pooling"] == "avg"
    assert isinstance(net.layers[3], LIF)
    with pytest.raises(ValueError, match="resnet pools with max"):
        build_model("resnet", (1, 8, 8), 3, pooling="avg")
