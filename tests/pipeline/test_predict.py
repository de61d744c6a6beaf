"""``onedge predict`` and the pyfunc on photos: the shared run of the whole pipeline on an image
folder (mixed sizes, modes and formats, ``photo_run``), then each test image's class by the
registered champion, against the class the validation run recorded for it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export.manifest import read_manifest
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.predict import artifact_folder, downloaded_artifact, predict_files
from pipeline.run_folder import RunFolder, load_reports
from tests.pipeline.servers import mlflow_uri
from training.image_transform import eval_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(photo_run):
    """The shared photo run (tests/pipeline/conftest.py): run folder, registry outcome, files."""
    from pipeline.model_registry.register import RegistryOutcome

    assert photo_run.status == 0
    run = RunFolder(photo_run.out)
    outcome = RegistryOutcome.model_validate_json(run.registry.read_text())
    return run, outcome, photo_run.test_files


def eval_rows(run: RunFolder, artifact: str, files: list) -> tuple[list[int], np.ndarray]:
    """Each file's row in eval.npz (found by its pixels under the recorded transform); labels."""
    transform = read_manifest(run.export / artifact).input.transform
    with np.load(run.export / "eval.npz") as data:
        images, labels = data["images"], data["labels"]
    row_of = {image.tobytes(): k for k, image in enumerate(images)}
    rows = [row_of.get(eval_file(path, transform).tobytes(), -1) for path in files]
    return rows, labels


def test_predict_and_pyfunc_give_the_classes_validation_recorded(photos) -> None:
    import mlflow

    from pipeline.model_registry.tracking import connect

    run, outcome, files = photos
    reports = load_reports(run, load_config(run.config).validate)
    recorded = reports["local-cpu"].result(outcome.artifact)
    # the eval set is exactly the recorded transform of every test file (same pixels)
    rows, labels = eval_rows(run, outcome.artifact, files)
    assert sorted(rows) == list(range(len(labels))) and len(files) == 80
    uri, champion = outcome.tracking_uri, f"models:/{outcome.model_name}@champion"
    with downloaded_artifact(connect(uri), uri, champion) as folder:
        predicted = predict_files(folder, files)
    classes = np.array([p.class_index for p in predicted])
    assert np.array_equal(classes, recorded.predicted_classes()[rows])
    assert np.array_equal(classes == labels[rows], recorded.correct_flags()[rows])
    names = read_manifest(run.export / outcome.artifact).class_names
    assert [p.class_name for p in predicted] == [names[k] for k in classes]
    # the report's per-class section counts the same recorded classes
    [section] = json.loads(run.report_json.read_text())["per_class"]
    assert [c["name"] for c in section["classes"]] == names and section["images"] == 80
    assert section["misclassified"] == int((classes != labels[rows]).sum())
    assert (run.root / section["confusion_plot"]).is_file()
    with mlflow_uri(uri):
        model = mlflow.pyfunc.load_model(champion)
    by_bytes = model.predict([path.read_bytes() for path in files])
    assert np.array_equal(np.asarray(by_bytes["class_index"]), classes)


def test_predict_command_prints_each_file(photos, capsys) -> None:
    run, outcome, files = photos
    argv = ["predict", "--artifact", f"models:/{outcome.model_name}@champion", "--tracking-uri",
            outcome.tracking_uri, str(files[0]), str(files[-1])]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "image\tclass\tname\tprobability"
    rows = [line.split("\t") for line in lines[1:]]
    assert [row[0] for row in rows] == [str(files[0]), str(files[-1])]
    # an artifact folder directly: the same classes
    direct = predict_files(artifact_folder(run.export / outcome.artifact), [files[0], files[-1]])
    assert [(int(r[1]), r[2]) for r in rows] == [(d.class_index, d.class_name) for d in direct]
    assert all(0.0 < float(r[3]) <= 1.0 for r in rows)


def test_predict_refuses_with_one_line(photos, bad_image_files, capsys) -> None:
    run, outcome, files = photos
    artifact = str(run.export / outcome.artifact)
    uri = ["--tracking-uri", outcome.tracking_uri]
    cases = [
        (["--artifact", str(run.export), str(files[0])], "is an export folder"),
        (["--artifact", artifact, str(bad_image_files["truncated"])], "truncated"),
        (["--artifact", artifact, str(bad_image_files["text"])], "not an image"),
        (["--artifact", "models:/photos", *uri, str(files[0])], "models:/NAME"),
        (["--artifact", f"models:/{outcome.model_name}@nobody", *uri, str(files[0])], "nobody"),
    ]
    for args, expected in cases:
        assert main(["predict", *args]) == 2, args
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err


def test_inputs_the_pyfunc_reads_as_files() -> None:
    import base64
    from pathlib import Path

    from pipeline.model_registry.pyfunc_images import ImageInputError, _file_source, _unwrap
    from pipeline.predict import parse_models_uri

    assert _file_source(base64.b64encode(b"\xff\xd8jpeg").decode(), 0) == b"\xff\xd8jpeg"
    assert _file_source(Path("a.png"), 0) == Path("a.png")  # a path only as a Path object
    with pytest.raises(ImageInputError, match="input 3 is text but not base64"):
        _file_source("photo.jpg", 3)
    with pytest.raises(ImageInputError, match="a float"):
        _file_source(1.5, 0)
    assert _unwrap({"image": ["x"]}) == ["x"]
    assert parse_models_uri("models:/photos@champion") == ("photos", "champion", None)
    assert parse_models_uri("models:/photos/3") == ("photos", None, "3")
