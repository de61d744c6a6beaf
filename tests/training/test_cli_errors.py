"""Bad input to `onedge train` gives one clear line on stderr and a non-zero exit."""

import subprocess
import sys

import pytest
import torch

from pipeline.cli import main
from tests.conftest import ROOT

CONFIG = str(ROOT / "configs/digits-one.yaml")


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.name=resnet21", "unknown model 'resnet21'; known: mobilenet_v2, resnet110"),
        (
            "method.name=distill",
            "unknown method 'distill'; known: compact, dml, ensemble, ensemble-kd, kd, meal",
        ),
        ("data.name=mnist", "unknown data set 'mnist'; known: cifar10, cifar100, digits"),
        ("train.epochz=3", "unknown config key 'train.epochz'"),
    ],
)
def test_unknown_names_and_keys(capsys, tmp_path, override, expected):
    code, err = run_cli(capsys, "train", "-c", CONFIG, "-o", str(tmp_path), "--set", override)
    assert code != 0
    assert expected in " ".join(err.split())
    assert len(err.splitlines()) <= 2  # one line, soft-wrapped at most once by the terminal


def test_missing_data_files(capsys, tmp_path):
    code, err = run_cli(
        capsys, "train", "-c", CONFIG, "-o", str(tmp_path),
        "--set", "data.name=fashion-mnist", "--set", f"data.root={tmp_path / 'nowhere'}",
    )  # fmt: skip
    assert code != 0
    assert "train-images-idx3-ubyte.gz" in err


def test_corrupt_and_foreign_checkpoint_on_resume(capsys, tmp_path, digits_checkpoint):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    code, err = run_cli(capsys, "train", "-c", CONFIG, "-o", str(out), "--resume")
    assert code != 0 and "cannot be read" in err
    torch.save({"weights": torch.zeros(3)}, out / "checkpoint.pt")
    code, err = run_cli(capsys, "train", "-c", CONFIG, "-o", str(out), "--resume")
    assert code != 0 and "not an onedge checkpoint" in err
    (out / "checkpoint.pt").write_bytes(digits_checkpoint.read_bytes())
    code, err = run_cli(
        capsys, "train", "-c", CONFIG, "-o", str(out), "--resume", "--set", "model.name=resnet32"
    )
    assert code != 0 and "config differs in" in err and "model" in err


def test_the_installed_command_exits_non_zero_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "train", "-c", CONFIG, "-o", str(tmp_path),
         "--set", "model.name=nope"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "unknown model 'nope'" in proc.stderr


def test_registry_listings(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "resnet20" in out and "mobilenet_v2" in out
    assert main(["methods"]) == 0
    assert "one" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    assert "fashion-mnist" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command",
    ["train", "export", "validate", "run", "promote", "rollback", "datasets", "models", "methods"],
)
def test_every_command_has_working_help(capsys, command):
    assert main([command, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


@pytest.mark.parametrize("size, seed", [(1, 8), (1, 15), (100, 8), (5000, 8), (0, 0)])
def test_random_bytes_checkpoint_is_one_clear_line(capsys, tmp_path, size, seed):
    """Case 12: these bytes gave IndexError or struct.error, with a traceback."""
    import random

    from training.checkpoint_file import read_checkpoint
    from training.errors import CheckpointError

    rng = random.Random(seed)
    path = tmp_path / "random.pt"
    path.write_bytes(bytes(rng.randrange(256) for _ in range(size)))
    with pytest.raises(CheckpointError, match="cannot be read") as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)
    code, err = run_cli(capsys, "export", "--checkpoint", str(path), "--out", str(tmp_path / "o"))
    assert code == 2 and "cannot be read" in err and "Traceback" not in err
