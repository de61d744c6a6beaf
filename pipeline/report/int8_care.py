"""INT8 care: a student with hard-swish, SiLU or squeeze-excitation whose INT8 artifact lost accuracy.

Those activations are where INT8 loses most on these networks (docs/BENCHMARKS.md, "INT8 of
trained timm networks"): hard-swish and SiLU give a long negative tail and a sharp knee that one
per-tensor activation scale covers poorly, and a squeeze-excitation gate multiplies every channel
by a quantised sigmoid. The rule, typed and testable:

    the student has one of :data:`CARE_FAMILIES` (found in the network itself, rebuilt untrained
    from the run's model config: :func:`activation_families`), and
    an INT8 artifact's test top-1 is more than ``threshold`` below the same student's FP32
    artifact of the same format (both on the export's eval images), or the INT8 artifact was
    refused by the export's gates.

Each case gives one report line naming the artifact, the drop and what to try: the INT8 artifact
of this student that kept most accuracy, FP16, and the repair or accuracy-control options.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from training.config import ModelConfig
from training.models import build_model

CARE_FAMILIES = ("hard-swish", "silu", "squeeze-excitation")
INT8_CARE_DROP = 0.01  # fraction of top-1: ReLU nets and NNCF lost <= 1.2 points in the benchmark
# module class names (torch's, timm's) -> family; matched case-insensitively
_FAMILY_OF_CLASS = {
    "hardswish": "hard-swish",
    "hardswishme": "hard-swish",
    "silu": "silu",
    "swish": "silu",
    "swishme": "silu",
    "squeezeexcite": "squeeze-excitation",
    "semodule": "squeeze-excitation",
    "effectivesemodule": "squeeze-excitation",
    "squeezeexcitation": "squeeze-excitation",
}


def activation_families(network: nn.Module) -> frozenset[str]:
    """The care families among the network's modules (:data:`CARE_FAMILIES`), by module class."""
    found = {_FAMILY_OF_CLASS.get(type(m).__name__.lower()) for m in network.modules()}
    return frozenset(found - {None})


@dataclass(frozen=True)
class Int8Figure:
    """One exported artifact's test top-1 (``None``: refused, with the reason)."""

    name: str  # <format>-<precision>[-variant], or s<k>-w<width>-<format>-<precision>
    precision: str
    top1: float | None
    reason: str = ""

    @property
    def fp32_name(self) -> str:
        """The same student's FP32 artifact of the same format."""
        head = self.name.split("-int8")[0]
        return f"{head}-fp32"


@dataclass(frozen=True)
class Int8Care:
    """An INT8 artifact of a care-family student that lost more than the threshold."""

    artifact: str
    fp32_artifact: str
    drop: float | None  # fraction of top-1; None when the artifact was refused
    families: frozenset[str]
    advice: str
    reason: str = ""

    def line(self) -> str:
        acts = ", ".join(sorted(self.families))
        lost = (
            f"was refused by the export's gates ({self.reason})"
            if self.drop is None
            else f"is {self.drop * 100:.2f} points of test top-1 below {self.fp32_artifact}"
        )
        return f"{self.artifact} {lost}; the student has {acts}, which need care in INT8: {self.advice}"


def figures_from_export(exported: dict) -> list[Int8Figure]:
    """Every artifact of ``export.json`` (and every failed one) as an :class:`Int8Figure`."""
    figures = [
        Int8Figure(a["name"], a["precision"], (a.get("test") or {}).get("top1"))
        for a in exported.get("artifacts", [])
    ]
    for failed in exported.get("failed", []):
        precision = failed.get("precision") or ("int8" if "-int8" in failed["name"] else "")
        figures.append(Int8Figure(failed["name"], precision, None, failed.get("reason", "")))
    return figures


def _student_prefix(name: str) -> str:
    """``s<k>-w<width>-`` for a student of a family's export, else empty."""
    found = re.match(r"s\d+-w[\d.]+-", name)
    return found.group(0) if found else ""


def _advice(case: Int8Figure, figures: dict[str, Int8Figure]) -> str:
    """What to try: the INT8 sibling that kept most accuracy, FP16, repair or accuracy control."""
    prefix = _student_prefix(case.name)
    kept = [
        f
        for f in figures.values()
        if f.precision == "int8" and f.top1 is not None and f.name != case.name
        and _student_prefix(f.name) == prefix
    ]  # fmt: skip
    tries = []
    if kept:
        best = max(kept, key=lambda f: f.top1 or 0.0)
        tries.append(f"{best.name} (top-1 {best.top1:.2%})")
    fp16 = figures.get(case.fp32_name.replace("-fp32", "-fp16"))
    if fp16 is not None and fp16.top1 is not None:
        tries.append(f"{fp16.name} ({fp16.top1:.2%})")
    tries.append(
        "export.openvino_int8: accuracy_control, or validate.int8_repair_max_nodes (keeps the "
        "nodes that lose most in float)"
    )
    return "try " + "; or ".join(tries)


def int8_care(
    figures: Iterable[Int8Figure], families: frozenset[str], threshold: float = INT8_CARE_DROP
) -> list[Int8Care]:
    """The INT8 artifacts that need a care line (none when the student has no care family)."""
    care = frozenset(families) & frozenset(CARE_FAMILIES)
    by_name = {f.name: f for f in figures}
    if not care:
        return []
    cases = []
    for fig in by_name.values():
        if fig.precision != "int8":
            continue
        fp32 = by_name.get(fig.fp32_name)
        if fig.top1 is None:
            drop = None
        elif fp32 is None or fp32.top1 is None:
            continue
        else:
            drop = fp32.top1 - fig.top1
            if drop <= threshold:
                continue
        cases.append(
            Int8Care(fig.name, fig.fp32_name, drop, care, _advice(fig, by_name), fig.reason)
        )
    return cases


def student_families(model: ModelConfig, dataset: Mapping[str, Any]) -> frozenset[str]:
    """The care families of the run's network, rebuilt untrained from its model config and the
    export's data set (``export.json``'s ``dataset``): module types need no weights."""
    network = build_model(
        model,
        num_classes=int(dataset["num_classes"]),
        in_channels=int(dataset["in_channels"]),
        image_size=int(dataset["image_size"]),
    )
    return activation_families(network)


def int8_care_lines(model: ModelConfig, exported: dict) -> list[str]:
    """The report's lines for this run's export (empty: nothing needs INT8 care)."""
    if "dataset" not in exported:
        return []
    families = student_families(model, exported["dataset"])
    return [case.line() for case in int8_care(figures_from_export(exported), families)]
