"""How a target calls the runner and reads what it prints, on this machine or on a board."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from export.manifest import ArtifactError, Manifest, why
from export.timing import Latency
from targets.base import (
    BACKEND_FOR_FORMAT,
    ArtifactResult,
    TargetInfo,
    ValidationSettings,
    unpack_bits,
    unpack_classes,
)
from targets.errors import (
    MissingPythonError,
    MissingRuntimeError,
    RunnerFailedError,
    TargetTimeoutError,
)
from targets.runner import INSTALL

RUNNER_PATH = Path(__file__).with_name("runner.py")
COMMAND_NOT_FOUND = 127  # what a POSIX shell returns for a missing program


def runner_argv(
    python: str,
    runner: str,
    artifacts: Sequence[tuple[str, Manifest]],
    data: str,
    settings: ValidationSettings,
    extra: list[str] | None = None,
) -> list[str]:
    """The argv that measures ``artifacts`` (folder, manifest) of one backend in one process.

    Never a shell string: targets quote each part. Each artifact is bounded by
    ``settings.command_timeout_s`` in the runner itself (``--artifact-timeout``).
    """
    backends = {BACKEND_FOR_FORMAT[manifest.format] for _, manifest in artifacts}
    if len(backends) != 1:
        raise ValueError(f"one runner process measures one backend's artifacts, not {backends}")
    pairs = [
        part
        for folder, manifest in artifacts
        for part in ("--artifact", folder, "--expect-sha256", manifest.sha256)
    ]
    return [
        python, runner, *pairs,
        "--data", data,
        "--backend", backends.pop(),
        "--artifact-timeout", f"{settings.command_timeout_s:g}",
        *settings.runner_args(),
        *(extra or []),
    ]  # fmt: skip


def by_backend(manifests: Sequence[Manifest]) -> list[list[int]]:
    """Indices of ``manifests`` grouped by the runner backend of their format, in order of
    first appearance: each group is measured by one runner process."""
    groups: dict[str, list[int]] = {}
    for index, manifest in enumerate(manifests):
        groups.setdefault(BACKEND_FOR_FORMAT[manifest.format], []).append(index)
    return list(groups.values())


def group_timeout(settings: ValidationSettings, count: int) -> float:
    """Bound of one runner process measuring ``count`` artifacts: each one's bound, plus start-up
    (the runner stops at its own per-artifact bound; this one is for a runner stuck past it)."""
    return settings.command_timeout_s * count + 30.0


# runner error kinds that are the artifact's, not the board's: reported, and the run goes on
ARTIFACT_FAILURES = ("runtime-too-old",)


def artifact_failure(line: str) -> dict | None:
    """The runner's report when it is an artifact's own failure (ARTIFACT_FAILURES), else None."""
    try:
        report = json.loads(line)
    except ValueError:
        return None
    error = report.get("error") if isinstance(report, dict) else None
    own = isinstance(error, dict) and error.get("kind") in ARTIFACT_FAILURES
    return report if own and report.get("ok") is False else None


def read_runner_lines(
    stdout: str, stderr: str, status: int | None, where: str, python: str, count: int
) -> Iterator[dict]:
    """The ``count`` reports of a runner process that measured that many artifacts, in order.

    Yields each artifact's report as :func:`read_runner_output` checks it: the first artifact
    that failed (or printed no line: the process died or was stopped) raises its typed error,
    after the reports before it were yielded, except an artifact's own failure (a runtime too
    old for its graph: :data:`ARTIFACT_FAILURES`), which is yielded as the runner wrote it and
    becomes that artifact's failed result (:func:`result_from_runner`). Which artifact a report
    is of is checked by its sha256.
    """
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    for index in range(count):
        line = lines[index] if index < len(lines) else ""
        own = artifact_failure(line) if line else None
        yield own if own is not None else read_runner_output(line, stderr, status, where, python)


def read_runner_output(
    stdout: str, stderr: str, status: int | None, where: str, python: str
) -> dict:
    """Parse the runner's one JSON line; raise the typed error its failure calls for.

    Whatever a board prints is untrusted: a line that is not a JSON object, an error that is not
    shaped as the runner writes it, all end in a one-line typed error, never a traceback.
    """
    if status == COMMAND_NOT_FOUND:
        raise MissingPythonError(
            f"{where} has no Python at {python!r}: install python3 (sudo apt-get install "
            "python3 python3-numpy) or set the target's python path"
        )
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        detail = (stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise RunnerFailedError(
            f"the runner on {where} exited with status {status} without a report: {detail}"
        ) from None
    if not isinstance(report, dict):
        raise RunnerFailedError(f"the runner on {where} printed JSON that is not a report")
    if report.get("ok") is True:
        return report
    error = report.get("error") if isinstance(report.get("error"), dict) else {}
    kind, message = str(error.get("kind")), str(error.get("message", "unknown error"))[:300]
    if kind == "missing-library":
        raise MissingRuntimeError(
            f"{where} lacks {error.get('library')}: {error.get('install')} ({message})"
        )
    if kind == "artifact-mismatch":
        raise ArtifactError(f"artifact refused on {where} before measuring: {message}")
    if kind == "timeout":
        raise TargetTimeoutError(
            f"the runner on {where} stopped: {message}: raise settings.command_timeout_s or "
            "shorten the timing settings"
        )
    raise RunnerFailedError(f"the runner failed on {where} ({kind}): {message}")


def machine_of(report: dict, where: str) -> dict:
    """The ``machine`` part of a ``--describe`` report; a typed error when it is not one."""
    machine = report.get("machine")
    if not isinstance(machine, dict) or not isinstance(machine.get("runtimes", {}), dict):
        raise RunnerFailedError(f"the runner on {where} did not describe the machine")
    return machine


def check_runtimes(machine: dict, formats: set[str], where: str) -> dict[str, str]:
    """Fail early, naming what to install, when the machine lacks numpy; for every format whose
    runtime it lacks, the reason its artifacts are not runnable there (format -> reason)."""
    runtimes = machine.get("runtimes", {})
    if not runtimes.get("numpy"):
        raise MissingRuntimeError(
            f"{where} lacks the Python library numpy, needed to run "
            f"{', '.join(sorted(formats))} artifacts: {INSTALL['numpy']}"
        )
    missing = {}
    for fmt in sorted(formats):
        library = BACKEND_FOR_FORMAT[fmt]
        if not runtimes.get(library):
            missing[fmt] = f"not runnable here: {where} has no {library} ({INSTALL[library]})"
    if formats and set(missing) == set(formats):  # nothing left to run there: say what to add
        library = BACKEND_FOR_FORMAT[sorted(formats)[0]]
        raise MissingRuntimeError(
            f"{where} lacks the Python library {library}, needed to run "
            f"{', '.join(sorted(formats))} artifacts: {INSTALL[library]}"
        )
    return missing


def unrunnable_result(target: str, artifact: str, manifest: Manifest, reason: str, verdict: str):
    """The result of an artifact the target could not run: ``skipped`` (no runtime there) or
    ``fail`` (its runtime there is too old for it), with the reason; no figures."""
    return ArtifactResult(
        artifact=artifact,
        format=manifest.format,
        precision=manifest.precision,
        target=target,
        sha256=manifest.sha256,
        backend=BACKEND_FOR_FORMAT.get(manifest.format),
        verdict=verdict,
        reasons=[reason],
    )


def info_from_machine(machine: dict, name: str, kind: str, **fields: Any) -> TargetInfo:
    """TargetInfo from the runner's ``--describe`` output; ``fields`` override or add."""
    keys = ("hostname", "cpu_model", "cores", "arch", "os", "memory_mb", "python", "board", "l4t")
    data: dict[str, Any] = {key: machine.get(key) for key in keys}
    data["runtimes"] = machine.get("runtimes", {})
    data["isa"] = machine.get("isa")
    data["cpu_features"] = machine.get("cpu_features") or []
    data["emulated"] = machine.get("emulated")
    data.update(fields)
    try:
        return TargetInfo(name=name, kind=kind, **data)
    except ValidationError as exc:
        raise RunnerFailedError(f"{name} described itself wrongly: {why(exc)}") from None


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[float, Field(gt=0.0)]


class RunnerReport(BaseModel):
    """One runner report as a board returns it: every number finite and in its range (the
    latency as :class:`export.timing.Latency` checks it: positive, p50 <= p90 <= p99)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    backend: str
    runtime_version: str | None = None
    top1: Fraction
    reference_top1: Fraction | None = None
    agreement: Fraction | None = None
    max_abs_diff: float | None = Field(None, ge=0.0)
    latency_ms: Latency
    latency_calls: int | None = Field(None, ge=1)
    throughput: Positive | None = None
    throughput_batch: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)
    streams: int | None = Field(None, ge=1)
    peak_rss_mb: float | None = Field(None, ge=0.0)
    size_mb: float | None = Field(None, ge=0.0)
    input_shape: list[Annotated[int, Field(ge=1)]] | None = None
    eval_size: int | None = Field(None, ge=1)
    backend_info: dict[str, Any] = Field(default_factory=dict)
    monitor: dict[str, Any] | None = None
    correct: str | None = Field(None, max_length=4_000_000)
    predicted: str | None = Field(None, max_length=40_000_000)
    latency_sample_ms: list[Positive] | None = Field(None, max_length=1000)

    @model_validator(mode="after")
    def _correct_matches_top1(self) -> RunnerReport:
        if self.correct is None:
            return self
        if self.eval_size is None:
            raise ValueError("per-image results without eval_size")
        flags = unpack_bits(self.correct, self.eval_size)
        if abs(float(flags.mean()) - self.top1) > 1e-9:
            raise ValueError(f"top1 {self.top1} disagrees with its per-image results")
        if self.predicted is not None:
            unpack_classes(self.predicted, self.eval_size)
        return self


# what a checked runner report hands on to its ArtifactResult unchanged
MEASURED_FIELDS = (
    "sha256", "backend", "runtime_version", "top1", "reference_top1", "agreement",
    "max_abs_diff", "latency_ms", "latency_calls", "throughput", "throughput_batch", "threads", "streams",
    "peak_rss_mb", "size_mb", "input_shape", "eval_size", "correct", "predicted",
    "latency_sample_ms",
)  # fmt: skip


def checked_report(report: dict, artifact: str, manifest: Manifest, where: str) -> RunnerReport:
    """The report parsed into :class:`RunnerReport` (finite numbers, 0 <= top1 <= 1, latencies
    > 0), for the artifact the manifest names: a board that claims another hash is refused."""
    try:
        checked = RunnerReport.model_validate(report)
    except ValidationError as exc:
        raise RunnerFailedError(
            f"{where} returned an invalid result for {artifact}: {why(exc)}"
        ) from None
    if checked.sha256 != manifest.sha256:
        raise ArtifactError(
            f"{where} measured an artifact with sha256 {checked.sha256[:12]}..., not {artifact} "
            f"({manifest.sha256[:12]}...): refused"
        )
    return checked


def result_from_runner(
    report: dict, target: str, artifact: str, manifest: Manifest, where: str | None = None
) -> ArtifactResult:
    """An ArtifactResult (no verdict yet) from one runner report, checked (:func:`checked_report`).

    Format and precision come from the verified manifest, not from the board. An artifact's own
    failure (:func:`artifact_failure`) becomes its failed result.
    """
    if report.get("ok") is False:
        error = report["error"]
        reason = str(error.get("message", error.get("kind")))[:300]
        return unrunnable_result(target, artifact, manifest, reason, "fail")
    checked = checked_report(report, artifact, manifest, where or target)
    drop = None
    if checked.reference_top1 is not None:
        drop = checked.reference_top1 - checked.top1
    extra: dict[str, Any] = {
        "backend_info": checked.backend_info,
        "warmup_calls": report.get("warmup_calls"),
        "warmup_seconds": report.get("warmup_seconds"),
        "latency_seconds": report.get("latency_seconds"),
        "throughput_calls": report.get("throughput_calls"),
    }
    if checked.monitor:
        extra["monitor"] = checked.monitor
    return ArtifactResult(
        artifact=artifact,
        format=manifest.format,
        precision=manifest.precision,
        target=target,
        top1_drop=drop,
        extra=extra,
        **{name: getattr(checked, name) for name in MEASURED_FIELDS},
    )
