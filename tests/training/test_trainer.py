import json

import pytest
import torch

from onedge.errors import ConfigError
from tests.conftest import quick_config
from training.checkpoint import load_checkpoint
from training.checkpoint_file import read_checkpoint, save_checkpoint
from training.errors import CheckpointError, TrainingError
from training.methods import METHODS
from training.stage_build import lr_factor
from training.trainer import train


def tiny(**over):
    base = {"data.limit_train": 256, "model.width": 0.5, "train.epochs": 2}
    base.update(over)
    return quick_config(**base).training_config()


def test_trained_run_writes_its_files_and_learns(digits_run):
    for name in ("checkpoint.pt", "config.yaml", "history.json", "metrics.json", "curves.png"):
        assert (digits_run / name).is_file(), name
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert 0 <= metrics["deployed_branch"] < 3
    assert len(metrics["branch_top1"]) == 3
    assert all(0.0 <= a <= 1.0 for a in metrics["branch_top1"])
    assert metrics["deployed_top1"] == metrics["branch_top1"][metrics["deployed_branch"]]
    assert metrics["ensemble_top1"] > 0.8  # six epochs of ONE on digits already learn a lot
    history = json.loads((digits_run / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert all(abs(sum(h["gate_mean"]) - 1) < 1e-4 for h in history)
    preds = json.loads((digits_run / "test_predictions.json").read_text())
    labels = preds["labels"]
    assert len(labels) == metrics["test_images"] == len(preds["deployed"])
    hits = sum(p == y for p, y in zip(preds["deployed"], labels, strict=True))
    assert hits / len(labels) == pytest.approx(metrics["deployed_top1"])
    ens_hits = sum(p == y for p, y in zip(preds["ensemble"], labels, strict=True))
    assert ens_hits / len(labels) == pytest.approx(metrics["ensemble_top1"])


def test_the_split_does_not_move_with_the_training_seed():
    from training.data import load_data

    cfg = tiny()
    other = cfg.model_copy(update={"seed": 5})
    a, b = load_data(cfg.data), load_data(other.data)
    for split in ("train", "val", "calibration", "test"):
        assert (getattr(a, split).indices == getattr(b, split).indices).all()
    moved = load_data(cfg.data.model_copy(update={"split_seed": 1}))
    assert not (moved.test.indices == a.test.indices).all()


def test_dml_defaults_to_plain_softmax():
    from training.methods import build_method

    cfg = tiny(**{"method.name": "dml"})
    assert build_method(cfg.method).cfg.temperature == 1.0
    assert build_method(tiny().method).cfg.temperature == 3.0  # ONE keeps T = 3


def test_checkpoint_round_trip(digits_checkpoint):
    loaded = load_checkpoint(digits_checkpoint)
    assert loaded.config.method.name == "one"
    assert loaded.model.num_branches == 3
    assert not loaded.model.training
    assert len(loaded.sha256) == 64


def test_resume_gives_the_same_weights_as_a_straight_run(tmp_path):
    # a step schedule does not depend on train.epochs (cosine does: it spans the planned epochs)
    step = {"train.schedule": "step", "train.milestones": "[3]"}
    straight = train(tiny(**step, **{"train.epochs": 4}), tmp_path / "straight")
    train(tiny(**step, **{"train.epochs": 2}), tmp_path / "resumed")
    resumed = train(tiny(**step, **{"train.epochs": 4}), tmp_path / "resumed", resume=True)
    a = read_checkpoint(straight.checkpoint)["model"]
    b = read_checkpoint(resumed.checkpoint)["model"]
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst == 0.0
    assert straight.metrics["branch_top1"] == resumed.metrics["branch_top1"]


def test_resume_with_another_config_is_refused(tmp_path):
    train(tiny(), tmp_path / "run")
    with pytest.raises(CheckpointError, match="config differs in model"):
        train(tiny(**{"model.width": 0.25, "train.epochs": 3}), tmp_path / "run", resume=True)
    with pytest.raises(ConfigError, match="already holds 2 epochs"):
        train(tiny(), tmp_path / "run", resume=True)


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(TrainingError, match="loss became"):
        train(tiny(**{"train.lr": 1e12, "train.epochs": 3}), tmp_path / "nan")


# per method, the smallest recipe that still runs every stage (teachers of one epoch)
QUICK = {
    "kd": {"method.teacher.epochs": 1},
    "ensemble-kd": {"method.members": 2, "method.member_epochs": 1},
    "self-distill": {"method.generations": 1},
    "meal": {"method.pool": "[{epochs: 1}, {epochs: 1}]"},
    "srm": {"method.teacher.epochs": 1, "method.dictionary_epochs": 1},
    "compact": {"method.block_epochs": 1},
}


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_extracts_and_exports(tmp_path, method):
    """One epoch of every registered method (teacher stages included), then its student to ONNX."""
    from export.extract import extract_branch
    from export.onnx import onnx_parity, torch_logits, torch_to_onnx
    from training.data import load_data, to_numpy

    quick = {"train.epochs": 1, "data.limit_train": 128, "model.width": 0.25}
    cfg = tiny(**{"method.name": method, **quick, **QUICK.get(method, {})})
    result = train(cfg, tmp_path / method)
    loaded = load_checkpoint(result.checkpoint)
    assert len(result.metrics["branch_top1"]) == loaded.model.num_branches
    stages = result.metrics["stages"]
    assert stages[-1]["sha256"] == loaded.sha256
    assert result.metrics["seconds_total"] == pytest.approx(sum(s["seconds"] for s in stages))
    assert result.metrics["seconds_total"] >= result.metrics["seconds_stage"] > 0
    images, _ = to_numpy(load_data(cfg.data).test, limit=64)
    student = extract_branch(loaded, images=images)
    # opset 17, the TorchScript exporter (0.1 s, not 2 s): the default torch.export-based path does
    # not depend on the method and is checked per network in tests/training/test_models.py
    example = torch.from_numpy(images[:2])
    path = torch_to_onnx(student.module, tmp_path / "student.onnx", example, opset=17)
    report = onnx_parity(path, torch_logits(student.module, images), images, 1e-4, 1.0)
    assert report.top1_agreement == 1.0


def test_kd_learns_from_a_teacher_checkpoint(tmp_path, digits_checkpoint):
    cfg = tiny(**{"method.name": "kd", "method.teacher": str(digits_checkpoint)})
    result = train(cfg, tmp_path / "kd")
    assert len(result.metrics["branch_top1"]) == 1
    with pytest.raises(ConfigError, match="needs method.teacher"):
        train(tiny(**{"method.name": "kd"}), tmp_path / "kd2")


def test_corrupt_and_foreign_checkpoints(tmp_path, digits_checkpoint):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(digits_checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="not an onedge checkpoint"):
        load_checkpoint(foreign)
    other = tmp_path / "other.pt"
    payload = read_checkpoint(digits_checkpoint)
    payload["config"]["model"]["width"] = 0.5  # claims another architecture than it holds
    save_checkpoint(other, {k: v for k, v in payload.items() if not k.startswith("format")})
    with pytest.raises(CheckpointError, match="another architecture"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_lr_schedules():
    cfg = tiny(**{"train.epochs": 10, "train.warmup_epochs": 0})
    assert lr_factor(cfg, 0) == 1.0 and lr_factor(cfg, 5) == pytest.approx(0.5)
    step = tiny(
        **{
            "train.schedule": "step",
            "train.milestones": "[2, 4]",
            "train.gamma": 0.1,
            "train.warmup_epochs": 0,
        }
    )
    assert [round(lr_factor(step, e), 6) for e in (0, 2, 4)] == [1.0, 0.1, 0.01]


def test_a_checkpoint_of_an_older_run_loads(tmp_path, digits_checkpoint):
    payload = read_checkpoint(digits_checkpoint)
    payload["config"]["method"] = {
        "name": "one",
        "temperature": None,
        "rampup": True,
        "rampup_epochs": 80,
        "alpha": 0.9,
        "teacher": None,
    }
    old = tmp_path / "old.pt"
    save_checkpoint(old, {k: v for k, v in payload.items() if not k.startswith("format")})
    loaded = load_checkpoint(old)
    assert loaded.config.method.temperature == 3.0 and loaded.model.num_branches == 3


def test_the_loop_syncs_with_the_host_only_every_log_every_steps(tmp_path, monkeypatch):
    import training.epoch as epoch

    checked = []
    real = epoch.check_finite
    monkeypatch.setattr(
        epoch,
        "check_finite",
        lambda loss, opt, e, step, every: checked.append(step) or real(loss, opt, e, step, every),
    )
    cfg = tiny(**{"train.epochs": 1, "train.log_every": 3, "data.batch_size": 16})
    result = train(cfg, tmp_path / "sync")
    steps = 256 // 16  # limit_train 256 at batch 16, drop_last
    assert checked == [s for s in range(steps) if s % 3 == 0 or s == steps - 1]
    history = json.loads((result.out_dir / "history.json").read_text())
    assert history[0]["images_per_second"] > 0 and history[0]["train_loss"] > 0
