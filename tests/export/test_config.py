"""Export settings and the backend registry: every registered backend is checked by name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from export.config import PRECISIONS, ExportConfig
from export.exporter import plan_artifacts
from export.formats import EXPORT_FORMATS, FormatExporter
from onedge.errors import ConfigError


def test_comma_separated_lists() -> None:
    settings = ExportConfig(formats="onnx, OpenVINO", precisions="fp32,int8,fp32")
    assert settings.formats == ["onnx", "openvino"]
    assert settings.precisions == ["fp32", "int8"]
    assert plan_artifacts(settings) == [
        ("onnx", "fp32"),
        ("onnx", "int8"),
        ("openvino", "fp32"),
        ("openvino", "int8"),
    ]


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        ExportConfig(fromats=["onnx"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"formats": "onnx,tflite"},
            "unknown export format 'tflite'; known: onnx, openvino, tensorrt",
        ),
        ({"precisions": "fp32,bf16"}, "unknown precision 'bf16'; known: fp32, fp16, int8"),
    ],
)
def test_unknown_names_list_the_known_ones(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        plan_artifacts(ExportConfig(**settings))
    assert str(info.value) == message


def test_static_batch1_only_where_a_backend_offers_it() -> None:
    assert ExportConfig().static_batch1 == ["openvino"]
    assert ExportConfig(static_batch1="OpenVINO, ").static_batch1 == ["openvino"]
    with pytest.raises(ConfigError) as info:
        plan_artifacts(ExportConfig(static_batch1="onnx,tflite"))
    assert str(info.value) == (
        "export.static_batch1: 'onnx', 'tflite' has no static batch-1 variant; formats that have "
        "one: openvino"
    )


def test_empty_lists_are_refused() -> None:
    with pytest.raises(ValidationError):
        ExportConfig(formats="")


@pytest.mark.parametrize("name", EXPORT_FORMATS.names())
def test_registered_backends(name: str) -> None:
    backend = EXPORT_FORMATS.get(name)
    assert issubclass(backend, FormatExporter) and backend.name == name
    assert backend.precisions and set(backend.precisions) <= set(PRECISIONS)
    assert all(pair[0] == name for pair in plan_artifacts(ExportConfig(formats=name)))


def test_defaults_match_the_acceptance_bars() -> None:
    settings = ExportConfig()
    assert settings.calibration_size == 512 and settings.opset >= 17
    assert settings.tolerances.fp32_max_abs_diff == 1e-4
    assert len(plan_artifacts(settings)) == 9
