"""model.init: state dicts (timm's, torchvision's, onedge's plain names) into every branch, checked."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from onedge.files import sha256_file
from pipeline.cli import main
from tests.conftest import ROOT
from training.config import ModelConfig
from training.init_weights import InitWeightsError, freeze_stages, init_network, read_state_dict
from training.models import build_model
from training.models.timm_family import TIMM_ARCHITECTURES, timm_reference

CONFIG = str(ROOT / "configs/digits-one.yaml")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomised(net: nn.Module, seed: int = 1) -> nn.Module:
    """Batch norms away from identity, so a tensor loaded into the wrong place would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()


@functools.cache
def timm_file(architecture: str, folder: Path, classes: int = 10, channels: int = 3) -> Path:
    """timm's own network (as a user would save it) written as a state dict."""
    torch.manual_seed(3)
    net = randomised(timm_reference(architecture, classes, channels, 32))
    path = folder / f"{architecture}-{classes}-{channels}.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("init")


def timm_model(architecture: str, *, branches: int = 2, channels: int = 3, classes: int = 10):
    torch.manual_seed(0)
    cfg = ModelConfig(name=f"timm/{architecture}", branches=branches, branch_point=3)
    return build_model(cfg, num_classes=classes, in_channels=channels, image_size=32)


@pytest.mark.parametrize("architecture", TIMM_ARCHITECTURES)
def test_every_branch_of_a_timm_model_starts_from_the_file(architecture, folder):
    """Trunk and each branch take timm's tensors: every branch computes timm's own logits."""
    path = timm_file(architecture, folder)
    model = timm_model(architecture)
    report = init_network(model, path)
    assert set(report.fresh.values()) <= {"gate: starts fresh"} and not report.adapted
    assert len(report.loaded) + len(report.fresh) == report.total and not report.unused
    assert report.sha256 == sha256_file(path)
    reference = timm_reference(architecture, 10, 3, 32)
    reference.load_state_dict(torch.load(path, weights_only=True))
    model.eval(), reference.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference(x)
        for logits in model(x).branch_logits:
            assert (logits - expected).abs().max().item() <= 1e-5


def test_classifier_and_first_convolution_are_adapted(folder):
    path = timm_file("mobilenetv3_small_100", folder, classes=5, channels=3)
    model = timm_model("mobilenetv3_small_100", branches=3, channels=1, classes=10)
    gate_before = model.gate.fc.weight.clone()
    report = init_network(model, path)
    state = read_state_dict(path)
    (conv,) = report.adapted
    assert "summed from 3 to 1 input channels" in report.adapted[conv]
    torch.testing.assert_close(model.state_dict()[conv], state["conv_stem.weight"].sum(1, True))
    reasons = set(report.fresh.values())
    assert "classifier re-initialised: the file has 5 classes, this model 10" in reasons
    assert sum("classifier" in r for r in report.fresh.values()) == 6  # weight + bias x 3 heads
    assert torch.equal(model.gate.fc.weight, gate_before)  # the gate starts fresh
    for k in range(3):  # every branch's own copy of stage 3 took the file's tensors
        body = model.bodies[k].state_dict()
        assert torch.equal(body["0.blocks_3.0.conv_pw.weight"], state["blocks.3.0.conv_pw.weight"])
    assert "5 classes" in report.summary() and "adapted" in report.summary()


def test_one_channel_file_is_repeated_over_three_and_safetensors_load(folder):
    source = read_state_dict(timm_file("regnetx_002", folder, channels=1))
    path = folder / "grey.safetensors"
    save_file({k: v.contiguous() for k, v in source.items()}, str(path))
    model = timm_model("regnetx_002", channels=3)
    report = init_network(model, path)
    (conv,) = report.adapted
    assert "repeated from 1 to 3" in report.adapted[conv]
    torch.testing.assert_close(
        model.state_dict()[conv], source["stem.conv.weight"].repeat(1, 3, 1, 1) / 3
    )


def test_onedge_plain_student_and_torchvision_files(tmp_path):
    """An extracted student's state dict (trunk/body/head) and torchvision's own both load."""
    import torchvision

    torch.manual_seed(0)
    cfg = ModelConfig(name="resnet20", branches=1)
    student = randomised(build_model(cfg, num_classes=10, in_channels=1, image_size=8).extract(0))
    torch.save(student.state_dict(), tmp_path / "student.pt")
    model = build_model(
        cfg.model_copy(update={"branches": 3}), num_classes=10, in_channels=1, image_size=8
    )
    init_network(model, tmp_path / "student.pt")
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        for logits in model.eval()(x).branch_logits:
            torch.testing.assert_close(logits, student(x))
    for name, net in (
        ("resnet18", torchvision.models.resnet18(num_classes=10)),
        ("mobilenet_v2", torchvision.models.mobilenet_v2(num_classes=10)),
    ):
        torch.save(randomised(net).state_dict(), tmp_path / f"{name}.pth")
        ours = build_model(
            ModelConfig(name=name, branches=2), num_classes=10, in_channels=3, image_size=64
        )
        init_network(ours, tmp_path / f"{name}.pth")
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            diff = (ours.eval()(x).branch_logits[1] - net(x)).abs().max().item()
        assert diff <= 1e-5, name


class NotWeights:
    """A pickled class: the weights-only reader must refuse it."""


def test_bad_files_end_in_one_clear_error(tmp_path, folder):
    model = timm_model("mobilenetv3_small_100")
    good = timm_file("mobilenetv3_small_100", folder)
    cases = {}
    shifted = {
        k: torch.zeros(tuple(s + 1 for s in v.shape)) for k, v in read_state_dict(good).items()
    }
    torch.save(shifted, tmp_path / "shapes.pth")
    cases["shapes.pth"] = "fits nothing in timm/mobilenetv3_small_100"
    torch.save({"weights": torch.zeros(2), "code": NotWeights()}, tmp_path / "pickled.pth")
    cases["pickled.pth"] = "not a weights-only state dict"
    (tmp_path / "truncated.pth").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases["truncated.pth"] = "cannot be read (truncated or corrupt"
    (tmp_path / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    cases["truncated.safetensors"] = "not a readable safetensors file"
    other = timm_file("mobilenetv3_large_100", folder)
    cases[str(other)] = "holds another architecture than timm/mobilenetv3_small_100"
    (tmp_path / "weights.onnx").write_bytes(b"x")
    cases["weights.onnx"] = "unknown suffix"
    for name, message in cases.items():
        with pytest.raises(InitWeightsError, match="model.init") as error:
            init_network(model, tmp_path / name)
        assert message in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(InitWeightsError, match="another file than the one pinned"):
        init_network(model, good, expected_sha256="0" * 64)


def test_cli_prints_one_line_and_exits_2(capsys, tmp_path):
    torch.save({"weights": torch.zeros(2), "code": NotWeights()}, tmp_path / "pickled.pth")
    args = ["train", "-c", CONFIG, "-o", str(tmp_path / "run"), "--set", "train.epochs=1"]
    code = main([*args, "--set", f"model.init={tmp_path / 'pickled.pth'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not a weights-only state dict" in err and len(err.splitlines()) <= 2
    code = main([*args, "--set", "model.freeze=stem"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "model.freeze needs model.init" in " ".join(err.split())


def test_freeze_stem_or_first_stages():
    model = timm_model("mobilenetv3_small_100", branches=2)
    assert freeze_stages(model, "stem") == ["stem"]
    assert not any(p.requires_grad for p in model.trunk[0].parameters())
    assert all(p.requires_grad for p in model.trunk[1].parameters())
    assert freeze_stages(model, 3) == ["stem", "stage1", "stage2", "stage3"]
    assert all(not p.requires_grad for body in model.bodies for p in body[0].parameters())
    assert all(p.requires_grad for body in model.bodies for p in body[1].parameters())
    assert all(p.requires_grad for p in model.heads.parameters())
    with pytest.raises(Exception, match="stem and 4 stage"):
        freeze_stages(model, 5)
