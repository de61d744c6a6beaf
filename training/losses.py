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


def block_feature_loss(
    adapted: torch.Tensor, teacher_map: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """mean((adapt(F_s) - F_t)^2): a student block's adapted map against the teacher block's.

    ``adapted`` is the student block's output after its 1x1 adapter (same shape as
    ``teacher_map``, which is detached here). Returns the loss and its part ``mse``.
    """
    if adapted.shape != teacher_map.shape:
        raise ValueError(
            f"adapted map {tuple(adapted.shape)} != teacher map {tuple(teacher_map.shape)}"
        )
    mse = F.mse_loss(adapted, teacher_map.detach())
    return mse, {"mse": mse}


def student_ensemble_loss(
    branch_logits: list[torch.Tensor],
    adapted: list[list[torch.Tensor]],
    reference: list[torch.Tensor],
    targets: torch.Tensor,
    *,
    a: float = 0.7,
    b: float = 0.15,
    c: float = 0.15,
    T: float = 2.0,
    student_ce: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """a*CE(z_t, y) + b*sum_s sum_{j>=1} MSE(adapt_j(F_sj), F_s0.detach()) + c*sum_{j>=1} T^2*KL(softmax(z_t/T) || softmax(z_j/T)) [+ sum_j CE(z_j, y)], z_t = mean_j z_j.

    ``adapted[s][j-1]`` is student j's map at stage s after its 1x1 adapter, ``reference[s]``
    student 0's map there (detached here). The teacher z_t is detached inside the KL terms, so
    the students learn from the labels only through CE(z_t, y) (and the optional per-student CE).
    Returns the total and its parts (``ce_teacher``, ``mse``, ``kl``, ``ce_branches``).
    """
    teacher = torch.stack(branch_logits, dim=0).mean(dim=0)
    ce_teacher = F.cross_entropy(teacher, targets)
    mse = teacher.new_zeros(())
    for maps, ref in zip(adapted, reference, strict=True):
        for fmap in maps:
            mse = mse + F.mse_loss(fmap, ref.detach())
    kl = teacher.new_zeros(())
    for z in branch_logits[1:]:
        kl = kl + kd_kl(z, teacher, T)
    ce_branches = sum(F.cross_entropy(z, targets) for z in branch_logits)
    total = a * ce_teacher + b * mse + c * kl + (ce_branches if student_ce else 0.0)
    return total, {"ce_teacher": ce_teacher, "mse": mse, "kl": kl, "ce_branches": ce_branches}


def srm_sparse_codes(x: torch.Tensor, C: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """s = topk_k(sigmoid(C^T x + b)) per pixel: x (N, D, H, W), C (D, K), b (K,) -> s (N, K, H, W).

    Entries outside the k largest at each position are zero (SRM's sparse code).
    """
    scores = torch.sigmoid(torch.einsum("ndhw,dk->nkhw", x, C) + b.view(1, -1, 1, 1))
    keep = scores.topk(k, dim=1).indices
    mask = torch.zeros_like(scores).scatter_(1, keep, 1.0)
    return scores * mask


def srm_reconstruction_loss(
    x: torch.Tensor, C: torch.Tensor, b: torch.Tensor, k: int
) -> torch.Tensor:
    """mean((x - C s)^2), s = srm_sparse_codes(x, C, b, k): the dictionary stage's objective."""
    s = srm_sparse_codes(x, C, b, k)
    x_hat = torch.einsum("dk,nkhw->ndhw", C, s)
    return F.mse_loss(x_hat, x)


def srm_labels(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pixel = argmax_k s[:, k, h, w] (N, H, W); image = mean_hw s (N, K): SRM's two label kinds."""
    return codes.argmax(dim=1), codes.mean(dim=(2, 3))


def srm_init_loss(
    scores: torch.Tensor, pixel_labels: torch.Tensor, image_labels: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BCE(mean_hw sigmoid(z), image) + CE(z[:, :, h, w], pixel) averaged over pixels; z (N, K, H, W).

    ``scores`` are a student head's logits at the teacher map's resolution; the labels come from
    the teacher's sparse codes (:func:`srm_labels`) and are constants.
    """
    image = F.binary_cross_entropy(
        torch.sigmoid(scores).mean(dim=(2, 3)).clamp(1e-6, 1 - 1e-6), image_labels.detach()
    )
    pixel = F.cross_entropy(scores, pixel_labels.detach())
    return image + pixel, {"bce_image": image.detach(), "ce_pixel": pixel.detach()}


def pool_to_length(features: torch.Tensor, length: int) -> torch.Tensor:
    """v = avgpool1d_L(mean_hw f): a (N, C, H, W) map to an (N, L) vector of a common length L."""
    vector = features.float().mean(dim=(2, 3))
    return F.adaptive_avg_pool1d(vector.unsqueeze(1), length).squeeze(1)


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """-sum_j softmax(t)_j log softmax(s)_j, batch mean; the teacher is detached (MEAL's match)."""
    target = F.softmax(teacher.detach(), dim=1)
    return -(target * F.log_softmax(student, dim=1)).sum(dim=1).mean()


def discriminator_loss(on_teacher: torch.Tensor, on_student: torch.Tensor) -> torch.Tensor:
    """BCE(D(t), 1) + BCE(D(s), 0) on the discriminator's logits: it tells teacher from student."""
    return F.binary_cross_entropy_with_logits(
        on_teacher, torch.ones_like(on_teacher)
    ) + F.binary_cross_entropy_with_logits(on_student, torch.zeros_like(on_student))


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """y = x forward, dL/dx = -scale * dL/dy backward (gradient reversal: a min-max in one step)."""
    return _ReverseGradient.apply(x, scale)
