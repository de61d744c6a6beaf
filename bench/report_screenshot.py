"""Screenshot of a run's report as Prefect's UI shows it, with headless Chromium.

Starts a Prefect server on 127.0.0.1 (its own PREFECT_HOME), publishes the run's report as the
markdown artifact the pipeline publishes (plots embedded as data URIs), opens the artifact's
page in headless Chromium and writes a PNG. It then checks that the page received both plots as
decodable images (their data URIs are in the artifact as served by the API).

    python -m bench.report_screenshot --run runs/digits-one --out report-ui.png

Needs ``chromium`` (Debian: ``apt-get install chromium``). The server and Chromium are started
and stopped by the script.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the Prefect server exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def publish(run_dir: Path, api: str) -> str:
    """Create the report artifact on the server at ``api``; its id."""
    os.environ["PREFECT_API_URL"] = api
    from prefect.artifacts import create_markdown_artifact

    from pipeline.config import load_config
    from pipeline.report.document import write_report
    from pipeline.run_folder import RunFolder, slug

    run = RunFolder(run_dir.resolve())
    config = load_config(run.config)
    files = write_report(config, run)
    artifact_id = create_markdown_artifact(
        key=f"report-{slug(config.name)}",
        markdown=files.ui_markdown,
        description=f"onedge report of {config.name} ({run.root})",
    )
    return str(artifact_id)


def check_images(api: str, artifact_id: str) -> int:
    """How many embedded PNGs the served artifact holds (each must decode as a PNG)."""
    import requests

    data = requests.get(f"{api}/artifacts/{artifact_id}", timeout=10).json()["data"]
    uris = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", data)
    for uri in uris:
        if not base64.b64decode(uri).startswith(b"\x89PNG\r\n\x1a\n"):
            raise SystemExit("an embedded image is not a PNG")
    return len(uris)


def screenshot(url: str, out: Path, browser: str) -> None:
    with tempfile.TemporaryDirectory(prefix="onedge-chromium-") as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={profile}",
                "--hide-scrollbars",
                "--window-size=1400,2200",
                "--virtual-time-budget=20000",
                f"--screenshot={out}",
                url,
            ],  # fmt: skip
            check=True,
            timeout=180,
            capture_output=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="pipeline run folder")
    parser.add_argument("--out", type=Path, default=Path("report-ui.png"))
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium is not installed (Debian: apt-get install chromium)")
    port = free_port()
    home = tempfile.mkdtemp(prefix="onedge-prefect-home-")
    env = {
        **os.environ,
        "PREFECT_HOME": home,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
    }
    prefect = str(Path(sys.executable).parent / "prefect")
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(f"{api}/health", server)
        artifact_id = publish(args.run, api)
        images = check_images(api, artifact_id)
        screenshot(f"http://127.0.0.1:{port}/artifacts/artifact/{artifact_id}", args.out, browser)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)
    print(f"{args.out}: the report artifact {artifact_id} with {images} embedded plots")


if __name__ == "__main__":
    main()
