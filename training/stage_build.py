"""Setting up one training stage: device and DDP, data, method and network, optimiser, loaders.

:func:`build_stage` returns the :class:`~training.epoch.StageRun` the trainer's loop works on
(:func:`training.trainer.train_stage`): teachers loaded and frozen, the method prepared before its
auxiliary modules are sized, ``model.init`` or an earlier stage's weights loaded, ``config.yaml``
written. :func:`lr_factor` is the learning-rate schedule.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import yaml

from training.checkpoint_file import load_state, read_checkpoint
from training.config import TrainingConfig
from training.data import load_data, make_loader
from training.epoch import StageRun
from training.init_weights import start_from_init
from training.methods import TrainedModules, build_method
from training.runtime import Distributed, seed_everything, select_device
from training.teachers import load_teachers


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


def build_stage(
    config: TrainingConfig,
    out_dir: Path,
    resume: bool,
    teachers: list[Path],
    init: Path | None,
    inputs: dict[str, Path],
) -> StageRun:
    """The device (and DDP), the data, the method and network (teachers loaded, auxiliaries
    built, ``init`` weights), the optimiser and the loaders of one stage; ``config.yaml``."""
    device, ddp = stage_device(config)
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
    loaded_teachers = load_teachers(teachers, spec, device)
    method.prepare(device, loaded_teachers, inputs)  # before the auxiliaries: SRM sizes them
    auxiliaries = method.build_auxiliaries(model).to(device, memory_format=memory_format)
    trained = TrainedModules(model, auxiliaries)
    if init is not None and not resume:  # an earlier stage's network starts this one
        load_state(model, read_checkpoint(init, map_location=device)["model"], init)
    t = config.train
    optimizer = torch.optim.SGD(
        list(trained.parameters()), lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
        weight_decay=t.weight_decay,
    )  # fmt: skip
    use_amp = t.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    loader, val_loader = stage_loaders(config, splits, ddp, device)
    if ddp.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(
            yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        )
    return StageRun(
        config=config, device=device, ddp=ddp, splits=splits, method=method, model=model,
        auxiliaries=auxiliaries, trained=trained, train_model=wrapped(trained, ddp, device, t),
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(config, e)),
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16),
        use_amp=use_amp, amp_dtype=amp_dtype, memory_format=memory_format,
        teacher_sha=[teacher.sha256 for teacher in loaded_teachers],
        loader=loader, val_loader=val_loader,
    )  # fmt: skip


def stage_device(config: TrainingConfig) -> tuple[torch.device, Distributed]:
    """The stage's device (this rank's GPU under DDP) and process group; threads and seeds set."""
    device = select_device(config.train.device)
    ddp = Distributed(device)
    if ddp.enabled and device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.seed, config.train.deterministic)
    return device, ddp


def wrapped(trained: TrainedModules, ddp: Distributed, device: torch.device, t: Any) -> Any:
    """What the loop calls: ``trained``, under DDP when it runs, compiled when asked."""
    model: torch.nn.Module = trained
    if ddp.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            trained, device_ids=[device.index] if device.type == "cuda" else None
        )
    return torch.compile(model) if t.compile else model


def stage_loaders(config: TrainingConfig, splits: Any, ddp: Distributed, device: torch.device):
    """The shuffled (augmented, DDP-sharded) training loader and the validation loader."""
    data_device = device if config.train.data_on_device and device.type == "cuda" else None
    augment = splits.spec.augmentation if config.data.augment else "none"
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
    return loader, val_loader
