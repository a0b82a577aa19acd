"""The SimGAN refiner (fully convolutional, size-preserving) and patch-wise discriminators."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from simgan_dist.config import ModelConfig, build_dataclass
from simgan_dist.errors import InputError


class ResnetBlock(nn.Module):
    """The paper's refiner block: convKxK-F, ReLU, convKxK-F, identity skip, ReLU after the add.

    Same padding and stride 1, so the block keeps the spatial size (the skip needs that).
    """

    def __init__(self, features: int, kernel: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(features, features, kernel, stride=1, padding=pad)
        self.conv2 = nn.Conv2d(features, features, kernel, stride=1, padding=pad)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.relu(self.conv1(x)))
        return self.relu(x + y)


NOISE_MAPS = 1  # full-size planes the pixel noise is projected to (PixelDA uses one)


class Refiner(nn.Module):
    """R: convKxK-F + ReLU, `num_blocks` ResnetBlocks, conv1x1 back to `channels`, tanh.

    No striding and no pooling anywhere: every output pixel is computed at full resolution, which
    is what lets R preserve the synthetic image's annotation (a pupil stays where it was drawn).
    Inputs and outputs are in [-1, 1]. Cost: 2 * num_blocks + 1 convs of F x F x K x K at full
    resolution; the hand preset (224x224, F=64, K=7, 10 blocks) is ~0.2 TFLOP per image forward.

    With noise_channels > 0 (not in the paper; PixelDA's generator input) a vector of that many
    N(0, 1) values per image enters R's pixel path as constant planes plus a learned projection
    to full-size planes, so one synthetic image has many refinements (colours, backgrounds).
    Drawn from torch's RNG unless given (refine passes noise from a seeded generator, so a redone
    shard comes out the same).
    """

    def __init__(
        self,
        channels: int,
        features: int,
        num_blocks: int,
        kernel: int,
        noise_channels: int = 0,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise InputError(f"refiner kernel must be odd to keep the size, got {kernel}")
        if noise_channels < 0:
            raise InputError(f"noise_channels must be >= 0, got {noise_channels}")
        self.noise_channels = noise_channels
        self.noise_maps: nn.Linear | None = None
        stem_in = channels
        if noise_channels:
            if image_size is None:
                raise InputError("a refiner with pixel noise needs image_size (its maps' size)")
            # PixelDA's generator input: the noise vector as constant planes (colour, per image)
            # and projected by a learned linear map to full-size planes (layout, texture).
            self.noise_maps = nn.Linear(noise_channels, NOISE_MAPS * image_size[0] * image_size[1])
            stem_in += noise_channels + NOISE_MAPS
        self.stem = nn.Sequential(
            nn.Conv2d(stem_in, features, kernel, stride=1, padding=kernel // 2), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[ResnetBlock(features, kernel) for _ in range(num_blocks)])
        self.head = nn.Conv2d(features, channels, 1)

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> Refiner:
        """R from model config fields by name, e.g. an export's refiner.json `model`; a bad or
        unknown field raises ValueError naming it (model.<field>)."""
        return build_refiner(build_dataclass(ModelConfig, dict(fields), "model."))

    def noise_like(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor | None:
        """Fresh input noise for the batch x (None for a refiner without a noise input)."""
        if self.noise_channels == 0:
            return None
        n, _, h, w = x.shape
        shape = (n, self.noise_channels, 1, 1)
        noise = torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
        return noise.expand(n, self.noise_channels, h, w)

    def pre_tanh(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        """R's pixel values before the tanh."""
        if noise is not None and not self.noise_channels:
            raise InputError("this refiner has no noise input (model.refiner_noise_channels 0)")
        stem_input = x
        if self.noise_maps is not None:
            if noise is None:
                noise = self.noise_like(x)
                assert noise is not None
            expected = (x.shape[0], self.noise_channels, *x.shape[2:])
            if tuple(noise.shape) != expected:
                raise InputError(f"noise must be {expected}, got {tuple(noise.shape)}")
            n, _, h, w = x.shape
            maps = self.noise_maps(noise[:, :, 0, 0].to(x.dtype)).view(n, NOISE_MAPS, h, w)
            stem_input = torch.cat([x, noise.to(x.dtype), maps], dim=1)
        return self.head(self.blocks(self.stem(stem_input)))

    @torch.no_grad()
    def refine(
        self, images: Tensor, generator: torch.Generator | None = None, batch_size: int = 500
    ) -> Tensor:
        """R(images) for inference: float (N,C,H,W) in [-1, 1] in, the same out, in chunks of
        batch_size, in eval mode; R's noise input (if any) drawn from generator."""
        self.eval()
        chunks = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
        return torch.cat([self(c, noise=self.noise_like(c, generator)) for c in chunks])

    def forward(self, x: Tensor, pre_tanh: bool = False, noise: Tensor | None = None) -> Tensor:
        """R(x). pre_tanh=True: the pixel values before the tanh instead (for the saturation
        penalty, which needs a gradient where tanh has none). Keywords, so a DeepSpeed engine
        passes them through."""
        z = self.pre_tanh(x, noise)
        return z if pre_tanh else torch.tanh(z)


@dataclass(frozen=True)
class LayerSpec:
    """One discriminator layer. `out_channels` is ignored for "maxpool" (write 0)."""

    kind: str  # "conv" | "maxpool"
    out_channels: int
    kernel: int
    stride: int

    def __post_init__(self) -> None:
        if self.kind not in ("conv", "maxpool"):
            raise InputError(f"LayerSpec.kind must be 'conv' or 'maxpool', got {self.kind!r}")
        if self.kernel < 1 or self.kernel % 2 != 1:
            raise InputError(f"LayerSpec.kernel must be a positive odd number, got {self.kernel}")
        if self.stride < 1:
            raise InputError(f"LayerSpec.stride must be >= 1, got {self.stride}")
        if self.kind == "conv" and self.out_channels < 1:
            raise InputError(f"conv LayerSpec needs out_channels >= 1, got {self.out_channels}")


# The paper's tables, written out. Padding is always kernel // 2 ("same" for stride 1; for stride s
# it gives ceil(n / s)), so 35x55 -> 18x28 -> 9x14 for gaze. ReLU follows every conv but the last,
# whose 2 channels are the per-patch logits (index 0 = refined, 1 = real).
DISCRIMINATOR_LAYOUTS: dict[str, tuple[LayerSpec, ...]] = {
    # 35x55 -> 9x14 patch map.
    "gaze": (
        LayerSpec("conv", 96, 3, 2),
        LayerSpec("conv", 64, 3, 2),
        LayerSpec("maxpool", 0, 3, 1),
        LayerSpec("conv", 32, 3, 1),
        LayerSpec("conv", 32, 1, 1),
        LayerSpec("conv", 2, 1, 1),
    ),
    # 224x224 -> 56 -> 28 -> 14 -> 7: a 7x7 patch map.
    "hand": (
        LayerSpec("conv", 96, 7, 4),
        LayerSpec("conv", 64, 5, 2),
        LayerSpec("maxpool", 0, 3, 2),
        LayerSpec("conv", 32, 3, 2),
        LayerSpec("conv", 32, 1, 1),
        LayerSpec("conv", 2, 1, 1),
    ),
    # 28x28 -> 14x14 map; each logit sees a 15x15 pixel patch (local, not the whole digit).
    "digits": (
        LayerSpec("conv", 64, 3, 2),
        LayerSpec("conv", 64, 3, 1),
        LayerSpec("maxpool", 0, 3, 1),
        LayerSpec("conv", 32, 3, 1),
        LayerSpec("conv", 32, 1, 1),
        LayerSpec("conv", 2, 1, 1),
    ),
}


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) to its input in training mode only (PixelDA's D regularizer)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = float(std)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.std * torch.randn_like(x) if self.training and self.std > 0 else x


class MinibatchStd(nn.Module):
    """Appends one plane: the std over groups of `group` consecutive images of every feature,
    averaged (StyleGAN's minibatch standard deviation). D can then tell a batch of refined
    images that all look alike from a varied real one: a check against R's mode collapse.
    Groups never mix real and refined images as long as both halves of D's batch are
    multiples of `group`; a batch that is not uses one group."""

    def __init__(self, group: int = 4) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        group = self.group if n % self.group == 0 else n
        std = x.view(n // group, group, c, h, w).std(dim=1, unbiased=False)  # contiguous groups
        per_group = std.mean(dim=(1, 2, 3))
        plane = per_group.repeat_interleave(group).view(n, 1, 1, 1).expand(n, 1, h, w)
        return torch.cat([x, plane], dim=1)


class Discriminator(nn.Module):
    """D: a small conv net whose output is a map of 2-way logits, one pair per image patch.

    forward(x) -> logits of shape (N, 2, h, w); index 0 = "refined", index 1 = "real".
    hidden_noise and dropout (not in the paper; PixelDA's D uses noise 0.2 and dropout) act after
    every hidden ReLU while D is in training mode: they keep a small D from memorising a small
    real pool and from overpowering R. Off (0) adds no modules, so checkpoints keep their keys.
    """

    def __init__(
        self,
        layout: tuple[LayerSpec, ...],
        channels: int,
        hidden_noise: float = 0.0,
        dropout: float = 0.0,
        minibatch_std: bool = False,
    ) -> None:
        super().__init__()
        if not layout or layout[-1].kind != "conv" or layout[-1].out_channels != 2:
            raise InputError("the last discriminator layer must be a conv with 2 outputs (logits)")
        layers: list[nn.Module] = []
        in_ch = channels
        for i, spec in enumerate(layout):
            pad = spec.kernel // 2
            if minibatch_std and i == len(layout) - 2:  # before the last two 1x1/3x3 convs
                layers.append(MinibatchStd())
                in_ch += 1
            if spec.kind == "maxpool":
                layers.append(nn.MaxPool2d(spec.kernel, stride=spec.stride, padding=pad))
                continue
            layers.append(nn.Conv2d(in_ch, spec.out_channels, spec.kernel, spec.stride, pad))
            in_ch = spec.out_channels
            # No ReLU on the logits: a ReLU there clamps "refined" evidence at 0 and stalls D
            # (the bug in one public implementation).
            if i < len(layout) - 1:
                layers.append(nn.ReLU())
                if hidden_noise > 0:
                    layers.append(GaussianNoise(hidden_noise))
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        self.layout = layout
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _out_size(size: int, spec: LayerSpec) -> int:
    # PyTorch's floor((n + 2p - k) / s) + 1 with p = k // 2 (dilation 1).
    pad = spec.kernel // 2
    return (size + 2 * pad - spec.kernel) // spec.stride + 1


def layout_output_shape(layout: tuple[LayerSpec, ...], height: int, width: int) -> tuple[int, int]:
    """The (h, w) of the logit map for an input of height x width, without running the net."""
    for spec in layout:
        height, width = _out_size(height, spec), _out_size(width, spec)
    if height < 1 or width < 1:
        raise InputError("input too small for this discriminator layout")
    return height, width


def receptive_field(layout: tuple[LayerSpec, ...]) -> int:
    """Side, in input pixels, of the square patch that one output logit depends on."""
    field, jump = 1, 1
    for spec in layout:
        field += (spec.kernel - 1) * jump
        jump *= spec.stride
    return field


def build_refiner(cfg: ModelConfig) -> Refiner:
    return Refiner(
        cfg.image_channels,
        cfg.refiner_features,
        cfg.refiner_blocks,
        cfg.refiner_kernel,
        noise_channels=cfg.refiner_noise_channels,
        image_size=(cfg.image_height, cfg.image_width),
    )


def build_discriminator(cfg: ModelConfig) -> Discriminator:
    return Discriminator(
        DISCRIMINATOR_LAYOUTS[cfg.discriminator],
        cfg.image_channels,
        hidden_noise=cfg.disc_hidden_noise,
        dropout=cfg.disc_dropout,
        minibatch_std=cfg.disc_minibatch_std,
    )


def patch_map_shape(cfg: ModelConfig) -> tuple[int, int]:
    """(h, w) of D's logit map for this config's image size."""
    layout = DISCRIMINATOR_LAYOUTS[cfg.discriminator]
    return layout_output_shape(layout, cfg.image_height, cfg.image_width)
