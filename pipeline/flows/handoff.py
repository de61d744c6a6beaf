"""What the chain hands from flow to flow, so that no flow opens the run folder again.

Every flow still runs alone: given a config (or its YAML file) and a run folder, it opens the
folder (:func:`pipeline.run_folder.open_run`: the config resolved and written to
``DIR/config.yaml``) and reads what it needs from the files there. In the chain,
:func:`pipeline.flows.chain.edge_pipeline` opens the folder once and passes an
:class:`OpenedRun` instead of the config, and each flow's result (typed, JSON-able: Prefect
pickles nothing) to the flows after it.
"""

from __future__ import annotations

from pathlib import Path

from onedge.files import sha256_file
from onedge.strict import StrictModel
from pipeline import run_folder
from pipeline.config import ConfigArg, RunConfig
from training.trainer import TrainResult


class OpenedRun(StrictModel):
    """A run folder the chain has opened: its config resolved and written to config.yaml."""

    config: RunConfig
    root: Path


def take_run(
    config: ConfigArg | OpenedRun, out_dir: Path | None, overrides: list[str] | None
) -> tuple[RunConfig, run_folder.RunFolder]:
    """The config and run folder a flow works on: an opened run as it is, else opened here."""
    if isinstance(config, OpenedRun):
        return config.config, run_folder.RunFolder(config.root)
    return run_folder.open_run(config, out_dir, overrides)


def checkpoint_sha256(checkpoint: Path, trained: TrainResult | None) -> str:
    """The checkpoint's sha256: the train flow's record of it when handed on, else hashed."""
    stages = (trained.metrics.get("stages") or []) if trained is not None else []
    recorded = stages[-1].get("sha256") if stages else None
    if trained is not None and Path(trained.checkpoint) == checkpoint and recorded:
        return recorded
    return sha256_file(checkpoint)
