"""Command-line parsing: several --set pairs after one flag, and the exit codes in run --help."""

from __future__ import annotations

import pytest

from pipeline.cli import expand_set_pairs, main


def test_pairs_after_one_flag_become_repeated_flags():
    argv = ["train", "--set", "a=1", "b.c=2", "--out", "x", "-s", "d=[1, 2]", "e=3"]
    assert expand_set_pairs(argv) == [
        "train", "--set", "a=1", "--set", "b.c=2", "--out", "x",
        "-s", "d=[1, 2]", "--set", "e=3",
    ]  # fmt: skip
    assert expand_set_pairs(["run", "--set=a=1", "b=2"]) == ["run", "--set=a=1", "--set", "b=2"]
    repeated = ["run", "--set", "a=1", "--set", "b=2"]
    assert expand_set_pairs(repeated) == repeated


@pytest.mark.parametrize("how", ["one-flag", "repeated"])
def test_every_pair_reaches_the_config(how, tmp_path, capsys):
    """The second pair is read too: its unknown key is the error reported."""
    pairs = ["train.epochs=1", "train.nonsense=2"]
    sets = ["--set", *pairs] if how == "one-flag" else ["--set", pairs[0], "--set", pairs[1]]
    argv = ["export", "--checkpoint", str(tmp_path / "c.pt"), "--out", str(tmp_path), *sets]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'train.nonsense'" in err and len(err.strip().splitlines()) == 1


def test_a_bare_word_after_pairs_is_one_clear_error(tmp_path, capsys):
    argv = ["train", "--config", "c.yaml", "--out", str(tmp_path), "--set", "a=1", "epochs"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "'epochs' is not one" in err and len(err.splitlines()) == 1


def test_run_help_lists_the_exit_codes(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for line in ("0  a version was registered", "3  nothing passed its gates", "2  bad input",
                 "1  internal error"):  # fmt: skip
        assert line in out, out


def test_help_imports_no_torch_prefect_or_mlflow():
    """The commands import their heavy parts inside: ``onedge --help`` stays light."""
    import subprocess
    import sys

    code = (
        "import sys; from pipeline.cli import main; main(['--help']); "
        "print(sorted(m for m in ('torch', 'prefect', 'mlflow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
