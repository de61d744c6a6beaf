"""The report's per-class section: table, confusion matrix and error grid of the registered
artifact on each target, from the class its validation run recorded for every eval image."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.model_registry.register import RegistryOutcome
from pipeline.report.classes import (
    MAX_ERRORS,
    confusion_matrix,
    displayable,
    per_class_rows,
    pick_errors,
)
from pipeline.run_folder import RunFolder, load_reports


def test_per_class_rows_count_what_the_labels_say() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 1, 0])
    rows = per_class_rows(labels, predicted, ["a", "b", "c", "d"])
    assert [(r.images, r.correct) for r in rows] == [(3, 1), (2, 2), (1, 0), (0, 0)]
    assert rows[0].confused_with == "b" and rows[0].confused_count == 2
    assert rows[1].confused_with is None and rows[3].top1 is None
    assert confusion_matrix(labels, predicted, 4)[0].tolist() == [1, 2, 0, 0]


def test_error_grid_takes_the_classes_in_turn_and_stops_at_the_limit() -> None:
    labels = np.array([0] * 50 + [1] * 5)
    predicted = np.array([1] * 50 + [0] * 5)
    picked = pick_errors(labels, predicted)
    assert len(picked) == MAX_ERRORS and len(set(picked)) == MAX_ERRORS
    assert sum(labels[picked] == 1) == 5  # the small class is not crowded out
    assert pick_errors(labels, labels) == []


def test_images_are_shown_as_the_model_saw_them() -> None:
    from export.manifest import InputSpec

    raw = np.array([[[[0, 16]]]], dtype=np.uint8)  # N, C, H, W: digits' 0-16 pixels
    embedded = InputSpec(shape=[-1, 1, 1, 2], mean=[0.5], std=[0.25], scale=16.0,
                         preprocessing="embedded")  # fmt: skip
    assert displayable(raw, embedded)[0, 0, :, 0].tolist() == [0.0, 1.0]
    normalised = np.array([[[[-2.0, 2.0]]]], dtype=np.float32)
    external = embedded.model_copy(update={"preprocessing": "external"})
    assert displayable(normalised, external)[0, 0, :, 0].tolist() == [0.0, 1.0]


def test_report_has_the_registered_artifacts_classes(pipeline_run) -> None:
    """Against the folder's own registry.json, not ``pipeline_run.result``: test_flows' ``onedge
    run`` and test_mlflow_server run the pipeline again in this shared folder before this test,
    rewriting registry.json, report.json and the validation reports; they may register another
    artifact than the fixture's run did (the fastest passing one: digits' artifacts are within
    timing noise of each other, and load reorders them)."""
    run = RunFolder(pipeline_run.out)
    outcome = RegistryOutcome.model_validate_json(run.registry.read_text())
    document = json.loads(run.report_json.read_text())
    [section] = document["per_class"]
    assert section["target"] == "local-cpu" and section["artifact"] == outcome.artifact
    assert section["registered"] is True and section["note"] is None
    result = load_reports(run, pipeline_run.config.validate)["local-cpu"].result(outcome.artifact)
    classes = section["classes"]
    assert [c["name"] for c in classes] == [str(k) for k in range(10)]
    assert sum(c["images"] for c in classes) == section["images"] == result.eval_size
    correct = sum(c["correct"] for c in classes)
    assert correct / section["images"] == pytest.approx(result.top1)
    assert section["misclassified"] == section["images"] - correct
    matrix = np.array(section["confusion"])
    assert matrix.sum() == section["images"] and np.trace(matrix) == correct
    markdown = run.report_md.read_text()
    assert f"## Per class on local-cpu: {outcome.artifact}" in markdown
    assert f"model `{outcome.model_name}` version **{outcome.version}**" in markdown  # same run
    assert "| class | images | correct | top-1 % | most often taken for |" in markdown
    assert (run.root / section["confusion_plot"]).stat().st_size > 1000
    assert f"]({section['confusion_plot']})" in markdown
    if section["misclassified"]:
        assert (run.root / section["errors_plot"]).stat().st_size > 1000
        assert "misclassified images on local-cpu" in run.report_html.read_text()


def test_a_registry_file_this_config_does_not_write_is_not_read(pipeline_run, tmp_path) -> None:
    """A folder rerun with registration off (or per-target aliases off) keeps the earlier
    run's registry files; the per-class section must not call their artifact registered."""
    import shutil

    from pipeline.model_registry.target_versions import PER_TARGET_FILE
    from pipeline.report.classes import registered_artifacts

    out = tmp_path / "run"
    shutil.copytree(pipeline_run.out, out, ignore=shutil.ignore_patterns("mlflow.db", "mlartif*"))
    run, config = RunFolder(out), pipeline_run.config
    reports = load_reports(run, config.validate)
    outcome = RegistryOutcome.model_validate_json(run.registry.read_text())
    registered = outcome.artifact
    assert registered_artifacts(config, run, reports, outcome) == dict.fromkeys(reports, registered)
    off = config.model_copy(
        update={"registry": config.registry.model_copy(update={"enabled": False})}
    )
    assert registered_artifacts(off, run, reports, outcome) == {}
    stale = {"targets": {spec: {"registered": None} for spec in reports}}
    (out / PER_TARGET_FILE).write_text(json.dumps(stale))  # not per-target here: never read
    assert registered_artifacts(config, run, reports, outcome) == dict.fromkeys(reports, registered)
