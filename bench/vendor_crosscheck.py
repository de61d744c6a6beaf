"""onedge's latency beside the runtime vendors' own tools, and against this CPU's peak.

For every OpenVINO artifact of one or more export folders, onedge's batch-1 p50 (the runner's
own backend and call path, ``targets/runner.py``) is timed beside OpenVINO's ``benchmark_app``
on the same file and shape (``-api sync -hint none -nstreams 1 -nthreads N``; ``-data_shape``
for a dynamic-batch IR, ``-infer_precision f32`` for FP32 as the runner asks), in interleaved
rounds within one process (benchmark_app runs as a child process in its turn), and the ratio of
the two medians is reported. benchmark_app's median is its own C++ per-request latency, so the
ratio also shows what the Python call costs. For ONNX Runtime artifacts the runner's call
path is timed against a minimal loop of plain ``InferenceSession.run`` with the same session
options, and against the same graph with its batch axis fixed to 1 (does ONNX Runtime gain from
a static shape?).

In the same process, ``bench.roofline`` measures this CPU's FP32, BF16 and INT8 MatMul peak;
every artifact's achieved MAC rate (MACs per image from export.json) is reported at batch 1 and
at batch 64 (dynamic-batch artifacts) with its fraction of the peak of its precision.

    python -m bench.vendor_crosscheck --export runs/digits-one/export \\
        --export runs/fm/export --threads 1 --rounds 5 --markdown docs/benchmarks/vendor_crosscheck.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench import roofline
from bench.host import command_line
from export.timing import cpu_name
from targets import runner

ROOT = Path(__file__).resolve().parents[1]

BENCHMARK_APP = shutil.which("benchmark_app") or str(
    Path(sys.executable).with_name("benchmark_app")
)
MEDIAN = re.compile(r"Median:\s+([\d.]+)\s+(us|ms)")


def backend(folder: Path, threads: int) -> Any:
    """The runner's backend for an artifact folder, set up as validation sets it up."""
    manifest = runner.check_artifact(str(folder), None)
    name = {"onnx": "onnxruntime", "openvino": "openvino"}[manifest["format"]]
    args = runner.parse_args(
        ["--artifact", str(folder), "--data", "-", "--backend", name, "--threads", str(threads)]
    )
    return runner.BACKENDS[name](str(folder), manifest, args), manifest


def p50_us(call: Any, handles: list, seconds: float, warmup: float = 0.3) -> tuple[float, int]:
    runner.timed_loop(call, handles, warmup, 20)
    times, _ = runner.timed_loop(call, handles, seconds, 50)
    return float(np.median(times)) * 1e6, len(times)


def benchmark_app(xml: Path, shape: list[int], static: bool, precision: str, threads: int,
                  seconds: int) -> float:  # fmt: skip
    """benchmark_app's median latency (us) for one run of ``seconds`` on ``xml``."""
    argv = [BENCHMARK_APP, "-m", str(xml), "-d", "CPU", "-api", "sync", "-hint", "none",
            "-nstreams", "1", "-nthreads", str(threads), "-t", str(seconds)]  # fmt: skip
    if not static:
        argv += ["-data_shape", "[" + ",".join(map(str, shape)) + "]"]
    if precision == "fp32":
        argv += ["-infer_precision", "f32"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    found = MEDIAN.findall(done.stdout + done.stderr)
    if done.returncode != 0 or not found:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise RuntimeError(f"benchmark_app failed on {xml}: {' | '.join(tail)}")
    value, unit = found[-1]
    return float(value) * (1000.0 if unit == "ms" else 1.0)


def static_onnx(source: Path, out: Path) -> Path:
    """The ONNX graph with its batch axis fixed to 1 (inputs and outputs), shapes inferred."""
    import onnx

    model = onnx.load(str(source))
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 1
    onnx.save(onnx.shape_inference.infer_shapes(model), str(out))
    return out


class Candidate:
    """One artifact: its runner backend, batch-1 handles and (where dynamic) a batch-64 one."""

    def __init__(
        self, label: str, folder: Path, macs: int, threads: int, images: np.ndarray
    ) -> None:
        self.label, self.folder = label, folder
        self.engine, self.manifest = backend(folder, threads)
        self.format, self.precision = self.manifest["format"], self.manifest["precision"]
        self.static = self.engine.static_batch == 1
        self.shape = [1, *self.manifest["input"]["shape"][1:]]
        x = images.astype(self.engine.dtype)
        self.singles = [self.engine.prepare(x[i : i + 1]) for i in range(runner.SINGLES)]
        batch = np.resize(x, (64, *x.shape[1:]))
        self.batch64 = None if self.static else [self.engine.prepare(batch)]
        self.macs, self.threads = macs, threads
        self.samples: dict[str, list[float]] = {}
        self.plain = None
        if self.format == "onnx":  # a minimal plain loop, and the graph with batch fixed to 1
            self.plain = self._plain_session(folder / self.manifest["model_file"])
            tmp = Path(tempfile.mkdtemp(prefix="onedge-static-"))
            self.plain_static = self._plain_session(
                static_onnx(folder / self.manifest["model_file"], tmp / "static.onnx")
            )
        self.inputs = [x[i : i + 1] for i in range(runner.SINGLES)]

    @property
    def name(self) -> str:
        return f"{self.label}/{self.folder.name}"

    def _plain_session(self, path: Path) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(value)

    def round(self, seconds: float) -> None:
        """One interleaved round: every measurement of this artifact once."""
        self.add("onedge_us", p50_us(self.engine.run, self.singles, seconds)[0])
        if self.format == "openvino":
            xml = self.folder / self.manifest["model_file"]
            secs = max(1, round(seconds))
            self.add("vendor_us", benchmark_app(
                xml, self.shape, self.static, self.precision, self.threads, secs
            ))  # fmt: skip
        else:
            self.add("vendor_us", p50_us(self.plain, self.inputs, seconds)[0])
            self.add("static_us", p50_us(self.plain_static, self.inputs, seconds)[0])
        if self.batch64:
            self.add("b64_us", p50_us(self.engine.run, self.batch64, seconds / 2)[0])

    def summary(self, peaks: dict[str, dict]) -> dict[str, Any]:
        med = {key: float(np.median(values)) for key, values in self.samples.items()}
        peak_name = roofline.PEAK_FOR[(self.format, self.precision)]
        peak = peaks[peak_name]["gmacs"]
        out: dict[str, Any] = {
            "artifact": self.name, "format": self.format, "precision": self.precision,
            "shape": "static [1, ...]" if self.static else "dynamic batch",
            "input_shape": self.shape, "threads": self.engine.threads,
            "streams": self.engine.streams, "macs_per_image": self.macs, "peak": peak_name,
            "rounds": {key: values for key, values in self.samples.items()},
            **med,
        }  # fmt: skip
        out["ratio_vs_vendor"] = med["onedge_us"] / med["vendor_us"]
        out["b1"] = roofline.achieved(self.macs, 1, med["onedge_us"] / 1e6, peak)
        if "static_us" in med:
            out["ort_static_vs_dynamic"] = med["static_us"] / med["vendor_us"]
        if "b64_us" in med:
            out["b64_ips"] = 64 / (med["b64_us"] / 1e6)
            out["b64"] = roofline.achieved(self.macs, 64, med["b64_us"] / 1e6, peak)
        return out


def candidates(export: Path, threads: int, formats: set[str]) -> list[Candidate]:
    document = json.loads((export / "export.json").read_text())
    macs = int(document["student"]["student"]["macs"])
    with np.load(export / "eval.npz") as data:
        images = data["images"][: runner.SINGLES]
    out = []
    for entry in document["artifacts"]:
        folder = export / entry["folder"]
        if entry["format"] in formats:
            manifest = json.loads((folder / "manifest.json").read_text())
            own = manifest.get("extra", {}).get("student", {}).get("macs", macs)  # its student's
            out.append(Candidate(document["dataset"]["name"], folder, own, threads, images))
    return out


def ratio(rows: dict[str, dict], num: str, den: str, key: str) -> float | None:
    if num in rows and den in rows and key in rows[num] and key in rows[den]:
        return rows[num][key] / rows[den][key]
    return None


def bars(rows: list[dict]) -> list[str]:
    by = {row["artifact"]: row for row in rows}
    lines = []
    for export in dict.fromkeys(row["artifact"].split("/")[0] for row in rows):
        for suffix in ("-b1", ""):
            r = ratio(by, f"{export}/openvino-int8{suffix}", f"{export}/openvino-fp32{suffix}",
                      "onedge_us")  # fmt: skip
            if r is not None:
                shape = "static" if suffix else "dynamic"
                lines.append(f"{export}: OpenVINO INT8 / FP32 batch-1 p50 ({shape}): {r:.2f}x")
        r = ratio(by, f"{export}/openvino-fp32", f"{export}/openvino-int8", "b64_us")
        if r is not None:
            lines.append(f"{export}: OpenVINO INT8 / FP32 batch-64 throughput: {r:.2f}x")
    worst = max((row["ratio_vs_vendor"] for row in rows if row["format"] == "openvino"),
                default=None)  # fmt: skip
    if worst is not None:
        lines.append(f"largest onedge / benchmark_app p50 ratio over the OpenVINO artifacts: "
                     f"{worst:.2f}x")  # fmt: skip
    return lines


def markdown(report: dict) -> str:
    peaks = report["peaks"]
    out = [
        f"Command: `{report['command']}`",
        f"Machine: {report['machine']}. Date: {report['date']}. Load average (1 min) "
        f"{report['load'][0]:.1f} at the start, {report['load'][1]:.1f} at the end.",
        f"Threads {report['threads']}, one stream, {report['rounds']} interleaved rounds of "
        f"{report['seconds']:g} s per candidate; figures are medians over the rounds.",
        "",
        "Peak (MatMul compiled by OpenVINO, same process, best of start and end): "
        + ", ".join(
            f"{k.upper()} {v['gmacs']:.1f} GMAC/s ({'x'.join(map(str, v['shape']))}, "
            f"{', '.join(v['runtime'])})"
            for k, v in peaks.items()
        ),
        "",
        "| artifact | shape | onedge p50 us | vendor p50 us | onedge / vendor | b1 GMAC/s | "
        "b1 % of peak | b64 img/s | b64 GMAC/s | b64 % of peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        b64 = row.get("b64")
        vendor = "benchmark_app" if row["format"] == "openvino" else "plain ORT run"
        out.append(
            f"| {row['artifact']} | {row['shape']} | {row['onedge_us']:.1f} | "
            f"{row['vendor_us']:.1f} ({vendor}) | {row['ratio_vs_vendor']:.2f}x | "
            f"{row['b1']['gmacs']:.1f} | {100 * row['b1']['fraction']:.1f}% ({row['peak']}) | "
            + (f"{row['b64_ips']:,.0f} | {b64['gmacs']:.1f} | {100 * b64['fraction']:.1f}% |"
               if b64 else "- | - | - |")
        )  # fmt: skip
    ort = [row for row in report["rows"] if "ort_static_vs_dynamic" in row]
    if ort:
        out += ["", "ONNX Runtime, plain run of the graph with its batch fixed to 1 against the "
                "exported dynamic-batch graph: " + ", ".join(
                    f"{row['artifact']} {row['ort_static_vs_dynamic']:.2f}x" for row in ort)]  # fmt: skip
    out += ["", *[f"- {line}" for line in report["bars"]]]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, action="append", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per candidate and round")
    parser.add_argument("--formats", default="openvino,onnx")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    peaks = roofline.measure_peaks(args.threads)
    cands = [
        c for e in args.export for c in candidates(e, args.threads, set(args.formats.split(",")))
    ]
    for i in range(args.rounds):
        for cand in cands:
            cand.round(args.seconds)
        print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
    late = roofline.measure_peaks(args.threads)  # the peak is the best of both measurements
    for name, value in late.items():
        if value["gmacs"] > peaks[name]["gmacs"]:
            peaks[name] = value
    rows = [cand.summary(peaks) for cand in cands]
    report = {
        "command": command_line(),
        "machine": cpu_name(),
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "load": [load_start, os.getloadavg()[0]],
        "threads": args.threads, "rounds": args.rounds, "seconds": args.seconds,
        "peaks": peaks, "rows": rows, "bars": bars(rows),
    }  # fmt: skip
    text = markdown(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
