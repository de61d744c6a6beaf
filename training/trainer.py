"""The trainer: one loop for every method, single process or DDP under ``torchrun``.

Per epoch it trains, validates every branch and the ensemble, and writes an atomic checkpoint that
``resume`` continues from exactly. At the end it picks the deployed branch by validation top-1,
measures the test split and writes ``metrics.json``, ``history.json`` and ``curves.png``.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm.auto import tqdm

from onedge.errors import ConfigError
from onedge.files import atomic_write
from training.checkpoint import load_state, read_checkpoint, save_checkpoint
from training.config import TrainingConfig
from training.errors import CheckpointError, TrainingError
from training.evaluate import evaluate
from training.methods import TrainedModules, build_method

CHECKPOINT = "checkpoint.pt"
PREDICTIONS = "test_predictions.json"  # per-image test labels and predictions, for paired tests


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path
    metrics: dict[str, Any]


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available; use train.device=cpu")
    return device


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def lr_factor(cfg: TrainingConfig, epoch: int) -> float:
    """Learning-rate multiplier for ``epoch`` (0-based): linear warm-up, then the schedule."""
    t = cfg.train
    if epoch < t.warmup_epochs:
        return (epoch + 1) / (t.warmup_epochs + 1)
    if t.schedule == "cosine":
        span = max(1, t.epochs - t.warmup_epochs)
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - t.warmup_epochs) / span))
    if t.schedule == "step":
        return t.gamma ** sum(epoch >= m for m in t.milestones)
    return 1.0


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def compatible_for_resume(
    saved: dict[str, Any], config: TrainingConfig, path: Path, teachers: list[str] | None = None
) -> None:
    """Everything but the epoch count (and progress display) must match to resume exactly.

    ``teachers`` (sha256 of each teacher checkpoint) must match too: a stage taught by another
    teacher than the one it started with is another training run.
    """
    if teachers is not None and list(saved.get("teachers", [])) != teachers:
        raise CheckpointError(
            f"cannot resume from {path}: it was taught by other teacher checkpoints "
            "(their sha256 differ); train it again without --resume"
        )
    old = TrainingConfig.model_validate(saved)
    strip = {"train": {"epochs", "progress"}}
    a = old.model_dump(mode="json", exclude=strip)
    b = config.model_dump(mode="json", exclude=strip)
    if a != b:
        diff = [k for k in b if a.get(k) != b.get(k)]
        raise CheckpointError(
            f"cannot resume from {path}: its config differs in {', '.join(diff)}; "
            "resume with the same config (only train.epochs may change)"
        )


class Distributed:
    """Rank and world size under ``torchrun`` (env://); a single process otherwise."""

    def __init__(self, device: torch.device) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def train(config: TrainingConfig, out_dir: Path, resume: bool = False) -> TrainResult:
    """Train every stage of ``config``'s method into ``out_dir`` (see :mod:`training.stages`).

    With ``resume`` the run goes on at the stage and the epoch where it stopped. The result is
    the last stage's: the student in ``out_dir/checkpoint.pt``.
    """
    from training.stages import run_stages

    return run_stages(config, Path(out_dir), resume=resume)


def train_stage(
    config: TrainingConfig,
    out_dir: Path,
    resume: bool = False,
    teachers: list[Path] | None = None,
    init: Path | None = None,
    inputs: dict[str, Path] | None = None,
) -> TrainResult:
    """Train one stage into ``out_dir``; with ``resume`` continue from its checkpoint.

    ``teachers`` are onedge checkpoints (loaded with ``weights_only=True``, their data shape
    checked) handed to the method's ``prepare``; their sha256 go into the checkpoint. ``init`` is
    a checkpoint whose network weights start this stage; ``inputs`` are other files of earlier
    stages the method reads (SRM's dictionary).
    """
    from training.data import load_data, make_loader
    from training.init_weights import start_from_init
    from training.teachers import load_teachers

    out_dir = Path(out_dir)
    device = select_device(config.train.device)
    ddp = Distributed(device)
    if ddp.enabled and device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.seed, config.train.deterministic)

    splits = load_data(config.data)
    spec = splits.spec
    method = build_method(config.method)
    model = method.build_network(
        config.model,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        image_size=spec.image_size,
        method=config.method,
    ).to(device)
    # model.init: pretrained weights into the trunk and every branch (the gate, auxiliaries fresh)
    config, _ = start_from_init(model, config, load=init is None and not resume)
    memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    loaded_teachers = load_teachers(teachers or [], spec, device)
    teacher_sha = [t.sha256 for t in loaded_teachers]
    method.prepare(device, loaded_teachers, dict(inputs or {}))  # before the auxiliaries: SRM
    auxiliaries = method.build_auxiliaries(model).to(device, memory_format=memory_format)  # sizes
    trained = TrainedModules(model, auxiliaries)
    if init is not None and not resume:  # an earlier stage's network starts this one
        load_state(model, read_checkpoint(init, map_location=device)["model"], init)
    params = list(trained.parameters())
    t = config.train
    optimizer = torch.optim.SGD(
        params, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(config, e))
    use_amp = t.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    start_epoch, history = 0, []
    ckpt_path = out_dir / CHECKPOINT
    if resume:
        saved = read_checkpoint(ckpt_path, map_location=device)
        compatible_for_resume(saved["config"], config, ckpt_path, teacher_sha)
        load_state(model, saved["model"], ckpt_path)
        load_state(auxiliaries, saved.get("auxiliaries", {}), ckpt_path)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])
        start_epoch, history = int(saved["epoch"]), list(saved["history"])
        if start_epoch >= t.epochs and (out_dir / "metrics.json").is_file():
            raise ConfigError(
                f"{ckpt_path} already holds {start_epoch} epochs; raise train.epochs to go on"
            )

    train_model: torch.nn.Module = trained
    if ddp.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            trained, device_ids=[device.index] if device.type == "cuda" else None
        )
    if t.compile:
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    data_device = device if t.data_on_device and device.type == "cuda" else None
    augment = spec.augmentation if config.data.augment else "none"
    loader = make_loader(
        splits.train,
        config.data.batch_size,
        shuffle=True,
        seed=config.seed,
        augment=augment,
        drop_last=len(splits.train) > config.data.batch_size,
        rank=ddp.rank,
        world_size=ddp.world_size,
        num_workers=config.data.num_workers,
        device=data_device,
    )
    val_loader = make_loader(
        splits.val, config.data.eval_batch_size, shuffle=False, seed=0, device=data_device
    )
    if ddp.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(
            yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        )

    def state(epoch: int) -> dict[str, Any]:
        return {
            "config": config.model_dump(mode="json"),
            "spec": spec.to_dict(),
            "model": model.state_dict(),
            "auxiliaries": auxiliaries.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_state(),
            "epoch": epoch,
            "history": history,
            "teachers": teacher_sha,
            "deployed_branch": pick_branch(history),
            "metrics": history[-1] if history else {},
        }

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for epoch in range(start_epoch, t.epochs):
        loader.set_epoch(epoch)
        trained.train()
        # running sums stay on the device: the host waits for the GPU only every log_every steps
        sums: dict[str, torch.Tensor] = {}
        gate_sum = torch.zeros(model.num_branches, device=device)
        seen, started, cpu_started = 0, time.perf_counter(), time.process_time()
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{t.epochs}",
            disable=None if (t.progress and ddp.main) else True,  # None: only on a terminal
            leave=False,
            dynamic_ncols=True,
        )
        last = len(loader) - 1
        for step, (x, y) in enumerate(bar):
            x = x.to(device, non_blocking=True, memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                outputs = train_model(x, method.taps)
                loss, parts = method.loss(outputs, x, y, epoch + step / len(loader))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            n = y.shape[0]
            seen += n
            for key, value in {"loss": loss, **parts}.items():
                term = value.detach().float() * n
                sums[key] = sums[key] + term if key in sums else term
            gate_sum += outputs.gate_weights.detach().float().sum(dim=0)
            if step % t.log_every == 0 or step == last:  # the only host syncs of the loop
                check_finite(loss, optimizer, epoch, step, t.log_every)
                bar.set_postfix(loss=f"{float(sums['loss']) / seen:.3f}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr,
            "seconds": seconds,
            "images_per_second": seen * ddp.world_size / seconds,
            **{f"train_{k}": float(v) / max(seen, 1) for k, v in sums.items()},
            "gate_mean": (gate_sum / max(seen, 1)).tolist(),
        }
        if ddp.main:
            val = evaluate(model, val_loader, device, memory_format)
            record.update({f"val_{k}": v for k, v in val.items()})
            record["seconds_wall"] = time.perf_counter() - started  # training and validation
            record["cpu_seconds"] = time.process_time() - cpu_started  # this process's CPU time
            history.append(record)
            save_checkpoint(ckpt_path, state(epoch + 1))
            if t.progress:
                print(format_epoch(record), flush=True)
        ddp.barrier()

    metrics: dict[str, Any] = {}
    if ddp.main:
        finishing, cpu_finishing = time.perf_counter(), time.process_time()
        metrics = finish(model, splits, config, history, device, memory_format, out_dir)
        metrics["teachers"] = teacher_sha
        # this stage's wall and CPU time: every epoch (a resumed run's earlier ones too), the test
        metrics["seconds_stage"] = sum(h.get("seconds_wall", h["seconds"]) for h in history) + (
            time.perf_counter() - finishing
        )
        metrics["cpu_seconds_stage"] = sum(h.get("cpu_seconds", 0.0) for h in history) + (
            time.process_time() - cpu_finishing
        )
        metrics["seconds_total"] = metrics["seconds_stage"]
        metrics["cpu_seconds_total"] = metrics["cpu_seconds_stage"]
        atomic_write_json(out_dir / "metrics.json", metrics)
    ddp.barrier()
    ddp.close()
    return TrainResult(out_dir=out_dir, checkpoint=ckpt_path, metrics=metrics)


def check_finite(loss: torch.Tensor, optimizer: Any, epoch: int, step: int, every: int) -> None:
    """Stop when the loss is NaN or infinite (checked every ``every`` steps: a host sync)."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingError(
            f"loss became {value} by epoch {epoch + 1}, step {step + 1} (checked every {every} "
            f"steps); lower train.lr (now {optimizer.param_groups[0]['lr']:.4g}) or check the data"
        )


def pick_branch(history: list[dict[str, Any]]) -> int:
    """The deployed branch: highest validation top-1 at the last epoch (lowest index on ties)."""
    if not history:
        return 0
    accs = history[-1]["val_branch_top1"]
    return int(max(range(len(accs)), key=lambda i: (accs[i], -i)))


def format_epoch(record: dict[str, Any]) -> str:
    branches = " ".join(f"{a:.3f}" for a in record["val_branch_top1"])
    return (
        f"epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  lr {record['lr']:.4f}  "
        f"val top-1 branches [{branches}]  ensemble {record['val_ensemble_top1']:.3f}  "
        f"{record['seconds']:.1f}s ({record['images_per_second']:.0f} img/s)"
    )


def finish(model, splits, config, history, device, memory_format, out_dir: Path) -> dict[str, Any]:
    from training.data import make_loader
    from training.models import count_parameters
    from training.plots import plot_curves

    test_loader = make_loader(splits.test, config.data.eval_batch_size, shuffle=False, seed=0)
    test = evaluate(model, test_loader, device, memory_format, predictions=True)
    branch = pick_branch(history)
    metrics = {
        "deployed_branch": branch,
        "deployed_top1": test["branch_top1"][branch],
        "ensemble_top1": test["ensemble_top1"],
        "branch_top1": test["branch_top1"],
        "branch_widths": list(model.widths),
        "val_branch_top1": history[-1]["val_branch_top1"] if history else [],
        "val_ensemble_top1": history[-1]["val_ensemble_top1"] if history else None,
        "test_images": test["images"],
        "epochs": len(history),
        "method": config.method.name,
        "model": config.model.name,
        "dataset": config.data.name,
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])),
        "images_per_second": float(np.mean([h["images_per_second"] for h in history])),
        "parameters_total": count_parameters(model),
        "parameters_student": count_parameters(model.extract(branch)),
        "peak_memory_mb": peak_memory_mb(device),
        "device": str(device),
    }
    atomic_write_json(out_dir / "metrics.json", metrics)
    atomic_write_json(
        out_dir / PREDICTIONS,
        {
            "split_seed": config.data.split_seed,
            "labels": test["labels"],
            "deployed": test["branch_predictions"][branch],
            "ensemble": test["ensemble_predictions"],
            "branches": test["branch_predictions"],
        },
    )
    atomic_write_json(out_dir / "history.json", history)
    plot_curves(history, out_dir / "curves.png", title=f"{config.name}: {config.method.name}")
    return metrics


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2))
