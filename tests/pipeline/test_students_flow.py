"""`onedge run` on configs/digits-students.yaml: a family of students, one champion per target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.manifest import verify_artifact
from pipeline.config import load_config
from pipeline.errors import PromotionError
from pipeline.model_registry.per_target import choose_per_target
from pipeline.model_registry.target_versions import PER_TARGET_FILE, PerTargetOutcome
from pipeline.run_folder import RunFolder, load_reports, slug

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "digits-students.yaml"
# the embedded config with shorter training, short timings and the fast ONNX exporter; latency limits and the INT8 gate
# loosened (a busy 2-core machine has p99 spikes of several ms), the device's size budget kept
QUICK = [
    "validate.budgets={local-cpu#gateway: {max_p99_ms: 1000}, "
    "local-cpu#device: {max_p99_ms: 1000, max_size_mb: 0.06}}",
    "validate.gates.max_top1_drop=0.2",
    "validate.gates.default_max_p99_ms=1000",
    "train.epochs=8",
    "train.progress=false",
    "export.calibration_size=128",
    "export.ort_int8.timing_seconds=0.1",
    "export.opset=17",  # the TorchScript exporter: 15 exports in seconds (opset 18: tests/export)
    "validate.settings.warmup_seconds=0.05",
    "validate.settings.warmup_calls=5",
    "validate.settings.timed_seconds=0.1",
    "validate.settings.timed_calls=20",
    "validate.settings.throughput_calls=3",
    "validate.retries=0",
    "registry.retries=0",
]
GATEWAY, DEVICE = "local-cpu#gateway", "local-cpu#device"


@pytest.fixture(scope="module")
def students_run(prefect_server, tmp_path_factory):
    from pipeline.cli import main

    out = tmp_path_factory.mktemp("students") / "run"
    store = f"sqlite:///{out.parent / 'mlflow.db'}"
    args = ["run", "--config", str(CONFIG), "--out", str(out), "--set", *QUICK]
    args.append(f"registry.tracking_uri={store}")
    return out, store, args, main


def test_each_target_gets_its_own_champion_of_its_own_width(students_run, capsys):
    out, store, args, main = students_run
    assert main(args) == 0
    printed = capsys.readouterr().out
    run = RunFolder(out)
    config = load_config(run.config)
    outcome = PerTargetOutcome.model_validate_json((out / PER_TARGET_FILE).read_text())
    reports = load_reports(run, config.validate)
    expected = choose_per_target(reports.values(), config.validate.budgets)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store, registry_uri=store)
    name = outcome.model_name
    widths = {}
    for spec in (GATEWAY, DEVICE):
        t = outcome.targets[spec]
        assert t.choice.pick == expected[spec].pick is not None
        registered = t.registered
        alias = f"champion-{spec.replace('#', '-')}"
        assert registered.aliases[alias] == registered.version  # first run: champion
        mv = client.get_model_version_by_alias(name, alias)
        assert str(mv.version) == registered.version
        manifest = verify_artifact(out / "export" / t.choice.pick)
        validated = next(r for r in reports[spec].results if r.artifact == t.choice.pick)
        # what was validated on this target is what its alias serves
        assert registered.sha256 == manifest.sha256 == validated.sha256
        assert mv.tags["onedge.sha256"] == manifest.sha256
        assert mv.tags["onedge.target"] == spec
        assert float(mv.tags["onedge.width"]) == manifest.width
        assert mv.tags["onedge.branch"] == str(manifest.branch)
        widths[spec] = manifest.width
        assert t.choice.pick in printed and alias in printed
    # the device's budget (0.06 MB) admits only the narrowest student; the gateway takes the most
    # accurate artifact, which is of another width unless the narrowest is itself the best
    assert widths[DEVICE] == 0.2
    best = max(
        (r for r in reports[GATEWAY].results if r.verdict == "pass"),
        key=lambda r: (r.top1, -r.latency_ms.p50),
    )
    narrowest_is_best = best.artifact.startswith("s4-")
    assert widths[GATEWAY] != widths[DEVICE] or narrowest_is_best, outcome.model_dump_json()
    assert "candidate" not in {a for a in client.get_registered_model(name).aliases}
    report = (out / "report.md").read_text()
    assert "## Per-target choice" in report and "## Students" in report
    assert all((out / f"target-{slug(t)}.png").is_file() for t in (GATEWAY, DEVICE))
    students = json.loads((out / "export" / "export.json").read_text())["students"]
    assert [s["width"] for s in students] == [1.0, 0.8, 0.6, 0.4, 0.2]


def test_promote_and_rollback_per_target(students_run):
    from pipeline.cli import main as cli
    from pipeline.model_registry.target_versions import promote_for_target, rollback_for_target
    from pipeline.model_registry.tracking import connect

    out, store, _, _ = students_run
    outcome = PerTargetOutcome.model_validate_json((out / PER_TARGET_FILE).read_text())
    client = connect(store)
    name = outcome.model_name
    gateway = outcome.targets[GATEWAY].registered.version
    device = outcome.targets[DEVICE].registered.version
    # a version chosen for the gateway is not the device's to take, unless forced
    with pytest.raises(PromotionError, match="chosen and validated for target local-cpu#gateway"):
        promote_for_target(client, name, gateway, DEVICE)
    aliases = promote_for_target(client, name, gateway, DEVICE, force=True)
    assert aliases["champion-local-cpu-device"] == gateway
    assert aliases["champion-local-cpu-gateway"] == gateway  # the other target is untouched
    assert cli(["rollback", "--run", str(out), "--target", DEVICE]) == 0
    aliases = {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
    assert aliases["champion-local-cpu-device"] == device
    assert aliases["champion-local-cpu-gateway"] == gateway
    with pytest.raises(PromotionError, match="only champion-local-cpu-gateway"):
        rollback_for_target(client, name, GATEWAY)
