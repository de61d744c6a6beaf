"""The ``local-cpu`` target: the runner in a subprocess of this machine's Python."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from export.manifest import read_manifest
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
from targets.runs import (
    RUNNER_PATH,
    by_backend,
    check_runtimes,
    group_timeout,
    info_from_machine,
    machine_of,
    read_runner_lines,
    read_runner_output,
    result_from_runner,
    runner_argv,
    unrunnable_result,
)


@TARGETS.register("local-cpu")
class LocalCpuTarget:
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

    def _run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TargetTimeoutError(
                f"the runner ran past {timeout:.0f} s on {self.name}: raise "
                "settings.command_timeout_s or shorten timed_seconds"
            ) from None
        except FileNotFoundError:
            raise MissingPythonError(f"there is no Python at {self.python!r}") from None
        except OSError as exc:
            raise RunnerFailedError(f"cannot start {self.python!r} on {self.name}: {exc}") from None

    def _machine(self, timeout: float = 120.0) -> dict:
        done = self._run([self.python, str(RUNNER_PATH), "--describe"], timeout)
        report = read_runner_output(
            done.stdout, done.stderr, done.returncode, self.name, self.python
        )
        return machine_of(report, self.name)

    def describe(self) -> TargetInfo:
        return info_from_machine(self._machine(), self.name, self.kind)

    def run(
        self, artifacts: Sequence[Path], eval_set: Path, settings: ValidationSettings
    ) -> ValidationReport:
        machine = self._machine()
        manifests = [read_manifest(Path(folder)) for folder in artifacts]
        missing = check_runtimes(machine, {m.format for m in manifests}, self.name)
        results: dict[int, ArtifactResult] = {}
        for index, manifest in enumerate(manifests):
            if manifest.format in missing:
                name, reason = Path(artifacts[index]).name, missing[manifest.format]
                results[index] = unrunnable_result(self.name, name, manifest, reason, "skipped")
        runnable = [i for i in range(len(manifests)) if i not in results]
        for part in by_backend([manifests[i] for i in runnable]):  # one process per backend
            group = [runnable[i] for i in part]
            jobs = [(str(artifacts[i]), manifests[i]) for i in group]
            argv = runner_argv(self.python, str(RUNNER_PATH), jobs, str(eval_set), settings)
            done = self._run(argv, group_timeout(settings, len(group)))
            reports = read_runner_lines(
                done.stdout, done.stderr, done.returncode, self.name, self.python, len(group)
            )
            for index, report in zip(group, reports, strict=True):
                name = Path(artifacts[index]).name
                results[index] = result_from_runner(report, self.name, name, manifests[index])
        return ValidationReport(
            target=self.name,
            target_info=info_from_machine(machine, self.name, self.kind),
            settings=settings,
            results=[results[i] for i in sorted(results)],
        )
