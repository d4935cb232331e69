"""Global-view generator: content, truth consistency, determinism (small, fast images)."""

import json

import cv2
import numpy as np
import pytest

from data.card import load_card
from data.config import load_settings
from data.flags import load_flag_settings
from data.synth.camera import draw_camera
from data.synth.generate import generate_images
from data.synth.global_view import VIEW_KINDS, single_global
from data.synth.scene import DOT_COLUMNS, scene_metrics
from data.synth.settings import SynthSettings

W, H = 320, 240
SMALL = [f"image.width={W}", f"image.height={H}", "camera.px_per_mm=[1.0, 1.3]"]


@pytest.fixture(scope="module")
def cfg():
    return load_settings(SynthSettings, None, SMALL, default="synth/global.yaml")


@pytest.fixture(scope="module")
def card():
    return load_card()


@pytest.fixture(scope="module")
def rules():
    return load_flag_settings()


def _with(cfg, **sections):
    """A copy of ``cfg`` with some sections' fields replaced."""
    return cfg.model_copy(update={k: getattr(cfg, k).model_copy(update=v) for k, v in sections.items()})


def _render(cfg, card, rules, seed):
    return single_global(np.random.default_rng(seed), cfg, card, rules, draw_camera)


@pytest.fixture(scope="module")
def thinning(cfg):
    """Thinning scalp with medium hair seen from above: scalp, hair and background all show."""
    return _with(
        cfg,
        global_view={"views": ["top", "crown"]},
        hair={
            "patterns": ["crown", "diffuse"],
            "follicle_density_per_cm2": (150.0, 200.0),
            "thinning_strength": (0.8, 1.0),
            "long_fraction": (0.3, 0.6),
            "long_length_mm": (15.0, 30.0),
            "colours": ["black", "brown"],
        },
        dots={"coverage": (0.8, 1.0)},
        card={"probability": 1.0},
    )


@pytest.fixture(scope="module")
def scenes(thinning, card, rules):
    return [_render(thinning, card, rules, seed) for seed in (1, 2, 3)]


def test_global_config_is_valid():
    full = load_settings(SynthSettings, None, (), default="synth/global.yaml")
    assert full.view == "global" and (full.image.width, full.image.height) == (1024, 768)
    lo, hi = full.camera.px_per_mm
    assert 1.0 <= lo <= hi <= 6.0
    assert set(full.global_view.views) == set(VIEW_KINDS)


@pytest.mark.parametrize("kind", VIEW_KINDS)
def test_every_view_kind_renders(cfg, card, rules, kind):
    s = _render(_with(cfg, global_view={"views": [kind]}), card, rules, seed=5)
    assert s.view == "global" and s.params["view_kind"] == kind
    assert s.photo.shape == (H, W, 3) and s.photo.dtype == np.uint8
    assert s.mask.shape == (H, W) and s.mask.dtype == np.uint8
    assert set(np.unique(s.mask)) <= {0, 1, 2}
    assert (s.mask == 0).any() and (s.mask > 0).any()  # a head in front of a background
    assert s.clean_lstar.shape == s.skin_lstar.shape == (H, W)
    for lstar in (s.clean_lstar, s.skin_lstar):
        assert np.isfinite(lstar).all() and lstar.min() >= 0 and lstar.max() <= 100.5
    assert 1.0 <= s.px_per_mm <= 1.3
    assert s.photo.std() > 5  # not a flat image


def test_mask_has_all_three_classes(scenes):
    for s in scenes:
        counts = np.bincount(s.mask.ravel(), minlength=3)
        assert (counts > 0).all(), counts


def test_same_seed_is_identical_and_seeds_differ(thinning, card, rules, scenes):
    again = _render(thinning, card, rules, 1)
    first = scenes[0]
    assert again.photo.tobytes() == first.photo.tobytes()
    assert np.array_equal(again.mask, first.mask)
    assert again.dots.equals(first.dots)
    assert np.array_equal(again.clean_lstar, first.clean_lstar)
    assert json.dumps(again.params, default=str) == json.dumps(first.params, default=str)
    assert first.photo.tobytes() != scenes[1].photo.tobytes()
    assert not np.array_equal(first.mask, scenes[1].mask)


def test_dots_truth(scenes):
    assert sum(len(s.dots) for s in scenes) > 50  # treated thinning scalp has dots
    for s in scenes:
        d = s.dots
        assert set(DOT_COLUMNS) <= set(d.columns)
        assert d.dot_id.is_unique
        if not len(d):
            continue
        assert ((d.x >= 0) & (d.x <= W - 1) & (d.y >= 0) & (d.y <= H - 1)).all()
        assert d.diameter_mm.between(0.05, 1.5).all()
        num = d[["L", "a", "b", "skin_L", "contrast_dL", "dE00", "blue_index"]].to_numpy(float)
        assert np.isfinite(num).all()
        assert (d.contrast_dL > 0).all()
        # dots lie on visible scalp (rounding at the hairline may put a few on its edge)
        cls = s.mask[np.round(d.y).astype(int), np.round(d.x).astype(int)]
        assert (cls > 0).mean() > 0.95


def test_metrics_are_finite(scenes, rules):
    for s in scenes:
        m = scene_metrics(s, rules)
        assert 0.0 <= m["scalp_fraction"] <= 1.0
        assert m["show_through"] is not None and 0.0 <= m["show_through"] <= 1.0
        assert m["dot_count"] >= 0
        if m["dot_count"] >= 2:
            for key in ("dot_density_per_cm2", "dot_diameter_mm_median", "nn_distance_mm_median"):
                assert m[key] is not None and np.isfinite(m[key]) and m[key] > 0
            # flag fractions over dots large enough to measure; a whole-head view may have none (None)
            for key in ("blue_shift_fraction", "faded_fraction", "spread_fraction"):
                assert m[key] is None or 0.0 <= m[key] <= 1.0
            assert (m["dots_not_measurable"] == m["dot_count"]) == (m["faded_fraction"] is None)


def test_plane_to_image_is_nominal_similarity(scenes):
    for s in scenes:
        hm = s.plane_to_image
        assert hm[2].tolist() == [0.0, 0.0, 1.0]
        assert np.allclose(hm[:2, :2], s.px_per_mm * np.eye(2))


def test_card_truth(scenes):
    placed = [s for s in scenes if s.card["present"]]
    assert placed, "card probability 1 should place a card in at least one scene"
    for s in placed:
        corners = np.asarray(s.card["marker_corners_px"])
        assert corners.shape == (4, 2)
        assert ((corners >= 0) & (corners <= [W - 1, H - 1])).all()
        assert s.card["placement"] in ("scalp", "beside")
        cx, cy = np.round(corners.mean(axis=0)).astype(int)
        assert s.mask[cy, cx] == 0  # the card is background
        # the marker is black ink on white paper: the photo shows both
        (x0, y0), (x1, y1) = np.floor(corners.min(0)).astype(int), np.ceil(corners.max(0)).astype(int)
        lum = s.photo[y0 : y1 + 1, x0 : x1 + 1].astype(float).mean(axis=-1)
        assert lum.max() - lum.min() > 30


def test_written_like_closeups(cfg, tmp_path):
    items = list(generate_images(tmp_path, 2, cfg, load_card(), load_flag_settings(), seed=3))
    assert len(items) == 2
    for it in items:
        truth = json.loads((it.folder / "truth.json").read_text())
        assert truth["view"] == "global" and 1.0 <= truth["px_per_mm"] <= 1.3
        mask = cv2.imread(str(it.folder / "mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (H, W) and set(np.unique(mask)) <= {0, 1, 2}
        assert truth["metrics"]["scalp_fraction"] is not None
