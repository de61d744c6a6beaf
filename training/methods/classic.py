"""ONE and the classic baselines: vanilla, DML, independent ensemble (KD: methods/distill.py)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt

from training.config import MethodConfig, ModelConfig
from training.losses import dml_loss, ensemble_ce_loss, one_loss, rampup_weight
from training.methods.base import Method, register_method
from training.models import build_peers
from training.models.base import BranchOutputs, MultiBranchModel


class OneConfig(MethodConfig):
    name: Literal["one"] = "one"
    temperature: float = Field(3.0, gt=0.0, description="softening of the gated ensemble")
    rampup: bool = True
    rampup_epochs: PositiveInt = 80


class VanillaConfig(MethodConfig):
    name: Literal["vanilla"] = "vanilla"


class DmlConfig(MethodConfig):
    name: Literal["dml"] = "dml"
    temperature: float = Field(1.0, gt=0.0, description="1: plain softmax, as in the DML paper")


class EnsembleConfig(MethodConfig):
    name: Literal["ensemble"] = "ensemble"


@register_method("one")
class OneMethod(Method):
    """ONE: m branches on a shared trunk, the gated ensemble teaches every branch (docs/METHODS.md §1)."""

    config = OneConfig
    cfg: OneConfig

    def loss(self, outputs: BranchOutputs, inputs, targets, epoch):
        w = rampup_weight(epoch, self.cfg.rampup_epochs) if self.cfg.rampup else 1.0
        total, parts = one_loss(
            outputs.branch_logits, outputs.gate_weights, targets, self.cfg.temperature, w
        )
        parts["distill_weight"] = torch.tensor(w)
        return total, parts


@register_method("vanilla")
class VanillaMethod(Method):
    """One branch trained with cross-entropy alone (the baseline every method must beat)."""

    config = VanillaConfig

    @classmethod
    def build_network(cls, model: ModelConfig, **shape) -> MultiBranchModel:
        return super().build_network(model.model_copy(update={"branches": 1}), **shape)

    def loss(self, outputs, inputs, targets, epoch):
        return ensemble_ce_loss(outputs.branch_logits, targets)


class PeersMethod(Method):
    """Independent peer networks (no shared layers), one per configured branch."""

    @classmethod
    def build_network(cls, model: ModelConfig, **shape) -> MultiBranchModel:
        shape.pop("method", None)
        return build_peers(model, **shape)


@register_method("dml")
class DmlMethod(PeersMethod):
    """Deep mutual learning: each peer learns from the labels and from the other peers.

    T = 1 (plain softmax) by default, as in the DML paper's loss.
    """

    config = DmlConfig
    cfg: DmlConfig

    def loss(self, outputs, inputs, targets, epoch):
        return dml_loss(outputs.branch_logits, targets, self.cfg.temperature)


@register_method("ensemble")
class EnsembleMethod(PeersMethod):
    """m independent networks trained side by side and averaged (ONE's upper bound)."""

    config = EnsembleConfig

    def loss(self, outputs, inputs, targets, epoch):
        return ensemble_ce_loss(outputs.branch_logits, targets)
