"""One stage's working parts and one training epoch over them.

:class:`StageRun` is what :func:`training.trainer.build_stage` puts together once per stage (the
network, the method, the optimiser, the loaders, ...); :func:`train_one_epoch` is the loop over
the batches of one epoch, split from the stage's set-up, validation and finish the way timm
splits ``train_one_epoch`` from ``validate``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from training.config import TrainingConfig
from training.errors import TrainingError
from training.methods import TrainedModules
from training.models.base import MultiBranchModel


@dataclass
class StageRun:
    """Everything one stage trains with, built once (:func:`training.trainer.build_stage`)."""

    config: TrainingConfig
    device: torch.device
    ddp: Any  # training.trainer.Distributed
    splits: Any  # training.data splits: train, val, test and their spec
    method: Any  # the registered Method
    model: MultiBranchModel
    auxiliaries: torch.nn.ModuleDict
    trained: TrainedModules
    train_model: torch.nn.Module  # ``trained``, wrapped for DDP and compiled where asked
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    use_amp: bool
    amp_dtype: torch.dtype
    memory_format: torch.memory_format
    teacher_sha: list[str]
    loader: Any
    val_loader: Any


def train_one_epoch(run: StageRun, epoch: int) -> dict[str, Any]:
    """Train ``run`` for epoch ``epoch`` (0-based); its record: lr, seconds, throughput, mean
    training losses and gate weights. The learning rate steps once at the end."""
    t, device = run.config.train, run.device
    run.loader.set_epoch(epoch)
    run.trained.train()
    # running sums stay on the device: the host waits for the GPU only every log_every steps
    sums: dict[str, torch.Tensor] = {}
    gate_sum = torch.zeros(run.model.num_branches, device=device)
    seen, started = 0, time.perf_counter()
    bar = tqdm(
        run.loader,
        desc=f"epoch {epoch + 1}/{t.epochs}",
        disable=None if (t.progress and run.ddp.main) else True,  # None: only on a terminal
        leave=False,
        dynamic_ncols=True,
    )
    last = len(run.loader) - 1
    for step, (x, y) in enumerate(bar):
        x = x.to(device, non_blocking=True, memory_format=run.memory_format)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.use_amp):
            outputs = run.train_model(x, run.method.taps)
            loss, parts = run.method.loss(outputs, x, y, epoch + step / len(run.loader))
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        n = y.shape[0]
        seen += n
        for key, value in {"loss": loss, **parts}.items():
            term = value.detach().float() * n
            sums[key] = sums[key] + term if key in sums else term
        gate_sum += outputs.gate_weights.detach().float().sum(dim=0)
        if step % t.log_every == 0 or step == last:  # the only host syncs of the loop
            check_finite(loss, run.optimizer, epoch, step, t.log_every)
            bar.set_postfix(loss=f"{float(sums['loss']) / seen:.3f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "seconds": seconds,
        "images_per_second": seen * run.ddp.world_size / seconds,
        **{f"train_{k}": float(v) / max(seen, 1) for k, v in sums.items()},
        "gate_mean": (gate_sum / max(seen, 1)).tolist(),
    }


def check_finite(loss: torch.Tensor, optimizer: Any, epoch: int, step: int, every: int) -> None:
    """Stop when the loss is NaN or infinite (checked every ``every`` steps: a host sync)."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingError(
            f"loss became {value} by epoch {epoch + 1}, step {step + 1} (checked every {every} "
            f"steps); lower train.lr (now {optimizer.param_groups[0]['lr']:.4g}) or check the data"
        )


def format_epoch(record: dict[str, Any]) -> str:
    branches = " ".join(f"{a:.3f}" for a in record["val_branch_top1"])
    return (
        f"epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  lr {record['lr']:.4f}  "
        f"val top-1 branches [{branches}]  ensemble {record['val_ensemble_top1']:.3f}  "
        f"{record['seconds']:.1f}s ({record['images_per_second']:.0f} img/s)"
    )
