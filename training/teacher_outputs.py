"""What a frozen teacher gives a method's loss: its mean logits, its maps at named taps.

Pure tensor functions on loaded teachers (:func:`training.teachers.load_teachers`), so the methods
use them without importing the loading side.
"""

from __future__ import annotations

from typing import Any

import torch


@torch.no_grad()
def mean_teacher_logits(teachers: list[torch.nn.Module], inputs: torch.Tensor) -> torch.Tensor:
    """z_t = (1/L) sum_l z_l: the average of the teachers' ensemble logits (one teacher: its own)."""
    return torch.stack([t(inputs).ensemble_logits for t in teachers]).mean(dim=0)


def teacher_maps(teacher: Any, inputs: torch.Tensor, taps: list[str]) -> dict[str, torch.Tensor]:
    """The teacher's maps at ``taps``, on its deployed branch (a shared tap is the same on all)."""
    with torch.no_grad():
        out = teacher.model(inputs, taps=tuple(taps))
    return {tap: out.features[tap][teacher.deployed_branch].float() for tap in taps}
