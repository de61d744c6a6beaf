"""The contract every multi-branch model honours (docs/DESIGN.md rule 5).

``forward(x) -> BranchOutputs`` and ``extract(branch) -> nn.Module``: a plain single-path
network whose logits equal that branch's logits in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from training.errors import ConfigError


@dataclass
class BranchOutputs:
    """What a multi-branch forward pass returns.

    branch_logits: one (N, C) tensor per branch.
    gate_weights: (N, m) weights over branches (rows sum to 1); uniform where no gate exists.
    ensemble_logits: (N, C) = sum_i gate_weights[:, i] * branch_logits[i].
    features: optional per-branch feature maps or stage outputs, by name.
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
    """Base class: subclasses implement ``forward`` and ``extract``."""

    num_branches: int
    num_classes: int

    def forward(self, x: torch.Tensor) -> BranchOutputs:  # pragma: no cover - abstract
        raise NotImplementedError

    def extract(self, branch: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_branch(self, branch: int) -> None:
        if not 0 <= branch < self.num_branches:
            raise ConfigError(
                f"branch {branch} is out of range: the model has {self.num_branches} "
                f"branch(es), 0..{self.num_branches - 1}"
            )
