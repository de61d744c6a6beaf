"""INT8 repair: find the nodes an ONNX Runtime INT8 graph gets wrong, keep them in float.

When an INT8 artifact's agreement with the FP32 student falls below the gate, the images whose
class flipped say where to look. Both graphs run on those images with every intermediate tensor
as an output (ONNX Runtime's QDQ debugging helpers, ``onnxruntime.quantization.qdq_loss_debug``);
each quantised node is charged the signal-to-quantisation-noise ratio (SQNR, against the FP32
graph's tensor) it loses between its inputs as they arrive before their Q/DQ and its output
after its Q/DQ pair. The worst node is kept in
float (``quantize_static``'s ``nodes_to_exclude``), the graph is quantised again with the same
recipe and calibration images, and the ranking is taken again on the new graph's flips, one node
per round, until the agreement meets the gate or ``max_nodes`` nodes are in float.

The graphs are the artifacts themselves: the body is cut from the FP32 artifact (its embedded
preprocessing, the ``onedge_pre_`` nodes, taken off), quantised as the export quantised it,
and the preprocessing put back in front (:mod:`export.preprocess`). Nothing here imports
``targets`` or ``pipeline``: flips measured on a board come in as predicted classes.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import ExportError, require
from export.manifest import (
    Manifest,
)
from export.onnx import INPUT_NAME, OUTPUT_NAME, load_onnx, ort_session, run_onnx
from export.preprocess import PREFIX, InputContract, embed_onnx
from export.quantize import OrtInt8Candidate, parse_ort_candidate, quantize_onnx_cpu

REPAIRED_SUFFIX = "-repaired"
SQNR_CAP_DB = 120.0  # an exact tensor (no noise) counts as this clean
DEFAULT_MAX_NODES = 8
_Q_INPUT = "_QuantizeLinear_Input"  # what ONNX Runtime renames a quantised graph output to
_ORT_INSTALL = "pip install onnxruntime"


class RepairError(ExportError):
    """The artifact cannot be repaired: not an ONNX INT8 artifact, no FP32 sibling, no recipe."""


@dataclass(frozen=True)
class NodeLoss:
    """What one quantised node costs on the flipped images."""

    node: str
    op_type: str
    loss_db: float  # SQNR of its inputs before their Q/DQ minus SQNR of its output after it
    output_sqnr_db: float


@dataclass
class RepairRound:
    """One round: the nodes in float so far, the agreement and flips of that graph."""

    in_float: list[str]
    agreement: float
    flipped: int
    ranking: list[NodeLoss] = field(default_factory=list)


@dataclass
class RepairOutcome:
    """What the repair did, and where the repaired artifact is (None when nothing was written)."""

    artifact: str
    gate: float
    max_nodes: int
    agreement_before: float
    agreement_after: float
    met_gate: bool
    in_float: list[dict[str, Any]]  # node, op_type, why
    rounds: list[RepairRound]
    recipe: str
    calibration: str
    repaired: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sqnr_db(reference: np.ndarray, value: np.ndarray) -> float:
    """20 log10(|reference| / |reference - value|), capped at :data:`SQNR_CAP_DB`."""
    signal = float(np.linalg.norm(np.asarray(reference, dtype=np.float64)))
    noise = float(np.linalg.norm(np.asarray(reference, np.float64) - np.asarray(value, np.float64)))
    if noise <= 1e-30 * max(signal, 1.0):
        return SQNR_CAP_DB
    if signal <= 1e-30:
        return -SQNR_CAP_DB
    return max(-SQNR_CAP_DB, min(SQNR_CAP_DB, 20.0 * math.log10(signal / noise)))


def flipped_indices(reference_logits: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Indices of the images whose predicted class differs from the FP32 reference's."""
    return np.flatnonzero(np.argmax(reference_logits, axis=1) != np.asarray(predicted))


def agreement(reference_logits: np.ndarray, predicted: np.ndarray) -> float:
    """Fraction of images on which ``predicted`` is the reference's class."""
    return float(np.mean(np.argmax(reference_logits, axis=1) == np.asarray(predicted)))


class _Batches:
    """A calibration-data reader over the inputs as the graph takes them (dtype kept)."""

    def __init__(self, inputs: np.ndarray, batch_size: int = 64) -> None:
        self.inputs, self.batch_size, self.position = inputs, batch_size, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.inputs):
            return None
        batch = np.ascontiguousarray(self.inputs[self.position : self.position + self.batch_size])
        self.position += self.batch_size
        return {INPUT_NAME: batch}

    def __iter__(self):
        self.position = 0
        while (batch := self.get_next()) is not None:
            yield batch

    def rewind(self) -> None:
        self.position = 0


def contract_of(manifest: Manifest) -> InputContract | None:
    """The input contract an artifact was exported with; None for an external normalisation."""
    spec = manifest.input
    if spec.preprocessing != "embedded":
        return None
    channels = spec.shape[3] if spec.layout == "NHWC" else spec.shape[1]
    return InputContract(
        embedded=True,
        layout=spec.layout,
        dtype=spec.dtype,
        channels=channels,
        size=spec.shape[2],
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        scale=float(spec.scale),
    )


def strip_preprocessing(src: Path, dst: Path) -> Path:
    """The body of an artifact graph: the ``onedge_pre_`` nodes removed, input the normalised
    float32 NCHW tensor named ``input`` (what the export quantised)."""
    import onnx
    from onnx import helper

    model = load_onnx(src)
    graph = model.graph
    inner = PREFIX + "normalised"
    if not any(node.name.startswith(PREFIX) for node in graph.node):
        shutil.copyfile(src, dst)
        return Path(dst)
    body = [node for node in graph.node if not node.name.startswith(PREFIX)]
    for node in body:
        node.input[:] = [INPUT_NAME if name == inner else name for name in node.input]
    kept = [init for init in graph.initializer if not init.name.startswith(PREFIX)]
    shape = _body_input_shape(model, inner)
    del graph.node[:]
    graph.node.extend(body)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, shape))
    kept_info = [v for v in graph.value_info if not v.name.startswith(PREFIX)]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    onnx.save_model(model, str(dst))
    return Path(dst)


def _body_input_shape(model: Any, inner: str) -> list[Any]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    for value in inferred.graph.value_info:
        if value.name == inner:
            dims = value.type.tensor_type.shape.dim
            return [None, *(d.dim_value or None for d in dims[1:])]
    raise RepairError(f"the graph has no {inner!r} tensor to cut its preprocessing at")


def quantised_nodes(model: Any) -> list[Any]:
    """Nodes of a Q/DQ graph that read a DequantizeLinear output: the ones INT8 computes."""
    producer = {out: node for node in model.graph.node for out in node.output}
    found = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.name.startswith(PREFIX):
            continue
        if any(producer.get(name) is not None and producer[name].op_type == "DequantizeLinear"
               for name in node.input):  # fmt: skip
            found.append(node)
    return found


def rank_nodes(float_graph: Path, int8_graph: Path, inputs: np.ndarray) -> list[NodeLoss]:
    """Quantised nodes of ``int8_graph`` by the SQNR they lose on ``inputs``, worst first.

    Both graphs run with every float tensor as an output (``qdq_loss_debug``). A node's inputs
    are taken as they arrive before their Q/DQ (their error came from upstream) and its output
    after its Q/DQ: the difference is what quantising this node adds.
    """
    require("onnxruntime.quantization", "INT8 repair", _ORT_INSTALL)
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    with tempfile.TemporaryDirectory(prefix="onedge-int8-debug-") as tmp:
        activations = {}
        for kind, graph in (("float", float_graph), ("int8", int8_graph)):
            augmented = Path(tmp) / f"{kind}.onnx"
            modify_model_output_intermediate_tensors(str(graph), str(augmented))
            activations[kind] = collect_activations(str(augmented), _Batches(inputs))
    for kind, graph in (("float", float_graph), ("int8", int8_graph)):  # graph outputs too
        activations[kind][OUTPUT_NAME] = [run_onnx(ort_session(graph, optimize=False), inputs)]
    matched = create_activation_matching(activations["int8"], activations["float"])
    model = load_onnx(int8_graph)
    dequantised = {n.output[0]: n.input[0] for n in model.graph.node
                   if n.op_type == "DequantizeLinear"}  # fmt: skip
    quantised_from = {n.output[0]: n.input[0] for n in model.graph.node
                      if n.op_type == "QuantizeLinear"}  # fmt: skip

    def original(name: str) -> str:  # DQ(Q(x)) -> x; a quantised graph output's own name
        if name.endswith(_Q_INPUT):
            return name[: -len(_Q_INPUT)]
        return quantised_from.get(dequantised.get(name, ""), name)

    def score(name: str, when: str) -> float | None:
        name = original(name)
        match = matched.get(name)
        if match is not None and match.get("float") is not None:
            return sqnr_db(np.concatenate(match["float"]), np.concatenate(match[when]))
        if name in activations["float"] and name in activations["int8"]:
            return sqnr_db(
                np.concatenate(activations["float"][name]),
                np.concatenate(activations["int8"][name]),
            )
        return None

    losses = []
    for node in quantised_nodes(model):
        inputs_db = [score(name, "pre_qdq") for name in node.input if name in dequantised]
        inputs_db = [v for v in inputs_db if v is not None] or [SQNR_CAP_DB]
        out_db = score(node.output[0], "post_qdq")
        if out_db is None:
            continue
        added = min(inputs_db) - out_db
        losses.append(NodeLoss(node.name, node.op_type, added, out_db))
    return sorted(losses, key=lambda loss: -loss.loss_db)


def recipe_of(manifest: Manifest) -> tuple[OrtInt8Candidate, bool]:
    """The ONNX Runtime INT8 recipe an artifact was built with (its manifest's record)."""
    search = manifest.extra.get("ort_int8_search") or {}
    chosen = search.get("chosen") or manifest.extra.get("ort_int8_recipe")
    if not isinstance(chosen, str):
        raise RepairError(
            f"{manifest.name}: the manifest does not say which ONNX Runtime INT8 recipe built it "
            "(extra.ort_int8_search.chosen): export it again"
        )
    candidate = parse_ort_candidate(chosen)
    if candidate.quant_format != "qdq":
        raise RepairError(
            f"{manifest.name} was built as {chosen}: only Q/DQ graphs can keep single nodes in "
            "float; export a qdq-* recipe"
        )
    return candidate, bool(search.get("per_channel", True))


def quantise_keeping(
    body: Path,
    dst: Path,
    calibration: np.ndarray,
    recipe: tuple[OrtInt8Candidate, bool],
    in_float: list[str],
    contract: InputContract | None,
) -> Path:
    """``body`` quantised with ``recipe``, the nodes ``in_float`` kept in float, preprocessing
    put back in front; ``calibration`` is normalised (what the body takes)."""
    candidate, per_channel = recipe
    quantize_onnx_cpu(body, dst, calibration, candidate, per_channel, nodes_to_exclude=in_float)
    if contract is not None:
        embed_onnx(dst, contract)
    return Path(dst)


def repair_graph(
    fp32_artifact_graph: Path,
    int8_artifact_graph: Path,
    calibration: np.ndarray,
    recipe: tuple[OrtInt8Candidate, bool],
    contract: InputContract | None,
    eval_inputs: np.ndarray,
    reference_logits: np.ndarray,
    flipped: np.ndarray,
    gate: float,
    max_nodes: int,
    work: Path,
    trials: int = 3,
) -> tuple[Path, list[RepairRound]]:
    """Greedy rounds: rank on the current graph's flips, keep the worst node in float, quantise
    again; stops at the gate, at ``max_nodes`` or when no quantised node is left.

    ``flipped`` seeds the first round (flips seen on the target); later rounds take this
    machine's flips of the graph they made, together with the target's.
    """
    body = strip_preprocessing(fp32_artifact_graph, work / "body.onnx")
    float_graph = _float_twin(body, work, recipe[0], contract)
    current, in_float, rounds = Path(int8_artifact_graph), [], []
    target_flips = set(flipped.tolist())
    while True:
        predicted = np.argmax(run_onnx(ort_session(current), eval_inputs), axis=1)
        here = set(flipped_indices(reference_logits, predicted).tolist())
        rounds.append(
            RepairRound(list(in_float), agreement(reference_logits, predicted), len(here))
        )
        if rounds[-1].agreement >= gate and (rounds[1:] or not target_flips):
            break
        images = sorted(here | target_flips) or list(range(min(64, len(eval_inputs))))
        ranking = [n for n in rank_nodes(float_graph, current, eval_inputs[images])
                   if n.node not in in_float]  # fmt: skip
        rounds[-1].ranking = ranking[:5]
        if len(in_float) >= max_nodes or not ranking:
            break
        current, chosen = _best_of(ranking[:trials], body, calibration, recipe, in_float,
                                   contract, (eval_inputs, reference_logits), work)  # fmt: skip
        in_float.append(chosen)
        target_flips = set()  # the target measured the old graph only
    return current, rounds


def _best_of(
    ranked: list[NodeLoss],
    body: Path,
    calibration: np.ndarray,
    recipe: tuple[OrtInt8Candidate, bool],
    in_float: list[str],
    contract: InputContract | None,
    evaluation: tuple[np.ndarray, np.ndarray],
    work: Path,
) -> tuple[Path, str]:
    """Quantise once per candidate node (each kept in float beside ``in_float``); the graph
    that agrees most with the reference, and its node (ties: the higher ranked)."""
    inputs, reference = evaluation
    best: tuple[float, Path, str] | None = None
    for loss in ranked:
        path = work / f"round-{len(in_float) + 1}-{loss.node}.onnx"
        quantise_keeping(body, path, calibration, recipe, [*in_float, loss.node], contract)
        score = agreement(reference, np.argmax(run_onnx(ort_session(path), inputs), axis=1))
        if best is None or score > best[0]:
            best = (score, path, loss.node)
    return best[1], best[2]


def _float_twin(body: Path, work: Path, candidate: OrtInt8Candidate, contract) -> Path:
    """The FP32 graph with the tensor names of the INT8 one (pre-processed like it)."""
    twin = work / "float-twin.onnx"
    if candidate.preprocess:
        from onnxruntime.quantization import quant_pre_process

        quant_pre_process(str(body), str(twin), skip_symbolic_shape=False)
    else:
        shutil.copyfile(body, twin)
    if contract is not None:
        embed_onnx(twin, contract)
    return twin
