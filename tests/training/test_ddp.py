"""DDP under torchrun, on the CPU with the gloo backend and two processes."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "pipeline.cli", "train", "--config", str(ROOT / "configs/digits-one.yaml"),
        "--out", str(out),
        "--set", "train.epochs=2", "--set", "data.limit_train=256", "--set", "model.width=0.5",
        "--set", "train.progress=false", "--set", "train.device=cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2
    assert len(metrics["branch_top1"]) == 3
    assert proc.stdout.count("training resnet20") == 1  # only rank 0 speaks


@pytest.mark.slow
def test_torchrun_trains_a_family_with_its_adapters(tmp_path):
    """The student ensemble's adapters sit outside the network's forward: DDP must still
    reduce their gradients (every parameter used) and the checkpoint keeps them apart."""
    from training.checkpoint_file import read_checkpoint

    out = tmp_path / "ddp-students"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "pipeline.cli", "train", "--config", str(ROOT / "configs/digits-students.yaml"),
        "--out", str(out),
        "--set", "train.epochs=1", "data.limit_train=256", "model.branches=3",
        "model.width=0.5", "train.progress=false", "train.device=cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = read_checkpoint(out / "checkpoint.pt")
    assert saved["auxiliaries"] and all(k.startswith("stage") for k in saved["auxiliaries"])
    assert not any(k.startswith("stage") for k in saved["model"])
    assert json.loads((out / "metrics.json").read_text())["branch_widths"] == [1.0, 2 / 3, 1 / 3]
