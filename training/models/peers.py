"""Independent peers seen through the multi-branch contract.

DML and plain ensembles train m separate networks. :class:`PeerEnsemble` wraps m single-branch
models so methods and exporters treat them like any branched model: branch i is member i,
the gate weights are uniform and the ensemble is the mean of the members' logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from onedge.errors import ConfigError
from training.models.base import BranchOutputs, MultiBranchModel, gated_ensemble


class PeerEnsemble(MultiBranchModel):
    """m independent single-branch networks sharing nothing.

    ``feature_info[i]`` is member i's; ``features[tap][i]`` is member i's map at ``tap``.
    """

    def __init__(self, members: list[MultiBranchModel]) -> None:
        super().__init__()
        if not members:
            raise ConfigError("a peer ensemble needs at least one member")
        multi = [i for i, m in enumerate(members) if m.num_branches != 1]
        if multi:
            raise ConfigError(
                f"peer ensemble members must have one branch each; members {multi} do not"
            )
        classes = {m.num_classes for m in members}
        if len(classes) != 1:
            raise ConfigError(
                f"peer ensemble members disagree on the number of classes: {sorted(classes)}"
            )
        self.members = nn.ModuleList(members)
        self.num_branches = len(members)
        self.num_classes = classes.pop()
        self.feature_info = [m.feature_info[0] for m in members]
        self.widths = [m.widths[0] for m in members]
        self.shared_taps = []  # peers share nothing

    def forward(self, x: torch.Tensor, taps: Sequence[str] = ()) -> BranchOutputs:
        self.check_taps(taps)
        outputs = [member(x, taps) for member in self.members]
        branch_logits = [out.branch_logits[0] for out in outputs]
        weights = x.new_full((x.shape[0], self.num_branches), 1.0 / self.num_branches)
        features: dict[str, list[torch.Tensor]] = {}
        for out in outputs:
            for name, tensors in out.features.items():
                features.setdefault(name, []).extend(tensors)
        return BranchOutputs(
            branch_logits=branch_logits,
            gate_weights=weights,
            ensemble_logits=gated_ensemble(branch_logits, weights),
            features=features,
        )

    def extract(self, branch: int) -> nn.Module:
        self.check_branch(branch)
        return self.members[branch].extract(0)
