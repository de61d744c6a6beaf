"""CIFAR-style ResNets with ONE branches (docs/METHODS.md section 1).

Layout, for width multiplier w and block expansion e (1 basic, 4 bottleneck)::

    stem     conv3x3(in_channels -> 16w) + BN + ReLU
    stage 1  n blocks, 16w planes,  stride 1   -> 16w*e channels
    stage 2  n blocks, 32w planes,  stride 2   -> 32w*e channels
    stage 3  n blocks, 64w planes,  stride 2   -> 64w*e channels
    head     global average pool + linear

Stages before ``branch_point`` form the shared trunk; stage ``branch_point`` onwards is copied
once per branch. ONE's layout is the default ``branch_point=3``: stem, stage 1 and stage 2 are
shared and every branch owns a full stage 3 and its classifier; the gate reads the stage-2
output. ``branch_point=1`` shares only the stem.

Depth fixes the blocks per stage as in ONE's released code: n = (depth - 2) / 6 whatever the
block kind (ResNet-20/32/56: n = 3/5/9 basic blocks; ResNet-110: n = 18 bottleneck blocks, about
1.7M parameters, the network ONE's CIFAR figures are for). The block kind is part of each
registered name rather than derived from the depth, so ``resnet56`` is the usual basic-block
network.

``widths`` (one multiplier per branch, relative to ``width``) scales the per-branch stages of
each branch: the student ensemble's family of students of several widths on one shared trunk.
Taps: ``stem`` (reduction 1), ``stage1`` (1), ``stage2`` (2), ``stage3`` (4).

Convolutions are 3x3 with padding 1 (1x1 inside bottlenecks), so any input size works (8x8
digits, 28x28, 32x32). Where a block changes shape, its shortcut is a 1x1 convolution + BN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from onedge.errors import ConfigError
from training.models.base import FeatureInfo
from training.models.branched import (
    TrunkBranchModel,
    classifier_head,
    init_weights,
    scaled,
)
from training.models.build import MODELS, student_base


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def projection(cin: int, cout: int, stride: int) -> nn.Module:
    """Identity where shapes match, else a 1x1 convolution + BN."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
    )


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(cin, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1(x4)-BN, plus the shortcut, then ReLU."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}
STAGE_PLANES = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)
TAPS = ("stem", "stage1", "stage2", "stage3")
REDUCTIONS = (1, 1, 2, 4)


def blocks_per_stage(depth: int) -> int:
    """n = (depth - 2) / 6 for either block kind; a depth that does not divide is an error."""
    n, rest = divmod(depth - 2, 6)
    if n < 1 or rest:
        raise ConfigError(f"a CIFAR ResNet needs depth = 6n + 2, got {depth}")
    return n


def make_stage(kind: str, cin: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    block = BLOCKS[kind]
    layers = [block(cin, planes, stride)]
    layers += [block(planes * block.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def stage_channels(kind: str, width: float) -> list[int]:
    """Output channels of stem, stage 1, stage 2 and stage 3."""
    block = BLOCKS[kind]
    return [scaled(16, width)] + [scaled(p, width) * block.expansion for p in STAGE_PLANES]


def stage_info(kind: str, width: float) -> list[FeatureInfo]:
    """The four taps at width multiplier ``width``."""
    return [
        FeatureInfo(name, channels, reduction)
        for name, channels, reduction in zip(
            TAPS, stage_channels(kind, width), REDUCTIONS, strict=True
        )
    ]


def cifar_resnet(
    depth: int,
    kind: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    branches: int,
    width: float,
    branch_point: int,
    gate: bool,
    widths: Sequence[float] | None = None,
) -> TrunkBranchModel:
    """Build a CIFAR ResNet whose stages from ``branch_point`` (1..3) on are per branch."""
    if not 1 <= branch_point <= 3:
        raise ConfigError(
            f"CIFAR ResNets have stages 1..3; branch_point must be in 1..3, got {branch_point}"
        )
    n = blocks_per_stage(depth)
    multipliers = [1.0] * branches if widths is None else list(widths)
    trunk_taps = stage_info(kind, width)
    split = branch_point  # children of the trunk: the stem and stages 1..branch_point-1

    def stage(i: int, w: float, cin: int) -> nn.Sequential:
        return make_stage(kind, cin, scaled(STAGE_PLANES[i], w), n, STAGE_STRIDES[i])

    channels = stage_channels(kind, width)
    stem = nn.Sequential(
        conv3x3(in_channels, channels[0]), nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True)
    )
    trunk = nn.Sequential(stem, *(stage(i, width, channels[i]) for i in range(split - 1)))
    bodies, heads, body_info = [], [], []
    for m in multipliers:
        taps = stage_info(kind, width * m)
        cins = [channels[split - 1]] + [t.channels for t in taps[split:3]]
        bodies.append(
            nn.Sequential(
                *(stage(i, width * m, cins[k]) for k, i in enumerate(range(split - 1, 3)))
            )
        )
        heads.append(classifier_head(taps[3].channels, num_classes))
        body_info.append(taps[split:])
    model = TrunkBranchModel(
        trunk,
        bodies,
        heads,
        trunk_info=trunk_taps[:split],
        body_info=body_info,
        num_classes=num_classes,
        gate=gate,
        widths=multipliers,
    )
    init_weights(model)
    return model


@MODELS.register("resnet20")
@student_base(1)
def resnet20(**kwargs: Any) -> TrunkBranchModel:
    """ResNet-20: basic blocks, n = 3."""
    return cifar_resnet(20, "basic", **kwargs)


@MODELS.register("resnet32")
@student_base(1)
def resnet32(**kwargs: Any) -> TrunkBranchModel:
    """ResNet-32: basic blocks, n = 5."""
    return cifar_resnet(32, "basic", **kwargs)


@MODELS.register("resnet56")
@student_base(1)
def resnet56(**kwargs: Any) -> TrunkBranchModel:
    """ResNet-56: basic blocks, n = 9."""
    return cifar_resnet(56, "basic", **kwargs)


@MODELS.register("resnet110")
@student_base(1)
def resnet110(**kwargs: Any) -> TrunkBranchModel:
    """ResNet-110: bottleneck blocks (expansion 4), n = 18, as in ONE's released code."""
    return cifar_resnet(110, "bottleneck", **kwargs)
