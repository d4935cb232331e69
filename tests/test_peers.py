"""Tests of scripts/peers.py: the peer spot detectors of the dot benchmark.

Synthetic scene: dark Gaussian dots 0.25 mm across on a light, noisy skin-coloured
background, on a jittered 1 mm grid with sub-pixel centres (the same layout in mm at
any px/mm, so a scene can be rendered at two scales).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trackpy")

from scripts import peers  # noqa: E402

SCENE_MM = 10.0


def _scene(px_per_mm: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8, true centres xy px) of the synthetic scene rendered at ``px_per_mm``."""
    rng = np.random.default_rng(seed)
    g = np.arange(0.75, SCENE_MM - 0.5, 1.0)
    centres_mm = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2) + rng.uniform(-0.2, 0.2, (len(g) ** 2, 2))
    n = int(round(SCENE_MM * px_per_mm))
    xy = centres_mm * px_per_mm  # pixel centre at integer coordinates
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    sigma = 0.25 / 2.355 * px_per_mm * 1.2  # FWHM ~0.3 mm
    dark = np.zeros((n, n))
    for x, y in xy:
        r0, r1 = max(0, int(y - 4 * sigma)), min(n, int(y + 4 * sigma) + 2)
        c0, c1 = max(0, int(x - 4 * sigma)), min(n, int(x + 4 * sigma) + 2)
        dark[r0:r1, c0:c1] += np.exp(-((xx[r0:r1, c0:c1] - x) ** 2 + (yy[r0:r1, c0:c1] - y) ** 2) / (2 * sigma**2))
    skin = np.array([205.0, 170.0, 150.0])
    rgb = skin * (1.0 - 0.65 * np.clip(dark, 0, 1))[..., None] + rng.normal(0, 4.0, (n, n, 3))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), xy


PARAMS = {
    "simpleblob": {"min_repeatability": 2, "min_circularity": 0.6, "min_diameter_mm": 0.1},
    "blob_log": {"min_radius_mm": 0.08, "max_radius_mm": 0.3, "threshold": 0.08},
    "trackpy": {"diameter_mm": 0.45, "min_mass_mm2": 0.5, "percentile": 50.0},
}


@pytest.fixture(scope="module")
def scenes():
    return {ppm: _scene(ppm) for ppm in (12.0, 24.0)}


@pytest.mark.parametrize("name", peers.PEERS)
def test_peer_finds_dark_dots(name, scenes):
    rgb, xy = scenes[12.0]
    pred = peers.DETECTORS[name](rgb, 12.0, PARAMS[name])
    assert pred.dtype == np.float64 and pred.ndim == 2 and pred.shape[1] == 2
    res = peers.evaluate(name, PARAMS[name], [(rgb, 12.0, xy)])
    assert res["f1"] >= 0.9, res
    assert res["seconds"] > 0 and res["megapixels_per_s"] > 0


@pytest.mark.parametrize("name", peers.PEERS)
def test_parameters_in_mm_scale_with_px_per_mm(name, scenes):
    """The same mm parameters find the dots when the photo is twice as sharp."""
    rgb, xy = scenes[24.0]
    assert rgb.shape[0] == 2 * scenes[12.0][0].shape[0]
    res = peers.evaluate(name, PARAMS[name], [(rgb, 24.0, xy)])
    assert res["f1"] >= 0.9, res


def test_size_conversions_follow_px_per_mm():
    p = peers._with_defaults("blob_log", {"min_radius_mm": 0.1, "max_radius_mm": 0.4})
    lo, hi = peers._log_sigmas(p, 20.0)
    assert lo == pytest.approx(2.0 / np.sqrt(2)) and hi == pytest.approx(8.0 / np.sqrt(2))
    lo2, hi2 = peers._log_sigmas(p, 40.0)
    assert lo2 == pytest.approx(2 * lo) and hi2 == pytest.approx(2 * hi)
    assert peers._trackpy_diameter(0.4, 20.0) == 9  # 8 px -> odd
    assert peers._trackpy_diameter(0.4, 40.0) == 17
    assert peers._trackpy_diameter(0.1, 10.0) == 3  # floor


def test_dark_dots_only(scenes):
    """Light spots on the same background are not dark dots."""
    rgb, xy = scenes[12.0]
    light = 255 - rgb
    assert len(peers.detect_simpleblob(light, 12.0, PARAMS["simpleblob"])) < 0.1 * len(xy)


@pytest.mark.parametrize("name", peers.PEERS)
def test_tune_returns_a_grid_point(name, scenes):
    rgb, xy = scenes[12.0]
    images = [(rgb, 12.0, xy)]
    seen = []
    params, f1 = peers.tune(name, images, log=lambda p, r: seen.append((p, r)))
    assert len(seen) == len(peers.PARAM_GRIDS[name])
    assert any(peers._with_defaults(name, g) == params for g in peers.PARAM_GRIDS[name])
    best = max(r["f1"] for _, r in seen if r is not None and np.isfinite(r["f1"]))
    assert f1 == pytest.approx(best)
    assert peers.evaluate(name, params, images)["f1"] == pytest.approx(f1)


def test_tune_picks_the_better_point_and_rejects_unknown_parameters(scenes):
    rgb, xy = scenes[12.0]
    grid = [{"threshold": 0.9}, {"threshold": 0.08, "min_radius_mm": 0.08}]
    # no time limit: on a loaded machine the wall-clock cut-off would abandon the better point
    params, f1 = peers.tune("blob_log", [(rgb, 12.0, xy)], grid=grid, max_s_per_mp=None)
    assert params["threshold"] == 0.08 and f1 >= 0.9
    with pytest.raises(ValueError, match="unknown"):
        peers.detect_blob_log(rgb, 12.0, {"thresh": 0.1})


def test_tune_abandons_slow_points_and_the_lower_thresholds_they_dominate(scenes, monkeypatch):
    rgb, xy = scenes[12.0]
    calls = []
    detect = peers.DETECTORS["blob_log"]
    monkeypatch.setitem(peers.DETECTORS, "blob_log", lambda *a: calls.append(a[2]) or detect(*a))
    grid = [{"threshold": 0.1}, {"threshold": 0.05}]
    seen = []
    with pytest.raises(RuntimeError, match="no grid point"):
        peers.tune("blob_log", [(rgb, 12.0, xy)], grid=grid, max_s_per_mp=0.0, log=lambda p, r: seen.append((p, r)))
    assert [r for _, r in seen] == [None, None]
    assert calls == [{"threshold": 0.1}]  # the lower threshold was skipped without running


def test_split_never_overlaps():
    items = list(range(8))
    tune_items, test_items = peers.split_tune_test(items)
    assert tune_items == [0, 1, 2, 3] and test_items == [4, 5, 6, 7]
    with pytest.raises(ValueError):
        peers.split_tune_test(items[:4])
