"""The Jetson parsers, on real tegrastats lines and trtexec summaries from several boards."""

from __future__ import annotations

from pathlib import Path

import pytest

from targets.jetson import clocks_locked
from targets.tegra import (
    TegraParseError,
    parse_l4t_release,
    parse_nvpmodel,
    parse_tegrastats_line,
    parse_trtexec_summary,
    summarize_tegrastats,
    tensorrt_version,
)

DATA = Path(__file__).parent / "data"


def sample_lines() -> list[tuple[str, str]]:
    """(board comment, line) for every tegrastats line in the sample file."""
    out, board = [], ""
    for line in (DATA / "tegrastats_samples.txt").read_text().splitlines():
        if line.startswith("# Jetson"):
            board = line[2:]
        elif line.strip() and not line.startswith("#"):
            out.append((board, line))
    return out


# board -> (cores, online cores, RAM used/total, power now mW, GPU load, GPU MHz, timestamp)
EXPECTED = {
    "Jetson Nano, JetPack 4.6.1": (4, 4, (1923, 3964), 1750, 0.0, [76], None),
    "Jetson Nano (two cores off)": (4, 2, (1409, 3964), 2003, 0.0, [76], None),
    "Jetson Xavier NX, JetPack 5.1.2": (6, 6, (3168, 6851), 2763, 0.0, [114], "07-09-2024 13:31:31"),
    "Jetson Xavier (6 cores, two off)": (6, 4, (2690, 6854), 5079, 0.0, [510], None),
    "Jetson Orin Nano 8GB": (6, 6, (1343, 7620), 5251, 0.0, [305], "10-08-2026 04:38:21"),
    "Jetson AGX Orin 64GB": (12, 12, (4321, 62801), 2340 + 390 + 4025, 0.0, [0, 0], "04-11-2025 10:36:27"),
    "Jetson AGX Orin 64GB, busy (video engines on)": (
        12, 12, (18207, 62841), 2412 + 1607 + 4707, 0.0, [0, 0], "05-09-2026 18:42:06",
    ),
}  # fmt: skip


def test_every_sample_board_has_expectations() -> None:
    assert sorted(board for board, _ in sample_lines()) == sorted(EXPECTED)


@pytest.mark.parametrize(("board", "line"), sample_lines(), ids=[b for b, _ in sample_lines()])
def test_tegrastats_line(board: str, line: str) -> None:
    cores, online, ram, power, gpu_load, gpu_mhz, stamp = EXPECTED[board]
    sample = parse_tegrastats_line(line)
    assert len(sample.cpu_load) == cores
    assert sum(load is not None for load in sample.cpu_load) == online
    assert (sample.ram_used_mb, sample.ram_total_mb) == ram
    assert sample.power_mw == power
    assert sample.gpu_load == gpu_load and sample.gpu_freq_mhz == gpu_mhz
    assert sample.timestamp == stamp
    assert sample.swap_total_mb and sample.swap_total_mb > 0
    assert sample.temperatures_c and all(t > -50 for t in sample.temperatures_c.values())
    assert "RAM" not in sample.rails_mw and "NC" not in sample.rails_mw


def test_tegrastats_details_by_generation() -> None:
    lines = dict(sample_lines())
    nano = parse_tegrastats_line(lines["Jetson Nano, JetPack 4.6.1"])
    assert nano.rails_mw["POM_5V_CPU"] == (366, 406)  # old BSPs print no unit
    assert nano.cpu_freq_mhz == [1224] * 4 and nano.cpu_load == [5.0, 4.0, 3.0, 6.0]
    assert nano.temperatures_c["thermal"] == 40.0
    nx = parse_tegrastats_line(lines["Jetson Xavier NX, JetPack 5.1.2"])
    assert nx.rails_mw["VDD_IN"] == (2763, 2846) and nx.emc_load == 2.0
    orin = parse_tegrastats_line(lines["Jetson AGX Orin 64GB"])
    assert "CV0" not in orin.temperatures_c  # -256C: sensor off
    assert orin.temperatures_c["tj"] == 44.343
    assert orin.rails_mw["VDDQ_VDD2_1V8AO"] == (301, 301)


def test_tegrastats_rejects_other_text() -> None:
    with pytest.raises(TegraParseError, match="not a tegrastats line"):
        parse_tegrastats_line("tegrastats: command not found")


def test_tegrastats_summary() -> None:
    lines = [line for _, line in sample_lines()[:2]] + ["garbage"]
    summary = summarize_tegrastats(lines)
    assert summary["samples"] == 2 and summary["unparsed_lines"] == 1
    assert summary["power_mw_mean"] == (1750 + 2003) / 2 and summary["power_mw_max"] == 2003
    assert summary["ram_used_mb_max"] == 1923 and summary["ram_total_mb"] == 3964
    assert summarize_tegrastats([])["power_mw_mean"] is None


def trtexec_blocks() -> dict[str, str]:
    blocks: dict[str, list[str]] = {}
    name = None
    for line in (DATA / "trtexec_samples.txt").read_text().splitlines():
        if line.startswith("# ---"):
            name = line[6:]
            blocks[name] = []
        elif name and not line.startswith("#"):
            blocks[name].append(line)
    return {k: "\n".join(v) for k, v in blocks.items()}


def test_trtexec_sample_blocks_are_all_tested() -> None:
    assert len(trtexec_blocks()) == 3


def test_trtexec_tensorrt_85_summary() -> None:
    text = trtexec_blocks()["TensorRT 8.5.2, Jetson Orin Nano, FP16"]
    s = parse_trtexec_summary(text)
    assert s.throughput_qps == 97.8649
    assert s.sections["latency"] == {
        "min": 10.642, "max": 10.9861, "mean": 10.7971, "median": 10.7972,
        "p90": 10.9329, "p95": 10.949, "p99": 10.9744,
    }  # fmt: skip
    assert s.sections["gpu_compute"]["mean"] == 10.1824
    assert s.sections["gpu_compute"]["p99"] == 10.356
    assert s.sections["enqueue"]["p95"] == 2.07275
    assert s.sections["h2d"]["median"] == 0.310486 and s.sections["d2h"]["max"] == 0.312134
    # "Total GPU Compute Time" must not be read as the "GPU Compute Time" section
    assert s.total_gpu_compute_s == 3.02418 and s.host_walltime_s == 3.0348
    assert s.passed is True and s.tensorrt_version == "8.5.2"


def test_trtexec_8x_summary_without_timestamps() -> None:
    s = parse_trtexec_summary(trtexec_blocks()["TensorRT 8.x, desktop GPU, no timestamps"])
    assert s.throughput_qps == 73.4985
    assert s.sections["latency"]["p99"] == 15.7443 and "p90" not in s.sections["latency"]
    assert s.sections["end_to_end"]["mean"] == 26.672
    assert s.sections["enqueue"]["median"] == 1.28644
    assert s.sections["h2d"]["min"] == 1.50073
    assert s.passed is None and s.host_walltime_s is None


def test_trtexec_7_summary_with_stat_lines() -> None:
    s = parse_trtexec_summary(trtexec_blocks()["TensorRT 7 era, T4, batch 16"])
    assert s.throughput_qps == 0.0 and s.host_walltime_s == 3.04011
    assert s.sections["enqueue"] == {"min": 0.532959, "max": 0.609924, "median": 0.553345}
    assert s.sections["gpu_compute"] == {
        "min": 12.2784, "max": 13.4615, "mean": 12.8239, "median": 12.8769, "p99": 13.2598,
    }  # fmt: skip
    assert s.total_gpu_compute_s == 3.02645


def test_trtexec_without_a_summary_is_an_error() -> None:
    with pytest.raises(TegraParseError):
        parse_trtexec_summary("[E] Error[1]: could not open file model.onnx\n&&&& FAILED")


def test_tensorrt_version_codes() -> None:
    assert tensorrt_version("8502") == "8.5.2"
    assert tensorrt_version("8601") == "8.6.1"
    assert tensorrt_version("100300") == "10.3.0"


def test_l4t_release_and_power_mode() -> None:
    line = (
        "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
        "DATE: Tue Aug  1 19:57:35 UTC 2023"
    )
    assert parse_l4t_release(line) == "R35.4.1"
    assert parse_l4t_release("# R32 (release), REVISION: 7.1, GCID: 29818004") == "R32.7.1"
    with pytest.raises(TegraParseError):
        parse_l4t_release("Ubuntu 22.04")
    assert parse_nvpmodel("NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n") == ("MAXN", 0)
    assert parse_nvpmodel("NV Power Mode: 15W\n2") == ("15W", 2)
    with pytest.raises(TegraParseError):
        parse_nvpmodel("bash: nvpmodel: command not found")


def test_clocks_locked_from_frequency_limits() -> None:
    locked = {"cpu0": ["1479000", "1479000"], "cpu1": ["1479000", "1479000"]}
    assert clocks_locked(locked, {"57000000.gpu": ["921600000", "921600000"]}) is True
    assert clocks_locked(locked, {"57000000.gpu": ["76800000", "921600000"]}) is False
    assert clocks_locked({"cpu0": ["102000", "1479000"]}, {}) is False
    assert clocks_locked({}, {}) is None
