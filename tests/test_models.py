import pytest
import torch
from torch import nn

from trainables import ConfigError
from trainables.models import build_backbone, build_projector, parse_layer_spec


def test_projector_spec_follows_garrido_notation():
    projector, out_dim = build_projector("64-64-16", 32)
    layers = list(projector)
    assert out_dim == 16
    assert [type(m) for m in layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert layers[0].in_features == 32 and layers[-1].out_features == 16 and layers[-1].bias is None
    assert build_projector("none", 32)[1] == 32


@pytest.mark.parametrize("bad", ["", "12-x", "0-3", "-5", "256--128"])
def test_bad_projector_spec(bad):
    with pytest.raises(ConfigError, match="model.projector"):
        parse_layer_spec(bad, "model.projector")


def test_resnet18_has_cifar_stem():
    net, dim = build_backbone("resnet18", (3, 32, 32), 0)
    assert dim == 512
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and isinstance(net.maxpool, nn.Identity)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 512)


@pytest.mark.parametrize("name,channels,size", [("mlp", 1, 8), ("convnet", 3, 32), ("convnet", 1, 8)])
def test_small_backbones(name, channels, size):
    net, dim = build_backbone(name, (channels, size, size), 64)
    assert dim == 64 and net(torch.zeros(4, channels, size, size)).shape == (4, 64)


def test_unknown_backbone_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean resnet18"):
        build_backbone("resnet19", (3, 32, 32), 64)
