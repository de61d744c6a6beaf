"""The markdown of a methods table (bench/methods.py): setting, table, a line per method saying
what is shown and what is not, and the student rows of a family entry."""

from __future__ import annotations

from argparse import Namespace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.families import family_table
from bench.host import machine
from bench.method_tables import Results, epochs_run, table, verdict
from onedge.errors import ConfigError
from onedge.files import atomic_write
from training.stats import MIN_BOOTSTRAP_SEEDS

# the family entry's own settings (bench/methods.py METHOD_OVERRIDES), named in its note
FAMILY_SETTINGS = "model.branches=5 model.width=1.0"


def teacher_note(results: Results, entries: list[str]) -> list[str]:
    """One line per taught entry: which entries' networks taught it (from the saved runs)."""
    taught: dict[str, set[str]] = {}
    for record in results.data.get("runs", {}).values():
        if record["entry"] in entries and record.get("teacher_entries"):
            taught.setdefault(record["entry"], set()).update(record["teacher_entries"])
    return [
        f"Teachers: {entry} is taught by {', '.join(sorted(t))} of the same seed (trained once "
        "per seed, shared, its time counted in the taught method's total)"
        for entry, t in taught.items()
    ]


NOTES = (
    "Reading the table. Seed-level columns (the method question: does it pay when trained "
    "again?): the mean of the per-seed top-1 differences with a t-based 95% CI, the paired "
    "t-test over seeds, and the exact sign-flip permutation test (its smallest possible p is "
    "2/2^seeds: 0.25 at 3 seeds). Fewer than 3 seeds, or the same difference on every seed: no "
    "p-value. 'These networks' columns answer a narrower question, whether these trained "
    "networks differ on a random test image: the exact McNemar test of each seed's pair, and a "
    "test over all seeds and images that treats each image as a cluster over the seeds (per-image "
    "differences summed over the seeds), not pooled discordant counts. Seeds for 80% power: "
    "seeds a paired t-test needs to find the observed mean difference at the observed per-seed "
    "SD. top-1 CI: t-based over the seeds (the seeds x images bootstrap is in the JSON with the "
    f"seeds it rests on; below {MIN_BOOTSTRAP_SEEDS} seeds it undercovers and is not used). "
    "Every column of a row uses the seeds it shares with the baseline. Peers (dml, ensemble): "
    "deployed = the member with the best validation top-1. CPU s: every stage, teachers included "
    "(not inflated by the machine's load, unlike wall seconds)."
)


def report_lines(
    args: Namespace,
    regime: Any,
    results: Results,
    rows: list[dict],
    families: dict[str, dict],
    seeds: list[int],
    entries: list[str],
    command: str,
    wall: float,
) -> list[str]:
    """The markdown of one methods table: setting, table, what each row shows, student rows."""
    overrides = results.data.get("overrides", [*regime.overrides, *args.overrides])
    json_name = results.path.name
    unknown = "not recorded in the results file"
    recorded = results.data.get("command") or (command if not args.no_train else None)
    trained_with = f"`{recorded}`" if recorded else unknown
    lines = [
        f"### {results.path.stem.removeprefix('methods_')}: {regime.note}",
        "",
        f"Trained with: {trained_with}",
        f"Machine: {results.data.get('machine') or (machine() if not args.no_train else unknown)}",
        f"Results file: `{json_name}`; baseline `{args.baseline}`",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; this invocation's wall time "
        f"{wall:.0f} s (runs already saved were not retrained)",
        f"Setting: {epochs_run(results, entries, seeds)} epochs, seeds {seeds}, split_seed 0, "
        f"config {Path(regime.config).name}, overrides {' '.join(overrides)}",
        *teacher_note(results, entries),
        "",
        *table(rows, args.baseline),
        "",
        "What each row shows (seed level, then these networks):",
        "",
        *[f"- {v}" for r in rows if (v := verdict(r, args.baseline))],
        *[
            f"- {r['entry']}: no seed shared with {args.baseline} (seeds {r['unpaired_seeds']})."
            for r in rows
            if not r["seeds"]
        ],
        "",
        NOTES,
    ]
    if families:
        lines += [
            "",
            f"A family's row above is its deployed student (students at full width: "
            f"{FAMILY_SETTINGS}) against {args.baseline}; its "
            "students against the same widths trained alone follow.",
        ]
    unknown = [e for e in families if e not in {r["entry"] for r in rows}]
    if unknown:
        lines += [
            "",
            f"No row above for {', '.join(unknown)}: imported without the run folders, so the "
            "deployed student and the ensemble are unknown (bench.families.import_students with the old run folder).",
        ]
    for entry, summary in families.items():
        lines += [
            "",
            f"#### {entry}: each student against its width trained alone",
            "",
            f"Students of widths {summary['widths']} x model.width {summary['model_width']:g}; "
            "'alone' is vanilla at the student's width (its stem scaled as well), same epochs, "
            "seeds and split.",
            "",
            *family_table(summary),
        ]
    return lines


def missing_text(keys: list[str]) -> str:
    """``one@seed3``, ``one@seed4`` ... as ``one: seeds 3, 4; ...``."""
    by_entry: dict[str, list[str]] = {}
    for key in keys:
        entry, _, seed = key.rpartition("@seed")
        by_entry.setdefault(entry, []).append(seed)
    return "; ".join(f"{e}: seed{'s' if len(s) > 1 else ''} {', '.join(s)}" for e, s in
                     by_entry.items())  # fmt: skip


def claims(rows: list[dict], baseline: str) -> list[str]:
    """A line per method: what it shows at the seed level, and for these networks."""
    return [f"- {v}" for r in rows if (v := verdict(r, baseline))]


def claims_block(
    rows: list[dict], families: dict[str, dict], baseline: str, name: str
) -> list[str]:
    """The compact table, a line per method and the student rows, for the reference."""
    lines = [*table(rows, baseline, compact=True), "", *claims(rows, baseline)]
    return [*lines, "", f"Full table: [{name}.md](benchmarks/{name}.md)."]


def students_block(families: dict[str, dict], name: str) -> list[str]:
    """Each family's students against their widths alone, and a line per student."""
    lines: list[str] = []
    for entry, summary in families.items():
        lines += [f"Students of `{entry}` against each width trained alone:", ""]
        lines += [*family_table(summary), ""]
        for r in summary["rows"]:
            who = {**r, "entry": f"student {r['student']} (width {r['width']:g})"}
            if v := verdict(who, "the same width alone"):
                lines.append(f"- {v}")
        lines.append("")
    return [*lines, f"Full table: [{name}.md](benchmarks/{name}.md)."]


def write_blocks(path: Path, name: str, blocks: dict[str, list[str]]) -> None:
    """Replace the text between ``<!-- KIND:NAME begin -->`` and ``<!-- KIND:NAME end -->`` of
    ``path`` for each KIND of ``blocks`` the file has (``table``: the compact table and the line
    per method; ``claims``: the lines only); the rest of the file is left as it is."""
    text = path.read_text()
    found = False
    for kind, lines in blocks.items():
        begin, end = f"<!-- {kind}:{name} begin -->", f"<!-- {kind}:{name} end -->"
        if text.count(begin) == 0 and text.count(end) == 0:
            continue
        if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
            raise ConfigError(f"{path}: needs one '{begin}' ... '{end}' block, in that order")
        head, rest = text.split(begin)
        _, tail = rest.split(end)
        text, found = head + begin + "\n" + "\n".join(lines) + "\n" + end + tail, True
    if not found:
        kinds = " or ".join(f"'<!-- {k}:{name} begin -->'" for k in blocks)
        raise ConfigError(f"{path}: no {kinds} block to write the table into")
    atomic_write(path, text)
