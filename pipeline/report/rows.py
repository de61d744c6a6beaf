"""The report's table rows: one artifact on one target, with speed-up and the Pareto front."""

from __future__ import annotations

from onedge.strict import StrictModel
from pipeline.model_registry.per_target import pareto_front
from pipeline.run_folder import TorchBaseline
from targets.base import ArtifactResult, ValidationReport

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
        batch = [artifact_row(spec, r, local, registered) for r in report.results]
        measured = [row for row in batch if row.p50_ms is not None and row.top1 is not None]
        flags = pareto_front([(row.p50_ms, row.top1) for row in measured])  # type: ignore[misc]
        for row, flag in zip(measured, flags, strict=True):
            row.pareto = flag
        rows += batch
    return rows


def artifact_row(
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
