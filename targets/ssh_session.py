"""The SSH target's transport: a session over one verified connection to a board.

Each session works in its own folder (mode 0700) under ``remote_root`` (by default
``~/.cache/onedge``), removed afterwards; a remote_root that another user owns or may write to
is refused. Every uploaded file is hashed on the board and compared. Commands are argv lists
joined with ``shlex`` quoting; every command and every SFTP call is bounded in time, and what a
command prints is bounded in size. The connection itself (host keys, authentication, faults and
retries) is :mod:`targets.ssh_connection`.
"""

from __future__ import annotations

import asyncio
import shlex
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import asyncssh
from pydantic import BaseModel, Field, ValidationError

from export.manifest import Manifest, artifact_paths, sha256_file, verify_artifact
from targets.base import ValidationSettings
from targets.errors import (
    MissingPythonError,
    RemoteRootError,
    RunnerFailedError,
    TargetTimeoutError,
    UploadError,
)
from targets.protocol import RunnerOutput
from targets.runs import COMMAND_NOT_FOUND, RUNNER_PATH
from targets.ssh_connection import Fault, SshOptions, connect, faults_named

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
T = TypeVar("T")


class HashAnswer(BaseModel):
    """What HASH_SCRIPT prints: the board's Python version and each uploaded file's sha256."""

    python: list[int] = Field(min_length=2, max_length=3)
    files: dict[str, str]


class SshSession:
    """One SSH connection to a board, its SFTP client and its private run folder.

    The SSH target's transport (:class:`targets.protocol.Transport`): every command is bounded
    by a timeout and an output limit, every SFTP call by ``settings.transfer_timeout_s``.
    """

    def __init__(
        self, conn: Any, where: str, options: SshOptions, settings: ValidationSettings
    ) -> None:
        self.conn, self.where, self.options, self.settings = conn, where, options, settings
        self.python = options.python
        self.sftp: Any = None
        self.run_dir = ""

    @property
    def runner(self) -> str:
        return f"{self.run_dir}/runner.py"

    @property
    def data(self) -> str:
        return f"{self.run_dir}/eval.npz"

    # --- the transport ---
    def manifest(self, folder: Path) -> Manifest:
        """Read and verified here: what is copied to the board is what the manifest lists."""
        return verify_artifact(folder)

    async def describe(self) -> RunnerOutput:
        argv = [self.python, self.runner, "--describe"]
        return await self.exec(argv, self.settings.command_timeout_s, "describing the board")

    async def put(self, folders: Sequence[Path], manifests: Sequence[Manifest]) -> list[str]:
        """Upload the artifacts into the run folder, with one hashing call for them all (a
        Python start can cost seconds on a slow board); their folders there."""
        remotes = [f"{self.run_dir}/artifacts/{folder.name}" for folder in folders]
        uploads = [
            (f, f"{remote}/{f.name}")
            for folder, manifest, remote in zip(folders, manifests, remotes, strict=True)
            for f in artifact_paths(folder, manifest)  # plain names, checked by the manifest
        ]
        await self.upload(uploads)
        return remotes

    async def run(self, argv: list[str], timeout: float, what: str) -> RunnerOutput:
        """Run argv under coreutils timeout: the board stops it itself, leaving nothing running."""
        argv = ["timeout", "-k", "5", f"{timeout:g}", *argv]
        done = await self.exec(argv, timeout + 30, what)
        if done.status in (TIMEOUT_EXPIRED, TIMEOUT_KILLED):
            raise TargetTimeoutError(
                f"{what} on {self.where} ran past {timeout:g} s: raise "
                "settings.command_timeout_s or shorten the timing settings"
            )
        return done

    # --- commands and SFTP calls, each bounded ---
    async def exec(
        self, argv: list[str], timeout: float, what: str, limit: int = OUTPUT_LIMIT
    ) -> RunnerOutput:
        """Run argv, reading at most ``limit`` bytes of stdout and of stderr, within ``timeout``."""
        with faults_named(self.where, what):
            process = None
            try:
                async with asyncio.timeout(timeout):
                    process = await self.conn.create_process(shlex.join(argv), encoding=None)
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
        if status.exit_status is None and status.exit_signal is None:  # the channel died
            raise Fault(f"lost the connection to {self.where} while {what}", EOFError("closed"))
        return RunnerOutput(
            out.decode(errors="replace"), err.decode(errors="replace"), status.exit_status
        )

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

    async def sftp_call(self, call: Awaitable[T], what: str) -> T:
        """One SFTP call, bounded by settings.transfer_timeout_s: a silent board cannot hang it."""
        bound = self.settings.transfer_timeout_s
        try:
            async with asyncio.timeout(bound):
                return await call
        except TimeoutError:
            raise TargetTimeoutError(
                f"{self.where} did not answer SFTP within {bound:g} s while {what}: "
                "check the board (disk full, sftp-server stuck) or raise "
                "settings.transfer_timeout_s"
            ) from None

    # --- files ---
    async def upload(self, pairs: list[tuple[Path, str]]) -> None:
        """Copy each (local, remote) pair, then check every sha256 on the board."""
        with faults_named(self.where, "uploading"):
            for local, remote in pairs:
                folder = str(PurePosixPath(remote).parent)
                await self.sftp_call(self.sftp.makedirs(folder, exist_ok=True), f"making {folder}")
                await self.sftp_call(self.sftp.put(str(local), remote), f"uploading {local.name}")
        argv = [self.python, "-c", HASH_SCRIPT, *(remote for _, remote in pairs)]
        timeout = self.settings.command_timeout_s
        done = await self.exec(argv, timeout, "hashing uploads", limit=HASH_LIMIT)
        answer = self._hash_answer(done)
        for local, remote in pairs:
            if answer.files.get(remote) != sha256_file(local):
                raise UploadError(
                    f"{local.name} arrived on {self.where} corrupted (sha256 differs)"
                )

    def _hash_answer(self, done: RunnerOutput) -> HashAnswer:
        """HASH_SCRIPT's answer, checked; a typed error naming the Python the board lacks."""
        if done.status == COMMAND_NOT_FOUND:
            raise MissingPythonError(
                f"{self.where} has no {self.python!r}: install python3 (sudo apt-get "
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
                f"{self.where}: {self.python} is Python {found}; the runner needs 3.8 or "
                "later: install one (e.g. sudo apt-get install python3.8) and set the python option"
            )
        return answer

    async def upload_runner(self, eval_set: Path | None) -> None:
        """The runner, and the eval set when there is one, into the run folder."""
        uploads = [(RUNNER_PATH, self.runner)]
        if eval_set is not None:
            uploads.append((Path(eval_set), self.data))
        await self.upload(uploads)

    async def make_run_dir(self) -> str:
        """A new private folder under remote_root, once remote_root proves to be private too."""
        private = asyncssh.SFTPAttrs(permissions=0o700)
        remote_root, sftp = self.options.remote_root, self.sftp
        what = "preparing remote_root"
        await self.sftp_call(sftp.makedirs(remote_root, attrs=private, exist_ok=True), what)
        root = await self.sftp_call(sftp.realpath(remote_root), what)
        found = await self.sftp_call(sftp.stat(root), what)
        timeout = self.settings.command_timeout_s
        done = await self.exec(["id", "-u"], timeout, "reading the login user's id")
        mode = (found.permissions or 0) & 0o777
        if str(found.uid) != done.stdout.strip() or mode & 0o022:
            user = self.where.rpartition("@")[0]
            raise RemoteRootError(
                f"remote_root {root} on {self.where} (uid {found.uid}, mode {mode:o}) must belong "
                f"to {user} and be writable by no one else: run chown {user} {root} && "
                f"chmod go-w {root} on the board, or set remote_root to a folder of {user}'s"
            )
        run_dir = f"{root}/run-{uuid.uuid4().hex[:12]}"
        await self.sftp_call(sftp.mkdir(run_dir, attrs=private), what)
        await self.sftp_call(sftp.chmod(run_dir, 0o700), what)  # where mkdir's attrs are ignored
        return run_dir

    async def remove(self, run_dir: str) -> None:
        """Remove a run folder: over SFTP, or else with rm; bounded, never raising."""
        if self.sftp is not None:
            with suppress(Exception):
                await self.sftp_call(
                    self.sftp.rmtree(run_dir, ignore_errors=True), "removing the run folder"
                )
                return
        bound = self.settings.transfer_timeout_s
        with suppress(Exception):
            await self.exec(["rm", "-rf", "--", run_dir], bound, "removing")


@asynccontextmanager
async def open_session(
    host: str, port: int, user: str, options: SshOptions, settings: ValidationSettings,
    stale: list[str],
) -> AsyncIterator[SshSession]:  # fmt: skip
    """One connection with a fresh run folder, removed on every way out.

    ``stale`` lists the run folders of earlier attempts cut short: they are removed first, and
    this one stays listed until it is gone.
    """
    where = f"{user}@{host}:{port}"
    with faults_named(where, "talking to the board"):
        async with await connect(host, port, user, options, settings) as conn:
            session = SshSession(conn, where, options, settings)
            session.sftp = await session.sftp_call(conn.start_sftp_client(), "starting SFTP")
            try:
                with faults_named(where, "preparing the run folder"):
                    for folder in list(stale):
                        await session.remove(folder)
                        stale.remove(folder)
                    session.run_dir = await session.make_run_dir()
                stale.append(session.run_dir)
                try:
                    yield session
                finally:
                    await session.remove(session.run_dir)
                stale.remove(session.run_dir)
            finally:
                session.sftp.exit()
