"""Multi-stage training: recipes, teachers given or trained, resume at the stage and epoch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from onedge.errors import ConfigError
from tests.conftest import ROOT, quick_config
from training.checkpoint import load_checkpoint
from training.checkpoint_file import read_checkpoint, save_checkpoint
from training.data import DatasetSpec
from training.errors import CheckpointError
from training.stages import method_stages
from training.teachers import load_teachers
from training.trainer import train

# two stages (a teacher, then the KD student), each long enough to be stopped in the middle
KILLED = {
    "method.name": "kd",
    "method.teacher.epochs": 4,
    "train.epochs": 3,
    "data.limit_train": 256,
    "model.width": 0.25,
}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_killed_multi_stage_run_resumes_to_the_same_weights(tmp_path):
    cfg = quick_config(**KILLED).training_config()
    straight = train(cfg, tmp_path / "straight")

    killed = tmp_path / "killed"
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "train", "-c", str(config_file), "-o", str(killed)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    teacher_ckpt = killed / "stages" / "teacher" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not teacher_ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert teacher_ckpt.exists(), "the run was killed before its first checkpoint"
    assert not (killed / "metrics.json").exists(), "the run finished before it was killed"
    stopped_at = read_checkpoint(teacher_ckpt)["epoch"]

    resumed = train(cfg, killed, resume=True)
    assert same_weights(straight.checkpoint, resumed.checkpoint)
    assert same_weights(
        teacher_ckpt, tmp_path / "straight" / "stages" / "teacher" / "checkpoint.pt"
    )
    assert resumed.metrics["branch_top1"] == straight.metrics["branch_top1"]
    history = json.loads((killed / "stages" / "teacher" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and stopped_at < 4
    assert [s["name"] for s in resumed.metrics["stages"]] == ["teacher", "student"]


def test_a_given_teacher_is_checked_and_identified_by_sha256(tmp_path, digits_checkpoint):
    cfg = quick_config(
        **{"method.name": "kd", "method.teacher": str(digits_checkpoint), "train.epochs": 1}
    ).training_config()
    assert [s.name for s in method_stages(cfg)] == ["student"]  # no teacher stage to train
    result = train(cfg, tmp_path / "kd")
    sha = load_checkpoint(digits_checkpoint).sha256
    assert result.metrics["teachers"] == [sha]
    assert read_checkpoint(result.checkpoint)["teachers"] == [sha]
    # a teacher of another data set (other classes, other image size) is refused
    loaded = load_checkpoint(digits_checkpoint)
    other = DatasetSpec.from_dict(
        {**loaded.spec.to_dict(), "num_classes": 5, "class_names": list("abcde")}
    )
    with pytest.raises(ConfigError, match="trained for 10 classes"):
        load_teachers([digits_checkpoint], other, torch.device("cpu"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_teachers([tmp_path / "missing.pt"], loaded.spec, torch.device("cpu"))
    # a method that takes no teacher refuses one rather than ignoring it
    from training.methods import build_method

    with pytest.raises(ConfigError, match="learns from no teacher"):
        build_method(quick_config().method).prepare(torch.device("cpu"), [loaded])


def test_resume_refuses_a_stage_whose_teacher_changed(tmp_path, digits_checkpoint, digits_run):
    sets = {"method.name": "kd", "train.epochs": 1, "data.limit_train": 128}
    cfg = quick_config(**sets, **{"method.teacher": str(digits_checkpoint)}).training_config()
    train(cfg, tmp_path / "kd")
    other = tmp_path / "other.pt"
    payload = read_checkpoint(digits_checkpoint)
    save_checkpoint(other, {**{k: v for k, v in payload.items() if k != "format"}, "epoch": 5})
    moved = cfg.model_copy(update={"method": cfg.method.model_copy(update={"teacher": other})})
    longer = moved.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    with pytest.raises(CheckpointError, match="other teacher checkpoints"):
        train(longer, tmp_path / "kd", resume=True)


def test_recipes_of_the_teacher_based_methods():
    ens = quick_config(**{"method.name": "ensemble-kd", "method.members": 3}).training_config()
    specs = method_stages(ens)
    assert [s.name for s in specs] == ["seed-1", "seed-2", "seed-3", "student"]
    assert [s.config.seed for s in specs] == [1, 2, 3, 0]
    assert {s.config.method.name for s in specs[:3]} == {"vanilla"}
    assert specs[-1].teachers == ("seed-1", "seed-2", "seed-3")
    born = quick_config(
        **{"method.name": "self-distill", "method.generations": 3}
    ).training_config()
    specs = method_stages(born)
    assert [s.name for s in specs] == ["gen-0", "gen-1", "gen-2", "gen-3"]
    assert [s.teachers for s in specs] == [(), ("gen-0",), ("gen-1",), ("gen-2",)]
    assert len({s.config.seed for s in specs}) == 4  # each generation a fresh network
    kd = quick_config(
        **{"method.name": "kd", "method.teacher.model.name": "resnet32"}
    ).training_config()
    teacher, student = method_stages(kd)
    assert teacher.config.model.name == "resnet32" and teacher.config.method.name == "vanilla"
    # the teacher stage's config holds nothing of the student
    other = quick_config(
        **{
            "method.name": "kd",
            "method.teacher.model.name": "resnet32",
            "method.alpha": 0.5,
            "method.temperature": 2.0,
        }
    ).training_config()
    assert method_stages(other)[0].config == teacher.config
    with pytest.raises(ConfigError, match="needs method.teacher"):
        method_stages(quick_config(**{"method.name": "kd"}).training_config())
    with pytest.raises(ConfigError, match="one-stage method"):
        method_stages(
            quick_config(
                **{"method.name": "kd", "method.teacher.method.name": "kd"}
            ).training_config()
        )


def test_self_distill_keeps_and_scores_every_generation(tmp_path):
    cfg = quick_config(
        **{
            "method.name": "self-distill",
            "method.generations": 2,
            "train.epochs": 1,
            "data.limit_train": 128,
            "model.width": 0.25,
        }
    ).training_config()
    result = train(cfg, tmp_path / "born")
    stages = result.metrics["stages"]
    assert [s["name"] for s in stages] == ["gen-0", "gen-1", "gen-2"]
    assert all(0.0 <= s["deployed_top1"] <= 1.0 for s in stages)
    for name in ("gen-0", "gen-1"):
        kept = json.loads((tmp_path / "born" / "stages" / name / "metrics.json").read_text())
        assert (
            kept["deployed_top1"] == next(s for s in stages if s["name"] == name)["deployed_top1"]
        )
    gen1 = read_checkpoint(tmp_path / "born" / "stages" / "gen-1" / "checkpoint.pt")
    gen0 = load_checkpoint(tmp_path / "born" / "stages" / "gen-0" / "checkpoint.pt")
    assert gen1["teachers"] == [gen0.sha256]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_resolves_its_stages(path):
    from pipeline.config import load_config

    specs = method_stages(load_config(path).training_config())
    assert specs and len({s.name for s in specs}) == len(specs)


def test_srm_stages_keep_the_heads_out_of_the_student(tmp_path):
    cfg = quick_config(
        **{
            "method.name": "srm",
            "method.teacher.epochs": 1,
            "method.dictionary_epochs": 1,
            "method.mu": 1.5,
            "train.epochs": 1,
            "data.limit_train": 128,
            "model.width": 0.25,
        }
    ).training_config()
    assert [s.name for s in method_stages(cfg)] == ["teacher", "dictionary", "init", "student"]
    result = train(cfg, tmp_path / "srm")
    run = tmp_path / "srm" / "stages"
    dictionary = read_checkpoint(run / "dictionary" / "checkpoint.pt")["dictionary"]
    teacher = load_checkpoint(run / "teacher" / "checkpoint.pt").model
    for tap in ("stage2", "stage3"):
        D = teacher.feature(tap, 0).channels
        assert tuple(dictionary[tap]["C"].shape) == (D, round(1.5 * D))
    heads = read_checkpoint(run / "init" / "checkpoint.pt")["auxiliaries"]
    assert {k.split(".")[0] for k in heads} == {"stage2", "stage3"}
    student = read_checkpoint(result.checkpoint)
    assert student["auxiliaries"] == {} and student["config"]["method"]["phase"] == "distill"
    assert result.metrics["teachers"] == [load_checkpoint(run / "teacher" / "checkpoint.pt").sha256]


@pytest.mark.parametrize("reverse", [True, False])
def test_meal_draws_from_its_pool_and_keeps_the_discriminators_apart(tmp_path, reverse):
    from export.extract import extract_branch

    cfg = quick_config(
        **{
            "method.name": "meal",
            "method.pool": "[{epochs: 1}, {epochs: 1, model: {name: resnet32, width: 0.25}}]",
            "method.reverse_gradient": reverse,
            "train.epochs": 1,
            "data.limit_train": 128,
            "model.width": 0.25,
        }
    ).training_config()
    assert [s.name for s in method_stages(cfg)] == ["teacher-1", "teacher-2", "student"]
    result = train(cfg, tmp_path / "meal")
    saved = read_checkpoint(result.checkpoint)
    assert {k.split(".")[0] for k in saved["auxiliaries"]} == {"stage2", "stage3"}
    assert len(result.metrics["teachers"]) == 2
    history = json.loads((tmp_path / "meal" / "history.json").read_text())
    assert {"train_adv_stage2", "train_soft_ce_stage3", "train_soft_ce_logits"} <= set(history[0])
    student = extract_branch(result.checkpoint)
    names = {n for n, _ in student.module.named_parameters()}
    assert not any("auxiliar" in n or n.startswith("stage2.0.weight") for n in names)
