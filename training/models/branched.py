"""The shape every branched family here shares: one trunk, m branches, one gate.

A model is split into a shared ``trunk``, one ``body`` per branch (the later stages, each an
independently initialised copy) and one ``head`` per branch (global average pool, flatten,
classifier). The gate reads the trunk's output and weighs the branches per sample.

The trunk and every body are ``nn.Sequential``s with one child per stage (stem, stage 1, ...);
each child's output is a tap named by its :class:`FeatureInfo`, so one loop serves every family.
Bodies may differ in width (the student ensemble's family): ``widths[k]`` records branch k's
multiplier relative to the trunk.

``extract(k)`` returns a :class:`BranchNetwork`: deep copies of the trunk, body ``k`` and head
``k`` chained one after the other, with no gate and no branch lists, so its logits equal branch
``k``'s logits (eval mode) and it exports to ONNX as a plain feed-forward graph.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from onedge.errors import ConfigError
from training.models.base import BranchOutputs, FeatureInfo, MultiBranchModel, gated_ensemble


def check_dimensions(
    *, num_classes: int, in_channels: int, image_size: int, branches: int, width: float
) -> None:
    """Raise :class:`ConfigError` for sizes no model can be built with."""
    for name, value in (
        ("num_classes", num_classes),
        ("in_channels", in_channels),
        ("image_size", image_size),
        ("branches", branches),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if not width > 0:
        raise ConfigError(f"width must be positive, got {width!r}")


def scaled(channels: int, width: float) -> int:
    """Channels times the width multiplier, rounded to an integer of at least 1."""
    return max(1, int(round(channels * width)))


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions (fan out, ReLU), batch norms at weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def classifier_head(in_features: int, num_classes: int) -> nn.Sequential:
    """Global average pool -> flatten -> linear."""
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(in_features, num_classes)
    )


class BranchGate(nn.Module):
    """Per-sample branch weights: GAP -> Linear(C, m) -> BatchNorm1d(m) -> ReLU -> softmax."""

    def __init__(self, channels: int, branches: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, branches)
        self.bn = nn.BatchNorm1d(branches)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.relu(self.bn(self.fc(torch.flatten(self.pool(x), 1))))
        return torch.softmax(scores, dim=1)


class BranchNetwork(nn.Module):
    """One deployable path: ``head(body(trunk(x)))`` -> logits (N, C)."""

    def __init__(self, trunk: nn.Module, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.trunk(x)))


def run_stages(
    stages: nn.Sequential,
    infos: Sequence[FeatureInfo],
    x: torch.Tensor,
    wanted: set[str],
    found: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Run ``stages`` child by child, keeping the outputs whose tap is in ``wanted``."""
    for stage, info in zip(stages, infos, strict=True):
        x = stage(x)
        if info.name in wanted:
            found[info.name] = x
    return x


class TrunkBranchModel(MultiBranchModel):
    """A shared trunk, per-branch bodies and heads, and a gate on the trunk's output.

    With ``gate=False`` or a single branch there is no gate module and the weights are uniform.
    ``trunk_info`` names the trunk's stages, ``body_info[k]`` the stages of body ``k``; together
    they are branch k's ``feature_info``.
    """

    def __init__(
        self,
        trunk: nn.Sequential,
        bodies: list[nn.Sequential],
        heads: list[nn.Module],
        *,
        trunk_info: list[FeatureInfo],
        body_info: list[list[FeatureInfo]],
        num_classes: int,
        gate: bool,
        widths: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not bodies or len(bodies) != len(heads) or len(body_info) != len(bodies):
            raise ConfigError(
                f"a branched model needs as many heads and body tap lists as bodies (at least "
                f"one); got {len(bodies)} bodies, {len(heads)} heads, {len(body_info)} tap lists"
            )
        if not trunk_info or len(trunk_info) != len(trunk):
            raise ConfigError(
                f"the trunk has {len(trunk)} stage(s) but {len(trunk_info)} tap(s) describe it"
            )
        for k, (body, infos) in enumerate(zip(bodies, body_info, strict=True)):
            if len(infos) != len(body):
                raise ConfigError(
                    f"body {k} has {len(body)} stage(s) but {len(infos)} tap(s) describe it"
                )
        self.num_branches = len(bodies)
        self.num_classes = num_classes
        self.widths = [1.0] * self.num_branches if widths is None else [float(w) for w in widths]
        if len(self.widths) != self.num_branches:
            raise ConfigError(f"{len(self.widths)} widths given for {self.num_branches} branches")
        self.feature_info = [list(trunk_info) + list(infos) for infos in body_info]
        self.trunk_info = list(trunk_info)
        self.shared_taps = [info.name for info in trunk_info]
        self.body_info = [list(infos) for infos in body_info]
        self.trunk = trunk
        self.bodies = nn.ModuleList(bodies)
        self.heads = nn.ModuleList(heads)
        self.gate = (
            BranchGate(trunk_info[-1].channels, self.num_branches)
            if gate and self.num_branches > 1
            else None
        )

    def forward(self, x: torch.Tensor, taps: Sequence[str] = ()) -> BranchOutputs:
        wanted = self.check_taps(taps)
        shared_found: dict[str, torch.Tensor] = {}
        shared = run_stages(self.trunk, self.trunk_info, x, wanted, shared_found)
        features = {name: [t] * self.num_branches for name, t in shared_found.items()}
        branch_logits = []
        for body, head, infos in zip(self.bodies, self.heads, self.body_info, strict=True):
            found: dict[str, torch.Tensor] = {}
            branch_logits.append(head(run_stages(body, infos, shared, wanted, found)))
            for name, t in found.items():
                features.setdefault(name, []).append(t)
        if self.gate is None:
            weights = shared.new_full((shared.shape[0], self.num_branches), 1.0 / self.num_branches)
        else:
            weights = self.gate(shared)
        return BranchOutputs(
            branch_logits=branch_logits,
            gate_weights=weights,
            ensemble_logits=gated_ensemble(branch_logits, weights),
            features=features,
        )

    def extract(self, branch: int) -> BranchNetwork:
        self.check_branch(branch)
        network = BranchNetwork(
            copy.deepcopy(self.trunk),
            copy.deepcopy(self.bodies[branch]),
            copy.deepcopy(self.heads[branch]),
        )
        network.train(self.training)
        return network
