"""The online student ensemble (docs/METHODS.md §2): one training, a family of students.

N students of different widths share a base (the stem of CIFAR ResNets, the stem and first stage
of ImageNet-style networks); student j's own stages have their channels scaled by ``widths[j]``
(default (N-j)/N: 1.0, 0.8, 0.6, 0.4, 0.2 for N = 5). The teacher is the plain average of the
students' logits. At every per-student stage a 1x1 convolution maps student j's map to student
0's width for the MSE term; these adapters are the method's auxiliary modules: they train and are
checkpointed beside the network, and never reach an extracted student.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from onedge.errors import ConfigError
from training.config import MethodConfig, ModelConfig
from training.losses import student_ensemble_loss
from training.methods.base import Method, register_method
from training.models import build_model, student_branch_point
from training.models.base import MultiBranchModel


class StudentEnsembleConfig(MethodConfig):
    name: Literal["student-ensemble"] = "student-ensemble"
    temperature: float = Field(2.0, gt=0.0)
    widths: list[float] | None = Field(
        None,
        min_length=2,
        description="one width per student, the first 1.0; None: (N-j)/N for N = model.branches",
    )
    a: float = Field(0.7, ge=0.0, description="weight of CE(teacher, y)")
    b: float = Field(0.15, ge=0.0, description="weight of the adapted MSE")
    c: float = Field(0.15, ge=0.0, description="weight of the KL terms")
    student_ce: bool = Field(False, description="add every student's own CE")


def family_widths(cfg: StudentEnsembleConfig, branches: int) -> list[float]:
    """The students' widths: ``cfg.widths``, else (N-j)/N for N = ``branches``."""
    if cfg.widths is None:
        if branches < 2:
            raise ConfigError(
                f"student-ensemble needs at least 2 students; model.branches is {branches}"
            )
        return [(branches - j) / branches for j in range(branches)]
    widths = [float(w) for w in cfg.widths]
    if widths[0] != 1.0 or any(not 0 < w <= 1.0 for w in widths):
        raise ConfigError(
            f"method.widths must start with 1.0 (student 0, the reference) and lie in (0, 1], "
            f"got {widths}"
        )
    return widths


@register_method("student-ensemble")
class StudentEnsembleMethod(Method):
    """Students of several widths learn from the average of all of them."""

    config = StudentEnsembleConfig
    cfg: StudentEnsembleConfig

    @classmethod
    def build_network(
        cls,
        model: ModelConfig,
        *,
        num_classes: int,
        in_channels: int,
        image_size: int,
        method: MethodConfig | None = None,
    ) -> MultiBranchModel:
        if not isinstance(method, StudentEnsembleConfig):
            method = StudentEnsembleConfig()
        widths = family_widths(method, model.branches)
        family = model.model_copy(
            update={"branches": len(widths), "branch_point": student_branch_point(model.name)}
        )
        return build_model(
            family,
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            gate=False,
            widths=widths,
        )

    def build_auxiliaries(self, network: MultiBranchModel) -> nn.ModuleDict:
        """One 1x1 adapter per per-student stage and student j >= 1, to student 0's channels."""
        self.taps = tuple(network.branch_taps())
        self.auxiliaries = nn.ModuleDict(
            {
                f"{stage}_s{j}": nn.Conv2d(
                    network.feature(stage, j).channels,
                    network.feature(stage, 0).channels,
                    kernel_size=1,
                    bias=False,
                )
                for stage in self.taps
                for j in range(1, network.num_branches)
            }
        )
        return self.auxiliaries

    def loss(self, outputs, inputs, targets, epoch):
        m = outputs.num_branches
        adapted = [
            [self.auxiliaries[f"{stage}_s{j}"](outputs.features[stage][j]) for j in range(1, m)]
            for stage in self.taps
        ]
        reference = [outputs.features[stage][0] for stage in self.taps]
        return student_ensemble_loss(
            outputs.branch_logits,
            adapted,
            reference,
            targets,
            a=self.cfg.a,
            b=self.cfg.b,
            c=self.cfg.c,
            T=self.cfg.temperature,
            student_ce=self.cfg.student_ce,
        )
