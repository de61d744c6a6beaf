"""MEAL: a pool of teachers distilled adversarially into one student (docs/METHODS.md §5).

The pool is trained as stages (``teacher-1`` ... from ``method.pool``) or given as checkpoints
(``method.teachers``). Each step draws one teacher from the pool (torch's RNG, saved in the
checkpoint, so a resumed run draws the same). At every tap the student's and the teacher's maps
are pooled to a common length and matched with soft cross-entropy, with weights growing toward
the logits, which are matched the same way. One small discriminator per tap (1x1 convolutions,
an auxiliary module) tells teacher from student vectors; its loss is added, through gradient
reversal by default (a min-max in one optimiser step) or with the student fooling a frozen copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.func import functional_call

from onedge.errors import ConfigError
from training.config import MethodConfig, TeacherConfig, TrainingConfig
from training.losses import (
    discriminator_loss,
    pool_to_length,
    reverse_gradient,
    soft_cross_entropy,
)
from training.methods.base import register_method
from training.methods.distill import TeacherMethod, teacher_stage
from training.stage_spec import StageSpec


class MealConfig(MethodConfig):
    name: Literal["meal"] = "meal"
    pool: list[TeacherConfig] = Field(
        default_factory=lambda: [TeacherConfig(), TeacherConfig()],
        min_length=1,
        description="teachers trained as stages teacher-1..n (seeds seed+1..)",
    )
    teachers: list[Path] = Field(
        default_factory=list, description="onedge checkpoints to use as the pool instead"
    )
    taps: list[str] = Field(default_factory=lambda: ["stage2", "stage3"])
    adversarial: bool = True
    reverse_gradient: bool = Field(True, description="False: the student fools a frozen copy")
    adversarial_weight: float = Field(
        0.1,
        ge=0.0,
        description="1.0 with gradient reversal diverged on digits (docs/BENCHMARKS.md)",
    )


def discriminator(length: int) -> nn.Sequential:
    """1x1 convolutions on an (N, L, 1, 1) vector -> (N, 1, 1, 1) logit: teacher or student."""
    hidden = max(8, length // 2)
    return nn.Sequential(
        nn.Conv2d(length, hidden, kernel_size=1), nn.LeakyReLU(0.2), nn.Conv2d(hidden, 1, 1)
    )


@register_method("meal")
class MealMethod(TeacherMethod):
    """MEAL: one teacher of the pool per step, block-wise soft CE and discriminators."""

    config = MealConfig
    cfg: MealConfig

    @classmethod
    def stages(cls, config: TrainingConfig) -> list[StageSpec]:
        m = config.method
        if m.teachers:
            return [StageSpec("student", config, given_teachers=tuple(m.teachers))]
        pool = [
            teacher_stage(config, f"teacher-{i}", t, config.seed + i)
            for i, t in enumerate(m.pool, start=1)
        ]
        return [*pool, StageSpec("student", config, teachers=tuple(s.name for s in pool))]

    def prepare(self, device, teachers, inputs=None) -> None:
        super().prepare(device, teachers, inputs)
        self.pool = teachers
        for t in teachers:
            t.model.check_taps(self.cfg.taps)

    def build_auxiliaries(self, network) -> nn.ModuleDict:
        network.check_taps(self.cfg.taps)
        self.taps = tuple(self.cfg.taps)
        self.lengths = {
            tap: min(
                network.feature(tap, 0).channels,
                *(t.model.feature(tap, t.deployed_branch).channels for t in self.pool),
            )
            for tap in self.taps
        }
        modules = {tap: discriminator(n) for tap, n in self.lengths.items()}
        self.auxiliaries = nn.ModuleDict(modules if self.cfg.adversarial else {})
        return self.auxiliaries

    def loss(self, outputs, inputs, targets, epoch):
        if not self.pool:
            raise ConfigError("the MEAL pool was not loaded; call prepare() first")
        drawn = self.pool[int(torch.randint(len(self.pool), (1,)).item())]
        with torch.no_grad():
            out = drawn.model(inputs, taps=self.taps)
        b = drawn.deployed_branch
        logits = outputs.branch_logits[0]
        total = soft_cross_entropy(logits, out.branch_logits[b])
        parts = {"soft_ce_logits": total.detach()}
        for i, tap in enumerate(self.taps):
            weight = (i + 1) / (len(self.taps) + 1)  # grows toward the logits' 1
            s = pool_to_length(outputs.features[tap][0], self.lengths[tap])
            t = pool_to_length(out.features[tap][b], self.lengths[tap])
            match = soft_cross_entropy(s, t)
            total = total + weight * match
            parts[f"soft_ce_{tap}"] = match.detach()
            if self.cfg.adversarial:
                adv = self.adversarial(tap, s, t)
                total = total + self.cfg.adversarial_weight * adv
                parts[f"adv_{tap}"] = adv.detach()
        return total, parts

    def adversarial(self, tap: str, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        d = self.auxiliaries[tap]
        on_teacher = d(t[..., None, None])
        if self.cfg.reverse_gradient:
            return discriminator_loss(on_teacher, d(reverse_gradient(s)[..., None, None]))
        # the discriminator learns on detached student vectors; the student fools a frozen copy
        learn = discriminator_loss(on_teacher, d(s.detach()[..., None, None]))
        frozen = {k: v.detach() for k, v in d.named_parameters()}
        fooled = functional_call(d, frozen, (s[..., None, None],))
        return learn + F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
