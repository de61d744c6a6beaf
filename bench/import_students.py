"""Bring the runs of a students_<regime>.json (the former bench/students.py) into a methods file.

The family and its widths trained alone become records of bench/methods.py's layout
(bench/families.py, ``import_students``), merged into ``--into`` (a ``methods_<name>.json``,
created when missing). Then ``bench/methods.py --no-train`` makes the tables from it without
training again. The old file is only read.

    python bench/import_students.py docs/benchmarks/students_digits.json --regime digits \\
        --into /tmp/m/methods_digits-students.json \\
        --family family-student-ce=student-ensemble:method.student_ce=true
    python bench/methods.py --regime digits --docs /tmp/m --tag students --no-train --seeds 0 1 2 \\
        --methods student-ensemble "student-ensemble:method.student_ce=true"

``--family NAME=ENTRY`` names the entry of each family of the old file (``family`` is
``student-ensemble`` unless given); ``--runs DIR`` is the old benchmark's run folder
(``<out>/<regime>``), where the family's deployed student and ensemble are read from; ``--set``
repeats the old run's ``--set`` (only ``model.width`` changes the import: the twins' widths).
A key that is already in ``--into`` with other contents is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.families import import_students  # noqa: E402
from bench.method_tables import Results  # noqa: E402
from bench.methods import REGIMES, run_config  # noqa: E402
from onedge.errors import ConfigError  # noqa: E402


def merge(
    old_path: Path,
    into: Path,
    regime: str,
    families: dict[str, str],
    runs: Path | None,
    overrides: list[str] | None = None,
) -> list[str]:
    """Merge the old file's runs into ``into``; returns the keys added. ``overrides``: the
    ``--set`` the old benchmark ran with (the family's ``model.width`` names the twins)."""
    old = json.loads(old_path.read_text())
    cfg = run_config(REGIMES[regime], "student-ensemble", 0, list(overrides or []), None)
    width = cfg.model.width
    records = import_students(old, {"family": "student-ensemble", **families}, width, runs)
    results = Results(into)
    results.data.setdefault("regime", regime)
    results.data.setdefault("note", REGIMES[regime].note)
    added = []
    for key, record in records.items():
        record["imported_from"] = str(old_path)
        have = results.data["runs"].get(key)
        if have is not None:
            if {k: v for k, v in have.items() if k != "imported_from"} != {
                k: v for k, v in record.items() if k != "imported_from"
            }:
                raise ConfigError(f"{into} already holds {key} with other results; not replaced")
            continue
        results.data["runs"][key] = record
        added.append(key)
    if added:
        results.data.setdefault("imported", []).append(
            {"from": str(old_path), "command": old.get("command"), "machine": old.get("machine")}
        )
    results.save()
    return added


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("students_json", type=Path)
    parser.add_argument("--regime", choices=sorted(REGIMES), required=True)
    parser.add_argument("--into", type=Path, required=True, help="a methods_<name>.json")
    parser.add_argument("--family", nargs="*", default=[], help="NAME=ENTRY ...")
    parser.add_argument("--runs", type=Path, help="the old run folder <out>/<regime>")
    parser.add_argument(
        "--set", dest="overrides", nargs="*", default=[], help="the old run's --set key=value"
    )
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.family):
        raise SystemExit(f"--family takes NAME=ENTRY pairs, got {args.family}")
    families = dict(item.split("=", 1) for item in args.family)
    added = merge(args.students_json, args.into, args.regime, families, args.runs, args.overrides)
    print(f"{len(added)} runs added to {args.into}: {', '.join(added) or 'none'}")


if __name__ == "__main__":
    main()
