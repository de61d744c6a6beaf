"""onedge run on a folder of photos (mixed sizes, modes, formats): checked, trained, exported
with calibration and eval sets made by eval_array, validated, registered; bad folders stop
with one line (exit 2) before any training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import dump_config, load_config
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SETTINGS = [
    "data.image_size=36",
    "data.batch_size=32",
    "data.calibration_size=32",
    "model.width=0.25",
    "method.rampup_epochs=1",
    "train.epochs=1",
    "train.threads=1",
    "train.progress=false",
    "export.formats=[onnx]",
    "export.precisions=[fp32,int8]",
    "export.calibration_size=32",
    "export.ort_int8.candidates=[qdq-s8s8-pre]",
    "export.ort_int8.timing_seconds=0.1",
    "validate.settings.warmup_seconds=0.1",
    "validate.settings.warmup_calls=5",
    "validate.settings.timed_seconds=0.2",
    "validate.settings.timed_calls=20",
    "validate.settings.throughput_calls=2",
    "validate.gates.max_top1_drop=1.0",
    "validate.gates.min_agreement=0.0",
    "validate.gates.max_p99_ms={local-cpu: 1000.0}",
    "validate.retries=0",
    "registry.retries=0",
]


def write_config(root: Path, folder: Path, *extra: str) -> Path:
    config = load_config(
        ROOT / "configs" / "imagefolder-example.yaml", [f"data.root={folder}", *SETTINGS, *extra]
    )
    path = root / "photos.yaml"
    path.write_text(dump_config(config))
    return path


def test_onedge_run_on_an_image_folder(photo_run, image_folder: Path):
    from training.image_transform import EvalTransform, eval_file

    out = photo_run.out  # one onedge run on the folder, shared (tests/pipeline/conftest.py)
    assert photo_run.status == 0
    check = json.loads((out / "data-check.json").read_text())
    assert check["images"]["test"] == {"bag": 20, "sneaker": 20, "t-shirt": 20, "trouser": 20}
    report = json.loads((out / "report.json").read_text())
    assert report["data_check"] == check
    assert json.loads((out / "registry.json").read_text())["version"]
    assert any((out / "data-cache").glob("calibration-*.npy"))  # decoded once, in the run folder
    with np.load(out / "export" / "eval.npz", allow_pickle=False) as saved:
        inputs = saved[next(k for k in saved.files if saved[k].dtype == np.uint8)]
    spec = EvalTransform(size=(36, 36))
    files = sorted((image_folder / "test").rglob("*.*"))  # class folders, then names: the split
    expected = np.stack([eval_file(p, spec) for p in files])
    np.testing.assert_array_equal(inputs[: len(files)], expected[: len(inputs)])


@pytest.mark.parametrize("problem", ["bad-file", "duplicate", "missing-class"])
def test_onedge_run_stops_before_training(
    prefect_server,
    image_folder: Path,
    bad_image_files: dict[str, Path],
    tmp_path: Path,
    capsys,
    problem: str,
):
    from pipeline.cli import main

    folder = Path(shutil.copytree(image_folder, tmp_path / "photos"))
    if problem == "bad-file":
        shutil.copy(bad_image_files["truncated"], folder / "val" / "bag" / "broken.jpg")
    elif problem == "duplicate":
        source = next((folder / "train" / "bag").iterdir())
        shutil.copy(source, folder / "val" / "bag" / f"again{source.suffix}")
    else:
        shutil.rmtree(folder / "test" / "trouser")
    out = tmp_path / "run"
    assert main(["run", "--config", str(write_config(tmp_path, folder)), "--out", str(out)]) == 2
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    expected = {"bad-file": "broken.jpg", "duplicate": "allow_duplicates", "missing-class": "'trouser' is in train/ but not in test/"}  # fmt: skip
    assert len(said) == 1 and expected[problem] in said[0]
    assert not (out / "train").exists()  # nothing trained
