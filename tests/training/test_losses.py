"""Golden-value tests of the distillation losses (values computed independently with NumPy)."""

import math

import pytest
import torch

from training.losses import (
    dml_loss,
    hinton_kd_loss,
    kd_kl,
    one_loss,
    rampup_weight,
    student_ensemble_loss,
)

Z1 = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
Z2 = torch.tensor([[1.0, 1.0, 0.0], [-0.5, 2.0, 0.5]])
G = torch.tensor([[0.25, 0.75], [0.6, 0.4]])
Y = torch.tensor([0, 1])


def test_one_loss_golden():
    total, parts = one_loss([Z1, Z2], G, Y, T=3.0, distill_weight=0.5)
    assert total.item() == pytest.approx(2.0120854832863126, abs=1e-6)
    assert parts["ce_branches"].item() == pytest.approx(1.2358084243758929, abs=1e-6)
    assert parts["ce_ensemble"].item() == pytest.approx(0.6522151672999913, abs=1e-6)
    assert parts["kl"].item() == pytest.approx(0.248123783220857, abs=1e-6)


def test_one_loss_teacher_is_detached_and_gate_learns_only_through_ensemble_ce():
    z1, z2 = Z1.clone().requires_grad_(), Z2.clone().requires_grad_()
    g = G.clone().requires_grad_()
    _, parts = one_loss([z1, z2], g, Y, T=3.0)
    (grad_g,) = torch.autograd.grad(parts["kl"], g, allow_unused=True)
    assert grad_g is None or torch.count_nonzero(grad_g) == 0
    (grad_g_ce,) = torch.autograd.grad(one_loss([z1, z2], g, Y)[1]["ce_ensemble"], g)
    assert torch.count_nonzero(grad_g_ce) > 0


def test_dml_loss_golden():
    total, _ = dml_loss([Z1, Z2], Y, T=1.0)
    assert total.item() == pytest.approx(1.97956316644812, abs=1e-6)


def test_hinton_kd_golden():
    total, _ = hinton_kd_loss(Z1, Z2, Y, T=4.0, alpha=0.9)
    assert total.item() == pytest.approx(0.4630499448007954, abs=1e-6)


def test_kd_kl_is_zero_for_identical_logits_and_positive_otherwise():
    assert kd_kl(Z1, Z1, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_kl(Z1, Z2, 3.0).item() > 0


def test_rampup_weight_shape():
    assert rampup_weight(0, 80) == pytest.approx(math.exp(-5))
    assert rampup_weight(40, 80) == pytest.approx(math.exp(-1.25))
    assert rampup_weight(80, 80) == 1.0
    assert rampup_weight(500, 80) == 1.0


Z3 = torch.tensor([[0.0, -1.0, 1.0], [0.3, 0.3, -0.2]])
F0 = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
F1 = torch.tensor([0.5, 2.5, 2.0, 5.0]).reshape(1, 1, 2, 2)
F2 = torch.ones(1, 1, 2, 2)


def test_student_ensemble_loss_golden():
    total, parts = student_ensemble_loss([Z1, Z2, Z3], [[F1, F2]], [F0], Y, T=2.0)
    assert parts["ce_teacher"].item() == pytest.approx(0.6287956492978651, abs=1e-6)
    assert parts["mse"].item() == pytest.approx(4.125, abs=1e-6)
    assert parts["kl"].item() == pytest.approx(0.4196298198819702, abs=1e-6)
    assert parts["ce_branches"].item() == pytest.approx(2.4186214505716, abs=1e-6)
    assert total.item() == pytest.approx(1.121851427490801, abs=1e-6)  # a, b, c = .7, .15, .15
    with_ce, _ = student_ensemble_loss([Z1, Z2, Z3], [[F1, F2]], [F0], Y, T=2.0, student_ce=True)
    assert with_ce.item() == pytest.approx(3.540472878062401, abs=1e-6)


def test_student_ensemble_loss_gradients():
    """Student 0's map and the teacher inside KL are detached; student 0 learns through CE(z_t)."""
    z = [Z1.clone().requires_grad_(), Z2.clone().requires_grad_(), Z3.clone().requires_grad_()]
    f0, f1 = F0.clone().requires_grad_(), F1.clone().requires_grad_()
    _, parts = student_ensemble_loss(z, [[f1]], [f0], Y)
    grads = torch.autograd.grad(parts["mse"], [f0, f1], allow_unused=True)
    assert grads[0] is None and torch.count_nonzero(grads[1]) > 0
    (g0,) = torch.autograd.grad(parts["kl"], [z[0]], allow_unused=True)
    assert g0 is None or torch.count_nonzero(g0) == 0  # the teacher is detached in KL
    (g0,) = torch.autograd.grad(parts["ce_teacher"], [z[0]])
    assert torch.count_nonzero(g0) > 0


def _sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_srm_sparse_codes_reconstruction_and_labels_golden():
    from training.losses import srm_labels, srm_reconstruction_loss, srm_sparse_codes

    x = torch.tensor([[[[1.0, -1.0]]]])  # N=1, D=1, H=1, W=2
    C = torch.tensor([[2.0, -1.0]])  # D=1, K=2
    b = torch.tensor([0.0, 0.5])
    codes = srm_sparse_codes(x, C, b, k=1)
    # pixel 1: sigmoid([2, -0.5]) keeps atom 0; pixel 2: sigmoid([-2, 1.5]) keeps atom 1
    expected = torch.tensor([[[[_sig(2.0), 0.0]], [[0.0, _sig(1.5)]]]])
    assert torch.allclose(codes, expected, atol=1e-6)
    x_hat = [2.0 * _sig(2.0), -1.0 * _sig(1.5)]
    golden = ((x_hat[0] - 1.0) ** 2 + (x_hat[1] + 1.0) ** 2) / 2
    assert srm_reconstruction_loss(x, C, b, k=1).item() == pytest.approx(golden, abs=1e-6)
    pixel, image = srm_labels(codes)
    assert pixel.tolist() == [[[0, 1]]]
    assert image[0].tolist() == pytest.approx([_sig(2.0) / 2, _sig(1.5) / 2], abs=1e-6)
    # k = K keeps every entry
    assert torch.count_nonzero(srm_sparse_codes(x, C, b, k=2)) == 4


def test_srm_init_loss_golden():
    from training.losses import srm_init_loss

    z = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # N=1, K=2, H=1, W=2
    pixel = torch.tensor([[[0, 1]]])
    image = torch.tensor([[0.25, 0.75]])
    p = [(_sig(2.0) + _sig(0.0)) / 2, (_sig(0.0) + _sig(1.0)) / 2]  # mean_hw sigmoid(z)
    bce = (
        -sum(
            y * math.log(q) + (1 - y) * math.log(1 - q)
            for y, q in zip([0.25, 0.75], p, strict=True)
        )
        / 2
    )
    ce = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.e / (1 + math.e))) / 2
    total, parts = srm_init_loss(z, pixel, image)
    assert total.item() == pytest.approx(bce + ce, abs=1e-5)
    assert parts["bce_image"].item() == pytest.approx(bce, abs=1e-5)
    assert parts["ce_pixel"].item() == pytest.approx(ce, abs=1e-5)


def test_meal_pooling_soft_ce_and_discriminator_golden():
    from training.losses import (
        discriminator_loss,
        pool_to_length,
        reverse_gradient,
        soft_cross_entropy,
    )

    f = torch.arange(16.0).view(1, 4, 2, 2)  # channel means 1.5, 5.5, 9.5, 13.5
    assert pool_to_length(f, 2).tolist() == [[3.5, 11.5]]
    assert pool_to_length(f, 4).tolist() == [[1.5, 5.5, 9.5, 13.5]]
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])  # softmax(t) = .75/.25
    assert soft_cross_entropy(s, t).item() == pytest.approx(math.log(2.0), abs=1e-6)
    s2 = torch.tensor([[1.0, 0.0]])
    lse = math.log(math.e + 1.0)
    golden = -(0.75 * (1.0 - lse) + 0.25 * (0.0 - lse))
    assert soft_cross_entropy(s2, t).item() == pytest.approx(golden, abs=1e-6)
    d_t, d_s = torch.tensor([[2.0]]), torch.tensor([[-1.0]])
    golden = -math.log(_sig(2.0)) - math.log(1.0 - _sig(-1.0))
    assert discriminator_loss(d_t, d_s).item() == pytest.approx(golden, abs=1e-6)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    (y * torch.tensor([3.0, 4.0])).sum().backward()
    assert x.grad.tolist() == [-1.5, -2.0]
