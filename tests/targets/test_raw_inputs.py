"""Self-contained artifacts measured on targets: raw uint8 NHWC images, locally and over SSH.

The export writes raw images into eval.npz, so the runner feeds each target exactly what a
deployed application feeds; its top-1 must equal the export's own measurement, and the FP32
logits must stay within 1e-4 of the PyTorch student's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.config import ExportConfig
from export.exporter import export_checkpoint
from targets import SshOptions, parse_target, validate_artifacts
from tests.targets.sshd_server import SshServer

pytestmark = pytest.mark.ssh


@pytest.fixture(scope="module")
def raw_export(tmp_path_factory, digits_checkpoint: Path):
    out = tmp_path_factory.mktemp("raw-export")
    settings = ExportConfig(
        formats="onnx,openvino", precisions="fp32", input_layout="NHWC", threads=1
    )
    return export_checkpoint(digits_checkpoint, out, settings)


def test_raw_images_on_local_cpu_and_over_ssh(
    raw_export, sshd: SshServer, ssh_options: SshOptions, tmp_path: Path, fast
) -> None:
    images = np.load(raw_export.eval_file)["images"]
    assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1)
    local = validate_artifacts(raw_export.out_dir, "local-cpu", tmp_path / "local", fast)
    target = parse_target(f"ssh://{sshd.user}@127.0.0.1:{sshd.port}", options=ssh_options)
    remote = validate_artifacts(raw_export.out_dir, target, tmp_path / "ssh", fast)
    for name in ("onnx-fp32", "openvino-fp32"):
        exported = raw_export.artifact(name).test
        for report in (local, remote):
            result = report.result(name)
            assert result.top1 == pytest.approx(exported["top1"], abs=1e-12)
            assert result.agreement == 1.0 and result.verdict == "pass"
        assert remote.result(name).max_abs_diff <= 1e-4
