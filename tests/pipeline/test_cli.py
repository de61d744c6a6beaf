"""The command line: export, validate and run on the end-to-end run's files; clear errors."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import main
from pipeline.config import dump_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def config_file(pipeline_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "digits-quick.yaml"
    path.write_text(dump_config(pipeline_run.config))
    return path


@pytest.fixture(scope="module")
def small_export(pipeline_run, config_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-export")
    argv = [
        "export", "--checkpoint", str(pipeline_run.out / "train" / "checkpoint.pt"),
        "--out", str(out), "--formats", "onnx", "--precisions", "fp32",
        "--config", str(config_file),
    ]  # fmt: skip
    assert main(argv) == 0
    return out


def test_export_writes_the_asked_artifacts(small_export, capsys):
    document = json.loads((small_export / "export.json").read_text())
    assert [a["name"] for a in document["artifacts"]] == ["onnx-fp32"]
    assert (small_export / "torch-fp32" / "manifest.json").is_file()


def test_validate_writes_a_report_with_the_config_settings(
    small_export, config_file, tmp_path, capsys
):
    out = tmp_path / "validation"
    argv = [
        "validate",
        "--artifacts",
        str(small_export),
        "--target",
        "local-cpu",
        "--out",
        str(out),
    ]
    assert main([*argv, "--config", str(config_file)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["timed_seconds"] == 0.3  # from the config, not the defaults
    assert {r["artifact"]: r["verdict"] for r in report["results"]} == {
        "onnx-fp32": "pass",
        "torch-fp32": "skipped",
    }
    assert "report.json" in capsys.readouterr().out
    strict = [*argv, "--config", str(config_file), "--set", "validate.gates.max_size_mb=0.001"]
    assert main(strict) == 1  # a failed gate is a non-zero exit


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "--formats", "onnx,coreml"], "unknown export format 'coreml'"),
        (["export", "--precisions", "int4"], "unknown precision 'int4'"),
        (["validate", "--target", "local-cpu", "--key", "/k"], "are for ssh targets"),
        (["validate", "--target", "tcp://board"], "is not of the form ssh://"),
        (["validate", "--target", "gpu-box"], "unknown target 'gpu-box'"),
        (["run", "--set", "validate.required=[ssh://pi@b:22]"], "required target"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(argv, message, pipeline_run, tmp_path, capsys):
    common = {
        "export": ["--checkpoint", str(pipeline_run.out / "train" / "checkpoint.pt")],
        "validate": ["--artifacts", str(pipeline_run.out / "export")],
        "run": ["--config", str(pipeline_run.out / "config.yaml")],
    }[argv[0]]
    assert main([argv[0], *common, "--out", str(tmp_path / "x"), *argv[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
