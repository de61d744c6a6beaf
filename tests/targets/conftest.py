from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import pytest

from targets import SshOptions, ValidationSettings
from tests.targets.digits_artifacts import build_export
from tests.targets.sshd_server import SshServer, start_server

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real export: onnx-fp32, openvino-fp32, tensorrt-fp16 and eval.npz (read-only use)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_export(tmp_path_factory.mktemp("export"))


@pytest.fixture
def export_copy(export_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the export, for tests that change it."""
    return Path(shutil.copytree(export_dir, tmp_path / "export"))


@pytest.fixture
def fast() -> ValidationSettings:
    """Short timing so the suite stays quick; the protocol is the same."""
    return ValidationSettings(
        warmup_seconds=0.05,
        warmup_calls=5,
        timed_seconds=0.2,
        timed_calls=50,
        throughput_calls=5,
        batch_size=16,
        threads=1,
        connect_timeout_s=5,
        command_timeout_s=120,
        retries=2,
        backoff_s=0.1,
    )


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    server = start_server(tmp_path_factory.mktemp("sshd"))
    yield server
    server.kill()


@pytest.fixture
def ssh_options(sshd: SshServer, tmp_path: Path) -> SshOptions:
    """Options that trust exactly this server's host key and use the test user key."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line())
    return SshOptions(
        known_hosts=known_hosts,
        key=sshd.user_key,
        python=sys.executable,  # the board's python3, here this venv's
        remote_root=str(tmp_path / "remote"),
    )


@pytest.fixture(scope="session")
def numpy_only_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real Python with numpy but no inference runtime: a board that lacks onnxruntime."""
    import subprocess
    import sysconfig

    import numpy

    env = tmp_path_factory.mktemp("bare-python")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    source = Path(numpy.__file__).parent.parent
    for name in ("numpy", "numpy.libs"):
        if (source / name).exists():
            (Path(site) / name).symlink_to(source / name)
    assert sysconfig.get_paths()["purelib"] != site
    return str(python)
