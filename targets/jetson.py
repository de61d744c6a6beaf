"""The ``jetson`` target: an SSH board plus what a Jetson adds to a measurement.

On top of the ``ssh`` target it records the L4T release (/etc/nv_tegra_release), the power
mode (``nvpmodel -q``), whether clocks are locked (``jetson_clocks`` sets every CPU's and the
GPU's minimum frequency to its maximum), samples ``tegrastats`` in the background during the
timed runs (power, RAM, GPU load), and runs TensorRT artifacts, whose engines the runner builds
on the board. With ``trtexec`` configured, each engine is also timed by trtexec as a cross-check.
The parsers live in :mod:`targets.tegra` and are tested on real lines from five boards; the
board-side commands follow NVIDIA's documentation and have not been run by onedge's tests.
"""

from __future__ import annotations

import json

from pydantic import Field

from targets.base import TARGETS, ArtifactResult
from targets.errors import TargetError
from targets.ssh import SshTarget
from targets.ssh_connection import SshOptions
from targets.ssh_session import SshSession
from targets.tegra import (
    TegraParseError,
    parse_l4t_release,
    parse_nvpmodel,
    parse_trtexec_summary,
    summarize_tegrastats,
)

# Runs on the board with its python3: reads what a Jetson says about itself, as JSON.
BOARD_PROBE = r"""
import glob, json, os, subprocess
def read(path):
    try:
        with open(path) as handle:
            return handle.read().replace('\x00', '').strip()
    except OSError:
        return None
def run(argv):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return done.stdout + done.stderr
    except (OSError, subprocess.SubprocessError) as exc:
        return None
cpus = {}
for folder in sorted(glob.glob('/sys/devices/system/cpu/cpu[0-9]*/cpufreq')):
    cpus[folder.split('/')[-2]] = [read(folder + '/scaling_min_freq'),
                                   read(folder + '/scaling_max_freq')]
gpus = {}
for folder in sorted(glob.glob('/sys/class/devfreq/*')):
    name = os.path.basename(os.path.realpath(folder))
    if any(tag in name for tag in ('gpu', 'gv11b', 'gp10b', 'gm20b', 'ga10b')):
        gpus[name] = [read(folder + '/min_freq'), read(folder + '/max_freq')]
print(json.dumps({'release': read('/etc/nv_tegra_release'), 'nvpmodel': run(['nvpmodel', '-q']),
                  'cpufreq': cpus, 'gpufreq': gpus}))
"""


class JetsonOptions(SshOptions):
    tegrastats: str = "tegrastats"
    tegrastats_interval_ms: int = Field(200, ge=10)
    trtexec: str | None = Field(
        None, description="e.g. /usr/src/tensorrt/bin/trtexec: cross-check engines with it"
    )


def clocks_locked(cpufreq: dict[str, list], gpufreq: dict[str, list]) -> bool | None:
    """True when every CPU and GPU runs with its minimum frequency raised to its maximum."""
    pairs = [p for p in [*cpufreq.values(), *gpufreq.values()] if None not in p]
    if not pairs:
        return None
    return all(low == high for low, high in pairs)


@TARGETS.register("jetson")
class JetsonTarget(SshTarget):
    """Runs ONNX and TensorRT artifacts on an NVIDIA Jetson over SSH."""

    kind = "jetson"
    formats = ("onnx", "tensorrt")
    options_type = JetsonOptions

    def runner_extra(self) -> list[str]:
        interval = str(self.options.tegrastats_interval_ms)
        # tegrastats writes through stdio: line-buffer it so no sample is lost at the end
        argv = ["stdbuf", "-oL", self.options.tegrastats, "--interval", interval]
        return ["--monitor-cmd", json.dumps(argv)]

    async def board_info(self, session: SshSession, timeout: float) -> dict:
        argv = [self.options.python, "-c", BOARD_PROBE]
        done = await session.exec(argv, timeout, "reading the Jetson's state")
        try:
            probe = json.loads(done.stdout)
            if not isinstance(probe, dict):
                raise ValueError("not an object")
            probe.setdefault("cpufreq", {})
            probe.setdefault("gpufreq", {})
            if not all(isinstance(probe[k], dict) for k in ("cpufreq", "gpufreq")):
                raise ValueError("frequencies are not objects")
        except ValueError:
            detail = (done.stderr.strip().splitlines() or ["no usable answer"])[-1][:300]
            raise TargetError(f"cannot read the board state on {self.where}: {detail}") from None
        if not probe.get("release"):
            raise TargetError(
                f"{self.where} has no /etc/nv_tegra_release, so it is no Jetson: use "
                f"ssh://{self.where} (the plain ssh target) for it"
            )
        power_mode = None
        try:
            name, ident = parse_nvpmodel(probe.get("nvpmodel") or "")
            power_mode = name if ident is None else f"{name} (mode {ident})"
        except TegraParseError:
            pass  # nvpmodel missing or not readable: reported as unknown
        return {
            "l4t": parse_l4t_release(probe["release"]),
            "power_mode": power_mode,
            "clocks_locked": clocks_locked(probe["cpufreq"], probe["gpufreq"]),
            "gpu": ", ".join(probe["gpufreq"]) or None,
            "extra": {"nvpmodel": probe.get("nvpmodel"), "cpufreq": probe["cpufreq"],
                      "gpufreq": probe["gpufreq"]},
        }  # fmt: skip

    async def finish(
        self, session: SshSession, result: ArtifactResult, report: dict, timeout: float
    ) -> None:
        monitor = report.get("monitor") or {}
        result.extra["tegrastats"] = summarize_tegrastats(monitor.get("lines", []))
        if monitor.get("error"):
            result.extra["tegrastats"]["error"] = monitor["error"]
        engine = report.get("backend_info", {}).get("engine_path")
        if not (self.options.trtexec and engine):
            return
        shape = "x".join(str(d) for d in result.input_shape or [])
        name = report["backend_info"].get("input_name", "input")
        argv = [self.options.trtexec, f"--loadEngine={engine}", f"--shapes={name}:{shape}"]
        done = await session.run(argv, timeout, f"trtexec on {result.artifact}")
        try:
            result.extra["trtexec"] = parse_trtexec_summary(done.stdout).model_dump()
        except TegraParseError:
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:]
            result.extra["trtexec"] = {"error": f"trtexec gave no summary: {tail}"}
