"""Compact: block-wise compact-structure KD under a budget (docs/METHODS.md §4).

The reference network ``model`` names (a CIFAR ResNet) is split into its four blocks (stem,
stage 1..3). For each block the method offers cheaper candidates (``method.candidates``: fewer
channels, fewer residual units, depthwise-separable units) and picks one per block so that the
student's MACs or parameters stay within ``method.budget`` (:func:`choose_structure`). Stages:

1. ``teacher``: the reference network trained as a stage (or ``method.teacher``, a checkpoint);
2. ``block-stem``, ``block-stage1``, ``block-stage2``, ``block-stage3``: the student starts from
   the teacher's weights (``method.inherit``: per block the first units and the channels with
   the largest filter norms, :func:`training.models.compact.inherit_from_teacher`), then each
   stage trains one student block at ``method.block_lr``, everything else frozen, to reproduce the teacher block's output through a 1x1 adapter
   (:func:`training.losses.block_feature_loss`); the blocks before it are the student's own,
   already trained (progressive block-wise distillation); each stage starts from the one before;
3. ``student``: the adapters dropped, the whole student fine-tuned with Hinton KD.

The search is exact over every combination of candidates (hundreds of thousands, scored with the
closed-form costs of :mod:`training.models.compact`). Among the combinations within the budget
it keeps the compression even across blocks: it maximises the smallest block's share of its
teacher block's cost, then the total cost (the budget used); remaining ties go to the earlier
candidate (wider, then the reference's own block kind, then deeper). The chosen structure is a
pure function of the config and the data's shape, so a checkpoint rebuilds the same network;
``method.structure`` fixes it by hand (the budget is still enforced).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch.nn.functional as F
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from onedge.errors import ConfigError
from onedge.strict import StrictModel
from training.config import MethodConfig, ModelConfig, TeacherConfig, TrainingConfig
from training.losses import block_feature_loss
from training.methods.base import register_method
from training.methods.distill import TeacherMethod, teacher_stage
from training.models.cifar_resnet import TAPS
from training.models.compact import (
    BlockChoice,
    Cost,
    block_cost,
    compact_resnet,
    head_cost,
    inherit_from_teacher,
    reference_of,
    reference_structure,
    stage_modules,
    structure_cost,
)
from training.stage_spec import StageSpec
from training.teacher_outputs import teacher_maps

Metric = Literal["macs", "params"]


class CompactBudget(StrictModel):
    """Exactly one of: ``macs``, ``params`` (absolute) or ``ratio`` of the reference's ``of``."""

    macs: PositiveInt | None = None
    params: PositiveInt | None = None
    ratio: float | None = Field(None, gt=0.0, le=1.0)
    of: Metric = Field("macs", description="what ratio is a share of")

    @model_validator(mode="after")
    def _exactly_one(self) -> CompactBudget:
        given = [k for k in ("macs", "params", "ratio") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"method.budget takes exactly one of macs, params, ratio; got {given}")
        return self

    def limit(self, reference: Cost) -> tuple[Metric, int]:
        """(metric, the most the student may cost in it), given the reference network's cost."""
        if self.macs is not None:
            return "macs", self.macs
        if self.params is not None:
            return "params", self.params
        assert self.ratio is not None  # the validator guarantees one of the three
        return self.of, math.floor(self.ratio * getattr(reference, self.of))


class CompactCandidates(StrictModel):
    """The cheaper blocks offered in place of each reference block."""

    widths: list[float] = Field(
        default_factory=lambda: [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25],
        min_length=1,
        description="channel multipliers relative to the reference",
    )
    kinds: list[Literal["same", "dwsep"]] = Field(
        default_factory=lambda: ["same", "dwsep"],
        min_length=1,
        description="the reference's own block kind, depthwise-separable units",
    )
    depths: list[float] = Field(
        default_factory=lambda: [1.0, 0.75, 0.5, 0.25],
        min_length=1,
        description="residual units per stage as fractions of the reference's (rounded up)",
    )

    @model_validator(mode="after")
    def _in_range(self) -> CompactCandidates:
        bad = [v for v in [*self.widths, *self.depths] if not 0.0 < v <= 1.0]
        if bad:
            raise ValueError(f"candidate widths and depths are fractions in (0, 1], got {bad}")
        return self


class CompactConfig(MethodConfig):
    name: Literal["compact"] = "compact"
    teacher: Path | TeacherConfig = Field(
        default_factory=TeacherConfig,
        description="an onedge checkpoint, or the reference network trained first as 'teacher'",
    )
    budget: CompactBudget = Field(default_factory=lambda: CompactBudget(ratio=0.5))
    candidates: CompactCandidates = Field(default_factory=CompactCandidates)
    structure: list[BlockChoice] | None = Field(
        None, description="the four blocks by hand (stem, stage1..3); None: searched"
    )
    block_epochs: PositiveInt = Field(2, description="epochs of each block-wise stage")
    block_lr: float = Field(0.02, gt=0.0, description="learning rate of the block-wise stages")
    inherit: bool = Field(
        True,
        description="start the student from the teacher's weights (strongest channels, first "
        "units); false: a fresh initialisation",
    )
    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the KD term (last stage)")
    block: Literal["stem", "stage1", "stage2", "stage3"] | None = Field(
        None, description="the block a block-wise stage trains (set by the recipe)"
    )


def stage_candidates(model: ModelConfig, cands: CompactCandidates) -> list[BlockChoice]:
    """Every candidate for a stage, in preference order: wider, reference kind, deeper."""
    n, _ = reference_of(model)
    depths = sorted({max(1, math.ceil(n * f - 1e-9)) for f in cands.depths}, reverse=True)
    widths = sorted(set(cands.widths), reverse=True)
    return [
        BlockChoice(kind=kind, width=w, blocks=d)
        for w in widths
        for kind in dict.fromkeys(cands.kinds)
        for d in depths
    ]


def choose_structure(
    model: ModelConfig,
    budget: CompactBudget,
    candidates: CompactCandidates,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
) -> list[BlockChoice]:
    """The structure the search picks (see the module's docstring); ConfigError when none fits."""
    key = json.dumps(
        [
            model.model_dump(),
            budget.model_dump(),
            candidates.model_dump(),
            num_classes,
            in_channels,
            image_size,
        ],  # fmt: skip
        sort_keys=True,
    )
    return [BlockChoice(**c) for c in _search(key)]


@lru_cache(maxsize=64)
def _search(key: str) -> tuple[dict[str, Any], ...]:
    model_d, budget_d, cands_d, num_classes, in_channels, image_size = json.loads(key)
    model, budget = ModelConfig(**model_d), CompactBudget(**budget_d)
    cands = CompactCandidates(**cands_d)
    shape = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    ref_total, ref_blocks = structure_cost(model, reference_structure(model), **shape)
    metric, limit = budget.limit(ref_total)
    teacher = [getattr(c, metric) for c in ref_blocks]

    stems = [BlockChoice(kind="conv", width=w) for w in sorted(set(cands.widths), reverse=True)]
    stages = stage_candidates(model, cands)
    # per block: cost[i_prev, j] for candidate j after the previous block's candidate i
    stem_cost, stem_out = [], []
    for choice in stems:
        cost, channels, size = block_cost(model, 0, choice, in_channels, image_size)
        stem_cost.append(getattr(cost, metric))
        stem_out.append((channels, size))
    costs, outs = [np.asarray(stem_cost, dtype=np.float64)], [stem_out]
    for index in (1, 2, 3):
        table = np.empty((len(outs[-1]), len(stages)))
        out = [None] * len(stages)
        for i, (cin, size) in enumerate(outs[-1]):
            for j, choice in enumerate(stages):
                cost, channels, out_size = block_cost(model, index, choice, cin, size)
                table[i, j] = getattr(cost, metric)
                out[j] = (channels, out_size)  # the same for every previous candidate
        costs.append(table)
        outs.append(out)
    head = np.asarray([getattr(head_cost(c, num_classes), metric) for c, _ in outs[-1]])
    a, b, c, d = costs
    total = (
        a[:, None, None, None]
        + b[:, :, None, None]
        + c[None, :, :, None]
        + d[None, None, :, :]
        + head[None, None, None, :]
    )
    share = np.minimum.reduce(
        [
            np.broadcast_to((a / teacher[0])[:, None, None, None], total.shape),
            np.broadcast_to((b / teacher[1])[:, :, None, None], total.shape),
            np.broadcast_to((c / teacher[2])[None, :, :, None], total.shape),
            np.broadcast_to((d / teacher[3])[None, None, :, :], total.shape),
        ]
    )
    fits = total <= limit
    if not fits.any():
        raise ConfigError(
            f"no compact structure fits the budget of {limit:,} {metric} "
            f"(the reference costs {getattr(ref_total, metric):,}; the cheapest candidate "
            f"{int(total.min()):,}): raise method.budget or offer cheaper method.candidates"
        )
    best_share = share[fits].max()
    score = np.where(fits & (share >= best_share - 1e-12), total, -1.0)
    i, j1, j2, j3 = np.unravel_index(int(np.argmax(score)), total.shape)  # first of the best
    chosen = [stems[i], stages[j1], stages[j2], stages[j3]]
    return tuple(ch.model_dump() for ch in chosen)


def resolve_structure(
    model: ModelConfig, cfg: CompactConfig, *, num_classes: int, in_channels: int, image_size: int
) -> list[BlockChoice]:
    """``cfg.structure`` when given (checked against the budget), else the searched one."""
    shape = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    if cfg.structure is None:
        return choose_structure(model, cfg.budget, cfg.candidates, **shape)
    ref_total, _ = structure_cost(model, reference_structure(model), **shape)
    metric, limit = cfg.budget.limit(ref_total)
    total, _ = structure_cost(model, cfg.structure, **shape)
    if getattr(total, metric) > limit:
        raise ConfigError(
            f"method.structure costs {getattr(total, metric):,} {metric}, over the budget of "
            f"{limit:,}"
        )
    return list(cfg.structure)


@register_method("compact")
class CompactMethod(TeacherMethod):
    """A student carved from the reference under a budget, distilled block by block, then KD."""

    config = CompactConfig
    cfg: CompactConfig

    @classmethod
    def build_network(cls, model, *, num_classes, in_channels, image_size, method=None):
        cfg = method if isinstance(method, CompactConfig) else CompactConfig()
        model = model.model_copy(update={"branches": 1})
        shape = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
        structure = resolve_structure(model, cfg, **shape)
        return compact_resnet(model, structure, num_classes=num_classes, in_channels=in_channels)

    @classmethod
    def stages(cls, config: TrainingConfig) -> list[StageSpec]:
        m = config.method
        reference_of(config.model)  # refuse a non-CIFAR reference before any stage runs
        if isinstance(m.teacher, TeacherConfig):
            first = [teacher_stage(config, "teacher", m.teacher, config.seed)]
            taught: dict[str, Any] = {"teachers": ("teacher",)}
        else:
            first, taught = [], {"given_teachers": (m.teacher,)}
        # the block-wise stages hold nothing of the KD fine-tune (T, alpha)
        keys = (
            "teacher",
            "budget",
            "candidates",
            "structure",
            "block_epochs",
            "block_lr",
            "inherit",
        )
        shared = {k: getattr(m, k) for k in keys}
        train = config.train.model_copy(
            update={"epochs": m.block_epochs, "warmup_epochs": 0, "lr": m.block_lr}
        )
        specs, previous = list(first), None
        for tap in TAPS:
            block = CompactConfig(**shared, block=tap)
            stage = config.model_copy(
                update={"name": f"block-{tap}", "method": block, "train": train}
            )
            specs.append(StageSpec(f"block-{tap}", stage, init_from=previous, **taught))
            previous = f"block-{tap}"
        specs.append(StageSpec("student", config, init_from=previous, **taught))
        return specs

    def prepare(self, device, teachers, inputs=None) -> None:
        super().prepare(device, teachers, inputs)
        self.teacher = teachers[0]

    def build_auxiliaries(self, network) -> nn.ModuleDict:
        """Block stage: a 1x1 adapter (student -> teacher channels); the rest of the network
        frozen. The KD stage has none."""
        tap = self.cfg.block
        if tap is None:
            return super().build_auxiliaries(network)
        network.check_taps([tap])
        self.teacher.model.check_taps([tap])
        if tap == TAPS[0] and self.cfg.inherit:  # the first block stage; a resume overwrites it
            self.inherited = inherit_from_teacher(
                network,
                self.teacher.model,
                self.teacher.deployed_branch,
                network.reference,
                network.structure,
                self.teacher.config.model,
            )
        trained = stage_modules(network, 0)[tap]  # check_taps above: the tap exists
        keep = {id(p) for p in trained.parameters()}
        for p in network.parameters():
            p.requires_grad_(id(p) in keep)
        ours = network.feature(tap, 0).channels
        theirs = self.teacher.model.feature(tap, self.teacher.deployed_branch).channels
        self.taps = (tap,)
        self.auxiliaries = nn.ModuleDict({tap: nn.Conv2d(ours, theirs, kernel_size=1)})
        return self.auxiliaries

    def loss(self, outputs, inputs, targets, epoch):
        tap = self.cfg.block
        if tap is None:
            return super().loss(outputs, inputs, targets, epoch)
        target = teacher_maps(self.teacher, inputs, [tap])[tap]
        adapted = self.auxiliaries[tap](outputs.features[tap][0])
        if adapted.shape[-2:] != target.shape[-2:]:
            adapted = F.adaptive_avg_pool2d(adapted, target.shape[-2:])
        return block_feature_loss(adapted, target)


def describe(structure: list[BlockChoice]) -> str:
    """One line: ``stem conv w0.75 | stage1 same w0.625 x3 | ...``."""
    return " | ".join(
        f"{tap} {c.kind} w{c.width:g}" + (f" x{c.blocks}" if tap != "stem" else "")
        for tap, c in zip(TAPS, structure, strict=True)
    )
