"""timm backbones: the split's rules, and what tap-using methods do with them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onedge.errors import ConfigError
from training.config import ModelConfig
from training.models import build_model, student_branch_point
from training.models.compact import reference_of


def build(name: str, *, size: int = 32, channels: int = 1, **cfg) -> nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(name=name, **cfg)
    return build_model(config, num_classes=10, in_channels=channels, image_size=size)


def test_small_input_rule_and_taps_of_a_timm_model():
    small = build("timm/mobilenetv3_small_100", branches=1)
    large = build("timm/mobilenetv3_small_100", branches=1, size=64, channels=3)
    assert small.trunk[0].conv_stem.stride == (1, 1) and small.trunk[0].conv_stem.in_channels == 1
    assert large.trunk[0].conv_stem.stride == (2, 2)
    assert [(i.name, i.reduction) for i in small.feature_info[0]] == [
        ("stem", 1), ("stage1", 2), ("stage2", 4), ("stage3", 8), ("stage4", 16),
    ]  # fmt: skip
    assert [i.reduction for i in large.feature_info[0]] == [2, 4, 8, 16, 32]
    small.check_taps(["stage2", "stage3"])  # SRM's default taps exist


def test_branch_point_moves_the_split_and_bad_settings_are_refused():
    early = build("timm/regnetx_002", branches=2, branch_point=1)
    late = build("timm/regnetx_002", branches=2, branch_point=4)
    assert len(early.trunk) == 1 and len(early.bodies[0]) == 4
    assert len(late.trunk) == 4 and len(late.bodies[0]) == 1
    with pytest.raises(ConfigError, match="branch_point must be in 1..4, got 5"):
        build("timm/regnetx_002", branch_point=5)
    with pytest.raises(ConfigError, match="width 1.0 only"):
        build("timm/regnetx_002", width=0.5)
    with pytest.raises(ConfigError, match="timm has no architecture 'mobilenetv3_smal_100'"):
        build("timm/mobilenetv3_smal_100")
    with pytest.raises(ConfigError, match="does not take the small-input rule"):
        build("timm/repvgg_a0", branches=1)


def test_unlisted_timm_architecture_builds_through_the_generic_factory():
    model = build("timm/mnasnet_100", branches=2).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        out = model(x)
        assert (model.extract(1)(x) - out.branch_logits[1]).abs().max().item() <= 1e-5


def test_methods_that_cannot_use_a_timm_network_say_so():
    with pytest.raises(ConfigError, match="does not declare a shared base for a student family"):
        student_branch_point("timm/mobilenetv3_small_100")
    with pytest.raises(ConfigError, match="carves students from CIFAR ResNets"):
        reference_of(ModelConfig(name="timm/mobilenetv3_small_100"))
