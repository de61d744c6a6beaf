"""The run folder every stage reads and writes, and the plain steps the flows wrap.

One pipeline run lives in one folder; the stages talk to each other only through it, so each
flow can also run on its own (on another machine that sees the folder)::

    DIR/config.yaml                     the resolved RunConfig
    DIR/train/                          checkpoint.pt, metrics.json, history.json, curves.png
    DIR/export/                         one folder per artifact, export.json, eval.npz
    DIR/validate/<target>/report.json   one ValidationReport per target
    DIR/validate/torch-fp32.json        the PyTorch FP32 student timed on this CPU
    DIR/registry.json                   what the registry did (version, aliases, reasons)
    DIR/report.md, report.html          the report (plots beside them)
    DIR/mlflow.db, DIR/mlartifacts/     the default MLflow store
    DIR/.cache/                         Prefect's persisted task results (training, export)
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.config import RunConfig, ValidateConfig, config_from_data, dump_config, load_config
from pipeline.errors import PipelineError
from targets.base import (
    LatencyStats,
    ValidationReport,
    ValidationSettings,
    board_of,
    parse_target,
)
from targets.validate import REPORT_NAME, validate_artifacts

TORCH_ARTIFACT = "torch-fp32"
BASELINE_FILE = "torch-fp32.json"
REGISTRY_FILE = "registry.json"


def slug(text: str) -> str:
    """``ssh://me@board:22/jetson`` -> ``ssh-me-board-22-jetson``: safe in paths, keys, names."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def checkpoint(self) -> Path:
        return self.train / "checkpoint.pt"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def validate(self) -> Path:
        return self.root / "validate"

    def target_dir(self, spec: str) -> Path:
        return self.validate / slug(spec)

    @property
    def baseline(self) -> Path:
        return self.validate / BASELINE_FILE

    @property
    def registry(self) -> Path:
        return self.root / REGISTRY_FILE

    @property
    def cache(self) -> Path:
        return self.root / ".cache"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"


def default_out_dir(config: RunConfig) -> Path:
    return Path("runs") / slug(config.name)


def open_run(
    config: RunConfig | Path | str,
    out_dir: Path | str | None = None,
    overrides: list[str] | None = None,
) -> tuple[RunConfig, RunFolder]:
    """Resolve the config (a RunConfig, or a YAML path plus overrides) and the run folder.

    The resolved config is written to ``DIR/config.yaml``.
    """
    if isinstance(config, RunConfig):
        if overrides:
            config = config_from_data(config.model_dump(mode="json"), overrides)
    else:
        config = load_config(Path(config), overrides)
    root = Path(out_dir) if out_dir is not None else default_out_dir(config)
    run = RunFolder(root.resolve())
    run.root.mkdir(parents=True, exist_ok=True)
    text = dump_config(config)
    if not run.config.is_file() or run.config.read_text() != text:
        run.config.write_text(text)
    return config, run


def board_limit_name(spec: str) -> str:
    """The Prefect concurrency limit that keeps two runs from measuring on one board at once.

    Labelled specs of one machine (``local-cpu#tight``, ``local-cpu#loose``) share its limit.
    """
    return f"onedge-board-{slug(board_of(spec))}"


def validate_on_target(spec: str, run: RunFolder, cfg: ValidateConfig) -> ValidationReport:
    """Measure and gate every artifact of the run on one target; writes its report.json."""
    if not (run.export / "export.json").is_file():
        raise PipelineError(f"{run.export} holds no export.json: run the export stage first")
    target = parse_target(spec, **cfg.boards.get(spec, {}))
    return validate_artifacts(run.export, target, run.target_dir(spec), cfg.settings, cfg.gates)


class TorchBaseline(BaseModel):
    """The PyTorch FP32 student timed at batch 1 on this CPU: the speed-up reference."""

    model_config = ConfigDict(extra="forbid")

    artifact: str = TORCH_ARTIFACT
    sha256: str
    top1: float = Field(description="test top-1 on the eval set (fraction)")
    latency_ms: LatencyStats
    calls: int
    threads: int


def torch_baseline(export_dir: Path, settings: ValidationSettings, out: Path) -> TorchBaseline:
    """Time the exported PyTorch student with the protocol the targets use; write ``out``."""
    import torch

    from export.extract import load_student
    from export.manifest import verify_artifact
    from export.timing import Latency, time_calls, warm_up

    exported = read_json(Path(export_dir) / "export.json", "export")
    try:
        folder = Path(export_dir) / exported["torch_fp32"]["folder"]
    except (KeyError, TypeError):
        raise PipelineError(
            f"{export_dir}/export.json names no torch_fp32 folder: export the checkpoint again"
        ) from None
    manifest = verify_artifact(folder)
    module = load_student(folder)
    with np.load(Path(export_dir) / "eval.npz") as data:
        images = data["images"].astype(manifest.input.dtype)  # raw images when embedded
        labels = data["labels"]
    if settings.eval_limit:
        images, labels = images[: settings.eval_limit], labels[: settings.eval_limit]
    inputs = itertools.cycle([torch.from_numpy(image[None]) for image in images[:16]])
    previous = torch.get_num_threads()
    try:
        if settings.threads:
            torch.set_num_threads(settings.threads)
        threads = torch.get_num_threads()
        with torch.inference_mode():

            def call() -> object:
                return module(next(inputs))

            predicted = np.concatenate(
                [
                    module(torch.from_numpy(np.ascontiguousarray(chunk))).argmax(1).numpy()
                    for chunk in np.split(images, range(256, len(images), 256))
                ]
            )
            warm_up(call, settings.warmup_seconds, settings.warmup_calls)
            samples = time_calls(call, settings.timed_seconds, settings.timed_calls)
    finally:
        torch.set_num_threads(previous)
    lat = Latency.from_samples(samples, 1)
    baseline = TorchBaseline(
        artifact=folder.name,
        sha256=manifest.sha256,
        top1=float((predicted == labels).mean()),
        latency_ms=LatencyStats(
            p50=lat.p50_ms,
            p90=lat.p90_ms,
            p99=lat.p99_ms,
            mean=lat.mean_ms,
            min=1000 * min(samples),
            max=1000 * max(samples),
        ),  # fmt: skip
        calls=lat.calls,
        threads=threads,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(baseline.model_dump_json(indent=2))
    return baseline


def load_reports(run: RunFolder, cfg: ValidateConfig) -> dict[str, ValidationReport]:
    """Every configured target's report.json, keyed by target spec."""
    reports = {}
    for spec in cfg.targets:
        path = run.target_dir(spec) / REPORT_NAME
        if not path.is_file():
            raise PipelineError(
                f"no validation report for target {spec!r} ({path}): run the validate stage first"
            )
        reports[spec] = ValidationReport.model_validate_json(path.read_text())
    return reports


def load_baseline(run: RunFolder) -> TorchBaseline | None:
    if not run.baseline.is_file():
        return None
    return TorchBaseline.model_validate_json(run.baseline.read_text())


def read_json(path: Path, stage: str) -> dict:
    if not path.is_file():
        raise PipelineError(f"{path} does not exist: run the {stage} stage first")
    return json.loads(path.read_text())
