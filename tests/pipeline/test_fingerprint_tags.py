"""The registered version carries the fingerprint of every board it was validated on."""

from __future__ import annotations

import json

import pytest

from pipeline.model_registry.register import fingerprint_tags, register_run
from pipeline.model_registry.tracking import connect
from pipeline.run_folder import load_reports, slug
from targets.base import TargetInfo


def test_fingerprint_tags_name_isa_features_and_runtimes() -> None:
    info = TargetInfo(
        name="orin", kind="jetson", isa="aarch64 asimddp", cpu_features=["asimd", "asimddp"],
        runtimes={"onnxruntime": "1.16.3", "openvino": None, "tensorrt": "8.5.2",
                  "l4t": "R35.4.1", "jetpack": "5.1.2"},
    )  # fmt: skip
    tags = fingerprint_tags("orin", info)
    assert tags["isa.orin"] == "aarch64 asimddp"
    assert tags["cpu_features.orin"] == "asimd,asimddp"
    assert json.loads(tags["runtimes.orin"]) == {
        "jetpack": "5.1.2", "l4t": "R35.4.1", "onnxruntime": "1.16.3", "tensorrt": "8.5.2"
    }  # fmt: skip
    assert "emulated.orin" not in tags


@pytest.mark.slow
def test_a_registered_version_carries_the_board_fingerprint(run, store) -> None:
    config, folder = run
    outcome = register_run(config, folder)
    tags = connect(store).get_model_version(config.model_name(), outcome.version).tags
    for spec, report in load_reports(folder, config.validate).items():
        info = report.target_info
        assert info.isa and tags[f"onedge.isa.{slug(spec)}"] == info.isa
        assert tags[f"onedge.cpu_features.{slug(spec)}"] == ",".join(info.cpu_features)
        runtimes = json.loads(tags[f"onedge.runtimes.{slug(spec)}"])
        assert runtimes["onnxruntime"] == info.runtimes["onnxruntime"]
