"""The target protocol, the settings of a validation run and the report it produces.

A target runs artifacts where they will live (this CPU, a board over SSH, a Jetson) through the
one runner script (``targets/runner.py``), so every target measures the same way. Targets are
looked up by name in :data:`TARGETS`; :func:`parse_target` turns ``local-cpu`` or
``ssh://user@host:port[/jetson]`` into one.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

import numpy as np
from pydantic import Field

from export.timing import Latency
from onedge.errors import ConfigError
from onedge.registry import Registry
from onedge.strict import StrictModel

REPORT_SCHEMA_VERSION = 1

# Which runner backend runs which artifact format: looked up by name.
BACKEND_FOR_FORMAT: dict[str, str] = {
    "onnx": "onnxruntime",
    "openvino": "openvino",
    "tensorrt": "tensorrt",
}


FINGERPRINT_RUNTIMES = ("onnxruntime", "openvino", "tensorrt", "cuda", "jetpack", "l4t")


class TargetInfo(StrictModel):
    """The machine that measured: CPU model and cores, or the board's L4T and power mode.

    Its fingerprint is ``isa`` (the best INT8 instruction set: ``x86_64 avx2``), the tracked
    ``cpu_features`` from /proc/cpuinfo and ``runtimes`` (every runtime's version, CUDA, L4T
    and JetPack on a Jetson), as ``targets/runner.py`` reads them on the board.
    """

    name: str
    kind: str
    hostname: str | None = None
    cpu_model: str | None = None
    cores: int | None = None
    arch: str | None = None
    cpu_features: list[str] = Field(default_factory=list)
    isa: str | None = None
    emulated: str | None = Field(None, description="what emulates the CPU (ONEDGE_EMULATED)")
    os: str | None = None
    memory_mb: int | None = None
    python: str | None = None
    runtimes: dict[str, str | None] = Field(default_factory=dict)
    board: str | None = None
    l4t: str | None = None
    gpu: str | None = None
    power_mode: str | None = None
    clocks_locked: bool | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def runtime_line(self) -> str:
        """``onnxruntime 1.20.1, openvino none, ...``: the versions that decide what runs."""
        return ", ".join(
            f"{name} {self.runtimes.get(name) or 'none'}"
            for name in FINGERPRINT_RUNTIMES
            if self.runtimes.get(name) or name in ("onnxruntime", "openvino")
        )

    def fingerprint(self) -> str:
        """One line: instruction set, its features, and the runtimes."""
        features = "+".join(self.cpu_features) or "no tracked features"
        emulated = f", emulated by {self.emulated}" if self.emulated else ""
        return f"{self.isa or 'ISA unknown'} ({features}{emulated}); {self.runtime_line()}"


class ValidationSettings(StrictModel):
    """How to measure (the benchmark protocol in docs/DESIGN.md) and how patient to be with a remote board.

    Warm-up runs until both ``warmup_seconds`` and ``warmup_calls`` are reached; the timed
    phase until both ``timed_seconds`` and ``timed_calls`` are. Throughput is timed at
    ``batch_size`` for ``timed_seconds`` and at least ``throughput_calls`` batches.
    """

    warmup_seconds: float = Field(1.0, ge=0.0)
    warmup_calls: int = Field(50, ge=0)
    timed_seconds: float = Field(3.0, ge=0.0)
    timed_calls: int = Field(200, ge=1)
    throughput_calls: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    threads: int | None = Field(None, gt=0)
    streams: int = Field(1, ge=1, description="OpenVINO CPU streams (one: latency)")
    eval_limit: int | None = Field(None, gt=0, description="first N eval images (fixed subset)")
    connect_timeout_s: float = Field(15.0, gt=0.0)
    command_timeout_s: float = Field(
        900.0,
        gt=0.0,
        description="bound of one remote command and of one artifact's measurement (a runner "
        "process measuring n artifacts is bounded by n times this, plus 30 s)",
    )
    transfer_timeout_s: float = Field(
        300.0, gt=0.0, description="bound of one SFTP call (an upload, a folder removal)"
    )
    retries: int = Field(2, ge=0, description="extra attempts after a connection fault")
    backoff_s: float = Field(1.0, ge=0.0, description="first retry delay; doubles each time")

    def runner_args(self) -> list[str]:
        """The runner's command-line flags for these settings."""
        args = [
            "--warmup-seconds", str(self.warmup_seconds),
            "--warmup-calls", str(self.warmup_calls),
            "--timed-seconds", str(self.timed_seconds),
            "--timed-calls", str(self.timed_calls),
            "--throughput-calls", str(self.throughput_calls),
            "--batch-size", str(self.batch_size),
            "--streams", str(self.streams),
        ]  # fmt: skip
        if self.threads:
            args += ["--threads", str(self.threads)]
        if self.eval_limit:
            args += ["--eval-limit", str(self.eval_limit)]
        return args


Verdict = Literal["pass", "fail", "skipped"]


def unpack_bits(text: str, size: int) -> np.ndarray:
    """Inverse of the runner's ``pack_bits``: ``size`` booleans; a malformed text is an error."""
    try:
        packed = zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True))
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"per-image results are not valid packed bits: {exc}") from None
    flags = np.unpackbits(np.frombuffer(packed, dtype=np.uint8)).astype(bool)
    if size <= 0 or len(flags) < size or len(flags) - size >= 8:
        raise ValueError(f"per-image results hold {len(flags)} bits for {size} images")
    return flags[:size]


def unpack_classes(text: str, size: int) -> np.ndarray:
    """Inverse of the runner's ``pack_classes``: ``size`` class indices; malformed is an error."""
    width, _, body = text.partition(":")
    if width not in ("u1", "u2"):
        raise ValueError(f"per-image classes start with {width[:8]!r}, not u1: or u2:")
    try:
        raw = zlib.decompress(base64.b64decode(body.encode("ascii"), validate=True))
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"per-image classes are not valid packed bytes: {exc}") from None
    classes = np.frombuffer(raw, dtype="<" + width).astype(np.int64)
    if size <= 0 or len(classes) != size:
        raise ValueError(f"per-image classes hold {len(classes)} values for {size} images")
    return classes


class ArtifactResult(StrictModel):
    """One artifact measured on one target. Accuracies and the drop are fractions in [0, 1]."""

    def correct_flags(self) -> np.ndarray | None:
        """Per-image correctness on the eval set, or None when the runner did not report it."""
        if self.correct is None:
            return None
        return unpack_bits(self.correct, self.eval_size or 0)

    def predicted_classes(self) -> np.ndarray | None:
        """The class predicted for each eval image, or None when the runner did not report it."""
        if self.predicted is None:
            return None
        return unpack_classes(self.predicted, self.eval_size or 0)

    artifact: str
    format: str
    precision: str
    target: str
    sha256: str
    backend: str | None = None
    runtime_version: str | None = None
    top1: float | None = None
    reference_top1: float | None = None
    top1_drop: float | None = None
    agreement: float | None = None
    max_abs_diff: float | None = None
    latency_ms: Latency | None = None
    isa: str | None = Field(None, description="instruction set the latency was measured on")
    latency_calls: int | None = None
    throughput: float | None = Field(None, description="images per second at throughput_batch")
    throughput_batch: int | None = None
    threads: int | None = Field(None, description="threads the runtime used (read back from it)")
    streams: int | None = None
    peak_rss_mb: float | None = None
    size_mb: float | None = None
    input_shape: list[int] | None = None
    eval_size: int | None = None
    correct: str | None = Field(
        None, description="per-image correctness on the eval set (runner.pack_bits)"
    )
    predicted: str | None = Field(
        None, description="per-image predicted class on the eval set (runner.pack_classes)"
    )
    latency_sample_ms: list[float] | None = Field(
        None, description="up to 500 batch-1 timings, evenly spaced over the sorted sample"
    )
    verdict: Verdict | None = None
    reasons: list[str] = Field(default_factory=list)
    checks: list[str] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)


class ValidationReport(StrictModel):
    schema_version: int = REPORT_SCHEMA_VERSION
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    target: str
    target_info: TargetInfo
    settings: ValidationSettings
    policy: dict[str, Any] | None = None
    artifacts_dir: str | None = None
    eval_set: str | None = None
    eval_set_sha256: str | None = None
    results: list[ArtifactResult] = Field(default_factory=list)
    passed: bool | None = None

    def result(self, artifact: str) -> ArtifactResult:
        for result in self.results:
            if result.artifact == artifact:
                return result
        raise KeyError(artifact)


@runtime_checkable
class Target(Protocol):
    """Something that can run artifacts and say what machine it measured on."""

    name: str
    kind: str
    formats: tuple[str, ...]  # artifact formats this target can run

    def describe(self) -> TargetInfo: ...

    def run(
        self, artifacts: Sequence[Path], eval_set: Path, settings: ValidationSettings
    ) -> ValidationReport: ...


TARGETS: Registry = Registry("target")


def parse_ssh_url(spec: str) -> tuple[str | None, str, int, str]:
    """``ssh://user@host:port[/kind]`` -> (user, host, port, kind); kind defaults to ``ssh``."""
    parts = urlsplit(spec)
    if parts.scheme != "ssh" or not parts.hostname:
        raise ConfigError(f"target {spec!r} is not of the form ssh://user@host:port[/jetson]")
    try:
        port = 22 if parts.port is None else parts.port
    except ValueError:
        raise ConfigError(f"target {spec!r} has an invalid port") from None
    if port == 0:
        raise ConfigError(f"target {spec!r}: port 0 is not a port to connect to (1..65535)")
    if parts.query or parts.fragment or parts.password:
        raise ConfigError(f"target {spec!r}: give options separately, not in the URL")
    return parts.username, parts.hostname, port, parts.path.strip("/") or "ssh"


def board_of(spec: str) -> str:
    """The machine a target spec measures on: ``local-cpu#tight`` -> ``local-cpu``.

    A label after ``#`` lists one machine twice under two names (two budgets, one CPU); an SSH
    URL takes its name from the board options instead.
    """
    if "://" in spec:
        return spec
    board, _, label = spec.partition("#")
    if "#" in spec and not label.strip():
        raise ConfigError(f"target {spec!r}: give a label after '#', e.g. local-cpu#tight")
    return board


def parse_target(spec: str, **options: Any) -> Target:
    """``local-cpu[#label]`` or ``ssh://user@host:port[/jetson]`` -> a target; options go to it."""
    kind = parse_ssh_url(spec)[3] if "://" in spec else board_of(spec)
    factory = TARGETS.get(kind)
    return factory.from_spec(spec, **options)
