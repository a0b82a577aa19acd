"""Refiner options for an appearance gap: pixel noise (PixelDA), appearance-free psi kinds, D's
noise and dropout, and real images under the square's symmetries."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from simgan_dist.config import ModelConfig
from simgan_dist.model.losses import psi, self_regularization_loss
from simgan_dist.model.networks import GaussianNoise, build_discriminator, build_refiner
from simgan_dist.train.loop import augment_dihedral

PIXEL_NOISE = ModelConfig(
    image_channels=3,
    refiner_features=8,
    refiner_blocks=1,
    refiner_noise_channels=4,
)


def _images(n: int = 4, channels: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, 28, 28, generator=gen) * 2 - 1


def test_pixel_noise_changes_the_pixels_and_given_noise_repeats() -> None:
    torch.manual_seed(0)
    refiner = build_refiner(PIXEL_NOISE)
    x = _images()
    pre_tanh = refiner(x, pre_tanh=True)
    assert not torch.allclose(pre_tanh, refiner(x, pre_tanh=True))  # fresh noise per call
    noise = refiner.noise_like(x, torch.Generator().manual_seed(3))
    assert noise is not None and noise.shape == (4, 4, 28, 28)
    torch.testing.assert_close(refiner(x, noise=noise), refiner(x, noise=noise))
    # The projected plane differs across the image: the noise can place texture, not only colour.
    maps = refiner.noise_maps
    assert maps is not None
    plane = maps(noise[:, :, 0, 0]).view(4, 28, 28)
    assert plane.std(dim=(1, 2)).min() > 0


def test_psi_low_pass_keeps_cell_means_only() -> None:
    x = _images(2)
    fine = torch.zeros_like(x)
    fine[..., ::2, :] = 0.3  # stripes of period 2 average out within every 4x4 cell
    fine[..., 1::2, :] = -0.3
    assert psi(x, "low_pass").shape == (2, 3, 7, 7)
    torch.testing.assert_close(psi(x + fine, "low_pass"), psi(x, "low_pass"))
    assert self_regularization_loss(x + 0.5, x, "low_pass").item() == pytest.approx(0.5)


def test_psi_edges_ignores_colour_and_polarity_but_not_layout() -> None:
    x = _images(2)
    recoloured = x.flip(1)  # channels swapped: same luminance everywhere
    torch.testing.assert_close(psi(recoloured, "edges"), psi(x, "edges"))
    torch.testing.assert_close(psi(-x + 0.2, "edges"), psi(x, "edges"))  # inverted and shifted
    moved = x.roll(3, dims=-1)
    assert self_regularization_loss(moved, x, "edges").item() > 0.1


def test_disc_noise_and_dropout_act_only_in_training() -> None:
    cfg = dataclasses.replace(PIXEL_NOISE, disc_hidden_noise=0.2, disc_dropout=0.1)
    torch.manual_seed(0)
    disc = build_discriminator(cfg)
    assert any(isinstance(m, GaussianNoise) for m in disc.modules())
    x = _images()
    assert not torch.allclose(disc(x), disc(x))
    disc.eval()
    torch.testing.assert_close(disc(x), disc(x))
    # Off: no extra modules, so the paper's D keeps its state_dict keys.
    plain = build_discriminator(dataclasses.replace(cfg, disc_hidden_noise=0, disc_dropout=0))
    assert len(plain.net) < len(disc.net)
    assert len(plain.state_dict()) == len(disc.state_dict())


def test_augment_dihedral_gives_the_square_symmetries() -> None:
    torch.manual_seed(0)
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4).repeat(64, 1, 1, 1)
    out = augment_dihedral(x)
    assert out.shape == x.shape
    # Every output is one of the 8 symmetries of its own input, and several of them occur.
    seen = set()
    for img, src in zip(out, x, strict=True):
        variants = [src, src.flip(-1), src.flip(-2), src.flip(-1).flip(-2)]
        variants += [v.transpose(-1, -2) for v in variants]
        matches = [i for i, v in enumerate(variants) if torch.equal(img, v)]
        assert matches
        seen.add(matches[0])
    assert len(seen) == 8
    # Non-square images are only flipped (a transpose would change their shape).
    wide = torch.rand(16, 1, 3, 5)
    assert augment_dihedral(wide).shape == wide.shape


def test_minibatch_std_sees_a_collapsed_half_batch() -> None:
    from simgan_dist.model.networks import MinibatchStd

    varied = torch.randn(8, 3, 5, 5)
    same = torch.randn(1, 3, 5, 5).expand(8, 3, 5, 5)
    planes = MinibatchStd(group=4)(torch.cat([varied, same]))[:, -1]
    assert planes.shape == (16, 5, 5)
    # Groups are consecutive images: the collapsed half reads 0, the varied half does not.
    assert (planes[8:] == 0).all() and (planes[:8] > 0.5).all()
    cfg = dataclasses.replace(PIXEL_NOISE, disc_minibatch_std=True)
    assert build_discriminator(cfg)(_images(8)).shape == (8, 2, 14, 14)
