"""The SimGAN refiner (fully convolutional, size-preserving) and patch-wise discriminators."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from simgan_dist.config import ModelConfig


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


class Refiner(nn.Module):
    """R: convKxK-F + ReLU, `num_blocks` ResnetBlocks, conv1x1 back to `channels`, tanh.

    No striding and no pooling anywhere: every output pixel is computed at full resolution, which
    is what lets R preserve the synthetic image's annotation (a pupil stays where it was drawn).
    Inputs and outputs are in [-1, 1]. Cost: 2 * num_blocks + 1 convs of F x F x K x K at full
    resolution; the hand preset (224x224, F=64, K=7, 10 blocks) is ~0.2 TFLOP per image forward.
    """

    def __init__(self, channels: int, features: int, num_blocks: int, kernel: int) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"refiner kernel must be odd to keep the size, got {kernel}")
        self.stem = nn.Sequential(
            nn.Conv2d(channels, features, kernel, stride=1, padding=kernel // 2), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[ResnetBlock(features, kernel) for _ in range(num_blocks)])
        self.head = nn.Conv2d(features, channels, 1)

    def forward(self, x: Tensor, pre_tanh: bool = False) -> Tensor:
        """R(x); with pre_tanh=True the values before the tanh instead (for the saturation
        penalty, which needs a gradient where tanh has none). A keyword, so a DeepSpeed
        engine passes it through."""
        z = self.head(self.blocks(self.stem(x)))
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
            raise ValueError(f"LayerSpec.kind must be 'conv' or 'maxpool', got {self.kind!r}")
        if self.kernel < 1 or self.kernel % 2 != 1:
            raise ValueError(f"LayerSpec.kernel must be a positive odd number, got {self.kernel}")
        if self.stride < 1:
            raise ValueError(f"LayerSpec.stride must be >= 1, got {self.stride}")
        if self.kind == "conv" and self.out_channels < 1:
            raise ValueError(f"conv LayerSpec needs out_channels >= 1, got {self.out_channels}")


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


class Discriminator(nn.Module):
    """D: a small conv net whose output is a map of 2-way logits, one pair per image patch.

    forward(x) -> logits of shape (N, 2, h, w); index 0 = "refined", index 1 = "real".
    """

    def __init__(self, layout: tuple[LayerSpec, ...], channels: int) -> None:
        super().__init__()
        if not layout or layout[-1].kind != "conv" or layout[-1].out_channels != 2:
            raise ValueError("the last discriminator layer must be a conv with 2 outputs (logits)")
        layers: list[nn.Module] = []
        in_ch = channels
        for i, spec in enumerate(layout):
            pad = spec.kernel // 2
            if spec.kind == "maxpool":
                layers.append(nn.MaxPool2d(spec.kernel, stride=spec.stride, padding=pad))
                continue
            layers.append(nn.Conv2d(in_ch, spec.out_channels, spec.kernel, spec.stride, pad))
            in_ch = spec.out_channels
            # No ReLU on the logits: a ReLU there clamps "refined" evidence at 0 and stalls D
            # (the bug in one public implementation).
            if i < len(layout) - 1:
                layers.append(nn.ReLU())
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
        raise ValueError("input too small for this discriminator layout")
    return height, width


def receptive_field(layout: tuple[LayerSpec, ...]) -> int:
    """Side, in input pixels, of the square patch that one output logit depends on."""
    field, jump = 1, 1
    for spec in layout:
        field += (spec.kernel - 1) * jump
        jump *= spec.stride
    return field


def build_refiner(cfg: ModelConfig) -> Refiner:
    return Refiner(cfg.image_channels, cfg.refiner_features, cfg.refiner_blocks, cfg.refiner_kernel)


def build_discriminator(cfg: ModelConfig) -> Discriminator:
    return Discriminator(DISCRIMINATOR_LAYOUTS[cfg.discriminator], cfg.image_channels)


def patch_map_shape(cfg: ModelConfig) -> tuple[int, int]:
    """(h, w) of D's logit map for this config's image size."""
    layout = DISCRIMINATOR_LAYOUTS[cfg.discriminator]
    return layout_output_shape(layout, cfg.image_height, cfg.image_width)
