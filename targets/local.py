"""The ``local-cpu`` target: the runner in a subprocess of this machine's Python."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from export.manifest import Manifest, read_manifest
from onedge.errors import ConfigError
from targets.base import (
    TARGETS,
    ArtifactResult,
    TargetInfo,
    ValidationReport,
    ValidationSettings,
    board_of,
)
from targets.errors import MissingPythonError, RunnerFailedError, TargetTimeoutError
from targets.protocol import PlainBoard, RunnerOutput, measure, run_sync
from targets.runs import RUNNER_PATH

DESCRIBE_TIMEOUT_S = 120.0


class LocalProcess:
    """The local target's transport: the runner in a subprocess, the artifacts where they lie.

    The runner checks each artifact's sha256 itself (``--expect-sha256``), so the manifests are
    read, not re-hashed, here.
    """

    runner = str(RUNNER_PATH)

    def __init__(self, python: str, where: str, data: str = "") -> None:
        self.python, self.where, self.data = python, where, data

    def manifest(self, folder: Path) -> Manifest:
        return read_manifest(folder)

    async def describe(self) -> RunnerOutput:
        return self.call([self.python, self.runner, "--describe"], DESCRIBE_TIMEOUT_S)

    async def put(self, folders: Sequence[Path], manifests: Sequence[Manifest]) -> list[str]:
        return [str(folder) for folder in folders]

    async def run(self, argv: list[str], timeout: float, what: str) -> RunnerOutput:
        return self.call(argv, timeout)

    def call(self, argv: list[str], timeout: float) -> RunnerOutput:
        """Run argv in a subprocess, stopped after ``timeout`` s; a typed error if it cannot."""
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TargetTimeoutError(
                f"the runner ran past {timeout:.0f} s on {self.where}: raise "
                "settings.command_timeout_s or shorten timed_seconds"
            ) from None
        except FileNotFoundError:
            raise MissingPythonError(f"there is no Python at {self.python!r}") from None
        except OSError as exc:
            raise RunnerFailedError(
                f"cannot start {self.python!r} on {self.where}: {exc}"
            ) from None
        return RunnerOutput(done.stdout, done.stderr, done.returncode)


@TARGETS.register("local-cpu")
class LocalCpuTarget(PlainBoard):
    """Runs ONNX (ONNX Runtime) and OpenVINO artifacts on this machine's CPU."""

    kind = "local-cpu"
    formats = ("onnx", "openvino")

    def __init__(self, python: str | None = None, name: str = "local-cpu") -> None:
        self.python = python or sys.executable
        self.name = name

    @classmethod
    def from_spec(cls, spec: str, python: str | None = None, name: str | None = None):
        if board_of(spec) != "local-cpu":
            raise ConfigError(f"target {spec!r} is not local-cpu (or local-cpu#label)")
        return cls(python=python, name=name or spec)

    def describe(self) -> TargetInfo:
        transport = LocalProcess(self.python, self.name)
        return run_sync(measure(transport, self, [], ValidationSettings(), {}))

    def run(
        self, artifacts: Sequence[Path], eval_set: Path, settings: ValidationSettings
    ) -> ValidationReport:
        transport = LocalProcess(self.python, self.name, str(eval_set))
        done: dict[int, ArtifactResult] = {}
        info = run_sync(measure(transport, self, artifacts, settings, done))
        return ValidationReport(
            target=self.name,
            target_info=info,
            settings=settings,
            results=[done[index] for index in range(len(artifacts))],
        )
