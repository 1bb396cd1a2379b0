"""Device logic. No GPU here: the CUDA branches are exercised by patching torch.cuda's
availability queries (the only thing mocked); everything else runs for real on the CPU."""
import pytest
import torch

from trainables import ConfigError
from trainables.device import resolve_placement, set_threads


def test_auto_is_cpu_without_cuda():
    place = resolve_placement("auto", "auto", "resnet18")
    assert place.device.type == "cpu" and not place.bf16 and not place.channels_last


def test_auto_picks_cuda_bf16_channels_last_when_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    place = resolve_placement("auto", "auto", "resnet18")
    assert place.device == torch.device("cuda") and place.bf16 and place.channels_last
    assert not resolve_placement("cuda:1", "fp32", "mlp").channels_last
    with pytest.raises(ConfigError, match="only 2 CUDA"):
        resolve_placement("cuda:2", "auto", "mlp")


def test_cuda_requested_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_placement("cuda", "auto", "mlp")
    with pytest.raises(ConfigError, match="allowed: auto, cpu"):
        resolve_placement("tpu", "auto", "mlp")


def test_bf16_autocast_on_cpu_when_asked():
    place = resolve_placement("cpu", "bf16", "mlp")
    layer = torch.nn.Linear(4, 4)
    with place.autocast():
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    with resolve_placement("cpu", "auto", "mlp").autocast():
        assert layer(torch.randn(2, 4)).dtype == torch.float32


def test_set_threads():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads(0) >= 1
    finally:
        torch.set_num_threads(before)
