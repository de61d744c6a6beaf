"""Compact: the cost model, the budget search, the block-wise stages and the budget kept."""

from __future__ import annotations

import itertools

import pytest
import torch

from onedge.errors import ConfigError
from tests.conftest import quick_config
from training.checkpoint import load_checkpoint
from training.checkpoint_file import read_checkpoint
from training.config import ModelConfig
from training.methods.compact import (
    CompactBudget,
    CompactCandidates,
    CompactConfig,
    CompactMethod,
    choose_structure,
    stage_candidates,
)
from training.models.compact import (
    BlockChoice,
    compact_resnet,
    reference_structure,
    structure_cost,
)
from training.models.measure import count_macs, count_parameters
from training.stages import method_stages
from training.trainer import train

SHAPE = {"num_classes": 10, "in_channels": 1, "image_size": 28}


def measured(model: ModelConfig, structure: list[BlockChoice], shape=SHAPE) -> tuple[int, int]:
    net = compact_resnet(
        model, structure, num_classes=shape["num_classes"], in_channels=shape["in_channels"]
    ).extract(0)
    size = (1, shape["in_channels"], shape["image_size"], shape["image_size"])
    return count_macs(net, size), count_parameters(net)


@pytest.mark.parametrize("name", ["resnet20", "resnet110"])  # basic and bottleneck references
def test_the_closed_form_costs_are_what_the_built_network_measures(name):
    model = ModelConfig(name=name, width=0.5, branches=1)
    stem = [BlockChoice(kind="conv", width=w) for w in (1.0, 0.375)]
    stage = [
        BlockChoice(kind=k, width=w, blocks=d)
        for k, w, d in [
            ("same", 1.0, 3),
            ("same", 0.625, 1),
            ("dwsep", 0.875, 2),
            ("dwsep", 0.25, 1),
        ]
    ]
    for structure in itertools.islice(itertools.product(stem, stage, stage, stage), 0, None, 7):
        total, _ = structure_cost(model, list(structure), **SHAPE)
        assert (total.macs, total.params) == measured(model, list(structure))
    # odd sizes: the strided blocks round up (8 -> 4 -> 2 and 7 -> 4 -> 2)
    for size in (8, 7):
        shape = {**SHAPE, "image_size": size}
        total, _ = structure_cost(model, reference_structure(model), **shape)
        assert (total.macs, total.params) == measured(model, reference_structure(model), shape)


def brute_force(model, budget, cands, shape):
    """The rule by a plain loop over every combination (closed-form costs, checked above against
    built networks): the largest smallest-block share, then the largest cost."""
    ref_total, ref_blocks = structure_cost(model, reference_structure(model), **shape)
    metric, limit = budget.limit(ref_total)
    stems = [BlockChoice(kind="conv", width=w) for w in sorted(cands.widths, reverse=True)]
    best, best_key = None, None
    for combo in itertools.product(stems, *[stage_candidates(model, cands)] * 3):
        total, blocks = structure_cost(model, list(combo), **shape)
        cost = getattr(total, metric)
        if cost > limit:
            continue
        share = min(
            getattr(b, metric) / getattr(r, metric) for b, r in zip(blocks, ref_blocks, strict=True)
        )
        key = (round(share, 12), cost)
        if best_key is None or key > best_key:
            best, best_key = list(combo), key
    return best


@pytest.mark.parametrize(
    "budget", [CompactBudget(ratio=0.5), CompactBudget(ratio=0.3, of="params")]
)
def test_the_search_picks_what_enumerating_built_networks_picks(budget):
    model = ModelConfig(name="resnet20", width=0.25, branches=1)
    cands = CompactCandidates(widths=[1.0, 0.75, 0.5], kinds=["same", "dwsep"], depths=[1.0, 0.34])
    shape = {**SHAPE, "image_size": 8}
    chosen = choose_structure(model, budget, cands, **shape)
    assert chosen == brute_force(model, budget, cands, shape)


@pytest.mark.parametrize(
    "budget",
    [
        CompactBudget(ratio=0.5),
        CompactBudget(ratio=0.25, of="params"),
        CompactBudget(macs=1_000_000),
        CompactBudget(params=20_000),
    ],
)
def test_the_student_never_exceeds_its_budget(budget):
    model = ModelConfig(name="resnet20", width=1.0, branches=3)
    net = CompactMethod.build_network(model, **SHAPE, method=CompactConfig(budget=budget))
    macs, params = count_macs(net.extract(0), (1, 1, 28, 28)), count_parameters(net.extract(0))
    whole = CompactConfig(budget=CompactBudget(ratio=1.0), structure=reference_structure(model))
    ref = CompactMethod.build_network(model, **SHAPE, method=whole).extract(0)
    ref_macs, ref_params = count_macs(ref, (1, 1, 28, 28)), count_parameters(ref)
    if budget.ratio is not None:
        measured_cost, reference = (macs, ref_macs) if budget.of == "macs" else (params, ref_params)
        assert measured_cost <= budget.ratio * reference
        assert measured_cost >= 0.8 * budget.ratio * reference  # the budget is used, not wasted
    else:
        assert (macs if budget.macs else params) <= (budget.macs or budget.params)
    assert net.num_branches == 1


def test_budgets_and_structures_that_cannot_be_met_are_refused():
    model = ModelConfig(name="resnet20", branches=1)
    with pytest.raises(ConfigError, match="no compact structure fits the budget of 1,000 macs"):
        CompactMethod.build_network(
            model, **SHAPE, method=CompactConfig(budget=CompactBudget(macs=1000))
        )
    over = CompactConfig(structure=reference_structure(model))  # the reference: 2x the budget
    with pytest.raises(ConfigError, match="over the budget"):
        CompactMethod.build_network(model, **SHAPE, method=over)
    with pytest.raises(ConfigError, match="CIFAR ResNets"):
        CompactMethod.build_network(ModelConfig(name="mobilenet_v2", branches=1), **SHAPE)
    with pytest.raises(ValueError, match="exactly one of macs, params, ratio"):
        CompactBudget(macs=10, ratio=0.5)
    with pytest.raises(ConfigError, match="the stem"):
        bad = [BlockChoice(kind="same", blocks=3)] * 4
        structure_cost(model, bad, **SHAPE)
    with pytest.raises(ConfigError, match="method.budget"):
        quick_config(
            **{"method.name": "compact", "method.budget.macs": 5, "method.budget.ratio": 0.5}
        )


def test_a_compact_run_distils_block_by_block_then_fine_tunes_within_its_budget(tmp_path):
    cfg = quick_config(
        **{
            "method.name": "compact",
            "method.block_epochs": 1,
            "method.budget.ratio": 0.4,
            "train.epochs": 1,
            "data.limit_train": 128,
            "model.width": 0.5,
        }
    ).training_config()
    names = [s.name for s in method_stages(cfg)]
    assert names == ["teacher", "block-stem", "block-stage1", "block-stage2", "block-stage3",
                     "student"]  # fmt: skip
    result = train(cfg, tmp_path / "run")
    stages = tmp_path / "run" / "stages"
    # each block stage changed its own block only; the others kept the previous stage's weights
    prefixes = {"block-stem": "trunk.0.", "block-stage1": "bodies.0.0.",
                "block-stage2": "bodies.0.1.", "block-stage3": "bodies.0.2."}  # fmt: skip
    before = None
    for name, prefix in prefixes.items():
        saved = read_checkpoint(stages / name / "checkpoint.pt")
        after = {k: v for k, v in saved["model"].items() if v.is_floating_point()}
        assert set(saved["auxiliaries"]) == {f"{name[6:]}.weight", f"{name[6:]}.bias"}
        if before is not None:
            params = dict(load_checkpoint(stages / name / "checkpoint.pt").model.named_parameters())
            for key in params:
                changed = not torch.equal(before[key], after[key])
                assert changed == key.startswith(prefix), key
        before = after
    loaded = load_checkpoint(result.checkpoint)
    student = loaded.model.extract(0)
    assert not any("auxiliar" in k for k in read_checkpoint(result.checkpoint)["model"])
    teacher = load_checkpoint(stages / "teacher" / "checkpoint.pt").model.extract(0)
    ratio = count_macs(student, (1, 1, 8, 8)) / count_macs(teacher, (1, 1, 8, 8))
    assert ratio <= 0.4
    assert [s["name"] for s in result.metrics["stages"]][-1] == "student"


def test_a_student_of_the_reference_structure_inherits_the_teacher_exactly(digits_checkpoint):
    from training.models.compact import inherit_from_teacher

    teacher = load_checkpoint(digits_checkpoint)
    model = teacher.config.model.model_copy(update={"branches": 1})
    shape = {"num_classes": 10, "in_channels": 1, "image_size": 8}
    whole = CompactConfig(budget=CompactBudget(ratio=1.0), structure=reference_structure(model))
    student = CompactMethod.build_network(model, **shape, method=whole).eval()
    branch = teacher.deployed_branch
    inherited = inherit_from_teacher(
        student, teacher.model, branch, model, student.structure, teacher.config.model
    )
    assert inherited == ["stem", "stage1", "stage2", "stage3", "head"]
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        expected = teacher.model(x).branch_logits[branch]
        assert torch.allclose(student(x).branch_logits[0], expected, atol=1e-5)

    # a narrower, shallower student takes the strongest filters of the first units
    small = [BlockChoice(kind="conv", width=0.75)] + [
        BlockChoice(kind="same", width=0.5, blocks=2),
        BlockChoice(kind="dwsep", width=0.5, blocks=1),
        BlockChoice(kind="same", width=0.5, blocks=1),
    ]
    cfg = CompactConfig(budget=CompactBudget(ratio=1.0), structure=small)
    student = CompactMethod.build_network(model, **shape, method=cfg)
    done = inherit_from_teacher(student, teacher.model, branch, model, small, teacher.config.model)
    assert done == ["stem", "stage1", "stage3", "head"]
    stem_t = teacher.model.trunk[0][0].weight
    keep = stem_t.abs().flatten(1).sum(1).topk(12).indices.sort().values
    assert torch.equal(student.trunk[0][0].weight, stem_t[keep])
    assert len(student.bodies[0][0]) == 2
    with pytest.raises(ConfigError, match="set method.inherit=false"):
        other = model.model_copy(update={"name": "resnet32"})
        inherit_from_teacher(student, teacher.model, branch, model, small, other)
