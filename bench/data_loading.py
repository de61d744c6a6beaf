"""Seconds per training epoch: onedge's image-folder loader against torchvision's ImageFolder.

A folder of JPEGs is generated from Fashion-MNIST (upscaled to random sizes of 64-160 px and
aspects of 3/4-4/3, tinted RGB, 10 classes), then both loaders read its train/ split, epoch
after epoch, in one process, their epochs interleaved (the order alternates):

- baseline: ``torchvision.datasets.ImageFolder`` with ``RandomResizedCrop(size)``,
  ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` and a ``DataLoader`` with
  ``num_workers`` (default 2) and ``batch_size``, shuffled; every epoch decodes every JPEG;
- onedge: ``load_data`` (scan, decode once into the uint8 cache with worker processes, counted
  in epoch 1) and ``make_loader(..., augment="rrc+flip")``: random resized crops (the same
  scale and ratio ranges) and flips of the cached images. A last row times a later run:
  ``load_data`` again (it reads the cache) and one epoch, against the baseline's first epoch.

No model runs: an epoch is the time to produce every normalised batch. Run from the
repository root::

    python -m bench.data_loading [--images 2400] [--epochs 4] [--size 64] [--folder DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.host import command_line, machine

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")  # fmt: skip


def fashion_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` Fashion-MNIST training images and labels (a partial gzip read)."""
    import gzip

    with gzip.open(FASHION_MNIST / "train-images-idx3-ubyte.gz") as stream:
        stream.read(16)
        images = np.frombuffer(stream.read(count * 784), np.uint8).reshape(-1, 28, 28)
    with gzip.open(FASHION_MNIST / "train-labels-idx1-ubyte.gz") as stream:
        stream.read(8)
        labels = np.frombuffer(stream.read(count), np.uint8)
    return images, labels


def write_folder(root: Path, count: int, seed: int = 0) -> Path:
    """``root/{train,val}/<class>/*.jpg``: ``count`` train JPEGs (64-160 px) and
    max(count // 50, 100) val JPEGs (onedge's layout needs val/; only train/ is timed)."""
    rng = np.random.default_rng(seed)
    total = count + max(count // 50, 100)  # val/ holds every class
    images, labels = fashion_images(total)
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        split = "train" if i < count else "val"
        side, aspect = int(rng.integers(64, 161)), float(rng.uniform(0.75, 4 / 3))
        width = int(np.clip(round(side * aspect**0.5), 64, 160))
        height = int(np.clip(round(side / aspect**0.5), 64, 160))
        grey = np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR))
        rgb = (grey[..., None] * rng.uniform(0.6, 1.0, 3)).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, "JPEG", quality=90)
        folder = root / split / CLASSES[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:06d}.jpg").write_bytes(buffer.getvalue())
    return root


def baseline_loader(root: Path, size: int, batch: int, workers: int, seed: int):
    from torchvision import datasets, transforms

    from training.image_transform import IMAGENET_MEAN, IMAGENET_STD

    transform = transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])  # fmt: skip
    folder = datasets.ImageFolder(root / "train", transform=transform)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        folder, batch_size=batch, shuffle=True, num_workers=workers, generator=generator
    )


def timed_epoch(batches) -> tuple[float, int]:
    start, seen = time.perf_counter(), 0
    for x, _ in batches:
        seen += len(x)
    return time.perf_counter() - start, seen


class OnedgeEpochs:
    """onedge's loader; its first epoch includes load_data (scan + decode into the cache)."""

    def __init__(self, root: Path, cache: Path, size: int, batch: int, workers: int) -> None:
        from training.config import DataConfig

        self.cfg = DataConfig(
            name="imagefolder", root=root, image_size=size, cache_dir=cache,
            decode_workers=workers, batch_size=batch, calibration_size=0,
        )  # fmt: skip
        self.loader, self.epoch = None, 0

    def run(self) -> tuple[float, int]:
        from training.data import RANDOM_RESIZED_CROP, load_data, make_loader

        start = time.perf_counter()
        if self.loader is None:
            splits = load_data(self.cfg)
            self.loader = make_loader(
                splits.train, self.cfg.batch_size, shuffle=True, seed=0,
                augment=RANDOM_RESIZED_CROP,
            )  # fmt: skip
        self.loader.set_epoch(self.epoch)
        self.epoch += 1
        _, seen = timed_epoch(self.loader)
        return time.perf_counter() - start, seen


def measure(root: Path, cache: Path, args: argparse.Namespace) -> list[dict]:
    baseline = baseline_loader(root, args.size, args.batch_size, args.workers, args.seed)
    onedge = OnedgeEpochs(root, cache, args.size, args.batch_size, args.workers)
    rows = []
    for epoch in range(1, args.epochs + 1):
        load = os.getloadavg()[0]
        order = ("baseline", "onedge") if epoch % 2 else ("onedge", "baseline")
        row = {"epoch": epoch, "first": order[0], "load_1min": round(load, 2)}
        for name in order:
            seconds, seen = timed_epoch(baseline) if name == "baseline" else onedge.run()
            row[f"{name}_s"], row[f"{name}_images"] = round(seconds, 3), seen
        row["speedup"] = round(row["baseline_s"] / row["onedge_s"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    again = OnedgeEpochs(root, cache, args.size, args.batch_size, args.workers)
    seconds, _ = again.run()  # a later run: load_data reads the cache, then one epoch
    rows.append({"epoch": "next run, 1", "load_1min": round(os.getloadavg()[0], 2),
                 "onedge_s": round(seconds, 3), "baseline_s": rows[0]["baseline_s"],
                 "speedup": round(rows[0]["baseline_s"] / seconds, 2)})  # fmt: skip
    print(json.dumps(rows[-1]), flush=True)
    return rows


def cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile")
                return " ".join(f for f in wanted if f in flags)
    except OSError:
        pass
    return "unknown"


def table(rows: list[dict]) -> str:
    lines = [
        "| epoch | torchvision ImageFolder + DataLoader (s) | onedge (s) | speed-up | 1-min load |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        note = {1: " (cache build included)", "next run, 1": " (cache read included)"}.get(
            r["epoch"], ""
        )
        lines.append(
            f"| {r['epoch']} | {r['baseline_s']:.2f} | {r['onedge_s']:.2f}{note} | "
            f"{r['speedup']:.2f}x | {r['load_1min']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2400, help="training JPEGs (>= 2000)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="data.image_size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader / decode workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", type=Path, help="reuse or write the JPEG folder here")
    parser.add_argument("--json", type=Path, help="write the rows and the machine here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="onedge-bench-data-"))
    try:
        root = args.folder or work / "photos"
        if not (root / "train").is_dir():
            write_folder(root, args.images, args.seed)
        rows = measure(root, work / "cache", args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    later = [r["speedup"] for r in rows[1:-1]]
    result = {
        "command": command_line(argv),
        "machine": machine(),
        "cpu_flags": cpu_flags(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "rows": rows,
        "first_epoch_ratio": rows[0]["speedup"],
        "min_later_speedup": min(later) if later else None,
    }
    print(table(rows))
    print(f"machine: {result['machine']}; flags: {result['cpu_flags']}; {result['date']}")
    print(f"command: {result['command']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
