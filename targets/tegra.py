"""Parsers for what Jetson boards print: tegrastats lines, trtexec summaries, L4T, nvpmodel.

tegrastats formats differ by board generation: older BSPs print power as ``POM_5V_IN cur/avg``
without units and ``GR3D_FREQ 0%@76``; newer ones ``VDD_IN 2763mW/2846mW`` and
``GR3D_FREQ 0%@[114]``, sometimes after a date stamp. AGX Orin has no single input rail; its
board power is VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0.
"""

from __future__ import annotations

import re
from statistics import fmean

from pydantic import BaseModel, Field

from onedge.errors import OnedgeError


class TegraParseError(OnedgeError):
    """A line or summary is not in any format this parser knows."""


class TegrastatsSample(BaseModel):
    timestamp: str | None = None
    ram_used_mb: int
    ram_total_mb: int
    swap_used_mb: int | None = None
    swap_total_mb: int | None = None
    cpu_load: list[float | None] = Field(default_factory=list)  # None: core off
    cpu_freq_mhz: list[int | None] = Field(default_factory=list)
    gpu_load: float | None = None
    gpu_freq_mhz: list[int] = Field(default_factory=list)
    emc_load: float | None = None
    temperatures_c: dict[str, float] = Field(default_factory=dict)
    rails_mw: dict[str, tuple[int, int]] = Field(default_factory=dict)  # name -> (now, average)
    power_mw: int | None = None  # board input power now


INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
ORIN_RAILS = ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0")
_STAMP = re.compile(r"^(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s+")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB\b")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB\b")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CORE = re.compile(r"^(\d+(?:\.\d+)?)%(?:@(\d+))?$")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+(?:\.\d+)?)%(?:@\[?([\d,]+)\]?)?")
_EMC = re.compile(r"\bEMC_FREQ (\d+(?:\.\d+)?)%")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_TEMP = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
SENSOR_OFF = -256.0


def parse_tegrastats_line(line: str) -> TegrastatsSample:
    text = line.strip()
    ram = _RAM.search(text)
    if ram is None:
        raise TegraParseError(f"not a tegrastats line (no RAM field): {text[:80]!r}")
    stamp = _STAMP.match(text)
    sample = TegrastatsSample(
        timestamp=stamp.group(1) if stamp else None,
        ram_used_mb=int(ram.group(1)),
        ram_total_mb=int(ram.group(2)),
    )
    if swap := _SWAP.search(text):
        sample.swap_used_mb, sample.swap_total_mb = int(swap.group(1)), int(swap.group(2))
    if cpu := _CPU.search(text):
        for core in cpu.group(1).split(","):
            match = _CORE.match(core.strip())
            if core.strip() == "off" or match is None:
                sample.cpu_load.append(None)
                sample.cpu_freq_mhz.append(None)
            else:
                sample.cpu_load.append(float(match.group(1)))
                sample.cpu_freq_mhz.append(int(match.group(2)) if match.group(2) else None)
    if gpu := _GR3D.search(text):
        sample.gpu_load = float(gpu.group(1))
        sample.gpu_freq_mhz = [int(f) for f in (gpu.group(2) or "").split(",") if f]
    if emc := _EMC.search(text):
        sample.emc_load = float(emc.group(1))
    for name, value in _TEMP.findall(text):
        if float(value) != SENSOR_OFF:
            sample.temperatures_c[name] = float(value)
    for name, now, average in _RAIL.findall(text):
        if name not in ("RAM", "SWAP", "IRAM", "NC"):
            sample.rails_mw[name] = (int(now), int(average))
    sample.power_mw = board_power(sample.rails_mw)
    return sample


def board_power(rails: dict[str, tuple[int, int]]) -> int | None:
    for name in INPUT_RAILS:
        if name in rails:
            return rails[name][0]
    if all(name in rails for name in ORIN_RAILS):
        return sum(rails[name][0] for name in ORIN_RAILS)
    return None


def summarize_tegrastats(lines: list[str]) -> dict:
    """Mean and peak power, peak RAM, GPU and CPU load over the lines sampled while timing."""
    samples, bad = [], 0
    for line in lines:
        try:
            samples.append(parse_tegrastats_line(line))
        except TegraParseError:
            bad += 1
    power = [s.power_mw for s in samples if s.power_mw is not None]
    gpu = [s.gpu_load for s in samples if s.gpu_load is not None]
    cpu = [c for s in samples for c in s.cpu_load if c is not None]
    return {
        "samples": len(samples),
        "unparsed_lines": bad,
        "power_mw_mean": fmean(power) if power else None,
        "power_mw_max": max(power) if power else None,
        "ram_used_mb_max": max((s.ram_used_mb for s in samples), default=None),
        "ram_total_mb": samples[0].ram_total_mb if samples else None,
        "gpu_load_mean": fmean(gpu) if gpu else None,
        "gpu_load_max": max(gpu) if gpu else None,
        "cpu_load_mean": fmean(cpu) if cpu else None,
    }


class TrtexecSummary(BaseModel):
    throughput_qps: float | None = None
    sections: dict[str, dict[str, float]] = Field(default_factory=dict)  # name -> stat -> ms
    host_walltime_s: float | None = None
    total_gpu_compute_s: float | None = None
    passed: bool | None = None
    tensorrt_version: str | None = None


_SECTIONS = {
    "latency": "latency",
    "host latency": "latency",
    "end-to-end host latency": "end_to_end",
    "enqueue time": "enqueue",
    "h2d latency": "h2d",
    "gpu compute time": "gpu_compute",
    "gpu compute": "gpu_compute",
    "d2h latency": "d2h",
}
_TOTALS = {
    "total host walltime": "host_walltime_s",
    "walltime": "host_walltime_s",
    "total gpu compute time": "total_gpu_compute_s",
    "total compute time": "total_gpu_compute_s",
}
_PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)*")  # [02/26/2024-10:43:06] [I]
_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\)) = ([\d.]+) ms")
_OLD_STAT = re.compile(r"^(min|max|mean|median): ([\d.]+) ms$")
_OLD_PCT = re.compile(r"^percentile: ([\d.]+) ms at (\d+(?:\.\d+)?)%$")
_RESULT = re.compile(r"^&&&& (PASSED|FAILED) TensorRT\.trtexec(?: \[TensorRT v(\d+)\])?")


def _stat_name(word: str, pct: str | None) -> str:
    return f"p{pct.rstrip('0').rstrip('.') if '.' in pct else pct}" if pct else word


def tensorrt_version(code: str) -> str:
    """trtexec's ``v8502`` -> 8.5.2, ``v100300`` -> 10.3.0."""
    n = int(code)
    if n >= 100000:
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def parse_trtexec_summary(text: str) -> TrtexecSummary:
    """Read a trtexec performance summary (TensorRT 7 to 10 layouts); labels match whole."""
    summary, section = TrtexecSummary(), None
    for raw in text.splitlines():
        if result := _RESULT.match(raw.strip()):
            summary.passed = result.group(1) == "PASSED"
            if result.group(2):
                summary.tensorrt_version = tensorrt_version(result.group(2))
            continue
        line = _PREFIX.sub("", raw.strip()).strip()
        label, _, body = line.partition(":")
        key, body = label.strip().lower(), body.strip()
        if key == "throughput" and body.endswith("qps"):
            summary.throughput_qps = float(body.split()[0])
        elif key in _TOTALS and body.endswith(" s"):
            setattr(summary, _TOTALS[key], float(body.split()[0]))
        elif key in _SECTIONS and " = " in body:
            stats = summary.sections.setdefault(_SECTIONS[key], {})
            for word, pct, value in _STAT.findall(body):
                stats[_stat_name(word, pct)] = float(value)
        elif not body and line.lower() in _SECTIONS:  # TensorRT 7: a header line, stats below
            section = _SECTIONS[line.lower()]
        elif section and (old := _OLD_STAT.match(line)):
            summary.sections.setdefault(section, {})[old.group(1)] = float(old.group(2))
        elif section and (old := _OLD_PCT.match(line)):
            stats = summary.sections.setdefault(section, {})
            stats[_stat_name("percentile", old.group(2))] = float(old.group(1))
    if summary.throughput_qps is None and not summary.sections:
        raise TegraParseError("no trtexec performance summary found in the output")
    return summary


_L4T = re.compile(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


def parse_l4t_release(text: str) -> str:
    """``# R35 (release), REVISION: 4.1, ...`` (/etc/nv_tegra_release) -> ``R35.4.1``."""
    match = _L4T.search(text)
    if match is None:
        raise TegraParseError(f"not an nv_tegra_release line: {text.strip()[:80]!r}")
    return f"R{match.group(1)}.{match.group(2)}"


def parse_nvpmodel(text: str) -> tuple[str, int | None]:
    """``nvpmodel -q`` -> (mode name, mode id): ``NV Power Mode: MAXN`` then ``0``."""
    name = re.search(r"NV Power Mode:\s*(\S[^\n]*)", text)
    if name is None:
        raise TegraParseError(f"not nvpmodel -q output: {text.strip()[:80]!r}")
    ident = re.search(r"NV Power Mode:[^\n]*\n\s*(\d+)\s*$", text, re.MULTILINE)
    return name.group(1).strip(), int(ident.group(1)) if ident else None
