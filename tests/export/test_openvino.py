"""OpenVINO IR in FP32, FP16 and INT8: written, read back and run on this CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.errors import ExportError, OnnxModelError
from export.onnx import torch_logits
from export.openvino import compile_openvino, onnx_to_openvino, reshape_static, run_openvino


@pytest.fixture(scope="module")
def irs(tmp_path_factory, cnn_onnx: Path, images: np.ndarray) -> dict[str, Path]:
    out = {}
    for precision in ("fp32", "fp16", "int8"):
        xml = tmp_path_factory.mktemp(precision) / "model.xml"
        onnx_to_openvino(cnn_onnx, xml, precision, calibration=images[:64])
        out[precision] = xml
    return out


def test_fp32_ir_matches_pytorch(cnn, irs: dict[str, Path], images: np.ndarray) -> None:
    got = run_openvino(compile_openvino(irs["fp32"], threads=1, exact_f32=True), images)
    expected = torch_logits(cnn, images)
    assert np.abs(got - expected).max() <= 1e-4
    assert np.array_equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("batch", [1, 3])
def test_ir_has_dynamic_batch(irs: dict[str, Path], images: np.ndarray, batch: int) -> None:
    compiled = compile_openvino(irs["fp32"], threads=1)
    assert run_openvino(compiled, images[:batch], batch_size=batch).shape == (batch, 10)


def test_fp16_ir_is_compressed(cnn, irs: dict[str, Path], images: np.ndarray) -> None:
    fp32_bin = irs["fp32"].with_suffix(".bin").stat().st_size
    fp16_bin = irs["fp16"].with_suffix(".bin").stat().st_size
    assert fp16_bin < 0.6 * fp32_bin
    got = run_openvino(compile_openvino(irs["fp16"], threads=1), images)
    expected = torch_logits(cnn, images)
    assert 0 < np.abs(got - expected).max() < 5e-2


def test_int8_ir_is_quantised(irs: dict[str, Path]) -> None:
    xml = irs["int8"].read_text()
    assert "FakeQuantize" in xml or 'element_type="i8"' in xml


def test_int8_without_calibration(cnn_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="calibration"):
        onnx_to_openvino(cnn_onnx, tmp_path / "m.xml", "int8")


def test_unknown_precision(cnn_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="bf16"):
        onnx_to_openvino(cnn_onnx, tmp_path / "m.xml", "bf16")


def test_corrupt_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 30)
    with pytest.raises(OnnxModelError, match=str(bad)):
        onnx_to_openvino(bad, tmp_path / "m.xml")


def test_running_leaves_the_images_untouched(irs: dict[str, Path], images: np.ndarray) -> None:
    # OpenVINO may write into memory shared with a bound input; run_openvino copies its inputs
    compiled = compile_openvino(irs["int8"], threads=1)
    data = images.copy()
    for batch in (64, 1, 7):
        run_openvino(compiled, data, batch_size=batch)
        run_openvino(compile_openvino(irs["fp32"], threads=1), data, batch_size=batch)
    assert np.array_equal(data, images)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_reshape_static_fixes_batch_one(
    irs: dict[str, Path], images: np.ndarray, tmp_path: Path, precision: str
) -> None:
    xml = tmp_path / "static.xml"
    assert reshape_static(irs[precision], xml) == [1, 1, 12, 12]
    static = compile_openvino(xml, threads=1)
    dynamic = compile_openvino(irs[precision], threads=1)
    assert list(static.input(0).shape) == [1, 1, 12, 12]
    size, before = (
        xml.with_suffix(".bin").stat().st_size,
        irs[precision].with_suffix(".bin").stat().st_size,
    )
    assert abs(size - before) < 0.1 * before  # the weights as stored (a few shape constants more)
    got = run_openvino(static, images[:8], batch_size=1)
    assert np.abs(got - run_openvino(dynamic, images[:8])).max() <= 1e-4
    with pytest.raises(RuntimeError):
        run_openvino(static, images[:2], batch_size=2)


def test_reshape_static_needs_fixed_image_dims(tmp_path: Path) -> None:
    import openvino as ov

    param = ov.opset13.parameter([-1, 1, -1, -1], ov.Type.f32, name="input")
    model = ov.Model([ov.opset13.relu(param)], [param])
    ov.save_model(model, str(tmp_path / "dyn.xml"))
    with pytest.raises(ExportError, match="only the batch axis may be dynamic"):
        reshape_static(tmp_path / "dyn.xml", tmp_path / "static.xml")
