"""Training curves as one PNG: losses, per-branch and ensemble accuracy, mean gate weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_curves(history: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    loss_keys = [
        k
        for k in (history[0] if history else {})
        if k.startswith("train_") and k != "train_distill_weight"
    ]
    for key in loss_keys:
        ax.plot(epochs, [h[key] for h in history], label=key.removeprefix("train_"))
    if history and "val_loss" in history[0]:
        ax.plot(epochs, [h["val_loss"] for h in history], "--", label="val loss (ensemble)")
    ax.set(title="losses", xlabel="epoch", yscale="log")
    ax.legend(fontsize=8)

    ax = axes[1]
    branches = len(history[0]["val_branch_top1"]) if history else 0
    for b in range(branches):
        ax.plot(epochs, [100 * h["val_branch_top1"][b] for h in history], label=f"branch {b}")
    if history:
        ax.plot(
            epochs, [100 * h["val_ensemble_top1"] for h in history], "k-", lw=2, label="ensemble"
        )
    ax.set(title="validation top-1 (%)", xlabel="epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[2]
    for b in range(branches):
        ax.plot(epochs, [h["gate_mean"][b] for h in history], label=f"branch {b}")
    if history and "train_distill_weight" in history[0]:
        ax.plot(
            epochs, [h["train_distill_weight"] for h in history], "k--", label="distillation w(t)"
        )
    ax.set(title="mean gate weight and w(t) (train)", xlabel="epoch", ylim=(0, 1.05))
    ax.legend(fontsize=8)

    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
