"""The ``ssh`` target: any Linux board over SSH, measured by the same runner as local-cpu.

Host keys are always verified: against known_hosts, or against a fingerprint the user pinned
(``SHA256:...``). Only key authentication is offered. Each run works in its own folder (mode
0700) under ``remote_root`` (by default ``~/.cache/onedge``), removed afterwards; a remote_root
that another user owns or may write to is refused. Every uploaded file is hashed on the board
and compared.
Commands are argv lists joined with ``shlex`` quoting. Connection faults (refused, reset, lost,
connect timeout) are retried with exponential backoff; authentication failures, host-key
refusals and runner errors are not.
"""

from __future__ import annotations

import asyncio
import getpass
import hmac
import shlex
import socket
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import asyncssh
from pydantic import BaseModel, Field, ValidationError, field_validator

from export.manifest import artifact_paths, sha256_file, verify_artifact
from onedge.errors import ConfigError
from onedge.strict import StrictModel
from targets.base import (
    TARGETS,
    ArtifactResult,
    TargetInfo,
    ValidationReport,
    ValidationSettings,
    parse_ssh_url,
)
from targets.errors import (
    HostKeyError,
    MissingPythonError,
    RemoteRootError,
    RunnerFailedError,
    TargetAuthError,
    TargetError,
    TargetTimeoutError,
    TargetUnreachableError,
    UploadError,
)
from targets.runs import (
    COMMAND_NOT_FOUND,
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

# Runs on the board: the sha256 of each uploaded file, and the Python version (any Python runs it)
HASH_SCRIPT = (
    "import hashlib,json,sys\n"
    "def h(p):\n"
    " d=hashlib.sha256()\n"
    " with open(p,'rb') as f:\n"
    "  for b in iter(lambda:f.read(1<<20),b''): d.update(b)\n"
    " return d.hexdigest()\n"
    "print(json.dumps({'python':list(sys.version_info[:3]),"
    "'files':dict((p,h(p)) for p in sys.argv[1:])}))"
)
MIN_PYTHON = (3, 8)
OUTPUT_LIMIT = 4 << 20  # bytes of stdout (and of stderr) read from one remote command
HASH_LIMIT = 64 << 10
TIMEOUT_EXPIRED, TIMEOUT_KILLED = 124, 137  # exit status of coreutils timeout
FAULTS = (
    asyncssh.ConnectionLost,
    asyncssh.DisconnectError,
    asyncssh.ChannelOpenError,
    asyncssh.SFTPConnectionLost,
    asyncssh.SFTPNoConnection,
    ConnectionError,
    EOFError,
)


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


class HashAnswer(BaseModel):
    """What HASH_SCRIPT prints: the board's Python version and each uploaded file's sha256."""

    python: list[int] = Field(min_length=2, max_length=3)
    files: dict[str, str]


@dataclass
class Completed:
    """A finished remote command: its output (bounded) and how it ended."""

    stdout: str
    stderr: str
    exit_status: int | None
    exit_signal: Any


class _Fault(Exception):
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


def run_sync(coro: Any) -> Any:
    """Run a coroutine from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


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
        self._transfer_s = ValidationSettings().transfer_timeout_s  # set by each attempt

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

    async def board_info(self, conn: asyncssh.SSHClientConnection, timeout: float) -> dict:
        return {}

    async def finish(self, conn: Any, result: ArtifactResult, report: dict, timeout: float) -> None:
        return None

    # --- public API ---
    def describe(self) -> TargetInfo:
        settings = ValidationSettings()
        return run_sync(self._with_retries([], None, settings))[0]

    def run(
        self, artifacts: Sequence[Path], eval_set: Path, settings: ValidationSettings
    ) -> ValidationReport:
        info, results = run_sync(self._with_retries(list(artifacts), eval_set, settings))
        return ValidationReport(
            target=self.name, target_info=info, settings=settings, results=results
        )

    # --- connection ---
    def _known_hosts(self) -> Any:
        path = self.options.known_hosts.expanduser()
        return asyncssh.read_known_hosts(str(path)) if path.is_file() else asyncssh.SSHKnownHosts()

    def _host_key_error(self, client: _Client, known: Any) -> HostKeyError:
        offered = client.offered or "(not seen)"
        path = self.options.known_hosts
        listed = known.match(self.host, self.host, self.port if self.port != 22 else None)[0]
        check = (
            "check the fingerprint on the board's console (ssh-keygen -lf "
            "/etc/ssh/ssh_host_ed25519_key.pub), then pin it or put the key in known_hosts"
        )
        if listed:
            text = (
                f"host key of {self.where} changed: it offered {offered}, which is not the key "
                f"{path} holds for it; refusing to connect (reinstalled board, or someone in "
                f"between): {check}"
            )
        else:
            text = f"host key of {self.where} ({offered}) is not in {path}; refusing: {check}"
        if self.options.fingerprint:
            text += f" (the pinned fingerprint {self.options.fingerprint} does not match)"
        return HostKeyError(text)

    async def _connect(self, settings: ValidationSettings) -> asyncssh.SSHClientConnection:
        client, known = _Client(self.options.fingerprint), self._known_hosts()
        kwargs: dict[str, Any] = {
            "username": self.user,
            "known_hosts": known,
            "connect_timeout": settings.connect_timeout_s,
            "keepalive_interval": self.options.keepalive_s,
            "keepalive_count_max": 3,
            "preferred_auth": "publickey",
        }
        if self.options.key is not None:
            if not self.options.key.expanduser().is_file():
                raise TargetAuthError(f"the SSH key {self.options.key} does not exist")
            kwargs.update(client_keys=[str(self.options.key.expanduser())], agent_path=None)
        try:
            conn, _ = await asyncssh.create_connection(
                lambda: client, self.host, self.port, **kwargs
            )
        except asyncssh.HostKeyNotVerifiable:
            raise self._host_key_error(client, known) from None
        except asyncssh.PermissionDenied:
            key = self.options.key or "the default keys in ~/.ssh"
            raise TargetAuthError(
                f"{self.where} refused the key {key}: add its public key to "
                f"~{self.user}/.ssh/authorized_keys on the board, or set the key option"
            ) from None
        except socket.gaierror as exc:
            raise TargetUnreachableError(f"cannot resolve host {self.host!r}: {exc}") from None
        except asyncssh.KeyImportError as exc:
            raise TargetAuthError(f"cannot read the key {self.options.key}: {exc}") from None
        except (OSError, asyncio.TimeoutError, *FAULTS) as exc:
            raise _Fault(f"cannot connect to {self.where}", exc) from None
        return conn

    @contextmanager
    def _stage(self, what: str):
        try:
            yield
        except asyncssh.SFTPError as exc:
            if isinstance(exc, FAULTS):
                raise _Fault(f"lost the connection to {self.where} while {what}", exc) from None
            raise TargetError(f"{self.where}: SFTP failed while {what}: {exc.reason}") from None
        except FAULTS as exc:
            raise _Fault(f"lost the connection to {self.where} while {what}", exc) from None

    async def _exec(
        self, conn: Any, argv: list[str], timeout: float, what: str, limit: int = OUTPUT_LIMIT
    ) -> Completed:
        """Run argv, reading at most ``limit`` bytes of stdout and of stderr, within ``timeout``."""
        with self._stage(what):
            process = None
            try:
                async with asyncio.timeout(timeout):
                    process = await conn.create_process(shlex.join(argv), encoding=None)
                    process.stdin.write_eof()
                    out, err = await asyncio.gather(
                        self._read_limited(process.stdout, limit, what),
                        self._read_limited(process.stderr, limit, what),
                    )
                    status = await process.wait(check=False)
            except TimeoutError:
                raise TargetTimeoutError(
                    f"{what} on {self.where} ran past {timeout:.0f} s: raise "
                    "settings.command_timeout_s or shorten the timing settings"
                ) from None
            finally:
                if process is not None:
                    process.close()
        done = Completed(
            out.decode(errors="replace"),
            err.decode(errors="replace"),
            status.exit_status,
            status.exit_signal,
        )
        if done.exit_status is None and done.exit_signal is None:  # the channel died
            raise _Fault(f"lost the connection to {self.where} while {what}", EOFError("closed"))
        return done

    async def _read_limited(self, stream: Any, limit: int, what: str) -> bytes:
        data = bytearray()
        while chunk := await stream.read(1 << 16):
            if len(data) + len(chunk) > limit:
                raise RunnerFailedError(
                    f"{self.where} printed more than {limit // 1024} KiB while {what}: refused "
                    "(the runner prints one JSON line; check what runs as the python option)"
                )
            data.extend(chunk)
        return bytes(data)

    async def _sftp(self, call: Any, what: str) -> Any:
        """One SFTP call, bounded by settings.transfer_timeout_s: a silent board cannot hang it."""
        try:
            async with asyncio.timeout(self._transfer_s):
                return await call
        except TimeoutError:
            raise TargetTimeoutError(
                f"{self.where} did not answer SFTP within {self._transfer_s:g} s while {what}: "
                "check the board (disk full, sftp-server stuck) or raise "
                "settings.transfer_timeout_s"
            ) from None

    async def _remove(self, conn: Any, sftp: Any, run_dir: str) -> None:
        """Remove a run folder: over SFTP, or else with rm; bounded, never raising."""
        if sftp is not None:
            with suppress(Exception):
                await self._sftp(
                    sftp.rmtree(run_dir, ignore_errors=True), "removing the run folder"
                )
                return
        with suppress(Exception):
            await self._exec(conn, ["rm", "-rf", "--", run_dir], self._transfer_s, "removing")

    # --- one attempt: probe, upload, measure, clean up ---
    async def _upload(self, conn: Any, sftp: Any, pairs: list[tuple[Path, str]], timeout: float):
        with self._stage("uploading"):
            for local, remote in pairs:
                folder = str(PurePosixPath(remote).parent)
                await self._sftp(sftp.makedirs(folder, exist_ok=True), f"making {folder}")
                await self._sftp(sftp.put(str(local), remote), f"uploading {local.name}")
        argv = [self.options.python, "-c", HASH_SCRIPT, *(remote for _, remote in pairs)]
        done = await self._exec(conn, argv, timeout, "hashing uploads", limit=HASH_LIMIT)
        if done.exit_status == COMMAND_NOT_FOUND:
            raise MissingPythonError(
                f"{self.where} has no {self.options.python!r}: install python3 (sudo apt-get "
                "install python3 python3-numpy) or set the python option to its path"
            )
        try:
            answer = HashAnswer.model_validate_json(done.stdout)
        except ValidationError:
            detail = (done.stderr.strip().splitlines() or ["no usable answer"])[-1][:300]
            raise UploadError(f"cannot hash uploads on {self.where}: {detail}") from None
        if tuple(answer.python) < MIN_PYTHON:
            found = ".".join(str(v) for v in answer.python)
            raise MissingPythonError(
                f"{self.where}: {self.options.python} is Python {found}; the runner needs 3.8 or "
                "later: install one (e.g. sudo apt-get install python3.8) and set the python option"
            )
        for local, remote in pairs:
            if answer.files.get(remote) != sha256_file(local):
                raise UploadError(
                    f"{local.name} arrived on {self.where} corrupted (sha256 differs)"
                )

    async def _attempt(self, jobs: list[Path], eval_set: Path | None, settings, state: dict):
        """One connection: every call bounded, the run folder removed on every way out."""
        self._transfer_s = settings.transfer_timeout_s
        with self._stage("talking to the board"):
            async with await self._connect(settings) as conn:
                sftp = await self._sftp(conn.start_sftp_client(), "starting SFTP")
                try:
                    with self._stage("preparing the run folder"):
                        for stale in list(state["stale"]):  # folders of attempts cut short
                            await self._remove(conn, sftp, stale)
                            state["stale"].remove(stale)
                        run_dir = await self._make_run_dir(conn, sftp, settings.command_timeout_s)
                    state["stale"].append(run_dir)
                    try:
                        info = await self._measure(
                            conn, sftp, run_dir, jobs, eval_set, settings, state
                        )
                    finally:
                        await self._remove(conn, sftp, run_dir)
                    state["stale"].remove(run_dir)
                finally:
                    sftp.exit()
        return info, [state["done"][folder] for folder in jobs]

    async def _make_run_dir(self, conn: Any, sftp: Any, timeout: float) -> str:
        """A new private folder under remote_root, once remote_root proves to be private too."""
        private = asyncssh.SFTPAttrs(permissions=0o700)
        remote_root = self.options.remote_root
        what = "preparing remote_root"
        await self._sftp(sftp.makedirs(remote_root, attrs=private, exist_ok=True), what)
        root = await self._sftp(sftp.realpath(remote_root), what)
        found = await self._sftp(sftp.stat(root), what)
        done = await self._exec(conn, ["id", "-u"], timeout, "reading the login user's id")
        mode = (found.permissions or 0) & 0o777
        if str(found.uid) != done.stdout.strip() or mode & 0o022:
            raise RemoteRootError(
                f"remote_root {root} on {self.where} (uid {found.uid}, mode {mode:o}) must belong "
                f"to {self.user} and be writable by no one else: run chown {self.user} {root} && "
                f"chmod go-w {root} on the board, or set remote_root to a folder of {self.user}'s"
            )
        run_dir = f"{root}/run-{uuid.uuid4().hex[:12]}"
        await self._sftp(sftp.mkdir(run_dir, attrs=private), what)
        await self._sftp(sftp.chmod(run_dir, 0o700), what)  # where mkdir's attrs are ignored
        return run_dir

    async def _exec_bounded(self, conn: Any, argv: list[str], timeout: float, what: str) -> Any:
        """Run argv under coreutils timeout: the board stops it itself, leaving nothing running."""
        argv = ["timeout", "-k", "5", f"{timeout:g}", *argv]
        done = await self._exec(conn, argv, timeout + 30, what)
        if done.exit_status in (TIMEOUT_EXPIRED, TIMEOUT_KILLED):
            raise TargetTimeoutError(
                f"{what} on {self.where} ran past {timeout:g} s: raise "
                "settings.command_timeout_s or shorten the timing settings"
            )
        return done

    async def _measure(self, conn, sftp, run_dir, jobs, eval_set, settings, state) -> TargetInfo:
        timeout = settings.command_timeout_s
        uploads = [(RUNNER_PATH, f"{run_dir}/runner.py")]
        if eval_set is not None:
            uploads.append((Path(eval_set), f"{run_dir}/eval.npz"))
        await self._upload(conn, sftp, uploads, timeout)
        argv = [self.options.python, f"{run_dir}/runner.py", "--describe"]
        done = await self._exec(conn, argv, timeout, "describing the board")
        out = read_runner_output(done.stdout, done.stderr, done.exit_status, self.where, argv[0])
        machine = machine_of(out, self.where)
        manifests = {folder: verify_artifact(folder) for folder in jobs}
        missing = {}
        if jobs:
            missing = check_runtimes(machine, {m.format for m in manifests.values()}, self.where)
        fields = await self.board_info(conn, timeout)
        if self.options.emulated and not machine.get("emulated"):
            named = self.options.emulated
            fields["emulated"] = named if isinstance(named, str) else "yes (board option)"
        info = info_from_machine(machine, self.name, self.kind, **fields)
        cache = self.options.engine_cache or f"{PurePosixPath(run_dir).parent}/engine-cache"
        for folder in jobs:  # no runtime for its format there: not runnable, not a failure
            if manifests[folder].format in missing:
                reason = missing[manifests[folder].format]
                state["done"][folder] = unrunnable_result(
                    self.name, folder.name, manifests[folder], reason, "skipped"
                )
        pending = [folder for folder in jobs if folder not in state["done"]]
        for group in by_backend([manifests[folder] for folder in pending]):
            folders = [pending[i] for i in group]  # one runner process per backend
            remotes = [f"{run_dir}/artifacts/{folder.name}" for folder in folders]
            uploads = [
                (f, f"{remote}/{f.name}")
                for folder, remote in zip(folders, remotes, strict=True)
                for f in artifact_paths(folder, manifests[folder])  # plain names, checked above
            ]  # one hashing call per group: a Python start can cost seconds on a slow board
            await self._upload(conn, sftp, uploads, timeout)
            extra = ["--engine-cache", cache, *self.runner_extra()]
            argv = runner_argv(
                self.options.python, f"{run_dir}/runner.py",
                [(remote, manifests[f]) for f, remote in zip(folders, remotes, strict=True)],
                f"{run_dir}/eval.npz", settings, extra,
            )  # fmt: skip
            what = f"measuring {', '.join(folder.name for folder in folders)}"
            done = await self._exec_bounded(conn, argv, group_timeout(settings, len(folders)), what)
            reports = read_runner_lines(
                done.stdout, done.stderr, done.exit_status, self.where, self.options.python,
                len(folders),
            )  # fmt: skip
            for folder, report in zip(folders, reports, strict=True):
                result = result_from_runner(
                    report, self.name, folder.name, manifests[folder], self.where
                )
                if result.verdict is None:  # measured (not an artifact's own failure)
                    await self.finish(conn, result, report, timeout)
                state["done"][folder] = result
        return info

    async def _with_retries(self, jobs: list[Path], eval_set: Path | None, settings):
        state: dict[str, Any] = {"done": {}, "stale": []}
        attempts, faults = settings.retries + 1, []
        for attempt in range(attempts):
            try:
                return await self._attempt(jobs, eval_set, settings, state)
            except _Fault as fault:
                faults.append(str(fault))
                if attempt + 1 < attempts:
                    await asyncio.sleep(settings.backoff_s * 2**attempt)
        story = faults[0] if faults[-1] == faults[0] else f"{faults[0]}; then {faults[-1]}"
        raise TargetUnreachableError(
            f"{story}; gave up after {attempts} attempt(s): check that the board is on and "
            "sshd runs, or raise settings.retries"
        )
