"""Every methods table in docs/benchmarks/ against its JSON, recomputed here with scipy.

The tables are made by the commands listed in docs/benchmarks/README.md (``--no-train``, from
the saved per-image results); each table must say it was made by its command, and every number
of its seed-level and these-networks columns must be what the JSON's runs give. So a table
regenerated from a JSON with more seeds stays checked.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from bench.method_tables import pct, pvalue, seeds_text, unpack
from training.stats import seeds_needed

DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"


def commands() -> list[list[str]]:
    text = (DOCS / "README.md").read_text()
    block = text.split("<!-- regenerate: begin -->")[1].split("<!-- regenerate: end -->")[0]
    return [shlex.split(line) for line in block.splitlines() if line.startswith("python ")]


def option(argv: list[str], name: str, default: str = "") -> str:
    return argv[argv.index(name) + 1] if name in argv else default


def options(argv: list[str], name: str) -> list[str]:
    if name not in argv:
        return []
    rest = argv[argv.index(name) + 1 :]
    return rest[: next((i for i, a in enumerate(rest) if a.startswith("--")), len(rest))]


def table_rows(text: str, first_header: str) -> list[list[str]]:
    """The body rows of the first table after a header row starting with ``first_header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def expected_cells(a: np.ndarray, b: np.ndarray, seeds: list[int]) -> list[str]:
    """difference, p t-test, p sign-flip, McNemar per seed, these networks, seeds for 80%."""
    diff = b.mean(axis=1) - a.mean(axis=1)
    n, mean = len(seeds), float(diff.mean())
    if n >= 3 and np.ptp(diff) > 1e-12:
        test = sps.ttest_rel(b.mean(axis=1), a.mean(axis=1))
        ci = test.confidence_interval(0.95)
        cell = pct({"mean": mean, "low": ci.low, "high": ci.high}, True)
        p_t = pvalue(test.pvalue)
        need = seeds_needed(mean, float(diff.std(ddof=1)))
    else:
        cell, p_t, need = pct({"mean": mean, "low": None}, True), None, None
    if n >= 3:
        flip = sps.permutation_test((diff,), np.mean, permutation_type="samples",
                                    n_resamples=np.inf).pvalue  # fmt: skip
        flip_cell = pvalue(flip)
    else:
        flip_cell = "n/a"
    per_seed = []
    for x, y in zip(a, b, strict=True):
        a_only, b_only = int((x & ~y).sum()), int((y & ~x).sum())
        p = sps.binomtest(b_only, a_only + b_only).pvalue if a_only + b_only else 1.0
        per_seed.append(pvalue(min(1.0, p)))
    summed = (b.astype(float) - a).sum(axis=0)
    clustered = sps.ttest_1samp(summed, 0.0)
    cci = clustered.confidence_interval(0.95)
    nets = pct({"mean": summed.mean() / n, "low": cci.low / n, "high": cci.high / n}, True)
    return [cell, p_t, flip_cell, " / ".join(per_seed), f"{nets}, p {pvalue(clustered.pvalue)}",
            need]  # fmt: skip


def check_cells(got: list[str], want: list, where: str) -> None:
    cell, p_t, flip, per_seed, nets, need = want
    assert got[0] == cell, where
    assert got[1] == p_t if p_t is not None else got[1].startswith("n/a"), where
    assert got[2:5] == [flip, per_seed, nets], where
    if need is not None:
        assert got[5] == str(need), where


def correctness(runs: dict, entry: str, seeds: list[int], key: str, index: int | None = None):
    recs = [runs[f"{entry}@seed{s}"] for s in seeds]
    bits = [r[key] if index is None else r[key][index] for r in recs]
    return np.stack([unpack(t, r["images"]) for t, r in zip(bits, recs, strict=True)])


CASES = commands()
ROOT = DOCS.parents[1]


def json_of(argv: list[str]) -> dict:
    name = option(argv, "--regime") + (f"-{t}" if (t := option(argv, "--tag")) else "")
    return json.loads((DOCS / f"methods_{name}.json").read_text())["runs"]


def table_name(argv: list[str]) -> str:
    name = option(argv, "--regime") + (f"-{t}" if (t := option(argv, "--tag")) else "")
    return option(argv, "--table") or f"methods_{name}"


def check_methods_table(text: str, argv: list[str], runs: dict) -> None:
    """Every row of the first methods table in ``text`` against the runs."""
    asked = [int(s) for s in options(argv, "--seeds")] or None
    baseline = option(argv, "--baseline", "vanilla")
    entries = {r[0]: r for r in table_rows(text, "method")}

    def has(entry: str) -> list[int]:
        found = []
        for key, record in runs.items():
            name, _, seed = key.rpartition("@seed")
            if name == entry and "deployed_correct" in record:
                found.append(int(seed))
        return sorted(s for s in found if asked is None or s in asked)

    base_seeds = has(baseline)
    for entry in [baseline, *options(argv, "--methods")]:
        own = has(entry)
        if not own:
            continue
        row = entries[entry]
        seeds = own if entry == baseline else [s for s in own if s in base_seeds]
        assert row[1] == seeds_text(seeds), entry
        top1 = correctness(runs, entry, seeds, "deployed_correct").mean(axis=1)
        assert row[2].split(" [")[0] == f"{100 * top1.mean():.2f}", entry
        if entry != baseline:
            a = correctness(runs, baseline, seeds, "deployed_correct")
            b = correctness(runs, entry, seeds, "deployed_correct")
            check_cells(row[3:9], expected_cells(a, b, seeds), entry)


def check_family_tables(text: str, runs: dict) -> None:
    """Every student row of every family table in ``text`` against the runs."""
    pattern = r"^(?:#### |Students of `)(.+?)(?:`)?:? (?:each student )?against (?:its|each) width"
    for match in re.finditer(pattern, text, re.MULTILINE):
        family, section = match.group(1), text[match.end() :]
        for row in table_rows(section, "student"):
            j, listed = int(row[0][1:]), row[2].split("(")[1].rstrip(")")
            if "-" in listed:
                first, last = map(int, listed.split("-"))
                seeds = list(range(first, last + 1))
            else:
                seeds = [int(s) for s in listed.split(", ")]
            width = runs[f"{family}@seed{seeds[0]}"]["model_width"] * float(row[1])
            twin = f"vanilla:model.width={width:g}"
            if f"{twin}@seed{seeds[0]}" not in runs:  # the family's other overrides kept
                twin = next(k.rpartition("@")[0] for k in runs if k.startswith("vanilla:")
                            and k.rpartition("@")[0].endswith(f"model.width={width:g}"))  # fmt: skip
            a = correctness(runs, twin, seeds, "branch_correct", 0)
            b = correctness(runs, family, seeds, "branch_correct", j)
            assert row[3].split(" [")[0] == f"{100 * b.mean():.2f}", (family, j)
            check_cells(row[5:11], expected_cells(a, b, seeds), f"{family} s{j}")


def row_lines(text: str) -> list[str]:
    """The line per method of a table file (under 'What each row shows')."""
    part = text.split("What each row shows (seed level, then these networks):\n\n", 1)[1]
    return part.split("\n\n", 1)[0].splitlines()


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(c[3:9]) for c in CASES])
def test_a_table_is_its_json(argv: list[str]) -> None:
    text = (DOCS / f"{table_name(argv)}.md").read_text()
    assert f"Made with `{shlex.join(argv)}` from the saved runs." in text
    runs = json_of(argv)
    check_methods_table(text, argv, runs)
    check_family_tables(text, runs)


@pytest.mark.parametrize("argv", [c for c in CASES if "--into-doc" in c], ids=table_name)
def test_the_blocks_in_the_reference_and_readme_are_the_table(argv: list[str]) -> None:
    name, runs = table_name(argv), json_of(argv)
    made = (DOCS / f"{name}.md").read_text()
    docs = [argv[i + 1] for i, a in enumerate(argv) if a == "--into-doc"]
    for doc in docs:
        text, found = (ROOT / doc).read_text(), 0
        for kind in ("table", "claims", "students"):
            begin, end = f"<!-- {kind}:{name} begin -->", f"<!-- {kind}:{name} end -->"
            if begin not in text:
                continue
            block = text.split(begin)[1].split(end)[0]
            found += 1
            if kind == "claims":
                assert block.strip().splitlines() == row_lines(made), (doc, name)
                continue
            assert f"Made with `{shlex.join(argv)}`." in block, (doc, kind)
            if kind == "table":
                check_methods_table(block, argv, runs)
                assert [ln for ln in block.splitlines() if ln.startswith("- ")] == row_lines(made)
            else:
                check_family_tables(block, runs)
        assert found, f"{doc} has no block for {name}"


def test_every_methods_table_in_the_folder_has_its_command() -> None:
    assert {p.stem for p in DOCS.glob("methods_*.md")} == {table_name(c) for c in CASES}
