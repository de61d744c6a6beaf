"""ONNX export: contract (names, opset, dynamic batch, metadata), checker, parity, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.errors import OnnxModelError, ParityError
from export.onnx import (
    INPUT_NAME,
    OUTPUT_NAME,
    check_onnx,
    onnx_parity,
    ort_session,
    read_metadata,
    run_onnx,
    torch_logits,
    torch_to_onnx,
)
from tests.export.conftest import small_cnn


def test_graph_contract(cnn_onnx: Path) -> None:
    model = onnx.load(str(cnn_onnx))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # symbolic: any batch size
    metadata = read_metadata(model)
    assert metadata["onedge.source_checkpoint_sha256"] == "0" * 64
    assert metadata["onedge.class_names"] == '["a"]'
    check_onnx(cnn_onnx)


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_onnx_runtime_matches_pytorch(cnn, cnn_onnx: Path, images: np.ndarray, batch: int) -> None:
    x = images[:batch]
    got = run_onnx(ort_session(cnn_onnx, threads=1), x)
    expected = torch_logits(cnn, x)
    assert got.shape == (batch, 10)
    assert np.abs(got - expected).max() <= 1e-4


def test_export_switches_to_eval_mode(tmp_path: Path, images: np.ndarray) -> None:
    model = small_cnn(seed=1).train()  # batch statistics in train mode would differ
    path = torch_to_onnx(model, tmp_path / "m.onnx", torch.from_numpy(images[:1]))
    reference = torch_logits(model, images)
    report = onnx_parity(path, reference, images, max_abs_diff=1e-4, min_agreement=1.0)
    assert report.max_abs_diff <= 1e-4 and report.top1_agreement == 1.0


def test_parity_fails_loudly_beyond_tolerance(cnn_onnx: Path, images: np.ndarray) -> None:
    other = small_cnn(seed=7)  # same architecture, other weights
    reference = torch_logits(other, images)
    with pytest.raises(ParityError, match="max \\|diff\\|") as info:
        onnx_parity(cnn_onnx, reference, images, max_abs_diff=1e-4, min_agreement=0.0)
    assert "\n" not in str(info.value)
    with pytest.raises(ParityError, match="agreement"):
        onnx_parity(cnn_onnx, reference, images, max_abs_diff=None, min_agreement=1.0)


def test_old_opset_is_refused(cnn, tmp_path: Path, images: np.ndarray) -> None:
    with pytest.raises(OnnxModelError, match="opset 13"):
        torch_to_onnx(cnn, tmp_path / "m.onnx", torch.from_numpy(images[:1]), opset=13)


@pytest.mark.parametrize("content", [b"", b"not a protobuf \x00\xff" * 10])
def test_corrupt_onnx_is_one_clear_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    for call in (check_onnx, ort_session):
        with pytest.raises(OnnxModelError) as info:
            call(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_onnx(cnn_onnx: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.onnx"
    path.write_bytes(cnn_onnx.read_bytes()[:-500])
    with pytest.raises(OnnxModelError):
        check_onnx(path)


def test_missing_onnx(tmp_path: Path) -> None:
    with pytest.raises(OnnxModelError, match="does not exist"):
        check_onnx(tmp_path / "absent.onnx")


def test_wrong_io_names_are_refused(cnn, tmp_path: Path) -> None:
    path = tmp_path / "named.onnx"
    torch.onnx.export(
        cnn,
        (torch.zeros(1, 1, 12, 12),),
        str(path),
        input_names=["x"],
        dynamo=False,
        opset_version=17,
    )
    with pytest.raises(OnnxModelError, match="expected input 'input'"):
        check_onnx(path)


@pytest.mark.parametrize("opset", [17, 20])
def test_requested_opset_is_written(cnn, tmp_path: Path, images: np.ndarray, opset: int) -> None:
    path = torch_to_onnx(cnn, tmp_path / "m.onnx", torch.from_numpy(images[:1]), opset=opset)
    model = onnx.load(str(path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == opset
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    reference = torch_logits(cnn, images)
    onnx_parity(path, reference, images, max_abs_diff=1e-4, min_agreement=1.0)
