"""The MLflow model of a registered version: MLflow's own flavors on the validated artifact.

A version's folder holds::

    MLmodel                      flavors, signature (outputs), input example (raw images)
    data/<artifact>/             the validated artifact, byte for byte (manifest.json + files)
    model.onnx                   ONNX and TensorRT artifacts: the serving graph (below)
    code/                        the python_function loader and the modules it imports

Every format that runs here (:data:`FLAVORS`, looked up by name) gets ``python_function`` with
``loader_module`` :mod:`pipeline.model_registry.pyfunc_images`: it runs the validated artifact
with the runner's own backends (ONNX Runtime, OpenVINO) and takes arrays at the model's input or
image files (bytes, paths, base64 text), which it turns into the model's input with the eval
transform the manifest records (``input.transform``, :mod:`training.image_transform`). ``code/``
carries those repository files themselves (:func:`code_paths`), not copies of their logic. The
signature names the outputs only: one input schema cannot admit both arrays and files.

- ``onnx`` and ``tensorrt`` (an ONNX graph) also get MLflow's ``onnx`` flavor
  (``mlflow.onnx.load_model``): the validated graph with three outputs put after the logits,
  ``class_index`` (ArgMax), ``class_name`` (Gather on the class names) and ``probabilities``
  (Softmax), checked against the validated graph on the eval images before it is logged.
- ``openvino``: ``python_function`` alone.
- ``torch``: no ``python_function`` (the ``onedge`` flavor only).

Every version also carries the ``onedge`` flavor: format, precision, the artifact's folder and
sha256, the input contract with its eval transform. Nothing in the folder is pickled.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from export.manifest import MANIFEST_NAME, ArtifactError, Manifest, artifact_paths
from export.onnx import ort_session, run_onnx
from onedge.registry import Registry
from pipeline.model_registry import pyfunc_images

DATA = "data"
OUTPUTS = ("class_index", "class_name", "probabilities")
EXAMPLE_IMAGES = 2

Flavor = Callable[[Path, Manifest, Any, Path, np.ndarray], None]
FLAVORS: Registry[Flavor] = Registry("MLflow flavor for artifact format")


def artifact_subpath(artifact: str) -> str:
    """Where a version's folder keeps the validated artifact."""
    return f"{DATA}/{artifact}"


def signature(manifest: Manifest) -> Any:
    """Class index, name and probabilities out; no input schema (arrays or image files in)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    classes = manifest.output.shape[-1]
    return ModelSignature(
        outputs=Schema([
            TensorSpec(np.dtype("int64"), (-1,), "class_index"),
            TensorSpec(np.dtype("object"), (-1,), "class_name"),
            TensorSpec(np.dtype("float32"), (-1, classes), "probabilities"),
        ]),
    )  # fmt: skip


def base_model(manifest: Manifest, artifact: str, run_id: str) -> Any:
    """An MLflow Model with the ``onedge`` flavor (metadata) and the signature."""
    from mlflow.models import Model

    model = Model(run_id=run_id, artifact_path="model", signature=signature(manifest))
    model.add_flavor(
        "onedge",
        format=manifest.format,
        precision=manifest.precision,
        artifact=artifact_subpath(artifact),
        model_file=manifest.model_file,
        manifest=f"{artifact_subpath(artifact)}/{MANIFEST_NAME}",
        sha256=manifest.sha256,
        input=manifest.input.model_dump(mode="json"),
        class_names=list(manifest.class_names),
    )
    return model


def copy_artifact(folder: Path, manifest: Manifest, into: Path) -> None:
    """The manifest and the files it lists, byte for byte (plain names, verified: nothing lands
    outside ``into``; unlisted files and symlinks were refused by ``verify_artifact``)."""
    into.mkdir(parents=True, exist_ok=True)
    for path in artifact_paths(folder, manifest):
        shutil.copyfile(path, into / path.name, follow_symlinks=False)


def write_model_folder(
    folder: Path, manifest: Manifest, run_id: str, into: Path, eval_images: np.ndarray
) -> Path:
    """Write the MLflow model folder of a version (MLmodel, flavors, ``data/<artifact>``: see the
    module docstring) into ``into``, from where it is logged to the run."""
    artifact = Path(folder).name
    model = base_model(manifest, artifact, run_id)
    example = np.ascontiguousarray(eval_images[:EXAMPLE_IMAGES])
    if manifest.format in FLAVORS:
        FLAVORS.get(manifest.format)(folder, manifest, model, into, example)
    else:  # no python_function for this format: the onedge flavor alone
        into.mkdir(parents=True)
        model.save(str(into / "MLmodel"))
    copy_artifact(folder, manifest, into / artifact_subpath(artifact))
    return into


def serving_graph(path: Path, class_names: list[str]) -> Any:
    """The ONNX graph at ``path`` with class_index, class_name and probabilities as outputs."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    logits = graph.output[0]
    batch = logits.type.tensor_type.shape.dim[0]
    names = helper.make_tensor(
        "onedge_class_names",
        TensorProto.STRING,
        [len(class_names)],
        [name.encode() for name in class_names],
    )
    graph.initializer.append(names)
    graph.node.extend([
        helper.make_node("Softmax", [logits.name], ["probabilities"], "onedge_softmax", axis=1),
        helper.make_node(
            "ArgMax", ["probabilities"], ["class_index"], "onedge_argmax", axis=1, keepdims=0
        ),
        helper.make_node(
            "Gather", ["onedge_class_names", "class_index"], ["class_name"], "onedge_name", axis=0
        ),
    ])  # fmt: skip
    outputs = [
        helper.make_tensor_value_info("class_index", TensorProto.INT64, [None]),
        helper.make_tensor_value_info("class_name", TensorProto.STRING, [None]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, len(class_names)]),
    ]
    for value in outputs:
        value.type.tensor_type.shape.dim[0].CopyFrom(batch)
    del graph.output[:]
    graph.output.extend(outputs)
    onnx.checker.check_model(model)
    return model


def check_serving_graph(validated: Path, serving: Any, images: np.ndarray) -> None:
    """The serving graph's classes are the validated graph's argmax on ``images``."""
    logits = run_onnx(ort_session(validated), images)
    import onnxruntime as ort

    session = ort.InferenceSession(serving.SerializeToString(), providers=["CPUExecutionProvider"])
    dtype = np.uint8 if session.get_inputs()[0].type == "tensor(uint8)" else np.float32
    index, names, probabilities = session.run(list(OUTPUTS), {"input": images.astype(dtype)})
    z = logits - logits.max(axis=1, keepdims=True)
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    if not np.array_equal(index, logits.argmax(axis=1)) or not np.allclose(
        probabilities, expected, atol=1e-5
    ):
        raise ArtifactError(
            f"the serving graph of {validated} disagrees with the validated graph on "
            f"{len(images)} eval images; it is not registered"
        )


def code_paths(into: Path) -> list[str]:
    """The loader and the repository files it imports, laid out as packages under ``into``.

    ``training/image_transform.py`` (the one eval transform, with the errors and the strict base
    it imports) and ``targets/runner.py`` (the backends every target runs artifacts with) are
    copied as they are; the ``targets`` package is given an empty ``__init__`` (the real one
    imports the SSH and Jetson targets).
    """
    root = Path(__file__).resolve().parents[2]
    files = {
        "onedge": ["__init__.py", "errors.py", "strict.py"],
        "training": ["__init__.py", "errors.py", "image_transform.py"],
        "targets": ["runner.py"],
    }
    for package, names in files.items():
        (into / package).mkdir(parents=True)
        for name in names:
            shutil.copyfile(root / package / name, into / package / name)
    (into / "targets" / "__init__.py").write_text('"""The runner, for the pyfunc loader."""\n')
    return [pyfunc_images.__file__, *(str(into / package) for package in files)]


def requirements(runtime: str, version: str) -> list[str]:
    """pip requirements of the loader: the runtime, numpy, Pillow and pydantic (the transform)."""
    import PIL
    import pydantic

    return [f"{runtime}=={version}", "numpy", f"pillow=={PIL.__version__}",
            f"pydantic=={pydantic.VERSION}"]  # fmt: skip


def use_images_loader(model: Any, into: Path, artifact: str) -> None:
    """Point ``python_function`` at :mod:`pyfunc_images` on ``data/<artifact>`` and save MLmodel."""
    model.flavors["python_function"].update(
        loader_module="pyfunc_images", data=artifact_subpath(artifact)
    )
    model.save(str(into / "MLmodel"))


@FLAVORS.register("onnx")
@FLAVORS.register("tensorrt")
def onnx_flavor(
    folder: Path, manifest: Manifest, model: Any, into: Path, example: np.ndarray
) -> None:
    """MLflow's onnx flavor on the serving graph; python_function through pyfunc_images."""
    import tempfile

    import mlflow.onnx
    import onnx
    import onnxruntime

    graph = serving_graph(folder / manifest.model_file, list(manifest.class_names))
    check_serving_graph(folder / manifest.model_file, graph, example_batch(folder, example))
    with tempfile.TemporaryDirectory(prefix="onedge-code-") as tmp:
        mlflow.onnx.save_model(
            graph,
            str(into),
            mlflow_model=model,
            signature=model.signature,
            input_example=example,
            code_paths=code_paths(Path(tmp)),
            pip_requirements=[
                f"onnx=={onnx.__version__}",
                *requirements("onnxruntime", onnxruntime.__version__),
            ],
            onnx_execution_providers=["CPUExecutionProvider"],
            onnx_session_options={"execution_mode": "sequential"},
            save_as_external_data=False,
        )
    use_images_loader(model, into, Path(folder).name)


def example_batch(folder: Path, example: np.ndarray) -> np.ndarray:
    """The eval images the serving graph is checked on (all of them, from eval.npz)."""
    eval_file = Path(folder).parent / "eval.npz"
    if not eval_file.is_file():
        return example
    with np.load(eval_file, allow_pickle=False) as data:
        return data["images"]


@FLAVORS.register("openvino")
def openvino_flavor(
    folder: Path, manifest: Manifest, model: Any, into: Path, example: np.ndarray
) -> None:
    """python_function through pyfunc_images (code, no pickle) on the IR."""
    import tempfile

    import mlflow.pyfunc
    import openvino

    with tempfile.TemporaryDirectory(prefix="onedge-code-") as tmp:
        mlflow.pyfunc.save_model(
            str(into),
            loader_module="pyfunc_images",
            data_path=str(folder),
            code_paths=code_paths(Path(tmp)),
            mlflow_model=model,
            signature=model.signature,
            input_example=example,
            pip_requirements=requirements("openvino", openvino.__version__.split("-")[0]),
        )
    # data_path copied the folder as it is; copy_artifact puts the manifest's files back on top
