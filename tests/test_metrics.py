"""Tests of data.metrics: ROI, scale, show-through, dot pattern, per-photo metrics."""

from __future__ import annotations

import json
import math
import time

import cv2
import numpy as np
import pytest
from skimage.draw import polygon2mask

from data import metrics as m
from data.metrics import PlaneScale

SKIN_L = 65.0
DOT_L = 25.0


def _disc_image(
    shape: tuple[int, int], centres_xy: np.ndarray, radius_px: float, inside: float, outside: float
) -> np.ndarray:
    """L* image: discs of value ``inside`` (radius in px) on a background ``outside``."""
    img = np.full(shape, outside, dtype=np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for x, y in centres_xy:
        img[(xx - x) ** 2 + (yy - y) ** 2 <= radius_px**2] = inside
    return img


def _square_lattice(n: int, spacing: float, offset: float) -> np.ndarray:
    g = offset + spacing * np.arange(n)
    xs, ys = np.meshgrid(g, g)
    return np.column_stack([xs.ravel(), ys.ravel()])


# ----------------------------------------------------------------------------- ROI


def test_roi_mask_and_scalp_fraction_on_hand_made_labels() -> None:
    labels = np.zeros((10, 10), dtype=np.uint8)
    labels[:, 4:7] = m.SCALP  # 30 px
    labels[:, 7:] = m.HAIR  # 30 px
    labels[0, 5] = m.BACKGROUND  # 29 scalp px
    roi = m.roi_mask(labels)
    assert roi.sum() == 59 and not roi[:, :4].any()
    lstar = np.full((10, 10), SKIN_L)
    pm = m.photo_metrics(labels, np.zeros((0, 2)), None, _no_flags(0), lstar, SKIN_L, None, 3.0)
    assert pm.scalp_fraction == pytest.approx(29 / 59)


def test_roi_mask_polygon_intersection() -> None:
    labels = np.ones((20, 20), dtype=np.uint8)
    labels[:, :5] = m.BACKGROUND
    square = np.array([[0.0, 0.0], [9.0, 0.0], [9.0, 9.0], [0.0, 9.0]])
    roi = m.roi_mask(labels, square)
    expected = np.zeros((20, 20), dtype=bool)
    expected[0:10, 5:10] = True
    np.testing.assert_array_equal(roi, expected)


def test_empty_roi_gives_none_fractions() -> None:
    labels = np.zeros((8, 8), dtype=np.uint8)
    lstar = np.zeros((8, 8))
    scale = PlaneScale.uniform(10)
    pm = m.photo_metrics(labels, np.zeros((0, 2)), None, _no_flags(0), lstar, SKIN_L, scale, 3.0)
    assert pm.scalp_fraction is None and pm.show_through is None and pm.dot_count == 0


# ----------------------------------------------------------------------------- scale


def _perspective_case() -> tuple[np.ndarray, np.ndarray, tuple[int, int], np.ndarray]:
    """A 40 x 30 mm plane rectangle seen in perspective: (H image->plane, image quad, shape, rect)."""
    rect_mm = np.array([[0, 0], [40, 0], [40, 30], [0, 30]], dtype=np.float32)
    quad_px = np.array([[60, 40], [520, 70], [500, 400], [90, 350]], dtype=np.float32)
    h = cv2.getPerspectiveTransform(quad_px, rect_mm)
    return h, quad_px.astype(np.float64), (460, 600), rect_mm.astype(np.float64)


def test_uniform_scale() -> None:
    s = PlaneScale.uniform(12.5)
    assert s.is_uniform and s.nominal_px_per_mm == 12.5
    assert s.pixel_area_mm2((5, 5)) == pytest.approx(1 / 156.25)
    np.testing.assert_allclose(s.to_plane_mm([[25.0, 50.0]]), [[2.0, 4.0]])


def test_plane_scale_is_frozen_and_validated() -> None:
    h, *_ = _perspective_case()
    s = PlaneScale.from_homography(h, 11.0)
    assert hash(s) == hash(PlaneScale.from_homography(h, 11.0))
    with pytest.raises(AttributeError):
        s.px_per_mm = 3.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        PlaneScale.uniform(0.0)
    with pytest.raises(ValueError):
        PlaneScale.from_homography(np.zeros((3, 3)), 10.0)


def test_homography_maps_corners_and_jacobian_is_exact() -> None:
    h, quad, shape, rect = _perspective_case()
    s = PlaneScale.from_homography(h, 11.0)
    np.testing.assert_allclose(s.to_plane_mm(quad), rect, atol=1e-6)
    area = s.pixel_area_mm2(shape)
    assert isinstance(area, np.ndarray) and area.shape == shape and area.dtype == np.float32
    # Numerical |det J| by central differences at a few pixels.
    for x, y in [(100, 80), (300, 200), (480, 380)]:
        e = 1e-3
        dx = (s.to_plane_mm([[x + e, y]]) - s.to_plane_mm([[x - e, y]]))[0] / (2 * e)
        dy = (s.to_plane_mm([[x, y + e]]) - s.to_plane_mm([[x, y - e]]))[0] / (2 * e)
        assert area[y, x] == pytest.approx(abs(dx[0] * dy[1] - dx[1] * dy[0]), rel=1e-5)


def test_homography_pixel_areas_sum_to_plane_area() -> None:
    h, quad, shape, _ = _perspective_case()
    s = PlaneScale.from_homography(h, 11.0)
    roi = polygon2mask(shape, quad[:, ::-1])  # pixels whose centre is inside the quad
    area, perimeter = m.roi_geometry(roi, s)
    assert area == pytest.approx(40 * 30, rel=0.005)
    assert perimeter == pytest.approx(2 * (40 + 30), rel=0.02)


def test_roi_geometry_uniform_circle_and_hole() -> None:
    yy, xx = np.mgrid[:500, :500]
    r2 = (xx - 250) ** 2 + (yy - 250) ** 2
    disc = r2 <= 200**2
    ring = disc & (r2 > 80**2)
    s = PlaneScale.uniform(10.0)
    area, perimeter = m.roi_geometry(disc, s)
    assert area == pytest.approx(math.pi * 20**2, rel=0.005)
    assert perimeter == pytest.approx(2 * math.pi * 20, rel=0.01)
    area, perimeter = m.roi_geometry(ring, s)
    assert area == pytest.approx(math.pi * (20**2 - 8**2), rel=0.01)
    assert perimeter == pytest.approx(2 * math.pi * (20 + 8), rel=0.02)  # outline + hole


# ----------------------------------------------------------------------------- show-through


def test_show_through_is_one_on_bare_skin() -> None:
    lstar = np.full((200, 300), SKIN_L, dtype=np.float32)
    roi = np.ones_like(lstar, dtype=bool)
    assert m.show_through(lstar, SKIN_L, roi, 20.0, dl_threshold=3.0) == 1.0
    # Brighter than the reference also counts as show-through.
    assert m.show_through(lstar + 10, SKIN_L, roi, 20.0, dl_threshold=3.0) == 1.0
    # An array reference works like the scalar.
    ref = np.full_like(lstar, SKIN_L)
    assert m.show_through(lstar, ref, roi, 20.0, dl_threshold=3.0) == 1.0


@pytest.mark.parametrize("px_per_mm", [8.0, 20.0])  # sigma 4 px (direct) and 10 px (downsampled)
def test_show_through_drops_where_dark_dots_cover_skin(px_per_mm: float) -> None:
    side = int(20 * px_per_mm)  # 20 x 20 mm
    spacing = px_per_mm  # 1 mm
    radius = 0.3 * px_per_mm  # 0.6 mm dots: a dense, dark coverage
    all_dots = _square_lattice(20, spacing, spacing / 2)
    roi = np.ones((side, side), dtype=bool)
    covered = _disc_image((side, side), all_dots, radius, DOT_L, SKIN_L)
    assert m.show_through(covered, SKIN_L, roi, px_per_mm, dl_threshold=3.0) < 0.02
    left = all_dots[all_dots[:, 0] < side / 2]
    half = _disc_image((side, side), left, radius, DOT_L, SKIN_L)
    assert m.show_through(half, SKIN_L, roi, px_per_mm, dl_threshold=3.0) == pytest.approx(0.5, abs=0.05)


def test_normalised_blur_ignores_dark_region_outside_roi() -> None:
    lstar = np.full((200, 300), SKIN_L, dtype=np.float32)
    lstar[:, :100] = 0.0  # e.g. a black card square, not ROI
    roi = np.zeros_like(lstar, dtype=bool)
    roi[:, 100:] = True
    for px_per_mm in (8.0, 40.0):  # direct and downsampled paths
        view = m.viewing_lstar(lstar, roi, 0.5 * px_per_mm)
        np.testing.assert_allclose(view[roi], SKIN_L, atol=1e-3)
        assert np.isnan(view[~roi]).all()
        assert m.show_through(lstar, SKIN_L, roi, px_per_mm, dl_threshold=1.0) == 1.0
    # A plain (unnormalised) blur would have darkened the ROI's edge.
    naive = cv2.GaussianBlur(lstar, (0, 0), 10.0)
    assert naive[100, 100] < SKIN_L - 10


def test_viewing_lstar_downsampled_path_matches_direct() -> None:
    rng = np.random.default_rng(7)
    lstar = (SKIN_L + rng.normal(0, 4, (300, 340))).astype(np.float32)
    lstar[::9, ::9] = DOT_L
    roi = np.ones_like(lstar, dtype=bool)
    roi[:, :60] = False
    for sigma in (8.0, 15.0):
        direct = m.viewing_lstar(lstar, roi, sigma, direct_max_sigma_px=1e9)
        fast = m.viewing_lstar(lstar, roi, sigma)
        assert np.nanmax(np.abs(direct - fast)) < 0.3


@pytest.mark.slow
def test_show_through_runs_on_12_megapixels_in_about_a_second() -> None:
    rng = np.random.default_rng(8)
    lstar = (SKIN_L + rng.normal(0, 3, (3000, 4000))).astype(np.float32)
    roi = np.ones(lstar.shape, dtype=bool)
    roi[:, :600] = False
    for px_per_mm in (4.0, 12.0, 40.0):  # global, direct and downsampled closeup paths
        start = time.perf_counter()
        value = m.show_through(lstar, SKIN_L, roi, px_per_mm, dl_threshold=3.0)
        assert time.perf_counter() - start < 1.5
        assert value == pytest.approx(1.0)


def test_skin_reference_nan_pixels_are_left_out() -> None:
    lstar = np.full((50, 50), SKIN_L, dtype=np.float32)
    lstar[:, :25] = DOT_L
    ref = np.full_like(lstar, SKIN_L)
    ref[:, :25] = np.nan
    roi = np.ones_like(lstar, dtype=bool)
    assert m.show_through(lstar, ref, roi, 0.0, dl_threshold=3.0) == 1.0


# ----------------------------------------------------------------------------- dot pattern


def test_square_lattice_pattern() -> None:
    n = 30
    dots = _square_lattice(n, 1.0, 0.5)  # each dot owns a 1 x 1 mm cell of a 30 x 30 mm ROI
    area, perimeter = n * n, 4.0 * n
    pm = m.dot_pattern_metrics(dots, area, perimeter)
    assert pm.dot_count == n * n
    assert pm.dot_density_per_cm2 == pytest.approx(100.0)
    assert pm.nn_distance_mm_median == pytest.approx(1.0)
    assert pm.spacing_cv == pytest.approx(0.0, abs=1e-12)
    # Square lattice: R = 1 / (0.5 / sqrt(density)) = 2.0 before edge correction;
    # Donnelly's correction lowers it by the perimeter term.
    expected_re = 0.5 * math.sqrt(area / n**2) + (0.0514 + 0.041 / n) * perimeter / n**2
    assert pm.clark_evans_r == pytest.approx(1.0 / expected_re, rel=1e-9)
    assert pm.clark_evans_r == pytest.approx(2.0, abs=0.05)


def test_hexagonal_lattice_clark_evans_near_its_maximum() -> None:
    cols, rows, a = 60, 70, 1.0
    dy = a * math.sqrt(3) / 2
    pts = [((i + 0.5 * (j % 2) + 0.25) * a, (j + 0.5) * dy) for j in range(rows) for i in range(cols)]
    area, perimeter = cols * a * rows * dy, 2 * (cols * a + rows * dy)
    pm = m.dot_pattern_metrics(np.array(pts), area, perimeter)
    assert pm.clark_evans_r == pytest.approx(2.1491, abs=0.03)
    assert pm.spacing_cv == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_points_clark_evans_near_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    w, h = 50.0, 40.0
    pts = rng.uniform([0.0, 0.0], [w, h], size=(2000, 2))
    pm = m.dot_pattern_metrics(pts, w * h, 2 * (w + h))
    assert pm.clark_evans_r == pytest.approx(1.0, abs=0.1)
    assert pm.dot_density_per_cm2 == pytest.approx(100.0)


def test_clustered_points_clark_evans_below_one() -> None:
    rng = np.random.default_rng(5)
    parents = rng.uniform(0, 50, size=(40, 2))
    pts = (parents[:, None, :] + rng.normal(0, 0.4, size=(40, 25, 2))).reshape(-1, 2)
    assert m.dot_pattern_metrics(pts, 2500.0, 200.0).clark_evans_r < 0.6


def test_pattern_undefined_for_fewer_than_two_dots() -> None:
    one = m.dot_pattern_metrics(np.array([[1.0, 1.0]]), 100.0, 40.0)
    assert one.dot_count == 1 and one.dot_density_per_cm2 == pytest.approx(1.0)
    assert one.nn_distance_mm_median is None and one.spacing_cv is None and one.clark_evans_r is None
    none = m.dot_pattern_metrics(np.zeros((0, 2)), None, None)
    assert none.to_dict() == {
        "dot_count": 0,
        "dot_density_per_cm2": None,
        "nn_distance_mm_median": None,
        "spacing_cv": None,
        "clark_evans_r": None,
    }


# ----------------------------------------------------------------------------- one photo


def _no_flags(n: int) -> dict[str, np.ndarray]:
    return {name: np.zeros(n, dtype=bool) for name in m.FLAG_NAMES}


def _lattice_photo(px_per_mm: float = 10.0, n: int = 20):
    side = int(n * px_per_mm)
    labels = np.full((side, side), m.SCALP, dtype=np.uint8)
    dots = _square_lattice(n, px_per_mm, px_per_mm / 2 - 0.5)  # cell centres in px
    lstar = _disc_image((side, side), dots, 0.1 * px_per_mm, DOT_L, SKIN_L)
    return labels, dots, lstar


def test_photo_metrics_on_a_lattice() -> None:
    labels, dots, lstar = _lattice_photo()
    n = len(dots)
    diam = np.full(n, 0.2)
    pm = m.photo_metrics(labels, dots, diam, _no_flags(n), lstar, SKIN_L, PlaneScale.uniform(10.0), 3.0)
    assert pm.dot_count == n
    assert pm.scalp_fraction == 1.0
    # 400 px x 400 px ROI at 10 px/mm = 4 cm^2 exactly.
    assert pm.dot_density_per_cm2 == pytest.approx(100.0)
    assert pm.nn_distance_mm_median == pytest.approx(1.0)
    assert pm.spacing_cv == pytest.approx(0.0, abs=1e-12)
    assert pm.clark_evans_r == pytest.approx(2.0, abs=0.1)
    assert pm.dot_diameter_mm_median == pytest.approx(0.2)
    # Small sparse dots barely darken the skin at viewing scale.
    assert pm.show_through == pytest.approx(1.0)
    assert pm.blue_shift_fraction == 0.0
    d = pm.to_dict()
    assert list(d) == [
        "scalp_fraction",
        "show_through",
        "dot_count",
        "dot_density_per_cm2",
        "dot_diameter_mm_median",
        "nn_distance_mm_median",
        "spacing_cv",
        "clark_evans_r",
        "blue_shift_fraction",
        "faded_fraction",
        "spread_fraction",
        "dots_not_measurable",
    ]
    assert json.loads(json.dumps(d)) == d
    assert all(v is None or type(v) in (float, int) for v in d.values())


def test_dots_outside_roi_are_not_counted_and_flag_fractions() -> None:
    labels = np.zeros((100, 100), dtype=np.uint8)
    labels[:, 50:] = m.SCALP
    labels[:50, 80:] = m.HAIR
    dots = np.array(
        [
            [60.0, 10.0],  # scalp
            [70.0, 70.0],  # scalp
            [90.0, 10.0],  # hair: in ROI
            [60.4, 90.2],  # scalp (rounds to pixel [90, 60])
            [49.6, 20.0],  # rounds to column 50: scalp
            [49.4, 20.0],  # rounds to column 49: background
            [10.0, 10.0],  # background
            [150.0, 10.0],  # outside the image
            [np.nan, 5.0],  # not a position
        ]
    )
    flags = {
        "blue_shift": np.array([1, 0, 0, 0, 0, 1, 1, 1, 1], dtype=bool),
        "faded": np.array([1, 1, 0, 0, 0, 0, 1, 0, 0], dtype=bool),
        "spread": np.array([1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=bool),
    }
    counted = m.dots_in_roi(dots, m.roi_mask(labels))
    np.testing.assert_array_equal(counted, [1, 1, 1, 1, 1, 0, 0, 0, 0])
    diam = np.array([0.1, 0.2, np.nan, 0.3, 0.4, 5.0, 5.0, 5.0, 5.0])
    lstar = np.full((100, 100), SKIN_L)
    pm = m.photo_metrics(labels, dots, diam, flags, lstar, SKIN_L, PlaneScale.uniform(10.0), 3.0)
    assert pm.dot_count == 5
    assert pm.blue_shift_fraction == pytest.approx(1 / 5)
    assert pm.faded_fraction == pytest.approx(2 / 5)
    assert pm.spread_fraction == pytest.approx(1.0)
    assert pm.dot_diameter_mm_median == pytest.approx(0.25)  # NaN ignored, outside dots ignored
    # A polygon can exclude dots that are on scalp.
    poly = np.array([[50.0, 0.0], [99.0, 0.0], [99.0, 49.0], [50.0, 49.0]])
    pm = m.photo_metrics(labels, dots, diam, flags, lstar, SKIN_L, PlaneScale.uniform(10.0), 3.0, poly)
    assert pm.dot_count == 3


def test_photo_metrics_without_scale() -> None:
    labels, dots, lstar = _lattice_photo()
    n = len(dots)
    pm = m.photo_metrics(labels, dots, None, _no_flags(n), lstar, SKIN_L, None, 3.0)
    assert pm.dot_count == n
    assert pm.dot_density_per_cm2 is None and pm.nn_distance_mm_median is None
    assert pm.dot_diameter_mm_median is None
    assert pm.show_through is None  # no scale and no explicit sigma: not guessed
    # Dimensionless pattern measures are still defined (computed in pixels).
    assert pm.spacing_cv == pytest.approx(0.0, abs=1e-12)
    assert pm.clark_evans_r == pytest.approx(2.0, abs=0.1)
    pm = m.photo_metrics(labels, dots, None, _no_flags(n), lstar, SKIN_L, None, 3.0, unscaled_sigma_px=5.0)
    assert pm.show_through == pytest.approx(1.0)


def test_photo_metrics_rejects_bad_flags() -> None:
    labels, dots, lstar = _lattice_photo()
    with pytest.raises(ValueError, match="spread"):
        m.photo_metrics(labels, dots, None, {"blue_shift": [], "faded": []}, lstar, SKIN_L, None, 3.0)
    bad = _no_flags(len(dots))
    bad["faded"] = np.zeros(3, dtype=bool)
    with pytest.raises(ValueError, match="faded"):
        m.photo_metrics(labels, dots, None, bad, lstar, SKIN_L, None, 3.0)


@pytest.mark.parametrize("sigma_px", [7.5, 20.0, 33.0])
def test_viewing_lstar_in_row_bands_is_the_whole_frame_bit_for_bit(sigma_px: float) -> None:
    # a large photo's viewing L* is formed a band of rows at a time (memory); the bands, with a block
    # size that does not divide the band, must be exactly the rows of the one-band computation
    rng = np.random.default_rng(3)
    lstar = rng.normal(50.0, 8.0, (301, 257)).astype(np.float32)
    roi = rng.random(lstar.shape) > 0.2
    roi[:90, :60] = False
    one = dict(m._viewing_bands(lstar, roi, sigma_px, m.DIRECT_MAX_SIGMA_PX, band_rows=10_000))
    banded = list(m._viewing_bands(lstar, roi, sigma_px, m.DIRECT_MAX_SIGMA_PX, band_rows=37))
    assert len(banded) == -(-301 // 37)
    np.testing.assert_array_equal(np.vstack([b for _, b in banded]), one[0])
    ref = lstar + rng.normal(0.0, 3.0, lstar.shape).astype(np.float32)
    direct = np.count_nonzero((one[0] >= ref - np.float32(2.0)) & roi) / np.count_nonzero(roi)
    assert m.show_through(lstar, ref, roi, 1.0, dl_threshold=2.0, sigma_mm=sigma_px) == direct


def test_open_skin_leaves_out_skin_beside_hair_and_dots():
    from pipeline.one_photo.dots import open_skin

    scalp = np.ones((20, 20), bool)
    hair = np.zeros((20, 20), bool)
    hair[:, 10] = True
    scalp[:, 10] = False
    occupied = np.zeros((20, 20), bool)
    occupied[2:4, 2:4] = True
    got = open_skin(scalp, hair, occupied, 2.0)
    assert not got[:, 8:13].any()  # two pixels either side of the strand
    assert got[:, :8].sum() == 20 * 8 - 4 and got[:, 13:].all()
    assert not got[2:4, 2:4].any()
    # a margin under a pixel still leaves out the pixels touching the strand
    assert not open_skin(scalp, hair, occupied, 0.2)[:, 9].any()
    assert (open_skin(scalp, np.zeros_like(hair), occupied, 2.0) == (scalp & ~occupied)).all()
