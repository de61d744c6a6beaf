"""bench/methods.py --teacher: one teacher network per seed, shared by every method taking it.

On digits, one epoch, tiny widths: the teacher entry is trained once, srm and meal both read
its checkpoint (its sha256 is in their runs), and its time is added to theirs.
"""

from __future__ import annotations

import json

import pytest

from bench.method_tables import Results
from bench.methods import REGIMES, main, run_config, teacher_entries

TEACHER = "vanilla:model.width=0.5"


def test_only_methods_that_take_checkpoints_get_the_teacher_entry():
    assert teacher_entries("srm", [TEACHER]) == [TEACHER]
    assert teacher_entries("meal:method.adversarial=false", [TEACHER, "one"]) == [TEACHER, "one"]
    assert teacher_entries("vanilla", [TEACHER]) == []
    assert teacher_entries("ensemble-kd", [TEACHER]) == []  # its members are seed stages
    assert teacher_entries("kd", []) == ["ensemble"]  # kd's default teacher entry


def test_a_given_teacher_replaces_the_methods_own_teacher_stages(tmp_path):
    ckpt = tmp_path / "t.pt"
    srm = run_config(REGIMES["digits"], "srm", 0, [], [ckpt]).training_config()
    assert srm.method.teacher == ckpt
    meal = run_config(REGIMES["digits"], "meal", 0, [], [ckpt, ckpt]).training_config()
    assert meal.method.teachers == [ckpt, ckpt]
    with pytest.raises(ValueError, match="takes one teacher"):
        run_config(REGIMES["digits"], "srm", 0, [], [ckpt, ckpt])
    with pytest.raises(ValueError, match="takes no teacher"):
        run_config(REGIMES["digits"], "vanilla", 0, [], [ckpt])


def test_the_teacher_is_trained_once_and_counted_in_each_taught_method(tmp_path):
    args = [
        "--regime", "digits", "--seeds", "0", "--methods", "srm", "meal", "--teacher", TEACHER,
        "--set", "train.epochs=1", "model.width=0.25", "data.calibration_size=64",
        "--out", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs"),
    ]  # fmt: skip
    main(args)
    results = Results(tmp_path / "docs" / "methods_digits.json")
    teacher = results.get(TEACHER, 0)
    assert teacher is not None
    runs = tmp_path / "runs" / "digits" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == sorted(
        [teacher["folder"], "srm-seed0", "meal-seed0", "vanilla-seed0"]
    )
    for entry in ("srm", "meal"):
        record = results.get(entry, 0)
        assert record["teacher_entries"] == [TEACHER]
        assert record["teacher_seconds"] == teacher["seconds_total"]
        assert record["seconds_total"] > teacher["seconds_total"]
        assert record["cpu_seconds_total"] > teacher["cpu_seconds_total"] > 0
        metrics = json.loads((runs / f"{entry}-seed0" / "metrics.json").read_text())
        # the student read the teacher run's checkpoint: no teacher stage of its own
        assert [s["name"] for s in metrics["stages"] if s["name"].startswith("teacher")] == []
    md = (tmp_path / "docs" / "methods_digits.md").read_text()
    assert f"Teachers: srm is taught by {TEACHER}" in md
    assert "| CPU s (with teachers) | x vanilla CPU |" in md
    # the same saved results with another teacher are refused, not reused
    other = [a if a != TEACHER else "vanilla:model.width=0.75" for a in args]
    with pytest.raises(ValueError, match="give this comparison its own --tag"):
        main(other)
