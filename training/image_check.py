"""What an image folder holds, checked before any training (``onedge data check``, ``onedge run``).

:func:`scan_layout` walks ``data.root/{train,val[,test]}/<class>/`` (class folders sorted by
name) and refuses, with one clear line, a missing train/ or val/, an empty class folder, a class
in one split and not another, and a symlink that leads out of ``data.root``. The decoded files'
records (:mod:`training.data.cache`) then give :func:`summarise` the images per class and split,
the size and mode histograms, the bad files and the byte-identical images in two splits;
:func:`enforce` stops on bad files (unless ``data.on_bad_image: skip``), on a class left without
images, and on duplicates across splits (unless ``data.allow_duplicates: true``). Nothing in the
folder is ever written.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.config import DataConfig
from training.errors import BadImageError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SPLITS = ("train", "val", "test")
SIDE_BINS = (32, 64, 128, 256, 512, 1024)  # shorter-side histogram edges in pixels


@dataclass
class FolderLayout:
    """The image files of a folder: ``files[split]`` are (path, class index), sorted."""

    root: Path
    classes: tuple[str, ...]
    files: dict[str, list[tuple[Path, int]]]
    ignored: list[str] = field(default_factory=list)  # files not named like images

    @property
    def has_test(self) -> bool:
        return "test" in self.files


def _inside(path: Path, root: Path) -> None:
    """Refuse a symlink whose target is outside ``root`` (or missing)."""
    if not path.is_symlink():
        return
    target = path.resolve()
    if not target.exists():
        raise DataError(f"{path} is a broken symlink (to {target}): remove it or fix the link")
    if not target.is_relative_to(root):
        raise DataError(
            f"{path} is a symlink to {target}, outside data.root {root}: copy the file into "
            "the folder or point data.root at a folder holding both"
        )


def _class_files(folder: Path, root: Path, ignored: list[str]) -> list[Path]:
    """Image files under one class folder (recursively, sorted), symlinks checked."""
    found, seen = [], set()
    for current, dirs, names in os.walk(folder, followlinks=True):
        here = Path(current)
        _inside(here, root)
        real = here.resolve()
        if real in seen:  # a link back into the tree: walk each folder once
            dirs.clear()
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(names):
            path = here / name
            _inside(path, root)
            if name.startswith("."):
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.append(path)
            else:
                ignored.append(path.relative_to(root).as_posix())
    return found


def scan_layout(root: Path | None) -> FolderLayout:
    """The folder's classes and image files per split; structural problems raise DataError."""
    if root is None or not ((root / "train").is_dir() and (root / "val").is_dir()):
        raise DataError(
            "imagefolder needs data.root holding train/ and val/ (optionally test/), each with "
            f"one sub-folder per class; got data.root={root}"
        )
    root = Path(root).expanduser().resolve()
    splits = [s for s in SPLITS if (root / s).is_dir()]
    names: dict[str, list[str]] = {}
    ignored: list[str] = []
    for split in splits:
        _inside(root / split, root)
        names[split] = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
        ignored += sorted(
            p.relative_to(root).as_posix() for p in (root / split).iterdir() if p.is_file()
        )
    classes = tuple(names["train"])
    if not classes:
        raise DataError(f"{root / 'train'} holds no class folders: one sub-folder per class")
    for split in splits[1:]:
        missing = [c for c in classes if c not in names[split]]
        extra = [c for c in names[split] if c not in classes]
        if missing:
            raise DataError(f"class {missing[0]!r} is in train/ but not in {split}/ ({root})")
        if extra:
            raise DataError(f"class {extra[0]!r} is in {split}/ but not in train/ ({root})")
    files: dict[str, list[tuple[Path, int]]] = {}
    for split in splits:
        files[split] = []
        for label, name in enumerate(classes):
            found = _class_files(root / split / name, root, ignored)
            if not found:
                raise DataError(
                    f"{root / split / name} holds no image files ({', '.join(IMAGE_SUFFIXES)}): "
                    "add images or remove the class from every split"
                )
            files[split] += [(path, label) for path in found]
    return FolderLayout(root, classes, files, ignored)


@dataclass
class DataCheck:
    """The numbers ``onedge data check`` prints and ``report.json`` holds (``data_check``)."""

    root: str
    classes: list[str]
    images: dict[str, dict[str, int]]  # split -> class -> usable images
    sizes: dict[str, int]  # shorter-side bin -> images
    modes: dict[str, int]  # PIL mode (and format) -> images
    bad_files: list[dict[str, str]]  # {"file", "reason"}
    missing: dict[str, list[str]]  # split -> classes without a usable image
    duplicates: list[list[str]]  # files with identical bytes in two or more splits
    ignored: list[str]
    skipped: list[str] = field(default_factory=list)  # bad files left out (on_bad_image=skip)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _side_bin(side: int) -> str:
    low = 0
    for edge in SIDE_BINS:
        if side < edge:
            return f"{low}-{edge - 1}"
        low = edge
    return f">={SIDE_BINS[-1]}"


def summarise(
    layout: FolderLayout, records: Mapping[str, Iterable[Any]], cfg: DataConfig
) -> DataCheck:
    """The check's numbers from each split's decode records (:class:`FileRecord`, in file order)."""
    images: dict[str, dict[str, int]] = {}
    sizes, modes, hashes = Counter(), Counter(), defaultdict(set)
    bad = []
    for split, split_records in records.items():
        counts = Counter()
        for (_path, label), record in zip(layout.files[split], split_records, strict=True):
            if record.error is not None:
                bad.append({"file": record.name, "reason": record.error})
                continue
            counts[layout.classes[label]] += 1
            sizes[_side_bin(min(record.width, record.height))] += 1
            modes[f"{record.mode} {record.format}".strip()] += 1
            hashes[record.sha256].add((split, record.name))
        images[split] = {name: counts[name] for name in layout.classes}
    missing = {s: [c for c, n in per.items() if n == 0] for s, per in images.items()}
    duplicates = sorted(
        sorted(name for _, name in found)
        for found in hashes.values()
        if len({split for split, _ in found}) > 1
    )
    skipped = [b["file"] for b in bad] if cfg.on_bad_image == "skip" else []
    return DataCheck(
        str(layout.root), list(layout.classes), images, dict(sorted(sizes.items())),
        dict(modes.most_common()), bad, {s: m for s, m in missing.items() if m}, duplicates,
        layout.ignored, skipped,
    )  # fmt: skip


def enforce(check: DataCheck, cfg: DataConfig) -> None:
    """Stop (one line, a DataError) on what would make the run's numbers wrong."""
    if check.bad_files and cfg.on_bad_image == "stop":
        first, more = check.bad_files[0], len(check.bad_files) - 1
        also = f" (and {more} more bad file{'s' * (more > 1)})" if more else ""
        raise BadImageError(
            str(Path(check.root) / first["file"]),
            f"{first['reason']}{also}; remove it, or set data.on_bad_image=skip to leave bad "
            "files out (`onedge data check` lists them)",
        )
    for split, classes in check.missing.items():
        raise DataError(
            f"class {classes[0]!r} has no usable image in {split}/ once bad files are left out "
            f"({check.root})"
        )
    if check.duplicates and not cfg.allow_duplicates:
        group, more = check.duplicates[0], len(check.duplicates) - 1
        also = f" and {more} more group{'s' * (more > 1)}" if more else ""
        raise DataError(
            f"identical images in two splits inflate every accuracy: {' = '.join(group)}{also} "
            f"in {check.root}; remove them or set data.allow_duplicates=true"
        )


def print_check(check: DataCheck, console: Any) -> None:
    """The check as rich tables: images per class and split, sizes, modes, problems."""
    from rich.table import Table

    splits = list(check.images)
    table = Table(title=f"images in {check.root}")
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    for name in check.classes:
        table.add_row(name, *(str(check.images[s][name]) for s in splits))
    table.add_row("total", *(str(sum(check.images[s].values())) for s in splits), style="bold")
    console.print(table)
    shapes = Table(title="shorter side (px) and mode")
    for column in ("shorter side", "images", "mode / format", "images "):
        shapes.add_column(column, justify="right" if "images" in column else "left")
    rows_s, rows_m = list(check.sizes.items()), list(check.modes.items())
    for i in range(max(len(rows_s), len(rows_m))):
        s = rows_s[i] if i < len(rows_s) else ("", "")
        m = rows_m[i] if i < len(rows_m) else ("", "")
        shapes.add_row(str(s[0]), str(s[1]), str(m[0]), str(m[1]))
    console.print(shapes)
    for line in problem_lines(check):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def problem_lines(check: DataCheck) -> list[str]:
    """One line per problem (bad file, class missing from a split, duplicate group)."""
    verb = "skipped" if check.skipped else "bad"
    lines = [f"{verb}: {b['file']}: {b['reason']}" for b in check.bad_files]
    lines += [f"missing from {s}/: {', '.join(c)}" for s, c in check.missing.items()]
    lines += [f"duplicate across splits: {' = '.join(g)}" for g in check.duplicates]
    if check.ignored:
        lines.append(f"ignored {len(check.ignored)} file(s) not named like images, e.g. {check.ignored[0]}")  # fmt: skip
    return lines or ["no problems found"]
