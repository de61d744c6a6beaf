"""Accuracy of every branch and of the ensemble on a loader."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from training.models.base import MultiBranchModel


@torch.no_grad()
def evaluate(
    model: MultiBranchModel,
    loader: Iterable,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
    predictions: bool = False,
) -> dict:
    """Top-1 of each branch and of the gated ensemble, ensemble loss, mean gate weights.

    With ``predictions``, also the per-image labels and predicted classes (``labels``,
    ``branch_predictions`` per branch, ``ensemble_predictions``), in loader order, for paired
    statistics on the same images.
    """
    was_training = model.training
    model.eval()
    correct = None
    ens_correct, total, loss_sum = 0, 0, 0.0
    gate_sum = None
    labels: list[torch.Tensor] = []
    branch_preds: list[torch.Tensor] = []
    ensemble_preds: list[torch.Tensor] = []
    for x, y in loader:
        x = x.to(device, memory_format=memory_format)
        y = y.to(device)
        out = model(x)
        hits = torch.stack([(z.argmax(1) == y).sum() for z in out.branch_logits])
        correct = hits if correct is None else correct + hits
        ens_correct += int((out.ensemble_logits.argmax(1) == y).sum())
        loss_sum += float(F.cross_entropy(out.ensemble_logits.float(), y, reduction="sum"))
        g = out.gate_weights.float().sum(0)
        gate_sum = g if gate_sum is None else gate_sum + g
        total += y.shape[0]
        if predictions:
            labels.append(y.cpu())
            branch_preds.append(torch.stack([z.argmax(1) for z in out.branch_logits]).cpu())
            ensemble_preds.append(out.ensemble_logits.argmax(1).cpu())
    model.train(was_training)
    if total == 0:
        return {"branch_top1": [], "ensemble_top1": 0.0, "loss": 0.0, "images": 0}
    result = {
        "branch_top1": (correct.float() / total).tolist(),
        "ensemble_top1": ens_correct / total,
        "loss": loss_sum / total,
        "gate_mean": (gate_sum / total).tolist(),
        "images": total,
    }
    if predictions:
        result["labels"] = torch.cat(labels).tolist()
        result["branch_predictions"] = torch.cat(branch_preds, dim=1).tolist()
        result["ensemble_predictions"] = torch.cat(ensemble_preds).tolist()
    return result
