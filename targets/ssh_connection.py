"""The SSH target's connection: verified host keys, key authentication, bounded connects.

Host keys are always verified: against known_hosts, or against a fingerprint the user pinned
(``SHA256:...``). Only key authentication is offered. Connection faults (refused, reset, lost,
connect timeout) are :class:`Fault` and retried with exponential backoff (:func:`with_retries`);
authentication failures, host-key refusals and runner errors are not.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
from pydantic import Field, field_validator

from onedge.strict import StrictModel
from targets.base import ValidationSettings
from targets.errors import HostKeyError, TargetAuthError, TargetError, TargetUnreachableError

FAULTS = (
    asyncssh.ConnectionLost,
    asyncssh.DisconnectError,
    asyncssh.ChannelOpenError,
    asyncssh.SFTPConnectionLost,
    asyncssh.SFTPNoConnection,
    ConnectionError,
    EOFError,
)
T = TypeVar("T")


class SshOptions(StrictModel):
    """How to reach and use a board; the target URL gives user, host and port."""

    known_hosts: Path = Field(Path("~/.ssh/known_hosts"), description="OpenSSH known_hosts")
    fingerprint: str | None = Field(None, description="pinned host key, SHA256:...")
    key: Path | None = Field(None, description="private key; default: ~/.ssh keys and agent")
    python: str = "python3"
    remote_root: str = Field(
        ".cache/onedge", description="a relative path starts at the login user's home"
    )
    engine_cache: str | None = Field(None, description="default: <remote_root>/engine-cache")
    name: str | None = Field(None, description="target name in reports and gate policies")
    keepalive_s: float = Field(10.0, gt=0.0)
    emulated: bool | str = Field(
        False,
        description="the board's CPU is emulated (true, or what emulates it): its latency is "
        "reported as emulated and the latency gates are skipped",
    )

    @field_validator("fingerprint")
    @classmethod
    def _sha256_fingerprint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("SHA256:"):
            raise ValueError("give the host key fingerprint as SHA256:... (ssh-keygen -lf)")
        return value


class Fault(Exception):
    """A connection fault: worth another attempt."""

    def __init__(self, what: str, cause: BaseException) -> None:
        super().__init__(f"{what}: {cause or type(cause).__name__}")


class _Client(asyncssh.SSHClient):
    """Accepts a host key missing from known_hosts only when it matches the pinned one."""

    def __init__(self, pinned: str | None) -> None:
        self.pinned, self.offered = pinned, None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
        self.offered = key.get_fingerprint("sha256")
        return self.pinned is not None and hmac.compare_digest(self.offered, self.pinned)


@contextmanager
def faults_named(where: str, what: str):
    """A lost connection while ``what`` becomes a :class:`Fault`; another SFTP error, typed."""
    try:
        yield
    except asyncssh.SFTPError as exc:
        if isinstance(exc, FAULTS):
            raise Fault(f"lost the connection to {where} while {what}", exc) from None
        raise TargetError(f"{where}: SFTP failed while {what}: {exc.reason}") from None
    except FAULTS as exc:
        raise Fault(f"lost the connection to {where} while {what}", exc) from None


def host_key_error(
    client: _Client, known: Any, host: str, port: int, where: str, options: SshOptions
) -> HostKeyError:
    """The refusal of a host key, saying whether it changed or was never known."""
    offered = client.offered or "(not seen)"
    path = options.known_hosts
    listed = known.match(host, host, port if port != 22 else None)[0]
    check = (
        "check the fingerprint on the board's console (ssh-keygen -lf "
        "/etc/ssh/ssh_host_ed25519_key.pub), then pin it or put the key in known_hosts"
    )
    if listed:
        text = (
            f"host key of {where} changed: it offered {offered}, which is not the key "
            f"{path} holds for it; refusing to connect (reinstalled board, or someone in "
            f"between): {check}"
        )
    else:
        text = f"host key of {where} ({offered}) is not in {path}; refusing: {check}"
    if options.fingerprint:
        text += f" (the pinned fingerprint {options.fingerprint} does not match)"
    return HostKeyError(text)


async def connect(
    host: str, port: int, user: str, options: SshOptions, settings: ValidationSettings
) -> asyncssh.SSHClientConnection:
    """A connection whose host key was verified, by key authentication only, within the
    connect timeout; a typed error for each way it can be refused."""
    where = f"{user}@{host}:{port}"
    path = options.known_hosts.expanduser()
    known = asyncssh.read_known_hosts(str(path)) if path.is_file() else asyncssh.SSHKnownHosts()
    client = _Client(options.fingerprint)
    kwargs: dict[str, Any] = {
        "username": user,
        "known_hosts": known,
        "connect_timeout": settings.connect_timeout_s,
        "keepalive_interval": options.keepalive_s,
        "keepalive_count_max": 3,
        "preferred_auth": "publickey",
    }
    if options.key is not None:
        if not options.key.expanduser().is_file():
            raise TargetAuthError(f"the SSH key {options.key} does not exist")
        kwargs.update(client_keys=[str(options.key.expanduser())], agent_path=None)
    try:
        conn, _ = await asyncssh.create_connection(lambda: client, host, port, **kwargs)
    except asyncssh.HostKeyNotVerifiable:
        raise host_key_error(client, known, host, port, where, options) from None
    except asyncssh.PermissionDenied:
        key = options.key or "the default keys in ~/.ssh"
        raise TargetAuthError(
            f"{where} refused the key {key}: add its public key to "
            f"~{user}/.ssh/authorized_keys on the board, or set the key option"
        ) from None
    except socket.gaierror as exc:
        raise TargetUnreachableError(f"cannot resolve host {host!r}: {exc}") from None
    except asyncssh.KeyImportError as exc:
        raise TargetAuthError(f"cannot read the key {options.key}: {exc}") from None
    except (OSError, asyncio.TimeoutError, *FAULTS) as exc:
        raise Fault(f"cannot connect to {where}", exc) from None
    return conn


async def with_retries(attempt: Callable[[], Awaitable[T]], settings: ValidationSettings) -> T:
    """``attempt()``, tried again after each connection fault with exponential backoff."""
    attempts, faults = settings.retries + 1, []
    for number in range(attempts):
        try:
            return await attempt()
        except Fault as fault:
            faults.append(str(fault))
            if number + 1 < attempts:
                await asyncio.sleep(settings.backoff_s * 2**number)
    story = faults[0] if faults[-1] == faults[0] else f"{faults[0]}; then {faults[-1]}"
    raise TargetUnreachableError(
        f"{story}; gave up after {attempts} attempt(s): check that the board is on and "
        "sshd runs, or raise settings.retries"
    )
