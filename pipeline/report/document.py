"""The run report: ``DIR/report.md`` and a self-contained ``DIR/report.html``.

Both are rendered (:mod:`pipeline.report.render`) from one list of blocks built from the run
folder's files (metrics.json, export.json, every target's report.json, torch-fp32.json,
registry.json), so the numbers are those files' numbers. The markdown is also the Prefect
artifact of the run. The table rows are :mod:`pipeline.report.rows`, the plot
:mod:`pipeline.report.plot`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.data_check import read_data_check
from pipeline.durations import StepTimes
from pipeline.int8_debug import repair_lines
from pipeline.model_registry.register import RegistryOutcome
from pipeline.model_registry.target_versions import PER_TARGET_FILE, per_target_mode
from pipeline.report.classes import (
    ClassSection,
    class_blocks,
    class_sections,
    registered_artifacts,
)
from pipeline.report.int8_care import int8_care_lines
from pipeline.report.plot import PLOT_FILE, plot_accuracy_latency
from pipeline.report.render import Block, to_html, to_markdown
from pipeline.report.rows import COLUMNS, ArtifactRow, artifact_rows
from pipeline.report.targets import per_target_registry_lines, student_rows, target_blocks
from pipeline.run_folder import RunFolder, TorchBaseline, load_baseline, load_reports, read_json
from targets.base import ValidationReport
from targets.table import isa_columns, machine_line


@dataclass
class ReportFiles:
    markdown: str  # report.md: images as files beside it
    ui_markdown: str  # the same with images embedded as data URIs (the Prefect artifact)
    md: Path
    html: Path
    rows: list[ArtifactRow]


@dataclass
class ReportInputs:
    """What the report is built from: the run folder's files, each read once."""

    metrics: dict  # train/metrics.json
    exported: dict  # export/export.json
    reports: dict[str, ValidationReport]  # every target's report.json
    baseline: TorchBaseline | None  # validate/torch-fp32.json
    outcome: RegistryOutcome | None  # registry.json


def read_inputs(
    config: RunConfig, run: RunFolder, reports: dict[str, ValidationReport] | None = None
) -> ReportInputs:
    """The report's inputs from the run folder; ``reports`` when the caller holds them already
    (the chain hands on the validate flow's), else every target's report.json."""
    outcome = (
        RegistryOutcome.model_validate_json(run.registry.read_text())
        if config.registry.enabled and run.registry.is_file()
        else None
    )
    return ReportInputs(
        metrics=read_json(run.train / "metrics.json", "training"),
        exported=read_json(run.export / "export.json", "export"),
        reports=reports if reports is not None else load_reports(run, config.validate),
        baseline=load_baseline(run),
        outcome=outcome,
    )


def build_blocks(
    config: RunConfig,
    run: RunFolder,
    timings: StepTimes | None = None,
    reports: dict[str, ValidationReport] | None = None,
) -> tuple[list[Block], list[ArtifactRow], list[ClassSection]]:
    """The report's blocks in order, its table rows and its per-class sections."""
    given = read_inputs(config, run, reports)
    registered = given.outcome.artifact if given.outcome else None
    rows = artifact_rows(given.reports, given.baseline, registered)
    plot_accuracy_latency(rows, run.root / PLOT_FILE)
    blocks = head_blocks(config, run, given, rows)
    for spec, report in given.reports.items():
        blocks += validation_blocks(spec, report, rows)
    blocks += export_blocks(given)
    if care := int8_care_lines(config.model, given.exported):  # docs/BENCHMARKS.md, timm INT8
        blocks += [("h2", "INT8 care"), ("list", care)]
    blocks += registry_blocks(config, run, given)
    chosen = registered_artifacts(config, run, given.reports, given.outcome)
    per_class = class_sections(run, given.reports, chosen)
    blocks += class_blocks(per_class, run.root)
    if timings is not None:
        blocks += [
            ("h2", "Where the time went"),
            ("list", timings.lines()),
            ("p", "Seconds up to this report; report.json adds the report's own time."),
        ]
    return blocks, rows, per_class


def head_blocks(
    config: RunConfig, run: RunFolder, given: ReportInputs, rows: list[ArtifactRow]
) -> list[Block]:
    """Title, summary, training and the accuracy-against-latency plot."""
    student = given.exported.get("student", {})
    s_cost, n_cost = student.get("student", {}), student.get("multi_branch_network", {})
    return [
        ("h1", f"onedge run: {config.name}"),
        ("p", f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, run folder `{run.root}`"),
        ("h2", "Summary"),
        ("list", summary_lines(config, given.metrics, rows, given.outcome)),
        ("h2", "Training"),
        ("img", "training curves", run.train / "curves.png"),
        ("table", ["model", "test top-1 %"], training_rows(given.metrics)),
        ("p", f"Student (branch {student.get('branch')}): {s_cost.get('parameters', 0):,} "
              f"parameters, {s_cost.get('macs', 0):,} MACs; the whole multi-branch network: "
              f"{n_cost.get('parameters', 0):,} parameters, {n_cost.get('macs', 0):,} MACs."),
        ("h2", "Accuracy against latency"),
        ("img", "accuracy against latency", run.root / PLOT_FILE),
        ("p", "Points ringed in red lie on the Pareto front (no other artifact is at least as fast and as "
              "accurate, and better in one); torch-fp32 is the PyTorch FP32 student, timed on this CPU only."),
    ]  # fmt: skip


def validation_blocks(spec: str, report: ValidationReport, rows: list[ArtifactRow]) -> list[Block]:
    """One target's section: the machine and protocol, its table, why artifacts failed."""
    s = report.settings
    blocks: list[Block] = [
        ("h2", f"Validation on {spec}"),
        ("p", f"{machine_line(report.target_info)}. Batch-1 latency, throughput at batch "
              f"{s.batch_size}, threads {s.threads or 'default'}, timed >= "
              f"{s.timed_seconds:g} s and >= {s.timed_calls} calls; eval set "
              f"{report.eval_set_sha256 and report.eval_set_sha256[:12]}... "
              f"({next((r.eval_size for r in report.results if r.eval_size), '?')} images)."),
        ("table", isa_columns(COLUMNS, report.target_info),
         [row.cells() for row in rows if row.target == spec]),
    ]  # fmt: skip
    failed = [
        f"{r.artifact}: {'; '.join(r.reasons)}" for r in rows if r.target == spec and r.reasons
    ]
    if failed:
        blocks.append(("list", failed))
    return blocks


def export_blocks(given: ReportInputs) -> list[Block]:
    """Failed exports, the INT8 repair (docs/INT8_REPAIR.md), the speed-up's reference, students."""
    exported, baseline = given.exported, given.baseline
    blocks: list[Block] = []
    if exported.get("failed"):  # each is that artifact's failure; the rest were validated
        blocks += [("h2", "Artifacts that failed their export"),
                   ("list", [f"{f['name']}: failed ({f['reason']})" for f in exported["failed"]])]  # fmt: skip
    if repaired := repair_lines(exported):
        blocks += [("h2", "INT8 repair"), ("list", repaired)]
    if baseline is not None:
        blocks.append(
            ("p", f"Speed-up is the PyTorch FP32 student's p50 ({baseline.latency_ms.p50:.3f} ms, "
                  f"{baseline.threads} threads, {baseline.calls} calls) over the artifact's p50, "
                  "both timed on this CPU in one run, one after the other.")
        )  # fmt: skip
    if exported.get("students") and len(exported["students"]) > 1:
        blocks += [
            ("h2", "Students"),
            ("table", ["student", "width", "parameters", "MACs", "test top-1 %"],
             student_rows(exported, given.metrics)),
        ]  # fmt: skip
    return blocks


def registry_blocks(config: RunConfig, run: RunFolder, given: ReportInputs) -> list[Block]:
    """The per-target choice (with budgets or per-target aliases) and what the registry did."""
    blocks: list[Block] = []
    if config.validate.budgets or per_target_mode(config):
        blocks += target_blocks(config, run, given.reports)
    if per_target_mode(config):
        lines = per_target_registry_lines(run.root / PER_TARGET_FILE)
    else:
        lines = registry_lines(given.outcome)
    return [*blocks, ("h2", "Registry"), ("list", lines)]


def summary_lines(config: RunConfig, metrics: dict, rows: list, outcome) -> list[str]:
    gated = [r for r in rows if r.verdict in ("pass", "fail")]
    passed = sum(r.verdict == "pass" for r in gated)
    lines = [
        f"{config.method.name} on {config.data.name}: {config.model.name} x"
        f"{config.model.branches} branches, {metrics.get('epochs')} epochs; deployed branch "
        f"{metrics.get('deployed_branch')} at {100 * metrics.get('deployed_top1', 0):.2f}% test "
        f"top-1 (ensemble {100 * metrics.get('ensemble_top1', 0):.2f}%)",
        f"{passed} of {len(gated)} measured artifacts passed their gates "
        f"on {', '.join(dict.fromkeys(r.target for r in rows))}",
    ]
    if outcome is not None:
        aliases = [a for a, v in outcome.aliases.items() if v == outcome.version]
        lines.append(
            f"registered {outcome.artifact} as {outcome.model_name} version {outcome.version}"
            f" ({', '.join(aliases) or 'no alias'})"
        )
    return lines


def training_rows(metrics: dict) -> list[list[str]]:
    out = []
    for i, acc in enumerate(metrics.get("branch_top1", [])):
        tag = " (deployed)" if i == metrics.get("deployed_branch") else ""
        out.append([f"branch {i}{tag}", f"{100 * acc:.2f}"])
    if "ensemble_top1" in metrics:
        out.append(["ensemble", f"{100 * metrics['ensemble_top1']:.2f}"])
    return out


def registry_lines(outcome: RegistryOutcome | None) -> list[str]:
    if outcome is None:
        return ["not registered (registry.enabled is false, or the registry step did not run)"]
    e = outcome.evidence
    return [
        f"model `{outcome.model_name}` version **{outcome.version}** in `{outcome.tracking_uri}`"
        f"{' (reused)' if outcome.reused else ''}",
        f"artifact {outcome.artifact} ({e.format} {e.precision}), sha256 `{outcome.sha256}` "
        "(registered = manifest = validated)",
        "aliases now: " + (", ".join(f"{a} -> {v}" for a, v in outcome.aliases.items()) or "none"),
        "decision: " + "; ".join(outcome.decision.reasons),
        *comparison_lines(outcome),
        f"MLflow run `{outcome.run_id}`",
    ]


def comparison_lines(outcome: RegistryOutcome) -> list[str]:
    """The paired evidence behind the champion decision, when there was a champion: what the
    exact McNemar test decided for this artifact against that champion on these eval images
    (a comparison of two trained networks, not of training methods)."""
    c = outcome.decision.comparison
    if c is None:
        return []
    e = outcome.evidence
    images = f"the same {e.eval_size:,} eval images" if e.eval_size else "the same eval images"
    eval_set = f" (eval set sha256 `{e.eval_set_sha256[:12]}`)" if e.eval_set_sha256 else ""

    def ci(iv: dict[str, float], signed: str = "") -> str:
        return (
            f"{100 * iv['estimate']:{signed}.2f} % [95% CI {100 * iv['low']:{signed}.2f}, "
            f"{100 * iv['high']:{signed}.2f}]"
        )

    return [
        f"champion decision, this artifact ({outcome.artifact}, version {outcome.version}) "
        f"against the champion on {images}{eval_set}: top-1 this version {ci(c.new_top1)}, "
        f"champion {ci(c.champion_top1)}; difference {ci(c.difference, '+')} points",
        f"exact McNemar p = {c.p_value:.3g}: {c.new_only} images only this version gets right, "
        f"{c.champion_only} only the champion. This compares these two trained networks on "
        "these images; it is not a comparison of training methods (that needs several "
        "training seeds of each, as python -m bench.methods does)",
    ]


def write_report(
    config: RunConfig,
    run: RunFolder,
    timings: StepTimes | None = None,
    reports: dict[str, ValidationReport] | None = None,
) -> ReportFiles:
    """Write ``report.md``, ``report.html``, ``report.json`` and the plot into the run folder.

    ``report.json`` holds the rows of the tables, the per-class figures of the registered
    artifact on each target (``per_class``) and, when given, the step timings. ``reports``:
    every target's report when the caller holds them (else read from the run folder).
    """
    blocks, rows, per_class = build_blocks(config, run, timings, reports)
    markdown = to_markdown(blocks, run.root)
    run.report_md.write_text(markdown)
    run.report_html.write_text(to_html(blocks, f"onedge run: {config.name}"))
    document = {
        "rows": [row.model_dump(mode="json") for row in rows],
        "per_class": [section.model_dump(mode="json") for section in per_class],
        "data_check": read_data_check(run.root),  # an image folder's check (DIR/data-check.json)
        "timings": None,
    }
    run.report_json.write_text(json.dumps(document, indent=2))
    if timings is not None:
        write_timings(run, timings)
    ui_markdown = to_markdown(blocks, run.root, embed_images=True)
    return ReportFiles(markdown, ui_markdown, run.report_md, run.report_html, rows)


def write_timings(run: RunFolder, timings: StepTimes) -> None:
    """Put ``timings`` (each step, Prefect, MLflow, shares) into ``report.json``."""
    document = json.loads(run.report_json.read_text()) if run.report_json.is_file() else {}
    document["timings"] = {**timings.model_dump(mode="json"), "summary": timings.summary()}
    run.report_json.write_text(json.dumps(document, indent=2))
