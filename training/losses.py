"""Distillation losses as pure functions on tensors.

Each function states its formula in one docstring line; tests check them against golden values.
Logits are (N, C); ``targets`` are class indices (N,).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), batch mean; teacher is detached."""
    teacher = F.softmax(teacher_logits.detach() / T, dim=1)
    log_student = F.log_softmax(student_logits / T, dim=1)
    return F.kl_div(log_student, teacher, reduction="batchmean") * (T * T)


def rampup_weight(epoch: float, length: int = 80) -> float:
    """w(t) = exp(-5 (1 - min(t, L)/L)^2), the sigmoid-shaped ramp-up over L epochs."""
    phase = 1.0 - min(max(epoch, 0.0), length) / length
    return math.exp(-5.0 * phase * phase)


def one_loss(
    branch_logits: list[torch.Tensor],
    gate_weights: torch.Tensor,
    targets: torch.Tensor,
    T: float = 3.0,
    distill_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """sum_i CE(z_i, y) + CE(z_e, y) + w * T^2 * sum_i KL(softmax(z_e/T) || softmax(z_i/T)), z_e = sum_i g_i z_i.

    The teacher z_e is detached inside the KL terms: the gate learns only through CE(z_e, y).
    Returns the total and its parts (``ce_branches``, ``ce_ensemble``, ``kl``).
    """
    stacked = torch.stack(branch_logits, dim=1)  # (N, m, C)
    ensemble = (gate_weights.unsqueeze(-1) * stacked).sum(dim=1)
    ce_branches = sum(F.cross_entropy(z, targets) for z in branch_logits)
    ce_ensemble = F.cross_entropy(ensemble, targets)
    kl = sum(kd_kl(z, ensemble, T) for z in branch_logits)
    total = ce_branches + ce_ensemble + distill_weight * kl
    return total, {"ce_branches": ce_branches, "ce_ensemble": ce_ensemble, "kl": kl}


def dml_loss(
    branch_logits: list[torch.Tensor], targets: torch.Tensor, T: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """sum_i [CE(z_i, y) + 1/(m-1) * sum_{j!=i} T^2 * KL(softmax(z_j/T) || softmax(z_i/T))], peers detached as teachers."""
    m = len(branch_logits)
    ce = sum(F.cross_entropy(z, targets) for z in branch_logits)
    if m < 2:
        return ce, {"ce_branches": ce, "kl": torch.zeros_like(ce)}
    kl = sum(
        kd_kl(branch_logits[i], branch_logits[j], T) for i in range(m) for j in range(m) if i != j
    ) / (m - 1)
    return ce + kl, {"ce_branches": ce, "kl": kl}


def ensemble_ce_loss(
    branch_logits: list[torch.Tensor], targets: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """sum_i CE(z_i, y): independent members trained side by side."""
    ce = sum(F.cross_entropy(z, targets) for z in branch_logits)
    return ce, {"ce_branches": ce}


def hinton_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    T: float = 4.0,
    alpha: float = 0.9,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)."""
    ce = F.cross_entropy(student_logits, targets)
    kl = kd_kl(student_logits, teacher_logits, T)
    return alpha * kl + (1.0 - alpha) * ce, {"ce_branches": ce, "kl": kl}
