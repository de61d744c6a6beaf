"""The contract every multi-branch model honours (docs/DESIGN.md rule 5).

``forward(x, taps=()) -> BranchOutputs`` and ``extract(branch) -> nn.Module``: a plain
single-path network whose logits equal that branch's logits in eval mode.

Features go through typed taps (timm's ``feature_info``): ``feature_info[k]`` lists, for branch
``k``, the maps that branch can hand out as :class:`FeatureInfo` (name, channels, reduction), in
the order the forward pass computes them. ``forward(x, taps=("stage2", "stage3"))`` returns
``features[tap][k]`` for every requested tap and branch; a map computed once in the shared trunk
appears under every branch (the same tensor). Methods size their adapters from ``feature_info``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from onedge.errors import ConfigError


@dataclass(frozen=True)
class FeatureInfo:
    """One tap: its name, its channels and its reduction (input side / map side)."""

    name: str
    channels: int
    reduction: int


@dataclass
class BranchOutputs:
    """What a multi-branch forward pass returns.

    branch_logits: one (N, C) tensor per branch.
    gate_weights: (N, m) weights over branches (rows sum to 1); uniform where no gate exists.
    ensemble_logits: (N, C) = sum_i gate_weights[:, i] * branch_logits[i].
    features: the requested taps, ``features[tap][branch]`` -> (N, C, H, W); empty by default.
    """

    branch_logits: list[torch.Tensor]
    gate_weights: torch.Tensor
    ensemble_logits: torch.Tensor
    features: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    @property
    def num_branches(self) -> int:
        return len(self.branch_logits)


def gated_ensemble(branch_logits: list[torch.Tensor], gate_weights: torch.Tensor) -> torch.Tensor:
    """z_e = sum_i g_i * z_i over branches (weighted logits)."""
    stacked = torch.stack(branch_logits, dim=1)  # (N, m, C)
    return (gate_weights.unsqueeze(-1) * stacked).sum(dim=1)


class MultiBranchModel(nn.Module):
    """Base class: subclasses set ``feature_info`` and implement ``forward`` and ``extract``."""

    num_branches: int
    num_classes: int
    feature_info: list[list[FeatureInfo]]
    widths: list[float]  # per-branch width multiplier relative to the shared trunk
    shared_taps: list[str]  # taps computed once for all branches (the trunk's)

    def forward(
        self, x: torch.Tensor, taps: Sequence[str] = ()
    ) -> BranchOutputs:  # pragma: no cover - abstract
        raise NotImplementedError

    def tap_names(self) -> list[str]:
        """The taps every branch offers, in forward order."""
        return [info.name for info in self.feature_info[0]]

    def branch_taps(self) -> list[str]:
        """The taps each branch computes on its own (after the shared trunk), in forward order."""
        return [name for name in self.tap_names() if name not in self.shared_taps]

    def feature(self, tap: str, branch: int) -> FeatureInfo:
        """The :class:`FeatureInfo` of ``tap`` on ``branch`` (unknown tap: ConfigError)."""
        self.check_branch(branch)
        for info in self.feature_info[branch]:
            if info.name == tap:
                return info
        raise ConfigError(f"unknown tap {tap!r}; this model offers {', '.join(self.tap_names())}")

    def check_taps(self, taps: Sequence[str]) -> set[str]:
        """The requested taps as a set; an unknown name raises ConfigError listing the known."""
        if isinstance(taps, str):
            raise ConfigError(f"taps must be a list of names, got the string {taps!r}")
        known = self.tap_names()
        unknown = [t for t in taps if t not in known]
        if unknown:
            raise ConfigError(
                f"unknown tap(s) {', '.join(map(repr, unknown))}; "
                f"this model offers {', '.join(known)}"
            )
        return set(taps)

    def extract(self, branch: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_branch(self, branch: int) -> None:
        if not 0 <= branch < self.num_branches:
            raise ConfigError(
                f"branch {branch} is out of range: the model has {self.num_branches} "
                f"branch(es), 0..{self.num_branches - 1}"
            )
