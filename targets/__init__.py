"""Targets: run exported artifacts where they will live, measure them, gate them.

Public API::

    from targets import validate_artifacts, print_report, ValidationSettings, GatePolicy
    report = validate_artifacts(Path("runs/x/export"), "local-cpu", Path("runs/x/validate"))
    print_report(report)

Targets are registered by name in ``TARGETS`` (``local-cpu``, ``ssh``, ``jetson``);
``parse_target("ssh://user@host:port/jetson", known_hosts=..., key=...)`` builds one.
"""

from targets.base import (
    TARGETS,
    ArtifactResult,
    Target,
    TargetInfo,
    ValidationReport,
    ValidationSettings,
    parse_target,
)
from targets.errors import (
    EvalSetError,
    HostKeyError,
    MissingPythonError,
    MissingRuntimeError,
    RemoteRootError,
    RunnerFailedError,
    TargetAuthError,
    TargetError,
    TargetTimeoutError,
    TargetUnreachableError,
    UploadError,
)
from targets.gates import GatePolicy, Verdict, evaluate
from targets.jetson import JetsonOptions, JetsonTarget
from targets.local import LocalCpuTarget
from targets.ssh import SshTarget
from targets.ssh_connection import SshOptions
from targets.table import print_report, render_report
from targets.validate import find_artifacts, validate_artifacts, write_report

__all__ = [
    "TARGETS",
    "ArtifactResult",
    "EvalSetError",
    "GatePolicy",
    "HostKeyError",
    "JetsonOptions",
    "JetsonTarget",
    "LocalCpuTarget",
    "MissingPythonError",
    "MissingRuntimeError",
    "RemoteRootError",
    "RunnerFailedError",
    "SshOptions",
    "SshTarget",
    "Target",
    "TargetAuthError",
    "TargetError",
    "TargetInfo",
    "TargetTimeoutError",
    "TargetUnreachableError",
    "UploadError",
    "ValidationReport",
    "ValidationSettings",
    "Verdict",
    "evaluate",
    "find_artifacts",
    "parse_target",
    "print_report",
    "render_report",
    "validate_artifacts",
    "write_report",
]
