"""ImageNet-style networks from torchvision (untrained), split into trunk and branches.

Both networks are seen as a stem followed by four stages; ``branch_point`` k in 1..4 puts
stage k onwards (and the classifier) into every branch, the stem and earlier stages into the
shared trunk. The gate reads the trunk's output.

``resnet18``: stem = conv1, bn1, relu, maxpool; stages = layer1..layer4; head = global
average pool + fc. Only width 1.0 exists (torchvision's basic-block ResNet has no width knob).

``mobilenet_v2``: stem = features[0]; the stages split ``features`` where the resolution
halves, keeping each group of repeated inverted residuals whole:

    stage 1  features[1:4]    16, 24 channels   (stride 4 overall)
    stage 2  features[4:7]    32 channels       (stride 8)
    stage 3  features[7:14]   64, 96 channels   (stride 16)
    stage 4  features[14:19]  160, 320 channels and the 1x1 conv to 1280 (stride 32)

head = global average pool + torchvision's classifier (dropout 0.2, linear). ``width`` is
torchvision's ``width_mult``.

Small inputs: below 64x64 pixels the stem's first convolution becomes a 3x3 stride-1
convolution and resnet18's max-pool is dropped, so 8x8 to 32x32 images keep enough spatial
extent for the later stages. At 64x64 and above the stems are torchvision's own. The first
convolution always takes ``in_channels`` inputs.

Each branch comes from its own freshly initialised torchvision network, so branches start
from different weights.
"""

from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from training.errors import ConfigError
from training.models.branched import (
    TrunkBranchModel,
    init_weights,
)
from training.models.registry import MODELS

SMALL_INPUT = 64  # below this many pixels a side, the stems keep full resolution
MOBILENET_STAGE_STARTS = (1, 4, 7, 14, 19)  # stage k = features[STARTS[k-1] : STARTS[k]]


def check_branch_point(name: str, branch_point: int) -> None:
    if not 1 <= branch_point <= 4:
        raise ConfigError(
            f"{name} has stages 1..4; branch_point must be in 1..4, got {branch_point}"
        )


def fresh_conv(conv: nn.Conv2d, in_channels: int, small: bool) -> nn.Conv2d:
    """A Kaiming-initialised replacement for a stem convolution."""
    kernel, stride, padding = (3, 1, 1) if small else (conv.kernel_size, conv.stride, conv.padding)
    new = nn.Conv2d(
        in_channels, conv.out_channels, kernel, stride=stride, padding=padding, bias=False
    )
    init_weights(new)
    return new


def torchvision_resnet18(num_classes: int, in_channels: int, small: bool) -> tvm.ResNet:
    net = tvm.resnet18(weights=None, num_classes=num_classes)
    if small or in_channels != 3:
        net.conv1 = fresh_conv(net.conv1, in_channels, small)
    if small:
        net.maxpool = nn.Identity()
    return net


def torchvision_mobilenet_v2(
    num_classes: int, in_channels: int, small: bool, width: float
) -> tvm.MobileNetV2:
    net = tvm.mobilenet_v2(weights=None, num_classes=num_classes, width_mult=width)
    if small or in_channels != 3:
        net.features[0][0] = fresh_conv(net.features[0][0], in_channels, small)
    return net


@MODELS.register("resnet18")
def resnet18(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    branches: int,
    width: float,
    branch_point: int,
    gate: bool,
) -> TrunkBranchModel:
    """torchvision ResNet-18 with layer ``branch_point`` onwards per branch."""
    if width != 1.0:
        raise ConfigError(f"resnet18 supports width 1.0 only, got {width}")
    check_branch_point("resnet18", branch_point)
    small = image_size < SMALL_INPUT
    nets = [torchvision_resnet18(num_classes, in_channels, small) for _ in range(branches)]
    stages = [[getattr(net, f"layer{k}") for k in range(1, 5)] for net in nets]
    first = nets[0]
    trunk = nn.Sequential(
        first.conv1, first.bn1, first.relu, first.maxpool, *stages[0][: branch_point - 1]
    )
    trunk_channels = (
        first.conv1.out_channels
        if branch_point == 1
        else stages[0][branch_point - 2][-1].bn2.num_features
    )
    bodies = [nn.Sequential(*s[branch_point - 1 :]) for s in stages]
    heads = [nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), net.fc) for net in nets]
    return TrunkBranchModel(
        trunk,
        bodies,
        heads,
        trunk_channels=trunk_channels,
        num_classes=num_classes,
        gate=gate,
    )


@MODELS.register("mobilenet_v2")
def mobilenet_v2(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    branches: int,
    width: float,
    branch_point: int,
    gate: bool,
) -> TrunkBranchModel:
    """torchvision MobileNetV2 with stage ``branch_point`` onwards per branch."""
    check_branch_point("mobilenet_v2", branch_point)
    small = image_size < SMALL_INPUT
    nets = [
        torchvision_mobilenet_v2(num_classes, in_channels, small, width) for _ in range(branches)
    ]
    split = MOBILENET_STAGE_STARTS[branch_point - 1]
    trunk = nn.Sequential(*nets[0].features[:split])
    bodies = [nn.Sequential(*net.features[split:]) for net in nets]
    heads = [nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), net.classifier) for net in nets]
    return TrunkBranchModel(
        trunk,
        bodies,
        heads,
        trunk_channels=nets[0].features[split - 1].out_channels,
        num_classes=num_classes,
        gate=gate,
    )
