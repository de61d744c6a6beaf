"""bench/method_tables.py on small synthetic results: pairing, seeds, refusals, the table's words."""

from __future__ import annotations

import numpy as np
import pytest

from bench import method_tables
from bench.method_report import write_blocks
from bench.method_tables import Results, pack, summarise, table, verdict
from onedge.errors import ConfigError

IMAGES = 400


@pytest.fixture(autouse=True)
def few_resamples(monkeypatch):
    monkeypatch.setattr(method_tables, "BOOTSTRAP", 200)  # the JSON-only bootstraps


def record(entry: str, seed: int, top1: float, **extra) -> dict:
    rng = np.random.default_rng(hash((entry, seed)) % 2**32)
    correct = rng.random(IMAGES) < top1
    return {
        "entry": entry, "seed": seed, "images": IMAGES, "split_seed": 0,
        "deployed_top1": float(correct.mean()), "ensemble_top1": float(correct.mean()),
        "deployed_correct": pack(correct), "ensemble_correct": pack(correct),
        "seconds_per_epoch": 1.0, "seconds_total": 10.0, "cpu_seconds_total": 8.0, **extra,
    }  # fmt: skip


def results(tmp_path, runs: list[dict]) -> Results:
    res = Results(tmp_path / "methods_x.json")
    for r in runs:
        res.data["runs"][res.key(r["entry"], r["seed"])] = r
    return res


def test_top1_and_difference_use_the_seeds_that_have_both(tmp_path):
    runs = [record("vanilla", s, 0.8) for s in (0, 1, 2, 3)]
    runs += [record("one", s, 0.85) for s in (0, 1, 2, 3, 4)]  # seed 4 has no baseline
    rows = summarise(results(tmp_path, runs), ["vanilla", "one"], [0, 1, 2, 3, 4], "vanilla")
    one = rows[1]
    assert one["seeds"] == one["paired_seeds"] == [0, 1, 2, 3]
    assert one["unpaired_seeds"] == [4]
    per_seed = [runs[4 + s]["deployed_top1"] for s in range(4)]
    assert one["top1"]["estimate"] == pytest.approx(np.mean(per_seed))
    base = [runs[s]["deployed_top1"] for s in range(4)]
    assert one["difference"]["mean"] == pytest.approx(np.mean(per_seed) - np.mean(base))
    assert one["difference"]["seeds"] == 4 and one["difference"]["p_value"] is not None
    assert one["difference_bootstrap"]["seeds"] == 4
    assert one["difference_bootstrap"]["method_level"] is False
    assert [m["seed"] for m in one["mcnemar_per_seed"]] == [0, 1, 2, 3]
    assert one["x_baseline_cpu"] == pytest.approx(1.0)
    lines = table(rows, "vanilla")
    assert lines[3].startswith("| one | 4 (0-3) | ")
    assert len(lines[2].split("|")) == len(lines[0].split("|"))


@pytest.mark.parametrize("key, value", [("images", IMAGES - 8), ("split_seed", 1)])
def test_runs_on_other_test_images_are_refused(tmp_path, key, value):
    runs = [record("vanilla", s, 0.8) for s in (0, 1, 2)]
    runs += [record("one", s, 0.85) for s in (0, 1)] + [record("one", 2, 0.85, **{key: value})]
    with pytest.raises(ConfigError, match=rf"cannot pair seed .* \({key} "):
        summarise(results(tmp_path, runs), ["vanilla", "one"], [0, 1, 2], "vanilla")


def test_two_seeds_say_not_tested_and_no_variance_says_so(tmp_path):
    runs = [record("vanilla", s, 0.8) for s in (0, 1)] + [record("kd", s, 0.9) for s in (0, 1)]
    rows = summarise(results(tmp_path, runs), ["vanilla", "kd"], [0, 1], "vanilla")
    assert "n/a (2 seeds < 3)" in table(rows, "vanilla")[3]
    assert "not tested at the seed level (2 seeds" in verdict(rows[1], "vanilla")
    same = [record("vanilla", s, 0.8) for s in (0, 1, 2)]
    same += [{**r, "entry": "copy"} for r in same]  # the same networks: no difference at all
    rows = summarise(results(tmp_path, same), ["vanilla", "copy"], [0, 1, 2], "vanilla")
    assert rows[1]["difference"]["p_value"] is None
    assert "no variance" in rows[1]["difference"]["reason"]
    assert "n/a (no variance)" in table(rows, "vanilla")[3]


def test_a_block_is_replaced_and_the_rest_kept(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("top\n<!-- table:t begin -->\nold\n<!-- table:t end -->\nbottom\n")
    write_blocks(doc, "t", {"table": ["new", "lines"], "claims": ["x"]})
    assert (
        doc.read_text() == "top\n<!-- table:t begin -->\nnew\nlines\n<!-- table:t end -->\nbottom\n"
    )
    with pytest.raises(ConfigError, match="no .* block"):
        write_blocks(doc, "other", {"table": ["new"]})
