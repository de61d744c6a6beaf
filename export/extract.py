"""Take one branch of a trained multi-branch checkpoint as a plain, deployable student.

``extract_branch`` loads the checkpoint, builds the single-path network of the deployed branch
(or the one named), checks its logits against that branch of the multi-branch model on real
images, and measures it against the whole network. ``save_student`` writes it as a
``torch.export`` program (``student.pt2``) that loads with ``torch.export.load`` alone: no
onedge or multi-branch code is needed to run it. ``torch.export.load`` unpickles, so onedge
loads a ``student.pt2`` only right after writing it, in the exporter's private build folder;
where it needs the PyTorch student later it rebuilds it from the checkpoint with
:func:`extract_branch`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.errors import ExportError
from export.manifest import InputSpec, Manifest, OutputSpec, build_manifest, write_manifest
from export.preprocess import Preprocessed
from onedge.errors import ConfigError, first_line
from training.checkpoint import LoadedCheckpoint, load_checkpoint
from training.data import load_data, to_numpy
from training.errors import CheckpointError
from training.models import count_macs, count_parameters
from training.models.base import MultiBranchModel

STUDENT_FILE = "student.pt2"
EXTRACT_TOLERANCE = 1e-5  # the student is the branch: only float reordering may differ


@dataclass
class ModelCost:
    """Size and cost of a network at batch 1."""

    parameters: int
    macs: int
    size_bytes: int  # parameters and buffers as stored in FP32

    def to_dict(self) -> dict[str, int]:
        return {"parameters": self.parameters, "macs": self.macs, "size_bytes": self.size_bytes}


@dataclass
class Student:
    """The plain single-path network of one branch, with what it was measured against."""

    module: nn.Module
    spec: Any  # training.data.DatasetSpec
    branch: int
    deployed_branch: int
    num_branches: int
    checkpoint: Path
    checkpoint_sha256: str
    student_cost: ModelCost
    network_cost: ModelCost
    check: dict[str, float] = field(default_factory=dict)  # logits check vs the branch
    width: float = 1.0  # the branch's width multiplier relative to the shared trunk

    @property
    def input_chw(self) -> tuple[int, int, int]:
        return (self.spec.in_channels, self.spec.image_size, self.spec.image_size)

    def summary(self) -> dict[str, Any]:
        s, n = self.student_cost, self.network_cost
        return {
            "branch": self.branch,
            "width": self.width,
            "deployed_branch": self.deployed_branch,
            "num_branches": self.num_branches,
            "student": s.to_dict(),
            "multi_branch_network": n.to_dict(),
            "ratios": {
                "parameters": s.parameters / max(n.parameters, 1),
                "macs": s.macs / max(n.macs, 1),
                "size": s.size_bytes / max(n.size_bytes, 1),
            },
            "logits_check": self.check,
        }


def measure_cost(module: nn.Module, input_chw: tuple[int, int, int]) -> ModelCost:
    size = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    return ModelCost(count_parameters(module), count_macs(module, (1, *input_chw)), size)


def _branch_logits(model: MultiBranchModel, branch: int, images: torch.Tensor) -> torch.Tensor:
    outputs = model(images)
    logits = getattr(outputs, "branch_logits", None)
    if logits is None:
        raise CheckpointError("the checkpoint's model does not return per-branch logits")
    return logits[branch]


def _multi_branch_model(loaded: Any, branch: int | None) -> tuple[MultiBranchModel, int]:
    """The checkpoint's multi-branch network and the branch to extract (default: deployed)."""
    model = loaded.model
    if not isinstance(model, MultiBranchModel) or not hasattr(model, "extract"):
        raise CheckpointError(
            f"{loaded.path} does not hold a multi-branch model (got {type(model).__name__}); "
            "export needs a checkpoint trained by onedge"
        )
    chosen = loaded.deployed_branch if branch is None else int(branch)
    if not 0 <= chosen < model.num_branches:
        raise ConfigError(
            f"branch {chosen} is out of range: {loaded.path.name} has {model.num_branches} "
            f"branch(es), 0..{model.num_branches - 1}"
        )
    return model, chosen


def _check_images(loaded: Any, images: np.ndarray | None, chw: tuple[int, int, int]) -> np.ndarray:
    """The images the student is checked on: given, or the first 256 of the validation split."""
    if images is None:
        splits = load_data(loaded.config.data)
        images, _ = to_numpy(splits.val, limit=256)
    if len(images) == 0:
        raise ExportError("no images to check the extracted student on")
    if tuple(images.shape[1:]) != chw:
        raise ExportError(f"check images are {tuple(images.shape[1:])}, the model expects {chw}")
    return images


def _check_student(
    model: MultiBranchModel, branch: int, module: nn.Module, images: np.ndarray
) -> dict[str, float]:
    """The student's logits against its branch's in the multi-branch model; raises beyond 1e-5."""
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        expected = _branch_logits(model, branch, x)
        got = module(x)
    diff = float((expected - got).abs().max())
    agreement = float((expected.argmax(1) == got.argmax(1)).float().mean())
    if diff > EXTRACT_TOLERANCE or agreement < 1.0:
        raise ExportError(
            f"the extracted branch {branch} disagrees with the multi-branch model: max |diff| "
            f"{diff:.3g} (tolerance {EXTRACT_TOLERANCE:g}), top-1 agreement {agreement:.2%}"
        )
    return {"max_abs_diff": diff, "top1_agreement": agreement, "images": len(images)}


def extract_branch(
    checkpoint: Path | Any,
    branch: int | None = None,
    images: np.ndarray | None = None,
) -> Student:
    """The student of ``branch`` (default: the deployed one) from ``checkpoint``.

    ``checkpoint`` is a path or a loaded checkpoint. ``images`` (normalised float32 NCHW) are
    the real images the logits are checked on; by default the first 256 of the validation split
    of the checkpoint's own data set.
    """
    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint(checkpoint)
    model, chosen = _multi_branch_model(loaded, branch)
    model.eval()
    module = model.extract(chosen).eval()
    spec = loaded.spec
    chw = (spec.in_channels, spec.image_size, spec.image_size)
    check = _check_student(model, chosen, module, _check_images(loaded, images, chw))
    return Student(
        module=module,
        spec=spec,
        branch=chosen,
        deployed_branch=loaded.deployed_branch,
        num_branches=model.num_branches,
        checkpoint=Path(loaded.path),
        checkpoint_sha256=loaded.sha256,
        student_cost=measure_cost(module, chw),
        network_cost=measure_cost(model, chw),
        check=check,
        width=float(model.widths[chosen]),
    )


def input_spec(spec: Any, contract: Any = None) -> InputSpec:
    """The manifest's input: the normalised NCHW tensor, or ``contract``'s raw image."""
    if contract is None:
        return InputSpec(
            shape=[-1, spec.in_channels, spec.image_size, spec.image_size],
            mean=list(spec.mean),
            std=list(spec.std),
            scale=float(spec.scale),
            transform=spec.transform(),
        )
    facts = contract.to_dict()
    return InputSpec(
        shape=[-1, *contract.sample_shape],
        dtype=contract.dtype,
        layout=contract.layout,
        mean=list(spec.mean),
        std=list(spec.std),
        scale=float(spec.scale),
        preprocessing=facts["preprocessing"],
        value_range=facts["value_range"],
        transform=spec.transform(),
    )


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "torch": torch.__version__}
    for name in ("onnx", "onnxruntime", "openvino", "nncf", "numpy"):
        module = sys.modules.get(name)
        if module is not None:
            version = getattr(module, "__version__", None) or getattr(module, "get_version", None)
            versions[name] = version() if callable(version) else str(version)
    try:
        from importlib.metadata import version as dist_version

        versions["onedge"] = dist_version("onedge")
    except Exception:  # not installed as a distribution: leave it out
        pass
    return versions


def save_student(
    student: Student,
    folder: Path,
    config: dict[str, Any] | None = None,
    contract: Any = None,
) -> Manifest:
    """Write ``student.pt2`` (torch.export, dynamic batch) and its manifest into ``folder``.

    With an embedded ``contract`` (:class:`export.preprocess.InputContract`) the saved program
    takes the raw image and normalises it itself.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    module: nn.Module = student.module.eval()
    example = torch.zeros(2, *student.input_chw)
    if contract is not None and contract.embedded:
        module = Preprocessed(module, contract).eval()
        dtype = getattr(torch, contract.dtype)
        example = torch.zeros(2, *contract.sample_shape, dtype=dtype)
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        program = torch.export.export(
            module, (example,), dynamic_shapes=({0: batch},), strict=False
        )
    except Exception as exc:
        first = first_line(exc)
        raise ExportError(f"torch.export failed for the student: {first}") from exc
    torch.export.save(program, str(folder / STUDENT_FILE))
    manifest = build_manifest(
        folder,
        [STUDENT_FILE],
        STUDENT_FILE,
        name=f"{student.spec.name}-branch{student.branch}-torch-fp32",
        format="torch",
        precision="fp32",
        input=input_spec(student.spec, contract),
        output=OutputSpec(shape=[-1, student.spec.num_classes]),
        class_names=list(student.spec.class_names),
        source_checkpoint_sha256=student.checkpoint_sha256,
        branch=student.branch,
        width=student.width,
        config=config or {},
        versions=library_versions(),
        extra={"loader": "torch.export.load(path).module()", **student.summary()},
    )
    write_manifest(folder, manifest)
    return manifest


def load_student(folder: Path) -> nn.Module:
    """The student.pt2 this process has just written, as a callable module (needs only torch).

    ``torch.export.load`` unpickles: it is for the exporter's check of its own output, in its
    private (mode 0700) build folder, never for a folder someone else may have written.
    """
    path = Path(folder) / STUDENT_FILE
    if not path.is_file():
        raise ExportError(f"{path} does not exist: export the checkpoint first")
    return torch.export.load(str(path)).module()
