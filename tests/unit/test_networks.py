"""Refiner and discriminator shapes, layer contracts and seeded construction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simgan_dist.config import ModelConfig
from simgan_dist.model.networks import (
    DISCRIMINATOR_LAYOUTS,
    Discriminator,
    LayerSpec,
    Refiner,
    ResnetBlock,
    build_discriminator,
    build_refiner,
    patch_map_shape,
    receptive_field,
)

GAZE = ModelConfig(image_channels=1, image_height=35, image_width=55, discriminator="gaze")
HAND = ModelConfig(
    image_channels=1,
    image_height=224,
    image_width=224,
    refiner_kernel=7,
    refiner_blocks=10,
    discriminator="hand",
)
DIGITS = ModelConfig(image_channels=1, image_height=28, image_width=28, discriminator="digits")


def _input(cfg: ModelConfig, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    shape = (batch, cfg.image_channels, cfg.image_height, cfg.image_width)
    return torch.rand(shape) * 2 - 1


@pytest.mark.parametrize("cfg", [GAZE, DIGITS], ids=["gaze", "digits"])
def test_refiner_keeps_size_and_range(cfg: ModelConfig) -> None:
    x = _input(cfg)
    y = build_refiner(cfg)(x)
    assert y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1


def test_refiner_hand_size() -> None:
    # The full 10-block 7x7 preset builds; the forward pass at 224x224 uses 2 blocks (speed).
    full = build_refiner(HAND)
    assert len(full.blocks) == 10
    assert full.stem[0].kernel_size == (7, 7)
    small = Refiner(channels=1, features=16, num_blocks=2, kernel=7)
    x = _input(HAND, batch=1)
    assert small(x).shape == x.shape
    # The full preset still keeps the size, checked on a small image.
    x_small = torch.rand(1, 1, 20, 24) * 2 - 1
    assert full(x_small).shape == x_small.shape


def test_refiner_output_is_tanh_bounded() -> None:
    r = Refiner(channels=1, features=4, num_blocks=1, kernel=3)
    with torch.no_grad():
        r.head.bias.fill_(10.0)  # pre-activation ~10: tanh saturates just below 1
    x = torch.rand(1, 1, 6, 6) * 2 - 1
    y = r(x)
    assert y.max() <= 1 and y.min() > 0.99
    # pre_tanh=True gives the values before the tanh (the saturation penalty's input).
    z = r(x, pre_tanh=True)
    assert z.min() > 5 and torch.allclose(torch.tanh(z), y)


def test_resnet_block_skip_and_relu() -> None:
    block = ResnetBlock(features=3, kernel=3)
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()  # the conv branch outputs 0: the block is relu(x + 0)
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(block(x), torch.relu(x))


def test_refiner_three_channels() -> None:
    x = torch.rand(2, 3, 17, 19) * 2 - 1
    assert Refiner(channels=3, features=8, num_blocks=2, kernel=3)(x).shape == x.shape


@pytest.mark.parametrize("cfg", [GAZE, HAND, DIGITS], ids=["gaze", "hand", "digits"])
def test_refiner_has_no_stride_or_pooling(cfg: ModelConfig) -> None:
    convs = 0
    for module in build_refiner(cfg).modules():
        assert "Pool" not in type(module).__name__, type(module).__name__
        if isinstance(module, nn.Conv2d):
            convs += 1
            assert module.stride == (1, 1)
            k = module.kernel_size[0]
            assert module.padding == (k // 2, k // 2)
    assert convs == 2 * cfg.refiner_blocks + 2


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [(GAZE, (9, 14)), (DIGITS, (14, 14)), (HAND, (7, 7))],
    ids=["gaze", "digits", "hand"],
)
def test_discriminator_map_shape(cfg: ModelConfig, expected: tuple[int, int]) -> None:
    assert patch_map_shape(cfg) == expected
    logits = build_discriminator(cfg)(_input(cfg, batch=2))
    assert logits.shape == (2, 2, *expected)


def test_discriminator_patch_map_on_other_sizes() -> None:
    # patch_map_shape's arithmetic agrees with PyTorch on odd and even sizes.
    for h, w in [(17, 23), (32, 40), (61, 47)]:
        for name in ("gaze", "digits"):
            cfg = ModelConfig(image_height=h, image_width=w, discriminator=name)
            logits = build_discriminator(cfg)(torch.zeros(1, 1, h, w))
            assert tuple(logits.shape[2:]) == patch_map_shape(cfg)


@pytest.mark.parametrize("name", ["gaze", "hand", "digits"])
def test_discriminator_ends_with_bare_logit_conv(name: str) -> None:
    d = Discriminator(DISCRIMINATOR_LAYOUTS[name], channels=1)
    last = list(d.net.children())[-1]
    assert isinstance(last, nn.Conv2d) and last.out_channels == 2
    # Every other conv is followed by a ReLU.
    layers = list(d.net.children())
    for i, layer in enumerate(layers[:-1]):
        if isinstance(layer, nn.Conv2d):
            assert isinstance(layers[i + 1], nn.ReLU)


def test_discriminator_logits_can_be_negative() -> None:
    # Behavioural check that nothing clamps the logits (a final ReLU would make all >= 0).
    torch.manual_seed(0)
    d = build_discriminator(DIGITS)
    logits = d(torch.rand(8, 1, 28, 28) * 2 - 1)
    assert (logits < 0).any()


def test_digits_receptive_field_is_local() -> None:
    assert receptive_field(DISCRIMINATOR_LAYOUTS["digits"]) == 15
    # 3 -> 7 (after two stride-2 convs, one step = 4 px) -> 15 (pool) -> 23 (conv3x3).
    assert receptive_field(DISCRIMINATOR_LAYOUTS["gaze"]) == 23


def test_discriminator_rejects_bad_layouts() -> None:
    with pytest.raises(ValueError, match="last discriminator layer"):
        Discriminator((LayerSpec("conv", 8, 3, 1), LayerSpec("maxpool", 0, 3, 1)), channels=1)
    with pytest.raises(ValueError, match="last discriminator layer"):
        Discriminator((LayerSpec("conv", 3, 1, 1),), channels=1)
    with pytest.raises(ValueError, match="kind"):
        LayerSpec("avgpool", 0, 3, 1)
    with pytest.raises(ValueError, match="odd"):
        LayerSpec("conv", 8, 4, 1)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_same_weights() -> None:
    for build in (build_refiner, build_discriminator):
        torch.manual_seed(123)
        first = build(GAZE)
        torch.manual_seed(123)
        second = build(GAZE)
        torch.manual_seed(124)
        other = build(GAZE)
        assert _same_weights(first, second)
        assert not _same_weights(first, other)


def test_refine_is_the_eval_forward_in_chunks_without_grad() -> None:
    from simgan_dist.config import ModelConfig
    from simgan_dist.model.networks import build_refiner

    torch.manual_seed(0)
    refiner = build_refiner(ModelConfig(refiner_features=8, refiner_blocks=1)).train()
    images = torch.rand(7, 1, 28, 28) * 2 - 1
    refined = refiner.refine(images, batch_size=3)
    assert not refiner.training and not refined.requires_grad
    torch.testing.assert_close(refined, refiner(images).detach())
