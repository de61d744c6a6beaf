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

The trunk (stem and the stages before ``branch_point``) comes from torchvision's network. Every
branch's stages are built from torchvision's own blocks (``BasicBlock``, ``InvertedResidual``)
with the same layout, so each branch starts from its own fresh weights, and ``widths`` (one
multiplier per branch) can scale the channels of each branch's stages: the student ensemble's
family. The final 1x1 convolution of MobileNetV2 keeps 1280 channels below width 1, as in
torchvision. Taps: ``stem``, ``stage1`` .. ``stage4``. ``source_names`` maps every part to
torchvision's own module names, so ``model.init`` reads torchvision's state dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn
from torchvision import models as tvm
from torchvision.models._utils import _make_divisible
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock
from torchvision.ops.misc import Conv2dNormActivation

from onedge.errors import ConfigError
from training.models.base import FeatureInfo
from training.models.branched import TrunkBranchModel, init_weights, scaled
from training.models.build import MODELS, student_base

SMALL_INPUT = 64  # below this many pixels a side, the stems keep full resolution
MOBILENET_STAGE_STARTS = (1, 4, 7, 14, 19)  # stage k = features[STARTS[k-1] : STARTS[k]]
# torchvision's inverted-residual settings (t, c, n, s), grouped into the four stages
MOBILENET_STAGES = (
    ((1, 16, 1, 1), (6, 24, 2, 2)),
    ((6, 32, 3, 2),),
    ((6, 64, 4, 2), (6, 96, 3, 1)),
    ((6, 160, 3, 2), (6, 320, 1, 1)),
)
RESNET_PLANES = (64, 128, 256, 512)
RESNET_REDUCTION = (1, 2, 4, 8)  # of stages 1..4 relative to the stem
MOBILENET_REDUCTION = (2, 4, 8, 16)


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


def resnet_stage(inplanes: int, planes: int, stride: int) -> nn.Sequential:
    """torchvision's ResNet-18 stage: two basic blocks, a 1x1 projection where shapes change."""
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
        )
    return nn.Sequential(
        BasicBlock(inplanes, planes, stride, downsample), BasicBlock(planes, planes)
    )


def mobilenet_stage(stage: int, cin: int, width: float) -> tuple[nn.Sequential, int]:
    """Stage ``stage`` (1..4) of MobileNetV2 at ``width``; stage 4 ends with the 1x1 conv."""
    layers: list[nn.Module] = []
    for t, c, n, s in MOBILENET_STAGES[stage - 1]:
        cout = _make_divisible(c * width, 8)
        for i in range(n):
            layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, expand_ratio=t))
            cin = cout
    if stage == 4:
        last = _make_divisible(1280 * max(1.0, width), 8)
        layers.append(Conv2dNormActivation(cin, last, kernel_size=1, activation_layer=nn.ReLU6))
        cin = last
    return nn.Sequential(*layers), cin


def imagenet_style(
    stem: nn.Module,
    stem_taps: FeatureInfo,
    stage: Callable[[int, int, float], tuple[nn.Module, int]],
    reductions: tuple[int, ...],
    *,
    branches: int,
    branch_point: int,
    base_width: float,
    widths: Sequence[float] | None,
    head: Callable[[int], nn.Module],
    num_classes: int,
    gate: bool,
) -> TrunkBranchModel:
    """Trunk = stem + stages 1..branch_point-1 at ``base_width``; stages onwards per branch.

    ``stage(k, cin, width) -> (module, cout)`` builds stage k; ``head(channels)`` a classifier.
    """
    multipliers = [1.0] * branches if widths is None else list(widths)
    trunk_stages, trunk_taps, cin = [stem], [stem_taps], stem_taps.channels

    def tap(k: int, channels: int) -> FeatureInfo:
        return FeatureInfo(f"stage{k}", channels, stem_taps.reduction * reductions[k - 1])

    for k in range(1, branch_point):
        module, cin = stage(k, cin, base_width)
        trunk_stages.append(module)
        trunk_taps.append(tap(k, cin))
    bodies, heads, body_info = [], [], []
    for m in multipliers:
        modules, infos, c = [], [], cin
        for k in range(branch_point, 5):
            module, c = stage(k, c, base_width * m)
            modules.append(module)
            infos.append(tap(k, c))
        body = nn.Sequential(*modules)
        init_weights(body)
        bodies.append(body)
        body_info.append(infos)
        heads.append(head(c))
    return TrunkBranchModel(
        nn.Sequential(*trunk_stages),
        bodies,
        heads,
        trunk_info=trunk_taps,
        body_info=body_info,
        num_classes=num_classes,
        gate=gate,
        widths=multipliers,
    )


@MODELS.register("resnet18")
@student_base(2)
def resnet18(
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
    """torchvision ResNet-18 with layer ``branch_point`` onwards per branch."""
    if width != 1.0:
        raise ConfigError(
            f"resnet18 supports width 1.0 only (per-branch widths scale its branches), got {width}"
        )
    check_branch_point("resnet18", branch_point)
    small = image_size < SMALL_INPUT
    net = torchvision_resnet18(num_classes, in_channels, small)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    layers = [net.layer1, net.layer2, net.layer3, net.layer4]

    def stage(k: int, cin: int, w: float) -> tuple[nn.Module, int]:
        if k < branch_point:  # trunk: torchvision's own layers
            return layers[k - 1], RESNET_PLANES[k - 1]
        planes = scaled(RESNET_PLANES[k - 1], w)
        return resnet_stage(cin, planes, 1 if k == 1 else 2), planes

    def head(channels: int) -> nn.Module:
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(channels, num_classes)
        )

    model = imagenet_style(
        stem,
        FeatureInfo("stem", net.conv1.out_channels, 1 if small else 4),
        stage,
        RESNET_REDUCTION,
        branches=branches,
        branch_point=branch_point,
        base_width=1.0,
        widths=widths,
        head=head,
        num_classes=num_classes,
        gate=gate,
    )
    model.source_names = resnet_source_names(branch_point)  # type: ignore[attr-defined]
    return model


@MODELS.register("mobilenet_v2")
@student_base(2)
def mobilenet_v2(
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
    """torchvision MobileNetV2 with stage ``branch_point`` onwards per branch."""
    check_branch_point("mobilenet_v2", branch_point)
    small = image_size < SMALL_INPUT
    net = torchvision_mobilenet_v2(num_classes, in_channels, small, width)
    starts = MOBILENET_STAGE_STARTS

    def stage(k: int, cin: int, w: float) -> tuple[nn.Module, int]:
        if k < branch_point:  # trunk: torchvision's own blocks
            module = nn.Sequential(*net.features[starts[k - 1] : starts[k]])
            return module, net.features[starts[k] - 1].out_channels
        return mobilenet_stage(k, cin, w)

    def head(channels: int) -> nn.Module:
        linear = nn.Linear(channels, num_classes)
        nn.init.normal_(linear.weight, 0, 0.01)
        nn.init.zeros_(linear.bias)
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(0.2), linear)

    model = imagenet_style(
        net.features[0],
        FeatureInfo("stem", net.features[0].out_channels, 1 if small else 2),
        stage,
        MOBILENET_REDUCTION,
        branches=branches,
        branch_point=branch_point,
        base_width=width,
        widths=widths,
        head=head,
        num_classes=num_classes,
        gate=gate,
    )
    model.source_names = mobilenet_source_names(branch_point)  # type: ignore[attr-defined]
    return model


def resnet_source_names(branch_point: int) -> dict[str, str]:
    """onedge plain-network prefixes -> torchvision's ResNet-18 names (for ``model.init``)."""
    names = {"trunk.0.0": "conv1", "trunk.0.1": "bn1", "head.2": "fc"}
    for k in range(1, 5):
        part = f"trunk.{k}" if k < branch_point else f"body.{k - branch_point}"
        names[part] = f"layer{k}"
    return names


def mobilenet_source_names(branch_point: int) -> dict[str, str]:
    """onedge plain-network prefixes -> torchvision's MobileNetV2 names (for ``model.init``)."""
    names = {"trunk.0": "features.0", "head.3": "classifier.1"}
    starts = MOBILENET_STAGE_STARTS
    for k in range(1, 5):
        part = f"trunk.{k}" if k < branch_point else f"body.{k - branch_point}"
        for i, index in enumerate(range(starts[k - 1], starts[k])):
            names[f"{part}.{i}"] = f"features.{index}"
    return names
