"""Colour appearances of the digit simulator: grey, clean RGB, and domain randomization.

The simulator draws a digit's geometry once (its grey render, white ink on black); an appearance
only colours that render, with random draws from a stream of its own, so one (seed, index) has
the same strokes in every appearance:

- ``gray``: the render itself, uint8 (28, 28): the grey ``digits`` preset's corpus.
- ``clean``: the simulator's native colour output, the render replicated into RGB (white ink on
  plain black). The "synthetic" arm of the digits-on-photographs demo: what the refiner refines.
- ``randomized``: domain randomization, the yardstick a refiner must beat: a random background and
  a random ink, each a flat colour or (probability 0.5) a procedural texture (smooth noise, a
  linear gradient or stripes in two random colours), composited through the render as the ink
  mask: ``mask * ink + (1 - mask) * background``. Never real pixels: numpy only, ~0.2 ms a digit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from simgan_dist.errors import InputError

APPEARANCES = ("gray", "clean", "randomized")
# The simulator's streams: default_rng([seed, 0, index]) draws geometry, [seed, 1, block] labels;
# appearances take [seed, 2, index], so colouring a digit never shifts the geometry's draws.
APPEARANCE_STREAM = 2
TEXTURE_PROB = 0.5
# Distinguishable ink: a background/ink pair whose mean colours lie closer than this in RGB
# (channels in 0..1, so distances run 0..1.73) is redrawn, both layers at once: a digit that melts
# into its background teaches a classifier nothing, and MNIST-M's ink (the photo's negative)
# stands out from its crop except where the crop is mid-grey. About 1 pair in 9 is redrawn.
MIN_COLOUR_DISTANCE = 0.3
_MAX_DRAWS = 64  # a bound, not a budget: 64 rejections in a row have odds of ~1e-60


def check_appearance(mode: str) -> str:
    if mode not in APPEARANCES:
        raise InputError(f"appearance must be one of {', '.join(APPEARANCES)}; got {mode!r}")
    return mode


def appearance_rng(seed: int, index: int) -> np.random.Generator:
    """The colour draws of sample `index`: a stream apart from the geometry's."""
    return np.random.default_rng([seed, APPEARANCE_STREAM, index])


def clean(gray: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): the grey render in every channel (white ink on plain black)."""
    return np.repeat(gray[..., None], 3, axis=-1)


# ---------------------------------------------------------------- procedural textures
# Each returns a scalar field in [0, 1] of the image's shape; a layer maps it between two colours.


@functools.cache
def _upsample(size: int, cells: int) -> np.ndarray:
    """(size, cells + 1) bilinear weights from a coarse grid's nodes to pixel centres."""
    pos = (np.arange(size) + 0.5) / size * cells
    lo = np.minimum(pos.astype(np.intp), cells - 1)
    frac = pos - lo
    m = np.zeros((size, cells + 1))
    m[np.arange(size), lo] = 1 - frac
    m[np.arange(size), lo + 1] = frac
    return m


def _normalized(field: np.ndarray) -> np.ndarray:
    lo, hi = field.min(), field.max()
    return (field - lo) / (hi - lo) if hi > lo else np.zeros_like(field)


def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # Value noise: 1-3 octaves of random coarse grids, bilinearly upsampled, randomly weighted.
    field = np.zeros((h, w))
    for _ in range(1 + int(rng.random() * 3)):
        cells = (2, 3, 4, 6, 8)[int(rng.random() * 5)]
        grid = rng.random((cells + 1, cells + 1))
        field += (0.2 + rng.random()) * (_upsample(h, cells) @ grid @ _upsample(w, cells).T)
    return _normalized(field)


def _projection(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Pixel positions along a random direction (pixels from the centre)."""
    angle = 2 * math.pi * rng.random()
    ys, xs = np.mgrid[:h, :w] - np.array([h - 1, w - 1]).reshape(2, 1, 1) / 2
    return xs * math.cos(angle) + ys * math.sin(angle)


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return _normalized(_projection(rng, h, w))


def _stripes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    period = 3.0 + 9.0 * rng.random()  # pixels: from hairlines to a few bands across the digit
    phase = 2 * math.pi * rng.random()
    return 0.5 + 0.5 * np.sin(2 * math.pi * _projection(rng, h, w) / period + phase)


_TEXTURES: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "noise": _noise,
    "gradient": _gradient,
    "stripes": _stripes,
}


def _rgb8(colour: np.ndarray) -> list[int]:
    return [int(c) for c in np.round(colour * 255)]


def _layer(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """A random colour layer: float (h, w, 3) in [0, 1], its mean colour, its JSON-able recipe."""
    if rng.random() >= TEXTURE_PROB:
        colour = rng.random(3)
        return (
            np.broadcast_to(colour, (h, w, 3)),
            colour,
            {"kind": "flat", "colors": [_rgb8(colour)]},
        )
    kind = tuple(_TEXTURES)[int(rng.random() * len(_TEXTURES))]
    field = _TEXTURES[kind](rng, h, w)
    c0, c1 = rng.random(3), rng.random(3)
    layer = c0 + field[..., None] * (c1 - c0)
    return layer, layer.mean((0, 1)), {"kind": kind, "colors": [_rgb8(c0), _rgb8(c1)]}


def randomize(gray: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """uint8 (H, W, 3): the grey render (0..255 -> mask 0..1) as the ink of a random ink layer
    over a random background layer, and the drawn layers as JSON-able params."""
    h, w = gray.shape
    for _ in range(_MAX_DRAWS):
        background, bg_mean, bg = _layer(rng, h, w)
        ink, ink_mean, fg = _layer(rng, h, w)
        if np.linalg.norm(ink_mean - bg_mean) >= MIN_COLOUR_DISTANCE:
            break
    mask = gray[..., None] / 255.0
    out = mask * ink + (1.0 - mask) * background
    params = {
        "background_kind": bg["kind"],
        "background_colors": bg["colors"],
        "ink_kind": fg["kind"],
        "ink_colors": fg["colors"],
    }
    return np.round(out * 255).astype(np.uint8), params


def apply_appearance(
    gray: np.ndarray, params: dict, mode: str, seed: int, index: int
) -> tuple[np.ndarray, dict]:
    """Sample `index` of simulator `seed` in appearance `mode`: (image, params). gray returns its
    inputs untouched; the colour modes add "appearance" (and randomized its drawn layers)."""
    if check_appearance(mode) == "gray":
        return gray, params
    if mode == "clean":
        return clean(gray), {**params, "appearance": mode}
    image, drawn = randomize(gray, appearance_rng(seed, index))
    return image, {**params, "appearance": mode, **drawn}
