"""What a user looks at first: per class, for the registered artifact on each target.

From the validation run on that target (the class its runner recorded for every eval image,
:meth:`targets.base.ArtifactResult.predicted_classes`) and the export's eval set (``eval.npz``,
the same images, checked by digest): a per-class table (images, correct, top-1, the class each
one is most often taken for), a confusion-matrix image and a grid of misclassified test images
with their true and predicted class (at most :data:`MAX_ERRORS`). The table and the matrix also
go into ``report.json`` (``per_class``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.manifest import EVAL_FILE, ArtifactError, InputSpec, read_manifest
from onedge.strict import StrictModel
from pipeline.config import RunConfig
from pipeline.model_registry.register import RegistryOutcome
from pipeline.model_registry.target_versions import (
    PER_TARGET_FILE,
    PerTargetOutcome,
    per_target_mode,
)
from pipeline.run_folder import RunFolder, slug
from targets.base import ArtifactResult, ValidationReport
from targets.validate import eval_set_digest

MAX_ERRORS = 32
GRID_COLUMNS = 8
COLUMNS = ["class", "images", "correct", "top-1 %", "most often taken for"]


class ClassRow(StrictModel):
    index: int
    name: str
    images: int
    correct: int
    top1: float | None = None  # a fraction; None for a class with no eval image
    confused_with: str | None = None  # the wrong class its images are most often given
    confused_count: int = 0

    def cells(self) -> list[str]:
        top1 = "-" if self.top1 is None else f"{100 * self.top1:.2f}"
        confused = f"{self.confused_with} ({self.confused_count})" if self.confused_with else "-"
        return [self.name, str(self.images), str(self.correct), top1, confused]


class ClassSection(StrictModel):
    """One target's registered artifact, class by class (``confusion[true][predicted]``)."""

    target: str
    artifact: str
    registered: bool
    images: int
    misclassified: int
    classes: list[ClassRow]
    confusion: list[list[int]]
    confusion_plot: str | None = None
    errors_plot: str | None = None
    note: str | None = None


def per_class_rows(labels: np.ndarray, predicted: np.ndarray, names: list[str]) -> list[ClassRow]:
    """Images, correct and top-1 per class, and each class's most frequent wrong prediction."""
    matrix = confusion_matrix(labels, predicted, len(names))
    rows = []
    for k, name in enumerate(names):
        images, correct = int(matrix[k].sum()), int(matrix[k, k])
        wrong = matrix[k].copy()
        wrong[k] = 0
        other = int(wrong.argmax())
        rows.append(
            ClassRow(
                index=k, name=name, images=images, correct=correct,
                top1=correct / images if images else None,
                confused_with=names[other] if wrong[other] else None,
                confused_count=int(wrong[other]),
            )
        )  # fmt: skip
    return rows


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return matrix


def pick_errors(labels: np.ndarray, predicted: np.ndarray, limit: int = MAX_ERRORS) -> list[int]:
    """Up to ``limit`` misclassified images, the true classes taken in turn (eval order within
    each), so one bad class does not fill the grid."""
    wrong = np.flatnonzero(labels != predicted)
    queues = [list(wrong[labels[wrong] == k]) for k in np.unique(labels[wrong])]
    picked: list[int] = []
    while len(picked) < limit and any(queues):
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(int(queue.pop(0)))
    return picked


def displayable(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Eval images (as the artifact takes them) as float (N, H, W, C) in [0, 1] for a plot."""
    x = images.astype(np.float32)
    if spec.layout == "NCHW":
        x = x.transpose(0, 2, 3, 1)
    if spec.preprocessing == "embedded":
        x = x / np.float32(spec.scale)
    else:  # the normalised tensor: undo mean and std
        x = x * np.asarray(spec.std, np.float32) + np.asarray(spec.mean, np.float32)
    return np.clip(x, 0.0, 1.0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: np.ndarray, names: list[str], title: str, path: Path) -> Path:
    """The confusion matrix as an image: counts in the cells, rows normalised for the colour."""
    plt = _pyplot()
    n = len(names)
    side = min(14.0, 2.5 + 0.55 * n)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    shown = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    if n <= 30:
        for i, j in np.ndindex(matrix.shape):
            if matrix[i, j]:
                colour = "white" if shares[i, j] > 0.5 else "black"
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color=colour)
    labels = [name[:14] for name in names]
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set(title=title, xlabel="predicted class", ylabel="true class")
    fig.colorbar(shown, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_errors(images: np.ndarray, titles: list[str], title: str, path: Path) -> Path:
    """A grid of images (N, H, W, C in [0, 1]), each with its title (true and predicted)."""
    plt = _pyplot()
    count = len(images)
    cols = min(GRID_COLUMNS, count)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, text in zip(axes.flat, images, titles, strict=False):
        grey = image.shape[2] == 1
        ax.imshow(image[..., 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=1)
        ax.set_title(text, fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def registered_artifacts(
    config: RunConfig,
    run: RunFolder,
    reports: dict[str, ValidationReport],
    outcome: RegistryOutcome | None,
) -> dict[str, str]:
    """Target spec -> the artifact this config registered for it: ``outcome`` (the run's
    ``registry.json``, as the report read it), or per target ``registry-targets.json``; empty
    when the config registers nothing. A file the config does not write (left by an earlier run
    of the folder with other registry settings) is not read."""
    if not config.registry.enabled:
        return {}
    if per_target_mode(config):
        per_target = run.root / PER_TARGET_FILE
        if not per_target.is_file():
            return {}
        targets = PerTargetOutcome.model_validate_json(per_target.read_text()).targets
        return {
            spec: t.registered.artifact
            for spec, t in targets.items()
            if t.registered is not None and spec in reports
        }
    return dict.fromkeys(reports, outcome.artifact) if outcome is not None else {}


def _measured(report: ValidationReport, name: str | None) -> ArtifactResult | None:
    """The named artifact's result, or (nothing registered) the most accurate one measured."""
    measured = [r for r in report.results if r.top1 is not None]
    if name is not None:
        return next((r for r in measured if r.artifact == name), None)
    return max(measured, key=lambda r: r.top1 or 0.0, default=None)


def class_sections(
    run: RunFolder, reports: dict[str, ValidationReport], chosen: dict[str, str]
) -> list[ClassSection]:
    """One section per target, from its validation run and the export's eval set; ``chosen``:
    the artifact registered per target (:func:`registered_artifacts`), the most accurate one
    measured where it is empty."""
    eval_path = run.export / EVAL_FILE
    if not eval_path.is_file() or not reports:
        return []
    digest = eval_set_digest(eval_path)
    with np.load(eval_path, allow_pickle=False) as data:
        labels, images = data["labels"].astype(np.int64), data["images"]
    sections = []
    for spec, report in reports.items():
        result = _measured(report, chosen.get(spec) if chosen else None)
        if result is None:
            continue
        section = ClassSection(
            target=spec, artifact=result.artifact, registered=bool(chosen), images=0,
            misclassified=0, classes=[], confusion=[],
        )  # fmt: skip
        predicted = result.predicted_classes()
        if report.eval_set_sha256 != digest:
            section.note = f"{EVAL_FILE} changed since the validation on {spec}: validate again"
        elif predicted is None:
            section.note = "the validation run recorded no class per image: validate again"
        else:
            fill_section(section, run, labels[: len(predicted)], predicted, images)
        sections.append(section)
    return sections


def fill_section(
    section: ClassSection,
    run: RunFolder,
    labels: np.ndarray,
    predicted: np.ndarray,
    images: np.ndarray,
) -> None:
    """The table, the matrix and both plots of one section (plots beside the report)."""
    try:
        manifest = read_manifest(run.export / section.artifact)
    except ArtifactError as exc:
        section.note = str(exc)
        return
    names = list(manifest.class_names)
    section.classes = per_class_rows(labels, predicted, names)
    matrix = confusion_matrix(labels, predicted, len(names))
    section.confusion = matrix.tolist()
    section.images, section.misclassified = len(labels), int((labels != predicted).sum())
    where = f"{section.artifact} on {section.target}"
    plot = run.root / f"confusion-{slug(section.target)}.png"
    section.confusion_plot = plot_confusion(matrix, names, f"{where}: confusion", plot).name
    errors = pick_errors(labels, predicted)
    if errors:
        titles = [f"true {names[labels[i]][:12]}\npred {names[predicted[i]][:12]}" for i in errors]
        shown = displayable(images[errors], manifest.input)
        plot = run.root / f"errors-{slug(section.target)}.png"
        title = f"{where}: {len(errors)} of {section.misclassified} misclassified test images"
        section.errors_plot = plot_errors(shown, titles, title, plot).name


def class_blocks(sections: list[ClassSection], root: Path) -> list[tuple]:
    """The report's blocks: per target, a line, the table and the two images."""
    blocks: list[tuple] = []
    for s in sections:
        which = "registered" if s.registered else "not registered: the most accurate measured"
        blocks += [("h2", f"Per class on {s.target}: {s.artifact}")]
        if s.note:
            blocks.append(("p", f"{s.artifact} ({which}): no per-class figures, {s.note}."))
            continue
        blocks += [
            ("p", f"{s.artifact} ({which}) on {s.target}, the classes its validation run gave "
                  f"the {s.images} test images: {s.misclassified} misclassified."),
            ("table", COLUMNS, [row.cells() for row in s.classes]),
            ("img", f"confusion matrix on {s.target}", root / str(s.confusion_plot)),
        ]  # fmt: skip
        if s.errors_plot:
            blocks.append(("img", f"misclassified images on {s.target}", root / s.errors_plot))
        else:
            blocks.append(("p", "No test image misclassified."))
    return blocks
