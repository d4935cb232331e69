"""Dot-stage building blocks: disc rasterising, colour sampling at points, corrected L*."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data.colour import luminance_lstar
from pipeline.one_photo.calibration import ColourCorrection
from pipeline.one_photo.dots import footprint_mask, sample_points
from pipeline.one_photo.pigment import sample_corrected
from pipeline.runtime import reuse_freed_memory


def test_footprint_mask_matches_brute_force() -> None:
    rng = np.random.default_rng(5)
    shape = (60, 80)
    xy = np.column_stack([rng.uniform(-3, 83, 40), rng.uniform(-3, 63, 40)])
    radius = rng.uniform(0.2, 6.5, 40)
    got = footprint_mask(shape, xy, radius)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    r = np.maximum(radius, 0.5)
    want = ((xx[..., None] - xy[:, 0]) ** 2 + (yy[..., None] - xy[:, 1]) ** 2 <= r**2).any(axis=2)
    assert got.dtype == bool and got.shape == shape
    np.testing.assert_array_equal(got, want)
    assert not footprint_mask(shape, np.zeros((0, 2)), 3.0).any()


@pytest.mark.parametrize("model", ["identity", "matrix3x3", "root_polynomial2"])
def test_colour_at_points_equals_sampling_the_corrected_photo(model: str) -> None:
    rng = np.random.default_rng(11)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), (0, 0), 1.5)
    k = {"identity": 3, "matrix3x3": 3, "root_polynomial2": 6}[model]
    coef = np.eye(3, k) * 1.1 + rng.normal(0, 0.05, (3, k))
    colour = ColourCorrection(model=model, coefficients=coef, source="card")
    x, y = rng.uniform(-2, 72, (30, 7)), rng.uniform(-2, 52, (30, 7))
    got = sample_corrected(rgb, colour, x, y)
    want = sample_points(colour.apply(rgb).astype(np.float32), x, y)
    assert got.shape == (30, 7, 3)
    # cv2.remap weights are 1/32 steps: agree to that rounding
    np.testing.assert_allclose(got, want, atol=0.01)


@pytest.mark.parametrize("model", ["identity", "diagonal", "matrix3x3", "root_polynomial2"])
def test_corrected_lstar_fast_path(model: str) -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(20, 236, (40, 60, 3), dtype=np.uint8)
    k = 6 if model == "root_polynomial2" else 3
    coef = {"identity": np.eye(3), "diagonal": np.diag([1.2, 0.9, 1.05])}.get(
        model, np.eye(3, k) * 0.95 + np.abs(rng.normal(0, 0.03, (3, k)))
    )
    colour = ColourCorrection(model=model, coefficients=coef, source="card")
    got = colour.lstar(rgb)
    want = luminance_lstar(np.maximum(colour.apply(rgb), np.float32(0)))
    assert got.dtype == np.float32 and got.shape == rgb.shape[:2]
    np.testing.assert_allclose(got, want, atol=2e-3)
    with pytest.raises(ValueError, match="uint8"):
        colour.lstar(rgb.astype(np.float32))


def test_reuse_freed_memory_is_idempotent() -> None:
    assert reuse_freed_memory() == reuse_freed_memory()


def test_skin_reference_ignores_dark_spots_the_detector_missed() -> None:
    from pipeline.one_photo.dots import skin_reference

    rng = np.random.default_rng(8)
    h, w, ppm = 300, 400, 20.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    skin = 55.0 + 6.0 * xx / w  # lighting gradient
    lstar = (skin + rng.normal(0, 1.5, (h, w))).astype(np.float32)
    centres = np.column_stack([rng.uniform(0, w, 600), rng.uniform(0, h, 600)])
    spots = footprint_mask((h, w), centres, 2.5)  # missed dots: ~20 L* darker
    lstar[spots] -= 20.0
    bare = np.ones((h, w), bool)
    inner = (slice(30, -30), slice(30, -30))
    plain = skin_reference(lstar, bare, ppm, 1.0, iterations=0)
    robust = skin_reference(lstar, bare, ppm, 1.0)
    assert np.median(np.abs(plain - skin)[inner]) > 1.5  # pulled down by the spots
    assert np.median(np.abs(robust - skin)[inner]) < 0.3
    # pure noise: the one-sided cut barely moves the reference
    clean = (skin + rng.normal(0, 1.5, (h, w))).astype(np.float32)
    assert abs(float(np.median((skin_reference(clean, bare, ppm, 1.0) - skin)[inner]))) < 0.15


def test_valid_median_equals_nanmedian_of_the_valid_samples():
    from pipeline.one_photo.pigment import _valid_median

    rng = np.random.default_rng(1)
    for trial in range(10):
        values = rng.normal(size=(300, 32, 3)).astype(np.float32)
        if trial % 2:
            values = np.round(values, 1)  # ties
        valid = rng.random((300, 32)) < rng.random((300, 1))
        count = valid.sum(axis=1)
        expected = np.full((300, 3), np.nan)
        has = count >= 3
        expected[has] = np.nanmedian(np.where(valid[..., None], values, np.nan)[has], axis=1)
        np.testing.assert_allclose(_valid_median(values, valid, count, 3), expected, rtol=1e-6, atol=1e-7)
    assert _valid_median(np.zeros((0, 32, 3)), np.zeros((0, 32), bool), np.zeros(0, int), 3).shape == (0, 3)
