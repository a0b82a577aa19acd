"""Image grids as PNG: rows of images in [-1, 1] (e.g. synthetic | refined | real), no plotting library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from simgan_dist.errors import InputError
from simgan_dist.model.pixels import to_uint8

PAD = 2  # pixels of mid-gray between tiles and rows


def grid_array(rows: list[torch.Tensor], scale: int = 2) -> np.ndarray:
    """Rows of (N, C, H, W) tensors in [-1, 1] as one uint8 (H', W'[, 3]) array, upscaled by `scale`."""
    if not rows:
        raise InputError("grid needs at least one row")
    num_cols = max(len(r) for r in rows)
    _, channels, height, width = rows[0].shape
    out_h = len(rows) * (height + PAD) + PAD
    out_w = num_cols * (width + PAD) + PAD
    canvas = np.full((out_h, out_w, channels), 128, dtype=np.uint8)
    for i, row in enumerate(rows):
        tiles = to_uint8(row)
        for j, tile in enumerate(tiles):
            y, x = PAD + i * (height + PAD), PAD + j * (width + PAD)
            canvas[y : y + height, x : x + width] = tile.reshape(height, width, channels)
    canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
    return canvas[..., 0] if channels == 1 else canvas


def save_grid(rows: list[torch.Tensor] | np.ndarray, path: str | Path, scale: int = 2) -> Path:
    """Rows as grid_array makes them (or an array it made) written as a PNG file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = rows if isinstance(rows, np.ndarray) else grid_array(rows, scale)
    Image.fromarray(array).save(path)
    return path
