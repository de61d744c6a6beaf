"""Multi-branch model families (docs/DESIGN.md rule 5) and the catalogue that names them.

CIFAR-style ResNets (``resnet20``, ``resnet32``, ``resnet56``, ``resnet110``) and
torchvision-based ImageNet-style networks (``resnet18``, ``mobilenet_v2``) and timm's CNNs
(``timm/mobilenetv3_small_100``, ...); see their modules. Importing registers them.
"""

from training.models import cifar_resnet, timm_family, torchvision_family  # noqa: F401
from training.models.base import BranchOutputs, MultiBranchModel, gated_ensemble
from training.models.branched import BranchGate, BranchNetwork, TrunkBranchModel
from training.models.build import (
    MODELS,
    ModelFactory,
    build_model,
    build_peers,
    student_branch_point,
)
from training.models.measure import count_macs, count_parameters
from training.models.peers import PeerEnsemble

__all__ = [
    "MODELS",
    "BranchGate",
    "BranchNetwork",
    "BranchOutputs",
    "ModelFactory",
    "MultiBranchModel",
    "PeerEnsemble",
    "TrunkBranchModel",
    "build_model",
    "build_peers",
    "count_macs",
    "count_parameters",
    "gated_ensemble",
    "student_branch_point",
]
