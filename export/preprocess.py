"""Preprocessing inside the artifact: the model takes the raw image as the data set stores it.

With ``export.embed_preprocessing`` (the default) every artifact's input is the raw image (uint8
where the data set holds uint8, NCHW or NHWC as ``export.input_layout`` says), and the graph
itself computes what training fed the network::

    x = (float32(raw) - mean * scale) / (std * scale)        per channel, then NCHW

the same float32 arithmetic as :meth:`training.data.TensorImages.normalise`. The model body is
built (and quantised) on normalised images as before; the preprocessing is put in front of it
afterwards and always stays in float32:

- ONNX (and the graph TensorRT builds from): ``Cast``, ``Transpose`` (NHWC), ``Sub``, ``Div``
  nodes in front of the body (:func:`embed_onnx`);
- OpenVINO IR: the ``PrePostProcessor`` steps (:func:`embed_openvino`);
- PyTorch (``student.pt2``): a wrapping module (:class:`Preprocessed`).

:class:`InputContract` is what the manifest records of the input: dtype, layout, shape, the value
range and the normalisation applied inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.errors import ExportError
from export.onnx import INPUT_NAME, check_onnx, load_onnx, read_metadata, set_metadata

PREFIX = "onedge_pre_"  # names of the nodes and tensors put in front of the body
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class InputContract:
    """What a deployed application feeds the artifact (see the module docstring)."""

    embedded: bool
    layout: str  # NCHW or NHWC (NCHW when the preprocessing is not embedded)
    dtype: str  # numpy dtype name of the input
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float

    @classmethod
    def for_spec(cls, spec: Any, embedded: bool, layout: str, raw_dtype: str) -> InputContract:
        if layout not in LAYOUTS:
            raise ExportError(f"input layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        if not embedded and layout != "NCHW":
            raise ExportError(
                "export.input_layout NHWC needs export.embed_preprocessing=true: "
                "without it the artifact takes the normalised NCHW tensor"
            )
        return cls(
            embedded=embedded,
            layout=layout,
            dtype=raw_dtype if embedded else "float32",
            channels=spec.in_channels,
            size=spec.image_size,
            mean=tuple(spec.mean),
            std=tuple(spec.std),
            scale=float(spec.scale),
        )

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape of one image at the input, without the batch axis."""
        c, s = self.channels, self.size
        return (s, s, c) if self.layout == "NHWC" else (c, s, s)

    @property
    def value_range(self) -> tuple[float, float] | None:
        """Raw pixel values lie in [0, scale]; None for a normalised input."""
        return (0.0, self.scale) if self.embedded else None

    def offset_divisor(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``mean * scale`` and ``std * scale`` per channel, computed as training does."""
        offset = torch.tensor(self.mean) * self.scale
        divisor = torch.tensor(self.std) * self.scale
        return offset.numpy().astype(np.float32), divisor.numpy().astype(np.float32)

    def arrange(self, raw_nchw: np.ndarray) -> np.ndarray:
        """Raw NCHW images in this contract's layout (what an application feeds)."""
        if self.layout == "NHWC":
            return np.ascontiguousarray(raw_nchw.transpose(0, 2, 3, 1))
        return np.ascontiguousarray(raw_nchw)

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        """The normalised float32 NCHW tensor the body takes, from input in this contract."""
        offset, divisor = self.offset_divisor()
        x = raw.astype(np.float32)
        if self.layout == "NHWC":
            x = x.transpose(0, 3, 1, 2)
        shape = (1, self.channels, 1, 1)
        return np.ascontiguousarray((x - offset.reshape(shape)) / divisor.reshape(shape))

    def to_dict(self) -> dict[str, Any]:
        return {
            "preprocessing": "embedded" if self.embedded else "external",
            "layout": self.layout,
            "dtype": self.dtype,
            "value_range": list(self.value_range) if self.value_range else None,
        }


class Preprocessed(nn.Module):
    """``body`` behind the contract's preprocessing: raw images in, logits out."""

    def __init__(self, body: nn.Module, contract: InputContract) -> None:
        super().__init__()
        self.body = body
        self.nhwc = contract.layout == "NHWC"
        offset, divisor = contract.offset_divisor()
        shape = (1, contract.channels, 1, 1)
        self.register_buffer("offset", torch.from_numpy(offset).reshape(shape))
        self.register_buffer("divisor", torch.from_numpy(divisor).reshape(shape))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        x = raw.float()
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        return self.body((x - self.offset) / self.divisor)


ONNX_TYPES = {"uint8": 2, "float32": 1}  # numpy dtype name -> onnx.TensorProto data type


def embed_onnx(path: Path, contract: InputContract) -> Path:
    """Put the contract's preprocessing in front of the ONNX graph at ``path`` (in place)."""
    import onnx
    from onnx import helper, numpy_helper

    if not contract.embedded:
        return path
    if contract.dtype not in ONNX_TYPES:
        raise ExportError(f"raw input dtype {contract.dtype} has no ONNX input type here")
    model = load_onnx(path)
    graph = model.graph
    old = graph.input[0]
    if old.name != INPUT_NAME or any(n.name.startswith(PREFIX) for n in graph.node):
        raise ExportError(f"{path}: the graph does not start at {INPUT_NAME!r} or is embedded")
    inner = PREFIX + "normalised"
    for node in graph.node:
        node.input[:] = [inner if name == INPUT_NAME else name for name in node.input]
    batch = onnx.TensorShapeProto.Dimension()
    batch.CopyFrom(old.type.tensor_type.shape.dim[0])
    new_input = helper.make_tensor_value_info(
        INPUT_NAME, ONNX_TYPES[contract.dtype], [None, *contract.sample_shape]
    )
    new_input.type.tensor_type.shape.dim[0].CopyFrom(batch)
    offset, divisor = contract.offset_divisor()
    shape = (1, contract.channels, 1, 1)
    graph.initializer.extend([
        numpy_helper.from_array(offset.reshape(shape), PREFIX + "offset"),
        numpy_helper.from_array(divisor.reshape(shape), PREFIX + "divisor"),
    ])  # fmt: skip
    nodes = [helper.make_node("Cast", [INPUT_NAME], [PREFIX + "float"], PREFIX + "cast", to=1)]
    current = PREFIX + "float"
    if contract.layout == "NHWC":
        nodes.append(
            helper.make_node(
                "Transpose", [current], [PREFIX + "nchw"], PREFIX + "nchw", perm=[0, 3, 1, 2]
            )
        )
        current = PREFIX + "nchw"
    nodes += [
        helper.make_node("Sub", [current, PREFIX + "offset"], [PREFIX + "centred"], PREFIX + "sub"),
        helper.make_node("Div", [PREFIX + "centred", PREFIX + "divisor"], [inner], PREFIX + "div"),
    ]
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + body)
    graph.input.remove(old)
    graph.input.insert(0, new_input)
    metadata = read_metadata(model)
    normalisation = metadata.get("onedge.normalization")
    if normalisation is not None:
        import json

        data = json.loads(normalisation)
        data.update(contract.to_dict())
        set_metadata(model, {"onedge.normalization": json.dumps(data)})
    onnx.save_model(model, str(path))
    check_onnx(path)
    return path


def embed_openvino(xml_path: Path, contract: InputContract, compress_to_fp16: bool) -> Path:
    """Add the contract's preprocessing to the IR at ``xml_path`` with PrePostProcessor."""
    if not contract.embedded:
        return xml_path
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    types = {"uint8": ov.Type.u8, "float32": ov.Type.f32}
    if contract.dtype not in types:
        raise ExportError(f"raw input dtype {contract.dtype} has no OpenVINO input type here")
    model = ov.Core().read_model(str(xml_path))
    offset, divisor = contract.offset_divisor()
    ppp = PrePostProcessor(model)
    entry = ppp.input()
    entry.tensor().set_element_type(types[contract.dtype]).set_layout(ov.Layout(contract.layout))
    entry.model().set_layout(ov.Layout("NCHW"))
    steps = entry.preprocess().convert_element_type(ov.Type.f32)
    steps.mean([float(v) for v in offset]).scale([float(v) for v in divisor])
    model = ppp.build()
    xml_path = Path(xml_path)
    written = xml_path.with_name(xml_path.stem + ".embedded.xml")  # the old .bin may be mapped
    ov.save_model(model, str(written), compress_to_fp16=compress_to_fp16)
    written.with_suffix(".bin").replace(xml_path.with_suffix(".bin"))
    written.replace(xml_path)
    return xml_path
