"""Multi-branch model families: shapes, gate, extraction, registry, size and cost."""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from onedge.errors import ConfigError, RegistryError
from training.config import ModelConfig
from training.models import (
    MODELS,
    BranchNetwork,
    MultiBranchModel,
    PeerEnsemble,
    build_model,
    build_peers,
    count_macs,
    count_parameters,
)
from training.models.timm_family import SMALL_INPUT

NAMES = MODELS.names()
TIMM = [n for n in NAMES if n.startswith("timm/")]  # width 1.0 only: no family of widths
# two timm networks (hard-swish + SE; plain ReLU) take every test; the other four take the
# extraction and ONNX checks, which is what their split can get wrong (the rest is timm's own)
TIMM_FULL = ["timm/mobilenetv3_small_100", "timm/regnetx_002"]
CORE = [n for n in NAMES if n not in TIMM or n in TIMM_FULL]
EXTRACTION_CASES = [
    (name, channels, side)
    for name in NAMES
    for channels, side in [(1, 8), (3, 16)]
    if name in CORE or (channels, side) == (1, 8)
]
SHAPES = [(1, 8), (1, 28), (3, 32)]  # (channels, side)
BATCH = 2


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread is faster and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(
    name: str,
    *,
    branches: int = 3,
    in_channels: int = 3,
    size: int = 32,
    classes: int = 10,
    gate: bool = True,
    widths: list[float] | None = None,
    **cfg: object,
) -> MultiBranchModel:
    """A fresh copy of the model these arguments build (built once per session)."""
    if name in TIMM and size < SMALL_INPUT:
        size = SMALL_INPUT - 1  # timm networks depend on the size only through the small rule
    key = (name, branches, in_channels, size, classes, gate, tuple(widths or ()) or None)
    return copy.deepcopy(built(*key, tuple(sorted(cfg.items()))))


@functools.cache
def built(
    name: str,
    branches: int,
    in_channels: int,
    size: int,
    classes: int,
    gate: bool,
    widths: tuple[float, ...] | None,
    cfg: tuple[tuple[str, object], ...],
) -> MultiBranchModel:
    torch.manual_seed(0)
    config = ModelConfig(name=name, branches=branches, **dict(cfg))
    return build_model(
        config,
        num_classes=classes,
        in_channels=in_channels,
        image_size=size,
        gate=gate,
        widths=None if widths is None else list(widths),
    )


def peers(*, branches: int = 3, in_channels: int = 1, size: int = 8) -> PeerEnsemble:
    torch.manual_seed(0)
    config = ModelConfig(name="resnet20", branches=branches)
    return build_peers(config, num_classes=10, in_channels=in_channels, image_size=size)


def randomise_batch_norms(model: nn.Module) -> None:
    """Move every BN away from its identity initialisation so a wrong copy would show."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def gate_parameter_names(module: nn.Module) -> list[str]:
    return [n for n, _ in module.named_parameters() if "gate" in n]


# --- forward contract -----------------------------------------------------------------


@pytest.mark.parametrize("channels,side", SHAPES)
@pytest.mark.parametrize("name", CORE)
def test_forward_shapes_features_and_gate(name: str, channels: int, side: int) -> None:
    model = build(name, branches=3, in_channels=channels, size=side, classes=7)
    out = model(torch.randn(BATCH, channels, side, side))
    assert out.num_branches == 3
    assert all(z.shape == (BATCH, 7) for z in out.branch_logits)
    assert out.ensemble_logits.shape == (BATCH, 7)
    assert out.gate_weights.shape == (BATCH, 3)
    assert (out.gate_weights >= 0).all()
    torch.testing.assert_close(out.gate_weights.sum(dim=1), torch.ones(BATCH))
    expected = sum(out.gate_weights[:, i : i + 1] * out.branch_logits[i] for i in range(3))
    torch.testing.assert_close(out.ensemble_logits, expected)
    assert out.features == {}  # maps only when tapped


@pytest.mark.parametrize("name", CORE)
def test_taps_return_the_maps_their_feature_info_describes(name: str) -> None:
    side = 16
    widths = None if name in TIMM else [1.0, 0.5, 0.25]
    model = build(name, branches=3, in_channels=1, size=side, widths=widths)
    names = model.tap_names()
    assert names[0] == "stem" and len(names) == len(set(names)) >= 4
    out = model(torch.randn(BATCH, 1, side, side), taps=names)
    assert set(out.features) == set(names)
    for tap in names:
        maps = out.features[tap]
        assert len(maps) == 3
        for k, fmap in enumerate(maps):
            info = model.feature(tap, k)
            expected = (
                BATCH,
                info.channels,
                -(-side // info.reduction),
                -(-side // info.reduction),
            )
            assert tuple(fmap.shape) == expected, (tap, k)
    # the stem is shared: one tensor under every branch; the last stage is per branch
    assert out.features["stem"][0] is out.features["stem"][2]
    last = names[-1]
    assert (
        model.feature(last, 0).channels > model.feature(last, 2).channels
        or name == "mobilenet_v2"
        or widths is None
    )
    one = model(torch.randn(BATCH, 1, side, side), taps=[last])
    assert set(one.features) == {last}
    with pytest.raises(ConfigError, match="unknown tap.*stem"):
        model(torch.randn(BATCH, 1, side, side), taps=["nope"])
    with pytest.raises(ConfigError, match="list of names"):
        model(torch.randn(BATCH, 1, side, side), taps="stem")


@pytest.mark.parametrize("name", CORE)
def test_gate_is_learned_per_sample_and_absent_when_off(name: str) -> None:
    gated = build(name, branches=3, in_channels=1, size=8)
    assert gate_parameter_names(gated)
    randomise_batch_norms(gated)
    with torch.no_grad():  # the gate's scores into ReLU's linear range: per-sample weights show
        gated.gate.bn.bias.fill_(1.0)
    gated.eval()
    weights = gated(torch.randn(4, 1, 8, 8) * 3).gate_weights
    assert not torch.allclose(weights, torch.full_like(weights, 1 / 3))

    for model in (
        build(name, branches=3, gate=False, in_channels=1, size=8),
        build(name, branches=1, in_channels=1, size=8),
    ):
        assert not gate_parameter_names(model)
        out = model(torch.randn(BATCH, 1, 8, 8))
        m = model.num_branches
        torch.testing.assert_close(out.gate_weights, torch.full((BATCH, m), 1 / m))


def test_features_are_the_stage_outputs_of_a_cifar_resnet() -> None:
    model = build("resnet20", branches=2, in_channels=3, size=32, width=0.5)
    out = model(torch.randn(BATCH, 3, 32, 32), taps=["stage2", "stage3"])
    assert out.features["stage2"][0].shape == (BATCH, 16, 16, 16)  # stage 2: 32w, stride 2
    assert [f.shape for f in out.features["stage3"]] == [(BATCH, 32, 8, 8)] * 2  # stage 3


WIDTHS = [1.0, 0.8, 0.6, 0.4, 0.2]  # the student ensemble's default family, N = 5


@pytest.mark.parametrize("name", NAMES)
def test_family_of_widths_extracts_every_student(name: str) -> None:
    """Heterogeneous branches: each student's logits equal its branch's; smaller costs less."""
    branch_point = 1 if name.startswith("resnet") and name != "resnet18" else 2
    if name in TIMM:
        with pytest.raises(ConfigError, match="width 1.0 only"):
            build(name, branches=5, in_channels=1, size=8, widths=WIDTHS, branch_point=2)
        return
    model = build(name, branches=5, in_channels=1, size=8, widths=WIDTHS, branch_point=branch_point)
    assert model.widths == WIDTHS
    randomise_batch_norms(model)
    model.eval()
    x = torch.randn(BATCH, 1, 8, 8)
    macs = []
    with torch.no_grad():
        out = model(x)
        for k in range(5):
            student = model.extract(k)
            diff = (student(x) - out.branch_logits[k]).abs().max().item()
            assert diff <= 1e-5, f"width {WIDTHS[k]}: max |diff| {diff}"
            macs.append(count_macs(student, (1, 1, 8, 8)))
    assert macs == sorted(macs, reverse=True) and macs[-1] < macs[0]


def test_family_widths_must_match_the_branches() -> None:
    with pytest.raises(ConfigError, match="one per branch"):
        build("resnet20", branches=3, widths=[1.0, 0.5])
    with pytest.raises(ConfigError, match="positive"):
        build("resnet20", branches=2, widths=[1.0, 0.0])


# --- extraction -----------------------------------------------------------------------


@pytest.mark.parametrize("name,channels,side", EXTRACTION_CASES)
def test_extracted_branch_equals_its_branch(name: str, channels: int, side: int) -> None:
    model = build(name, branches=3, in_channels=channels, size=side)
    randomise_batch_norms(model)
    model.eval()
    x = torch.randn(BATCH, channels, side, side)
    with torch.no_grad():
        out = model(x)
        assert not torch.allclose(out.branch_logits[0], out.branch_logits[1], atol=1e-4)
        for k in range(3):
            student = model.extract(k)
            assert isinstance(student, BranchNetwork)
            assert not student.training
            diff = (student(x) - out.branch_logits[k]).abs().max().item()
            assert diff <= 1e-5, f"branch {k}: max |diff| {diff}"
    assert not gate_parameter_names(student)
    assert not any(isinstance(m, nn.ModuleList) for m in student.modules())
    assert count_parameters(student) < count_parameters(model)


@pytest.mark.parametrize("name", CORE)
def test_extraction_copies_and_rejects_bad_branches(name: str) -> None:
    model = build(name, branches=2, in_channels=1, size=8)
    student = model.extract(1)
    with torch.no_grad():
        next(student.parameters()).add_(1.0)
    assert not torch.equal(next(student.parameters()), next(model.parameters()))
    for bad in (-1, 2, 5):
        with pytest.raises(ConfigError, match="out of range"):
            model.extract(bad)


def export_and_run(name: str, folder: Path, *, dynamo: bool) -> None:
    """Export branch 1's student to ONNX and check onnxruntime's logits against the model."""
    import onnxruntime as ort

    model = build(name, branches=2, in_channels=1, size=8)
    randomise_batch_norms(model)
    student = model.eval().extract(1)
    x = torch.randn(BATCH, 1, 8, 8)
    path = folder / f"{name.replace('/', '_')}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(student, (x,), path, input_names=["x"], dynamo=dynamo, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        expected = model(x).branch_logits[1].numpy()
    # other kernels sum in another order: allow float noise relative to the logits' scale
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-4 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("name", NAMES)
def test_extracted_branch_exports_to_onnx(name: str, tmp_path: Path) -> None:
    export_and_run(name, tmp_path, dynamo=False)  # the fast TorchScript-based exporter


@pytest.mark.parametrize("name", ["resnet20", "resnet18"])  # one per family
def test_extracted_branch_exports_through_torch_export(name: str, tmp_path: Path) -> None:
    export_and_run(name, tmp_path, dynamo=True)  # the exporter export/onnx.py uses


# --- peers ----------------------------------------------------------------------------


def test_peer_ensemble_contract() -> None:
    ensemble = peers(branches=3)
    assert ensemble.num_branches == 3 and len(ensemble.members) == 3
    assert not gate_parameter_names(ensemble)
    randomise_batch_norms(ensemble)
    ensemble.eval()
    x = torch.randn(BATCH, 1, 8, 8)
    with torch.no_grad():
        out = ensemble(x)
        torch.testing.assert_close(out.gate_weights, torch.full((BATCH, 3), 1 / 3))
        mean = torch.stack(out.branch_logits).mean(dim=0)
        torch.testing.assert_close(out.ensemble_logits, mean)
        tapped = ensemble(x, taps=["stage3"]).features["stage3"]
        assert len(tapped) == 3 and tapped[0] is not tapped[1]
        for k, member in enumerate(ensemble.members):
            torch.testing.assert_close(out.branch_logits[k], member(x).branch_logits[0])
            diff = (ensemble.extract(k)(x) - out.branch_logits[k]).abs().max().item()
            assert diff <= 1e-5
        assert not torch.allclose(out.branch_logits[0], out.branch_logits[1], atol=1e-4)
    with pytest.raises(ConfigError):
        ensemble.extract(3)


def test_peer_ensemble_rejects_bad_members() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        PeerEnsemble([])
    with pytest.raises(ConfigError, match="one branch"):
        PeerEnsemble([build("resnet20", branches=2, in_channels=1, size=8)])
    with pytest.raises(ConfigError, match="classes"):
        PeerEnsemble(
            [
                build("resnet20", branches=1, classes=10, in_channels=1, size=8),
                build("resnet20", branches=1, classes=5, in_channels=1, size=8),
            ]
        )


# --- configuration errors -------------------------------------------------------------


def test_unknown_model_name_lists_known_ones() -> None:
    with pytest.raises(RegistryError, match="resnet20"):
        build("resnet9000")


@pytest.mark.parametrize(
    "name,branch_point", [("resnet20", 4), ("resnet18", 5), ("mobilenet_v2", 5)]
)
def test_branch_point_out_of_range(name: str, branch_point: int) -> None:
    with pytest.raises(ConfigError, match="branch_point"):
        build(name, branch_point=branch_point)


@pytest.mark.parametrize(
    "kwargs",
    [{"classes": 0}, {"in_channels": 0}, {"size": 0}],
)
def test_bad_dimensions_raise_config_error(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        build("resnet20", **kwargs)


def test_resnet18_rejects_a_width_multiplier() -> None:
    with pytest.raises(ConfigError, match="width"):
        build("resnet18", width=0.5)


# --- layouts --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "mobilenet_v2"])
def test_branch_point_moves_stages_between_trunk_and_branches(name: str) -> None:
    early = build(name, branches=2, branch_point=1, in_channels=1, size=8)
    late = build(name, branches=2, branch_point=3, in_channels=1, size=8)
    assert count_parameters(early.trunk) < count_parameters(late.trunk)
    assert count_parameters(early) > count_parameters(late)
    assert early(torch.randn(BATCH, 1, 8, 8)).ensemble_logits.shape == (BATCH, 10)


def test_imagenet_stems_keep_resolution_for_small_inputs() -> None:
    small = build("resnet18", branches=1, in_channels=1, size=32)
    large = build("resnet18", branches=1, in_channels=1, size=64)
    assert small.trunk[0][0].kernel_size == (3, 3) and small.trunk[0][0].stride == (1, 1)
    assert isinstance(small.trunk[0][3], nn.Identity)
    assert large.trunk[0][0].kernel_size == (7, 7) and large.trunk[0][0].stride == (2, 2)
    assert isinstance(large.trunk[0][3], nn.MaxPool2d)
    assert large.trunk[0][0].in_channels == 1
    mobile = build("mobilenet_v2", branches=1, in_channels=1, size=32)
    assert mobile.trunk[0][0].stride == (1, 1) and mobile.trunk[0][0].in_channels == 1


def test_width_multiplier_rounds_channels() -> None:
    half = build("resnet20", branches=1, width=0.5)
    tiny = build("resnet20", branches=1, width=0.01, in_channels=1, size=8)
    assert count_parameters(half) < count_parameters(build("resnet20", branches=1))
    convs = [m for m in tiny.modules() if isinstance(m, nn.Conv2d)]
    assert min(c.out_channels for c in convs) == 1
    assert tiny(torch.randn(BATCH, 1, 8, 8)).ensemble_logits.shape == (BATCH, 10)


def test_initialisation() -> None:
    model = build("resnet20", branches=2)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    conv = model.trunk[0][0]  # kaiming fan-out: std = sqrt(2 / (16 * 3 * 3))
    assert conv.weight.std().item() == pytest.approx((2 / 144) ** 0.5, rel=0.25)


# --- size and cost --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,millions",
    [
        ("resnet20", 0.27),
        ("resnet32", 0.46),
        ("resnet56", 0.85),
        # bottleneck, n = (110 - 2) / 6 = 18, 16/32/64 planes x 4, as in ONE's released code
        ("resnet110", 1.70),
    ],
)
def test_cifar_resnet_parameter_counts(name: str, millions: float) -> None:
    model = build(name, branches=1)
    assert count_parameters(model) / 1e6 == pytest.approx(millions, rel=0.03)


def test_branches_add_one_stage_three_each() -> None:
    one, three = build("resnet32", branches=1), build("resnet32", branches=3)
    stage3_and_head = count_parameters(one.bodies[0]) + count_parameters(one.heads[0])
    gate = 32 * 3 + 3 + 2 * 3  # on the 32-channel stage-2 output: linear + batch norm
    assert count_parameters(three) == count_parameters(one) + 2 * stage3_and_head + gate


def test_count_macs() -> None:
    model = build("resnet20", branches=1)
    assert count_macs(model, (1, 3, 32, 32)) / 1e6 == pytest.approx(41, rel=0.03)
    assert count_macs(model, (2, 3, 32, 32)) == 2 * count_macs(model, (1, 3, 32, 32))
    assert model.training  # mode restored
    linear = nn.Linear(5, 3)
    assert count_macs(linear, (4, 5)) == 4 * 5 * 3
    depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
    assert count_macs(depthwise, (1, 4, 6, 6)) == 4 * 6 * 6 * 9
    with pytest.raises(ConfigError):
        count_macs(linear, (0, 5))


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("bad", [{"num_classes": 0}, {"in_channels": 0}, {"image_size": -1}])
def test_impossible_dimensions_are_refused_for_every_model(name, bad):
    shape = {"num_classes": 10, "in_channels": 1, "image_size": 8, **bad}
    with pytest.raises(ConfigError, match="must be a positive integer"):
        build_model(ModelConfig(name=name), **shape)
