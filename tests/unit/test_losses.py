"""Loss values checked against hand computations, and gradient flow."""

from __future__ import annotations

import math

import pytest
import torch

from simgan_dist.errors import InputError
from simgan_dist.model.losses import (
    REAL,
    REFINED,
    discriminator_loss,
    diversity_reward,
    local_adversarial_loss,
    patch_accuracy,
    psi,
    refiner_loss,
    saturation_penalty,
    self_regularization_loss,
    stroke_contrast_loss,
    stroke_mask,
)


def _two_patch_logits() -> torch.Tensor:
    # One image, a 1x2 patch map: patch a = (refined 2, real 0), patch b = (refined 0, real 1).
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, :, 0, 0] = torch.tensor([2.0, 0.0])
    logits[0, :, 0, 1] = torch.tensor([0.0, 1.0])
    return logits


def test_zero_logits_give_log2() -> None:
    logits = torch.zeros(3, 2, 4, 5)
    for target in (REAL, REFINED):
        assert local_adversarial_loss(logits, target).item() == pytest.approx(math.log(2))


def test_two_patch_example_by_hand() -> None:
    logits = _two_patch_logits()
    # CE = -log softmax[target]; for logits (u, v): -log(e^t / (e^u + e^v)).
    ce_real_a = math.log(math.exp(2) + 1)  # -log(e^0 / (e^2 + e^0))
    ce_real_b = math.log(1 + math.exp(-1))  # -log(e^1 / (e^0 + e^1))
    ce_ref_a = math.log(1 + math.exp(-2))
    ce_ref_b = math.log(1 + math.exp(1))
    got_real = local_adversarial_loss(logits, REAL).item()
    got_ref = local_adversarial_loss(logits, REFINED).item()
    assert got_real == pytest.approx((ce_real_a + ce_real_b) / 2, rel=1e-6)
    assert got_ref == pytest.approx((ce_ref_a + ce_ref_b) / 2, rel=1e-6)


def test_adversarial_loss_is_mean_over_batch_and_patches() -> None:
    # Stacking the same logits twice must not change a mean (a sum would double).
    logits = _two_patch_logits()
    doubled = torch.cat([logits, logits])
    assert local_adversarial_loss(doubled, REAL).item() == pytest.approx(
        local_adversarial_loss(logits, REAL).item()
    )


def test_adversarial_loss_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        local_adversarial_loss(torch.zeros(2, 3, 4, 4), REAL)
    with pytest.raises(ValueError, match="target"):
        local_adversarial_loss(torch.zeros(2, 2, 4, 4), 2)


def test_psi_identity_and_channel_mean() -> None:
    x = torch.tensor([[[[1.0, 2.0]], [[3.0, 6.0]], [[5.0, 1.0]]]])  # (1, 3, 1, 2)
    assert torch.equal(psi(x, "identity"), x)
    assert torch.allclose(psi(x, "channel_mean"), torch.tensor([[[[3.0, 3.0]]]]))


def test_psi_gradients_by_hand() -> None:
    x = torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]])  # (1, 1, 2, 2)
    # dx: rows (2-1), (8-4) -> [1, 4]; dy: columns (4-1), (8-2) -> [3, 6].
    assert torch.equal(psi(x, "gradients"), torch.tensor([[1.0, 4.0, 3.0, 6.0]]))
    assert psi(torch.zeros(5, 3, 4, 6), "gradients").shape == (5, 3 * 4 * 5 + 3 * 3 * 6)


def test_psi_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown psi"):
        psi(torch.zeros(1, 1, 2, 2), "vgg")


def test_self_regularization_by_hand() -> None:
    synthetic = torch.tensor([[[[0.0, 0.5], [1.0, -1.0]]]])
    refined = torch.tensor([[[[0.5, 0.5], [0.0, -1.0]]]])
    # identity: |0.5| + 0 + |-1| + 0 over 4 elements.
    assert self_regularization_loss(refined, synthetic, "identity").item() == pytest.approx(0.375)
    # gradients: synthetic dx=[0.5,-2], dy=[1,-1.5]; refined dx=[0,-1], dy=[-0.5,-1.5].
    # |diff| = [0.5, 1, 1.5, 0] -> mean 0.75.
    assert self_regularization_loss(refined, synthetic, "gradients").item() == pytest.approx(0.75)


def test_self_regularization_channel_mean_and_shift() -> None:
    synthetic = torch.zeros(1, 2, 1, 2)
    refined = torch.tensor([[[[1.0, -1.0]], [[1.0, 1.0]]]])  # channel means [1, 0]
    assert self_regularization_loss(refined, synthetic, "channel_mean").item() == pytest.approx(0.5)
    assert self_regularization_loss(refined, synthetic, "identity").item() == pytest.approx(1.0)
    # A constant brightness shift costs nothing under "gradients", and |shift| under "identity".
    x = torch.rand(2, 1, 5, 7)
    assert self_regularization_loss(x + 0.25, x, "gradients").item() == pytest.approx(0, abs=1e-6)
    assert self_regularization_loss(x + 0.25, x, "identity").item() == pytest.approx(0.25)


def test_self_regularization_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="differ"):
        self_regularization_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3), "identity")


def test_refiner_loss_combination() -> None:
    logits = _two_patch_logits()
    synthetic = torch.zeros(1, 1, 2, 2)
    refined = torch.full((1, 1, 2, 2), 0.5)
    adv = (math.log(math.exp(2) + 1) + math.log(1 + math.exp(-1))) / 2
    loss, metrics = refiner_loss(logits, refined, synthetic, 0.1, "identity", 3.0)
    assert loss.item() == pytest.approx(3.0 * adv + 0.1 * 0.5, rel=1e-6)
    assert metrics["loss_r"] == pytest.approx(loss.item())
    assert metrics["loss_r_adv"] == pytest.approx(adv, rel=1e-6)
    assert metrics["loss_r_reg"] == pytest.approx(0.5)
    assert set(metrics) == {"loss_r", "loss_r_adv", "loss_r_reg", "loss_r_sat"}
    assert metrics["loss_r_sat"] == 0.0  # no pre-tanh values given: no penalty


def test_saturation_penalty_is_a_hinge_past_the_margin() -> None:
    z = torch.tensor([[[[0.0, -3.9], [5.0, -7.0]]]])
    # (5 - 4)^2 and (7 - 4)^2 over 4 values; the two inside the margin cost nothing.
    assert saturation_penalty(z, 4.0).item() == pytest.approx((1 + 9) / 4)
    assert saturation_penalty(z, 0.0).item() == 0.0  # off
    assert saturation_penalty(z.clamp(-4, 4), 4.0).item() == 0.0


def test_saturation_penalty_revives_a_collapsed_refiner() -> None:
    """An all-black R (pre-tanh -40 everywhere) gets no gradient from the paper's loss, since
    tanh' underflows to 0 there; the penalty's gradient pulls every value back to the margin."""
    synthetic = torch.ones(1, 1, 2, 2)
    pre_tanh = torch.full((1, 1, 2, 2), -40.0, requires_grad=True)
    loss, _ = refiner_loss(None, torch.tanh(pre_tanh), synthetic, 1.0, "identity", 0.0)
    loss.backward()
    assert torch.count_nonzero(pre_tanh.grad) == 0
    pre_tanh.grad = None
    loss, metrics = refiner_loss(
        None, torch.tanh(pre_tanh), synthetic, 1.0, "identity", 0.0,
        pre_tanh=pre_tanh, saturation_margin=4.0,
    )  # fmt: skip
    loss.backward()
    assert metrics["loss_r_sat"] == pytest.approx(36.0**2)
    assert (pre_tanh.grad < 0).all()  # descending raises every value towards -4


def test_refiner_pretraining_needs_no_logits() -> None:
    synthetic = torch.zeros(2, 1, 3, 3)
    refined = torch.full((2, 1, 3, 3), -0.2)
    loss, metrics = refiner_loss(None, refined, synthetic, 2.0, "identity", adversarial_weight=0)
    assert loss.item() == pytest.approx(0.4)
    assert metrics["loss_r_adv"] == 0.0
    with pytest.raises(ValueError, match="logits"):
        refiner_loss(None, refined, synthetic, 2.0, "identity")


def test_discriminator_loss_and_accuracies() -> None:
    logits = _two_patch_logits()  # patch a says refined, patch b says real
    loss, metrics = discriminator_loss(logits_real=logits, logits_refined=logits)
    ce_real = (math.log(math.exp(2) + 1) + math.log(1 + math.exp(-1))) / 2
    ce_ref = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))) / 2
    assert loss.item() == pytest.approx((ce_real + ce_ref) / 2, rel=1e-6)
    assert metrics["loss_d"] == pytest.approx(loss.item())
    assert metrics["d_acc_real"] == pytest.approx(0.5)
    assert metrics["d_acc_refined"] == pytest.approx(0.5)

    confident_real = torch.zeros(2, 2, 3, 3)
    confident_real[:, REAL] = 5.0
    confident_refined = torch.zeros(2, 2, 3, 3)
    confident_refined[:, REFINED] = 5.0
    _, metrics = discriminator_loss(confident_real, confident_refined)
    assert metrics["d_acc_real"] == 1.0 and metrics["d_acc_refined"] == 1.0
    _, metrics = discriminator_loss(confident_refined, confident_real)  # fooled both ways
    assert metrics["d_acc_real"] == 0.0 and metrics["d_acc_refined"] == 0.0


def test_patch_accuracy_counts_patches() -> None:
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, REAL, 0, :] = 1.0  # top row says real, bottom row ties -> class 0 (refined)
    assert patch_accuracy(logits, REAL) == pytest.approx(0.5)
    assert patch_accuracy(logits, REFINED) == pytest.approx(0.5)


def test_gradients_flow() -> None:
    torch.manual_seed(0)
    synthetic = torch.rand(2, 1, 4, 4)
    refined = synthetic.clone().add_(0.1).requires_grad_(True)
    logits = torch.randn(2, 2, 3, 3, requires_grad=True)
    loss, _ = refiner_loss(logits, refined, synthetic, 0.5, "gradients")
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert refined.grad is not None and refined.grad.abs().sum() > 0

    real = torch.randn(2, 2, 3, 3, requires_grad=True)
    fake = torch.randn(2, 2, 3, 3, requires_grad=True)
    loss_d, _ = discriminator_loss(real, fake)
    loss_d.backward()
    # Pushing real toward REAL lowers the REFINED logit's gradient sign: d/dlogit0 > 0 for real.
    assert (real.grad[:, REFINED] > 0).all() and (real.grad[:, REAL] < 0).all()
    assert (fake.grad[:, REFINED] < 0).all() and (fake.grad[:, REAL] > 0).all()


def _bar_digit(ink: tuple[float, ...], paper: tuple[float, ...]) -> torch.Tensor:
    """One 3x12x12 image of a plain `paper` colour with a vertical 2-pixel `ink` stroke."""
    image = torch.tensor(paper).view(3, 1, 1).expand(3, 12, 12).clone()
    image[:, 2:10, 5:7] = torch.tensor(ink).view(3, 1, 1)
    return image[None]


def test_stroke_mask_is_what_differs_from_the_plain_background() -> None:
    expected = torch.zeros(1, 1, 12, 12)
    expected[..., 2:10, 5:7] = 1
    white_on_black = _bar_digit((1.0, 1.0, 1.0), (-1.0, -1.0, -1.0))
    blue_on_orange = _bar_digit((-0.8, -0.6, 0.9), (0.9, 0.2, -0.7))
    assert torch.equal(stroke_mask(white_on_black), expected)
    assert torch.equal(stroke_mask(blue_on_orange), expected)


def test_stroke_contrast_lets_r_recolour_and_invert_but_not_erase() -> None:
    synthetic = _bar_digit((1.0, 1.0, 1.0), (-1.0, -1.0, -1.0))
    margin = 0.4
    assert stroke_contrast_loss(synthetic, synthetic, margin).item() == 0.0
    inverted = _bar_digit((-0.9, -0.9, -0.9), (0.8, 0.6, 0.7))  # dark ink on light paper
    assert stroke_contrast_loss(inverted, synthetic, margin).item() == 0.0
    # Painted over: the strokes are the background's colour, every one short by the margin.
    erased = torch.full_like(synthetic, 0.3)
    assert stroke_contrast_loss(erased, synthetic, margin).item() == pytest.approx(margin)
    # Faint strokes (0.1 above their paper) are short by margin - 0.1, and the gradient raises
    # their contrast.
    faint = _bar_digit((0.4, 0.4, 0.4), (0.3, 0.3, 0.3)).requires_grad_(True)
    loss = stroke_contrast_loss(faint, synthetic, margin)
    assert loss.item() == pytest.approx(margin - 0.1, abs=1e-5)
    loss.backward()
    assert faint.grad is not None
    assert (faint.grad[..., 2:10, 5:7] < 0).all()  # brighter strokes lower the loss


def test_diversity_reward_counts_only_background_cells_when_asked() -> None:
    synthetic = _bar_digit((1.0, 1.0, 1.0), (-1.0, -1.0, -1.0))  # stroke in cell column 1 of 3
    over_stroke = synthetic.clone()
    over_stroke[..., 4:8] += 0.6  # a different draw recolours only the stroke's cells
    assert diversity_reward(synthetic, over_stroke, synthetic, "all").item() == (
        pytest.approx(0.6 / 3)
    )
    assert diversity_reward(synthetic, over_stroke, synthetic, "background").item() == 0.0
    # The left background column turned from black to white (a difference of 2 per cell).
    recoloured = synthetic.clone()
    recoloured[..., 0:4] = 1.0
    recoloured.requires_grad_(True)
    reward = diversity_reward(synthetic, recoloured, synthetic, "background")
    assert reward.item() == pytest.approx(1.0)  # 3 of the 6 background cells per channel
    reward.backward()
    assert recoloured.grad is not None
    assert (recoloured.grad[..., 0:4] > 0).all() and (recoloured.grad[..., 4:] == 0).all()
    with pytest.raises(InputError, match="unknown diversity region"):
        diversity_reward(synthetic, recoloured, synthetic, "digit")
