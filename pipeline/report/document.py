"""The run report: ``DIR/report.md`` and a self-contained ``DIR/report.html``.

Both are rendered from one list of blocks built from the run folder's files (metrics.json,
export.json, every target's report.json, torch-fp32.json, registry.json), so the numbers are
those files' numbers. The markdown is also the Prefect artifact of the run.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from onedge.strict import StrictModel
from pipeline.config import RunConfig
from pipeline.durations import StageTimes
from pipeline.model_registry.per_target import pareto_front
from pipeline.model_registry.register import RegistryOutcome
from pipeline.report.classes import ClassSection, class_blocks, class_sections
from pipeline.report.targets import per_target_registry_lines, student_rows, target_blocks
from pipeline.run_folder import RunFolder, TorchBaseline, load_baseline, load_reports, read_json
from targets.base import ArtifactResult, ValidationReport
from targets.table import isa_columns, machine_line

PLOT_FILE = "accuracy-latency.png"
COLUMNS = [
    "artifact", "format", "precision", "top-1 %", "drop pts", "agree %",
    "p50 ms", "p99 ms", "img/s", "speed-up", "verdict", "pareto",
]  # fmt: skip


class ArtifactRow(StrictModel):
    """One artifact on one target, as the tables show it (accuracies are fractions)."""

    target: str
    artifact: str
    format: str
    precision: str
    top1: float | None = None
    top1_drop: float | None = None
    agreement: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    throughput: float | None = None
    speedup: float | None = None  # PyTorch FP32 p50 / this p50, on the CPU that timed both
    verdict: str | None = None
    reasons: list[str] = []
    pareto: bool = False
    registered: bool = False

    def cells(self) -> list[str]:
        def num(value: float | None, digits: int = 2, scale: float = 1.0) -> str:
            return "-" if value is None else f"{scale * value:.{digits}f}"

        name = f"{self.artifact} (registered)" if self.registered else self.artifact
        return [
            name, self.format, self.precision,
            num(self.top1, 2, 100), num(self.top1_drop, 2, 100), num(self.agreement, 2, 100),
            num(self.p50_ms, 3), num(self.p99_ms, 3), num(self.throughput, 0),
            "-" if self.speedup is None else f"{self.speedup:.2f}x",
            self.verdict or "-", "yes" if self.pareto else "",
        ]  # fmt: skip


def artifact_rows(
    reports: dict[str, ValidationReport],
    baseline: TorchBaseline | None,
    registered: str | None = None,
) -> list[ArtifactRow]:
    """Rows for every artifact on every target, with speed-up and the Pareto front marked.

    On the CPU that timed the PyTorch FP32 student (``local-cpu``), its row (which the target
    skips) shows that timing, as the speed-up reference.
    """
    rows: list[ArtifactRow] = []
    for spec, report in reports.items():
        local = baseline if report.target_info.kind == "local-cpu" else None
        batch = [_row(spec, r, local, registered) for r in report.results]
        measured = [row for row in batch if row.p50_ms is not None and row.top1 is not None]
        flags = pareto_front([(row.p50_ms, row.top1) for row in measured])  # type: ignore[misc]
        for row, flag in zip(measured, flags, strict=True):
            row.pareto = flag
        rows += batch
    return rows


def _row(
    spec: str, r: ArtifactResult, baseline: TorchBaseline | None, registered: str | None
) -> ArtifactRow:
    row = ArtifactRow(
        target=spec, artifact=r.artifact, format=r.format, precision=r.precision,
        top1=r.top1, top1_drop=r.top1_drop, agreement=r.agreement,
        p50_ms=r.latency_ms.p50 if r.latency_ms else None,
        p99_ms=r.latency_ms.p99 if r.latency_ms else None,
        throughput=r.throughput, verdict=r.verdict, reasons=list(r.reasons),
        registered=r.artifact == registered,
    )  # fmt: skip
    if baseline is None:
        return row
    if r.artifact == baseline.artifact and r.sha256 == baseline.sha256:
        row.p50_ms, row.p99_ms = baseline.latency_ms.p50, baseline.latency_ms.p99
        row.top1, row.top1_drop, row.agreement = baseline.top1, 0.0, 1.0
        row.verdict, row.reasons = "reference", []
    if row.p50_ms:
        row.speedup = baseline.latency_ms.p50 / row.p50_ms
    return row


def plot_accuracy_latency(rows: list[ArtifactRow], path: Path) -> Path:
    """Top-1 against p50 latency, one panel per target, the Pareto front drawn as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(row.target for row in rows))
    fig, axes = plt.subplots(1, max(1, len(targets)), figsize=(6.5 * max(1, len(targets)), 4.5))
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, target in zip(axes, targets, strict=False):
        points = [r for r in rows if r.target == target and r.p50_ms and r.top1 is not None]
        names = sorted({r.artifact for r in rows})
        tab10 = plt.get_cmap("tab10")
        palette = [tab10(i) for i in range(10) if i != 3]  # red marks the front
        for r in points:  # one colour per artifact (labels would collide); a red ring on the front
            ax.scatter(
                r.p50_ms, 100 * r.top1, s=70, zorder=3, label=r.artifact,
                color=palette[names.index(r.artifact) % len(palette)],
                edgecolors="tab:red" if r.pareto else "none", linewidths=2,
            )  # fmt: skip
        if points:
            low, high = min(100 * r.top1 for r in points), max(100 * r.top1 for r in points)
            ax.set_ylim(low - 2, min(100.5, high + 2) if high < 100 else 101)
        front = sorted((r.p50_ms, 100 * r.top1) for r in points if r.pareto)
        if front:
            xs, ys = zip(*front, strict=True)
            ax.step(xs, ys, where="post", color="tab:red", lw=1.2, label="Pareto front")
        ax.set(title=target, xlabel="p50 latency at batch 1 (ms, log)", ylabel="test top-1 (%)")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class ReportFiles:
    markdown: str  # report.md: images as files beside it
    ui_markdown: str  # the same with images embedded as data URIs (the Prefect artifact)
    md: Path
    html: Path
    rows: list[ArtifactRow]


Block = tuple  # ("h1"|"h2"|"p"|"list"|"table"|"img", ...)


def build_blocks(
    config: RunConfig, run: RunFolder, timings: StageTimes | None = None
) -> tuple[list[Block], list[ArtifactRow], list[ClassSection]]:
    metrics = read_json(run.train / "metrics.json", "training")
    exported = read_json(run.export / "export.json", "export")
    reports = load_reports(run, config.validate)
    baseline = load_baseline(run)
    outcome = (
        RegistryOutcome.model_validate_json(run.registry.read_text())
        if config.registry.enabled and run.registry.is_file()
        else None
    )
    from pipeline.model_registry.target_versions import PER_TARGET_FILE, per_target_mode

    rows = artifact_rows(reports, baseline, outcome.artifact if outcome else None)
    plot_accuracy_latency(rows, run.root / PLOT_FILE)

    student = exported.get("student", {})
    s_cost, n_cost = student.get("student", {}), student.get("multi_branch_network", {})
    blocks: list[Block] = [
        ("h1", f"onedge run: {config.name}"),
        ("p", f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, run folder `{run.root}`"),
        ("h2", "Summary"),
        ("list", summary_lines(config, metrics, rows, outcome)),
        ("h2", "Training"),
        ("img", "training curves", run.train / "curves.png"),
        ("table", ["model", "test top-1 %"], training_rows(metrics)),
        ("p", f"Student (branch {student.get('branch')}): {s_cost.get('parameters', 0):,} "
              f"parameters, {s_cost.get('macs', 0):,} MACs; the whole multi-branch network: "
              f"{n_cost.get('parameters', 0):,} parameters, {n_cost.get('macs', 0):,} MACs."),
        ("h2", "Accuracy against latency"),
        ("img", "accuracy against latency", run.root / PLOT_FILE),
        ("p", "Points ringed in red lie on the Pareto front (no other artifact is at least as fast and as "
              "accurate, and better in one); torch-fp32 is the PyTorch FP32 student, timed on this CPU only."),
    ]  # fmt: skip
    for spec, report in reports.items():
        s = report.settings
        blocks += [
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
    if exported.get("failed"):  # each is that artifact's failure; the rest were validated
        blocks += [("h2", "Artifacts that failed their export"),
                   ("list", [f"{f['name']}: failed ({f['reason']})" for f in exported["failed"]])]  # fmt: skip
    from pipeline.int8_debug import repair_lines  # INT8 below the gate (docs/INT8_REPAIR.md)

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
             student_rows(exported, metrics)),
        ]  # fmt: skip
    if config.validate.budgets or per_target_mode(config):
        blocks += target_blocks(config, run, reports)
    if per_target_mode(config):
        lines = per_target_registry_lines(run.root / PER_TARGET_FILE)
    else:
        lines = registry_lines(outcome)
    blocks += [("h2", "Registry"), ("list", lines)]
    per_class = class_sections(run, reports)
    blocks += class_blocks(per_class, run.root)
    if timings is not None:
        blocks += [
            ("h2", "Where the time went"),
            ("list", timings.lines()),
            ("p", "Seconds up to this report; report.json adds the report's own time."),
        ]
    return blocks, rows, per_class


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


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def to_markdown(blocks: list[Block], root: Path, embed_images: bool = False) -> str:
    """Markdown of ``blocks``; images as paths relative to ``root``, or embedded as data URIs
    (what a viewer that cannot fetch files beside the report, such as Prefect's UI, shows)."""
    out: list[str] = []
    for kind, *rest in blocks:
        if kind == "h1":
            out.append(f"# {rest[0]}\n")
        elif kind == "h2":
            out.append(f"## {rest[0]}\n")
        elif kind == "p":
            out.append(f"{rest[0]}\n")
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in rest[0]) + "\n")
        elif kind == "img":
            path = Path(rest[1])
            rel = path.relative_to(root) if path.is_relative_to(root) else path
            if embed_images and path.is_file():
                out.append(f"![{rest[0]}]({png_data_uri(path)})\n")
            else:
                out.append(f"![{rest[0]}]({rel})\n")
        elif kind == "table":
            header, rows = rest
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
            out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def to_html(blocks: list[Block], title: str) -> str:
    esc = html.escape
    body: list[str] = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{esc(str(rest[0])).replace('`', '')}</{kind}>")
        elif kind == "list":
            items = "".join(f"<li>{esc(item).replace('`', '')}</li>" for item in rest[0])
            body.append(f"<ul>{items.replace('**', '')}</ul>")
        elif kind == "img":
            path = Path(rest[1])
            if path.is_file():
                body.append(f'<img alt="{esc(rest[0])}" src="{png_data_uri(path)}">')
        elif kind == "table":
            header, rows = rest
            head = "".join(f"<th>{esc(h)}</th>" for h in header)
            cells = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_report(
    config: RunConfig, run: RunFolder, timings: StageTimes | None = None
) -> ReportFiles:
    """Write ``report.md``, ``report.html``, ``report.json`` and the plot into the run folder.

    ``report.json`` holds the rows of the tables, the per-class figures of the registered
    artifact on each target (``per_class``) and, when given, the stage timings.
    """
    from pipeline.data_check import read_data_check

    blocks, rows, per_class = build_blocks(config, run, timings)
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


def write_timings(run: RunFolder, timings: StageTimes) -> None:
    """Put ``timings`` (each stage, Prefect, MLflow, shares) into ``report.json``."""
    document = json.loads(run.report_json.read_text()) if run.report_json.is_file() else {}
    document["timings"] = {**timings.model_dump(mode="json"), "summary": timings.summary()}
    run.report_json.write_text(json.dumps(document, indent=2))
