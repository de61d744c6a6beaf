"""Compact CIFAR ResNets: one cheaper candidate per block of a reference network (METHODS.md §4).

A reference CIFAR ResNet (``resnet20`` .. ``resnet110`` at ``model.width``) is split into four
blocks, the stem and stages 1..3 (its taps). A :class:`BlockChoice` replaces each block by a
cheaper one, with the same stride and the same tap name:

- ``conv`` (the stem only): conv3x3 + BN + ReLU at ``width`` times the reference's channels;
- ``same``: the reference's block kind (basic or bottleneck) at ``width`` and ``blocks`` deep;
- ``dwsep``: depthwise-separable blocks, dw3x3-BN-ReLU-pw1x1-BN-ReLU-dw3x3-BN-ReLU-pw1x1-BN
  plus the shortcut, then ReLU.

Widths are relative to the reference (``scaled(planes, model.width * width)`` channels).
:func:`block_cost` gives a block's MACs and parameters in closed form (what
:func:`training.models.measure.count_macs` and ``count_parameters`` measure on the built block,
checked by a test), so the budget search can score hundreds of thousands of combinations without
building them. The compact network is a one-branch :class:`TrunkBranchModel` (trunk = the stem),
so ``extract(0)`` is the plain student.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from onedge.errors import ConfigError
from onedge.strict import StrictModel
from training.config import ModelConfig
from training.models.base import FeatureInfo, MultiBranchModel
from training.models.branched import TrunkBranchModel, classifier_head, init_weights, scaled
from training.models.cifar_resnet import (
    BLOCKS,
    REDUCTIONS,
    STAGE_PLANES,
    STAGE_STRIDES,
    TAPS,
    blocks_per_stage,
    conv3x3,
    make_stage,
    projection,
)

# the CIFAR ResNets a compact student can be carved from: name -> (depth, block kind)
REFERENCES: dict[str, tuple[int, str]] = {
    "resnet20": (20, "basic"),
    "resnet32": (32, "basic"),
    "resnet56": (56, "basic"),
    "resnet110": (110, "bottleneck"),
}
STEM_PLANES = 16


class BlockChoice(StrictModel):
    """One block of a compact student: its kind, width (relative to the reference) and depth."""

    kind: Literal["conv", "same", "dwsep"]
    width: float = Field(1.0, gt=0.0, le=4.0)
    blocks: PositiveInt = 1


class DepthwiseSeparableBlock(nn.Module):
    """dw3x3(stride)-BN-ReLU-pw1x1-BN-ReLU-dw3x3-BN-ReLU-pw1x1-BN, plus the shortcut, then ReLU."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, planes, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, padding=1, groups=planes, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 1, bias=False),
            nn.BatchNorm2d(planes),
        )
        self.shortcut = projection(cin, planes, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def reference_of(model: ModelConfig) -> tuple[int, str]:
    """(blocks per stage, block kind) of the reference network ``model`` names."""
    if model.name not in REFERENCES:
        raise ConfigError(
            f"method 'compact' carves students from CIFAR ResNets ({', '.join(REFERENCES)}), "
            f"not {model.name!r}"
        )
    depth, kind = REFERENCES[model.name]
    return blocks_per_stage(depth), kind


def reference_structure(model: ModelConfig) -> list[BlockChoice]:
    """The reference network itself as a structure (every block ``same`` at width 1)."""
    n, _ = reference_of(model)
    return [BlockChoice(kind="conv")] + [BlockChoice(kind="same", blocks=n) for _ in STAGE_PLANES]


def check_structure(model: ModelConfig, structure: Sequence[BlockChoice]) -> None:
    """Four blocks: a ``conv`` stem, then three stages that are ``same`` or ``dwsep``."""
    if len(structure) != len(TAPS):
        raise ConfigError(
            f"a compact structure has {len(TAPS)} blocks ({', '.join(TAPS)}), got {len(structure)}"
        )
    if structure[0].kind != "conv" or structure[0].blocks != 1:
        raise ConfigError("the first block of a compact structure is the stem: kind conv, 1 block")
    for tap, choice in zip(TAPS[1:], structure[1:], strict=True):
        if choice.kind == "conv":
            raise ConfigError(f"block {tap}: kind conv is for the stem; use same or dwsep")
    reference_of(model)


@dataclass(frozen=True)
class Cost:
    """Multiply-accumulates (batch 1) and parameters (BN included) of one block."""

    macs: int
    params: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.macs + other.macs, self.params + other.params)


def _conv(cin: int, cout: int, k: int, pixels: int, groups: int = 1) -> Cost:
    weights = cout * (cin // groups) * k * k
    return Cost(pixels * weights, weights)


def _bn(channels: int) -> Cost:
    return Cost(0, 2 * channels)


def _shortcut(cin: int, cout: int, stride: int, pixels: int) -> Cost:
    if stride == 1 and cin == cout:
        return Cost(0, 0)
    return _conv(cin, cout, 1, pixels) + _bn(cout)


def _unit_cost(kind: str, cin: int, planes: int, stride: int, size: int) -> tuple[Cost, int]:
    """One residual unit of ``kind`` on a ``size`` x ``size`` map: its cost and output channels."""
    out_size = (size - 1) // stride + 1
    px, px_in = out_size * out_size, size * size
    if kind == "basic":
        cost = _conv(cin, planes, 3, px) + _bn(planes) + _conv(planes, planes, 3, px) + _bn(planes)
        return cost + _shortcut(cin, planes, stride, px), planes
    if kind == "bottleneck":
        cout = planes * 4
        cost = _conv(cin, planes, 1, px_in) + _bn(planes) + _conv(planes, planes, 3, px)
        cost = cost + _bn(planes) + _conv(planes, cout, 1, px) + _bn(cout)
        return cost + _shortcut(cin, cout, stride, px), cout
    if kind == "dwsep":
        cost = _conv(cin, cin, 3, px, groups=cin) + _bn(cin) + _conv(cin, planes, 1, px)
        cost = cost + _bn(planes) + _conv(planes, planes, 3, px, groups=planes) + _bn(planes)
        cost = cost + _conv(planes, planes, 1, px) + _bn(planes)
        return cost + _shortcut(cin, planes, stride, px), planes
    raise ConfigError(f"unknown block kind {kind!r}")


def block_cost(
    model: ModelConfig, index: int, choice: BlockChoice, cin: int, size: int
) -> tuple[Cost, int, int]:
    """Block ``index`` (0 = stem) built as ``choice`` on a ``cin`` x ``size`` x ``size`` input.

    Returns its cost, its output channels and its output size.
    """
    if index == 0:
        cout = scaled(STEM_PLANES, model.width * choice.width)
        return _conv(cin, cout, 3, size * size) + _bn(cout), cout, size
    _, ref_kind = reference_of(model)
    kind = ref_kind if choice.kind == "same" else choice.kind
    planes = scaled(STAGE_PLANES[index - 1], model.width * choice.width)
    stride = STAGE_STRIDES[index - 1]
    total, channels = _unit_cost(kind, cin, planes, stride, size)
    size = (size - 1) // stride + 1
    for _ in range(choice.blocks - 1):
        cost, channels = _unit_cost(kind, channels, planes, 1, size)
        total = total + cost
    return total, channels, size


def head_cost(channels: int, num_classes: int) -> Cost:
    """Global average pool + linear: channels * classes MACs, weights and biases."""
    return Cost(channels * num_classes, channels * num_classes + num_classes)


def structure_cost(
    model: ModelConfig,
    structure: Sequence[BlockChoice],
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
) -> tuple[Cost, list[Cost]]:
    """The whole student's cost and each block's (the head is in the total only)."""
    check_structure(model, structure)
    per_block, cin, size = [], in_channels, image_size
    for index, choice in enumerate(structure):
        cost, cin, size = block_cost(model, index, choice, cin, size)
        per_block.append(cost)
    total = sum(per_block, Cost(0, 0)) + head_cost(cin, num_classes)
    return total, per_block


def _build_block(
    model: ModelConfig, index: int, choice: BlockChoice, cin: int
) -> tuple[nn.Module, int]:
    if index == 0:
        cout = scaled(STEM_PLANES, model.width * choice.width)
        return nn.Sequential(conv3x3(cin, cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)), cout
    _, ref_kind = reference_of(model)
    planes = scaled(STAGE_PLANES[index - 1], model.width * choice.width)
    stride = STAGE_STRIDES[index - 1]
    if choice.kind == "same":
        stage = make_stage(ref_kind, cin, planes, choice.blocks, stride)
        return stage, planes * BLOCKS[ref_kind].expansion
    units = [DepthwiseSeparableBlock(cin, planes, stride)]
    units += [DepthwiseSeparableBlock(planes, planes) for _ in range(choice.blocks - 1)]
    return nn.Sequential(*units), planes


def compact_resnet(
    model: ModelConfig,
    structure: Sequence[BlockChoice],
    *,
    num_classes: int,
    in_channels: int,
) -> TrunkBranchModel:
    """A one-branch network whose four blocks are built as ``structure`` says."""
    check_structure(model, structure)
    blocks, infos, cin = [], [], in_channels
    for index, (choice, tap, reduction) in enumerate(zip(structure, TAPS, REDUCTIONS, strict=True)):
        block, cin = _build_block(model, index, choice, cin)
        blocks.append(block)
        infos.append(FeatureInfo(tap, cin, reduction))
    network = TrunkBranchModel(
        nn.Sequential(blocks[0]),
        [nn.Sequential(*blocks[1:])],
        [classifier_head(cin, num_classes)],
        trunk_info=infos[:1],
        body_info=[infos[1:]],
        num_classes=num_classes,
        gate=False,
    )
    init_weights(network)
    network.structure = list(structure)  # what inherit_from_teacher reads
    network.reference = model
    return network


# ---- inheriting the teacher's weights ------------------------------------------------------------


def _strongest(weight: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (ascending) of the ``count`` output channels with the largest L1 filter norm."""
    norms = weight.detach().abs().flatten(1).sum(dim=1)
    return torch.sort(torch.topk(norms, count).indices).values


def _copy_conv(dst: nn.Conv2d, src: nn.Conv2d, out: torch.Tensor, inp: torch.Tensor) -> None:
    dst.weight.copy_(src.weight[out][:, inp])


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, keep: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[keep])


def _select_shortcut(dst: nn.Module, src: nn.Module, out: torch.Tensor, inp: torch.Tensor) -> None:
    """Projection <- projection (selected), or an identity teacher as a 0/1 selection matrix."""
    if isinstance(dst, nn.Identity):
        return
    conv, bn = dst[0], dst[1]
    if isinstance(src, nn.Sequential):
        _copy_conv(conv, src[0], out, inp)
        _copy_bn(bn, src[1], out)
        return
    conv.weight.zero_()
    for j, channel in enumerate(out.tolist()):
        hit = (inp == channel).nonzero()
        if len(hit):
            conv.weight[j, int(hit[0]), 0, 0] = 1.0
    bn.weight.fill_(1.0)
    bn.bias.zero_()
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)


def _residual_keep(stage: nn.Sequential, kind: str, count: int) -> torch.Tensor:
    """The residual stream's channels to keep: largest summed L1 of the convolutions writing it."""
    last = "conv2" if kind == "basic" else "conv3"
    norms = sum(getattr(u, last).weight.detach().abs().flatten(1).sum(dim=1) for u in stage)
    for unit in stage:
        if isinstance(unit.shortcut, nn.Sequential):
            norms = norms + unit.shortcut[0].weight.detach().abs().flatten(1).sum(dim=1)
    return torch.sort(torch.topk(norms, count).indices).values


def _inherit_stage(
    student: nn.Sequential, teacher: nn.Sequential, kind: str, inp: torch.Tensor
) -> torch.Tensor:
    """Units 0..d-1 of the teacher's stage, channels selected; returns the kept output channels."""
    width = student[0].conv1.out_channels  # planes
    out = _residual_keep(teacher, kind, width * BLOCKS[kind].expansion)
    for s_unit, t_unit in zip(student, teacher, strict=False):  # the teacher's later units dropped
        mid = _strongest(t_unit.conv1.weight, width)
        _copy_conv(s_unit.conv1, t_unit.conv1, mid, inp)
        _copy_bn(s_unit.bn1, t_unit.bn1, mid)
        if kind == "basic":
            _copy_conv(s_unit.conv2, t_unit.conv2, out, mid)
            _copy_bn(s_unit.bn2, t_unit.bn2, out)
        else:
            _copy_conv(s_unit.conv2, t_unit.conv2, mid, mid)
            _copy_bn(s_unit.bn2, t_unit.bn2, mid)
            _copy_conv(s_unit.conv3, t_unit.conv3, out, mid)
            _copy_bn(s_unit.bn3, t_unit.bn3, out)
        _select_shortcut(s_unit.shortcut, t_unit.shortcut, out, inp)
        inp = out
    return out


def stage_modules(network: MultiBranchModel, branch: int) -> dict[str, nn.Module]:
    """Branch ``branch``'s blocks by tap name (stem, stage1, ...), then ``head``."""
    blocks = {info.name: m for m, info in zip(network.trunk, network.trunk_info, strict=True)}
    pairs = zip(network.bodies[branch], network.body_info[branch], strict=True)
    blocks.update({info.name: m for m, info in pairs})
    blocks["head"] = network.heads[branch]
    return blocks


@torch.no_grad()
def inherit_from_teacher(
    student: MultiBranchModel,
    teacher: MultiBranchModel,
    branch: int,
    model: ModelConfig,
    structure: Sequence[BlockChoice],
    teacher_model: ModelConfig,
) -> list[str]:
    """Start the student's blocks from the teacher's (the reference network, branch ``branch``).

    The stem and every ``same`` stage take the teacher's weights: the first units of the stage
    (its later units dropped), and per convolution the output channels with the largest L1
    filter norms (the residual stream's by the summed norms of the convolutions that write it);
    BN statistics follow their channels. ``dwsep`` stages keep their fresh initialisation, and
    the stage after one reads its channels as the teacher's first ones. The head takes the
    classifier's columns of the kept channels. Returns the names of the blocks inherited.
    """
    _, kind = reference_of(model)
    ours, theirs = stage_modules(student, 0), stage_modules(teacher, branch)
    stem_s, stem_t = ours["stem"][0], theirs["stem"][0]
    if teacher_model.name != model.name or any(
        theirs[t][0].conv1.out_channels < ours[t][0].conv1.out_channels
        for t, c in zip(TAPS[1:], structure[1:], strict=True)
        if c.kind == "same"
    ):
        raise ConfigError(
            f"method.inherit needs the teacher to be the reference network ({model.name} at "
            f"width {model.width:g} or wider), not {teacher_model.name} at width "
            f"{teacher_model.width:g}; set method.inherit=false for another teacher"
        )
    keep = _strongest(stem_t.weight, stem_s.out_channels)
    _copy_conv(stem_s, stem_t, keep, torch.arange(stem_s.in_channels))
    _copy_bn(ours["stem"][1], theirs["stem"][1], keep)
    inherited = ["stem"]
    for tap, choice in zip(TAPS[1:], structure[1:], strict=True):
        if choice.kind == "same":
            keep = _inherit_stage(ours[tap], theirs[tap], kind, keep)
            inherited.append(tap)
        else:
            keep = torch.arange(ours[tap][-1].body[-1].num_features)
    head_s, head_t = ours["head"][-1], theirs["head"][-1]
    head_s.weight.copy_(head_t.weight[:, keep])
    head_s.bias.copy_(head_t.bias)
    inherited.append("head")
    return inherited
