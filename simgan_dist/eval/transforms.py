"""Fixed (not learned) changes of the synthetic images: a yardstick for what a refiner could buy.

`simgan screen --transform SPEC` puts one of these where the trained refiner would be and runs
the same S+U protocol, so a refiner's row can be read against, say, "every stroke 50% bolder"
or "every digit bent along a random smooth field". SPEC is one step or several joined by "+",
each NAME or NAME:AMOUNT:

- ``dilate:w`` / ``erode:w``: blend w of a 3x3 grey dilation (erosion) into the image: bolder
  (thinner) strokes;
- ``blur:sigma``: a 5x5 Gaussian blur of that sigma in pixels;
- ``histmatch``: map the pixel values so their histogram matches the unlabeled real images';
- ``warp:px``: resample along a random smooth displacement field (a 7x7 grid of N(0, px^2)
  offsets, upsampled bicubically): bent strokes, the same topology;
- ``affine:deg``: a random rotation of up to deg degrees and a shear of up to deg/75;
- ``widen:f``: every digit f times as wide about the frame centre (the bundled real digits are
  about 1.2x as wide as the simulator's, by their second moments).

The random steps draw from one seeded generator, so a SPEC and a seed give the same images.
They are augmentations, not refinements: no step looks at which real image it should resemble.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from simgan_dist.model.networks import warp

# name -> default amount, or None for a step that takes no amount
TRANSFORMS: dict[str, float | None] = {
    "dilate": 0.5,
    "erode": 0.5,
    "blur": 0.7,
    "histmatch": None,
    "warp": 1.0,
    "affine": 15.0,
    "widen": 1.2,
}
_WARP_GRID = 7  # control points per side of a random field: smooth at 28x28
_HIST_SAMPLE = 1_000_000  # pixels drawn to estimate quantiles of larger corpora

Step = tuple[str, float]


def parse_transform(spec: str) -> list[Step]:
    """[(name, amount)] of "NAME[:AMOUNT]+...", or ValueError naming the bad part."""
    steps: list[Step] = []
    for part in spec.split("+"):
        name, _, amount_text = part.strip().partition(":")
        if name not in TRANSFORMS:
            raise ValueError(
                f"--transform {spec!r}: unknown step {name!r} (known: {', '.join(TRANSFORMS)})"
            )
        default = TRANSFORMS[name]
        if default is None:
            if amount_text:
                raise ValueError(f"--transform {spec!r}: {name} takes no amount")
            steps.append((name, 0.0))
            continue
        try:
            amount = float(amount_text) if amount_text else default
        except ValueError:
            raise ValueError(f"--transform {spec!r}: {name}'s amount must be a number") from None
        if not math.isfinite(amount) or amount <= 0:
            raise ValueError(f"--transform {spec!r}: {name}'s amount must be > 0")
        if name in ("dilate", "erode") and amount > 1:
            raise ValueError(f"--transform {spec!r}: {name}'s blend must be in (0, 1]")
        steps.append((name, amount))
    return steps


def _dilate(x: torch.Tensor, blend: float) -> torch.Tensor:
    return (1 - blend) * x + blend * F.max_pool2d(x, 3, stride=1, padding=1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    taps = torch.exp(-(torch.arange(-2, 3, dtype=x.dtype) ** 2) / (2 * sigma * sigma))
    taps = (taps / taps.sum()).to(x.device)
    channels = x.shape[1]
    # Padding with the background (-1) by blurring x + 1 with zero padding, then shifting back.
    y = F.conv2d(F.pad(x + 1, (2, 2, 0, 0)), taps.view(1, 1, 1, 5).repeat(channels, 1, 1, 1),
                 groups=channels)  # fmt: skip
    y = F.conv2d(F.pad(y, (0, 0, 2, 2)), taps.view(1, 1, 5, 1).repeat(channels, 1, 1, 1),
                 groups=channels)  # fmt: skip
    return y - 1


def _quantiles(
    values: torch.Tensor, levels: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    if len(values) > _HIST_SAMPLE:  # torch.quantile refuses inputs past 2**24 elements
        values = values[torch.randint(len(values), (_HIST_SAMPLE,), generator=generator)]
    return torch.quantile(values, levels)


def _histmatch(x: torch.Tensor, real: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    src = x.flatten()
    levels = torch.linspace(0, 1, 257, dtype=x.dtype)
    src_q = _quantiles(src, levels, generator)
    real_q = _quantiles(real.flatten().to(x.dtype), levels, generator)
    # Piecewise-linear map from the synthetic quantiles to the real ones.
    idx = torch.searchsorted(src_q.contiguous(), src.contiguous()).clamp(1, len(levels) - 1)
    lo, hi = src_q[idx - 1], src_q[idx]
    t = ((src - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    out = real_q[idx - 1] + t * (real_q[idx] - real_q[idx - 1])
    return out.view_as(x)


def _random_warp(x: torch.Tensor, px: float, generator: torch.Generator) -> torch.Tensor:
    coarse = torch.randn(len(x), 2, _WARP_GRID, _WARP_GRID, generator=generator) * px
    flow = F.interpolate(coarse, size=x.shape[2:], mode="bicubic", align_corners=False)
    return warp(x, flow.to(x.dtype))


def _resample_affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """x sampled bilinearly along per-image 2x3 transforms; black (-1) comes in at the edges."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, align_corners=False) - 1


def _random_affine(x: torch.Tensor, degrees: float, generator: torch.Generator) -> torch.Tensor:
    n = len(x)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    shear = (torch.rand(n, generator=generator) * 2 - 1) * degrees / 75
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle)
    theta[:, 0, 1] = -torch.sin(angle) + shear
    theta[:, 1, 0] = torch.sin(angle)
    theta[:, 1, 1] = torch.cos(angle)
    return _resample_affine(x, theta)


def _widen(x: torch.Tensor, factor: float) -> torch.Tensor:
    theta = torch.tensor([[1 / factor, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(len(x), 2, 3)
    return _resample_affine(x, theta)


def apply_transform(
    x: torch.Tensor, steps: list[Step], real: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The steps in order on images in [-1, 1]; `real` (unlabeled real images) for histmatch."""
    for name, amount in steps:
        if name == "dilate":
            x = _dilate(x, amount)
        elif name == "erode":
            x = -_dilate(-x, amount)
        elif name == "blur":
            x = _blur(x, amount)
        elif name == "histmatch":
            x = _histmatch(x, real, generator)
        elif name == "warp":
            x = _random_warp(x, amount, generator)
        elif name == "widen":
            x = _widen(x, amount)
        else:
            x = _random_affine(x, amount, generator)
    return x.clamp(-1, 1)
