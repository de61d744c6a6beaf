"""MLflow's own API and CLI on the registered students: raw images in, classes out.

``mlflow.pyfunc.load_model`` on the champion alias (and on one version of each flavor), and
``mlflow models serve`` answering HTTP ``/invocations``, all on the end-to-end run's store and
its eval set of raw images; the classes must give the top-1 that validation recorded.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.config import dump_config
from pipeline.model_registry.register import register_run
from pipeline.run_folder import RunFolder
from tests.pipeline.servers import free_port, mlflow_uri, started, stopped

pytestmark = pytest.mark.slow

SKIP = {"mlflow.db", "mlartifacts", ".cache", "registry.json"}


def eval_set(run) -> tuple[np.ndarray, np.ndarray]:
    with np.load(run.out / "export" / "eval.npz") as data:
        return data["images"], data["labels"]


@pytest.fixture
def registry_uri(pipeline_run):
    uri = pipeline_run.result.registry.tracking_uri
    with mlflow_uri(uri):
        yield uri


def image_files(images: np.ndarray, fmt: str) -> list[bytes]:
    """Each (1, H, W) raw image as the bytes of an image file, pixels as stored."""
    import io

    from PIL import Image

    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image[0]).save(buffer, fmt)
        out.append(buffer.getvalue())
    return out


def b64(files: list[bytes]) -> list[str]:
    import base64

    return [base64.b64encode(data).decode("ascii") for data in files]


def recorded_top1(client, name: str, version: str) -> float:
    return float(client.get_model_version(name, version).tags["onedge.top1"])


def check_predictions(out: dict, labels: np.ndarray, top1: float) -> None:
    index = np.asarray(out["class_index"])
    assert (index == labels).mean() == pytest.approx(top1, abs=1e-12)
    assert [str(n) for n in out["class_name"]] == [str(i) for i in index]  # digits: "0".."9"
    probabilities = np.asarray(out["probabilities"], dtype=np.float64)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(probabilities.argmax(axis=1), index)


def test_champion_loads_with_pyfunc_and_predicts_raw_digits(pipeline_run, registry_uri):
    import mlflow
    from mlflow import MlflowClient

    name = pipeline_run.result.registry.model_name
    client = MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)
    champion = client.get_model_version_by_alias(name, "champion")
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    recorded = model.metadata.flavors["onedge"]["input"]
    # the champion is the fastest passing artifact: a dynamic batch or a static batch-1 one
    # (its pyfunc runs any number of images one at a time)
    assert recorded["dtype"] == "uint8" and recorded["shape"] in ([-1, 1, 8, 8], [1, 1, 8, 8])
    images, labels = eval_set(pipeline_run)
    assert images.dtype == np.uint8 and images.max() <= 16  # raw digits, as stored
    check_predictions(model.predict(images), labels, recorded_top1(client, name, champion.version))
    # image files' bytes (lossless: the stored pixels) give the classes the arrays give
    by_file = model.predict(image_files(images[:32], "PNG"))["class_index"]
    assert by_file.tolist() == np.asarray(model.predict(images[:32])["class_index"]).tolist()
    report = json.loads((pipeline_run.out / "validate" / "local-cpu" / "report.json").read_text())
    artifact = champion.tags["onedge.artifact"]
    validated = next(r for r in report["results"] if r["artifact"] == artifact)
    assert (np.asarray(model.predict(images)["class_index"]) == labels).mean() == pytest.approx(
        validated["top1"], abs=1e-12
    )


@pytest.mark.parametrize("artifact", ["onnx-int8", "openvino-fp32", "openvino-int8-b1"])
def test_each_flavor_predicts_what_was_validated(artifact, pipeline_run, tmp_path):
    """The onnx flavor and the OpenVINO python_function, each on a version of its own."""
    import mlflow
    from mlflow import MlflowClient

    folder = RunFolder(tmp_path / "run")
    shutil.copytree(pipeline_run.out, folder.root, ignore=lambda d, names: SKIP & set(names))
    config = pipeline_run.config.model_copy(deep=True)
    config.registry.artifact = artifact
    config.registry.model_name = f"flavor-{artifact}"
    config.registry.tracking_uri = None  # a store of its own in the copy
    folder.config.write_text(dump_config(config))
    outcome = register_run(config, folder)
    client = MlflowClient(tracking_uri=outcome.tracking_uri, registry_uri=outcome.tracking_uri)
    model = mlflow.pyfunc.load_model(
        client.get_model_version_download_uri(outcome.model_name, outcome.version)
    )
    loader = model.metadata.flavors["python_function"]["loader_module"]
    assert loader == "pyfunc_images" and "onedge" in model.metadata.flavors
    assert ("onnx" in model.metadata.flavors) == artifact.startswith("onnx")
    images, labels = eval_set(pipeline_run)
    check_predictions(model.predict(images), labels, outcome.evidence.top1)


def test_models_serve_answers_invocations(pipeline_run, registry_uri, tmp_path):
    """``mlflow models serve`` on the champion, on 127.0.0.1, fed raw images over HTTP."""
    import mlflow
    import requests

    name = pipeline_run.result.registry.model_name
    images, labels = eval_set(pipeline_run)
    expected = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(images)
    port = free_port()
    argv = [
        "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local",
        "-h", "127.0.0.1", "-p", str(port), "-w", "1",
    ]  # fmt: skip
    env = {"MLFLOW_TRACKING_URI": registry_uri, "MLFLOW_REGISTRY_URI": registry_uri}
    pngs, jpegs = image_files(images[:16], "PNG"), image_files(images[:16], "JPEG")
    url = f"http://127.0.0.1:{port}/invocations"
    with started(argv, env, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log") as proc:
        response = requests.post(url, json={"inputs": images.tolist()}, timeout=60)
        # image files in JSON: base64 text of their bytes, as MLflow carries binary
        as_png = requests.post(url, json={"inputs": {"image": b64(pngs)}}, timeout=60)
        as_jpeg = requests.post(url, json={"inputs": b64(jpegs)}, timeout=60)
    assert stopped(proc)
    assert as_png.status_code == 200 and as_jpeg.status_code == 200, as_jpeg.text[:2000]
    # a lossless file of the stored pixels gives the array's class; a JPEG what the pyfunc gives
    png_classes = as_png.json()["predictions"]["class_index"]
    assert png_classes == expected["class_index"][:16].tolist()
    in_process = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(jpegs)
    assert as_jpeg.json()["predictions"]["class_index"] == in_process["class_index"].tolist()
    assert response.status_code == 200, response.text[:2000]
    predictions = response.json()["predictions"]
    assert predictions["class_index"] == expected["class_index"].tolist()
    assert predictions["class_name"] == [str(n) for n in expected["class_name"]]
    top1 = float((np.asarray(predictions["class_index"]) == labels).mean())
    assert top1 == pytest.approx(float((expected["class_index"] == labels).mean()))
