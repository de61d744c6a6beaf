"""The ssh and jetson targets against a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import os
import pwd
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from targets import (
    HostKeyError,
    JetsonTarget,
    MissingPythonError,
    MissingRuntimeError,
    RemoteRootError,
    SshOptions,
    SshTarget,
    TargetAuthError,
    TargetError,
    TargetTimeoutError,
    TargetUnreachableError,
    ValidationSettings,
    parse_target,
    validate_artifacts,
)
from tests.targets.sshd_server import SshServer, free_port, keygen, start_server

pytestmark = pytest.mark.ssh


def url(server: SshServer, kind: str = "") -> str:
    return f"ssh://{server.user}@127.0.0.1:{server.port}{kind}"


def with_options(options: SshOptions, **changes: object) -> SshOptions:
    return options.model_copy(update=changes)


def test_ssh_target_measures_like_local_cpu(
    export_dir: Path, sshd: SshServer, ssh_options: SshOptions, tmp_path: Path, fast
) -> None:
    local = validate_artifacts(export_dir, "local-cpu", tmp_path / "local", fast)
    target = parse_target(url(sshd), options=ssh_options)
    remote = validate_artifacts(export_dir, target, tmp_path / "ssh", fast)
    assert (tmp_path / "ssh" / "report.json").is_file()
    for name in ("onnx-fp32", "openvino-fp32"):
        here, there = local.result(name), remote.result(name)
        assert there.target == target.name == url(sshd, "/ssh")
        assert (there.top1, there.agreement) == (here.top1, here.agreement)
        assert there.top1 > 0.9 and there.sha256 == here.sha256
        assert there.latency_ms.p50 <= there.latency_ms.p99 and there.verdict == "pass"
    assert remote.result("tensorrt-fp16").verdict == "skipped"
    assert remote.target_info.kind == "ssh" and remote.target_info.cores >= 1
    assert remote.target_info.runtimes["onnxruntime"]
    remote_root = Path(ssh_options.remote_root)
    assert remote_root.is_dir() and list(remote_root.iterdir()) == []  # run folder removed


def test_changed_host_key_is_refused(
    sshd: SshServer, ssh_options: SshOptions, tmp_path: Path, export_dir: Path, fast
) -> None:
    other = keygen(tmp_path / "other_host_key")
    known = tmp_path / "changed_known_hosts"
    known.write_text(sshd.known_hosts_line(other.with_suffix(".pub")))
    target = SshTarget.from_spec(url(sshd), options=with_options(ssh_options, known_hosts=known))
    with pytest.raises(HostKeyError, match="changed") as caught:
        validate_artifacts(export_dir, target, tmp_path / "out", fast)
    assert sshd.host_fingerprint in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_unknown_host_key_is_refused(sshd: SshServer, ssh_options: SshOptions, tmp_path: Path):
    options = with_options(ssh_options, known_hosts=tmp_path / "absent_known_hosts")
    with pytest.raises(HostKeyError, match="is not in") as caught:
        SshTarget.from_spec(url(sshd), options=options).describe()
    assert sshd.host_fingerprint in str(caught.value)


def test_pinned_fingerprint_admits_an_unknown_or_changed_key(
    sshd: SshServer, ssh_options: SshOptions, tmp_path: Path
) -> None:
    pinned = with_options(
        ssh_options, known_hosts=tmp_path / "absent", fingerprint=sshd.host_fingerprint
    )
    info = SshTarget.from_spec(url(sshd), options=pinned).describe()
    assert info.kind == "ssh" and info.python and info.runtimes["numpy"]
    wrong = with_options(pinned, fingerprint="SHA256:" + "A" * 43)
    with pytest.raises(HostKeyError, match="does not match"):
        SshTarget.from_spec(url(sshd), options=wrong).describe()


def test_failed_authentication_is_not_retried(
    sshd: SshServer, ssh_options: SshOptions, tmp_path: Path, export_dir: Path
) -> None:
    stranger = keygen(tmp_path / "stranger_key")
    target = SshTarget.from_spec(url(sshd), options=with_options(ssh_options, key=stranger))
    patient = ValidationSettings(retries=3, backoff_s=5.0, connect_timeout_s=5)
    start = time.monotonic()
    with pytest.raises(TargetAuthError, match="authorized_keys"):
        validate_artifacts(export_dir, target, tmp_path / "out", patient)
    assert time.monotonic() - start < 5.0  # no backoff sleep: auth failures are final


def test_unreachable_board_fails_after_the_retries(
    ssh_options: SshOptions, tmp_path: Path, export_dir: Path
) -> None:
    target = SshTarget("127.0.0.1", "root", free_port(), ssh_options)
    settings = ValidationSettings(retries=2, backoff_s=0.2, connect_timeout_s=2)
    start = time.monotonic()
    with pytest.raises(TargetUnreachableError, match=r"gave up after 3 attempt\(s\)") as caught:
        validate_artifacts(export_dir, target, tmp_path / "out", settings)
    assert "cannot connect" in str(caught.value)
    assert time.monotonic() - start >= 0.2 + 0.4  # backoff doubled between the attempts
    assert not (tmp_path / "out").exists()


def test_server_stopped_mid_run_gives_a_clear_error_and_no_report(
    export_dir: Path, ssh_options: SshOptions, tmp_path: Path
) -> None:
    server = start_server(tmp_path / "doomed-sshd")
    options = with_options(ssh_options, known_hosts=tmp_path / "kh", key=server.user_key)
    (tmp_path / "kh").write_text(server.known_hosts_line())
    settings = ValidationSettings(
        warmup_seconds=0.05, warmup_calls=5, timed_seconds=20.0, timed_calls=10,
        retries=2, backoff_s=0.1, connect_timeout_s=2, command_timeout_s=60,
    )  # fmt: skip
    out = tmp_path / "out"
    outcome: dict[str, BaseException] = {}

    def validate() -> None:
        try:
            validate_artifacts(
                export_dir, parse_target(url(server), options=options), out, settings
            )
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=validate)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        remote_root = Path(options.remote_root)
        while not list(remote_root.glob("run-*/artifacts/*/manifest.json")):
            assert time.monotonic() < deadline and worker.is_alive(), outcome
            time.sleep(0.05)
        (run_dir,) = remote_root.glob("run-*")
        assert run_dir.stat().st_mode & 0o777 == 0o700  # private to the login user
        while not measuring(run_dir):  # the runner process is timing the artifact
            assert time.monotonic() < deadline and worker.is_alive(), outcome
            time.sleep(0.05)
    finally:
        server.kill()
    worker.join(timeout=60)
    assert not worker.is_alive()
    error = outcome.get("error")
    assert isinstance(error, TargetUnreachableError), error
    assert "lost the connection" in str(error) and "while measuring" in str(error)
    assert "gave up after 3 attempt(s)" in str(error)
    assert not out.exists()  # no report, not even a partial one


def test_command_timeout_is_a_clear_error(
    export_dir: Path, sshd: SshServer, ssh_options: SshOptions, tmp_path: Path
) -> None:
    slow = ValidationSettings(timed_seconds=30.0, command_timeout_s=1.5, backoff_s=5.0)
    target = parse_target(url(sshd), options=ssh_options)
    start = time.monotonic()
    with pytest.raises(TargetTimeoutError, match="command_timeout_s"):
        validate_artifacts(export_dir / "onnx-fp32", target, tmp_path / "out", slow,
                           eval_set=export_dir / "eval.npz")  # fmt: skip
    assert time.monotonic() - start < 20.0
    assert processes_mentioning(str(tmp_path)) == []  # the board stopped the runner too


def measuring(run_dir: Path) -> bool:
    """A runner process of this run folder is running with artifacts to time."""
    runner = f"{run_dir.resolve()}/runner.py".encode()
    for pid in processes_mentioning(runner.decode()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if runner in argv and b"--artifact" in argv:
            return True
    return False


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_board_without_python_names_what_to_install(
    sshd: SshServer, ssh_options: SshOptions
) -> None:
    options = with_options(ssh_options, python="/opt/no-such/python3")
    with pytest.raises(MissingPythonError, match="apt-get install python3"):
        SshTarget.from_spec(url(sshd), options=options).describe()


def test_board_without_the_runtime_names_what_to_install(
    export_dir: Path, sshd: SshServer, ssh_options: SshOptions, numpy_only_python: str,
    tmp_path: Path, fast: ValidationSettings,
) -> None:  # fmt: skip
    options = with_options(ssh_options, python=numpy_only_python)
    with pytest.raises(
        MissingRuntimeError, match="lacks the Python library onnxruntime.*pip install onnxruntime"
    ):
        validate_artifacts(export_dir, parse_target(url(sshd), options=options), tmp_path, fast)
    assert list(Path(options.remote_root).iterdir()) == []


def test_jetson_target_refuses_a_board_that_is_no_jetson(
    sshd: SshServer, ssh_options: SshOptions
) -> None:
    target = parse_target(url(sshd, "/jetson"), options=ssh_options)
    assert isinstance(target, JetsonTarget)
    with pytest.raises(TargetError, match="nv_tegra_release"):
        target.describe()


@pytest.mark.parametrize("change", ["world-writable", "group-writable", "other owner"])
def test_remote_root_others_may_change_is_refused(
    sshd: SshServer, ssh_options: SshOptions, change: str
) -> None:
    root = Path(ssh_options.remote_root)
    root.mkdir(mode=0o700)
    if change == "other owner":
        os.chown(root, 65534, -1)  # the tests run as root: give it to nobody
    else:
        root.chmod(0o777 if change == "world-writable" else 0o770)
    with pytest.raises(RemoteRootError, match=f"chown {sshd.user} {root} && chmod go-w"):
        SshTarget.from_spec(url(sshd), options=ssh_options).describe()
    assert list(root.iterdir()) == []  # no run folder made in it


def test_default_remote_root_lies_in_the_login_home(
    sshd: SshServer, ssh_options: SshOptions
) -> None:
    assert SshOptions().remote_root == ".cache/onedge"  # relative: SFTP starts at the home
    relative = f".cache/onedge-test-{uuid.uuid4().hex[:8]}"
    made = Path(pwd.getpwnam(sshd.user).pw_dir) / relative
    try:
        target = SshTarget.from_spec(
            url(sshd), options=with_options(ssh_options, remote_root=relative)
        )
        assert target.describe().kind == "ssh"
        assert made.is_dir() and made.stat().st_mode & 0o777 == 0o700
        assert list(made.iterdir()) == []
    finally:
        shutil.rmtree(made, ignore_errors=True)
