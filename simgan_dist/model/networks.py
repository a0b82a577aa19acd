"""The SimGAN refiner (fully convolutional, size-preserving) and patch-wise discriminators."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simgan_dist.config import ModelConfig, build_dataclass


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


# The flow field of a warping refiner is blurred by this many 5x5 box filters (stride 1, so at
# full resolution): neighbouring pixels move together, strokes bend instead of tearing apart.
FLOW_SMOOTHING_PASSES = 2
FLOW_HEAD_INIT_STD = 1e-3  # a noise-driven flow head's initial weights: fields of ~0.01 px
# Where R's per-image noise goes: its displacement field, or its pixel path (PixelDA).
NOISE_TARGETS = ("flow", "pixels")
NOISE_MAPS = 1  # full-size planes the pixel noise is projected to (PixelDA uses one)


def warp(images: Tensor, flow: Tensor) -> Tensor:
    """Resample images in [-1, 1] at x + flow (flow: (N, 2, H, W), x and y displacement in
    pixels); what comes in from outside the frame is black (-1), like the digit's background."""
    n, _, h, w = images.shape
    identity = torch.eye(2, 3, dtype=images.dtype, device=images.device).expand(n, 2, 3)
    base = F.affine_grid(identity, list(images.shape), align_corners=False)
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=flow.dtype, device=flow.device)
    grid = base + flow.permute(0, 2, 3, 1) * scale
    # grid_sample pads with 0, so shift to [0, 2] and back to pad with -1.
    return F.grid_sample(images + 1, grid, align_corners=False) - 1


class Refiner(nn.Module):
    """R: convKxK-F + ReLU, `num_blocks` ResnetBlocks, conv1x1 back to `channels`, tanh.

    No striding and no pooling anywhere: every output pixel is computed at full resolution, which
    is what lets R preserve the synthetic image's annotation (a pupil stays where it was drawn).
    Inputs and outputs are in [-1, 1]. Cost: 2 * num_blocks + 1 convs of F x F x K x K at full
    resolution; the hand preset (224x224, F=64, K=7, 10 blocks) is ~0.2 TFLOP per image forward.

    With max_warp > 0 (not in the paper) a second 1x1 head predicts a smooth displacement field
    of at most max_warp pixels and R's output is its pixel image resampled along it: R may bend
    strokes, which a per-pixel change cannot, while the shape's topology (and so its label) is
    kept. The head starts at zero, so R starts as the paper's.

    With noise_channels > 0 (the paper's future work; needs max_warp > 0) a vector of that many
    N(0, 1) values per image drives the displacement field, so one synthetic image has many
    refinements that differ in shape: the flow comes from a small branch (conv3x3 + ReLU +
    conv1x1) over R's features and the noise, each noise value broadcast over the image as one
    channel. The pixel path never sees the noise (noise there shows up as texture, which D
    spots at once; measured in docs/shape-gap-digits.md). Drawn from torch's RNG unless given
    (refine passes noise from a seeded generator, so a redone shard comes out the same).
    """

    def __init__(
        self,
        channels: int,
        features: int,
        num_blocks: int,
        kernel: int,
        max_warp: float = 0.0,
        noise_channels: int = 0,
        noise_target: str = "flow",
        image_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"refiner kernel must be odd to keep the size, got {kernel}")
        if max_warp < 0:
            raise ValueError(f"max_warp must be >= 0, got {max_warp}")
        if noise_target not in NOISE_TARGETS:
            raise ValueError(f"noise_target must be one of {NOISE_TARGETS}, got {noise_target!r}")
        to_flow = noise_target == "flow"
        if noise_channels < 0 or (noise_channels and to_flow and max_warp == 0):
            raise ValueError(
                f"noise_channels must be >= 0 and needs max_warp > 0, got {noise_channels}"
            )
        self.noise_channels = noise_channels
        self.noise_target = noise_target
        self.noise_maps: nn.Linear | None = None
        stem_in = channels
        if noise_channels and not to_flow:
            if image_size is None:
                raise ValueError("a refiner with pixel noise needs image_size (its maps' size)")
            # PixelDA's generator input: the noise vector as constant planes (colour, per image)
            # and projected by a learned linear map to full-size planes (layout, texture).
            self.noise_maps = nn.Linear(noise_channels, NOISE_MAPS * image_size[0] * image_size[1])
            stem_in += noise_channels + NOISE_MAPS
        self.stem = nn.Sequential(
            nn.Conv2d(stem_in, features, kernel, stride=1, padding=kernel // 2), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[ResnetBlock(features, kernel) for _ in range(num_blocks)])
        self.head = nn.Conv2d(features, channels, 1)
        self.max_warp = float(max_warp)
        self.flow_head: nn.Module | None = None
        if max_warp > 0:
            flow_noise = noise_channels if to_flow else 0
            head = nn.Conv2d(features, 2, 1)
            if flow_noise:
                # Small random weights, so two noise draws start with (slightly) different
                # fields and the diversity term, whose |.| has no gradient at 0, can grow them.
                nn.init.normal_(head.weight, std=FLOW_HEAD_INIT_STD)
            else:
                nn.init.zeros_(head.weight)  # R starts as the paper's
            if head.bias is not None:
                nn.init.zeros_(head.bias)
            self.flow_head = head
            if flow_noise:
                self.flow_head = nn.Sequential(
                    nn.Conv2d(features + flow_noise, features, 3, padding=1), nn.ReLU(), head
                )

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

    def parts(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(pre-tanh pixel values, displacement field in pixels or None without warping)."""
        if noise is not None and not self.noise_channels:
            raise ValueError("this refiner has no noise input (model.refiner_noise_channels 0)")
        if self.noise_channels:
            if noise is None:
                noise = self.noise_like(x)
                assert noise is not None
            expected = (x.shape[0], self.noise_channels, *x.shape[2:])
            if tuple(noise.shape) != expected:
                raise ValueError(f"noise must be {expected}, got {tuple(noise.shape)}")
        stem_input = x
        if self.noise_maps is not None:
            assert noise is not None
            n, _, h, w = x.shape
            maps = self.noise_maps(noise[:, :, 0, 0].to(x.dtype)).view(n, NOISE_MAPS, h, w)
            stem_input = torch.cat([x, noise.to(x.dtype), maps], dim=1)
        features = self.blocks(self.stem(stem_input))
        z = self.head(features)
        if self.flow_head is None:
            return z, None
        flow_input = features
        if self.noise_channels and self.noise_target == "flow":
            assert noise is not None
            flow_input = torch.cat([features, noise.to(features.dtype)], dim=1)
        flow = self.max_warp * torch.tanh(self.flow_head(flow_input))
        for _ in range(FLOW_SMOOTHING_PASSES):
            flow = F.avg_pool2d(flow, 5, stride=1, padding=2, count_include_pad=False)
        return z, flow

    @torch.no_grad()
    def refine(
        self, images: Tensor, generator: torch.Generator | None = None, batch_size: int = 500
    ) -> Tensor:
        """R(images) for inference: float (N,C,H,W) in [-1, 1] in, the same out, in chunks of
        batch_size, in eval mode; R's noise input (if any) drawn from generator."""
        self.eval()
        chunks = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
        return torch.cat([self(c, noise=self.noise_like(c, generator)) for c in chunks])

    def forward(
        self,
        x: Tensor,
        pre_tanh: bool = False,
        parts: bool = False,
        noise: Tensor | None = None,
    ) -> Tensor | tuple:
        """R(x). pre_tanh=True: the pixel values before the tanh instead (for the saturation
        penalty, which needs a gradient where tanh has none); parts=True: parts(x), for the
        losses of a warping R. Keywords, so a DeepSpeed engine passes them through."""
        z, flow = self.parts(x, noise)
        if parts:
            return z, flow
        if pre_tanh:
            return z
        pixels = torch.tanh(z)
        return pixels if flow is None else warp(pixels, flow)


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
    # 28x28 -> 7x7 map; each logit sees a 27x27 patch, about the whole digit: more capacity and
    # the receptive field to judge a stroke's shape, not only its texture (not in the paper).
    "digits_wide": (
        LayerSpec("conv", 64, 3, 2),
        LayerSpec("conv", 64, 3, 1),
        LayerSpec("maxpool", 0, 3, 2),
        LayerSpec("conv", 64, 3, 1),
        LayerSpec("conv", 32, 3, 1),
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
            raise ValueError("the last discriminator layer must be a conv with 2 outputs (logits)")
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
    return Refiner(
        cfg.image_channels,
        cfg.refiner_features,
        cfg.refiner_blocks,
        cfg.refiner_kernel,
        max_warp=cfg.refiner_max_warp,
        noise_channels=cfg.refiner_noise_channels,
        noise_target=cfg.refiner_noise_target,
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
