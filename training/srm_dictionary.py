"""SRM's stage 2, the ``srm-dictionary`` stage run: a dictionary fitted, no network trained.

Per tap, a dictionary C (D x K, K = mu*D) and bias b are fitted by reconstruction of the frozen
teacher's maps of the training split through top-k sparse codes (docs/METHODS.md §3,
:mod:`training.methods.srm`); the checkpoint holds C, b and k per tap for the init stage.
It sits above the methods: it loads the teacher (:mod:`training.teachers`), which rebuilds
networks through them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from training.checkpoint_file import save_checkpoint
from training.config import TrainingConfig
from training.data import Loader, load_data, make_loader
from training.losses import srm_reconstruction_loss
from training.methods.srm import SrmConfig, atoms
from training.runtime import seed_everything, select_device
from training.stage_spec import (
    CHECKPOINT,
    METRICS,
    STAGE_RUNS,
    TrainResult,
    atomic_write_json,
)
from training.teacher_outputs import teacher_maps
from training.teachers import load_teachers

DICTIONARY_LR = 1e-2  # Adam on C and b; the fit is small and converges in a few epochs

# tap -> (C: D x K, b: K, k): the dictionary, its bias and the code's number of active atoms
Dictionary = dict[str, tuple[torch.Tensor, torch.Tensor, int]]


def fit_dictionary(
    config: TrainingConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    teachers: list[Path],
    init: Path | None = None,
    inputs: dict[str, Path] | None = None,
) -> TrainResult:
    """SRM stage 2: fit C and b per tap on the frozen teacher's maps of the training split.

    The fit is short and is redone from the start when a run stopped inside it (``resume``).
    """
    del resume, init, inputs
    started, cpu_started = time.perf_counter(), time.process_time()
    cfg: SrmConfig = config.method
    device = select_device(config.train.device)
    seed_everything(config.seed, config.train.deterministic)
    splits = load_data(config.data)
    (teacher,) = load_teachers(teachers[:1], splits.spec, device)
    teacher.model.check_taps(cfg.taps)
    dictionary = initial_dictionary(teacher, cfg, device)
    optimizer = torch.optim.Adam(
        [p for C, b, _ in dictionary.values() for p in (C, b)], lr=DICTIONARY_LR
    )
    loader = make_loader(splits.train, config.data.batch_size, shuffle=True, seed=config.seed)
    history = [
        fit_epoch(teacher, dictionary, optimizer, loader, epoch, device)
        for epoch in range(config.train.epochs)
    ]
    out_dir = Path(out_dir)
    save_dictionary(out_dir / CHECKPOINT, config, teacher.sha256, dictionary)
    metrics = {
        "reconstruction_mse": {t: history[-1][f"mse_{t}"] for t in cfg.taps},
        "atoms": {t: [int(C.shape[1]), k] for t, (C, _, k) in dictionary.items()},
        "epochs": config.train.epochs,
        "teachers": [teacher.sha256],
        "seconds_stage": time.perf_counter() - started,
        "cpu_seconds_stage": time.process_time() - cpu_started,
    }
    atomic_write_json(out_dir / "history.json", history)
    atomic_write_json(out_dir / METRICS, metrics)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return TrainResult(out_dir=out_dir, checkpoint=out_dir / CHECKPOINT, metrics=metrics)


def initial_dictionary(teacher: Any, cfg: SrmConfig, device: torch.device) -> Dictionary:
    """Per tap of the teacher's deployed branch: C ~ N(0, 1/D) (D x K), b = 0, and k."""
    dictionary = {}
    for tap in cfg.taps:
        D = teacher.model.feature(tap, teacher.deployed_branch).channels
        K, k = atoms(D, cfg)
        C = nn.Parameter(torch.randn(D, K, device=device) / D**0.5)
        dictionary[tap] = (C, nn.Parameter(torch.zeros(K, device=device)), k)
    return dictionary


def fit_epoch(
    teacher: Any,
    dictionary: Dictionary,
    optimizer: torch.optim.Optimizer,
    loader: Loader,
    epoch: int,
    device: torch.device,
) -> dict[str, float]:
    """One pass over the training split; the epoch's mean reconstruction MSE per tap."""
    taps = list(dictionary)
    loader.set_epoch(epoch)
    sums = {tap: 0.0 for tap in taps}
    seen = 0
    for x, _ in loader:
        maps = teacher_maps(teacher, x.to(device), taps)
        losses = {
            tap: srm_reconstruction_loss(maps[tap], C, b, k)
            for tap, (C, b, k) in dictionary.items()
        }
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        seen += x.shape[0]
        for tap, v in losses.items():
            sums[tap] += v.item() * x.shape[0]
    return {"epoch": epoch + 1, **{f"mse_{t}": v / max(seen, 1) for t, v in sums.items()}}


def save_dictionary(
    path: Path, config: TrainingConfig, teacher_sha256: str, dictionary: Dictionary
) -> None:
    """The dictionary stage's checkpoint: C, b and k per tap, its config and its teacher."""
    save_checkpoint(
        path,
        {
            "kind": "srm-dictionary",
            "config": config.model_dump(mode="json"),
            "epoch": config.train.epochs,
            "teachers": [teacher_sha256],
            "dictionary": {
                tap: {"C": C.detach().cpu(), "b": b.detach().cpu(), "k": torch.tensor(k)}
                for tap, (C, b, k) in dictionary.items()
            },
        },
    )


STAGE_RUNS.add("srm-dictionary", fit_dictionary)
