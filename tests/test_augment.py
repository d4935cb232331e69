"""Augmentation preset: dots stay on their blobs, pixel convention, seeding, no albumentations warnings."""

import math
import warnings

import cv2
import numpy as np
import pandas as pd
import pytest

from data.augment import IGNORE, Augmenter, AugmentSettings, exposure_lut
from data.config import ConfigError, settings_from_mapping

FULL = {
    "flip": {"horizontal_p": 0.5, "vertical_p": 0.5, "rot90_p": 0.5},
    "affine": {"p": 1.0},
    "perspective": {"p": 1.0},
    "colour": {
        "brightness_contrast_p": 1.0,
        "hue_saturation_p": 1.0,
        "rgb_shift_p": 1.0,
        "temperature_p": 1.0,
        "gamma_p": 1.0,
    },
    "blur": {"p": 1.0},
    "noise": {"p": 1.0},
    "jpeg": {"p": 1.0},
}
PHOTOMETRIC_OFF = {
    "colour": {
        "brightness_contrast_p": 0.0,
        "hue_saturation_p": 0.0,
        "rgb_shift_p": 0.0,
        "temperature_p": 0.0,
        "gamma_p": 0.0,
    },
    "blur": {"p": 0.0},
    "noise": {"p": 0.0},
    "jpeg": {"p": 0.0},
}
NO_GEOMETRY = {
    "flip": {"horizontal_p": 0.0, "vertical_p": 0.0, "rot90_p": 0.0},
    "affine": {"p": 0.0},
    "perspective": {"p": 0.0},
}


def _settings(**groups) -> AugmentSettings:
    return settings_from_mapping(AugmentSettings, groups)


def _only(**groups) -> AugmentSettings:
    """Only the given geometric transforms (photometric ones and the rest off)."""
    merged = {**PHOTOMETRIC_OFF, **NO_GEOMETRY}
    for key, value in groups.items():
        merged[key] = {**merged.get(key, {}), **value}
    return _settings(**merged)


@pytest.fixture(scope="session")
def synth_photo(tmp_path_factory):
    """One small synthetic close-up: photo, class mask, dots (x, y, diameter px)."""
    from data.card import load_card
    from data.config import load_settings
    from data.flags import load_flag_settings
    from data.synth.generate import generate_images
    from data.synth.settings import SynthSettings

    cfg = load_settings(
        SynthSettings,
        None,
        [
            "image.width=320",
            "image.height=240",
            "camera.px_per_mm=[12, 16]",
            "dots.diameter_mm=[0.15, 0.3]",
            "dots.fresh_fraction=[0, 0]",
        ],
        default="synth/closeup.yaml",
    )
    out = tmp_path_factory.mktemp("augment_synth")
    (made,) = generate_images(out, 1, cfg, load_card(), load_flag_settings(), seed=5)
    photo = cv2.cvtColor(cv2.imread(str(made.folder / made.row["image"].split("/")[-1])), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(made.folder / "mask.png"), cv2.IMREAD_UNCHANGED)
    dots = pd.read_csv(made.folder / "dots.csv")
    diam_px = dots["diameter_mm"].to_numpy() * float(made.row["px_per_mm"])
    return photo, mask, dots[["x", "y"]].to_numpy(float), diam_px


def _instance_mask(shape, points, diameters) -> np.ndarray:
    """uint16 mask: disc of each dot's diameter (at least 1 px radius) = dot index + 1."""
    inst = np.zeros(shape, np.uint16)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    for i, ((x, y), d) in enumerate(zip(points, diameters)):
        r = max(d / 2, 1.0)
        inst[(xx - x) ** 2 + (yy - y) ** 2 <= r * r] = i + 1
    return inst


def test_full_preset_emits_no_albumentations_warning(synth_photo):
    photo, mask, pts, _ = synth_photo
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aug = Augmenter.build(_settings(**FULL), output_size=(128, 128))
        for seed in range(5):
            aug(photo, mask, pts, np.random.default_rng(seed))
        Augmenter.build(AugmentSettings())(photo, mask, pts, np.random.default_rng(0))
        Augmenter.build(AugmentSettings.none())(photo, mask, pts, np.random.default_rng(0))
    # strict mode: an unknown (e.g. albumentations 1.x) argument is an error, not a warning
    assert aug.compose.strict


def test_dots_stay_on_their_mask_blobs(synth_photo):
    """THE key test: every surviving keypoint lies on (within 1 px of) its own dot's blob."""
    photo, mask, pts, diam = synth_photo
    inst = _instance_mask(mask.shape, pts, diam)
    ix = np.round(pts).astype(int)
    # dots whose own blob is at their centre before augmentation (overlapping spread dots excluded), and
    # at least 2.5 px wide: a nearest-neighbour scale-down can drop a smaller blob from the mask altogether
    own = inst[ix[:, 1], ix[:, 0]] == np.arange(1, len(pts) + 1)
    valid = own & (diam >= 2.5)
    assert own.mean() > 0.9 and valid.sum() >= 30
    aug = Augmenter.build(_settings(**FULL))
    rng = np.random.default_rng(42)
    checked = 0
    for _ in range(30):
        out = aug(photo, mask, pts, rng, masks=[inst])
        (warped,) = out.masks
        h, w = out.mask.shape
        assert warped.dtype == np.uint16 and warped.shape == (h, w)
        assert len(out.points) == len(out.kept) and len(np.unique(out.kept)) == len(out.kept)
        assert np.all((out.points >= 0) & (out.points < (w, h)))
        padded = np.pad(warped, 1)
        for (x, y), k in zip(out.points, out.kept):
            if not valid[k]:
                continue
            cx, cy = int(round(x)) + 1, int(round(y)) + 1
            assert (padded[cy - 1 : cy + 2, cx - 1 : cx + 2] == k + 1).any(), f"dot {k} left its blob at ({x}, {y})"
            checked += 1
        # the class mask moved with them: surviving dots sit on scalp/hair (or 255 at a warped border)
        cls = out.mask[
            np.clip(np.round(out.points[:, 1]).astype(int), 0, h - 1),
            np.clip(np.round(out.points[:, 0]).astype(int), 0, w - 1),
        ]
        assert np.isin(cls, (1, 2, IGNORE)).mean() > 0.95
    assert checked > 500


@pytest.mark.parametrize(
    "transform,expected",
    [
        ({"flip": {"horizontal_p": 1.0}}, lambda x, y, w, h: (w - 1 - x, y)),
        ({"flip": {"vertical_p": 1.0}}, lambda x, y, w, h: (x, h - 1 - y)),
        ({"flip": {"horizontal_p": 1.0, "vertical_p": 1.0}}, lambda x, y, w, h: (w - 1 - x, h - 1 - y)),
    ],
)
def test_flip_follows_opencv_pixel_centres(transform, expected):
    h, w = 30, 40
    pts = np.array([[0.0, 0.0], [7.0, 3.0], [39.0, 29.0], [12.25, 20.75]])
    image = np.zeros((h, w, 3), np.uint8)
    for x, y in pts[:3].astype(int):
        image[y, x] = 255
    out = Augmenter.build(_only(**transform))(image, np.zeros((h, w), np.uint8), pts, np.random.default_rng(0))
    want = np.array([expected(x, y, w, h) for x, y in pts])
    np.testing.assert_allclose(out.points, want[out.kept], atol=1e-4)
    assert len(out.kept) == 4
    for x, y in want[:3].astype(int):  # the bright pixel moved exactly where its keypoint went
        assert out.image[y, x, 0] == 255


def test_rot90_follows_opencv_pixel_centres():
    h, w = 32, 32
    image = np.zeros((h, w, 3), np.uint8)
    image[5, 9] = 255
    aug = Augmenter.build(_only(flip={"rot90_p": 1.0}))
    for seed in range(6):
        out = aug(image, np.zeros((h, w), np.uint8), np.array([[9.0, 5.0]]), np.random.default_rng(seed))
        x, y = np.round(out.points[0]).astype(int)
        np.testing.assert_allclose(out.points[0], (x, y), atol=1e-4)
        assert out.image[y, x, 0] == 255


def _blob_image(shape, centres, sigma=2.5):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    img = np.zeros(shape, float)
    for x, y in centres:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.repeat((np.clip(img, 0, 1) * 250).round().astype(np.uint8)[..., None], 3, axis=2)


def test_warps_keep_dots_subpixel_accurate():
    """Affine + perspective: the warped blob's centroid is where the keypoint went (< 0.1 px)."""
    shape = (160, 160)
    centres = np.array([[40.3, 50.7], [80.0, 80.0], [111.6, 98.2], [60.45, 120.15]])
    image = _blob_image(shape, centres)
    aug = Augmenter.build(
        _only(
            affine={"p": 1.0}, perspective={"p": 1.0, "scale": (0.03, 0.06)}, flip={"horizontal_p": 0.5, "rot90_p": 0.5}
        )
    )
    rng = np.random.default_rng(7)
    errors = []
    for _ in range(10):
        out = aug(image, np.zeros(shape, np.uint8), centres, rng)
        g = out.image[..., 0].astype(float)
        for x, y in out.points:
            x0, y0 = int(round(x)), int(round(y))
            if not (9 <= x0 < shape[1] - 9 and 9 <= y0 < shape[0] - 9):
                continue
            win = g[y0 - 8 : y0 + 9, x0 - 8 : x0 + 9]
            yy, xx = np.mgrid[y0 - 8 : y0 + 9, x0 - 8 : x0 + 9]
            cx, cy = (win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()
            errors.append(math.hypot(cx - x, cy - y))
    assert len(errors) >= 20
    assert max(errors) < 0.1, max(errors)


def test_same_generator_state_same_result(synth_photo):
    photo, mask, pts, _ = synth_photo
    aug = Augmenter.build(_settings(**FULL), output_size=(96, 96))
    a = aug(photo, mask, pts, np.random.default_rng(123))
    b = Augmenter.build(_settings(**FULL), output_size=(96, 96))(photo, mask, pts, np.random.default_rng(123))
    c = aug(photo, mask, pts, np.random.default_rng(124))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.points, b.points) and np.array_equal(a.kept, b.kept) and a.scale == b.scale
    assert not np.array_equal(a.image, c.image)


def test_scale_is_the_local_magnification():
    h, w = 101, 101
    pts = np.array([[50.0, 50.0], [70.0, 50.0], [50.0, 30.0]])
    aug = Augmenter.build(
        _only(affine={"p": 1.0, "scale": (1.1, 1.1), "rotate_deg": (10.0, 10.0), "shear_deg": (0.0, 0.0)})
    )
    out = aug(np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8), pts, np.random.default_rng(0))
    assert out.scale == pytest.approx(1.1, abs=1e-6)
    assert np.linalg.norm(out.points[1] - out.points[0]) == pytest.approx(22.0, abs=1e-3)
    # the perspective warp reports a magnification near 1 (mild keystone)
    persp = Augmenter.build(_only(perspective={"p": 1.0}))
    out = persp(np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8), pts, np.random.default_rng(1))
    assert 0.95 < out.scale < 1.15


def test_none_mode_and_output_crop(synth_photo):
    photo, mask, pts, _ = synth_photo
    out = Augmenter.build(AugmentSettings.none(), output_size=(100, 120))(photo, mask, pts, np.random.default_rng(0))
    assert out.image.shape == (100, 120, 3) and out.scale == 1.0
    y0, x0 = (photo.shape[0] - 100) // 2, (photo.shape[1] - 120) // 2
    assert np.array_equal(out.image, photo[y0 : y0 + 100, x0 : x0 + 120])
    np.testing.assert_allclose(out.points, pts[out.kept] - (x0, y0), atol=1e-4)
    inside = (pts[:, 0] >= x0) & (pts[:, 0] < x0 + 120) & (pts[:, 1] >= y0) & (pts[:, 1] < y0 + 100)
    assert set(out.kept) == set(np.flatnonzero(inside))
    assert AugmentSettings.none().context_factor() == 1.0
    assert AugmentSettings().context_factor() == pytest.approx(math.sqrt(2) * (1 + math.tan(math.radians(5))) / 0.85)


def test_invalid_settings_are_one_line_config_errors():
    with pytest.raises(ConfigError, match=r"^augment: blur: motion_kernel must be odd") as err:
        settings_from_mapping(AugmentSettings, {"blur": {"motion_kernel": [4, 6]}}, source="augment")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="unknown key"):
        settings_from_mapping(AugmentSettings, {"affine": {"var_limit": 3}})


def test_exposure_table_is_linear_light():
    assert np.array_equal(exposure_lut(np.ones(3))[:, 0, 0], np.arange(256))
    lut = exposure_lut(np.array([2.0, 1.0, 0.5]))[:, 0]
    # mid grey (sRGB 118, ~0.18 linear) one stop up is ~0.36 linear, sRGB ~161; one down ~0.09, ~84
    assert abs(int(lut[118, 0]) - 161) <= 1 and lut[118, 1] == 118 and abs(int(lut[118, 2]) - 84) <= 1
    assert lut[255, 0] == 255 and lut[0, 2] == 0  # clipped at white, black stays black


def test_exposure_is_drawn_only_when_asked_for(synth_photo):
    photo, mask, pts, _ = synth_photo
    # off (the default): one draw from the caller's generator (the pipeline's seed) and no more
    rng, ref = np.random.default_rng(7), np.random.default_rng(7)
    out = Augmenter.build(AugmentSettings(mode="none"))(photo, mask, pts, rng)
    ref.integers(0, 2**63 - 1)
    assert np.array_equal(out.image, photo) and rng.random() == ref.random()
    # on, and alone: the photo one stop brighter as a whole, the mask untouched, the same for the same draws
    only = _settings(
        exposure={"p": 1.0, "stops": [1.0, 1.0], "wb_gain": [1.0, 1.0]},
        flip={"horizontal_p": 0, "vertical_p": 0, "rot90_p": 0},
        affine={"p": 0},
        perspective={"p": 0},
        colour={"brightness_contrast_p": 0, "hue_saturation_p": 0, "rgb_shift_p": 0, "temperature_p": 0, "gamma_p": 0},
        blur={"p": 0},
        noise={"p": 0},
        jpeg={"p": 0},
    )
    a = Augmenter.build(only)(photo, mask, pts, np.random.default_rng(3))
    b = Augmenter.build(only)(photo, mask, pts, np.random.default_rng(3))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, mask)
    assert np.array_equal(a.image, cv2.LUT(photo, exposure_lut(np.full(3, 2.0))))
