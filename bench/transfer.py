"""Does the start matter? Fresh weights against weights pretrained on other classes.

For each backbone (onedge's ResNet-20, one timm network): train it once (seed 0) on five
Fashion-MNIST classes (``--source-classes``, ``--source-per-class`` images each), save its
plain student's state dict without the classifier (what a user brings: a backbone file), then
train on the other five classes with ``--per-class`` images each, three ways, with the same
epochs, schedule, images and seeds:

    scratch      one branch from fresh weights
    pretrained   one branch from the saved file (``training.init_weights.init_network``)
    one          ONE, 3 branches, every branch and the trunk from the saved file (branch 0)

Top-1 on the target classes' test images (a fixed subset, ``--test-per-class`` each). Per pair,
the seed-level paired t-test of ``training.stats.seed_test`` (the unit is the training seed);
a gain whose CI includes 0 is reported as not shown. Every finished run is saved at once to
``--out/transfer-<backbone>.json``, so an interrupted run resumes where it stopped, and one
process per backbone may run side by side:

    python -m bench.transfer --seeds 0 1 2 --threads 1 --backbones resnet20
    python -m bench.transfer --seeds 0 1 2 --threads 1 --backbones timm/mobilenetv3_small_100
    python -m bench.transfer --no-train     # the table of what is saved
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from onedge.files import atomic_write, sha256_file
from training.config import ModelConfig
from training.init_weights import init_network
from training.losses import one_loss
from training.models import build_model
from training.stats import seed_test

ROOT = Path("/usr/share/datasets/fashion-mnist")
BACKBONES = {"resnet20": {}, "timm/mobilenetv3_small_100": {"branch_point": 3}}
ARMS = ("scratch", "pretrained", "one")


def read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def subset(images, labels, classes, per_class, seed):
    """``per_class`` images of each class (a fixed draw), labels renumbered 0..len-1."""
    rng = np.random.default_rng(seed)
    keep = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    )
    x = torch.from_numpy(images[keep].astype(np.float32) / 255.0).unsqueeze(1)
    x = (x - 0.2860) / 0.3530
    y = torch.from_numpy(np.searchsorted(np.array(classes), labels[keep])).long()
    return x, y


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop (pad 2) and horizontal flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2,), generator=generator).tolist()
    out = padded[:, :, dy : dy + h, dx : dx + w]
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def train(model, x, y, *, epochs, seed, lr=0.05, batch=64, ensemble=False):
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9, weight_decay=5e-4
    )
    steps = epochs * -(-len(x) // batch)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            if len(idx) < 2:
                continue
            out = model(augment(x[idx], generator))
            if ensemble:
                loss, _ = one_loss(out.branch_logits, out.gate_weights, y[idx], T=3.0)
            else:
                loss = F.cross_entropy(out.branch_logits[0], y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


@torch.no_grad()
def top1(model, x, y) -> float:
    model.eval()
    correct = sum(
        (model(x[i : i + 500]).branch_logits[0].argmax(1) == y[i : i + 500]).sum().item()
        for i in range(0, len(x), 500)
    )
    return correct / len(x)


def build(name: str, branches: int, seed: int, classes: int):
    torch.manual_seed(seed)
    cfg = ModelConfig(name=name, branches=branches, **BACKBONES[name])
    return build_model(cfg, num_classes=classes, in_channels=1, image_size=28)


def pretrain(name: str, args, data, folder: Path) -> Path:
    """The backbone file: seed 0 on the source classes, classifier left out."""
    path = folder / f"pretrained-{name.replace('/', '_')}.pt"
    if path.is_file():
        return path
    x, y = data["source"]
    t0 = time.time()
    model = train(build(name, 1, 0, 5), x, y, epochs=args.source_epochs, seed=0)
    student = model.extract(0).state_dict()
    classifier = [k for k, v in student.items() if k.startswith("head.") and v.shape[:1] == (5,)]
    state = {k: v for k, v in student.items() if k not in classifier}
    torch.save(state, path)
    print(f"{name}: pretrained in {time.time() - t0:.0f} s, source top-1 "
          f"{top1(model, *data['source_test']):.4f} -> {path.name}", flush=True)  # fmt: skip
    return path


def run_arm(name, arm, seed, args, data, weights) -> dict:
    x, y = data["target"]
    t0 = time.time()
    model = build(name, 3 if arm == "one" else 1, seed, 5)
    if arm != "scratch":
        report = init_network(model, weights)
        print("  ", report.summary(), flush=True)
    train(model, x, y, epochs=args.epochs, seed=seed, ensemble=arm == "one")
    return {"top1": top1(model, *data["target_test"]), "seconds": round(time.time() - t0, 1)}


def table(results: dict) -> str:
    lines = [
        "| backbone | arm | seeds | top-1 mean | vs scratch: mean diff [95% CI] | t-test p | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in results:
        runs = results[name]
        base = runs.get("scratch", {})
        for arm in ARMS:
            mine = runs.get(arm, {})
            seeds = sorted(set(mine) & set(base), key=int)
            if not mine:
                continue
            mean = np.mean([r["top1"] for r in mine.values()])
            if arm == "scratch" or not seeds:
                lines.append(f"| {name} | {arm} | {len(mine)} | {mean:.4f} | | | |")
                continue
            test = seed_test([base[s]["top1"] for s in seeds], [mine[s]["top1"] for s in seeds])
            ci = "" if test.low is None else f" [{test.low * 100:+.2f}, {test.high * 100:+.2f}]"
            shown = test.low is not None and (test.low > 0 or test.high < 0)
            verdict = ("gain shown" if test.low > 0 else "loss shown") if shown else "not shown"
            p = "n/a" if test.p_value is None else f"{test.p_value:.3g}"
            lines.append(
                f"| {name} | {arm} | {len(seeds)} | {mean:.4f} | {test.mean * 100:+.2f} points{ci} "
                f"| {p} | {verdict}{'' if test.reason is None else ' (' + test.reason + ')'} |"
            )
    return "\n".join(lines)


def store_of(folder: Path, name: str) -> Path:
    return folder / f"transfer-{name.replace('/', '_')}.json"


def run_backbone(name: str, args, data) -> None:
    """Every seed's three arms for ``name``, each saved as soon as it is done."""
    store = store_of(args.out, name)
    saved = json.loads(store.read_text()) if store.is_file() else {}
    runs = saved.setdefault("results", {})
    saved["settings"] = {
        k: str(v) for k, v in vars(args).items() if k not in ("seeds", "backbones")
    }
    saved["machine"] = (
        f"{platform.processor() or platform.machine()}, {args.threads} torch thread(s)"
    )
    for seed in args.seeds:
        weights = pretrain(name, args, data, args.out)
        saved["weights_sha256"] = sha256_file(weights)
        for arm in ARMS:
            done = runs.setdefault(arm, {})
            if str(seed) in done:
                continue
            done[str(seed)] = run_arm(name, arm, seed, args, data, weights)
            print(f"{name} {arm} seed {seed}: {done[str(seed)]}", flush=True)
            saved["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            atomic_write(store, json.dumps(saved, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--source-per-class", type=int, default=600)
    parser.add_argument("--source-epochs", type=int, default=3)
    parser.add_argument("--test-per-class", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-out/transfer"))
    parser.add_argument(
        "--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES),
        help="one process per backbone may run at once: each keeps its own JSON file",
    )  # fmt: skip
    parser.add_argument("--no-train", action="store_true", help="the table of the saved runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    train_x, train_y = (
        read_idx(ROOT / "train-images-idx3-ubyte.gz"),
        read_idx(ROOT / "train-labels-idx1-ubyte.gz"),
    )
    test_x, test_y = (
        read_idx(ROOT / "t10k-images-idx3-ubyte.gz"),
        read_idx(ROOT / "t10k-labels-idx1-ubyte.gz"),
    )
    source, target = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
    data = {
        "source": subset(train_x, train_y, source, args.source_per_class, 0),
        "source_test": subset(test_x, test_y, source, args.test_per_class, 0),
        "target": subset(train_x, train_y, target, args.per_class, 1),
        "target_test": subset(test_x, test_y, target, args.test_per_class, 0),
    }
    for name in args.backbones if not args.no_train else []:
        run_backbone(name, args, data)
    results = {}
    for name in BACKBONES:
        store = store_of(args.out, name)
        if store.is_file():
            results[name] = json.loads(store.read_text())["results"]
    print(table(results))


if __name__ == "__main__":
    main()
