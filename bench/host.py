"""The machine a benchmark ran on, in one line for its report."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch


def machine() -> str:
    """CPU model, cores, torch threads, GPU (or none) and the torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {gpu}, "
        f"torch {torch.__version__}"
    )


def command_line(argv: list[str] | None = None) -> str:
    """How this benchmark was started, as ``python -m bench.<name> ARGS`` (scripts run as
    modules from the repository root)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", "-m", f"bench.{Path(sys.argv[0]).stem}", *args])
