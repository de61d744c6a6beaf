"""Boards that hang, flood or lie, played by a real OpenSSH server on 127.0.0.1.

A hanging board: sshd's SFTP subsystem is a proxy to the real sftp-server that stops answering
at the first file upload, while the SSH connection (keepalives, exec channels) stays healthy.
A flooding or lying board: the ``python`` option points at a wrapper that runs the real runner
and then prints far too much, or a doctored report.
"""

from __future__ import annotations

import stat
import sys
import time
from pathlib import Path

import pytest

from export.manifest import ArtifactError
from onedge.errors import ConfigError
from pipeline.config import ValidateConfig
from targets import (
    SshOptions,
    TargetTimeoutError,
    ValidationSettings,
    parse_target,
    validate_artifacts,
)
from targets.base import parse_ssh_url
from targets.errors import RunnerFailedError
from tests.targets.sshd_server import SshServer

pytestmark = pytest.mark.ssh

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
SSH_FXP_OPEN = 3

# The SFTP subsystem of the hanging board: forwards packets to sftp-server until the client
# opens a file (the first upload), then reads on and answers nothing.
HANGING_SFTP = f"""
import os, subprocess, sys, threading
server = subprocess.Popen([{SFTP_SERVER!r}], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def answers():
    while chunk := os.read(server.stdout.fileno(), 65536):
        os.write(1, chunk)
threading.Thread(target=answers, daemon=True).start()
def read(n):
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data
while True:
    head = read(4)
    body = read(int.from_bytes(head, "big"))
    if body[0] == {SSH_FXP_OPEN}:  # never answer again; exit when the channel closes
        while os.read(0, 65536):
            pass
        sys.exit(0)
    server.stdin.write(head + body)
    server.stdin.flush()
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def artifact(export_dir: Path) -> Path:
    return export_dir / "onnx-fp32"


@pytest.fixture
def quick() -> ValidationSettings:
    return ValidationSettings(
        warmup_seconds=0.0, warmup_calls=2, timed_seconds=0.0, timed_calls=5,
        throughput_calls=1, batch_size=16, threads=1, connect_timeout_s=5,
        command_timeout_s=60, transfer_timeout_s=1.0, retries=0,
    )  # fmt: skip


def url(server: SshServer) -> str:
    return f"ssh://{server.user}@127.0.0.1:{server.port}"


def leftovers(options: SshOptions) -> list[Path]:
    root = Path(options.remote_root)
    return sorted(root.glob("run-*")) if root.exists() else []


def test_board_whose_sftp_stops_answering_is_bounded_and_cleaned(
    tmp_path: Path, sshd, ssh_options: SshOptions, artifact: Path, export_dir: Path, quick
) -> None:
    """Case 4: SFTP hangs at the first upload; keepalives pass; the run ends within bounds."""
    proxy = executable(tmp_path / "hanging_sftp.py", HANGING_SFTP)
    server = SshServer(tmp_path / "hanging-sshd")
    server.config.write_text(
        server.config.read_text().replace(
            "Subsystem sftp internal-sftp", f"Subsystem sftp {sys.executable} {proxy}"
        )
    )
    server.start()
    try:
        (tmp_path / "kh").write_text(server.known_hosts_line())
        options = ssh_options.model_copy(
            update={"known_hosts": tmp_path / "kh", "key": server.user_key, "keepalive_s": 0.5}
        )
        target = parse_target(url(server), options=options)
        start = time.monotonic()
        with pytest.raises(TargetTimeoutError, match="did not answer SFTP within 1 s") as info:
            validate_artifacts(
                artifact, target, tmp_path / "out", quick, eval_set=export_dir / "eval.npz"
            )
        elapsed = time.monotonic() - start
    finally:
        server.kill()
    assert "\n" not in str(info.value)
    assert elapsed < 20, elapsed  # one bounded upload, one bounded removal, then rm over exec
    assert leftovers(options) == []  # the private run folder went, though SFTP had died
    assert not (tmp_path / "out").exists()


def test_default_settings_bound_every_remote_call() -> None:
    settings = ValidationSettings()
    assert settings.transfer_timeout_s > 0 and settings.command_timeout_s > 0
    assert ValidateConfig().board_timeout_s == 3600.0  # a busy board is waited for, not forever


FLOOD = """#!/bin/sh
case "$*" in
  *--artifact*) head -c 12000000 /dev/zero | tr '\\0' x; exit 0;;
esac
exec {python} "$@"
"""


def test_board_flooding_its_output_is_cut_at_the_limit(
    tmp_path: Path, sshd: SshServer, ssh_options: SshOptions, artifact: Path, export_dir, quick
) -> None:
    """Case 5: 12 MB of stdout is refused at 4 MiB, not held in memory."""
    wrapper = executable(tmp_path / "flood.sh", FLOOD.format(python=sys.executable))
    options = ssh_options.model_copy(update={"python": str(wrapper)})
    target = parse_target(url(sshd), options=options)
    with pytest.raises(RunnerFailedError, match="printed more than 4096 KiB while measuring"):
        validate_artifacts(
            artifact, target, tmp_path / "out", quick, eval_set=export_dir / "eval.npz"
        )
    assert leftovers(options) == [] and not (tmp_path / "out").exists()


# Runs the real runner, then prints its report doctored by DOCTOR (a Python expression on text).
LIAR = """#!{python}
import subprocess, sys
done = subprocess.run([{python!r}, *sys.argv[1:]], capture_output=True, text=True)
text = done.stdout
if "--artifact" in sys.argv:
    import json, re
    report = json.loads(text.strip().splitlines()[-1])
    text = {doctor}
sys.stdout.write(text)
sys.exit(done.returncode)
"""

LIES = {
    "bare-ok": ("'{\"ok\": true}'", RunnerFailedError, "invalid result.*sha256: Field required"),
    "infinite-top1": (
        "re.sub(r'\"top1\": [0-9.e-]+', '\"top1\": 1e999', json.dumps(report))",
        RunnerFailedError,
        "top1: Input should be a finite number",
    ),
    "top1-above-one": (
        "json.dumps({**report, 'top1': 1.5})",
        RunnerFailedError,
        "top1: Input should be less than or equal to 1",
    ),
    "negative-latency": (
        "json.dumps({**report, 'latency_ms': {**report['latency_ms'], 'p50': -1.0}})",
        RunnerFailedError,
        "latency_ms.p50: Input should be greater than 0",
    ),
    "negative-size": (
        "json.dumps({**report, 'size_mb': -3.0})",
        RunnerFailedError,
        "size_mb: Input should be greater than or equal to 0",
    ),
    "another-sha256": (
        "json.dumps({**report, 'sha256': 'ab' * 32})",
        ArtifactError,
        "measured an artifact with sha256 abababababab",
    ),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_lying_board_results_are_refused(
    lie: str, tmp_path: Path, sshd, ssh_options, artifact: Path, export_dir: Path, quick
) -> None:
    """Case 5: what a board claims is parsed into a typed model with ranges and checked."""
    doctor, error, message = LIES[lie]
    wrapper = executable(tmp_path / "liar.py", LIAR.format(python=sys.executable, doctor=doctor))
    options = ssh_options.model_copy(update={"python": str(wrapper)})
    target = parse_target(url(sshd), options=options)
    with pytest.raises(error, match=message) as info:
        validate_artifacts(
            artifact, target, tmp_path / "out", quick, eval_set=export_dir / "eval.npz"
        )
    assert "\n" not in str(info.value)
    assert leftovers(options) == [] and not (tmp_path / "out").exists()


def test_honest_wrapper_passes(tmp_path, sshd, ssh_options, artifact, export_dir, quick) -> None:
    """The liar with no lie: the refusals above are the lies', not the wrapper's."""
    wrapper = executable(
        tmp_path / "honest.py", LIAR.format(python=sys.executable, doctor="json.dumps(report)")
    )
    options = ssh_options.model_copy(update={"python": str(wrapper)})
    report = validate_artifacts(
        artifact, parse_target(url(sshd), options=options), tmp_path / "out", quick,
        eval_set=export_dir / "eval.npz",
    )  # fmt: skip
    assert report.results[0].verdict == "pass" and 0.9 < report.results[0].top1 <= 1.0


def test_port_zero_is_refused() -> None:
    """Case 11: ssh://host:0 used to become port 22 silently."""
    with pytest.raises(ConfigError, match="port 0"):
        parse_ssh_url("ssh://me@board:0")
    assert parse_ssh_url("ssh://me@board")[2] == 22
    assert parse_ssh_url("ssh://me@board:2222/jetson")[2:] == (2222, "jetson")
