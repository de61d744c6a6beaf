"""A real OpenSSH server on 127.0.0.1 for the ssh target tests.

Throw-away host and user keys, a generated sshd_config, a free port; runs as the current user
(root in CI, which needs ``PermitRootLogin prohibit-password`` and /run/sshd).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "onedge-test", "-f", str(path)],
        check=True,
    )
    return path


def fingerprint(public_key: Path) -> str:
    out = subprocess.run(
        [SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(public_key)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (sshd forks a session process per connection)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class SshServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(folder / "host_key")
        self.user_key = keygen(folder / "user_key")
        (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())
        self.port = free_port()
        self.user = os.environ.get("USER") or __import__("getpass").getuser()
        self.config = folder / "sshd_config"
        self.config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                    "PidFile none",
                    "StrictModes no",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "Subsystem sftp internal-sftp",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> SshServer:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation folder
        log = open(self.folder / "sshd.log", "ab")  # noqa: SIM115 - lives as long as sshd
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config), "-p", str(self.port)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.folder / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening within 15 s")

    @property
    def host_fingerprint(self) -> str:
        return fingerprint(self.folder / "host_key.pub")

    def known_hosts_line(self, public_key: Path | None = None) -> str:
        key = (public_key or self.folder / "host_key.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {' '.join(key)}\n"

    def kill(self) -> None:
        """Stop the server and every session it runs, as a crash or power loss would."""
        if self.proc is None:
            return
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None


def start_server(folder: Path) -> SshServer:
    """A started server; skipped where sshd is not installed, failed in CI where it must be."""
    if not Path(SSHD).exists():
        if os.environ.get("CI"):
            pytest.fail("sshd is missing: .ci/run must apt-get install openssh-server")
        pytest.skip("sshd is not installed (apt-get install openssh-server)")
    return SshServer(folder).start()
