"""bench/methods.py with a family entry: each student against its width trained alone.

A 2-student family on digits, one epoch, two seeds; the twins are ordinary saved runs; results of
the former bench/students.py are summarised to the same numbers after import.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.families import summarise_family, twin_entries
from bench.import_students import merge
from bench.method_tables import Results, unpack
from bench.methods import main
from onedge.errors import ConfigError

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
        assert row["difference"]["estimate"] == pytest.approx(gap)
        assert row["difference"]["low"] <= gap <= row["difference"]["high"]
        discordant = sum(int((a & ~b).sum()) for a, b in zip(alone, student, strict=True))
        assert row["mcnemar"]["a_only"] == discordant
        assert 0.0 <= row["seed_test"]["p_value"] <= 1.0
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
    assert f"Not yet run (no saved result): {TWINS[0]}@seed2, {FAMILY}@seed2" in text
    # before any twin of a family is saved, its table says so
    data["runs"] = {k: v for k, v in data["runs"].items() if not k.startswith("vanilla")}
    (docs / "methods_digits.json").write_text(json.dumps(data))
    main([*ARGS[:-3], "--docs", str(docs), "--no-train"])
    assert Results(docs / "methods_digits.json").data["students"][FAMILY]["rows"] == []
    assert "No width trained alone is saved yet." in (docs / "methods_digits.md").read_text()


def old_layout(results: Results, entry: str, name: str) -> dict:
    """The runs of ``entry`` and its twins as the former bench/students.py saved them."""
    runs = {}
    for seed in (0, 1):
        record = results.get(entry, seed)
        for key, rec in [(name, record)] + [
            (f"vanilla-w{w:g}", results.get(t, seed))
            for w, t in zip(record["widths"], twin_entries(entry, record), strict=True)
        ]:
            runs[f"{key}@{seed}"] = {
                "images": rec["images"], "correct": rec["branch_correct"],
                "top1": rec["branch_top1"], "seconds": rec["seconds_total"],
                "epochs": rec["epochs"], "widths": rec["widths"], "cost": rec["cost"],
            }  # fmt: skip
    return {"runs": runs, "command": "python bench/students.py --regime digits --tag x"}


def test_import_of_the_former_students_file_keeps_every_number(tmp_path):
    # docs/benchmarks/students_digits.json: written and summarised by the former bench/students.py
    old_path = ROOT / "docs" / "benchmarks" / "students_digits.json"
    old = json.loads(old_path.read_text())
    into = tmp_path / "methods_digits-students.json"
    names = {"family-student-ce": "student-ensemble:method.student_ce=true"}
    added = merge(old_path, into, "digits", names, None)
    assert len(added) == len(old["runs"])
    results = Results(into)
    for name, entry in {"family": "student-ensemble", **names}.items():
        new = summarise_family(results, entry, [0, 1, 2])
        before = old["summaries"][name]
        assert new["training"] == before["training"]
        assert len(new["rows"]) == len(before["rows"]) == 5
        for row, was in zip(new["rows"], before["rows"], strict=True):
            assert {k: row[k] for k in was} == was
    # no run folders: the deployed student is unknown, so no methods-table row
    assert "deployed_correct" not in results.get("student-ensemble", 0)
    assert merge(old_path, into, "digits", names, None) == []  # again: nothing new
    with pytest.raises(ConfigError, match="no entry for family 'family-student-ce'"):
        merge(old_path, tmp_path / "other.json", "digits", {}, None)


def test_import_reads_the_deployed_student_from_the_old_run_folders(bench_run, tmp_path):
    results = results_of(bench_run)
    old = old_layout(results, FAMILY, "family-x")
    old_runs = tmp_path / "old-runs"
    for seed in (0, 1):
        folder = run_folders(bench_run) / results.get(FAMILY, seed)["folder"]
        shutil.copytree(folder, old_runs / f"family-x-seed{seed}")
    old_path = tmp_path / "students_digits.json"
    old_path.write_text(json.dumps(old))
    into = tmp_path / "methods_digits.json"
    merge(old_path, into, "digits", {"family-x": FAMILY}, old_runs, ["model.width=0.25"])
    imported = Results(into)
    for seed in (0, 1):
        got, want = imported.get(FAMILY, seed), results.get(FAMILY, seed)
        for key in ("deployed_correct", "ensemble_correct", "deployed_top1", "deployed_branch"):
            assert got[key] == want[key]
    # the twins' keys are those the new benchmark uses: the import resumes into the same runs
    assert sorted(imported.data["runs"]) == sorted(results.data["runs"])
    new = summarise_family(imported, FAMILY, [0, 1])
    assert new["rows"] == results.data["students"][FAMILY]["rows"]
    # a clash with other results is refused, not overwritten
    old["runs"]["family-x@0"]["top1"] = [0.0, 0.0]
    old_path.write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="already holds"):
        merge(old_path, into, "digits", {"family-x": FAMILY}, old_runs, ["model.width=0.25"])
    assert os.path.getsize(into) > 0


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
