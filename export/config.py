"""Typed settings of one export run (pydantic, ``extra="forbid"``).

Format and precision names are checked against the export backend registry when the run
starts (:func:`export.exporter.plan_artifacts`), so an unknown name fails with a
:class:`~onedge.errors.ConfigError` listing the known ones. Lists also accept one
comma-separated string, which is what the command line passes (``--formats onnx,openvino``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from onedge.strict import StrictModel

PRECISIONS = ("fp32", "fp16", "int8")


class Tolerances(StrictModel):
    """Gates an artifact must pass against the PyTorch FP32 student.

    Parity (max |diff| of logits and top-1 agreement) is measured on the calibration images;
    test top-1 is recorded for every artifact and, for INT8, gated against the FP32 top-1.
    """

    fp32_max_abs_diff: float = Field(1e-4, gt=0.0)
    fp32_min_agreement: float = Field(1.0, ge=0.0, le=1.0)
    fp16_max_abs_diff: float = Field(5e-2, gt=0.0)
    fp16_min_agreement: float = Field(0.99, ge=0.0, le=1.0)
    int8_min_agreement: float = Field(0.95, ge=0.0, le=1.0)
    int8_max_top1_drop: float = Field(
        0.02, ge=0.0, le=1.0, description="largest test top-1 loss of an INT8 artifact (fraction)"
    )


class TensorRTOptions(StrictModel):
    """How the TensorRT engine is built (here with the Python API, or on a board with trtexec)."""

    min_batch: int = Field(1, ge=1)
    opt_batch: int = Field(1, ge=1)
    max_batch: int = Field(64, ge=1)
    workspace_mib: int = Field(1024, ge=16, description="builder memory pool limit")
    timing_cache: str | None = Field(
        "timing.cache", description="timing cache file (relative to the engine folder) or none"
    )
    builder_optimization_level: int = Field(3, ge=0, le=5)
    build_engine: bool = Field(
        False, description="also build the engine here (needs an NVIDIA GPU and tensorrt)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> TensorRTOptions:
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"TensorRT profile needs min_batch <= opt_batch <= max_batch, got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        return self


class OrtInt8Options(StrictModel):
    """The ONNX Runtime CPU INT8 variants and, within each, the search: every candidate is
    built, timed and scored on this CPU; each variant's pick is its own artifact."""

    variants: list[Literal["default", "reduce-range"]] = Field(
        default_factory=lambda: ["default", "reduce-range"],
        description="default: onnx-int8 (8-bit weights, for VNNI/AMX x86 and arm64); "
        "reduce-range: onnx-int8-rr (7-bit weights, for x86 without VNNI, e.g. AVX2)",
    )

    candidates: list[str] = Field(
        default_factory=lambda: [
            "qdq-u8s8",
            "qdq-s8s8",
            "qdq-u8s8-pre",
            "qdq-s8s8-pre",
            "qoperator-u8s8",
            "qoperator-u8s8-pre",
        ],
        description="names <format>-<activation><weight>[-pre]; -pre runs quant_pre_process",
    )
    per_channel: bool = True
    timing_seconds: float = Field(1.0, gt=0.0, description="batch-1 timing per candidate")
    accuracy_slack: float = Field(
        0.002, ge=0.0, description="top-1 (fraction) within which candidates count as equal"
    )

    @field_validator("candidates", "variants", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("variants")
    @classmethod
    def _some_variant(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one of default, reduce-range")
        return list(dict.fromkeys(value))


class ExportConfig(StrictModel):
    """Everything ``export_checkpoint`` needs besides the checkpoint and output folder."""

    formats: list[str] = Field(default_factory=lambda: ["onnx", "openvino", "tensorrt"])
    precisions: list[str] = Field(default_factory=lambda: list(PRECISIONS))
    branch: int | None = Field(None, ge=0, description="None: the branch training deployed")
    branches: Literal["deployed", "all"] | list[int] = Field(
        "deployed",
        description="deployed: one student (folders <format>-<precision>); all, or K,L,...: "
        "every named student into folders s<k>-w<width>-<format>-<precision>",
    )
    calibration_size: int = Field(512, ge=1, description="images from the calibration split")
    opset: int = Field(18, ge=17, le=23)
    openvino_int8: Literal["ptq", "accuracy_control"] = "ptq"
    max_accuracy_drop: float = Field(
        0.005, gt=0.0, le=1.0, description="accuracy-control budget on the validation split"
    )
    ort_int8: OrtInt8Options = Field(default_factory=OrtInt8Options)
    tolerances: Tolerances = Field(default_factory=Tolerances)
    tensorrt: TensorRTOptions = Field(default_factory=TensorRTOptions)
    embed_preprocessing: bool = Field(
        True,
        description="artifacts take the raw image as the data set stores it and scale and "
        "normalise inside the graph (export/preprocess.py); false: the normalised NCHW tensor",
    )
    input_layout: Literal["NCHW", "NHWC"] = Field(
        "NCHW", description="layout of the raw input when the preprocessing is embedded"
    )
    static_batch1: list[str] = Field(
        default_factory=lambda: ["openvino"],
        description="formats that also get a latency artifact with a static [1, C, H, W] input "
        "(<format>-<precision>-b1) beside the dynamic-batch one, when they are exported",
    )
    threads: int | None = Field(None, gt=0, description="CPU threads for checks and timing")
    eval_limit: int | None = Field(None, gt=0, description="cap on test images in eval.npz")

    @field_validator("formats", "precisions", "static_batch1", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("branches", mode="before")
    @classmethod
    def _branch_list(cls, value: object) -> object:
        if isinstance(value, str) and value.strip() not in ("deployed", "all"):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        return value

    @field_validator("branches")
    @classmethod
    def _branches(cls, value: object) -> object:
        if isinstance(value, list):
            if not value or any(k < 0 for k in value):
                raise ValueError("give deployed, all, or branch numbers >= 0 such as 0,2")
            return list(dict.fromkeys(value))
        return value

    @model_validator(mode="after")
    def _one_way_to_pick(self) -> ExportConfig:
        if self.branch is not None and self.branches != "deployed":
            raise ValueError("set either branch (one student) or branches, not both")
        return self

    @field_validator("static_batch1")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(name.strip().lower() for name in value if name.strip()))

    @field_validator("formats", "precisions")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        names = [name.strip().lower() for name in value if name.strip()]
        if not names:
            raise ValueError("give at least one name")
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _layout_needs_embedding(self) -> ExportConfig:
        if self.input_layout != "NCHW" and not self.embed_preprocessing:
            raise ValueError(
                "input_layout NHWC needs embed_preprocessing=true (without it the artifact "
                "takes the normalised NCHW tensor)"
            )
        return self


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part for part in value.split(",") if part.strip()]
    return value
