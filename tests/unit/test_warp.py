"""The warping refiner (model.refiner_max_warp): identity at start, bounded smooth displacement,
exact resampling, a penalty that grows with the flow, and gradients that reach the flow head."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from simgan_dist.config import ModelConfig, load_config
from simgan_dist.model.losses import flow_penalty
from simgan_dist.model.networks import (
    DISCRIMINATOR_LAYOUTS,
    build_discriminator,
    build_refiner,
    patch_map_shape,
    receptive_field,
    warp,
)
from simgan_dist.train.engine import TorchUpdater, make_optimizer
from simgan_dist.train.loop import refiner_step

DIGITS = ModelConfig(refiner_features=8, refiner_blocks=1)


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_zero_flow_is_the_identity_and_a_whole_pixel_flow_a_shift() -> None:
    x = _images()
    torch.testing.assert_close(warp(x, torch.zeros(4, 2, 28, 28)), x, rtol=0, atol=1e-5)
    flow = torch.zeros(4, 2, 28, 28)
    flow[:, 0] = 1.0  # sample one pixel to the right: the image moves left
    shifted = warp(x, flow)
    torch.testing.assert_close(shifted[..., :-1], x[..., 1:], rtol=0, atol=1e-5)
    # What comes in from outside the frame is background.
    torch.testing.assert_close(shifted[..., -1], torch.full_like(shifted[..., -1], -1.0))


def test_warping_refiner_starts_as_the_papers() -> None:
    torch.manual_seed(0)
    plain = build_refiner(DIGITS)
    torch.manual_seed(0)
    warping = build_refiner(dataclasses.replace(DIGITS, refiner_max_warp=2.0))
    x = _images()
    torch.testing.assert_close(warping(x), plain(x), rtol=0, atol=1e-5)
    _, flow = warping(x, parts=True)
    assert flow is not None and torch.all(flow == 0)
    assert plain(x, parts=True)[1] is None


def test_flow_is_bounded_and_smooth() -> None:
    refiner = build_refiner(dataclasses.replace(DIGITS, refiner_max_warp=1.5))
    assert refiner.flow_head is not None
    torch.nn.init.normal_(refiner.flow_head.weight, std=10.0)  # drive tanh to its limits
    _, flow = refiner(_images(), parts=True)
    assert flow is not None and flow.shape == (4, 2, 28, 28)
    assert flow.abs().max() <= 1.5
    # Smoothed: neighbours differ far less than the field's own spread.
    assert (flow[..., 1:] - flow[..., :-1]).abs().mean() < 0.5 * flow.std()


def test_flow_penalty_grows_with_magnitude_and_roughness() -> None:
    still = torch.zeros(2, 2, 8, 8)
    uniform = torch.full((2, 2, 8, 8), 0.5)
    rough = torch.zeros(2, 2, 8, 8)
    rough[..., ::2] = 1.0
    assert flow_penalty(still, 1.0, 1.0) == 0
    assert flow_penalty(uniform, 1.0, 0.0) == pytest.approx(0.25)
    assert flow_penalty(uniform, 0.0, 1.0) == 0  # a uniform shift is perfectly smooth
    assert flow_penalty(rough, 0.0, 1.0) > 0.4


def test_adversarial_steps_train_the_flow_head() -> None:
    cfg = load_config(
        preset="debug",
        overrides=["model.refiner_max_warp=2.0", "loss.flow_lambda=0.01", "run.num_workers=1"],
    )
    torch.manual_seed(0)
    r_net, d_net = build_refiner(cfg.model), build_discriminator(cfg.model)
    refiner = TorchUpdater(r_net, make_optimizer(r_net.parameters(), cfg.optim, 0.01))
    disc = TorchUpdater(d_net, make_optimizer(d_net.parameters(), cfg.optim, 0.01))
    assert r_net.flow_head is not None
    metrics = {}
    for seed in range(3):
        metrics = refiner_step(refiner, disc, _images(8, seed), cfg, adversarial=True)
    assert r_net.flow_head.weight.abs().sum() > 0
    assert metrics["flow_px"] > 0


def test_wide_digits_discriminator_sees_about_the_whole_digit() -> None:
    cfg = ModelConfig(discriminator="digits_wide")
    assert patch_map_shape(cfg) == (7, 7)
    assert build_discriminator(cfg)(_images(2)).shape == (2, 2, 7, 7)
    assert receptive_field(DISCRIMINATOR_LAYOUTS["digits_wide"]) >= 27


def test_max_warp_is_validated() -> None:
    from simgan_dist.config import ConfigError

    with pytest.raises(ConfigError, match="model.refiner_max_warp"):
        load_config(preset="debug", overrides=["model.refiner_max_warp=20"])
