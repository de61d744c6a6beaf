"""The shape every branched family here shares: one trunk, m branches, one gate.

A model is split into a shared ``trunk``, one ``body`` per branch (the later stages, each an
independently initialised copy) and one ``head`` per branch (global average pool, flatten,
classifier). The gate reads the trunk's output and weighs the branches per sample.

``extract(k)`` returns a :class:`BranchNetwork`: deep copies of the trunk, body ``k`` and head
``k`` chained one after the other, with no gate and no branch lists, so its logits equal branch
``k``'s logits (eval mode) and it exports to ONNX as a plain feed-forward graph.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from training.errors import ConfigError
from training.models.base import BranchOutputs, MultiBranchModel, gated_ensemble


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


class TrunkBranchModel(MultiBranchModel):
    """A shared trunk, per-branch bodies and heads, and a gate on the trunk's output.

    With ``gate=False`` or a single branch there is no gate module and the weights are uniform.
    ``features["shared"]`` holds the trunk output and ``features["branch"]`` each body's output
    before pooling: tensors the forward pass computes anyway.
    """

    def __init__(
        self,
        trunk: nn.Module,
        bodies: list[nn.Module],
        heads: list[nn.Module],
        *,
        trunk_channels: int,
        num_classes: int,
        gate: bool,
    ) -> None:
        super().__init__()
        if not bodies or len(bodies) != len(heads):
            raise ConfigError(
                f"a branched model needs as many heads as bodies (at least one); "
                f"got {len(bodies)} bodies and {len(heads)} heads"
            )
        self.num_branches = len(bodies)
        self.num_classes = num_classes
        self.trunk = trunk
        self.bodies = nn.ModuleList(bodies)
        self.heads = nn.ModuleList(heads)
        self.gate = (
            BranchGate(trunk_channels, self.num_branches)
            if gate and self.num_branches > 1
            else None
        )

    def forward(self, x: torch.Tensor) -> BranchOutputs:
        shared = self.trunk(x)
        branch_features = [body(shared) for body in self.bodies]
        branch_logits = [head(f) for head, f in zip(self.heads, branch_features, strict=True)]
        if self.gate is None:
            weights = shared.new_full((shared.shape[0], self.num_branches), 1.0 / self.num_branches)
        else:
            weights = self.gate(shared)
        return BranchOutputs(
            branch_logits=branch_logits,
            gate_weights=weights,
            ensemble_logits=gated_ensemble(branch_logits, weights),
            features={"shared": [shared], "branch": branch_features},
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
