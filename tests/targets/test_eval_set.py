"""The eval set's identity: images and labels, not the student's reference logits."""

from __future__ import annotations

import numpy as np
import pytest

from targets.errors import EvalSetError
from targets.validate import eval_set_digest


def test_digest_ignores_the_reference_logits_and_sees_the_images(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 17, (20, 1, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 10, 20)
    a, b, c = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "c.npz"
    np.savez(a, images=images, labels=labels, reference_logits=rng.normal(size=(20, 10)))
    np.savez(b, images=images, labels=labels, reference_logits=rng.normal(size=(20, 10)))
    moved = images.copy()
    moved[0, 0, 0, 0] ^= 1
    np.savez(c, images=moved, labels=labels, reference_logits=rng.normal(size=(20, 10)))
    assert eval_set_digest(a) == eval_set_digest(b)
    assert eval_set_digest(a) != eval_set_digest(c)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(EvalSetError, match="not an eval set"):
        eval_set_digest(tmp_path / "bad.npz")
