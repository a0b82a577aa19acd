"""A shard sample's fields as users' WebDataset corpora have them: png/jpg/jpeg/webp, json/cls."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image

from simgan_dist.errors import InputError
from simgan_dist.io.shardio import decode_png, png_size

# In this order of preference when a sample has several (WebDataset's own extension names).
IMAGE_FIELDS = ("png", "jpg", "jpeg", "webp")
ANNOTATION_FIELDS = ("json", "cls")
_PILLOW_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
# Images larger than this are refused from their header when no shape is expected: a PNG of
# 40000x40000 zeros is 1.6 MB on disk and 1.6 GB decoded. 8192x8192 RGBA is 256 MiB.
MAX_IMAGE_PIXELS = 1 << 26


def image_field(raw: dict[str, Any]) -> str:
    """The field holding the sample's image; a ValueError naming what the sample has if none."""
    for name in IMAGE_FIELDS:
        if name in raw:
            return name
    has = sorted(k for k in raw if not k.startswith("_"))
    raise InputError(f"no image in sample (one of {', '.join(IMAGE_FIELDS)}; has {has})")


def _check_size(size: tuple[int, int], image_shape: tuple[int, ...] | None) -> None:
    """Refuse an image by its header's (width, height), before any pixel is decoded."""
    width, height = size
    if image_shape is not None and (height, width) != tuple(image_shape[1:]):
        raise InputError(
            f"image is {height}x{width} (height x width, from its header), "
            f"not {image_shape[1]}x{image_shape[2]}"
        )
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"image header declares {height}x{width} pixels, over the {MAX_IMAGE_PIXELS} "
            "a sample may have"
        )


def decode_image(raw: dict[str, Any], image_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The sample's image as uint8 (H,W) / (H,W,C) (uint16 (H,W) for 16-bit PNG depth maps).
    PNG goes through the fast checked decoder; JPEG and WebP through Pillow, whose format must
    match the extension (a PNG named .jpg is refused, not guessed). The size in the image's
    header is checked first, against image_shape's (C, H, W) when given and MAX_IMAGE_PIXELS
    always, so an image that would not fit is refused without allocating its pixels."""
    name = image_field(raw)
    data = raw[name]
    if name == "png":
        size = png_size(data)
        if size is not None:
            _check_size(size, image_shape)
        return decode_png(data)
    try:
        im = Image.open(io.BytesIO(data))  # lazy: reads the header only
        with im:
            if im.format != _PILLOW_FORMATS[name]:
                raise InputError(f"not a {_PILLOW_FORMATS[name]} image (format {im.format})")
            _check_size(im.size, image_shape)
            if im.mode not in ("L", "RGB", "RGBA"):  # CMYK, palette, LA...
                return np.array(im.convert("RGBA" if "A" in im.mode else "RGB"))
            return np.array(im)
    except (OSError, Image.DecompressionBombError) as err:  # not an image, cut short, too big
        raise InputError(f"undecodable {name}: {err}") from None


def has_annotation(raw: dict[str, Any]) -> bool:
    return any(name in raw for name in ANNOTATION_FIELDS)


def decode_annotations(raw: dict[str, Any]) -> dict[str, Any]:
    """The sample's annotations: its json object, and a `cls` field (WebDataset's integer class
    label as text) as "label". {} when it has neither. A cls that contradicts the json's label
    is an error, not a choice between them."""
    meta: dict[str, Any] = {}
    if "json" in raw:
        meta = json.loads(raw["json"])
        if not isinstance(meta, dict):
            raise InputError(f"json is a {type(meta).__name__}, not an object")
    if "cls" in raw:
        text = raw["cls"].decode("utf-8").strip() if isinstance(raw["cls"], bytes) else raw["cls"]
        try:
            label = int(text)
        except ValueError:
            raise InputError(f"cls is not an integer class label: {text!r}") from None
        if meta.setdefault("label", label) != label:
            raise InputError(f"cls says {label}, json's label says {meta['label']!r}")
    return meta


def kept_annotations(meta: dict[str, Any]) -> dict[str, Any]:
    """A decoded sample's annotations without the reader's own fields (`__key__`, `__url__`):
    what a copy of the sample (refined, split off) writes back as its json."""
    return {k: v for k, v in meta.items() if not k.startswith("__")}
