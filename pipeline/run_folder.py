"""The run folder every stage reads and writes, and the plain steps the flows wrap.

One pipeline run lives in one folder; the stages talk to each other only through it, so each
flow can also run on its own (on another machine that sees the folder)::

    DIR/config.yaml                     the resolved RunConfig
    DIR/data-check.json, DIR/data-cache/ an image folder's check and decoded images
    DIR/train/                          checkpoint.pt, metrics.json, history.json, curves.png
    DIR/export/                         one folder per artifact, export.json, eval.npz
    DIR/validate/<target>/report.json   one ValidationReport per target
    DIR/validate/torch-fp32.json        the PyTorch FP32 student timed on this CPU
    DIR/registry.json                   what the registry did (version, aliases, reasons)
    DIR/report.md, report.html          the report (plots beside them)
    DIR/report.json                     its rows and where the time went (step timings)
    DIR/mlflow.db, DIR/mlartifacts/     the default MLflow store
    DIR/.cache/                         Prefect's persisted task results (training, export)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from export.timing import Latency
from export.torch_baseline import time_torch_student
from onedge.files import atomic_write
from onedge.strict import StrictModel
from pipeline.config import RunConfig, ValidateConfig, config_from_data, dump_config, load_config
from pipeline.data_check import with_run_cache
from pipeline.errors import PipelineError
from targets.base import (
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
    """A name safe in paths, keys and tags, and distinct for distinct texts.

    ``local-cpu`` stays ``local-cpu``; a text the slugging changes gets a short hash of itself:
    ``orin.1`` -> ``orin-1-<hash>``, so it never shares a folder (or a report) with ``orin-1``.
    """
    plain = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"
    if plain == text:
        return plain
    return f"{plain}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


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

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"


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
    config = with_run_cache(config, run.root)  # an image folder's decoded cache: DIR/data-cache
    text = dump_config(config)
    if not run.config.is_file() or run.config.read_text() != text:
        atomic_write(run.config, text)
    return config, run


def board_limit_name(spec: str) -> str:
    """The Prefect concurrency limit that keeps two runs from measuring on one board at once.

    Labelled specs of one machine (``local-cpu#tight``, ``local-cpu#loose``) share its limit.
    """
    return f"onedge-board-{slug(board_of(spec))}"


def registry_limit_name(model_name: str) -> str:
    """The Prefect concurrency limit that serialises decide-and-move for one registered model."""
    return f"onedge-registry-{slug(model_name)}"


def validate_on_target(spec: str, run: RunFolder, cfg: ValidateConfig) -> ValidationReport:
    """Measure and gate every artifact of the run on one target; writes its report.json."""
    if not (run.export / "export.json").is_file():
        raise PipelineError(f"{run.export} holds no export.json: run the export stage first")
    target = parse_target(spec, **cfg.boards.get(spec, {}))
    return validate_artifacts(run.export, target, run.target_dir(spec), cfg.settings, cfg.gates)


class TorchBaseline(StrictModel):
    """The PyTorch FP32 student timed at batch 1 on this CPU: the speed-up reference."""

    artifact: str = TORCH_ARTIFACT
    sha256: str
    top1: float = Field(description="test top-1 on the eval set (fraction)")
    latency_ms: Latency
    calls: int
    threads: int


def torch_baseline(
    export_dir: Path, checkpoint: Path, settings: ValidationSettings, out: Path
) -> TorchBaseline:
    """Time the PyTorch FP32 student with the protocol the targets use; write ``out``.

    The measurement is :func:`export.torch_baseline.time_torch_student` (the student rebuilt
    from the checkpoint, never unpickled from ``student.pt2``).
    """
    timed = time_torch_student(export_dir, checkpoint, settings)
    lat = Latency.from_samples(timed.samples, 1)
    baseline = TorchBaseline(
        artifact=timed.artifact,
        sha256=timed.sha256,
        top1=timed.top1,
        latency_ms=lat,  # min and max included
        calls=lat.calls,
        threads=timed.threads,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, baseline.model_dump_json(indent=2))
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
