"""The digits-on-photographs target: seven photographs from installed wheels and the MNIST-M blend."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from simgan_dist.errors import InputError

CROP_SIZE = 28


@dataclass(frozen=True)
class Photograph:
    """One photograph of the pool: where it lies in which wheel, and its licence as stated there."""

    name: str
    package: str  # import name: skimage, sklearn
    distribution: str  # pip name: scikit-image, scikit-learn
    path: str  # inside the package
    licence: str


CC_BY_2 = "CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/):"


def _skimage(file: str, licence: str) -> Photograph:
    return Photograph(file.split(".")[0], "skimage", "scikit-image", f"data/{file}", licence)


def _sklearn(name: str, licence: str) -> Photograph:
    path = f"datasets/images/{name}.jpg"
    return Photograph(name, "sklearn", "scikit-learn", path, f"{CC_BY_2} {licence}")


# Licences quote the packages themselves: skimage/data/_fetchers.py (the docstrings of
# data.astronaut(), chelsea(), coffee(), rocket(), immunohistochemistry()) and
# sklearn/datasets/images/README.txt. The two CC BY 2.0 images need attribution (docs/data.md).
PHOTOGRAPHS: tuple[Photograph, ...] = (
    _skimage(
        "astronaut.png",
        "public domain (NASA): 'No known copyright restrictions, released into the public domain.'",
    ),
    _skimage(
        "chelsea.png",
        "CC0: 'No copyright restrictions. CC0 by the photographer (Stefan van der Walt).'",
    ),
    _skimage(
        "coffee.png", "CC0: 'No copyright restrictions. CC0 by the photographer (Rachel Michetti).'"
    ),
    _skimage(
        "rocket.jpg",
        "public domain: 'The image was captured by SpaceX and released in the public domain'",
    ),
    _skimage("ihc.png", "public domain (CMMI): 'No known copyright restrictions.'"),
    _sklearn(
        "china",
        "'Some rights reserved by danielbuechele', "
        "https://www.flickr.com/photos/danielbuechele/6061409035/",
    ),
    _sklearn(
        "flower",
        "'Some rights reserved by danielbuechele' (so sklearn's README says; its links name "
        "Flickr user vultilion), https://www.flickr.com/photos/vultilion/6056698931/",
    ),
)


def _missing(photo: Photograph, why: str) -> ValueError:
    return ValueError(
        f"digits-photo needs {photo.distribution}'s {photo.package}/{photo.path} "
        f"(pip install {photo.distribution}): {why}"
    )


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package, or None; imports nothing."""
    # find_spec, not importlib.resources.files: files() imports the package, and importing
    # sklearn costs ~1 s for two JPEGs. For a top-level name find_spec imports nothing.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate(photo: Photograph) -> Path:
    """The photograph's file inside its installed package; ValueError (one line) when absent."""
    base = _package_dir(photo.package)
    if base is None:
        raise _missing(photo, f"{photo.distribution} is not installed")
    path = base / photo.path
    if not path.is_file():
        raise _missing(photo, "not found")
    return path


@functools.cache
def load_photograph(photo: Photograph) -> np.ndarray:
    """uint8 RGB (H, W, 3), read-only: cached and shared by every crop of every build."""
    path = locate(photo)
    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"))
    except (OSError, ValueError) as err:
        raise _missing(photo, f"unreadable: {err}") from None
    arr.flags.writeable = False
    return arr


def load_photographs(photos: Sequence[Photograph] = PHOTOGRAPHS) -> tuple[np.ndarray, ...]:
    """Every photograph of the pool, loaded (the first missing one stops with its name)."""
    return tuple(load_photograph(p) for p in photos)


def random_crops(
    photos: Sequence[np.ndarray], num: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """uint8 (num, size, size, 3): each a size x size crop, at native resolution, of a photograph
    drawn uniformly from photos, at a uniform position. Crops are drawn one after another from
    rng, so the first k of num crops equal the k crops of a shorter call with the same rng state."""
    if not photos:
        raise InputError("random_crops: no photographs")
    for p in photos:
        if p.ndim != 3 or p.shape[2] != 3 or min(p.shape[:2]) < size:
            raise InputError(f"random_crops: need RGB photographs >= {size} px, got {p.shape}")
    out = np.empty((num, size, size, 3), np.uint8)
    n = len(photos)
    for i in range(num):
        # rng.random() costs ~0.4 us a call, rng.integers() ~1.6 us; floor(u * n) is uniform too.
        photo = photos[int(rng.random() * n)]
        y = int(rng.random() * (photo.shape[0] - size + 1))
        x = int(rng.random() * (photo.shape[1] - size + 1))
        out[i] = photo[y : y + size, x : x + size]
    return out


def blend(digits: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """MNIST-M (Ganin & Lempitsky 2015): |crop - digit| per channel, uint8 (..., H, W, 3).

    digits: grey uint8 (..., H, W), white ink on black; crops: uint8 (..., H, W, 3). The ink
    inverts the photograph under it, so the digit shows as the photo's negative on the photo.
    """
    if digits.dtype != np.uint8 or crops.dtype != np.uint8:
        raise InputError(f"blend: need uint8 digits and crops, got {digits.dtype}, {crops.dtype}")
    if crops.shape[-1:] != (3,) or crops.shape[:-1] != digits.shape:
        raise InputError(f"blend: digits {digits.shape} do not match crops {crops.shape}")
    # int16: the difference of two uint8 would wrap around instead of going negative.
    diff = crops.astype(np.int16) - digits[..., None].astype(np.int16)
    return np.abs(diff).astype(np.uint8)
