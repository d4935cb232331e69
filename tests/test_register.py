"""Registration of two photos and dot linking (pipeline/two_photos/register.py)."""

import json

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from data.card import load_card
from data.config import load_settings
from data.flags import load_flag_settings
from data.geometry import apply_homography
from data.synth.camera import draw_camera
from data.synth.closeup import single_closeup
from data.synth.generate import item_rng
from data.synth.series import render_series
from data.synth.settings import SynthSettings
from pipeline.two_photos.dot_pattern import match_dot_patterns, refine_on_dots
from pipeline.two_photos.link import gated_assignment, link_dots
from pipeline.two_photos.register import register_photos
from pipeline.two_photos.settings import LinkSettings, RegisterSettings, RegistrationError, load_register_settings

# a small client series: baseline (no dots), session 1, session 2 (adds dots between the first ones)
SERIES = [
    "image.width=600",
    "image.height=450",
    "camera.px_per_mm=[12, 15]",
    "series.sessions=[2, 2]",
    "series.followups=[0, 0]",
    "series.touchup_probability=0",
    "dots.coverage=[1, 1]",
    "card.probability=0",
]


@pytest.fixture(scope="module")
def series():
    cfg = load_settings(SynthSettings, None, SERIES, default="synth/closeup.yaml")
    scenes, _ = render_series(item_rng(41, 0), cfg, load_card(), load_flag_settings())
    return [scene for _, scene in scenes]


def _true_after_to_before(before, after):
    return before.plane_to_image @ np.linalg.inv(after.plane_to_image)


def _max_error_over_overlap(h_est, h_true, before_size, after_size, step=25):
    """Largest distance (BEFORE px) between the two AFTER -> BEFORE maps over the area both photos show."""
    w, h = before_size
    gx, gy = np.meshgrid(np.arange(0, w, step, dtype=float), np.arange(0, h, step, dtype=float))
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    in_after = apply_homography(np.linalg.inv(h_true), pts)
    inside = (
        (in_after[:, 0] >= 0)
        & (in_after[:, 0] <= after_size[0] - 1)
        & (in_after[:, 1] >= 0)
        & (in_after[:, 1] <= after_size[1] - 1)
    )
    assert inside.sum() > 50
    a = in_after[inside]
    return float(np.max(np.linalg.norm(apply_homography(h_est, a) - apply_homography(h_true, a), axis=1)))


def test_defaults_file_matches_the_settings_class():
    assert load_register_settings() == RegisterSettings()
    assert load_register_settings(None, ["link.gate=0.3"]).link.gate == 0.3


# --------------------------------------------------------------------------- series (new pose and light each visit)


def test_series_visits_register_on_the_dot_pattern(series):
    before, after = series[1], series[2]
    reg = register_photos(
        before.photo,
        after.photo,
        RegisterSettings(),
        before_dots_xy=before.dots[["x", "y"]].to_numpy(),
        after_dots_xy=after.dots[["x", "y"]].to_numpy(),
        px_per_mm=before.px_per_mm,
    )
    assert reg.method == "features+dots" and reg.dot_pairs > 300
    err = _max_error_over_overlap(
        reg.after_to_before, _true_after_to_before(before, after), reg.before_size, reg.after_size
    )
    assert err < 0.2
    doc = json.loads(json.dumps(reg.to_json()))
    assert doc["method"] == "features+dots" and 0 < doc["overlap_fraction"] <= 1


def test_series_registers_on_features_alone_without_dots(series):
    # the baseline has no dots yet: skin texture, pores and hair carry the registration
    before, after = series[0], series[1]
    assert len(before.dots) == 0
    reg = register_photos(before.photo, after.photo, RegisterSettings())
    assert reg.method == "features" and reg.n_inliers >= 12
    err = _max_error_over_overlap(
        reg.after_to_before, _true_after_to_before(before, after), reg.before_size, reg.after_size
    )
    assert err < 0.5


def test_series_links_every_common_dot_and_finds_the_new_ones(series):
    before, after = series[1], series[2]
    s = RegisterSettings()
    bxy, axy = before.dots[["x", "y"]].to_numpy(), after.dots[["x", "y"]].to_numpy()
    reg = register_photos(
        before.photo, after.photo, s, before_dots_xy=bxy, after_dots_xy=axy, px_per_mm=before.px_per_mm
    )
    links = link_dots(
        bxy,
        axy,
        reg.after_to_before,
        s,
        px_per_mm=before.px_per_mm,
        before_valid=before.mask > 0,
        after_valid=after.mask > 0,
    )
    bid, aid = before.dots["dot_id"].to_numpy(), after.dots["dot_id"].to_numpy()
    correct = bid[links.before_idx] == aid[links.after_idx]
    common = np.intersect1d(bid, aid)
    assert correct.mean() >= 0.98
    assert correct.sum() >= 0.98 * len(common)
    assert links.residual_mm_median <= 0.05
    # session 2 placed new dots; the dots linking calls new are session-2 dots
    new_ids = aid[links.new_idx]
    assert len(new_ids) > 100
    assert np.isin(new_ids, bid).mean() < 0.02
    session2 = set(after.dots.loc[after.dots["session"] == 2, "dot_id"])
    assert np.mean([i in session2 for i in new_ids]) > 0.98
    # nothing was removed between the sessions: almost no lost dots in the shared view
    assert len(links.lost_idx) <= 0.02 * links.before_in_view.sum()
    assert links.linked_fraction > 0.97


# --------------------------------------------------------------------------- a known warp and a new light


def _b2a(rot_deg, scale, tilt, size):
    """BEFORE -> AFTER homography about the image centre: rotation, scale and a keystone tilt."""
    w, h = size
    c = np.array([[1, 0, -(w - 1) / 2], [0, 1, -(h - 1) / 2], [0, 0, 1]])
    t = np.radians(rot_deg)
    r = np.array([[scale * np.cos(t), -scale * np.sin(t), 0], [scale * np.sin(t), scale * np.cos(t), 0], [0, 0, 1]])
    p = np.array([[1, 0, 0], [0, 1, 0], [tilt / w, 0.5 * tilt / h, 1]])
    return np.linalg.inv(c) @ r @ p @ c


def _relight(rgb, rng):
    """Darker, warmer, with a light gradient and sensor noise."""
    h, w = rgb.shape[:2]
    ramp = np.linspace(0.75, 1.1, w, dtype=np.float32)[None, :, None]
    out = rgb.astype(np.float32) * 0.6 * np.array([1.12, 1.0, 0.72], np.float32) * ramp
    out += rng.normal(0, 2.0, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("rot_deg,scale,tilt", [(180.0, 1.0, 0.0), (-65.0, 0.7, 0.25), (20.0, 1.4, -0.2)])
def test_known_warp_with_lighting_change(series, rot_deg, scale, tilt):
    before = series[2]
    size = (before.photo.shape[1], before.photo.shape[0])
    h_b2a = _b2a(rot_deg, scale, tilt, size)
    after = _relight(
        cv2.warpPerspective(before.photo, h_b2a, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT),
        np.random.default_rng(7),
    )
    h_true = np.linalg.inv(h_b2a)
    s = RegisterSettings()
    reg = register_photos(before.photo, after, s)
    assert _max_error_over_overlap(reg.after_to_before, h_true, size, size) < 0.4
    scale_est, rot_est = reg.local_transform()
    assert scale_est == pytest.approx(1 / scale, rel=0.15)
    assert (rot_est + rot_deg + 180) % 360 - 180 == pytest.approx(0, abs=3)
    # with the dots of both photos the fit is much tighter
    bxy = before.dots[["x", "y"]].to_numpy()
    axy = apply_homography(h_b2a, bxy)
    axy = axy[(axy[:, 0] > 0) & (axy[:, 0] < size[0] - 1) & (axy[:, 1] > 0) & (axy[:, 1] < size[1] - 1)]
    reg_d = register_photos(before.photo, after, s, before_dots_xy=bxy, after_dots_xy=axy)
    assert reg_d.method == "features+dots"
    assert _max_error_over_overlap(reg_d.after_to_before, h_true, size, size) < 0.05


def test_half_turn_has_no_subpixel_bias(series):
    # an exact 180-degree turn (no resampling): SIFT's quarter-pixel offset would show as 0.5 px
    before = series[2].photo
    after = np.ascontiguousarray(before[::-1, ::-1])
    h, w = before.shape[:2]
    flip = np.array([[-1.0, 0, w - 1], [0, -1.0, h - 1], [0, 0, 1]])
    reg = register_photos(before, after, RegisterSettings())
    assert _max_error_over_overlap(reg.after_to_before, flip, (w, h), (w, h)) < 0.1


def test_dot_pattern_registers_when_features_fail(series):
    # features find nothing in the after photo, but its dots are known: the dot patterns are
    # matched on their own (session 2 added dots between session 1's)
    before, after = series[1], series[2]
    flat = np.full_like(after.photo, 120)
    reg = register_photos(
        before.photo,
        flat,
        RegisterSettings(),
        before_dots_xy=before.dots[["x", "y"]].to_numpy(),
        after_dots_xy=after.dots[["x", "y"]].to_numpy(),
    )
    assert reg.method == "dots" and reg.n_inliers == 0
    assert any("dot pattern alone" in w and "too few features in the after photo" in w for w in reg.warnings)
    err = _max_error_over_overlap(
        reg.after_to_before, _true_after_to_before(before, after), reg.before_size, reg.after_size
    )
    assert err < 0.05


def test_match_dot_patterns_with_missing_and_extra_dots():
    rng = np.random.default_rng(11)
    size = (900, 700)
    b = _jittered_grid(rng, 15.0, size)
    h_a2b = _b2a(150.0, 1.25, 0.3, size)
    a = apply_homography(np.linalg.inv(h_a2b), b) + rng.normal(0, 0.3, b.shape)
    a = a[rng.random(len(a)) > 0.3]  # 30 % not found again
    a = np.vstack([a, rng.uniform([0, 0], size, (len(a) // 3, 2))])  # and a third more, new or false
    s = RegisterSettings()
    found = match_dot_patterns(b, a, s)
    assert found is not None and found.ok
    fit = refine_on_dots(found.h, b, a, s, region=found.region)
    assert fit.ok and fit.tight > 0.5 * len(b)
    assert _max_error_over_overlap(fit.h, h_a2b, size, size) < 0.1
    # unrelated patterns do not match
    other = _jittered_grid(np.random.default_rng(12), 15.0, size)
    assert match_dot_patterns(b, other, s) is None


def test_dots_that_contradict_weak_features_refuse_the_registration(series):
    photo = series[2].photo
    rng = np.random.default_rng(4)
    noise_b, noise_a = rng.uniform([0, 0], [600, 450], (300, 2)), rng.uniform([0, 0], [600, 450], (300, 2))
    # strong features (same photo): registered, with a warning that the dots disagree
    reg = register_photos(photo, photo, RegisterSettings(), before_dots_xy=noise_b, after_dots_xy=noise_a)
    assert reg.method == "features" and any("do not confirm" in w for w in reg.warnings)
    # the same fit counted as weak: refused
    with pytest.raises(RegistrationError, match="dots do not confirm"):
        register_photos(
            photo, photo, RegisterSettings(warn_inliers=10**6), before_dots_xy=noise_b, after_dots_xy=noise_a
        )


def test_unrelated_photos_are_refused(series):
    cfg = load_settings(
        SynthSettings,
        None,
        ["image.width=600", "image.height=450", "camera.px_per_mm=[12, 15]", "card.probability=0"],
        default="synth/closeup.yaml",
    )
    other = single_closeup(item_rng(99, 3), cfg, load_card(), load_flag_settings(), draw_camera)
    with pytest.raises(RegistrationError, match="too few matching features") as err:
        register_photos(series[2].photo, other.photo, RegisterSettings())
    assert "\n" not in str(err.value)


def test_blank_photo_is_refused(series):
    blank = np.full((450, 600, 3), 128, np.uint8)
    with pytest.raises(RegistrationError, match=r"too few features in the after photo \(0 < 12\)"):
        register_photos(series[2].photo, blank, RegisterSettings())
    with pytest.raises(RegistrationError, match="before photo"):
        register_photos(blank, series[2].photo, RegisterSettings())


# --------------------------------------------------------------------------- dot refinement and linking on points


def _jittered_grid(rng, spacing, size, jitter=0.25):
    w, h = size
    gx, gy = np.meshgrid(np.arange(spacing / 2, w, spacing), np.arange(spacing / 2, h, spacing))
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    return pts + rng.uniform(-jitter, jitter, pts.shape) * spacing


def test_refine_on_dots_recovers_an_offset_homography():
    rng = np.random.default_rng(3)
    size = (900, 700)
    b = _jittered_grid(rng, 15.0, size)
    h_true = _b2a(30.0, 1.1, 0.1, size)  # here: AFTER -> BEFORE
    a = apply_homography(np.linalg.inv(h_true), b)
    # a starting guess 2 px and 0.3 degrees off, as features on skin might give
    t = np.radians(0.3)
    off = np.array([[np.cos(t), -np.sin(t), 2.0], [np.sin(t), np.cos(t), -1.5], [0, 0, 1]])
    fit = refine_on_dots(off @ h_true, b, a, RegisterSettings())
    assert fit.ok and fit.tight == fit.pairs and fit.pairs > 0.95 * len(b) and fit.residual_px_median < 1e-3
    assert _max_error_over_overlap(fit.h, h_true, size, size) < 0.01
    # a guess far off pairs dots by chance only: the dots do not confirm it
    wrong = np.array([[1, 0, 40.0], [0, 1, 25.0], [0, 0, 1]]) @ h_true
    assert not refine_on_dots(wrong, b, a, RegisterSettings()).ok


def test_link_dots_follows_skin_motion_and_separates_new_and_lost():
    rng = np.random.default_rng(5)
    ppm, spacing = 15.0, 15.0  # px/mm, px (dots ~1 mm apart)
    size = (900, 700)
    b = _jittered_grid(rng, spacing, size)
    n = len(b)
    # skin moved: a smooth displacement of up to 0.15 mm, plus 0.3 px of detection noise
    amp = 0.15 * ppm
    moved = b + amp * np.column_stack([np.sin(2 * np.pi * b[:, 1] / 400.0), np.cos(2 * np.pi * b[:, 0] / 500.0)])
    h_a2b = _b2a(-40.0, 0.9, 0.15, size)
    a_all = apply_homography(np.linalg.inv(h_a2b), moved) + rng.normal(0, 0.3, (n, 2))
    keep = rng.random(n) > 0.05  # 5 % of the dots not found again (lost)
    # new dots, in the gaps between old ones (>= 0.45 spacing from any old dot)
    cand = rng.uniform([0, 0], size, (4 * n // 10, 2))
    cand = cand[cKDTree(b).query(cand)[0] > 0.45 * spacing][: n // 20]
    a = np.vstack([a_all[keep], apply_homography(np.linalg.inv(h_a2b), cand)])
    truth_b = np.concatenate([np.flatnonzero(keep), np.full(len(cand), -1)])  # BEFORE index of each AFTER dot

    links = link_dots(b, a, h_a2b, LinkSettings(), px_per_mm=ppm)
    correct = truth_b[links.after_idx] == links.before_idx
    assert correct.mean() >= 0.98
    assert correct.sum() >= 0.98 * keep.sum()
    assert links.warp_links > 0
    assert np.median(links.residual_px) < 0.5 * np.median(links.homography_residual_px)
    assert links.residual_mm_median <= 0.05
    assert np.mean(truth_b[links.new_idx] == -1) > 0.95 and len(links.new_idx) >= 0.95 * len(cand)
    assert np.mean(~keep[links.lost_idx]) > 0.95 and len(links.lost_idx) >= 0.95 * (~keep).sum()
    # without the smooth warp the residual stays at the size of the skin motion
    rigid = link_dots(b, a, h_a2b, LinkSettings(warp=False), px_per_mm=ppm)
    assert rigid.residual_mm_median > 0.05


def test_link_dots_ignores_dots_the_other_photo_cannot_see():
    rng = np.random.default_rng(8)
    b = _jittered_grid(rng, 15.0, (600, 450))
    shift = np.array([[1, 0, 200.0], [0, 1, 0], [0, 0, 1]])  # AFTER sees x >= 200 of BEFORE ...
    a = apply_homography(np.linalg.inv(shift), b)
    a = a[a[:, 0] >= 0]  # ... and only its own frame
    valid_b = np.ones((450, 600), bool)
    valid_a = np.ones((450, 600), bool)
    valid_a[:, :100] = False  # e.g. the card covers AFTER's left edge
    links = link_dots(b, a, shift, LinkSettings(), px_per_mm=15.0, before_valid=valid_b, after_valid=valid_a)
    assert len(links.new_idx) == 0
    assert len(links.lost_idx) == 0  # dots left of x=200 or under the card are not "lost"
    assert links.linked_fraction == pytest.approx(1.0)
    plain = link_dots(b, a, shift, LinkSettings(), px_per_mm=15.0)
    assert len(plain.lost_idx) > 100  # without frames every unpaired dot counts


def test_gated_assignment_is_optimal_not_greedy():
    # b1 is a0's nearest, but pairing (b0, a0) and (b1, a1) keeps both within the gate
    b = np.array([[0.0, 0.0], [6.0, 0.0], [50.0, 50.0], [70.0, 70.0]])
    a = np.array([[3.5, 0.0], [9.0, 0.0], [50.0, 50.0], [90.0, 70.0]])
    bi, ai, d = gated_assignment(b, a, 4.0)
    assert dict(zip(bi.tolist(), ai.tolist())) == {0: 0, 1: 1, 2: 2}
    assert d.tolist() == pytest.approx([3.5, 3.0, 0.0])  # identical points pair at distance 0
    empty = np.zeros((0, 2))
    assert len(gated_assignment(empty, a, 4.0)[0]) == 0
    assert len(gated_assignment(b, empty, 4.0)[0]) == 0
