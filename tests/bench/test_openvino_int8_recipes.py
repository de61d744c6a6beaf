"""bench/openvino_int8_recipes.py: each recipe variant changes the one NNCF option it names."""

from __future__ import annotations

import numpy as np
import pytest

from bench.openvino_int8_recipes import NNCF_VARIANTS, interleaved, nncf_options


def tiny_body():
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter([1, 1, 8, 8], ov.Type.f32, name="input")
    stem = ops.convolution(x, ops.constant(np.ones((4, 1, 3, 3), np.float32)), [1, 1], [1, 1],
                           [1, 1], [1, 1])  # fmt: skip
    body = ops.convolution(stem, ops.constant(np.ones((4, 4, 3, 3), np.float32)), [1, 1],
                           [1, 1], [1, 1], [1, 1])  # fmt: skip
    flat = ops.reshape(body, ops.constant(np.array([1, 256], np.int64)), False)
    logits = ops.matmul(flat, ops.constant(np.ones((256, 10), np.float32)), False, False)
    return ov.Model([logits], [x])


@pytest.mark.parametrize("name", sorted(NNCF_VARIANTS))
def test_each_variant_changes_only_its_option(name: str) -> None:
    import nncf

    body = tiny_body()
    items = [np.zeros((32, 1, 8, 8), np.float32) for _ in range(10)]
    options, used = nncf_options(name, body, items)
    convs = [op.get_friendly_name() for op in body.get_ordered_ops()
             if op.get_type_name() == "Convolution"]  # fmt: skip
    matmul = [op.get_friendly_name() for op in body.get_ordered_ops()
              if op.get_type_name() == "MatMul"]  # fmt: skip
    expected_ignored = {"no-stem": convs[:1], "no-fc": matmul, "no-stem-fc": convs[:1] + matmul}
    ignored = options.get("ignored_scope")
    assert (ignored.names if ignored else None) == expected_ignored.get(name)
    mixed = (
        nncf.QuantizationPreset.MIXED if name == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    )
    assert options["preset"] == mixed
    assert options.get("fast_bias_correction", True) is (name != "slow-bias")
    assert ("advanced_parameters" in options) is (name == "overflow-off")
    assert len(used) == (4 if name == "subset-100" else 10) == options["subset_size"]
    device = {"cpu-spr": nncf.TargetDevice.CPU_SPR, "any-device": nncf.TargetDevice.ANY}
    assert options["target_device"] == device.get(name, nncf.TargetDevice.CPU)


def test_interleaved_turns_the_order_each_round() -> None:
    seen: list[str] = []

    class Request:
        def __init__(self, name: str) -> None:
            self.name = name

        def infer(self) -> None:
            if not seen or seen[-1] != self.name:
                seen.append(self.name)

    rounds = interleaved({n: Request(n) for n in "abc"}, rounds=3, seconds=0.001)
    assert seen == list("abcbcacab")
    assert all(len(times) == 3 for times in rounds.values())
