"""SRM, Sparse Representation Matching (docs/METHODS.md §3): four stages.

1. ``teacher``: trained as a stage, or a checkpoint given as ``method.teacher``.
2. ``dictionary`` (:func:`training.srm_dictionary.fit_dictionary`, the ``srm-dictionary`` stage
   run): per tap, a dictionary C (D x K, K = mu*D) and bias b
   fitted by reconstruction of the frozen teacher's maps through top-k sparse codes
   (k = sparsity*K); the teacher is not trained.
3. ``init``: the student's layers up to each tap, with 1x1 heads (auxiliary modules, D_s -> K),
   learn the teacher's pixel labels (argmax of the code) and image labels (spatial mean of the
   code) with BCE + CE.
4. ``student``: the heads are dropped, the student starts from the init stage's network and is
   fine-tuned with Hinton KD from the teacher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from onedge.errors import ConfigError
from training.checkpoint_file import read_checkpoint
from training.config import MethodConfig, TeacherConfig, TrainingConfig
from training.errors import CheckpointError
from training.losses import srm_init_loss, srm_labels, srm_sparse_codes
from training.methods.base import register_method
from training.methods.distill import TeacherMethod, teacher_stage
from training.stage_spec import StageSpec
from training.teacher_outputs import teacher_maps


class SrmConfig(MethodConfig):
    name: Literal["srm"] = "srm"
    teacher: Path | TeacherConfig = Field(
        default_factory=TeacherConfig,
        description="an onedge checkpoint, or a teacher to train first as stage 'teacher'",
    )
    taps: list[str] = Field(
        default_factory=lambda: ["stage2", "stage3"], min_length=1, description="matched maps"
    )
    mu: float = Field(2.0, gt=0.0, description="K = round(mu * D) atoms per tap")
    sparsity: float = Field(0.02, gt=0.0, le=1.0, description="lambda: k = max(1, round(l*K))")
    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the KD term (stage 4)")
    dictionary_epochs: PositiveInt = 3
    init_epochs: PositiveInt | None = Field(None, description="None: train.epochs")
    phase: Literal["distill", "init"] = Field(
        "distill", description="which SRM stage this config trains (set by the recipe)"
    )


def atoms(channels: int, cfg: SrmConfig) -> tuple[int, int]:
    """(K, k) for a tap of ``channels`` channels."""
    K = max(2, round(cfg.mu * channels))
    return K, max(1, round(cfg.sparsity * K))


@register_method("srm")
class SrmMethod(TeacherMethod):
    """SRM: the student learns where the teacher's sparse codes fire, then KD (4 stages)."""

    config = SrmConfig
    cfg: SrmConfig

    @classmethod
    def stages(cls, config: TrainingConfig) -> list[StageSpec]:
        m = config.method
        if isinstance(m.teacher, TeacherConfig):
            first = [teacher_stage(config, "teacher", m.teacher, config.seed)]
            taught: dict[str, Any] = {"teachers": ("teacher",)}
        else:
            first, taught = [], {"given_teachers": (m.teacher,)}
        # the dictionary and init stages hold nothing of the KD fine-tune (T, alpha)
        shared = {"teacher": m.teacher, "taps": m.taps, "mu": m.mu, "sparsity": m.sparsity}
        fit = SrmConfig(**shared, dictionary_epochs=m.dictionary_epochs)
        dictionary = config.model_copy(
            update={
                "name": "dictionary",
                "method": fit,
                "train": config.train.model_copy(update={"epochs": m.dictionary_epochs}),
            }
        )
        init_epochs = m.init_epochs or config.train.epochs
        init = config.model_copy(
            update={
                "name": "init",
                "method": fit.model_copy(update={"phase": "init", "init_epochs": m.init_epochs}),
                "train": config.train.model_copy(update={"epochs": init_epochs}),
            }
        )
        return [
            *first,
            StageSpec("dictionary", dictionary, run="srm-dictionary", **taught),
            StageSpec("init", init, inputs=("dictionary",), **taught),
            StageSpec("student", config, init_from="init", **taught),
        ]

    def prepare(self, device, teachers, inputs=None) -> None:
        super().prepare(device, teachers, inputs)
        self.teacher = teachers[0]
        if self.cfg.phase != "init":
            return
        path = (inputs or {}).get("dictionary")
        if path is None:
            raise ConfigError("the SRM init stage needs the dictionary stage's checkpoint")
        saved = read_checkpoint(path, map_location=device)
        self.dictionary = {
            tap: (d["C"].to(device), d["b"].to(device), int(d["k"]))
            for tap, d in saved["dictionary"].items()
        }
        if sorted(self.dictionary) != sorted(self.cfg.taps):
            raise CheckpointError(
                f"{path} holds taps {sorted(self.dictionary)}, not {self.cfg.taps}"
            )

    def build_auxiliaries(self, network) -> nn.ModuleDict:
        """Init stage: one 1x1 head per tap, student channels -> K atoms; none afterwards."""
        if self.cfg.phase != "init":
            return super().build_auxiliaries(network)
        network.check_taps(self.cfg.taps)
        self.taps = tuple(self.cfg.taps)
        self.auxiliaries = nn.ModuleDict(
            {
                tap: nn.Conv2d(network.feature(tap, 0).channels, C.shape[1], kernel_size=1)
                for tap, (C, _, _) in self.dictionary.items()
            }
        )
        return self.auxiliaries

    def loss(self, outputs, inputs, targets, epoch):
        if self.cfg.phase != "init":
            return super().loss(outputs, inputs, targets, epoch)
        maps = teacher_maps(self.teacher, inputs, self.cfg.taps)
        total = outputs.branch_logits[0].sum() * 0.0  # keeps the graph when a tap is empty
        parts: dict[str, torch.Tensor] = {}
        for tap in self.cfg.taps:
            C, b, k = self.dictionary[tap]
            with torch.no_grad():
                pixel, image = srm_labels(srm_sparse_codes(maps[tap], C, b, k))
            scores = self.auxiliaries[tap](outputs.features[tap][0])
            if scores.shape[-2:] != pixel.shape[-2:]:  # match the teacher map's resolution
                scores = F.adaptive_avg_pool2d(scores, pixel.shape[-2:])
            loss, tap_parts = srm_init_loss(scores, pixel, image)
            total = total + loss
            parts.update({f"{tap}_{k}": v for k, v in tap_parts.items()})
        return total, parts
