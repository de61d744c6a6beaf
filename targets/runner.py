#!/usr/bin/env python3
"""Measure one onedge artifact on the machine it will run on, and print one JSON report.

Self-contained on purpose: the standard library, numpy and the runtime it drives (onnxruntime,
openvino or tensorrt). A target copies this file next to the artifact and runs

    python3 runner.py --artifact DIR --data eval.npz --backend onnxruntime|openvino|tensorrt

Several artifacts of one backend are measured by one process (one import of the runtime):
``--artifact`` and ``--expect-sha256`` may be repeated, in the same order. The runner prints one
JSON line per artifact, in that order, each as soon as that artifact is done; an artifact that
fails gets its own error line and the next one is measured all the same. ``--artifact-timeout``
bounds each artifact's measurement: past it, the runner prints a ``timeout`` error line for that
artifact and exits (a runtime stuck in native code cannot be interrupted any other way).

Each report (one JSON object per line) holds top-1 on the eval set, the class predicted for
each image, top-1 agreement with the FP32 reference logits, latency percentiles at batch 1,
throughput at --batch-size, threads, peak RSS and the machine. Protocol: warm up until both the warm-up time and call count are reached,
then time until both the timed seconds and the timed call count are reached. Every file's sha256
is checked against manifest.json before anything is measured. On failure the JSON object has
"ok": false and an error kind; the exit status says which (see EXIT: the first failure's).
Peak RSS is the artifact's own where Linux lets the peak be reset (/proc/self/clear_refs),
else the process's so far.

The tensorrt backend builds its engine here from the shipped ONNX with the build settings the
export recorded (manifest extra["build"]: profile, workspace) and caches it by ONNX sha256,
TensorRT version, GPU and those settings, with the engine's own sha256 beside it: a cached engine
whose sha256 is missing or differs is rebuilt. It follows TensorRT's documented Python API (8.5 and
later); its CUDA calls go through ctypes to libcudart. The CUDA part has run on a GPU; the
TensorRT part has not been run by onedge's tests (no TensorRT where they run).
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import importlib.util
import json
import os
import platform
import resource
import stat
import subprocess
import sys
import threading
import time
import zlib

RUNNER_VERSION = 1
SINGLES = 8  # distinct batch-1 inputs cycled through while timing, each bound once
EXIT = {
    "ok": 0, "usage": 2, "artifact-mismatch": 3, "missing-library": 4, "runtime": 5, "data": 6,
    "timeout": 7, "runtime-too-old": 8,
}  # fmt: skip
INSTALL = {
    "numpy": "pip install numpy (or: sudo apt-get install python3-numpy)",
    "onnxruntime": "pip install onnxruntime",
    "openvino": "pip install openvino",
    "tensorrt": "install TensorRT with JetPack (sudo apt-get install nvidia-tensorrt "
    "python3-libnvinfer) or pip install tensorrt on an x86 GPU machine",
    "cudart": "install the CUDA runtime (JetPack's cuda-runtime, or the CUDA toolkit)",
}


class RunnerError(Exception):
    def __init__(self, kind: str, message: str, **details: object) -> None:
        super().__init__(message)
        self.kind, self.message, self.details = kind, message, details


LATENCY_SAMPLE = 500  # timings kept in the report for comparing artifacts (bootstrap of p50)


def pack_bits(flags) -> str:
    """Per-image booleans as base64 of zlib-compressed packed bits (a few hundred characters)."""
    np = need("numpy")
    packed = np.packbits(np.asarray(flags, dtype=bool)).tobytes()
    return base64.b64encode(zlib.compress(packed, 9)).decode("ascii")


def pack_classes(classes) -> str:
    """Per-image class indices as ``u1:`` or ``u2:`` and base64 of zlib-compressed bytes."""
    np = need("numpy")
    classes = np.asarray(classes, dtype=np.int64)
    width = "u1" if classes.size == 0 or classes.max() < 256 else "u2"
    raw = classes.astype("<" + width).tobytes()
    return f"{width}:" + base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_hash(files: dict) -> str:
    lines = "".join(f"{name}:{files[name]}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def plain_name(name) -> bool:
    """One plain file name: no separator, no '..', not absolute (as export.manifest.plain_name)."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in ("/", "\\", "\0"))
        and name == name.strip()
    )


def regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def check_artifact(folder: str, expect_sha256: str | None) -> dict:
    """Read manifest.json and refuse the artifact unless it is exactly what the manifest lists.

    The rules of export.manifest.verify_artifact: plain file names, no symlinks, no unlisted
    entries, every sha256 and the artifact hash matching.
    """
    path = os.path.join(folder, "manifest.json")
    if os.path.islink(folder) or not regular_file(path):
        raise RunnerError("artifact-mismatch", f"{path} is missing, a symlink or not a file")
    try:
        with open(path) as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as exc:
        raise RunnerError("artifact-mismatch", f"cannot read {path}: {exc}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(plain_name(n) for n in files):
        raise RunnerError("artifact-mismatch", "the manifest lists a name that is not a plain file")
    unlisted = sorted(set(os.listdir(folder)) - {"manifest.json", *files})
    if unlisted:
        raise RunnerError("artifact-mismatch", f"{unlisted[0]} is not listed in the manifest")
    for name, expected in sorted(files.items()):
        full = os.path.join(folder, name)
        if not os.path.lexists(full):
            raise RunnerError("artifact-mismatch", f"{name} is listed in the manifest but missing")
        if not regular_file(full):
            raise RunnerError("artifact-mismatch", f"{name} is a symlink or not a regular file")
        actual = sha256_file(full)
        if actual != expected:
            raise RunnerError(
                "artifact-mismatch",
                f"sha256 of {name} is {actual[:12]}..., the manifest says {expected[:12]}...",
            )
    if artifact_hash(files) != manifest.get("sha256"):
        raise RunnerError("artifact-mismatch", "the manifest hash does not match its file list")
    if expect_sha256 and manifest["sha256"] != expect_sha256:
        raise RunnerError("artifact-mismatch", "artifact sha256 differs from the one verified")
    if manifest.get("model_file") not in files:
        raise RunnerError("artifact-mismatch", "the model file is not hashed in the manifest")
    return manifest


def need(module: str):
    """Import a library or fail with what to install."""
    try:
        return __import__(module)
    except ImportError as exc:
        raise RunnerError(
            "missing-library",
            f"{module} is not importable: {exc}",
            library=module,
            install=INSTALL.get(module, f"pip install {module}"),
        ) from None


def library_version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # a runtime installed by the OS package manager has no metadata
        return str(getattr(__import__(module), "__version__", "unknown"))


def read_text(path: str) -> str | None:
    try:
        with open(path, errors="replace") as handle:
            return handle.read().replace("\x00", "").strip()
    except OSError:
        return None


# Instruction-set features that decide which INT8 kernels a runtime picks (/proc/cpuinfo)
CPU_FEATURES = {
    "x86_64": ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"),
    "aarch64": ("asimd", "asimddp", "i8mm", "sve", "bf16"),
}
ISA_RANK = {  # best first: the one that names the machine's INT8 kernels
    "x86_64": ("amx_int8", "avx512_vnni", "avx_vnni", "avx512f", "avx2"),
    "aarch64": ("i8mm", "asimddp", "asimd"),
}
# L4T release -> JetPack (NVIDIA's release notes); a release not listed gives no JetPack
JETPACK = {
    "R32.5.0": "4.5", "R32.5.1": "4.5.1", "R32.6.1": "4.6", "R32.7.1": "4.6.1",
    "R32.7.2": "4.6.2", "R32.7.3": "4.6.3", "R32.7.4": "4.6.4", "R32.7.5": "4.6.5",
    "R35.1.0": "5.0.2", "R35.2.1": "5.1", "R35.3.1": "5.1.1", "R35.4.1": "5.1.2",
    "R35.5.0": "5.1.3", "R35.6.0": "5.1.4", "R36.3.0": "6.0", "R36.4.0": "6.1",
    "R36.4.3": "6.2",
}  # fmt: skip
LIB_DIRS = ("/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64")


def machine_arch(name: str) -> str:
    """``platform.machine()`` in one spelling: x86_64 or aarch64 (others as they are)."""
    lowered = (name or "").lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(lowered, lowered)


def parse_cpu_features(cpuinfo: str, arch: str) -> list:
    """The tracked features (CPU_FEATURES) in /proc/cpuinfo's ``flags`` (x86) or ``Features``
    (arm64) line, in CPU_FEATURES order; every core lists the same, so the first line is read."""
    tracked = CPU_FEATURES.get(machine_arch(arch), ())
    for line in (cpuinfo or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            words = set(value.split())
            return [name for name in tracked if name in words]
    return []


def isa_label(arch: str, features: list) -> str:
    """``x86_64 avx512_vnni``, ``x86_64 avx2``, ``aarch64 asimddp``: the best INT8 instruction set
    the CPU has; ``x86_64 (no avx2)`` below AVX2."""
    arch = machine_arch(arch) or "unknown"
    best = next((name for name in ISA_RANK.get(arch, ()) if name in features), None)
    if best is None:
        low = ISA_RANK.get(arch, ("",))[-1]
        return f"{arch} (no {low})" if low else arch
    return f"{arch} {best}"


def parse_l4t(text: str) -> str | None:
    """/etc/nv_tegra_release (``# R35 (release), REVISION: 4.1, ...``) -> ``R35.4.1``."""
    first = (text or "").strip().splitlines()[:1]
    if not first or "(release)" not in first[0] or "REVISION:" not in first[0]:
        return None
    major = first[0].split("(release)")[0].strip().lstrip("#").strip()
    revision = first[0].split("REVISION:")[1].split(",")[0].strip()
    if not (major[:1] == "R" and major[1:].isdigit() and revision.replace(".", "").isdigit()):
        return None
    if revision.count(".") == 0:
        revision += ".0"
    return f"{major}.{revision}"


def parse_cuda_version(text: str) -> str | None:
    """CUDA's version from /usr/local/cuda/version.json (``"cuda": {"version": ...}``),
    version.txt (``CUDA Version 10.2.300``) or ``nvcc --version`` (``release 11.4, V11.4.315``)."""
    text = (text or "").strip()
    if text.startswith("{"):
        try:
            found = json.loads(text).get("cuda", {}).get("version")
        except (ValueError, AttributeError):
            return None
        return str(found) if found else None
    for marker in ("CUDA Version ", ", V"):
        if marker in text:
            found = text.split(marker, 1)[1].split()[0].strip(",")
            if found.replace(".", "").isdigit():
                return found
    return None


def tensorrt_from_libs(names) -> str | None:
    """TensorRT's version from library file names (``libnvinfer.so.8.5.2``), the newest."""
    found = []
    for name in names:
        if name.startswith("libnvinfer.so."):
            parts = name[len("libnvinfer.so.") :].split(".")
            if len(parts) >= 2 and all(p.isdigit() for p in parts):
                found.append(tuple(int(p) for p in parts))
    return ".".join(map(str, max(found))) if found else None


def fingerprint(arch: str, cpuinfo: str, tegra: str | None, cuda: str | None, libs, runtimes):
    """The board's fingerprint from the texts it holds (pure: every input is file text)."""
    features = parse_cpu_features(cpuinfo, arch)
    l4t = parse_l4t(tegra or "")
    versions = dict(runtimes)
    versions["cuda"] = parse_cuda_version(cuda or "")
    versions["tensorrt"] = versions.get("tensorrt") or tensorrt_from_libs(libs)
    if l4t:
        versions["l4t"], versions["jetpack"] = l4t, JETPACK.get(l4t)
    return {"arch": machine_arch(arch), "cpu_features": features,
            "isa": isa_label(arch, features), "runtimes": versions}  # fmt: skip


def library_files() -> list:
    names = []
    for folder in LIB_DIRS:
        try:
            names += [n for n in os.listdir(folder) if n.startswith("libnvinfer.so.")]
        except OSError:
            continue
    return names


def describe() -> dict:
    """The machine, with its fingerprint. An emulator or container whose /proc/cpuinfo is not the
    CPU the runtimes see (qemu-user passes the host's through) names the right one in
    ONEDGE_CPUINFO (a file in /proc/cpuinfo's format), and says what emulates it in
    ONEDGE_EMULATED (``qemu-x86_64 -cpu Haswell``): its latencies are then not the board's."""
    cpuinfo = read_text(os.environ.get("ONEDGE_CPUINFO") or "/proc/cpuinfo") or ""
    cpu_model = None
    for line in cpuinfo.splitlines():
        if line.split(":")[0].strip() in ("model name", "Model", "Hardware") and ":" in line:
            cpu_model = line.split(":", 1)[1].strip()
            break
    meminfo = (read_text("/proc/meminfo") or "").split()
    memory_mb = int(meminfo[1]) // 1024 if len(meminfo) > 1 and meminfo[1].isdigit() else None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    tegra = read_text("/etc/nv_tegra_release")
    cuda = read_text("/usr/local/cuda/version.json") or read_text("/usr/local/cuda/version.txt")
    runtimes = {m: library_version(m) for m in ("numpy", *BACKEND_MODULES.values())}
    prints = fingerprint(platform.machine(), cpuinfo, tegra, cuda, library_files(), runtimes)
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model or platform.processor() or None,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "os": f"{platform.system()} {platform.release()}",
        "memory_mb": memory_mb,
        "python": platform.python_version(),
        **prints,
        "emulated": os.environ.get("ONEDGE_EMULATED") or None,
        "board": read_text("/proc/device-tree/model"),
        "l4t": prints["runtimes"].get("l4t") or next(iter((tegra or "").splitlines()), None),
    }


def percentile(sorted_ms: list, q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_ms) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(sorted_ms) - 1)
    return sorted_ms[low] + (sorted_ms[high] - sorted_ms[low]) * (pos - low)


def timed_loop(call, handles: list, seconds: float, calls: int) -> tuple:
    """Call until both `seconds` and `calls` are reached; return per-call times and wall time.

    Only ``call(handle)`` is inside the timed region: the handles are prepared beforehand
    (inputs and outputs bound) and picked before the clock starts.
    """
    times, clock, n = [], time.perf_counter, len(handles)
    append = times.append
    start = clock()
    i = 0
    while True:
        handle = handles[i % n]
        t0 = clock()
        call(handle)
        t1 = clock()
        append(t1 - t0)
        i += 1
        if i >= calls and t1 - start >= seconds:
            return times, t1 - start


class Monitor:
    """A board tool (tegrastats) sampled in the background during the timed runs."""

    running: set = set()  # started and not yet stopped: the watchdog stops them before exiting

    def __init__(self, argv: list | None) -> None:
        self.argv, self.lines, self.error, self.proc, self.reader = argv, [], None, None, None
        self.first = threading.Event()  # set at the tool's first line: timing starts after it

    def start(self) -> None:
        if not self.argv:
            return
        try:
            self.proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
        except OSError as exc:
            self.error = f"cannot start {self.argv[0]}: {exc}"
            return
        Monitor.running.add(self.proc)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.first.wait(timeout=5.0)  # a busy board may take a moment to start the tool

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip():
                self.lines.append(line.strip())
                self.first.set()
        self.first.set()

    def stop(self) -> dict | None:
        if self.proc is not None:
            Monitor.running.discard(self.proc)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(timeout=5)
        if not self.argv:
            return None
        return {"command": self.argv, "lines": self.lines, "error": self.error}


class Backend:
    """The call path every backend offers: ``prepare`` binds an input and its output buffer
    once, outside the timed region; ``run`` is the timed call (it copies and builds nothing
    where the runtime allows); ``output`` reads the logits back. ``backend(x)`` does all three.
    """

    def prepare(self, x):
        return x

    def run(self, handle) -> None:
        self._last = self(handle)

    def output(self, handle):
        return self._last


# ONNX Runtime minor version -> (newest ONNX IR version, newest ai.onnx opset) it implements
# (ONNX Runtime's version matrix); versions past the table are taken to load what it lists last
ORT_SUPPORT = {
    (1, 10): (8, 15), (1, 11): (8, 16), (1, 12): (8, 17), (1, 13): (8, 17), (1, 14): (8, 18),
    (1, 15): (9, 19), (1, 16): (9, 19), (1, 17): (9, 20), (1, 18): (10, 21), (1, 19): (10, 21),
    (1, 20): (10, 21), (1, 21): (10, 22), (1, 22): (11, 23),
}  # fmt: skip


def version_tuple(text: str) -> tuple:
    parts = []
    for part in str(text).split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def ort_too_old(version: str, ir_version, opset) -> str | None:
    """``runtime too old: needs >= X, board has Y`` when ONNX Runtime ``version`` cannot load a
    graph of ``ir_version`` and ``opset`` (by ORT_SUPPORT), else None. Pure, for the tests."""
    have = version_tuple(version)[:2]
    known = [v for v in ORT_SUPPORT if v <= have]
    if len(have) < 2 or have > max(ORT_SUPPORT) or not known or (ir_version, opset) == (None, None):
        return None  # a release past the table, or before it: its own load error will say
    ir, ops = ORT_SUPPORT[max(known)]
    ir_version, opset = ir_version or 0, opset or 0
    if ir_version <= ir and opset <= ops:
        return None
    fits = [v for v, (i, o) in sorted(ORT_SUPPORT.items()) if i >= ir_version and o >= opset]
    need = ".".join(map(str, fits[0])) if fits else "a release newer than 1.22"
    return (
        f"runtime too old: needs onnxruntime >= {need} (ONNX IR {ir_version}, opset {opset}), "
        f"board has onnxruntime {version}"
    )


def ort_load_too_old(error: str, version: str, graph: dict) -> str | None:
    """The "runtime too old" line for ONNX Runtime's own refusal of a graph's IR version
    (``Unsupported model IR version: 11, max supported IR version: 10``), else None."""
    marker = "Unsupported model IR version:"
    if marker not in error:
        return None
    detail = error.split(marker, 1)[1].strip().splitlines()[0]
    needed, _, newest = detail.partition(",")
    newest = newest.replace("max supported IR version:", "").strip()
    opset = graph.get("opset")
    return (
        f"runtime too old: needs an onnxruntime >= one reading ONNX IR {needed.strip()}"
        f"{f' (opset {opset})' if opset else ''}, board has onnxruntime {version} "
        f"(ONNX IR <= {newest or 'unknown'})"
    )


class OnnxRuntimeBackend(Backend):
    module = "onnxruntime"
    max_batch = None

    def __init__(self, folder: str, manifest: dict, args) -> None:
        ort = need("onnxruntime")
        options = ort.SessionOptions()
        if args.threads:
            options.intra_op_num_threads = args.threads
            options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        path = os.path.join(folder, manifest["model_file"])
        graph = (manifest.get("extra") or {}).get("onnx") or {}
        too_old = ort_too_old(ort.__version__, graph.get("ir_version"), graph.get("opset"))
        if too_old:
            raise RunnerError("runtime-too-old", too_old, library="onnxruntime")
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # an IR version this release cannot read: say so, in one line
            too_old = ort_load_too_old(str(exc), ort.__version__, graph)
            if too_old:
                raise RunnerError("runtime-too-old", too_old, library="onnxruntime") from None
            raise
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.output_name = self.session.get_outputs()[0].name
        self.dtype = {"tensor(float16)": "float16", "tensor(uint8)": "uint8"}.get(
            first.type, "float32"
        )
        self.static_batch = first.shape[0] if isinstance(first.shape[0], int) else None
        self.version = ort.__version__
        self.threads = args.threads or os.cpu_count()
        self.streams = None
        self.run_with_iobinding = self.session.run_with_iobinding
        self.info = {"providers": self.session.get_providers(), "device": "CPU",
                     "call": "run_with_iobinding, output bound to a pre-allocated array"}  # fmt: skip

    def __call__(self, x):
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def prepare(self, x):
        """An I/O binding of ``x`` and of a pre-allocated output array (a tuple, kept alive)."""
        np = need("numpy")
        x = np.ascontiguousarray(x)
        out = np.empty_like(self(x))  # one plain run tells the output's shape and type
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, x)
        binding.bind_output(self.output_name, "cpu", 0, out.dtype, list(out.shape), out.ctypes.data)
        return binding, out, x

    def run(self, handle) -> None:
        self.run_with_iobinding(handle[0])

    def output(self, handle):
        return handle[1].copy()


class OpenVinoBackend(Backend):
    module = "openvino"
    max_batch = None

    def __init__(self, folder: str, manifest: dict, args) -> None:
        ov = self.ov = need("openvino")
        core = ov.Core()
        # what benchmark_app -hint none -nstreams S -nthreads N sets: no hint, explicit values
        config = {"NUM_STREAMS": args.streams}
        if manifest.get("precision") == "fp32":  # otherwise the CPU may run FP32 models in BF16
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if args.threads:
            config["INFERENCE_NUM_THREADS"] = args.threads
        model = core.read_model(os.path.join(folder, manifest["model_file"]))
        self.compiled = core.compile_model(model, args.device, config)
        self.request = self.compiled.create_infer_request()
        port = self.compiled.input(0)
        self.dtype = {ov.Type.f16: "float16", ov.Type.u8: "uint8"}.get(
            port.get_element_type(), "float32"
        )
        batch = port.get_partial_shape()[0]
        self.static_batch = None if batch.is_dynamic else batch.get_length()
        self.version = ov.get_version()
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        self.info = {"device": args.device, "config": config,
                     "call": "InferRequest.infer() on bound input and output tensors"}  # fmt: skip

    def __call__(self, x):
        self.request.infer({0: x})
        return self.request.get_output_tensor(0).data.copy()

    def prepare(self, x):
        """An infer request with ``x`` and a pre-allocated output bound (zero-copy tensors)."""
        np, ov = need("numpy"), self.ov
        x = np.ascontiguousarray(x)
        request = self.compiled.create_infer_request()
        request.set_input_tensor(ov.Tensor(x, shared_memory=True))
        request.infer()  # tells the output's shape for this input
        out = np.empty_like(request.get_output_tensor(0).data)
        request.set_output_tensor(ov.Tensor(out, shared_memory=True))
        return request, out, x

    def run(self, handle) -> None:
        handle[0].infer()

    def output(self, handle):
        return handle[1].copy()


class CudaRuntime:
    """The few CUDA runtime calls TensorRT inference needs, through ctypes."""

    H2D, D2H = 1, 2

    def __init__(self) -> None:
        import ctypes

        self.ct = ctypes
        names = ["libcudart.so", "/usr/local/cuda/lib64/libcudart.so"]
        names += [f"libcudart.so.{v}" for v in ("13", "12", "11.0", "10.2")]
        for name in names:
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            raise RunnerError(
                "missing-library",
                "libcudart.so was not found",
                library="cudart",
                install=INSTALL["cudart"],
            )
        self.lib.cudaGetErrorString.restype = ctypes.c_char_p

    def check(self, code: int, what: str) -> None:
        if code != 0:
            text = self.lib.cudaGetErrorString(code).decode()
            raise RunnerError("runtime", f"{what} failed: CUDA error {code} ({text})")

    def malloc(self, nbytes: int) -> int:
        ptr = self.ct.c_void_p()
        self.check(self.lib.cudaMalloc(self.ct.byref(ptr), self.ct.c_size_t(nbytes)), "cudaMalloc")
        return ptr.value

    def stream(self) -> int:
        handle = self.ct.c_void_p()
        self.check(self.lib.cudaStreamCreate(self.ct.byref(handle)), "cudaStreamCreate")
        return handle.value or 0

    def copy(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        c = self.ct
        code = self.lib.cudaMemcpyAsync(
            c.c_void_p(dst), c.c_void_p(src), c.c_size_t(nbytes), c.c_int(kind), c.c_void_p(stream)
        )
        self.check(code, "cudaMemcpyAsync")

    def sync(self, stream: int) -> None:
        self.check(self.lib.cudaStreamSynchronize(self.ct.c_void_p(stream)), "cudaStreamSync")

    def device_name(self) -> str:
        props = self.ct.create_string_buffer(16384)  # the name is the struct's first field
        get = getattr(self.lib, "cudaGetDeviceProperties_v2", self.lib.cudaGetDeviceProperties)
        self.check(get(props, 0), "cudaGetDeviceProperties")
        return props.value.decode(errors="replace")


def write_engine(engine_path: str, serialized: bytes) -> None:
    """Write an engine to the cache, and its sha256 beside it (``<engine>.sha256``)."""
    for path, data in (
        (engine_path, serialized),
        (engine_path + ".sha256", hashlib.sha256(serialized).hexdigest().encode()),
    ):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)


def read_cached_engine(engine_path: str) -> tuple:
    """The cached engine's bytes, or None and why it must be rebuilt (no engine is no reason)."""
    try:
        with open(engine_path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None, None
    expected = read_text(engine_path + ".sha256")
    if expected is None:
        return None, "the cached engine had no sha256 beside it: rebuilt"
    if hashlib.sha256(data).hexdigest() != expected:
        return None, "the cached engine's sha256 did not match: rebuilt"
    return data, None


def ignored_build_settings(trt, build: dict) -> list:
    """The build settings configured but unknown to the installed TensorRT (reported)."""
    level = build.get("builder_optimization_level")
    if level is None or hasattr(trt.IBuilderConfig, "builder_optimization_level"):  # 8.6 and later
        return []
    return ["builder_optimization_level"]


class TensorRtBackend(Backend):
    module = "tensorrt"

    def __init__(self, folder: str, manifest: dict, args) -> None:
        self.trt = trt = need("tensorrt")
        self.cuda = CudaRuntime()
        # the export records how to build the engine in extra["build"]; it ships the ONNX
        build = dict(manifest.get("extra", {}).get("build") or {})
        onnx_names = [n for n in sorted(manifest["files"]) if n.endswith(".onnx")]
        if not onnx_names:
            raise RunnerError("data", "the tensorrt artifact ships no ONNX to build from")
        onnx_file = os.path.join(folder, onnx_names[0])
        profile = build.get("profile") or {}
        high = int(profile.get("max", max(args.batch_size, 1)))
        batches = (int(profile.get("min", 1)), int(profile.get("opt", 1)), high)
        if batches[0] != 1:
            raise RunnerError("data", f"the engine profile starts at batch {batches[0]}, not 1")
        precision = manifest.get("precision", "fp32")
        gpu = self.cuda.device_name()
        key_text = json.dumps(
            [sha256_file(onnx_file), trt.__version__, gpu, precision, batches, build],
            sort_keys=True,
        )
        key = hashlib.sha256(key_text.encode()).hexdigest()[:32]
        os.makedirs(args.engine_cache, mode=0o700, exist_ok=True)
        engine_path = os.path.join(args.engine_cache, key + ".engine")
        logger = trt.Logger(trt.Logger.WARNING)
        data, note = read_cached_engine(engine_path)
        cached = data is not None
        if not cached:
            shape = manifest["input"]["shape"][1:]
            data = self._build(onnx_file, engine_path, precision, shape, batches, build, logger)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(data)
        if self.engine is None:
            raise RunnerError("runtime", f"TensorRT could not load the engine {engine_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name = inputs[0]
        self.output_name = next(n for n in names if n not in inputs)
        in_type = trt.nptype(self.engine.get_tensor_dtype(self.input_name))
        self.dtype = in_type.__name__ if in_type.__name__ in ("float16", "uint8") else "float32"
        self.out_type = trt.nptype(self.engine.get_tensor_dtype(self.output_name))
        self.static_batch, self.max_batch = None, high
        self.stream, self.buffers = self.cuda.stream(), {}
        self.version, self.threads, self.streams = trt.__version__, 1, 1
        self.info = {
            "device": gpu,
            "engine_path": engine_path,
            "engine_cached": cached,
            "engine_key": key,
            "batches": batches,
            "input_name": self.input_name,
            "ignored_build_settings": ignored_build_settings(trt, build),
        }
        if note:
            self.info["engine_note"] = note

    def _build(self, onnx_file, engine_path, precision, shape, batches, build, logger) -> bytes:
        trt = self.trt
        builder = trt.Builder(logger)
        flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
        network = builder.create_network(0 if flag is None else 1 << int(flag))
        parser = trt.OnnxParser(network, logger)
        with open(onnx_file, "rb") as handle:
            if not parser.parse(handle.read()):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise RunnerError("runtime", f"TensorRT cannot parse {onnx_file}: {errors}")
        config = builder.create_builder_config()
        workspace = int(build.get("workspace_mib", 1024)) << 20
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
        level = build.get("builder_optimization_level")
        if level is not None and not ignored_build_settings(trt, build):
            config.builder_optimization_level = int(level)
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":  # explicit quantisation: the ONNX carries Q/DQ pairs
            config.set_flag(trt.BuilderFlag.INT8)
        profile = builder.create_optimization_profile()
        name = network.get_input(0).name
        low, opt, high = ((b, *shape) for b in batches)
        profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RunnerError("runtime", f"TensorRT failed to build an engine from {onnx_file}")
        data = bytes(serialized)
        write_engine(engine_path, data)
        return data

    def _buffer(self, name: str, nbytes: int) -> int:
        if self.buffers.get(name, (0, 0))[1] < nbytes:
            self.buffers[name] = (self.cuda.malloc(nbytes), nbytes)
        return self.buffers[name][0]

    def __call__(self, x):
        import numpy as np

        x = np.ascontiguousarray(x)
        self.context.set_input_shape(self.input_name, x.shape)
        out = np.empty(tuple(self.context.get_tensor_shape(self.output_name)), self.out_type)
        src, dst = self._buffer("in", x.nbytes), self._buffer("out", out.nbytes)
        self.context.set_tensor_address(self.input_name, src)
        self.context.set_tensor_address(self.output_name, dst)
        self.cuda.copy(src, x.ctypes.data, x.nbytes, CudaRuntime.H2D, self.stream)
        if not self.context.execute_async_v3(self.stream):
            raise RunnerError("runtime", "TensorRT execute_async_v3 failed")
        self.cuda.copy(out.ctypes.data, dst, out.nbytes, CudaRuntime.D2H, self.stream)
        self.cuda.sync(self.stream)
        return out


BACKENDS = {
    "onnxruntime": OnnxRuntimeBackend,
    "openvino": OpenVinoBackend,
    "tensorrt": TensorRtBackend,
}
BACKEND_MODULES = {name: cls.module for name, cls in BACKENDS.items()}


def read_rows(archive, member: str, limit: int | None):
    """The first ``limit`` rows of one array of an .npz, reading no more of it than that."""
    np = need("numpy")
    fmt = np.lib.format
    with archive.open(member) as handle:
        version = fmt.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(handle)
        else:
            raise ValueError(f"{member}: .npy format version {version} is not supported")
        if dtype.hasobject:
            raise ValueError(f"{member} holds Python objects; the eval set holds numbers only")
        if fortran or not shape:
            raise ValueError(f"{member} is not a C-ordered array with a first axis")
        count = shape[0] if limit is None else min(limit, shape[0])
        size = count * dtype.itemsize
        for dim in shape[1:]:
            size *= dim
        data = handle.read(size)
        if len(data) != size:
            raise ValueError(f"{member} is truncated")
    return np.frombuffer(data, dtype=dtype).reshape((count, *shape[1:]))


def load_eval(path: str, limit: int | None, shape: list) -> dict:
    """The eval arrays, only their first ``limit`` rows read (a board may have little memory)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            members = {n[: -len(".npy")]: n for n in archive.namelist() if n.endswith(".npy")}
            for key in ("images", "labels"):
                if key not in members:
                    raise RunnerError("data", f"the eval set {path} has no {key!r} array")
            arrays = {k: read_rows(archive, m, limit) for k, m in members.items()}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RunnerError("data", f"cannot read the eval set {path}: {exc}") from None
    if list(arrays["images"].shape[1:]) != list(shape[1:]):
        raise RunnerError(
            "data",
            f"eval images are {list(arrays['images'].shape[1:])} per "
            f"sample but the model takes {list(shape[1:])}",
        )
    return arrays


def reference_key(data: dict, branch) -> str | None:
    """The FP32 reference of this artifact's student: ``reference_logits_b<branch>`` where the
    eval set has one per student, else the plain ``reference_logits`` of a one-student export."""
    own = f"reference_logits_b{branch}"
    if own in data:
        return own
    if "reference_logits" in data and not any(k.startswith("reference_logits_b") for k in data):
        return "reference_logits"
    return None


def batch_logits(backend, images, batch: int) -> list:
    """float32 logits of ``images``, ``batch`` at a time (a fixed-batch model's last batch
    filled with copies of its last image, their outputs dropped)."""
    np = need("numpy")
    logits = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        pad = batch - len(chunk) if backend.static_batch else 0
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        logits.append(np.asarray(backend(chunk), dtype=np.float32)[: batch - pad])
    return logits


def accuracy(backend, images, labels, data: dict, batch: int, branch=None) -> dict:
    """Top-1 on the eval set and agreement with the FP32 reference, as fractions."""
    np = need("numpy")
    logits = batch_logits(backend, images, batch)
    predicted = np.concatenate(logits).argmax(axis=1)
    hits = predicted == labels
    out = {"top1": float(hits.mean()), "reference_top1": None,
           "agreement": None, "max_abs_diff": None, "correct": pack_bits(hits),
           "predicted": pack_classes(predicted)}  # fmt: skip
    key = reference_key(data, branch)
    if key is not None:
        ref = data[key].astype(np.float32)
        out["reference_top1"] = float((ref.argmax(axis=1) == labels).mean())
        out["agreement"] = float((ref.argmax(axis=1) == predicted).mean())
        out["max_abs_diff"] = float(np.abs(ref - np.concatenate(logits)).max())
    return out


def timing(backend, images, batch: int, args) -> dict:
    """Warm up, then latency at batch 1 and throughput at ``batch``, the monitor running.

    At ``batch`` 1 (a static batch-1 artifact) both are the same calls: one warm-up and one
    timed loop (until the timed seconds and the larger of the two call counts) give both.
    """
    np = need("numpy")
    singles = [images[i : i + 1] for i in range(min(len(images), SINGLES))]
    tiled = np.resize(images, (batch, *images.shape[1:]))
    if backend.static_batch and backend.static_batch != 1:
        singles = [tiled]  # a fixed-batch model cannot run batch 1
    shape = [len(singles[0]), *images.shape[1:]]
    # batch 1 (a static -b1 artifact): the latency loop is the throughput loop, timed once
    once = batch == 1 and shape[0] == 1
    singles = [backend.prepare(x) for x in singles]
    tiled = singles if once else [backend.prepare(tiled)]
    run = backend.run
    warm1, warm1_s = timed_loop(run, singles, args.warmup_seconds, args.warmup_calls)
    warmb = []
    if not once:
        warmb, _ = timed_loop(run, tiled, args.warmup_seconds, max(1, args.warmup_calls // 10))
    monitor = Monitor(json.loads(args.monitor_cmd) if args.monitor_cmd else None)
    monitor.start()
    try:
        calls = max(args.timed_calls, args.throughput_calls) if once else args.timed_calls
        lat, lat_s = timed_loop(run, singles, args.timed_seconds, calls)
        thr, thr_s = (
            (lat, lat_s)
            if once
            else timed_loop(run, tiled, args.timed_seconds, args.throughput_calls)
        )
    finally:
        monitored = monitor.stop()
    ms = sorted(t * 1000.0 for t in lat)
    latency = {f"p{q}": percentile(ms, q) for q in (50, 90, 99)}
    latency.update(mean=sum(ms) / len(ms), min=ms[0], max=ms[-1])
    stride = -(-len(ms) // LATENCY_SAMPLE)  # every k-th sorted timing: at most LATENCY_SAMPLE
    return {
        "input_shape": shape, "latency_ms": latency,
        "latency_sample_ms": ms[stride // 2 :: stride],
        "latency_calls": len(ms), "latency_seconds": lat_s,
        "warmup_calls": len(warm1) + len(warmb), "warmup_seconds": warm1_s,
        "throughput": batch * len(thr) / thr_s, "throughput_batch": batch,
        "throughput_calls": len(thr), "monitor": monitored,
    }  # fmt: skip


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux 4.0+); False where it cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb(own: bool) -> float:
    """Peak RSS in MB: since the last reset when ``own`` (VmHWM), else the process's."""
    if own:
        for line in (read_text("/proc/self/status") or "").splitlines():
            if line.startswith("VmHWM:") and line.split()[1].isdigit():
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(args, artifact: str, expect_sha256: str | None) -> dict:
    own_peak = reset_peak_rss()
    manifest = check_artifact(artifact, expect_sha256)
    data = load_eval(args.data, args.eval_limit, manifest["input"]["shape"])
    backend = BACKENDS[args.backend](artifact, manifest, args)
    images = data["images"].astype(backend.dtype)
    labels = data["labels"].astype("int64")
    batch = backend.static_batch or min(args.batch_size, backend.max_batch or args.batch_size)
    result = accuracy(backend, images, labels, data, batch, manifest.get("branch"))
    result.update(timing(backend, images, batch, args))
    sizes = sum(os.path.getsize(os.path.join(artifact, f)) for f in manifest["files"])
    result.update({
        "artifact": os.path.basename(os.path.normpath(artifact)),
        "format": manifest["format"], "precision": manifest["precision"],
        "sha256": manifest["sha256"], "backend": args.backend, "runtime_version": backend.version,
        "backend_info": backend.info, "threads": backend.threads, "streams": backend.streams,
        "eval_size": int(len(images)),
        "size_mb": sizes / 1e6,
        "peak_rss_mb": peak_rss_mb(own_peak),
    })  # fmt: skip
    return result


def parse_args(argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure one onedge artifact; print JSON.")
    parser.add_argument("--describe", action="store_true", help="print the machine and exit")
    parser.add_argument(
        "--artifact", action="append", help="artifact folder holding manifest.json (repeatable)"
    )
    parser.add_argument("--data", help="eval .npz with images, labels, reference_logits")
    parser.add_argument("--backend", choices=sorted(BACKENDS))
    parser.add_argument("--expect-sha256", action="append", help="one per --artifact, in order")
    parser.add_argument(
        "--artifact-timeout", type=float, default=None, help="bound of one artifact, seconds"
    )
    parser.add_argument("--device", default="CPU", help="OpenVINO device")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--streams", type=int, default=1, help="OpenVINO CPU streams")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--warmup-seconds", type=float, default=1.0)
    parser.add_argument("--warmup-calls", type=int, default=50)
    parser.add_argument("--timed-seconds", type=float, default=3.0)
    parser.add_argument("--timed-calls", type=int, default=200)
    parser.add_argument("--throughput-calls", type=int, default=20)
    parser.add_argument("--engine-cache", default=os.path.expanduser("~/.cache/onedge/engines"))
    parser.add_argument("--monitor-cmd", default=None, help="JSON argv sampled while timing")
    args = parser.parse_args(argv)
    if not args.describe and not (args.artifact and args.data and args.backend):
        parser.error("--artifact, --data and --backend are required")
    if args.expect_sha256 and len(args.expect_sha256) != len(args.artifact or []):
        parser.error("give one --expect-sha256 per --artifact, or none")
    if args.artifact_timeout is not None and args.artifact_timeout <= 0:
        parser.error("--artifact-timeout must be positive")
    return args


def failure(exc: Exception, artifact: str | None) -> dict:
    """The error report of one artifact (or of the describe call)."""
    if isinstance(exc, RunnerError):
        error = {"kind": exc.kind, "message": exc.message, **exc.details}
    else:  # a runtime library raising: report it, do not lose the message
        error = {"kind": "runtime", "message": f"{type(exc).__name__}: {exc}"}
    report = {"ok": False, "runner_version": RUNNER_VERSION, "error": error}
    if artifact is not None:
        report["artifact"] = os.path.basename(os.path.normpath(artifact))
    return report


class Printer:
    """Writes one JSON line at a time; the watchdog and the main thread never interleave."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def line(self, report: dict) -> None:
        text = json.dumps(report) + "\n"
        with self.lock:
            sys.stdout.write(text)
            sys.stdout.flush()


class Watchdog:
    """Ends the process with a ``timeout`` line when one artifact runs past ``seconds``."""

    def __init__(self, seconds: float | None, printer: Printer) -> None:
        self.seconds, self.printer, self.timer = seconds, printer, None

    def arm(self, artifact: str) -> None:
        if self.seconds is None:
            return
        self.timer = threading.Timer(self.seconds, self._expire, args=(artifact,))
        self.timer.daemon = True
        self.timer.start()

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self, artifact: str) -> None:
        message = f"measuring {os.path.basename(os.path.normpath(artifact))} ran past "
        message += f"{self.seconds:g} s"
        self.printer.lock.acquire()  # no other line after this one
        for proc in list(Monitor.running):  # a board tool would outlive os._exit
            proc.kill()
        sys.stdout.write(json.dumps(failure(RunnerError("timeout", message), artifact)) + "\n")
        sys.stdout.flush()
        os._exit(EXIT["timeout"])


def main(argv: list | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    printer = Printer()
    try:
        machine = describe()
    except Exception as exc:
        printer.line(failure(exc, None))
        return EXIT[exc.kind] if isinstance(exc, RunnerError) else EXIT["runtime"]
    if args.describe:
        printer.line({"ok": True, "runner_version": RUNNER_VERSION, "machine": machine})
        return 0
    expected = args.expect_sha256 or [None] * len(args.artifact)
    watchdog, code = Watchdog(args.artifact_timeout, printer), 0
    for artifact, expect in zip(args.artifact, expected):  # noqa: B905 (Python 3.8 on boards)
        watchdog.arm(artifact)
        try:
            report = {"ok": True, "runner_version": RUNNER_VERSION, "machine": machine}
            report.update(measure(args, artifact, expect))
        except Exception as exc:
            report = failure(exc, artifact)
            kind = exc.kind if isinstance(exc, RunnerError) else "runtime"
            code = code or EXIT[kind]
        finally:
            watchdog.disarm()
        printer.line(report)
        gc.collect()  # the artifact's runtime objects go before the next one is loaded
    return code


if __name__ == "__main__":
    sys.exit(main())
