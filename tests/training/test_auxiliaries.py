"""What trains is the network plus the method's auxiliary modules; only the network deploys."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import quick_config
from training.checkpoint import load_checkpoint
from training.checkpoint_file import read_checkpoint
from training.losses import ensemble_ce_loss
from training.method_configs import METHOD_CONFIGS
from training.methods import METHODS, Method
from training.trainer import train


class AdaptedMethod(Method):
    """A test method: CE on every branch plus an adapter that maps branch 1's stage 3 to 0's."""

    def build_auxiliaries(self, network):
        self.taps = ("stage3",)
        src, dst = network.feature("stage3", 1), network.feature("stage3", 0)
        self.auxiliaries = nn.ModuleDict(
            {"adapt": nn.Conv2d(src.channels, dst.channels, kernel_size=1, bias=False)}
        )
        return self.auxiliaries

    def loss(self, outputs, inputs, targets, epoch):
        total, parts = ensemble_ce_loss(outputs.branch_logits, targets)
        f0, f1 = outputs.features["stage3"][0], outputs.features["stage3"][1]
        mse = F.mse_loss(self.auxiliaries["adapt"](f1), f0.detach())
        return total + mse, {**parts, "mse": mse}


def config(monkeypatch, epochs: int):
    monkeypatch.setitem(METHODS._entries, "adapted", AdaptedMethod)
    monkeypatch.setitem(METHOD_CONFIGS._entries, "adapted", AdaptedMethod.config)
    sets = {
        "method.name": "adapted",
        "model.branches": 2,
        "model.width": 0.25,
        "data.limit_train": 128,
        "train.epochs": epochs,
        "train.schedule": "step",
    }
    return quick_config(**sets).training_config()


def test_auxiliaries_train_are_checkpointed_apart_and_never_reach_a_student(monkeypatch, tmp_path):
    torch.manual_seed(0)
    straight = train(config(monkeypatch, 2), tmp_path / "straight")
    saved = read_checkpoint(straight.checkpoint)
    assert set(saved["auxiliaries"]) == {"adapt.weight"}
    assert not any("adapt" in k for k in saved["model"])
    assert saved["auxiliaries"]["adapt.weight"].shape[:2] == (16, 16)  # 64 * 0.25 channels
    # the adapter was optimised (its gradient flowed through the tapped maps)
    fresh = AdaptedMethod(config(monkeypatch, 2).method)
    loaded = load_checkpoint(straight.checkpoint)
    torch.manual_seed(0)
    initial = fresh.build_auxiliaries(loaded.model)["adapt"].weight
    assert not torch.allclose(initial, saved["auxiliaries"]["adapt.weight"])

    # loading for extract/export rebuilds the network alone
    network_keys = set(loaded.model.state_dict())
    assert network_keys == set(saved["model"])
    assert not any("adapt" in k or "auxiliar" in k for k in network_keys)
    for branch in range(2):
        student = loaded.model.extract(branch)
        assert not any("adapt" in k for k in student.state_dict())
        assert not any(
            isinstance(m, nn.Conv2d)
            and m.in_channels == m.out_channels == 16
            and m.kernel_size == (1, 1)
            for m in student.modules()
        )

    # resume restores the auxiliaries exactly
    train(config(monkeypatch, 1), tmp_path / "resumed")
    resumed = train(config(monkeypatch, 2), tmp_path / "resumed", resume=True)
    again = read_checkpoint(resumed.checkpoint)
    torch.testing.assert_close(
        again["auxiliaries"]["adapt.weight"], saved["auxiliaries"]["adapt.weight"], rtol=0, atol=0
    )


def test_student_ensemble_trains_a_family_and_keeps_its_adapters_apart(tmp_path):
    sets = {
        "method.name": "student-ensemble",
        "method.widths": "[1.0, 0.5, 0.25]",
        "model.width": 0.5,
        "data.limit_train": 128,
        "train.epochs": 1,
    }
    result = train(quick_config(**sets).training_config(), tmp_path / "family")
    assert result.metrics["branch_widths"] == [1.0, 0.5, 0.25]
    assert len(result.metrics["branch_top1"]) == 3
    saved = read_checkpoint(result.checkpoint)
    # resnet20 students share the stem only: adapters on stages 1..3 for students 1 and 2
    assert set(saved["auxiliaries"]) == {f"stage{s}_s{j}.weight" for s in (1, 2, 3) for j in (1, 2)}
    assert saved["auxiliaries"]["stage3_s2.weight"].shape[:2] == (32, 8)  # 64*.5 <- 64*.5*.25
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.model.widths == [1.0, 0.5, 0.25]
    assert loaded.model.shared_taps == ["stem"]
    assert set(loaded.model.state_dict()) == set(saved["model"])
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        out = loaded.model(x)
        for k in range(3):
            student = loaded.model.extract(k)
            assert not any("stage" in name for name, _ in student.named_children())
            assert (student(x) - out.branch_logits[k]).abs().max().item() <= 1e-5
