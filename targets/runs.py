"""How a target calls the runner and reads what it prints, on this machine or on a board."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from export.manifest import MANIFEST_NAME, ArtifactError, Manifest, read_manifest
from targets.base import BACKEND_FOR_FORMAT, ArtifactResult, TargetInfo, ValidationSettings
from targets.errors import (
    MissingPythonError,
    MissingRuntimeError,
    RunnerFailedError,
)
from targets.runner import INSTALL

RUNNER_PATH = Path(__file__).with_name("runner.py")
COMMAND_NOT_FOUND = 127  # what a POSIX shell returns for a missing program


def runner_argv(
    python: str,
    runner: str,
    artifact: str,
    data: str,
    manifest: Manifest,
    settings: ValidationSettings,
    extra: list[str] | None = None,
) -> list[str]:
    """The argv that measures one artifact (never a shell string: targets quote each part)."""
    return [
        python, runner,
        "--artifact", artifact,
        "--data", data,
        "--backend", BACKEND_FOR_FORMAT[manifest.format],
        "--expect-sha256", manifest.sha256,
        *settings.runner_args(),
        *(extra or []),
    ]  # fmt: skip


def artifact_files(folder: Path) -> list[str]:
    """Every file an artifact consists of (relative paths), manifest included."""
    return [MANIFEST_NAME, *sorted(read_manifest(folder).files)]


def read_runner_output(
    stdout: str, stderr: str, status: int | None, where: str, python: str
) -> dict:
    """Parse the runner's one JSON line; raise the typed error its failure calls for."""
    if status == COMMAND_NOT_FOUND:
        raise MissingPythonError(
            f"{where} has no Python at {python!r}: install python3 (sudo apt-get install "
            "python3 python3-numpy) or set the target's python path"
        )
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        detail = (stderr.strip().splitlines() or ["no output"])[-1]
        raise RunnerFailedError(
            f"the runner on {where} exited with status {status} without a report: {detail}"
        ) from None
    if report.get("ok"):
        return report
    error = report.get("error", {})
    kind, message = error.get("kind"), error.get("message", "unknown error")
    if kind == "missing-library":
        raise MissingRuntimeError(
            f"{where} lacks {error.get('library')}: {error.get('install')} ({message})"
        )
    if kind == "artifact-mismatch":
        raise ArtifactError(f"artifact refused on {where} before measuring: {message}")
    raise RunnerFailedError(f"the runner failed on {where} ({kind}): {message}")


def check_runtimes(machine: dict, formats: set[str], where: str) -> None:
    """Fail early, naming what to install, when the machine lacks numpy or a needed runtime."""
    runtimes = machine.get("runtimes", {})
    needed = ["numpy", *sorted({BACKEND_FOR_FORMAT[f] for f in formats})]
    for library in needed:
        if not runtimes.get(library):
            raise MissingRuntimeError(
                f"{where} lacks the Python library {library}, needed to run "
                f"{', '.join(sorted(formats))} artifacts: {INSTALL[library]}"
            )


def info_from_machine(machine: dict, name: str, kind: str, **fields: Any) -> TargetInfo:
    """TargetInfo from the runner's ``--describe`` output; ``fields`` override or add."""
    keys = ("hostname", "cpu_model", "cores", "arch", "os", "memory_mb", "python", "board", "l4t")
    data: dict[str, Any] = {key: machine.get(key) for key in keys}
    data["runtimes"] = machine.get("runtimes", {})
    data.update(fields)
    return TargetInfo(name=name, kind=kind, **data)


def result_from_runner(report: dict, target: str, artifact: str) -> ArtifactResult:
    """An ArtifactResult (no verdict yet) from one runner report."""
    drop = None
    if report.get("reference_top1") is not None:
        drop = report["reference_top1"] - report["top1"]
    extra: dict[str, Any] = {
        "backend_info": report.get("backend_info", {}),
        "warmup_calls": report.get("warmup_calls"),
        "warmup_seconds": report.get("warmup_seconds"),
        "latency_seconds": report.get("latency_seconds"),
        "throughput_calls": report.get("throughput_calls"),
    }
    if report.get("monitor"):
        extra["monitor"] = report["monitor"]
    return ArtifactResult(
        artifact=artifact,
        format=report["format"],
        precision=report["precision"],
        target=target,
        sha256=report["sha256"],
        backend=report["backend"],
        runtime_version=report.get("runtime_version"),
        top1=report["top1"],
        reference_top1=report.get("reference_top1"),
        top1_drop=drop,
        agreement=report.get("agreement"),
        max_abs_diff=report.get("max_abs_diff"),
        latency_ms=report["latency_ms"],
        latency_calls=report.get("latency_calls"),
        throughput=report.get("throughput"),
        throughput_batch=report.get("throughput_batch"),
        threads=report.get("threads"),
        peak_rss_mb=report.get("peak_rss_mb"),
        size_mb=report.get("size_mb"),
        input_shape=report.get("input_shape"),
        eval_size=report.get("eval_size"),
        extra=extra,
    )
