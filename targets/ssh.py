"""The ``ssh`` target: any Linux board over SSH, measured by the same runner as local-cpu.

The board logic lives here: the target's name and options, what a board family adds to a
measurement (:meth:`SshTarget.board_info`, :meth:`SshTarget.runner_extra`,
:meth:`SshTarget.finish`, refined by the Jetson target), and each attempt's steps. The
transport (the verified connection, timeouts, uploads, the private run folder and the retries
after connection faults) is :mod:`targets.ssh_session`; the measuring protocol is
:mod:`targets.protocol`, the one the local target uses too.
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from onedge.errors import ConfigError
from targets.base import (
    TARGETS,
    ArtifactResult,
    TargetInfo,
    ValidationReport,
    ValidationSettings,
    parse_ssh_url,
)
from targets.protocol import measure, run_sync
from targets.ssh_connection import SshOptions, with_retries
from targets.ssh_session import SshSession, open_session


@TARGETS.register("ssh")
class SshTarget:
    """Runs ONNX (ONNX Runtime) and OpenVINO artifacts on a Linux board over SSH."""

    kind = "ssh"
    formats: tuple[str, ...] = ("onnx", "openvino")
    options_type: type[SshOptions] = SshOptions

    def __init__(self, host: str, user: str | None = None, port: int = 22, options=None) -> None:
        self.host, self.port = host, port
        self.user = user or getpass.getuser()
        self.options = options or self.options_type()
        self.where = f"{self.user}@{host}:{port}"
        self.name = self.options.name or f"ssh://{self.where}/{self.kind}"

    @classmethod
    def from_spec(cls, spec: str, options: SshOptions | None = None, **fields: Any):
        if "://" not in spec:
            raise ConfigError(f"target {spec!r} needs an address: ssh://user@host:port")
        user, host, port, kind = parse_ssh_url(spec)
        if kind != cls.kind:
            raise ConfigError(f"target {spec!r} is a {kind} target, not {cls.kind}")
        given = options.model_dump() if options is not None else {}
        return cls(host, user, port, cls.options_type(**{**given, **fields}))

    # --- hooks a board family (Jetson) refines ---
    def runner_extra(self) -> list[str]:
        return []

    async def board_info(self, session: SshSession, timeout: float) -> dict:
        return {}

    async def finish(
        self, session: SshSession, result: ArtifactResult, report: dict, timeout: float
    ) -> None:
        return None

    # --- what the measuring protocol asks of a board (targets.protocol.Board) ---
    def runner_flags(self, session: SshSession) -> list[str]:
        cache = self.options.engine_cache or f"{PurePosixPath(session.run_dir).parent}/engine-cache"
        return ["--engine-cache", cache, *self.runner_extra()]

    async def board_fields(self, session: SshSession, machine: dict, timeout: float) -> dict:
        fields = await self.board_info(session, timeout)
        if self.options.emulated and not machine.get("emulated"):
            named = self.options.emulated
            fields["emulated"] = named if isinstance(named, str) else "yes (board option)"
        return fields

    # --- public API ---
    def describe(self) -> TargetInfo:
        settings = ValidationSettings()
        return run_sync(self._measure([], None, settings))[0]

    def run(
        self, artifacts: Sequence[Path], eval_set: Path, settings: ValidationSettings
    ) -> ValidationReport:
        info, results = run_sync(self._measure(list(artifacts), eval_set, settings))
        return ValidationReport(
            target=self.name, target_info=info, settings=settings, results=results
        )

    async def _measure(
        self, jobs: list[Path], eval_set: Path | None, settings: ValidationSettings
    ) -> tuple[TargetInfo, list[ArtifactResult]]:
        """Attempts until one gets through: results measured before a fault are kept."""
        done: dict[int, ArtifactResult] = {}
        stale: list[str] = []  # run folders of attempts cut short

        async def attempt() -> tuple[TargetInfo, list[ArtifactResult]]:
            address = (self.host, self.port, self.user, self.options, settings)
            async with open_session(*address, stale) as session:
                await session.upload_runner(eval_set)
                info = await measure(session, self, jobs, settings, done)
            return info, [done[index] for index in range(len(jobs))]

        return await with_retries(attempt, settings)
