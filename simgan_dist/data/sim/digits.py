"""Digit simulator: 28x28 MNIST-like digits from bundled TrueType fonts and jittered pen strokes."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from simgan_dist.data.sim.appearance import apply_appearance, check_appearance
from simgan_dist.errors import InputError

IMAGE_SIZE = 28
# Everything is drawn at SUPERSAMPLE x the output size, then box-reduced: that is the antialiasing.
SUPERSAMPLE = 4
# MNIST's own normalization (documented with the data set, not measured from it): the digit's larger
# side fits a 20x20 box and its centre of mass sits at the frame centre.
BOX = 20.0
HANDWRITING_PROB = 0.6

# Fonts shipped in matplotlib's wheel whose digits 0-9 render as ordinary lining figures
# (checked on a contact sheet; cmmi10 has old-style figures, STIXNonUni/Size*/LastResort none).
# fmt: off
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf", "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf",
)
# fmt: on
# Glyphs are rasterized once at this pixel size and cached; poses are applied to the cached mask
# at a 2x canvas (bilinear already antialiases the edges; 4x would double the cost).
_GLYPH_PX = 50
FONT_SUPERSAMPLE = 2
# Font strokes get thickened (FreeType's stroker) or thinned (min filter) towards a sampled target
# width; thinning is kept for fonts whose strokes are thick enough not to break apart.
_THIN_OK_WIDTH = 6.0
_MIN_GLYPH_WIDTH = 4.0
# DejaVu Sans Mono's zero is slashed: nobody writes it that way.
_FONTS_FOR = tuple(
    tuple(i for i, f in enumerate(FONT_FILES) if not (d == 0 and "Mono" in f)) for d in range(10)
)

Strokes = list[tuple[np.ndarray, tuple[int, ...]]]  # (control points (n, 2), corner indices)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    # rng.uniform(lo, hi) costs ~3 us a call against ~0.6 us here; renders make dozens of draws.
    return lo + (hi - lo) * rng.random()


def _font_dir() -> Path:
    import matplotlib  # here, not at the top: only its data folder is needed, not its 0.2 s import

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.cache
def _glyph(
    font_idx: int, digit: int, delta: int
) -> tuple[Image.Image, np.ndarray, np.ndarray, float]:
    """High-res glyph mask with strokes `delta` px thicker, its centre of mass (x, y), ink sample
    points relative to it, and its stroke width in glyph pixels. Cached: rasterizing is slow."""
    font = ImageFont.truetype(str(_font_dir() / FONT_FILES[font_idx]), _GLYPH_PX)
    grow = max(delta, 0) // 2
    pad = 4 + grow
    left, top, right, bottom = font.getbbox(str(digit))
    img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)  # type: ignore[arg-type]
    ImageDraw.Draw(img).text(
        (pad - left, pad - top), str(digit), fill=255, font=font, stroke_width=grow, stroke_fill=255
    )
    if delta < 0:
        img = img.filter(ImageFilter.MinFilter(1 - delta))
    arr = np.asarray(img, dtype=np.float64) / 255.0
    w = arr.sum()
    com = np.array(
        [
            (arr.sum(0) * np.arange(arr.shape[1])).sum() / w,
            (arr.sum(1) * np.arange(arr.shape[0])).sum() / w,
        ]
    )
    ink = arr > 0.5
    # For a ribbon of width t and length L: area = t*L, perimeter ~ 2L, so t ~ 2*area/perimeter.
    perimeter = np.count_nonzero(ink[1:] != ink[:-1]) + np.count_nonzero(ink[:, 1:] != ink[:, :-1])
    width = 2.0 * ink.sum() / max(perimeter, 1)
    # Only the extreme points matter for the posed bounding box; a sparse subset keeps that cheap.
    ys, xs = np.nonzero(ink)
    pts = np.stack([xs, ys], 1)[:: max(1, len(xs) // 200)] - com
    return img, com, np.concatenate([pts, pts + 1.0]), float(width)


# ---------------------------------------------------------------- handwriting-like strokes
# Control points live in a box about 0.6 wide and 1 high, y pointing down. Each template
# returns strokes; corners split a stroke into separately splined pieces (sharp turns).


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int) -> np.ndarray:
    a = np.radians(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(a), cy - ry * np.sin(a)], 1)


def _pts(*xy: float) -> np.ndarray:
    return np.asarray(xy, dtype=np.float64).reshape(-1, 2)


def _t0(r: np.random.Generator) -> tuple[str, Strokes]:
    start = _u(r, 60, 130)
    sweep = (1 if r.random() < 0.5 else -1) * (360 + _u(r, -15, 30))
    rx, ry = _u(r, 0.2, 0.32), 0.5
    return "oval", [(_arc(0.3, 0.5, rx, ry, start, start + sweep, 10), ())]


def _t1(r: np.random.Generator) -> tuple[str, Strokes]:
    lean = _u(r, -0.06, 0.06)
    stem = _pts(0.3 + lean, 0.0, 0.3 - lean, 1.0)
    u = r.random()
    kind = "plain" if u < 0.5 else "flag" if u < 0.85 else "flag_base"
    if kind == "plain":
        return kind, [(stem, ())]
    strokes: Strokes = [
        (np.vstack([_pts(0.3 + lean - _u(r, 0.15, 0.25), _u(r, 0.15, 0.3)), stem]), (1,))
    ]
    if kind == "flag_base":
        strokes.append((_pts(0.1, 1.0, 0.5, 1.0), ()))
    return kind, strokes


def _t2(r: np.random.Generator) -> tuple[str, Strokes]:
    top = _pts(0.04, 0.25, 0.12, 0.06, 0.32, 0.0, 0.52, 0.1, 0.52, 0.32, 0.38, 0.52)
    if r.random() < 0.3:  # curl at the bottom-left, as many people write it
        tail = _pts(0.12, 0.85, 0.22, 0.8, 0.24, 0.92, 0.1, 0.97, 0.4, 0.96, 0.6, 0.94)
        return "curl", [(np.vstack([top, tail]), (9,))]
    return "flat", [(np.vstack([top, _pts(0.04, 0.96, 0.6, 0.95)]), (6,))]


def _t3(r: np.random.Generator) -> tuple[str, Strokes]:
    lower = _pts(0.48, 0.58, 0.56, 0.78, 0.38, 0.97, 0.04, 0.88)
    if r.random() < 0.2:  # flat-topped 3
        return "flat_top", [(np.vstack([_pts(0.05, 0.02, 0.55, 0.02, 0.25, 0.44), lower]), (1, 2))]
    upper = _pts(0.05, 0.14, 0.28, 0.0, 0.5, 0.1, 0.48, 0.32, 0.22, 0.46)
    corner = (4,) if r.random() < 0.5 else ()
    return "round", [(np.vstack([upper, lower]), corner)]


def _t4(r: np.random.Generator) -> tuple[str, Strokes]:
    bar_y = _u(r, 0.6, 0.72)
    stem_x = _u(r, 0.38, 0.48)
    if r.random() < 0.5:  # closed: the diagonal meets the stem at the top
        return "closed", [
            (_pts(stem_x, 0.0, 0.02, bar_y, 0.6, bar_y - 0.02), (1,)),
            (_pts(stem_x, 0.0, stem_x + 0.02, 1.0), ()),
        ]
    return "open", [
        (_pts(0.1, 0.0, 0.04, bar_y, 0.6, bar_y - 0.03), (1,)),
        (_pts(stem_x + 0.02, 0.12, stem_x, 1.0), ()),
    ]


def _t5(r: np.random.Generator) -> tuple[str, Strokes]:
    bowl = _pts(0.1, 0.45, 0.32, 0.38, 0.52, 0.5, 0.56, 0.74, 0.36, 0.97, 0.04, 0.88)
    body = np.vstack([_pts(0.12, 0.02), bowl])
    bar = _pts(0.12, 0.02, 0.56, 0.0)
    if r.random() < 0.5:  # the bar drawn as its own stroke, often overshooting the stem
        return "two_strokes", [(body, (1,)), (bar - [_u(r, 0.0, 0.06), 0.0], ())]
    return "one_stroke", [(np.vstack([bar[::-1], bowl]), (1, 2))]


def _t6(r: np.random.Generator) -> tuple[str, Strokes]:
    stem = (0.5, 0.02, 0.28, 0.12, 0.1, 0.4, 0.05, 0.72, 0.22, 0.98)
    return "loop", [(_pts(*stem, 0.46, 0.92, 0.52, 0.7, 0.34, _u(r, 0.45, 0.6), 0.1, 0.7), ())]


def _t7(r: np.random.Generator) -> tuple[str, Strokes]:
    foot_x = _u(r, 0.15, 0.35)
    main = _pts(0.02, 0.03, 0.58, 0.02, (0.58 + foot_x) / 2 + _u(r, -0.03, 0.05), 0.5, foot_x, 1.0)
    corners: tuple[int, ...] = (1,)
    if r.random() < 0.25:  # a small hook before the bar
        main, corners = np.vstack([_pts(0.0, 0.16), main]), (1, 2)
    strokes = [(main, corners)]
    kind = "plain"
    if r.random() < 0.3:  # continental crossbar
        strokes.append((_pts(0.2, 0.52, 0.6, 0.5), ()))
        kind = "crossbar"
    return kind, strokes


def _t8(r: np.random.Generator) -> tuple[str, Strokes]:
    w = _u(r, 0.4, 0.5)  # height of the waist
    down = (0.5, 0.12, 0.3, 0.0, 0.08, 0.14, 0.16, 0.34, 0.3, w, 0.52, 0.64, 0.54, 0.86)
    up = (0.3, 1.0, 0.06, 0.86, 0.1, 0.64, 0.32, w, 0.5, 0.32, 0.52, 0.14, 0.44, 0.06)
    return "figure", [(_pts(*down, *up), ())]


def _t9(r: np.random.Generator) -> tuple[str, Strokes]:
    ry = _u(r, 0.2, 0.26)
    loop = _arc(0.3, ry, 0.24, ry, 20, 385, 9)
    foot_x = _u(r, 0.3, 0.5)
    if r.random() < 0.4:  # stem curling left at the foot
        stem = _pts(0.52, 0.45, foot_x + 0.1, 0.85, foot_x - 0.1, 1.0)
    else:
        stem = _pts((0.52 + foot_x) / 2, 0.6, foot_x, 1.0)
    return "curved" if len(stem) == 3 else "straight", [(np.vstack([loop, stem]), (8,))]


_TEMPLATES = (_t0, _t1, _t2, _t3, _t4, _t5, _t6, _t7, _t8, _t9)


@functools.cache
def _spline_basis(n: int, per_segment: int = 8) -> np.ndarray:
    """Matrix mapping n control points to a uniform Catmull-Rom curve through them (ends
    extrapolated): the curve is linear in the points, so one matmul per stroke piece."""
    ext = np.zeros((n + 2, n))
    ext[1:-1] = np.eye(n)
    ext[0, :2] = (2, -1)
    ext[-1, -2:] = (-1, 2)
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    w = 0.5 * np.hstack(
        [-t + 2 * t**2 - t**3, 2 - 5 * t**2 + 3 * t**3, t + 4 * t**2 - 3 * t**3, -(t**2) + t**3]
    )
    rows = [w @ ext[k : k + 4] for k in range(n - 1)]
    return np.vstack([*rows, np.eye(n)[-1:]])


def _spline(p: np.ndarray) -> np.ndarray:
    return p if len(p) < 3 else _spline_basis(len(p)) @ p


def _stroke_paths(rng: np.random.Generator, digit: int) -> tuple[str, list[np.ndarray]]:
    variant, strokes = _TEMPLATES[digit](rng)
    wobble = _u(rng, 0.015, 0.045)  # how careless the writer is
    paths = []
    for pts, corners in strokes:
        noise = rng.normal(0, wobble, pts.shape)
        if len(pts) > 5:  # densely sampled curves: smooth the noise so it bends, not kinks
            noise[1:-1] = 0.4 * (noise[:-2] + noise[1:-1] * 2 + noise[2:])
        pts = pts + noise
        cuts = [0, *corners, len(pts) - 1]
        pieces = [_spline(pts[a : b + 1]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        paths.append(np.vstack([pieces[0]] + [q[1:] for q in pieces[1:]]))
    return variant, paths


# ---------------------------------------------------------------- rendering


def _pose(rng: np.random.Generator, slant_mean: float) -> tuple[np.ndarray, dict]:
    """2x2 pose matrix: aspect, then slant, then rotation (positive = counterclockwise)."""
    rot = min(max(rng.normal(0, 8), -20.0), 20.0)
    shear = min(max(rng.normal(slant_mean, 0.15), -0.4), 0.6)
    aspect = _u(rng, 0.75, 1.2)
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    # y points down, so x' = x - shear * y leans the top to the right for shear > 0.
    m = np.array([[c * aspect, -c * shear + s], [-s * aspect, s * shear + c]])
    return m, {"rotation_deg": rot, "shear": shear, "aspect": aspect}


def _placement(rng: np.random.Generator, extent: float, ss: int) -> tuple[float, tuple, dict]:
    """Factor mapping the posed extent onto the box, and where the centre of mass goes."""
    scale = _u(rng, 0.8, 1.05)
    dx, dy = (min(max(v, -2.0), 2.0) for v in rng.normal(0, 0.8, 2))
    centre = ((IMAGE_SIZE / 2 + dx) * ss, (IMAGE_SIZE / 2 + dy) * ss)
    factor = BOX * scale * ss / max(extent, 1e-6)
    return factor, centre, {"scale": scale, "offset_x": dx, "offset_y": dy}


def _render_strokes(rng: np.random.Generator, digit: int) -> tuple[Image.Image, dict]:
    variant, paths = _stroke_paths(rng, digit)
    m, info = _pose(rng, slant_mean=0.12)
    pen = _u(rng, 1.6, 3.4)  # output pixels
    posed = [p @ m.T for p in paths]
    allp = np.vstack(posed)
    extent = float((allp.max(0) - allp.min(0)).max())
    factor, centre, place = _placement(rng, extent, SUPERSAMPLE)
    # The pen's width adds to the box: solve factor * extent + pen = box.
    factor = max(factor - pen * SUPERSAMPLE / max(extent, 1e-6), 1e-3)
    # Centre of mass of a uniform-width stroke ~ length-weighted mean of its segment midpoints.
    # (Segments joining one stroke's end to the next one's start are dropped.)
    joins = np.cumsum([len(p) for p in posed[:-1]], dtype=np.intp) - 1
    mids = np.delete(allp[1:] + allp[:-1], joins, axis=0) / 2
    lens = np.delete(np.sqrt((np.diff(allp, axis=0) ** 2).sum(1)), joins)
    com = (mids * lens[:, None]).sum(0) / max(lens.sum(), 1e-9)
    size = IMAGE_SIZE * SUPERSAMPLE
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    for p in posed:
        width = pen * SUPERSAMPLE * _u(rng, 0.85, 1.15)  # pressure differs per stroke
        q = (p - com) * factor + centre
        draw.line(q.ravel().tolist(), fill=255, width=max(1, round(width)))
        # PIL's joint="curve" costs ~1 ms a stroke; plain wide segments only notch where the path
        # turns sharply, so discs go there and at the pen tips.
        d = np.diff(q, axis=0)
        ang = np.arctan2(d[:, 1], d[:, 0])
        turn = np.abs((np.diff(ang) + np.pi) % (2 * np.pi) - np.pi)
        r = width / 2
        for x, y in np.vstack([q[[0, -1]], q[1:-1][turn > 0.3]]).tolist():
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    params = {
        "style": "handwriting",
        "font": "stroke",
        "variant": variant,
        **info,
        **place,
        "stroke_width": pen,
    }
    return img, params


def _render_font(rng: np.random.Generator, digit: int) -> tuple[Image.Image, dict]:
    choices = _FONTS_FOR[digit]
    font_idx = choices[int(rng.random() * len(choices))]
    m, info = _pose(rng, slant_mean=0.0)
    _, _, pts0, width0 = _glyph(font_idx, digit, 0)
    posed = pts0 @ m.T
    extent0 = float((posed.max(0) - posed.min(0)).max())
    factor, centre, place = _placement(rng, extent0, FONT_SUPERSAMPLE)
    # Pick the stroke change that brings the posed glyph nearest a sampled pen width, in even
    # steps so the cache stays small (about 10 variants per glyph).
    target = _u(rng, 1.6, 3.4) * FONT_SUPERSAMPLE / factor
    floor = width0 if width0 < _THIN_OK_WIDTH else _MIN_GLYPH_WIDTH
    delta = min(max(2 * round((max(target, floor) - width0) / 2), -2), 12)
    glyph, com, pts, width = _glyph(font_idx, digit, delta)
    if delta != 0:  # thicker strokes grow the glyph: refit it to the box
        posed = pts @ m.T
        factor *= extent0 / float((posed.max(0) - posed.min(0)).max())
    # Forward map out = factor * m @ (p - com) + centre; PIL wants the inverse (out -> glyph).
    inv = np.linalg.inv(factor * m)
    sx, sy = com - inv @ centre
    size = IMAGE_SIZE * FONT_SUPERSAMPLE
    img = glyph.transform(
        (size, size),
        Image.Transform.AFFINE,
        (inv[0, 0], inv[0, 1], sx, inv[1, 0], inv[1, 1], sy),
        resample=Image.Resampling.BILINEAR,
    )
    params = {
        "style": "font",
        "font": FONT_FILES[font_idx].removesuffix(".ttf"),
        "variant": f"delta{delta:+d}",
        **info,
        **place,
        "stroke_width": width * factor / FONT_SUPERSAMPLE,
    }
    return img, params


def render_digit(rng: np.random.Generator, digit: int) -> tuple[np.ndarray, dict]:
    """uint8 array (28, 28), and the render parameters as a JSON-able dict with at least 'label'."""
    if not 0 <= digit <= 9:
        raise InputError(f"digit must be in 0..9, got {digit}")
    if rng.random() < HANDWRITING_PROB:
        img, params = _render_strokes(rng, digit)
    else:
        img, params = _render_font(rng, digit)
    ink = float(_u(rng, 0.85, 1.0))  # peak brightness of the ink
    arr = np.asarray(img.reduce(img.width // IMAGE_SIZE), dtype=np.float32) * ink
    params = {k: round(float(v), 4) if isinstance(v, float) else v for k, v in params.items()}
    return arr.round().astype(np.uint8), {"label": int(digit), **params, "ink": round(ink, 4)}


class DigitSimulator:
    """Labeled digits; sample i depends only on (seed, i), so a run can be split into ranges.

    appearance (see data/sim/appearance.py): "gray" uint8 (28, 28); "clean" the same digit as RGB,
    white on black (the synthetic arm); "randomized" the same strokes in random colours/textures.
    """

    def __init__(self, seed: int, appearance: str = "gray"):
        self.seed = int(seed)
        self.appearance = check_appearance(appearance)

    def label(self, index: int) -> int:
        # Every aligned block of 10 holds each digit once, in a seeded order: balanced labels
        # without the strict 0,1,2,... cycle leaking into shard order.
        return int(np.random.default_rng([self.seed, 1, index // 10]).permutation(10)[index % 10])

    def render(self, index: int) -> tuple[np.ndarray, dict]:
        rng = np.random.default_rng([self.seed, 0, index])
        img, params = render_digit(rng, self.label(index))
        return apply_appearance(img, params, self.appearance, self.seed, index)

    def sample(self, num_samples: int, start: int = 0) -> Iterator[tuple[np.ndarray, dict]]:
        """Samples start .. start + num_samples - 1 (the same ones whatever the call pattern)."""
        perm = None
        for i in range(start, start + num_samples):
            if perm is None or i % 10 == 0:
                perm = np.random.default_rng([self.seed, 1, i // 10]).permutation(10)
            img, params = render_digit(np.random.default_rng([self.seed, 0, i]), int(perm[i % 10]))
            yield apply_appearance(img, params, self.appearance, self.seed, i)
