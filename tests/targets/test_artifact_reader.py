"""The one artifact-folder reader (export.manifest) and its twin in the runner refuse the same folders.

Each case is a folder an attacker or an interrupted export could leave: a listed name that climbs
out of the folder, an absolute name, a file the manifest does not list, a symlink (listed or not,
its target hashing right), a subfolder, an export without export.json, an emptied artifact folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from export.manifest import (
    EXPORT_JSON,
    MANIFEST_NAME,
    ArtifactError,
    artifact_hash,
    read_export,
    read_manifest,
    verify_artifact,
)
from targets import runner, validate_artifacts
from targets.errors import RunnerFailedError
from targets.runs import read_runner_output

MODEL = b"not really onnx, but hashed like one"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_raw_manifest(folder: Path, files: dict[str, str], model_file: str = "model.onnx"):
    """A manifest written by hand, as an attacker would: any names, hashes that add up."""
    document = {
        "name": "crafted",
        "format": "onnx",
        "precision": "fp32",
        "files": files,
        "sha256": artifact_hash(files),
        "model_file": model_file,
        "input": {"shape": [-1, 1, 8, 8], "mean": [0.0], "std": [1.0]},
        "output": {"shape": [-1, 10]},
        "class_names": [str(i) for i in range(10)],
        "source_checkpoint_sha256": "0" * 64,
        "branch": 0,
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(document))


def good_artifact(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(MODEL)
    write_raw_manifest(folder, {"model.onnx": sha(MODEL)})
    return folder


def traversal(folder: Path) -> None:
    """A listed name that climbs two folders up (it reached ~/.ssh on a board)."""
    (folder.parent / "x").write_bytes(b"planted")
    write_raw_manifest(folder, {"model.onnx": sha(MODEL), "../x": sha(b"planted")})


def absolute(folder: Path) -> None:
    target = folder.parent / "abs"
    target.write_bytes(b"planted")
    write_raw_manifest(folder, {"model.onnx": sha(MODEL), str(target): sha(b"planted")})


def unlisted_file(folder: Path) -> None:
    (folder / "notes.txt").write_text("not in the manifest")


def unlisted_symlink(folder: Path) -> None:
    (folder / "README.txt").symlink_to("/etc/passwd")


def listed_symlink(folder: Path) -> None:
    """model.onnx is a link to a file with the right hash: the content is not the issue."""
    real = folder.parent / "elsewhere.onnx"
    real.write_bytes(MODEL)
    (folder / "model.onnx").unlink()
    (folder / "model.onnx").symlink_to(real)


def subfolder(folder: Path) -> None:
    (folder / "extra").mkdir()


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "traversal": (traversal, "not a plain file name"),
    "absolute": (absolute, "not a plain file name"),
    "unlisted-file": (unlisted_file, "notes.txt, which its manifest does not list"),
    "unlisted-symlink": (unlisted_symlink, "README.txt, which its manifest does not list"),
    "listed-symlink": (listed_symlink, "model.onnx is a symlink"),
    "subfolder": (subfolder, "extra, which its manifest does not list"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_both_readers_refuse_a_crafted_artifact(case: str, tmp_path: Path) -> None:
    craft, message = CASES[case]
    folder = good_artifact(tmp_path / "art")
    verify_artifact(folder)  # the untouched folder passes both
    runner.check_artifact(str(folder), None)
    craft(folder)
    with pytest.raises(ArtifactError, match=message) as info:
        verify_artifact(folder)
    assert "\n" not in str(info.value)
    with pytest.raises(runner.RunnerError) as refused:
        runner.check_artifact(str(folder), None)
    assert refused.value.kind == "artifact-mismatch"


def test_runner_refusal_reaches_the_caller_as_an_artifact_error(tmp_path: Path) -> None:
    folder = good_artifact(tmp_path / "art")
    unlisted_symlink(folder)
    with pytest.raises(SystemExit):  # argparse: the runner needs its flags
        runner.main(["--artifact", str(folder)])
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = runner.main(
            ["--artifact", str(folder), "--data", "x.npz", "--backend", "onnxruntime"]
        )
    assert status == runner.EXIT["artifact-mismatch"]
    with pytest.raises(ArtifactError, match="README.txt is not listed"):
        read_runner_output(out.getvalue(), "", status, "here", "python3")
    assert not isinstance(ArtifactError, RunnerFailedError)


def test_manifest_model_refuses_a_traversing_model_file(tmp_path: Path) -> None:
    folder = good_artifact(tmp_path / "art")
    write_raw_manifest(folder, {"model.onnx": sha(MODEL)}, model_file="../model.onnx")
    with pytest.raises(ArtifactError, match="not a plain file name"):
        read_manifest(folder)


def test_symlinked_artifact_folder_is_refused(tmp_path: Path) -> None:
    real = good_artifact(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ArtifactError, match="symlink"):
        verify_artifact(tmp_path / "link")


def test_killed_export_is_refused_naming_what_is_missing(
    export_copy: Path, tmp_path: Path, fast
) -> None:
    """An export killed half-way: no export.json, or an artifact folder left empty."""
    index = json.loads((export_copy / EXPORT_JSON).read_text())
    assert list(read_export(export_copy)) == [e["folder"] for e in index["artifacts"]]
    (export_copy / EXPORT_JSON).unlink()
    with pytest.raises(ArtifactError, match="incomplete: export.json is missing"):
        validate_artifacts(export_copy, "local-cpu", tmp_path / "a", fast)
    (export_copy / EXPORT_JSON).write_text(json.dumps(index))
    shutil.rmtree(export_copy / "openvino-fp32")
    os.mkdir(export_copy / "openvino-fp32")
    with pytest.raises(ArtifactError, match="incomplete: openvino-fp32/manifest.json is missing"):
        validate_artifacts(export_copy, "local-cpu", tmp_path / "b", fast)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_export_index_must_match_the_folders(export_copy: Path, tmp_path: Path, fast) -> None:
    """A folder swapped after the export (another, self-consistent artifact) is refused."""
    index = json.loads((export_copy / EXPORT_JSON).read_text())
    index["artifacts"][0]["sha256"] = "f" * 64
    (export_copy / EXPORT_JSON).write_text(json.dumps(index))
    with pytest.raises(ArtifactError, match="is not the one the export recorded"):
        validate_artifacts(export_copy, "local-cpu", tmp_path / "r", fast)
    index["artifacts"][0]["folder"] = "../onnx-fp32"
    (export_copy / EXPORT_JSON).write_text(json.dumps(index))
    with pytest.raises(ArtifactError, match="not a plain file name"):
        read_export(export_copy)
