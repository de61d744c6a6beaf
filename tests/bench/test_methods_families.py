"""bench/methods.py with a family entry: each student against its width trained alone.

A 2-student family on digits, one epoch, two seeds; the twins are ordinary saved runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.families import twin_entries
from bench.method_tables import Results, unpack
from bench.methods import main

ROOT = Path(__file__).resolve().parents[2]
FAMILY = "student-ensemble:model.branches=2,model.width=0.25"
TWINS = ["vanilla:model.width=0.25", "vanilla:model.width=0.125"]
ARGS = [
    "--regime", "digits", "--seeds", "0", "1", "--baseline", TWINS[0], "--methods", FAMILY,
    "--set", "train.epochs=1", "data.calibration_size=64",
]  # fmt: skip


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("bench")
    main([*ARGS, "--out", str(where / "runs"), "--docs", str(where / "docs")])
    return where


def run_folders(where: Path) -> Path:
    return where / "runs" / "digits" / "runs"


def results_of(where: Path) -> Results:
    return Results(where / "docs" / "methods_digits.json")


def test_a_family_entry_trains_its_twins_and_gets_student_rows(bench_run):
    results = results_of(bench_run)
    # the baseline is the width-0.25 twin itself: trained once, shared
    assert sorted(results.data["runs"]) == sorted(
        f"{e}@seed{s}" for e in (FAMILY, *TWINS) for s in (0, 1)
    )
    family = results.get(FAMILY, 0)
    assert family["widths"] == [1.0, 0.5] and family["model_width"] == 0.25
    assert twin_entries(FAMILY, family) == TWINS
    metrics = json.loads((run_folders(bench_run) / family["folder"] / "metrics.json").read_text())
    assert family["branch_top1"] == pytest.approx(metrics["branch_top1"], abs=1e-6)
    summary = results.data["students"][FAMILY]
    assert [r["width"] for r in summary["rows"]] == [1.0, 0.5]
    size = family["images"]
    for j, row in enumerate(summary["rows"]):
        assert row["twin"] == TWINS[j] and row["seeds"] == [0, 1]
        student = [unpack(results.get(FAMILY, s)["branch_correct"][j], size) for s in (0, 1)]
        alone = [unpack(results.get(TWINS[j], s)["deployed_correct"], size) for s in (0, 1)]
        gap = np.mean(student) - np.mean(alone)
        assert row["difference"]["mean"] == pytest.approx(gap)
        # two seeds: no seed-level p-value or CI, and the reason is said
        assert row["difference"]["p_value"] is None and row["difference"]["low"] is None
        assert "2 seeds" in row["difference"]["reason"]
        assert row["these_networks"]["estimate"] == pytest.approx(gap)
        for seed, a, b, m in zip((0, 1), alone, student, row["mcnemar_per_seed"], strict=True):
            assert (m["seed"], m["a_only"], m["b_only"]) == (seed, (a & ~b).sum(), (b & ~a).sum())
        assert row["student_cost"] == family["cost"][j]
        assert row["twin_cost"] == results.get(TWINS[j], 0)["cost"][0]
    # the students share a full-width stem; the narrow twin's stem is scaled with it
    assert summary["rows"][1]["student_cost"][0] > summary["rows"][1]["twin_cost"][0]
    training = summary["training"]
    assert training["family_seconds"] == pytest.approx(
        np.mean([results.get(FAMILY, s)["seconds_total"] for s in (0, 1)])
    )
    alone_total = [sum(results.get(t, s)["seconds_total"] for t in TWINS) for s in (0, 1)]
    assert training["widths_alone_seconds"] == pytest.approx(np.mean(alone_total))
    # the family is in the methods table too, against the baseline
    assert [r["entry"] for r in results.data["summary"]] == [TWINS[0], FAMILY]
    text = (bench_run / "docs" / "methods_digits.md").read_text()
    assert f"#### {FAMILY}: each student against its width trained alone" in text
    assert "Training time (mean over seeds [0, 1])" in text


def test_a_twin_lost_mid_benchmark_is_trained_again_and_nothing_else(bench_run, tmp_path):
    shutil.copytree(bench_run, tmp_path / "b")
    runs = run_folders(tmp_path / "b")
    before = {p.name: (p / "checkpoint.pt").stat().st_mtime_ns for p in runs.iterdir()}
    path = tmp_path / "b" / "docs" / "methods_digits.json"
    data = json.loads(path.read_text())
    lost = data["runs"].pop(f"{TWINS[1]}@seed1")
    path.write_text(json.dumps(data))
    shutil.rmtree(runs / lost["folder"])
    main([*ARGS, "--out", str(tmp_path / "b" / "runs"), "--docs", str(tmp_path / "b" / "docs")])
    after = {p.name: (p / "checkpoint.pt").stat().st_mtime_ns for p in runs.iterdir()}
    assert set(after) == set(before)
    assert [n for n in after if after[n] != before.get(n)] == [lost["folder"]]
    again = Results(path).get(TWINS[1], 1)
    assert again["deployed_correct"] == lost["deployed_correct"]  # seeded: the same run


def test_no_train_summarises_saved_runs_and_names_the_missing(bench_run, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(bench_run / "docs" / "methods_digits.json", docs / "methods_digits.json")
    main([*ARGS[:-3], "--seeds", "0", "1", "2", "--docs", str(docs), "--no-train"])
    assert not (tmp_path / "runs").exists()
    data = Results(docs / "methods_digits.json").data
    assert data["students"] == results_of(bench_run).data["students"]
    text = (docs / "methods_digits.md").read_text()
    assert f"Not yet run (no saved result): {TWINS[0]}: seed 2; {FAMILY}: seed 2" in text
    # before any twin of a family is saved, its table says so
    data["runs"] = {k: v for k, v in data["runs"].items() if not k.startswith("vanilla")}
    (docs / "methods_digits.json").write_text(json.dumps(data))
    main([*ARGS[:-3], "--docs", str(docs), "--no-train"])
    assert Results(docs / "methods_digits.json").data["students"][FAMILY]["rows"] == []
    assert "No width trained alone is saved yet." in (docs / "methods_digits.md").read_text()


def test_a_methods_file_of_the_earlier_layout_gives_the_same_table(tmp_path):
    # written before the per-branch fields (and still by the benchmarks started before them)
    name = "methods_digits-vanilla-one-main.json"
    shutil.copy(ROOT / "docs" / "benchmarks" / name, tmp_path / name)
    stored = json.loads((tmp_path / name).read_text())
    assert "branch_correct" not in stored["runs"]["one@seed0"]
    main(["--regime", "digits", "--methods", "vanilla", "one", "--docs", str(tmp_path),
          "--tag", "vanilla-one-main", "--no-train"])  # fmt: skip
    again = json.loads((tmp_path / name).read_text())
    assert again["summary"] == stored["summary"]
    assert again["runs"] == stored["runs"] and again["students"] == {}
