"""The export format registry: format name -> the exporter that writes one artifact per precision.

Each exporter turns the checked FP32 ONNX graph (and the calibration data in the context) into
an artifact folder's files, and returns a callable that runs the artifact on images so the
exporter can measure every artifact the same way. Capabilities (the precisions a format
offers) are looked up by name on the exporter, never by position in a table.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.config import ExportConfig
from export.extract import Student
from export.onnx import ort_session, run_onnx
from export.openvino import compile_openvino, onnx_to_openvino, reshape_static, run_openvino
from export.preprocess import InputContract, embed_onnx, embed_openvino
from export.qdq import onnx_to_tensorrt_qdq
from export.quantize import ORT_INT8_VARIANTS, choose_ort_int8, onnx_to_fp16, variant_candidates
from export.tensorrt import ENGINE_FILE, build_settings, load_engine, onnx_to_tensorrt, run_engine
from onedge.registry import Registry

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class ExportContext:
    """What every exporter may read: the student, the data, the FP32 ONNX graph, settings."""

    settings: ExportConfig
    student: Student
    work: Path  # scratch folder for intermediate graphs
    onnx_fp32: Path
    calibration: np.ndarray  # normalised NCHW float32: what the model body is built on
    validation: tuple[np.ndarray, np.ndarray]
    contract: InputContract | None = None  # None: the artifact takes the normalised tensor
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def threads(self) -> int | None:
        return self.settings.threads

    @property
    def embedded(self) -> bool:
        return self.contract is not None and self.contract.embedded

    def embed_onnx(self, path: Path) -> Path:
        """Put the raw-image preprocessing in front of the graph at ``path`` (if embedding)."""
        if self.embedded:
            embed_onnx(path, self.contract)
        return path

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One input image's shape at the artifact's input (without the batch axis)."""
        return self.contract.sample_shape if self.embedded else self.student.input_chw


@dataclass
class ArtifactFiles:
    """What an exporter wrote into an artifact folder."""

    files: list[str]
    model_file: str
    run: Runner
    evaluated_with: str
    extra: dict[str, Any] = field(default_factory=dict)
    static_batch: int | None = None  # None: the batch axis is dynamic


class FormatExporter:
    """Base of the format exporters: a format name and the precisions it can write."""

    name: str = ""
    precisions: tuple[str, ...] = ()
    static_batch1: bool = False  # offers a static-shape batch-1 variant (``build_static``)

    def variants(self, settings: ExportConfig, precision: str) -> list[str]:
        """The artifacts of one precision, as folder-name suffixes ("": the one artifact)."""
        return [""]

    def build(
        self, ctx: ExportContext, precision: str, folder: Path, variant: str = ""
    ) -> ArtifactFiles:
        raise NotImplementedError  # pragma: no cover - abstract

    def build_static(
        self, ctx: ExportContext, precision: str, source: Path, folder: Path
    ) -> ArtifactFiles:
        """The artifact in ``source`` (this format, dynamic batch) with its input fixed to batch 1."""
        raise NotImplementedError  # pragma: no cover - only where static_batch1 is True


EXPORT_FORMATS: Registry[type[FormatExporter]] = Registry("export format")


def graph_facts(path: Path) -> dict[str, int]:
    """The ONNX IR version and ai.onnx opset of a graph: what a runtime must read to load it."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return {"ir_version": int(model.ir_version), "opset": int(opset)}


def _onnx_runner(path: Path, threads: int | None) -> Runner:
    session = ort_session(path, threads)
    return lambda images: run_onnx(session, images)


def tensorrt_qdq_graph(ctx: ExportContext) -> tuple[Path, dict[str, int]]:
    """The checked TensorRT Q/DQ graph, built once per export run."""
    if "tensorrt-qdq" not in ctx.cache:
        path = ctx.work / "tensorrt-qdq.onnx"
        summary = onnx_to_tensorrt_qdq(ctx.onnx_fp32, path, ctx.calibration)
        ctx.cache["tensorrt-qdq"] = (path, summary.to_dict())
    return ctx.cache["tensorrt-qdq"]


def fp16_graph(ctx: ExportContext) -> Path:
    """The FP16 graph (float32 input and output), built once per export run."""
    if "fp16" not in ctx.cache:
        ctx.cache["fp16"] = onnx_to_fp16(ctx.onnx_fp32, ctx.work / "model-fp16.onnx")
    return ctx.cache["fp16"]


@EXPORT_FORMATS.register("onnx")
class OnnxExporter(FormatExporter):
    """``model.onnx`` for ONNX Runtime: FP32, FP16 (float32 I/O), INT8 chosen on this CPU."""

    name = "onnx"
    precisions = ("fp32", "fp16", "int8")

    def variants(self, settings: ExportConfig, precision: str) -> list[str]:
        """INT8: one artifact per ONNX Runtime INT8 variant (``onnx-int8``, ``onnx-int8-rr``)."""
        if precision != "int8":
            return [""]
        return [ORT_INT8_VARIANTS[name]["suffix"] for name in settings.ort_int8.variants]

    def build(
        self, ctx: ExportContext, precision: str, folder: Path, variant: str = ""
    ) -> ArtifactFiles:
        target = folder / "model.onnx"
        extra: dict[str, Any] = {}
        if precision == "fp32":
            shutil.copyfile(ctx.onnx_fp32, target)
        elif precision == "fp16":
            shutil.copyfile(fp16_graph(ctx), target)
        else:
            extra.update(ort_int8_variant(ctx, target, variant))
        ctx.embed_onnx(target)
        extra["onnx"] = graph_facts(target)
        return ArtifactFiles(
            ["model.onnx"],
            "model.onnx",
            _onnx_runner(target, ctx.threads),
            "onnxruntime-cpu",
            extra,
        )


def ort_int8_variant(ctx: ExportContext, target: Path, suffix: str) -> dict[str, Any]:
    """Build the ONNX Runtime INT8 variant with folder suffix ``suffix`` into ``target``: the
    search (:func:`export.quantize.choose_ort_int8`) among that variant's candidates, and
    the manifest's record of the recipe and the instruction sets it is meant for."""
    name = next(n for n, v in ORT_INT8_VARIANTS.items() if v["suffix"] == suffix)
    options = ctx.settings.ort_int8
    search = choose_ort_int8(
        ctx.onnx_fp32,
        target,
        ctx.calibration,
        ctx.validation,
        variant_candidates(options.candidates, name),
        per_channel=options.per_channel,
        timing_seconds=options.timing_seconds,
        accuracy_slack=options.accuracy_slack,
        threads=ctx.threads,
    )
    recipe = {
        "variant": name,
        "recipe": search["chosen"],
        "reduce_range": ORT_INT8_VARIANTS[name]["reduce_range"],
        "per_channel": options.per_channel,
        "meant_for": ORT_INT8_VARIANTS[name]["meant_for"],
        "why": ORT_INT8_VARIANTS[name]["why"],
        "chosen_on": search["cpu"],
    }
    return {"ort_int8_search": search, "int8_recipe": recipe}


@EXPORT_FORMATS.register("openvino")
class OpenVinoExporter(FormatExporter):
    """OpenVINO IR (``model.xml`` + ``model.bin``): FP32, FP16 compressed, INT8 from NNCF."""

    name = "openvino"
    precisions = ("fp32", "fp16", "int8")
    static_batch1 = True  # measured: 20-30% lower batch-1 latency than the dynamic IR

    def build(
        self, ctx: ExportContext, precision: str, folder: Path, variant: str = ""
    ) -> ArtifactFiles:
        xml = folder / "model.xml"
        facts = onnx_to_openvino(
            ctx.onnx_fp32,
            xml,
            precision,
            calibration=ctx.calibration,
            int8_mode=ctx.settings.openvino_int8,
            validation=ctx.validation,
            max_drop=ctx.settings.max_accuracy_drop,
        )
        if ctx.embedded:  # after quantising: the body is quantised, the preprocessing stays f32
            embed_openvino(xml, ctx.contract, compress_to_fp16=precision == "fp16")
            facts["preprocessing"] = "embedded (PrePostProcessor)"
        compiled = compile_openvino(xml, ctx.threads, exact_f32=True, latency=False)
        return ArtifactFiles(
            ["model.xml", "model.bin"],
            "model.xml",
            lambda images: run_openvino(compiled, images),
            "openvino-cpu (INFERENCE_PRECISION_HINT=f32)",
            {"openvino": facts},
        )

    def build_static(
        self, ctx: ExportContext, precision: str, source: Path, folder: Path
    ) -> ArtifactFiles:
        xml = folder / "model.xml"
        shape = reshape_static(source / "model.xml", xml, batch=1)
        compiled = compile_openvino(xml, ctx.threads, exact_f32=True, latency=True)
        return ArtifactFiles(
            ["model.xml", "model.bin"],
            "model.xml",
            lambda images: run_openvino(compiled, images, batch_size=1),
            "openvino-cpu (INFERENCE_PRECISION_HINT=f32), batch 1",
            {"openvino": {"precision": precision, "static_shape": shape, "from": source.name}},
            static_batch=1,
        )


@EXPORT_FORMATS.register("tensorrt")
class TensorRtExporter(FormatExporter):
    """The ONNX a board builds its engine from, plus the build settings and trtexec command.

    Each ships the graph that carries its precision: the FP32 graph, the FP16 graph (float32
    input and output), the checked S8S8 Q/DQ graph, so strongly typed builds (TensorRT 11) and
    flag-driven ones (up to 10.x, JetPack) give the same precision. Without a GPU the
    shipped graph is measured with ONNX Runtime on the CPU; with ``tensorrt.build_engine`` (on a
    GPU machine) the engine is built here too and measured instead.
    """

    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")

    def build(
        self, ctx: ExportContext, precision: str, folder: Path, variant: str = ""
    ) -> ArtifactFiles:
        options = ctx.settings.tensorrt
        chw = ctx.input_shape  # C,H,W (or H,W,C for an NHWC raw input)
        extra: dict[str, Any] = {"build": build_settings(precision, chw, options)}
        source = ctx.onnx_fp32
        if precision == "fp16":
            source = fp16_graph(ctx)
        elif precision == "int8":
            source, summary = tensorrt_qdq_graph(ctx)
            extra["qdq_check"] = summary
        target = folder / "model.onnx"
        shutil.copyfile(source, target)
        ctx.embed_onnx(target)
        extra["onnx"] = graph_facts(target)
        if not options.build_engine:
            extra["engine"] = None
            return ArtifactFiles(
                ["model.onnx"],
                "model.onnx",
                _onnx_runner(target, ctx.threads),
                "onnxruntime-cpu on the shipped graph (the engine is built on the target)",
                extra,
            )
        facts = onnx_to_tensorrt(target, folder / ENGINE_FILE, precision, chw, options)
        extra["engine"] = facts
        engine = load_engine(folder / ENGINE_FILE, facts)
        files = ["model.onnx", ENGINE_FILE]
        if options.timing_cache and (folder / options.timing_cache).is_file():
            files.append(options.timing_cache)

        def run(images: np.ndarray) -> np.ndarray:
            step = options.max_batch
            return np.concatenate(
                [run_engine(engine, images[i : i + step]) for i in range(0, len(images), step)]
            )

        return ArtifactFiles(
            files, ENGINE_FILE, run, f"tensorrt {facts['tensorrt_version']}", extra
        )
