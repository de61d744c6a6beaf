"""INT8 care: which students have hard-swish, SiLU or squeeze-excitation, and when the report says so."""

from __future__ import annotations

import pytest

from pipeline.report.int8_care import (
    INT8_CARE_DROP,
    Int8Figure,
    activation_families,
    figures_from_export,
    int8_care,
    int8_care_lines,
)
from training.config import ModelConfig
from training.models.timm_family import timm_reference


@pytest.mark.parametrize(
    ("architecture", "families"),
    [
        ("mobilenetv3_small_100", {"hard-swish", "squeeze-excitation"}),
        ("efficientnet_b0", {"silu", "squeeze-excitation"}),
        ("efficientnet_lite0", set()),  # ReLU6, no squeeze-excitation
        ("regnetx_002", set()),
    ],
)
def test_activation_families_are_read_from_the_network(architecture, families):
    assert activation_families(timm_reference(architecture, 10, 1, 28)) == families


FIGURES = [
    Int8Figure("onnx-fp32", "fp32", 0.70),
    Int8Figure("onnx-fp16", "fp16", 0.70),
    Int8Figure("onnx-int8", "int8", 0.58),  # 12 points below onnx-fp32
    Int8Figure("onnx-int8-rr", "int8", 0.695),  # 0.5 points: within the threshold
    Int8Figure("openvino-fp32", "fp32", 0.70),
    Int8Figure("openvino-int8", "int8", None, "top-1 agreement 80% below the required 95%"),
]


def test_a_care_family_student_gets_a_line_per_int8_artifact_that_lost_accuracy():
    cases = int8_care(FIGURES, frozenset({"silu", "squeeze-excitation"}))
    assert [c.artifact for c in cases] == ["onnx-int8", "openvino-int8"]
    lost, refused = cases
    assert lost.fp32_artifact == "onnx-fp32" and lost.drop == pytest.approx(0.12)
    assert "12.00 points of test top-1 below onnx-fp32" in lost.line()
    assert "silu, squeeze-excitation" in lost.line()
    assert "onnx-int8-rr (top-1 69.50%)" in lost.advice  # the sibling that kept accuracy
    assert "onnx-fp16 (70.00%)" in lost.advice
    assert refused.drop is None and "refused by the export's gates" in refused.line()
    assert refused.fp32_artifact == "openvino-fp32"


def test_no_line_for_a_relu_student_or_a_drop_within_the_threshold():
    assert int8_care(FIGURES, frozenset()) == []
    assert int8_care(FIGURES, frozenset({"relu"})) == []
    small = [
        Int8Figure("onnx-fp32", "fp32", 0.70),
        Int8Figure("onnx-int8", "int8", 0.70 - INT8_CARE_DROP / 2),
    ]
    assert int8_care(small, frozenset({"hard-swish"})) == []
    larger = [small[0], Int8Figure("onnx-int8", "int8", 0.70 - 2 * INT8_CARE_DROP)]
    assert [c.artifact for c in int8_care(larger, frozenset({"hard-swish"}))] == ["onnx-int8"]


def test_students_of_a_family_export_compare_with_their_own_fp32():
    figures = [
        Int8Figure("s0-w1.0-onnx-fp32", "fp32", 0.70),
        Int8Figure("s0-w1.0-onnx-int8", "int8", 0.60),
        Int8Figure("s1-w0.5-onnx-fp32", "fp32", 0.60),
        Int8Figure("s1-w0.5-onnx-int8", "int8", 0.60),
    ]
    (case,) = int8_care(figures, frozenset({"silu"}))
    assert case.artifact == "s0-w1.0-onnx-int8" and case.fp32_artifact == "s0-w1.0-onnx-fp32"
    assert "s1-w0.5" not in case.advice  # another student's artifact is no advice for this one


def test_report_lines_from_export_json_and_the_runs_model_config():
    exported = {
        "dataset": {"num_classes": 10, "in_channels": 1, "image_size": 28},
        "artifacts": [
            {"name": "onnx-fp32", "precision": "fp32", "test": {"top1": 0.6865}},
            {"name": "onnx-int8", "precision": "int8", "test": {"top1": 0.5705}},
            {"name": "openvino-int8", "precision": "int8", "test": {"top1": 0.681}},
        ],
        "failed": [{"name": "onnx-int8-rr", "reason": "agreement 65% below 95%"}],
    }
    assert [f.name for f in figures_from_export(exported)][-1] == "onnx-int8-rr"
    lines = int8_care_lines(ModelConfig(name="timm/efficientnet_b0", branches=1), exported)
    assert len(lines) == 2, lines
    assert lines[0].startswith("onnx-int8 is 11.60 points of test top-1 below onnx-fp32")
    assert "openvino-int8 (top-1 68.10%)" in lines[0]
    relu = int8_care_lines(ModelConfig(name="timm/regnetx_002", branches=1), exported)
    assert relu == []
