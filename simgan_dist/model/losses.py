"""SimGAN losses: the local (patch-wise) adversarial loss and the self-regularization term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from simgan_dist.config import PSI_CHOICES
from simgan_dist.errors import InputError

# Class indices of D's 2-way logits. D "outputs the probability that a patch is refined", so the
# paper's refiner term -log(1 - D(R(x))) is the cross-entropy of refined patches against REAL.
REFINED = 0
REAL = 1

PSI_KINDS = PSI_CHOICES  # config.schema.Psi
LOW_PASS_POOL = 4  # psi "low_pass": the mean of each 4x4 cell (a 28x28 digit -> 7x7 per channel)
# Stroke contrast: a synthetic pixel is stroke when a channel differs from the image's background
# colour (its border's median) by more than this, in [-1, 1] levels (a quarter of the range).
STROKE_THRESHOLD = 0.5
# A stroke pixel's contrast is taken against the mean of the background pixels in this window:
# wide enough to reach past a 28x28 digit's 2-3 pixel strokes.
STROKE_WINDOW = 7


def _gradients(x: Tensor) -> Tensor:
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    return torch.cat([dx.flatten(1), dy.flatten(1)], dim=1)


def _check_logits(logits: Tensor) -> None:
    if logits.dim() != 4 or logits.shape[1] != 2:
        raise InputError(f"expected logits of shape (N, 2, h, w), got {tuple(logits.shape)}")


def local_adversarial_loss(logits: Tensor, target: int) -> Tensor:
    """Cross-entropy of each patch's 2-way logits against `target`, mean over patches and batch.

    A mean, not the paper's sum: per-rank means of equal-sized shards average to the global mean,
    so data-parallel gradient averaging gives the single-process result.
    """
    _check_logits(logits)
    if target not in (REFINED, REAL):
        raise InputError(f"target must be REFINED (0) or REAL (1), got {target!r}")
    n, _, h, w = logits.shape
    labels = torch.full((n, h, w), target, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)


def psi(x: Tensor, kind: str) -> Tensor:
    """The feature transform the self-regularization compares in.

    "identity": x (the paper's experiments). "channel_mean": mean over colour channels, keepdim
    (lets R change colour, keeps luminance layout). "gradients": horizontal and vertical finite
    differences, flattened and concatenated per sample -> (N, C*H*(W-1) + C*(H-1)*W); it ignores
    a constant offset, so R may shift brightness freely but must keep edges. "low_pass": each
    channel's mean over LOW_PASS_POOL-pixel cells (R may add texture and detail finer than that,
    must keep the coarse layout and colour). "edges": the absolute "gradients" of the channel mean
    (R may recolour and invert freely, must keep where the brightness edges are).
    """
    if kind == "identity":
        return x
    if kind == "channel_mean":
        return x.mean(dim=1, keepdim=True)
    if kind == "gradients":
        return _gradients(x)
    if kind == "low_pass":
        return F.avg_pool2d(x, LOW_PASS_POOL, ceil_mode=True)
    if kind == "edges":
        return _gradients(x.mean(dim=1, keepdim=True)).abs()
    raise InputError(f"unknown psi kind {kind!r} (known: {', '.join(PSI_KINDS)})")


def stroke_mask(synthetic: Tensor) -> Tensor:
    """(N, 1, H, W) float mask of the simulator's strokes: where any channel of a synthetic image
    differs from its background colour (the per-channel median of its border pixels) by more
    than STROKE_THRESHOLD. A simulator draws on a plain background, so this is the annotation it
    would emit, read off its own output."""
    border = torch.cat(
        [
            synthetic[..., 0, :],
            synthetic[..., -1, :],
            synthetic[..., 1:-1, 0],
            synthetic[..., 1:-1, -1],
        ],
        dim=-1,
    )
    background = border.median(dim=-1).values[..., None, None]
    return ((synthetic - background).abs().amax(dim=1, keepdim=True) > STROKE_THRESHOLD).float()


def stroke_contrast_loss(refined: Tensor, synthetic: Tensor, margin: float) -> Tensor:
    """Mean over the synthetic image's stroke pixels of relu(margin - |L - B|): L the refined
    image's luminance (channel mean) there, B the mean luminance of the refined background
    (non-stroke) pixels in the STROKE_WINDOW around it. 0 when every stroke stands out from its
    surroundings by margin, in either polarity: R may recolour, texture and invert freely but
    may not paint a stroke into its background, which is what erases a digit's label. Stroke
    pixels with no background in their window (inside a thick stroke) do not count."""
    mask = stroke_mask(synthetic)
    luminance = refined.mean(dim=1, keepdim=True)
    background = 1.0 - mask
    pad = STROKE_WINDOW // 2
    near = F.avg_pool2d(background, STROKE_WINDOW, stride=1, padding=pad)
    near_sum = F.avg_pool2d(luminance * background, STROKE_WINDOW, stride=1, padding=pad)
    counted = mask * (near > 0).float()
    local = near_sum / near.clamp_min(1e-6)
    shortfall = F.relu(margin - (luminance - local).abs()) * counted
    return shortfall.sum() / counted.sum().clamp_min(1.0)


def diversity_reward(first: Tensor, second: Tensor, synthetic: Tensor, region: str) -> Tensor:
    """How much two refinements of the same synthetic images under different noise draws differ:
    the mean over 4x4 cells (psi "low_pass", [-1, 1] levels) of |first - second|. region
    "background" counts only the cells with no stroke pixel of the synthetic image (stroke_mask),
    so R is paid for varying the background, never for painting over a digit. Cells: per-pixel
    differences are cheapest as speckle."""
    diff = (psi(first, "low_pass") - psi(second, "low_pass")).abs()
    if region == "all":
        return diff.mean()
    if region != "background":
        raise InputError(f"unknown diversity region {region!r} (known: all, background)")
    has_stroke = F.max_pool2d(stroke_mask(synthetic), LOW_PASS_POOL, ceil_mode=True)
    weight = (1.0 - has_stroke).expand_as(diff)
    return (diff * weight).sum() / weight.sum().clamp_min(1.0)


def self_regularization_loss(refined: Tensor, synthetic: Tensor, kind: str) -> Tensor:
    """Mean absolute difference |psi(refined) - psi(synthetic)| over all elements.

    The paper writes an L1 *sum* (and sums the adversarial term over patches); here both are
    means, so reg_lambda multiplies a per-pixel quantity and one lambda works across resolutions
    and batch sizes. A lambda from a sum-based implementation corresponds to
    lambda_sum * (psi elements per image) / (D patches per image) here, e.g. x 1925 / 126 for
    identity psi on the 35x55 gaze preset with its 9x14 patch map.
    """
    if refined.shape != synthetic.shape:
        raise InputError(
            f"refined {tuple(refined.shape)} and synthetic {tuple(synthetic.shape)} differ"
        )
    return (psi(refined, kind) - psi(synthetic, kind)).abs().mean()


def refiner_loss(
    disc_logits_on_refined: Tensor | None,
    refined: Tensor,
    synthetic: Tensor,
    reg_lambda: float,
    psi_kind: str,
    adversarial_weight: float = 1.0,
    pre_tanh: Tensor | None = None,
    saturation_margin: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """L_R = adversarial_weight * CE(D(R(x)) -> REAL) + reg_lambda * self_reg(R(x), x)
    [+ saturation_penalty(pre_tanh, saturation_margin), when pre_tanh is given].

    adversarial_weight=0 is the refiner pretraining phase (self-regularization only); then the
    logits may be None and D need not be run at all. Returns the loss and float metrics
    "loss_r", "loss_r_adv", "loss_r_reg" and "loss_r_sat".
    """
    reg = self_regularization_loss(refined, synthetic, psi_kind)
    zero = torch.zeros((), device=refined.device, dtype=reg.dtype)
    if disc_logits_on_refined is None:
        if adversarial_weight != 0:
            raise InputError("adversarial_weight != 0 needs the discriminator's logits")
        adv = zero
    else:
        adv = local_adversarial_loss(disc_logits_on_refined, REAL)
    sat = zero if pre_tanh is None else saturation_penalty(pre_tanh, saturation_margin)
    loss = adversarial_weight * adv + reg_lambda * reg + sat
    # One stacked .tolist() = one host sync per step on GPU instead of four.
    values = torch.stack([loss, adv, reg, sat.to(reg.dtype)]).detach().tolist()
    names = ("loss_r", "loss_r_adv", "loss_r_reg", "loss_r_sat")
    return loss, dict(zip(names, values, strict=True))


def saturation_penalty(pre_tanh: Tensor, margin: float) -> Tensor:
    """mean(relu(|z| - margin)^2) over R's pre-tanh values z; 0 when margin is 0 (off).

    Zero while every |z| <= margin, so it leaves the paper's loss alone wherever R's output can
    still move; past the margin it pulls z back, where tanh passes gradients again.
    """
    if margin == 0:
        return torch.zeros((), device=pre_tanh.device, dtype=pre_tanh.dtype)
    return F.relu(pre_tanh.abs() - margin).square().mean()


def _patch_accuracy(logits: Tensor, target: int) -> Tensor:
    _check_logits(logits)
    return (logits.detach().argmax(dim=1) == target).float().mean()


def patch_accuracy(logits: Tensor, target: int) -> float:
    """Share of patches whose argmax class is `target` (ties go to class 0, REFINED)."""
    return _patch_accuracy(logits, target).item()


def discriminator_loss(
    logits_real: Tensor, logits_refined: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """L_D = (CE(D(y) -> REAL) + CE(D(R(x)) -> REFINED)) / 2, each a mean over patches and batch.

    Averaging the two halves (rather than summing) keeps L_D on the scale of one cross-entropy,
    log(2) for an undecided D. `logits_refined` should come from detached refined images (and
    buffer images), so this loss does not reach R. Metrics: "loss_d", and patch accuracies
    "d_acc_real" and "d_acc_refined".
    """
    loss_real = local_adversarial_loss(logits_real, REAL)
    loss_refined = local_adversarial_loss(logits_refined, REFINED)
    loss = 0.5 * (loss_real + loss_refined)
    acc_real = _patch_accuracy(logits_real, REAL)
    acc_refined = _patch_accuracy(logits_refined, REFINED)
    values = torch.stack([loss.detach(), acc_real, acc_refined]).tolist()  # one host sync
    return loss, dict(zip(("loss_d", "d_acc_real", "d_acc_refined"), values, strict=True))
