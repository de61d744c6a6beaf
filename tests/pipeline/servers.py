"""Server processes the tests start and stop themselves, on 127.0.0.1 and a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent
MLFLOW = str(BIN / "mlflow")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}: {tail(log)}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s: {tail(log)}")


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.is_file() else ""


@contextmanager
def started(
    argv: list[str], env: dict[str, str], ready_url: str, log: Path, timeout: float = 180.0
) -> Iterator[subprocess.Popen]:
    """``mlflow <argv>`` in its own process group until the block ends; ready at ``ready_url``."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [MLFLOW, *argv],
            # the venv's bin first: the servers start uvicorn and gunicorn by name
            env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the server's workers go with it
        )
    try:
        wait_for(ready_url, proc, log, timeout)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError):  # workers left behind
        os.killpg(proc.pid, signal.SIGKILL)


def stopped(proc: subprocess.Popen) -> bool:
    return proc.poll() is not None


@contextmanager
def mlflow_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking and registry URI set to ``uri`` within the block.

    ``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI (which ``onedge promote`` reads),
    so both the globals and the environment are put back exactly as they were.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    environ = {name: os.environ.get(name) for name in names}
    before = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
        for name, value in environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
