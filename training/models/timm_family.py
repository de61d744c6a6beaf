"""Convolutional networks from timm (built untrained), split into trunk and branches.

``model.name: timm/<architecture>`` builds ``timm.create_model(architecture, pretrained=False)``
(no network is ever reached: weights come from ``model.init``) and cuts it where timm's own
``feature_info`` says each stage ends. The network's children, in registration order with the
first level of ``nn.Sequential``s flattened (how timm's ``features_only`` wrapper walks them),
are grouped so that stage ``i`` ends at ``feature_info[i]``'s module:

    stage 0   ``stem``      up to feature_info[0]   (e.g. conv_stem, bn1, blocks.0)
    stage k   ``stage<k>``  up to feature_info[k]   (k = 1 .. n-1; n = 5 for the listed ones)
    head                    everything after the last stage (conv_head, pooling, classifier)

``branch_point`` b in 1..n-1 puts stage b onwards and the head into every branch; the stem and
stages 1..b-1 form the shared trunk, whose output the gate reads. Each branch's stages come from
a separately built timm network, so the branches start from different fresh weights (and all
from the same pretrained ones under ``model.init``). ``extract(k)`` chains deep copies of the
trunk, body k and head k, a plain feed-forward network.

Taps: ``stem``, ``stage1`` .. ``stage<n-1>``, with feature_info's channels and reductions.
Small inputs: below 64 pixels a side, the first convolution's stride becomes 1 when it is a
"same"-padded odd kernel at stride 2 (its kernel and weights stay, so pretrained weights still
load) and every reduction halves; a patchify stem (ConvNeXt) keeps its stride, and a stem the rule
does not fit (RepVGG's, MobileOne's parallel branches) is refused with image_size >= 64 advised. Width: 1.0 only,
one width for every branch: timm's own variants carry the width in the name
(``mobilenetv3_small_075``), so a family of students of several widths is refused here.

Architectures are listed in :data:`TIMM_ARCHITECTURES` (and tested through the registry);
``timm/<other>`` builds any timm CNN whose ``feature_info`` names top-level or first-level
modules and whose children run in order (checked by ``tests/training/test_timm_family.py``).
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from onedge.errors import ConfigError
from training.models.base import FeatureInfo
from training.models.branched import TrunkBranchModel
from training.models.build import MODEL_PREFIXES, MODELS

PREFIX = "timm/"
SMALL_INPUT = 64  # below this many pixels a side, the first convolution keeps full resolution
TIMM_ARCHITECTURES = (
    "mobilenetv3_small_100",
    "mobilenetv3_large_100",
    "efficientnet_lite0",
    "efficientnet_b0",
    "regnetx_002",
    "resnet18d",
)
# further architectures that build, split and extract exactly (tests/training/test_timm_family.py)
TIMM_ALSO_WORKING = (
    "mobilenetv2_100",
    "mobilenetv4_conv_small",
    "mnasnet_100",
    "efficientnet_lite1",
    "efficientnet_b1",
    "tf_efficientnet_lite0",
    "tinynet_a",
    "ghostnet_100",
    "lcnet_100",
    "fbnetc_100",
    "mixnet_s",
    "hardcorenas_a",
    "rexnet_100",
    "regnety_002",
    "resnet18",
    "resnet34d",
    "resnet50d",
    "cspresnet50",
    "densenet121",
    "dla34",
    "convnext_atto",
)


def import_timm():
    try:
        import timm
    except ImportError:  # pragma: no cover - timm is a dependency
        raise ConfigError("timm is not installed: pip install 'timm>=1.0,<2'") from None
    return timm


def create_timm(architecture: str, num_classes: int, in_channels: int) -> nn.Module:
    """timm's untrained network (unknown name: ConfigError naming the closest ones)."""
    timm = import_timm()
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"timm has no architecture {architecture!r}{hint}")
    try:
        return timm.create_model(
            architecture, pretrained=False, num_classes=num_classes, in_chans=in_channels
        )
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"timm cannot build {architecture!r}: {exc}") from None


def keep_full_resolution(net: nn.Module) -> int:
    """The small-input rule: the first convolution's stride becomes 1 (kernel and weights kept).

    Only a "same"-padded odd kernel (3x3 stride 2) is changed; a patchify stem (ConvNeXt's 4x4
    stride 4) keeps its stride. Returns the factor by which the network's reductions shrink.
    """
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None or conv.stride == (1, 1):
        return 1
    k, stride = conv.kernel_size[0], conv.stride[0]
    if k % 2 == 0 or conv.padding not in ((k // 2, k // 2), "same") or stride != 2:
        return 1
    conv.stride = (1, 1)
    return 2


def check_stem(stem: nn.Module, in_channels: int, architecture: str) -> None:
    """Run the stem once on a tiny input: a rule that does not fit it fails here, clearly."""
    was = stem.training
    try:
        with torch.no_grad():
            stem.eval()(torch.zeros(1, in_channels, 16, 16))
    except RuntimeError as exc:
        raise ConfigError(
            f"timm/{architecture}: its stem does not take the small-input rule (first convolution "
            f"at stride 1): {str(exc).splitlines()[0][:120]}; use data.image_size >= {SMALL_INPUT}"
        ) from None
    finally:
        stem.train(was)


def split_points(
    net: nn.Module, architecture: str
) -> tuple[list[tuple[str, str, nn.Module]], list[int]]:
    """The flattened children (flat name, dotted name, module) and where each stage ends."""
    children: list[tuple[str, str, nn.Module]] = []
    for name, module in net.named_children():
        if isinstance(module, nn.Sequential):
            for child, sub in module.named_children():
                children.append((f"{name}_{child}", f"{name}.{child}", sub))
        else:
            children.append((name, name, module))
    dotted = [d for _, d, _ in children]
    infos = list(getattr(net, "feature_info", None) or [])
    ends = []
    for info in infos:
        module = info.get("module", "") if isinstance(info, dict) else ""
        inside = [i for i, d in enumerate(dotted) if d.startswith(f"{module}.")]
        if module not in dotted and inside:  # a flattened Sequential: the stage ends with it
            ends.append(inside[-1])
            continue
        if module not in dotted:
            raise ConfigError(
                f"timm/{architecture}: its feature_info names {module!r}, not a module onedge "
                "can split at (top-level or first-level children); pick another architecture"
            )
        ends.append(dotted.index(module))
    if len(ends) < 2 or ends != sorted(set(ends)):
        raise ConfigError(
            f"timm/{architecture}: feature_info describes {len(ends)} stage(s) in no usable "
            "order; onedge needs a stem and at least one later stage"
        )
    return children, ends


def grouped(children: Sequence[tuple[str, str, nn.Module]]) -> nn.Sequential:
    return nn.Sequential(OrderedDict((flat, module) for flat, _, module in children))


class TimmSplit:
    """One timm network cut into stages and a head, with the source name of every part."""

    def __init__(self, architecture: str, num_classes: int, in_channels: int, small: bool):
        net = create_timm(architecture, num_classes, in_channels)
        factor = keep_full_resolution(net) if small else 1
        children, ends = split_points(net, architecture)
        starts = [0] + [e + 1 for e in ends[:-1]]
        self.stages = [grouped(children[s : e + 1]) for s, e in zip(starts, ends, strict=True)]
        self.head = grouped(children[ends[-1] + 1 :])
        self.stage_sources = [
            {flat: dot for flat, dot, _ in children[s : e + 1]}
            for s, e in zip(starts, ends, strict=True)
        ]
        self.head_sources = {flat: dot for flat, dot, _ in children[ends[-1] + 1 :]}
        if factor != 1:
            check_stem(self.stages[0], in_channels, architecture)
        self.infos = [
            FeatureInfo(
                "stem" if i == 0 else f"stage{i}",
                int(info["num_chs"]),
                max(1, int(info["reduction"]) // factor),
            )
            for i, info in enumerate(net.feature_info)
        ]


def source_names(split: TimmSplit, branch_point: int) -> dict[str, str]:
    """Plain-network prefix (trunk.i.x / body.j.x / head.x) -> the timm module it came from."""
    names: dict[str, str] = {}
    for i, sources in enumerate(split.stage_sources):
        part = f"trunk.{i}" if i < branch_point else f"body.{i - branch_point}"
        names.update({f"{part}.{flat}": dot for flat, dot in sources.items()})
    names.update({f"head.{flat}": dot for flat, dot in split.head_sources.items()})
    return names


def timm_model(
    architecture: str,
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
    """timm's ``architecture`` with stage ``branch_point`` onwards (and the head) per branch."""
    if width != 1.0 or (widths is not None and any(w != 1.0 for w in widths)):
        raise ConfigError(
            f"timm/{architecture} takes width 1.0 only, one width for every branch (a family of "
            "students of several widths is not supported for timm networks); timm's own "
            "variants carry their width in the name, e.g. mobilenetv3_small_075"
        )
    small = image_size < SMALL_INPUT
    splits = [TimmSplit(architecture, num_classes, in_channels, small) for _ in range(branches)]
    first = splits[0]
    stages = len(first.stages)
    if not 1 <= branch_point < stages:
        raise ConfigError(
            f"timm/{architecture} has a stem and stages 1..{stages - 1}; branch_point must be "
            f"in 1..{stages - 1}, got {branch_point}"
        )
    model = TrunkBranchModel(
        nn.Sequential(*first.stages[:branch_point]),
        [nn.Sequential(*s.stages[branch_point:]) for s in splits],
        [s.head for s in splits],
        trunk_info=first.infos[:branch_point],
        body_info=[s.infos[branch_point:] for s in splits],
        num_classes=num_classes,
        gate=gate,
    )
    model.source_names = source_names(first, branch_point)  # type: ignore[attr-defined]
    model.source_format = f"timm/{architecture}"  # type: ignore[attr-defined]
    return model


def timm_factory(architecture: str):
    """The registry's factory for ``timm/<architecture>``."""

    def factory(**shape) -> TrunkBranchModel:
        return timm_model(architecture, **shape)

    factory.__name__ = f"timm_{architecture}"
    factory.__doc__ = f"timm's {architecture} (untrained), split at branch_point."
    return factory


def timm_reference(architecture: str, num_classes: int, in_channels: int, image_size: int):
    """timm's plain network as onedge builds it (small-input rule included), for comparison."""
    net = create_timm(architecture, num_classes, in_channels)
    if image_size < SMALL_INPUT:
        keep_full_resolution(net)
    return net


for _architecture in TIMM_ARCHITECTURES:
    MODELS.add(PREFIX + _architecture, timm_factory(_architecture))
MODEL_PREFIXES.add(PREFIX, timm_factory)  # any other timm/<architecture>
