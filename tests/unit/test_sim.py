"""The digit and eye simulators: shapes, determinism, labels that match the pixels."""

import json
from collections import Counter

import numpy as np
import pytest

from simgan_dist.data.sim import appearance, digits
from simgan_dist.data.sim.digits import IMAGE_SIZE, DigitSimulator, render_digit
from simgan_dist.data.sim.eyes import EYE_HEIGHT, EYE_WIDTH, EyeSimulator, render_eye


def _stack(samples):
    images, params = zip(*samples, strict=True)
    return np.stack(images), list(params)


# ---------------------------------------------------------------- digits


def test_digit_shape_dtype_and_json_params():
    images, params = _stack(DigitSimulator(0).sample(30))
    assert images.shape == (30, IMAGE_SIZE, IMAGE_SIZE) and images.dtype == np.uint8
    for p in params:
        assert json.loads(json.dumps(p)) == p  # JSON-able, and survives the round trip unchanged
        assert {"label", "style", "font", "rotation_deg", "shear", "scale", "stroke_width"} <= set(
            p
        )
        assert {"offset_x", "offset_y"} <= set(p)


def test_digit_labels_balanced():
    labels = [p["label"] for _, p in DigitSimulator(3).sample(200)]
    assert Counter(labels) == {d: 20 for d in range(10)}
    # Not a fixed 0..9 cycle: shards cut from the stream should not have a label pattern.
    assert labels[:10] != list(range(10)) or labels[10:20] != list(range(10))
    uneven = Counter(p["label"] for _, p in DigitSimulator(3).sample(95))
    assert set(uneven.values()) <= {9, 10}


def test_digit_determinism_and_ranges():
    a, pa = _stack(DigitSimulator(7).sample(20))
    b, pb = _stack(DigitSimulator(7).sample(20))
    c, _ = _stack(DigitSimulator(8).sample(20))
    assert np.array_equal(a, b) and pa == pb
    assert not np.array_equal(a, c)
    # Sample i depends only on (seed, i): a range drawn later equals the same slice of one run.
    tail, ptail = _stack(DigitSimulator(7).sample(7, start=13))
    assert np.array_equal(tail, a[13:]) and ptail == pa[13:]
    img, p = DigitSimulator(7).render(5)
    assert np.array_equal(img, a[5]) and p == pa[5]


@pytest.mark.parametrize("digit", range(10))
def test_every_digit_has_ink_inside_the_frame(digit):
    rng = np.random.default_rng(digit)
    styles = set()
    for _ in range(40):
        img, p = render_digit(rng, digit)
        styles.add(p["style"])
        assert p["label"] == digit
        ink = (img > 128).mean()
        assert 0.015 < ink < 0.4, (ink, p)  # neither blank nor a filled blob
        assert img.max() >= 200, p  # strokes saturate, as in scanned digits
        # The digit fits a ~20 px box centred by mass: the outer ring stays nearly dark.
        ring = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        assert ring.mean() < 20, p
    assert styles == {"font", "handwriting"}


def test_digit_centre_of_mass_near_frame_centre():
    images, _ = _stack(DigitSimulator(1).sample(200))
    w = images.astype(np.float64)
    ys, xs = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE] + 0.5  # pixel centres
    cx = (w * xs).sum((1, 2)) / w.sum((1, 2))
    cy = (w * ys).sum((1, 2)) / w.sum((1, 2))
    assert abs(cx.mean() - 14) < 0.5 and abs(cy.mean() - 14) < 0.5
    assert np.all(np.abs(cx - 14) < 3.5) and np.all(np.abs(cy - 14) < 3.5)
    assert 0.3 < cx.std() < 2  # jittered, not pinned


def test_digit_classes_are_distinguishable():
    # Labels must match the pixels: class means from one seed classify another seed's digits.
    train, ptrain = _stack(DigitSimulator(10).sample(600))
    test, ptest = _stack(DigitSimulator(11).sample(300))
    ytrain = np.array([p["label"] for p in ptrain])
    ytest = np.array([p["label"] for p in ptest])
    feats = lambda x: x.reshape(len(x), -1) / 255.0  # noqa: E731
    means = np.stack([feats(train)[ytrain == d].mean(0) for d in range(10)])
    dist = ((feats(test)[:, None, :] - means[None]) ** 2).sum(-1)
    accuracy = (dist.argmin(1) == ytest).mean()
    assert accuracy > 0.6, accuracy  # chance is 0.1


def test_every_font_renders_every_digit_distinctly():
    # Guards the font list: a font without real digit glyphs renders tofu boxes or nothing.
    for font_idx, name in enumerate(digits.FONT_FILES):
        masks = []
        for d in range(10):
            glyph, _, _, width = digits._glyph(font_idx, d, 0)
            arr = np.asarray(glyph) > 127
            assert 0.05 < arr.mean() < 0.6, (name, d)
            assert width > 1.0, (name, d)
            masks.append(arr)
        pairs = [(a, b) for a in range(10) for b in range(a + 1, 10)]
        for a, b in pairs:
            if masks[a].shape == masks[b].shape:
                assert not np.array_equal(masks[a], masks[b]), (name, a, b)


def test_digit_params_vary_across_samples():
    _, params = _stack(DigitSimulator(2).sample(200))
    assert len({p["font"] for p in params}) >= 10
    assert len({(p["label"], p["variant"]) for p in params if p["style"] == "handwriting"}) >= 15
    for key in ("rotation_deg", "shear", "scale", "stroke_width", "offset_x"):
        assert np.std([p[key] for p in params]) > 0.01, key


def test_render_digit_rejects_bad_label():
    with pytest.raises(ValueError):
        render_digit(np.random.default_rng(0), 10)


# ---------------------------------------------------------------- digit appearances


def test_gray_is_the_default_and_unchanged():
    for i in (0, 9, 31):
        img, params = DigitSimulator(4).render(i)
        gray, gparams = DigitSimulator(4, "gray").render(i)
        assert np.array_equal(img, gray) and params == gparams and "appearance" not in params
        assert img.shape == (IMAGE_SIZE, IMAGE_SIZE)
    with pytest.raises(ValueError, match="appearance must be one of"):
        DigitSimulator(0, "sepia")


def test_clean_is_the_gray_digit_in_rgb():
    grays, gparams = _stack(DigitSimulator(5).sample(20))
    clean, cparams = _stack(DigitSimulator(5, "clean").sample(20))
    assert clean.shape == (20, IMAGE_SIZE, IMAGE_SIZE, 3) and clean.dtype == np.uint8
    assert np.array_equal(clean, np.repeat(grays[..., None], 3, axis=-1))
    assert cparams == [{**p, "appearance": "clean"} for p in gparams]


def test_randomized_colours_the_same_strokes():
    grays, gparams = _stack(DigitSimulator(6).sample(60))
    images, params = _stack(DigitSimulator(6, "randomized").sample(60))
    assert images.shape == (60, IMAGE_SIZE, IMAGE_SIZE, 3) and images.dtype == np.uint8
    for i, (gray, img, p) in enumerate(zip(grays, images, params, strict=True)):
        assert json.loads(json.dumps(p)) == p
        assert p["appearance"] == "randomized" and p["label"] == gparams[i]["label"]
        # The composite, layer by layer: the same draws on a blank and on a full-ink render
        # give the pure background and the pure ink.
        background, _ = appearance.randomize(np.zeros_like(gray), appearance.appearance_rng(6, i))
        ink, _ = appearance.randomize(np.full_like(gray, 255), appearance.appearance_rng(6, i))
        assert np.array_equal(
            img[gray == 0], background[gray == 0]
        )  # same geometry, all background
        mask = gray[..., None] / 255.0
        expected = mask * ink + (1 - mask) * background
        assert np.abs(img - expected).max() <= 1.0  # uint8 rounding of each layer
        if p["background_kind"] == "flat":
            assert (background == p["background_colors"][0]).all()
        # Distinguishable: mean ink and background colours apart by the rule's distance.
        gap = np.linalg.norm(ink.mean((0, 1)) - background.mean((0, 1))) / 255
        assert gap >= appearance.MIN_COLOUR_DISTANCE - 0.01
    kinds = {p["background_kind"] for p in params} | {p["ink_kind"] for p in params}
    assert kinds == {"flat", "noise", "gradient", "stripes"}
    assert len({tuple(p["background_colors"][0]) for p in params}) == 60  # colours vary
    again, pagain = _stack(DigitSimulator(6, "randomized").sample(5, start=10))
    assert np.array_equal(again, images[10:15]) and pagain == params[10:15]


# ---------------------------------------------------------------- eyes


def test_eye_shape_dtype_json_and_gaze_range():
    images, params = _stack(EyeSimulator(0).sample(200))
    assert images.shape == (200, EYE_HEIGHT, EYE_WIDTH) and images.dtype == np.uint8
    gaze = np.array([p["gaze"] for p in params])
    assert np.all((gaze[:, 0] >= -25) & (gaze[:, 0] <= 25))
    assert np.all((gaze[:, 1] >= -35) & (gaze[:, 1] <= 35))
    assert gaze[:, 0].std() > 8 and gaze[:, 1].std() > 12  # spread over the range
    for p in params[:20]:
        assert json.loads(json.dumps(p)) == p
        assert {"pupil_radius", "iris_radius", "eyelid_opening", "skin_tone"} <= set(p)
    assert images.reshape(200, -1).std(1).min() > 5  # not flat


def test_eye_determinism():
    a, pa = _stack(EyeSimulator(5).sample(10))
    b, pb = _stack(EyeSimulator(5).sample(10))
    c, _ = _stack(EyeSimulator(6).sample(10))
    assert np.array_equal(a, b) and pa == pb
    assert not np.array_equal(a, c)
    tail, ptail = _stack(EyeSimulator(5).sample(4, start=6))
    assert np.array_equal(tail, a[6:]) and ptail == pa[6:]


def _dark_centroid(img: np.ndarray, k: int = 8) -> tuple[float, float]:
    """Mean (x, y) of the k darkest pixels' centres: the pupil, mostly."""
    idx = np.argsort(img.ravel(), kind="stable")[:k]
    ys, xs = np.unravel_index(idx, img.shape)
    return xs.mean() + 0.5, ys.mean() + 0.5


def test_pupil_moves_with_yaw_and_pitch():
    # Same random draws, only the gaze differs: the pupil must move as the convention says
    # (positive yaw -> image +x, positive pitch -> up, towards row 0).
    right = left = up = down = 0
    for seed in range(30):
        xr, _ = _dark_centroid(render_eye(np.random.default_rng(seed), 0.0, 30.0)[0])
        xl, _ = _dark_centroid(render_eye(np.random.default_rng(seed), 0.0, -30.0)[0])
        _, yu = _dark_centroid(render_eye(np.random.default_rng(seed), 20.0, 0.0)[0])
        _, yd = _dark_centroid(render_eye(np.random.default_rng(seed), -20.0, 0.0)[0])
        right += xr > xl + 2
        left += xl > xr
        up += yu < yd
        down += yd < yu
    assert right >= 27 and left == 0, (right, left)
    assert up >= 25 and down <= 2, (up, down)


def test_gaze_label_matches_pupil_position_across_samples():
    images, params = _stack(EyeSimulator(9).sample(300))
    yaw = np.array([p["gaze"][1] for p in params])
    x = np.array(
        [_dark_centroid(img)[0] - p["eye_center"][0] for img, p in zip(images, params, strict=True)]
    )
    assert np.corrcoef(yaw, x)[0, 1] > 0.6
    # The recorded iris centre is where the pupil is drawn.
    iris_x = np.array([p["iris_center"][0] for p in params])
    assert np.median(np.abs(iris_x - (x + np.array([p["eye_center"][0] for p in params])))) < 2.0
