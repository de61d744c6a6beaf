"""edge_pipeline end to end on digits, under Prefect's test harness with a real MLflow store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from export.manifest import read_manifest, verify_artifact
from pipeline.run_folder import RunFolder, board_limit_name

pytestmark = pytest.mark.slow


def client_for(run):
    from mlflow import MlflowClient

    uri = run.result.registry.tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_rerun_after_failed_validation_reuses_training_and_export(pipeline_run):
    assert pipeline_run.first_error is not None, "the injected validation failure did not surface"
    assert "injected" in str(pipeline_run.first_error)
    # the plain functions ran once over both flow runs; validation ran in both; the chain
    # opened the run folder once a run and handed it on to its flows
    assert pipeline_run.calls == {"train": 1, "export": 1, "validate": 2, "open_run": 2}
    assert pipeline_run.mtimes_after_rerun == pipeline_run.mtimes_after_failure


def test_cache_holds_json_records_only(pipeline_run):
    """The rerun's reuse came from onedge's JSON records; no pickled Prefect result is kept."""
    from pipeline.cache import CacheRecord

    folder = RunFolder(pipeline_run.out).cache
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "train-main.json"]
    for path in folder.iterdir():
        record = CacheRecord.model_validate_json(path.read_text())
        assert record.task == path.stem and all(Path(f).is_file() for f in record.files)


def test_planted_prefect_result_in_the_cache_runs_nothing(pipeline_run, tmp_path):
    """Case 2: a cloudpickle record planted in DIR/.cache, then the train flow on the folder."""
    import base64
    import os
    import pickle

    from pipeline.flows.train_flow import train_flow

    class Plant:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "pwned"),))

    folder = RunFolder(pipeline_run.out).cache
    planted = {
        "metadata": {"serializer": {"type": "pickle", "picklelib": "pickle"}},
        "result": base64.b64encode(pickle.dumps(Plant())).decode(),
    }
    for name in ("planted", "0123456789abcdef"):
        (folder / name).write_text(json.dumps(planted))
    try:
        result = train_flow(pipeline_run.config, pipeline_run.out)
    finally:
        for name in ("planted", "0123456789abcdef"):
            (folder / name).unlink()
    assert not (tmp_path / "pwned").exists()
    assert result.checkpoint == RunFolder(pipeline_run.out).checkpoint


def test_registered_version_has_its_tags_and_signature(pipeline_run, tmp_path):
    import mlflow
    from mlflow.models import Model

    outcome = pipeline_run.result.registry
    client = client_for(pipeline_run)
    mv = client.get_model_version(outcome.model_name, outcome.version)
    tags = mv.tags
    manifest = read_manifest(pipeline_run.out / "export" / outcome.artifact)
    assert tags["onedge.dataset"] == "digits"
    assert tags["onedge.method"] == "one"
    assert tags["onedge.model"] == "resnet20"
    assert tags["onedge.branch"] == str(manifest.branch)
    assert tags["onedge.format"] == manifest.format
    assert tags["onedge.precision"] == manifest.precision
    assert tags["onedge.verdict.local-cpu"] == "pass"
    assert tags["onedge.gates"] == "pass"
    assert tags["onedge.complete"] == "true"
    for name, sha in manifest.files.items():
        assert tags[f"onedge.file_sha256.{name}"] == sha
    folder = mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(tmp_path))
    model = Model.load(str(Path(folder) / "MLmodel"))
    # outputs only: the pyfunc takes arrays at the input or image files (one schema cannot)
    assert model.signature.inputs is None
    assert [o.name for o in model.signature.outputs.inputs] == [
        "class_index", "class_name", "probabilities"
    ]  # fmt: skip
    assert model.flavors["onedge"]["sha256"] == manifest.sha256
    recorded = model.flavors["onedge"]["input"]
    assert recorded["shape"] == manifest.input.shape and recorded["transform"]["size"] == [8, 8]


def test_registered_hash_equals_manifest_and_validated(pipeline_run, tmp_path):
    import mlflow

    outcome = pipeline_run.result.registry
    client = client_for(pipeline_run)
    source = client.get_model_version_download_uri(outcome.model_name, outcome.version)
    downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp_path))
    registered = verify_artifact(downloaded / "data" / outcome.artifact).sha256  # every file
    in_export = read_manifest(pipeline_run.out / "export" / outcome.artifact).sha256
    report = json.loads((pipeline_run.out / "validate" / "local-cpu" / "report.json").read_text())
    validated = next(r["sha256"] for r in report["results"] if r["artifact"] == outcome.artifact)
    tagged = client.get_model_version(outcome.model_name, outcome.version).tags["onedge.sha256"]
    assert registered == in_export == validated == tagged == outcome.sha256


def test_first_passing_version_becomes_candidate_and_champion(pipeline_run):
    outcome = pipeline_run.result.registry
    client = client_for(pipeline_run)
    aliases = {
        k: str(v) for k, v in client.get_registered_model(outcome.model_name).aliases.items()
    }
    # the failed first run never reached the registry: this is the first version
    assert outcome.version == "1"
    assert aliases == {"candidate": "1", "champion": "1"}
    assert outcome.decision.champion and outcome.decision.candidate


def test_registered_artifact_is_the_fastest_passing_one(pipeline_run):
    """The fastest passing artifact, or one not significantly slower that is smaller/lower."""
    from pipeline.model_registry.promotion import speed_order
    from pipeline.run_folder import load_reports
    from training.stats import median_difference_interval

    run = RunFolder(pipeline_run.out)
    report = load_reports(run, pipeline_run.config.validate)["local-cpu"]
    passing = [r for r in report.results if r.verdict == "pass"]
    registered = next(r for r in passing if r.artifact == pipeline_run.result.registry.artifact)
    assert registered.latency_sample_ms and len(registered.latency_sample_ms) <= 500
    fastest = min(passing, key=lambda r: r.latency_ms.p50)
    ci = median_difference_interval(fastest.latency_sample_ms, registered.latency_sample_ms)
    assert ci.low <= 0.0  # not significantly slower than the fastest
    assert speed_order(passing)[0] is registered


def test_training_run_is_logged(pipeline_run):
    outcome = pipeline_run.result.registry
    client = client_for(pipeline_run)
    run = client.get_run(outcome.run_id)
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["data.name"] == "digits"
    metrics = json.loads((pipeline_run.out / "train" / "metrics.json").read_text())
    assert run.data.metrics["train.deployed_top1"] == pytest.approx(metrics["deployed_top1"])
    assert len(client.get_metric_history(outcome.run_id, "epoch.val_ensemble_top1")) == 2
    logged = {f.path for f in client.list_artifacts(outcome.run_id, "training")}
    assert "training/curves.png" in logged
    assert {f.path for f in client.list_artifacts(outcome.run_id, "report")} == {
        "report/report.md",
        "report/report.html",
    }
    artifacts = {f.path for f in client.list_artifacts(outcome.run_id, "artifacts")}
    assert "artifacts/onnx-int8" in artifacts and "artifacts/openvino-fp32" in artifacts


def test_report_numbers_match_report_json(pipeline_run):
    run = RunFolder(pipeline_run.out)
    report = json.loads((run.validate / "local-cpu" / "report.json").read_text())
    markdown = run.report_md.read_text()
    html = run.report_html.read_text()
    table = {
        cells[0].removesuffix(" (registered)"): cells
        for line in markdown.splitlines()
        if line.startswith("| ") and not line.startswith("| artifact")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
        if len(cells) == 12
    }
    measured = [r for r in report["results"] if r["latency_ms"]]
    assert measured and len(measured) == len(table) - 1  # + the PyTorch reference row
    for r in measured:
        cells = table[r["artifact"]]
        assert cells[3] == f"{100 * r['top1']:.2f}"
        assert cells[4] == f"{100 * r['top1_drop']:.2f}"
        assert cells[6] == f"{r['latency_ms']['p50']:.3f}"
        assert cells[7] == f"{r['latency_ms']['p99']:.3f}"
        assert cells[10] == r["verdict"]
        assert f"<td>{r['latency_ms']['p50']:.3f}</td>" in html
    assert f"version **{pipeline_run.result.registry.version}**" in markdown
    assert (run.root / "accuracy-latency.png").stat().st_size > 10_000
    assert "data:image/png;base64," in html
    assert re.search(r"\| torch-fp32 \| torch \| fp32 \| [\d.]+ \| 0\.00 \|", markdown)


def test_prefect_artifacts_hold_the_report_and_a_table_per_target(pipeline_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        reports = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["report-digits-one"]))
        )
        tables = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["validation-local-cpu"]))
        )
        limit = client.read_global_concurrency_limit_by_name(board_limit_name("local-cpu"))
    assert reports and reports[0].type == "markdown"
    latest = max(reports, key=lambda a: a.created)
    # the report with its plots embedded: the UI cannot fetch files beside report.md
    on_disk = RunFolder(pipeline_run.out).report_md.read_text()
    assert "](train/curves.png)" in on_disk and "](accuracy-latency.png)" in on_disk
    # every image of report.md embedded (the two plots, and the per-class section's images)
    assert latest.data.count("](data:image/png;base64,") == on_disk.count("![") >= 3
    strip = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
    assert strip.sub(r"[\1]", latest.data) == strip.sub(r"[\1]", on_disk)
    assert tables and all(t.type == "table" for t in tables)
    rows = json.loads(max(tables, key=lambda a: a.created).data)
    assert {r["artifact"] for r in rows} >= {"onnx-fp32", "openvino-int8"}
    assert limit.limit == 1


def test_onedge_run_on_the_same_folder_reuses_the_cache(pipeline_run, tmp_path, capsys):
    """Last in this module, as it adds a version: same config and folder, cached stages."""
    from pipeline.cli import main
    from pipeline.config import dump_config

    config_file = tmp_path / "digits-quick.yaml"
    config_file.write_text(dump_config(pipeline_run.config))
    checkpoint = pipeline_run.out / "train" / "checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns
    assert main(["run", "--config", str(config_file), "--out", str(pipeline_run.out)]) == 0
    out = capsys.readouterr().out
    assert checkpoint.stat().st_mtime_ns == before
    for text in ("speed-up", "onnx-int8", "openvino-fp32", "torch-fp32", "1.00x", "report.md"):
        assert text in out
    assert "registry: sqlite:///" in out and "version 2" in out
    assert printed_verdicts(out) == expected_verdicts(RunFolder(pipeline_run.out), "local-cpu")


def printed_verdicts(out: str) -> dict[str, str]:
    """Artifact -> the verdict cell of its row in the printed tables."""
    from pipeline.report.rows import COLUMNS

    verdicts = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        continued = not any(cells[1:])  # a long name wrapped onto the next line
        if len(cells) == len(COLUMNS) and cells[0] and cells[0] != "artifact" and not continued:
            verdicts[cells[0].removesuffix(" (registered)")] = cells[COLUMNS.index("verdict")]
    return verdicts


def expected_verdicts(run: RunFolder, spec: str) -> dict[str, str]:
    """Artifact -> its verdict in report.json; the PyTorch FP32 baseline row reads "reference"."""
    from pipeline.run_folder import load_baseline

    report = json.loads((run.target_dir(spec) / "report.json").read_text())
    baseline = load_baseline(run)
    expected = {r["artifact"]: r["verdict"] for r in report["results"]}
    if baseline is not None and baseline.artifact in expected:
        expected[baseline.artifact] = "reference"
    assert {"pass", "fail"} & set(expected.values())
    return expected


def test_report_json_says_where_the_time_went(pipeline_run):
    document = json.loads((pipeline_run.out / "report.json").read_text())
    t = document["timings"]
    steps = t["steps"]
    assert list(steps) == ["train", "export", "validate", "register", "report", "attach-report"]
    assert all(seconds > 0 for seconds in steps.values())
    assert sum(steps.values()) <= t["flow_s"]
    # the fixture called the flow as a function: Prefect's start-up is unknown there; onedge
    # run (an earlier test reran it through the CLI in this folder) measures it
    assert pipeline_run.result.timings.prefect_startup_s is None
    assert t["prefect_startup_s"] is None or t["prefect_startup_s"] >= 0
    summary = t["summary"]
    assert 0 < summary["mlflow_share"] < 1 and 0 <= summary["prefect_share"] < 1
    assert summary["mlflow_share"] == pytest.approx(
        (steps["register"] + steps["attach-report"]) / summary["total_s"]
    )
    assert [row["artifact"] for row in document["rows"]] == [
        row.artifact for row in pipeline_run.result.rows
    ]
    assert pipeline_run.result.timings.steps.keys() == steps.keys()
    # the failed first run left the store its child created; the rerun finds it and starts none
    assert (pipeline_run.out / "mlflow.db").is_file() and t["mlflow_background_s"] is None
    markdown = (pipeline_run.out / "report.md").read_text()
    assert "## Where the time went" in markdown and "train: " in markdown


def test_baseline_and_local_target_take_turns_on_the_board(pipeline_run):
    """This run's two tasks on the local CPU are chained (wait_for), not raced for its slot:
    the loser of a race sleeps for Prefect's Retry-After, seconds after the slot is free."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(limit=200)
    baselines = [t for t in tasks if t.name.startswith("torch-baseline")]
    assert baselines
    checked = 0
    for baseline in baselines:
        local = [
            t for t in tasks
            if t.flow_run_id == baseline.flow_run_id and t.name.startswith("validate")
        ]  # fmt: skip
        for task_run in local:
            waits = [getattr(i, "id", None) for i in task_run.task_inputs.get("wait_for", [])]
            assert baseline.id in waits
            if task_run.start_time and baseline.end_time:
                assert task_run.start_time >= baseline.end_time
                checked += 1
    assert checked >= 1
