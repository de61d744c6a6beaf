"""An emulated arm64 board: Debian's aarch64 CPython under qemu-aarch64, with aarch64 wheels.

``python -m tests.arm64_board`` builds it (or finds it built) in ``$ONEDGE_ARM64_BOARD``
(default ``~/.cache/onedge/arm64-board``) and prints the path of its ``python``: a wrapper
that execs ``qemu-aarch64 -L ROOT -E PYTHONPATH=SITE ROOT/usr/bin/python3.11 "$@"``, the board's
``python`` option behind a real sshd. Each step leaves a marker and is skipped when its marker
is there, so a second run costs one check (a few seconds):

1. Debian's arm64 packages (``dpkg --add-architecture arm64``, ``apt-get download``; nothing is
   installed), each unpacked with ``dpkg -x`` into ROOT;
2. pip's aarch64 wheels of numpy, ONNX Runtime (:data:`ORT_VERSION`, the newest that imports
   under QEMU 7.2) and OpenVINO, unzipped into SITE (OpenVINO into its own folder, on the
   path only when it imports and runs on the board);
3. ROOT/proc/cpuinfo, written from the HWCAP bits the emulated CPU gives its programs
   (``/proc/self/auxv`` under QEMU's ``max`` CPU): QEMU 7.2 shows the host's x86 cpuinfo
   otherwise, and ``-L ROOT`` makes the board's programs read this one;
4. a check: the board imports numpy and ONNX Runtime (and OpenVINO, or goes without it).

There is no binfmt_misc here, so nothing on the board may exec another aarch64 program; the
runner never does. :func:`build_board` raises :class:`BoardUnavailable` with the reason when a
step cannot be done (no qemu-aarch64, no network for apt or pip).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

ORT_VERSION = "1.27.0"  # 1.28.0 and later segfault on import under QEMU 7.2; 1.20.1-1.27.0 run
OPENVINO_VERSION = "2026.4.1"
NUMPY_VERSION = "2.4.6"
PACKAGES = [
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "libssl3",
    "libbz2-1.0",
    "liblzma5",
    "libsqlite3-0",
    "libuuid1",
    "libtinfo6",
    "libncursesw6",
    "libreadline8",
    "libdb5.3",
    "libgdbm6",
    "libnsl2",
    "libtirpc3",
    "libcrypt1",
]
PLATFORMS = ("manylinux_2_35_aarch64", "manylinux_2_31_aarch64", "manylinux_2_28_aarch64",
             "manylinux2014_aarch64")  # fmt: skip
EMULATED = "qemu-aarch64 7.2 (user mode; max CPU)"  # no comma: qemu -E splits on them
STEP_TIMEOUT_S = 900
FAILED = "build-failed.txt"  # the reason of the last failed build, for the tests' skip
HWCAP = [
    "fp",
    "asimd",
    "evtstrm",
    "aes",
    "pmull",
    "sha1",
    "sha2",
    "crc32",
    "atomics",
    "fphp",
    "asimdhp",
    "cpuid",
    "asimdrdm",
    "jscvt",
    "fcma",
    "lrcpc",
    "dcpop",
    "sha3",
    "sm3",
    "sm4",
    "asimddp",
    "sha512",
    "sve",
    "asimdfhm",
    "dit",
    "uscat",
    "ilrcpc",
    "flagm",
    "ssbs",
    "sb",
    "paca",
    "pacg",
]
HWCAP2 = [
    "dcpodp",
    "sve2",
    "sveaes",
    "svepmull",
    "svebitperm",
    "svesha3",
    "svesm4",
    "flagm2",
    "frint",
    "svei8mm",
    "svef32mm",
    "svef64mm",
    "svebf16",
    "i8mm",
    "bf16",
    "dgh",
    "rng",
    "bti",
    "mte",
    "ecv",
    "afp",
    "rpres",
    "mte3",
    "sme",
]
# Runs on the board: the HWCAP bits QEMU gives the program (AT_HWCAP 16, AT_HWCAP2 26)
AUXV_SCRIPT = (
    "import json,struct\n"
    "v=dict(struct.iter_unpack('<QQ',open('/proc/self/auxv','rb').read()))\n"
    "print(json.dumps([v.get(16,0),v.get(26,0)]))"
)
CHECK_SCRIPT = (
    "import json,numpy,onnxruntime as ort\n"
    "print(json.dumps({'onnxruntime':ort.__version__,'numpy':numpy.__version__}))"
)
OPENVINO_CHECK = "import openvino as ov; ov.Core().available_devices; print(ov.__version__)"


class BoardUnavailable(RuntimeError):
    """The emulated board could not be built here; the message says which step and why."""


@dataclass
class Board:
    """A built board: its python wrapper and what it runs."""

    python: str
    root: str
    site: str
    onnxruntime: str
    openvino: str | None  # None: the board has no OpenVINO
    openvino_why: str | None
    features: list[str]


def cache_dir() -> Path:
    return Path(os.environ.get("ONEDGE_ARM64_BOARD", "~/.cache/onedge/arm64-board")).expanduser()


def _run(argv: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False, **kwargs
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BoardUnavailable(f"{what}: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise BoardUnavailable(f"{what} failed (exit {done.returncode}): {tail[0][:300]}")
    return done


def _once(marker: Path, step) -> None:
    """Run ``step`` unless ``marker`` says it was done; the marker is written last."""
    if marker.is_file():
        return
    step()
    marker.write_text("done\n")


def download_packages(debs: Path) -> None:
    debs.mkdir(parents=True, exist_ok=True)
    foreign = _run(["dpkg", "--print-foreign-architectures"], "dpkg").stdout.split()
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if "arm64" not in foreign:
        _run([*sudo, "dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64")
        _run([*sudo, "apt-get", "update", "-qq"], "apt-get update (arm64 lists)")
    names = [f"{name}:arm64" for name in PACKAGES]
    try:
        _run(["apt-get", "download", *names], "apt-get download", cwd=debs)
    except BoardUnavailable:  # the arm64 lists may be older than the arch: update once
        _run([*sudo, "apt-get", "update", "-qq"], "apt-get update (arm64 lists)")
        _run(["apt-get", "download", *names], "apt-get download", cwd=debs)


def unpack_packages(debs: Path, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob("*_arm64.deb"))
    if len(found) < len(PACKAGES):
        raise BoardUnavailable(f"{debs} holds {len(found)} of {len(PACKAGES)} arm64 packages")
    for deb in found:
        _run(["dpkg", "-x", str(deb), str(root)], f"dpkg -x {deb.name}")


def download_wheels(folder: Path, requirement: str) -> Path:
    """One aarch64 wheel for CPython 3.11 (no dependencies), downloaded into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [part for p in PLATFORMS for part in ("--platform", p)]
    _run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.11", *platforms, "-d", str(folder), requirement],
        f"pip download {requirement}",
    )  # fmt: skip
    name = requirement.split("==")[0]
    wheels = sorted(folder.glob(f"{name}-*.whl"))
    if not wheels:
        raise BoardUnavailable(f"pip download {requirement} left no wheel in {folder}")
    return wheels[-1]


def unzip(wheel: Path, site: Path) -> None:
    site.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)


def write_wrapper(path: Path, root: Path, sites: list[Path]) -> Path:
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        raise BoardUnavailable("qemu-aarch64 is missing: apt-get install qemu-user")
    pythonpath = ":".join(str(site) for site in sites)
    path.write_text(
        "#!/bin/sh\n# the emulated arm64 board's python (tests/arm64_board.py)\n"
        f'exec {qemu} -L {root} -E PYTHONPATH={pythonpath} -E ONEDGE_EMULATED="{EMULATED}" '
        f'{root}/usr/bin/python3.11 "$@"\n'
    )
    path.chmod(0o755)
    return path


def write_cpuinfo(python: Path, root: Path) -> list[str]:
    """ROOT/proc/cpuinfo in the arm64 kernel's format, from the emulated CPU's HWCAP bits."""
    hwcap, hwcap2 = json.loads(_run([str(python), "-c", AUXV_SCRIPT], "reading auxv").stdout)
    features = [name for bit, name in enumerate(HWCAP) if hwcap >> bit & 1]
    features += [name for bit, name in enumerate(HWCAP2) if hwcap2 >> bit & 1]
    block = (
        "processor\t: {n}\nFeatures\t: {features}\nCPU implementer\t: 0x00\n"
        "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0x051\nCPU revision\t: 0\n"
    )
    cores = range(os.cpu_count() or 1)
    text = "\n".join(block.format(n=n, features=" ".join(features)) for n in cores)
    text += f"\nModel\t\t: {EMULATED}\n"
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(text)
    return features


def check_openvino(python: Path) -> str | None:
    """OpenVINO's version when it imports on the board; None when it does not."""
    try:
        return _run([str(python), "-c", OPENVINO_CHECK], "importing OpenVINO").stdout.split()[-1]
    except BoardUnavailable:
        return None


def build_board(cache: Path | None = None) -> Board:
    """Build the board in ``cache`` (each step once) and check it runs ONNX Runtime."""
    cache = Path(cache or cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    record = cache / f"board-ort{ORT_VERSION}-ov{OPENVINO_VERSION}.json"
    built = record.is_file() and Path(json.loads(record.read_text())["python"]).is_file()
    if built and shutil.which("qemu-aarch64"):
        return Board(**json.loads(record.read_text()))
    if shutil.which("qemu-aarch64") is None:
        raise BoardUnavailable("qemu-aarch64 is missing: apt-get install qemu-user")
    debs, root, wheels = cache / "debs", cache / "root", cache / "wheels"
    site, site_ov = cache / f"site-ort{ORT_VERSION}", cache / f"site-ov{OPENVINO_VERSION}"
    _once(cache / "debs.done", lambda: download_packages(debs))
    _once(cache / "root.done", lambda: unpack_packages(debs, root))
    _once(site / ".done", lambda: [
        unzip(download_wheels(wheels, f"numpy=={NUMPY_VERSION}"), site),
        unzip(download_wheels(wheels, f"onnxruntime=={ORT_VERSION}"), site),
    ])  # fmt: skip
    openvino_wheel = f"openvino=={OPENVINO_VERSION}"
    _once(site_ov / ".done", lambda: unzip(download_wheels(wheels, openvino_wheel), site_ov))
    python = write_wrapper(cache / "python", root, [site, site_ov])
    features = write_cpuinfo(python, root)
    openvino = check_openvino(python)
    why = None
    if openvino is None:
        why = f"openvino {OPENVINO_VERSION} does not import under {EMULATED}"
        python = write_wrapper(cache / "python", root, [site])
    versions = json.loads(_run([str(python), "-c", CHECK_SCRIPT], "importing ONNX Runtime").stdout)
    board = Board(
        str(python), str(root), str(site), versions["onnxruntime"], openvino, why, features
    )
    record.write_text(json.dumps(asdict(board), indent=2))
    return board


def find_board(cache: Path | None = None) -> Board:
    """The board built before (never builds: the tests call this); BoardUnavailable with the
    reason the last build gave, or that none ran."""
    cache = Path(cache or cache_dir())
    record = cache / f"board-ort{ORT_VERSION}-ov{OPENVINO_VERSION}.json"
    if record.is_file() and shutil.which("qemu-aarch64"):
        board = Board(**json.loads(record.read_text()))
        if Path(board.python).is_file():
            return board
    failed = cache / FAILED
    why = failed.read_text().strip() if failed.is_file() else "no build ran"
    raise BoardUnavailable(f"the arm64 board is not built in {cache} ({why}): python -m "
                           "tests.arm64_board builds it (.ci/run does)")  # fmt: skip


def main() -> int:
    cache = cache_dir()
    try:
        board = build_board(cache)
    except BoardUnavailable as exc:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / FAILED).write_text(f"{exc}\n")
        print(f"arm64 board not built: {exc}", file=sys.stderr)
        return 1
    (cache / FAILED).unlink(missing_ok=True)
    print(json.dumps(asdict(board), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
