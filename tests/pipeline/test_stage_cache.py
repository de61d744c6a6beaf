"""The train flow runs every stage as its own cached task: a teacher is trained once."""

from __future__ import annotations

import json

from tests.pipeline.conftest import pipeline_config
from training.checkpoint import read_checkpoint

# a KD run with its teacher trained as the first stage, as small as digits allows
KD = {
    "method.name": "kd",
    "method.teacher.epochs": 1,
    "train.epochs": 1,
    "data.limit_train": 128,
    "model.width": 0.25,
}


def test_another_student_setting_reuses_the_teacher_stage(prefect_server, tmp_path, monkeypatch):
    from pipeline.flows import train_flow

    ran: list[str] = []
    real = train_flow.run_stage

    def counted(spec, *args, **kwargs):
        ran.append(spec.name)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(train_flow, "run_stage", counted)
    first = train_flow.train_flow(pipeline_config(**KD), tmp_path)
    teacher = tmp_path / "train" / "stages" / "teacher" / "checkpoint.pt"
    teacher_mtime = teacher.stat().st_mtime_ns
    assert ran == ["teacher", "student"]

    second = train_flow.train_flow(pipeline_config(**KD, **{"method.alpha": 0.5}), tmp_path)
    assert ran == ["teacher", "student", "student"]  # the teacher came from its cache record
    assert teacher.stat().st_mtime_ns == teacher_mtime
    sha = [s["sha256"] for s in second.metrics["stages"] if s["name"] == "teacher"]
    assert read_checkpoint(second.checkpoint)["teachers"] == sha == first.metrics["teachers"]
    assert read_checkpoint(second.checkpoint)["config"]["method"]["alpha"] == 0.5
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["seconds_total"] > metrics["seconds_stage"]  # the teacher's time counted

    # the same config again: nothing trains; another teacher setting retrains both stages
    train_flow.train_flow(pipeline_config(**KD, **{"method.alpha": 0.5}), tmp_path)
    assert ran == ["teacher", "student", "student"]
    train_flow.train_flow(pipeline_config(**{**KD, "method.teacher.epochs": 2}), tmp_path)
    assert ran[3:] == ["teacher", "student"]
