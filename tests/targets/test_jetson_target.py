"""The jetson target's board commands, in a session over a stand-in connection (no Jetson)."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from targets import JetsonOptions, JetsonTarget, TargetTimeoutError, ValidationSettings
from targets.ssh_session import SshSession

SUMMARY = (Path(__file__).parent / "data" / "trtexec_samples.txt").read_text()


class Stream:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, n: int) -> bytes:
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk


class RecordingProcess:
    def __init__(self, exit_status: int, stdout: str) -> None:
        self.stdin = SimpleNamespace(write_eof=lambda: None)
        self.stdout, self.stderr = Stream(stdout.encode()), Stream(b"")
        self.exit_status = exit_status

    async def wait(self, check: bool = False) -> SimpleNamespace:
        return SimpleNamespace(exit_status=self.exit_status, exit_signal=None)

    def close(self) -> None:
        pass


class RecordingConnection:
    """Answers every command with one exit status and remembers the command lines."""

    def __init__(self, exit_status: int, stdout: str = "") -> None:
        self.exit_status, self.stdout, self.commands = exit_status, stdout, []

    async def create_process(self, command: str, encoding=None) -> RecordingProcess:
        self.commands.append(command)
        return RecordingProcess(self.exit_status, self.stdout)


def run_trtexec(conn: RecordingConnection) -> SimpleNamespace:
    options = JetsonOptions(trtexec="/usr/src/tensorrt/bin/trtexec")
    target = JetsonTarget("board", "nvidia", 22, options)
    result = SimpleNamespace(extra={}, input_shape=[1, 1, 8, 8], artifact="tensorrt-fp16")
    report = {"backend_info": {"engine_path": "/home/nvidia/x y.engine", "input_name": "input"}}
    session = SshSession(conn, target.where, options, ValidationSettings())
    asyncio.run(target.finish(session, result, report, 42.0))
    return result


def test_trtexec_is_stopped_by_the_board_at_the_timeout() -> None:
    conn = RecordingConnection(0, SUMMARY)
    result = run_trtexec(conn)
    (command,) = conn.commands
    assert shlex.split(command) == [
        "timeout", "-k", "5", "42", "/usr/src/tensorrt/bin/trtexec",
        "--loadEngine=/home/nvidia/x y.engine", "--shapes=input:1x1x8x8",
    ]  # fmt: skip
    assert "error" not in result.extra["trtexec"]


@pytest.mark.parametrize("status", [124, 137])
def test_trtexec_past_the_timeout_is_a_clear_error(status: int) -> None:
    with pytest.raises(TargetTimeoutError, match="trtexec on tensorrt-fp16.*command_timeout_s"):
        run_trtexec(RecordingConnection(status))
