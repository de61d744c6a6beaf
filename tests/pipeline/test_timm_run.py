"""onedge run on a timm backbone started from a saved state dict: trains (ONE, 3 branches),
exports, validates, registers; the checkpoint and the manifests name the init file's sha256."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from onedge.files import sha256_file
from pipeline.config import dump_config, load_config
from tests.conftest import ROOT
from training.models.timm_family import timm_reference

pytestmark = pytest.mark.slow

SETTINGS = [
    "model.name=timm/mobilenetv3_small_100",
    "model.branches=3",
    "model.branch_point=3",
    "data.limit_train=128",
    "data.batch_size=32",
    "data.calibration_size=32",
    "method.rampup_epochs=1",
    "train.epochs=1",
    "train.lr=0.02",
    "train.threads=1",
    "train.progress=false",
    "export.formats=[onnx]",
    "export.precisions=[fp32,int8]",
    "export.calibration_size=32",
    "export.eval_limit=512",  # a fixed subset of the test images keeps the run short
    "validate.settings.eval_limit=512",
    "export.ort_int8.candidates=[qdq-s8s8-pre]",
    "export.ort_int8.timing_seconds=0.1",
    "validate.settings.warmup_seconds=0.1",
    "validate.settings.warmup_calls=5",
    "validate.settings.timed_seconds=0.2",
    "validate.settings.timed_calls=20",
    "validate.settings.throughput_calls=2",
    "validate.gates.max_top1_drop=1.0",
    "validate.gates.min_agreement=0.0",
    "validate.gates.max_p99_ms={local-cpu: 1000.0}",
    "validate.retries=0",
    "registry.retries=0",
]


def test_onedge_run_from_pretrained_timm_weights(prefect_server, tmp_path: Path):
    from pipeline.cli import main
    from training.checkpoint import load_checkpoint

    torch.manual_seed(0)  # "pretrained" elsewhere: timm's own network, RGB, 1000 classes
    weights = tmp_path / "mobilenetv3_small_100.pth"
    torch.save(timm_reference("mobilenetv3_small_100", 1000, 3, 224).state_dict(), weights)
    sha = sha256_file(weights)
    config = load_config(
        ROOT / "configs" / "fashion-mnist-one.yaml", [*SETTINGS, f"model.init={weights}"]
    )
    path = tmp_path / "timm.yaml"
    path.write_text(dump_config(config))
    out = tmp_path / "run"
    assert main(["run", "--config", str(path), "--out", str(out)]) == 0
    (checkpoint,) = (out / "train").glob("checkpoint.pt")  # the run folder's training stage
    loaded = load_checkpoint(checkpoint)
    assert loaded.init_sha256 == sha and loaded.model.num_branches == 3
    manifests = [json.loads(p.read_text()) for p in (out / "export").rglob("manifest.json")]
    assert manifests and all(m["init_sha256"] == sha for m in manifests)
    assert json.loads((out / "registry.json").read_text())["version"]
