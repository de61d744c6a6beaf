"""The one measuring protocol, written once over a transport.

A target measures the same way wherever its runner runs: describe the machine, check its
runtimes, group the artifacts by backend, start one runner process per backend, read its lines
and build the results. What differs is the transport: a subprocess of this machine
(:class:`targets.local.LocalProcess`) or an SSH session to a board
(:class:`targets.ssh_session.SshSession`). What a board family adds (its own facts, extra runner
flags, work after each result) comes from the target through :class:`Board`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from export.manifest import Manifest
from targets.base import ArtifactResult, TargetInfo, ValidationSettings
from targets.runs import (
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


@dataclass
class RunnerOutput:
    """What one runner process left: its output (bounded by the transport) and exit status."""

    stdout: str
    stderr: str
    status: int | None


class Transport(Protocol):
    """Where the runner runs, and how files and commands get there."""

    where: str  # the machine as error messages name it
    python: str  # the Python that runs the runner there
    runner: str  # the runner's path there
    data: str  # the eval set's path there

    def manifest(self, folder: Path) -> Manifest:
        """The artifact's manifest, read (and checked as far as this transport needs) here."""
        ...

    async def describe(self) -> RunnerOutput:
        """The runner's ``--describe`` run there, bounded in time."""
        ...

    async def put(self, folders: Sequence[Path], manifests: Sequence[Manifest]) -> list[str]:
        """Copy the artifacts where the runner reads them; their paths there, in order."""
        ...

    async def run(self, argv: list[str], timeout: float, what: str) -> RunnerOutput:
        """Run ``argv`` (a list, never a shell string) there, stopped after ``timeout`` s."""
        ...


class Board(Protocol):
    """What a target adds to the protocol: its names and its board family's own steps."""

    name: str
    kind: str

    def runner_flags(self, transport: Any) -> list[str]:
        """Extra runner flags (an engine cache, a monitor command)."""
        ...

    async def board_fields(self, transport: Any, machine: dict, timeout: float) -> dict:
        """TargetInfo fields the board family reads itself (power mode, clocks, emulation)."""
        ...

    async def finish(
        self, transport: Any, result: ArtifactResult, report: dict, timeout: float
    ) -> None:
        """Work after one artifact was measured (a Jetson's tegrastats summary, trtexec)."""
        ...


class PlainBoard:
    """A board family that adds nothing to the protocol: the default hooks."""

    def runner_flags(self, transport: Any) -> list[str]:
        return []

    async def board_fields(self, transport: Any, machine: dict, timeout: float) -> dict:
        return {}

    async def finish(
        self, transport: Any, result: ArtifactResult, report: dict, timeout: float
    ) -> None:
        return None


def run_sync(coro: Any) -> Any:
    """Run a coroutine from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def describe_machine(transport: Transport) -> dict:
    """The ``machine`` part of the runner's ``--describe`` report there, checked."""
    out = await transport.describe()
    report = read_runner_output(
        out.stdout, out.stderr, out.status, transport.where, transport.python
    )
    return machine_of(report, transport.where)


async def measure(
    transport: Transport,
    board: Board,
    jobs: Sequence[Path],
    settings: ValidationSettings,
    done: dict[int, ArtifactResult],
) -> TargetInfo:
    """Measure the artifact folders ``jobs`` there; each result lands in ``done`` by index.

    A result already in ``done`` (an earlier attempt's, before a connection fault) is kept. An
    artifact whose runtime the machine lacks is ``skipped``, not a failure. With no jobs, this
    only describes the machine.
    """
    timeout = settings.command_timeout_s
    machine = await describe_machine(transport)
    manifests = [transport.manifest(Path(folder)) for folder in jobs]
    missing = {}
    if jobs:
        missing = check_runtimes(machine, {m.format for m in manifests}, transport.where)
    fields = await board.board_fields(transport, machine, timeout)
    info = info_from_machine(machine, board.name, board.kind, **fields)
    for index, manifest in enumerate(manifests):
        if manifest.format in missing and index not in done:
            reason, name = missing[manifest.format], Path(jobs[index]).name
            done[index] = unrunnable_result(board.name, name, manifest, reason, "skipped")
    pending = [index for index in range(len(jobs)) if index not in done]
    for group in by_backend([manifests[index] for index in pending]):  # one process per backend
        indices = [pending[i] for i in group]
        await measure_group(transport, board, jobs, manifests, indices, settings, done)
    return info


async def measure_group(
    transport: Transport,
    board: Board,
    jobs: Sequence[Path],
    manifests: Sequence[Manifest],
    indices: list[int],
    settings: ValidationSettings,
    done: dict[int, ArtifactResult],
) -> None:
    """One runner process measuring the artifacts ``indices`` of one backend, each checked
    into its result in ``done`` as soon as it is read."""
    folders = [Path(jobs[index]) for index in indices]
    paths = await transport.put(folders, [manifests[index] for index in indices])
    argv = runner_argv(
        transport.python, transport.runner,
        [(path, manifests[index]) for path, index in zip(paths, indices, strict=True)],
        transport.data, settings, board.runner_flags(transport),
    )  # fmt: skip
    what = f"measuring {', '.join(folder.name for folder in folders)}"
    out = await transport.run(argv, group_timeout(settings, len(folders)), what)
    reports = read_runner_lines(
        out.stdout, out.stderr, out.status, transport.where, transport.python, len(folders)
    )
    for index, folder, report in zip(indices, folders, reports, strict=True):
        result = result_from_runner(
            report, board.name, folder.name, manifests[index], transport.where
        )
        if result.verdict is None:  # measured (not an artifact's own failure)
            await board.finish(transport, result, report, settings.command_timeout_s)
        done[index] = result
