"""Procedural eye simulator (UnityEyes-like) for the gaze preset: 55x35 grayscale eyes with gaze labels.

Gaze convention: 'gaze' is [pitch_deg, yaw_deg] of the eyeball's optical axis relative to the camera.
Positive yaw turns the eye towards image +x (the iris moves right in the image); positive pitch looks
up (the iris moves towards row 0). Zero gaze looks straight into the camera. The iris and pupil are
drawn where an eyeball of the sampled radius would put them, so the label matches the image.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np

EYE_HEIGHT, EYE_WIDTH = 35, 55
PITCH_RANGE = (-25.0, 25.0)
YAW_RANGE = (-35.0, 35.0)
# Everything is drawn straight at 55x35: edges are antialiased analytically from signed distances,
# and the small parts (iris, pupil, glint) are computed only in a window around them. That keeps a
# render to a few hundred microseconds.
_X = (np.arange(EYE_WIDTH, dtype=np.float32) + 0.5)[None, :]  # pixel centres
_Y = (np.arange(EYE_HEIGHT, dtype=np.float32) + 0.5)[:, None]


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    # rng.uniform(lo, hi) costs ~3 us a call against ~0.6 us here; renders make dozens of draws.
    return lo + (hi - lo) * rng.random()


@functools.cache
def _interp_matrix(n_out: int, n_cells: int) -> np.ndarray:
    """(n_out, n_cells + 1) linear-interpolation weights from a coarse grid to n_out pixels."""
    pos = np.linspace(0, n_cells, n_out)
    lo = np.minimum(pos.astype(int), n_cells - 1)
    m = np.zeros((n_out, n_cells + 1), np.float32)
    m[np.arange(n_out), lo] = 1 - (pos - lo)
    m[np.arange(n_out), lo + 1] = pos - lo
    return m


def _smooth_noise(rng: np.random.Generator, cells: tuple[int, int], amp: float) -> np.ndarray:
    """Low-frequency noise over the image: a coarse random grid, bilinearly upsampled."""
    g = rng.normal(0, amp, (cells[0] + 1, cells[1] + 1)).astype(np.float32)
    return _interp_matrix(EYE_HEIGHT, cells[0]) @ g @ _interp_matrix(EYE_WIDTH, cells[1]).T


def _coverage(signed_dist: np.ndarray) -> np.ndarray:
    """Antialiased inside-ness from a signed distance in pixels (positive = inside)."""
    return np.clip(signed_dist + 0.5, 0.0, 1.0)


def _window(x: float, y: float, r: float) -> tuple[slice, slice]:
    """Rows and columns of the image within r of (x, y), clipped to the frame (may be empty)."""
    x0, x1 = max(int(x - r), 0), min(int(x + r) + 2, EYE_WIDTH)
    y0, y1 = max(int(y - r), 0), min(int(y + r) + 2, EYE_HEIGHT)
    return slice(y0, max(y1, y0)), slice(x0, max(x1, x0))


def render_eye(
    rng: np.random.Generator, pitch_deg: float | None = None, yaw_deg: float | None = None
) -> tuple[np.ndarray, dict]:
    """uint8 (35, 55) grayscale eye image; dict has 'gaze': [pitch_deg, yaw_deg] and render params.

    pitch_deg / yaw_deg fix the gaze instead of sampling it (same random draws either way)."""
    p_s, y_s = _u(rng, *PITCH_RANGE), _u(rng, *YAW_RANGE)
    pitch = float(p_s if pitch_deg is None else pitch_deg)
    yaw = float(y_s if yaw_deg is None else yaw_deg)
    sp, cp = math.sin(math.radians(pitch)), math.cos(math.radians(pitch))
    sy, cy_ = math.sin(math.radians(yaw)), math.cos(math.radians(yaw))

    # --- geometry (pixels, y down)
    cx = EYE_WIDTH / 2 + rng.normal(0, 1.5)
    cy = EYE_HEIGHT / 2 + rng.normal(0, 1.2)
    half_w = _u(rng, 16.0, 21.0)  # half the lid opening's width
    ball_r = half_w * _u(rng, 0.72, 0.85)  # eyeball ~12 mm vs fissure ~15 mm half width
    iris_r = ball_r * _u(rng, 0.46, 0.53)
    pupil_frac = _u(rng, 0.28, 0.55)
    ex, ey = cx + rng.normal(0, 0.8), cy + rng.normal(0, 0.8) - 0.1 * iris_r
    # The iris sits on the sphere, sqrt(R^2 - r^2) in front of its centre, turned by the gaze.
    depth = math.sqrt(ball_r**2 - iris_r**2)
    ix, iy = ex + depth * sy * cp, ey - depth * sp
    # Orthographic view of a disc with normal g: its minor axis is r*g_z along g's image direction.
    gx, gy, gz = sy * cp, -sp, cy_ * cp
    n = math.hypot(gx, gy)
    ux, uy = (gx / n, gy / n) if n > 1e-6 else (1.0, 0.0)

    # Lids (functions of x only): the upper one covers the iris top and follows the gaze up/down.
    opening = _u(rng, 0.65, 1.15)
    up_a = max(opening * iris_r * _u(rng, 0.8, 1.1) + 0.15 * pitch, 1.5)
    low_a = max(opening * iris_r * _u(rng, 0.6, 0.95) + 0.04 * pitch, 1.5)
    skew_u, skew_l = _u(rng, -0.25, 0.25), _u(rng, -0.2, 0.2)
    tilt = rng.normal(0, 0.05)  # canthal tilt, px per px
    t = np.clip((_X - cx) / half_w, -1.0, 1.0)
    shape = np.sqrt(1 - t * t) ** _u(rng, 0.8, 1.2)
    base = cy + tilt * (_X - cx)
    lid_u = base - up_a * shape * (1 + skew_u * t)
    lid_l = base + low_a * shape * (1 + skew_l * t)
    d_up, d_low = _Y - lid_u, lid_l - _Y  # vertical distances, positive inside the opening
    eye_mask = _coverage(np.minimum(np.minimum(d_up, d_low), half_w - np.abs(_X - cx)))

    # --- light and skin
    light = _u(rng, 0, 2 * math.pi)
    lx, ly = math.cos(light), math.sin(light)
    strength = _u(rng, 0.05, 0.3)
    skin_tone = _u(rng, 70.0, 200.0)
    ramp = strength * (lx * (_X - EYE_WIDTH / 2) / 27.5 + ly * (_Y - EYE_HEIGHT / 2) / 17.5)
    crease_h = _u(rng, 3.0, 7.0)
    above = np.maximum(-d_up, 0)
    crease = np.exp(-(((above - crease_h * shape) / 1.3) ** 2)) * shape * np.minimum(above, 1)
    # Darker near the eye; the distance counts beyond the corners too, or the shading would run
    # along the corner line to the frame edge.
    outside = np.maximum(np.maximum(above, -d_low), np.abs(_X - cx) - half_w)
    socket = np.exp(-np.maximum(outside, 0) / 4.0)
    skin = skin_tone * (1 + ramp + _smooth_noise(rng, (3, 4), 0.05))
    skin *= 1 - _u(rng, 0.15, 0.35) * crease - _u(rng, 0.05, 0.25) * socket
    brow = _u(rng, 0.2, 0.5) if rng.random() < 0.3 else 0.0
    if brow:  # an eyebrow edge at the top of the crop
        brow_y = _u(rng, -2.0, 4.0) + 3 * (t * t)
        edge = np.clip((brow_y - _Y) / 3 + 0.5, 0, 1)
        skin *= 1 - brow * edge * (1 + _smooth_noise(rng, (2, 8), 0.3))

    # --- sclera: brighter than the skin, shaded like a sphere
    sclera_tone = min(skin_tone * _u(rng, 1.0, 1.6), 240.0)
    eye = np.broadcast_to(sclera_tone * (1 - _u(rng, 0.2, 0.45) * t * t), skin.shape).copy()
    inner_left = bool(rng.random() < 0.5)
    car_x = cx + (-1 if inner_left else 1) * half_w * 0.88
    win = _window(car_x, cy, 4)
    eye[win] *= 1 - 0.35 * np.exp(
        -(((_X[:, win[1]] - car_x) / 2.5) ** 2 + ((_Y[win[0]] - cy) / 2.0) ** 2)
    )

    # --- iris and pupil, in a window around the iris
    iris_tone = _u(rng, 0.15, 0.7) * sclera_tone
    pupil_tone = _u(rng, 5.0, 25.0)
    win = _window(ix, iy, iris_r + 1)
    dx, dy = _X[:, win[1]] - ix, _Y[win[0]] - iy
    pu = (dx * ux + dy * uy) * (1 / max(gz, 1e-3))  # undo the foreshortening
    pv = dy * ux - dx * uy
    rho = np.sqrt(pu * pu + pv * pv) * (1 / iris_r)  # 1 on the limbus
    # Pixels per unit rho, averaged over the ellipse's axes: good enough for edge antialiasing.
    px_per_rho = iris_r * (1 + gz) / 2
    spokes = 1 + 0.1 * np.sin(int(_u(rng, 6, 14)) * np.arctan2(pv, pu) + _u(rng, 0, 6.3))
    iris = (
        iris_tone
        * spokes
        * (1 - _u(rng, 0.25, 0.5) * np.clip((rho - 0.7) * (1 / 0.3), 0, 1))  # limbal ring
        * (1 + 0.15 * np.exp(-(((rho - pupil_frac - 0.15) * (1 / 0.12)) ** 2)))
    )  # collarette
    pupil_cov = _coverage((pupil_frac - rho) * px_per_rho)
    iris += (pupil_tone - iris) * pupil_cov
    iris_cov = _coverage((1 - rho) * px_per_rho)
    eye[win] += (iris - eye[win]) * iris_cov
    # The upper lid's shadow falls on sclera and iris alike.
    eye *= 1 - _u(rng, 0.25, 0.5) * np.exp(-np.maximum(d_up, 0) / 1.8)

    img = skin + (eye - skin) * eye_mask

    # --- lid margins: a lash line along the upper lid, a fainter one along the lower
    lash_w = _u(rng, 0.8, 2.2) * (1 + _interp_matrix(EYE_WIDTH, 8) @ rng.normal(0, 0.2, 9))
    lash_dark = _u(rng, 0.45, 0.85)
    upper_lash = _coverage(np.minimum(d_up + lash_w * shape, 0.6 - d_up)) * (shape > 0.05)
    lower_lash = _coverage(np.minimum(d_low + 0.7, 0.4 - d_low)) * (shape > 0.05)
    img *= (1 - lash_dark * upper_lash) * (1 - 0.3 * lash_dark * lower_lash)

    # --- corneal glint: the light's reflection, near the iris centre on the light's side
    g_off = iris_r * _u(rng, 0.15, 0.6)
    gl_x, gl_y = ix - lx * g_off, iy - ly * g_off
    gl_s = _u(rng, 0.5, 0.9)
    win = _window(gl_x, gl_y, 3)
    glint = np.exp(-((_X[:, win[1]] - gl_x) ** 2 + (_Y[win[0]] - gl_y) ** 2) / (2 * gl_s**2))
    img[win] += (255 - img[win]) * _u(rng, 0.6, 1.0) * glint * eye_mask[win]

    # --- camera: gain, a little defocus, sensor noise
    img *= _u(rng, 0.85, 1.15)
    blur = _u(rng, 0.0, 0.6)
    soft = img.copy()
    soft[1:-1, 1:-1] = (img[:-2, 1:-1] + img[2:, 1:-1] + img[1:-1, :-2] + img[1:-1, 2:]) / 4
    img += (soft - img) * blur
    noise = _u(rng, 0.5, 4.0)
    # Uniform, not Gaussian, sensor noise: same std at a third of the cost.
    img += (rng.random(img.shape, dtype=np.float32) - 0.5) * (noise * math.sqrt(12))
    out = np.clip(img, 0, 255).round().astype(np.uint8)

    params = {
        "gaze": [round(pitch, 4), round(yaw, 4)],
        "eye_center": [round(cx, 3), round(cy, 3)],
        "iris_center": [round(ix, 3), round(iy, 3)],
        "eye_half_width": half_w,
        "eyeball_radius": ball_r,
        "iris_radius": iris_r,
        "pupil_radius": iris_r * pupil_frac,
        "eyelid_opening": opening,
        "upper_lid_height": up_a,
        "lower_lid_height": low_a,
        "skin_tone": skin_tone,
        "sclera_tone": sclera_tone,
        "iris_tone": iris_tone,
        "pupil_tone": pupil_tone,
        "light_angle_deg": math.degrees(light),
        "light_strength": strength,
        "eyebrow": brow,
        "inner_corner": "left" if inner_left else "right",
        "blur": blur,
        "noise_std": noise,
    }
    return out, {k: round(float(v), 4) if isinstance(v, float) else v for k, v in params.items()}


class EyeSimulator:
    """Labeled eyes; sample i depends only on (seed, i), so a run can be split into ranges."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def render(self, index: int) -> tuple[np.ndarray, dict]:
        return render_eye(np.random.default_rng([self.seed, 2, index]))

    def sample(self, num_samples: int, start: int = 0) -> Iterator[tuple[np.ndarray, dict]]:
        """Samples start .. start + num_samples - 1 (the same ones whatever the call pattern)."""
        for i in range(start, start + num_samples):
            yield self.render(i)
