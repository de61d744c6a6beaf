"""The instruction set of the machine running the tests, as ``targets/runner.py`` reads it.

INT8 results of ONNX Runtime's fused integer kernels differ by instruction set: on x86 without
VNNI its u8s8 kernels add pairs of 8-bit products in 16 bits, which saturates; VNNI, AMX and
arm64's dot-product kernels accumulate in 32 bits. Tests whose INT8 expectation differs branch
on :data:`HOST_ISA` (an emulated run names its CPU in ONEDGE_CPUINFO, see the runner).
"""

from __future__ import annotations

from targets.runner import describe

HOST_ISA: str = describe()["isa"]
WIDE_ACCUMULATION = ("x86_64 avx512_vnni", "x86_64 avx_vnni", "x86_64 amx_int8")


def accumulates_wide(isa: str = HOST_ISA) -> bool:
    """True where INT8 products are accumulated in 32 bits (no u8s8 saturation)."""
    return isa in WIDE_ACCUMULATION or isa.startswith("aarch64")
