"""Tests of data.colour: conversions, CIEDE2000, luminance fast path, blue_index."""

from __future__ import annotations

import time

import numpy as np
import pytest
from skimage.color import rgb2lab

from data import colour

# ----------------------------------------------------------------------------- conversions


def test_srgb_transfer_known_values_and_breakpoints() -> None:
    enc = np.array([0.0, 0.04045, 0.5, 1.0])
    lin = colour.srgb_to_linear(enc)
    np.testing.assert_allclose(lin, [0.0, 0.04045 / 12.92, 0.21404114, 1.0], rtol=1e-6, atol=1e-12)
    # The standard's two breakpoints (0.04045 and 0.0031308) disagree in the 8th digit.
    np.testing.assert_allclose(colour.linear_to_srgb(lin), enc, atol=1e-7)


def test_srgb_round_trip_including_out_of_range() -> None:
    x = np.linspace(-0.2, 1.3, 1001)
    np.testing.assert_allclose(colour.linear_to_srgb(colour.srgb_to_linear(x)), x, atol=1e-9)


def test_white_black_and_grey_in_lab() -> None:
    np.testing.assert_allclose(colour.srgb_to_lab(np.ones(3)), [100.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(colour.srgb_to_lab(np.zeros(3)), [0.0, 0.0, 0.0], atol=1e-9)
    grey = colour.srgb_to_lab(np.full(3, 0.5))
    np.testing.assert_allclose(grey, [53.3890, 0.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(colour.WHITE_XYZ, [0.95046, 1.0, 1.08906], atol=1e-4)


def test_lab_round_trips_keep_dtype() -> None:
    rng = np.random.default_rng(1)
    rgb64 = rng.random((50, 7, 3))
    lab = colour.srgb_to_lab(rgb64)
    assert lab.dtype == np.float64 and lab.shape == (50, 7, 3)
    np.testing.assert_allclose(colour.lab_to_srgb(lab), rgb64, atol=1e-9)
    np.testing.assert_allclose(colour.lab_to_linear_rgb(colour.linear_rgb_to_lab(rgb64)), rgb64, atol=1e-9)
    np.testing.assert_allclose(colour.xyz_to_linear_rgb(colour.linear_rgb_to_xyz(rgb64)), rgb64, atol=1e-12)

    rgb32 = rgb64.astype(np.float32)
    lab32 = colour.srgb_to_lab(rgb32)
    assert lab32.dtype == np.float32
    np.testing.assert_allclose(lab32, lab, atol=2e-3)
    back32 = colour.lab_to_srgb(lab32)
    assert back32.dtype == np.float32
    np.testing.assert_allclose(back32, rgb32, atol=1e-4)


def test_agrees_with_skimage_rgb2lab() -> None:
    # skimage uses a rounded matrix / white; agreement to a few hundredths of a unit.
    rgb = np.random.default_rng(2).random((2000, 3))
    np.testing.assert_allclose(colour.srgb_to_lab(rgb), rgb2lab(rgb), atol=0.05)


def test_dark_colours_use_linear_lab_segment() -> None:
    # Y below (6/29)^3: L* = kappa * Y exactly.
    lin = np.full(3, 0.001)
    assert colour.linear_rgb_to_lab(lin)[0] == pytest.approx(24389.0 / 27.0 * 0.001, rel=1e-9)
    np.testing.assert_allclose(colour.lab_to_linear_rgb(colour.linear_rgb_to_lab(lin)), lin, rtol=1e-9)


def test_integer_input_is_refused() -> None:
    with pytest.raises(TypeError):
        colour.srgb_to_lab(np.array([255, 128, 0], dtype=np.uint8))


def test_wrong_last_axis_is_refused() -> None:
    with pytest.raises(ValueError):
        colour.linear_rgb_to_xyz(np.zeros((4, 2)))


# ----------------------------------------------------------------------------- CIEDE2000

# Test pairs from G. Sharma, W. Wu, E. N. Dalal, "The CIEDE2000 color-difference formula:
# implementation notes, supplementary test data, and mathematical observations",
# Color Res. Appl. 30(1), 2005, Table 1 (pair number: L1, a1, b1, L2, a2, b2, dE00).
SHARMA_PAIRS = [
    (1, (50.0000, 2.6772, -79.7751), (50.0000, 0.0000, -82.7485), 2.0425),
    (4, (50.0000, -1.3802, -84.2814), (50.0000, 0.0000, -82.7485), 1.0000),
    (7, (50.0000, 0.0000, 0.0000), (50.0000, -1.0000, 2.0000), 2.3669),
    (9, (50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0009), 7.1792),
    (11, (50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0011), 7.2195),
    (13, (50.0000, -0.0010, 2.4900), (50.0000, 0.0009, -2.4900), 4.8045),
    (15, (50.0000, -0.0010, 2.4900), (50.0000, 0.0011, -2.4900), 4.7461),
    (17, (50.0000, 2.5000, 0.0000), (73.0000, 25.0000, -18.0000), 27.1492),
    (19, (50.0000, 2.5000, 0.0000), (56.0000, -27.0000, -3.0000), 31.9030),
    (25, (60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    (27, (61.2901, 3.7196, -5.3901), (61.4292, 2.2480, -4.9620), 1.8731),
    (30, (36.4612, 47.8580, 18.3852), (36.2715, 50.5065, 21.2231), 1.4146),
    (33, (6.7747, -0.2908, -2.4247), (5.8714, -0.0985, -2.2286), 0.6377),
    (34, (2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


@pytest.mark.parametrize("pair", SHARMA_PAIRS, ids=[f"pair{p[0]}" for p in SHARMA_PAIRS])
def test_delta_e00_sharma_pairs(pair) -> None:
    _, lab1, lab2, expected = pair
    assert float(colour.delta_e00(np.array(lab1), np.array(lab2))) == pytest.approx(expected, abs=1e-4)


def test_delta_e00_vectorised_and_broadcast() -> None:
    lab1 = np.array([p[1] for p in SHARMA_PAIRS])
    lab2 = np.array([p[2] for p in SHARMA_PAIRS])
    expected = np.array([p[3] for p in SHARMA_PAIRS])
    np.testing.assert_allclose(colour.delta_e00(lab1, lab2), expected, atol=1e-4)
    np.testing.assert_allclose(colour.delta_e00(lab2, lab1), expected, atol=1e-4)  # symmetric
    same = colour.delta_e00(lab1, lab1[3])  # broadcast one colour against many
    assert same.shape == (len(SHARMA_PAIRS),) and same[3] == 0.0


# ----------------------------------------------------------------------------- luminance


def test_luminance_lstar_matches_full_lab() -> None:
    rng = np.random.default_rng(3)
    img = rng.random((64, 48, 3)) * 1.1 - 0.05  # includes negatives and > 1
    np.testing.assert_allclose(colour.luminance_lstar(img), colour.linear_rgb_to_lab(img)[..., 0], atol=1e-6)
    img32 = img.astype(np.float32)
    out32 = colour.luminance_lstar(img32)
    assert out32.dtype == np.float32 and out32.shape == (64, 48)
    np.testing.assert_allclose(out32, colour.linear_rgb_to_lab(img)[..., 0], atol=1e-3)
    assert colour.luminance_lstar(np.ones(3)) == pytest.approx(100.0)


def test_lstar_to_y_inverts_lstar() -> None:
    y = np.array([0.0, 0.001, 0.05, 0.18, 1.0])
    lstar = colour.luminance_lstar(np.repeat(y[:, None], 3, axis=1))
    np.testing.assert_allclose(colour.lstar_to_y(lstar), y, atol=1e-12)


@pytest.mark.slow
def test_luminance_lstar_is_fast_on_12_megapixels() -> None:
    img = np.random.default_rng(4).random((3000, 4000, 3), dtype=np.float32)
    colour.luminance_lstar(img[:8])  # warm-up (thread pool)
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        out = colour.luminance_lstar(img)
        best = min(best, time.perf_counter() - start)
    assert out.shape == (3000, 4000) and out.dtype == np.float32
    assert best < 0.3, f"luminance_lstar took {best:.3f} s on 12 MP"


# ----------------------------------------------------------------------------- dot colour

# Linear-RGB reflectances of a few skin tones (light to dark, pinkish to yellowish).
SKINS = np.array(
    [
        [0.62, 0.45, 0.36],
        [0.55, 0.38, 0.28],
        [0.40, 0.27, 0.18],
        [0.20, 0.12, 0.07],
        [0.58, 0.46, 0.30],
    ]
)


def _lab(linear_rgb: np.ndarray) -> np.ndarray:
    return colour.linear_rgb_to_lab(linear_rgb)


def test_neutral_pigment_has_zero_blue_index_on_any_skin() -> None:
    for transmission in (0.6, 0.3, 0.1):
        dot = SKINS * transmission
        bi = colour.blue_index(_lab(dot), _lab(SKINS))
        np.testing.assert_allclose(bi, 0.0, atol=1e-9)
        # The raw dot b* is far from zero (skin is yellow): the index is not just -b*.
        assert np.all(_lab(dot)[:, 2] > 1.0)


def test_blue_pigment_has_positive_blue_index_and_brown_negative() -> None:
    # Extra attenuation of red (Tyndall-scattered look) -> bluer than neutral.
    blue_t = np.array([0.20, 0.27, 0.32])
    assert np.all(colour.blue_index(_lab(SKINS * blue_t), _lab(SKINS)) > 2.0)
    # Extra attenuation of blue (warm brown pigment) -> negative.
    brown_t = np.array([0.32, 0.26, 0.18])
    assert np.all(colour.blue_index(_lab(SKINS * brown_t), _lab(SKINS)) < -2.0)


def test_blue_index_is_unmoved_by_card_corrected_illuminant_change() -> None:
    blue_t = np.array([0.18, 0.25, 0.30])
    skin = SKINS[1]
    dot = skin * blue_t
    reference = float(colour.blue_index(_lab(dot), _lab(skin)))
    assert reference > 2.0
    for gains in (np.array([1.35, 1.0, 0.62]), np.array([0.80, 1.0, 1.45])):  # warm, cool light
        seen_skin, seen_dot = skin * gains, dot * gains
        # Uncorrected, the lighting colour would move the index ...
        raw = float(colour.blue_index(_lab(seen_dot), _lab(seen_skin)))
        assert abs(raw - reference) > 0.2
        # ... the card's correction (divide out the gains, here in float32) removes it.
        corr_skin = (seen_skin / gains).astype(np.float32)
        corr_dot = (seen_dot / gains).astype(np.float32)
        corrected = float(colour.blue_index(_lab(corr_dot), _lab(corr_skin)))
        assert corrected == pytest.approx(reference, abs=1e-3)


def test_blue_index_neutral_expectation_has_dot_lightness() -> None:
    # Same L* as the dot and same hue as skin: a neutral dot of the same darkness has
    # b*_dot = b*_n, so blue_index = b*_n - b*_dot is exactly the shift in b*.
    skin_lab = _lab(SKINS[0])
    dot_lab = _lab(SKINS[0] * 0.25)
    shifted = dot_lab - np.array([0.0, 0.0, 3.0])
    assert float(colour.blue_index(shifted, skin_lab)) == pytest.approx(3.0, abs=1e-9)


def test_blue_index_and_contrast_broadcast() -> None:
    skin_lab = _lab(SKINS[2])
    dots = _lab(SKINS[2] * np.array([[0.3], [0.5]]))
    assert colour.blue_index(dots, skin_lab).shape == (2,)
    np.testing.assert_allclose(colour.contrast_dl(dots, skin_lab), skin_lab[0] - dots[:, 0])
    assert np.all(colour.contrast_dl(dots, skin_lab) > 0)
