"""Dot detection at a canonical scale and the physical decision (pipeline/one_photo/detect/)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from data.card import load_card
from data.config import ConfigError, load_settings
from data.flags import load_flag_settings
from data.metrics import HAIR, SCALP, dots_in_roi
from data.synth.generate import generate_images
from data.synth.settings import SynthSettings
from models.dot_ranker import FEATURES, DotRanker, candidate_features, default_ranker_path, fit_ranker
from pipeline.one_photo.assess import Assessor
from pipeline.one_photo.detect import REJECT, DetectSettings, ScaleOutOfRange, detect_dots, resample_factor
from pipeline.one_photo.dots import DotSettings
from pipeline.one_photo.settings import load_assess_settings

# large, clear dots without hair or card: what must not depend on the photo's pixel count
SCENE = [
    "image.width=400",
    "image.height=300",
    "camera.px_per_mm=[24, 24]",
    "camera.tilt_deg=[0, 0]",
    "camera.dof_blur_mm=[0, 0]",
    "card.probability=0.0",
    "skin.fitzpatrick=[1, 2]",
    "hair.follicle_density_per_cm2=[0, 0]",
    "dots.aged_fraction=[0, 0]",
    "dots.contrast_dl=[24, 30]",
    "dots.diameter_mm=[0.3, 0.36]",
    "dots.coverage=[1, 1]",
    "dots.merged_fraction=[0, 0]",
    "dots.fresh_fraction=[0, 0]",
    "dots.scab_fraction=[0, 0]",
    "skin.crease_coverage=[0, 0]",
    "skin.freckles_per_cm2=[0, 0]",
    "skin.naevi_per_cm2=[0, 0]",
    "skin.pore_depth=[0.05, 0.1]",
]


def _skin(shape, rng, level=62.0, noise=0.8):
    return (level + rng.normal(0, noise, shape)).astype(np.float32)


def _stamp(lstar, xy, radius_px, depth, elong=1.0, angle=0.0):
    """Soft dark ellipses (Gaussian darkness with half-maximum radius ``radius_px``)."""
    h, w = lstar.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    s = radius_px / 1.18
    c, si = np.cos(angle), np.sin(angle)
    for x, y in xy:
        u = (xx - x) * c + (yy - y) * si
        v = -(xx - x) * si + (yy - y) * c
        lstar -= depth * np.exp(-0.5 * ((u / (s * elong)) ** 2 + (v / s) ** 2))
    return lstar


def _grid(h, w, step):
    ys, xs = np.mgrid[step : h - step : step, step : w - step : step]
    return np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float64) + 0.3


_RANKER = DotRanker.load(default_ranker_path())


def _detect(lstar, labels, ppm, ranker=_RANKER, patch_ranker=None, **kw):
    return detect_dots(
        lstar, labels, ppm, DetectSettings(**kw), DotSettings(), 3.0, ranker=ranker, patch_ranker=patch_ranker
    )


def _constant_ranker(logit: float) -> DotRanker:
    """A ranker that gives every candidate the same probability (what a ranker gone wrong could do)."""
    n = len(FEATURES)
    return DotRanker(
        mean=np.zeros(n),
        scale=np.ones(n),
        lo=np.full(n, -1e9),
        hi=np.full(n, 1e9),
        weights=(np.zeros((n, 1)),),
        biases=(np.array([logit]),),
        threshold=0.5,
    )


def _clear_dots():
    """Clear 0.24 mm dots of 20 L* on a 1.25 mm grid, on quiet skin: (L*, labels, px/mm, centres)."""
    rng = np.random.default_rng(0)
    ppm = 16.0
    lstar = _skin((160, 200), rng)
    xy = _grid(160, 200, 20)
    _stamp(lstar, xy, 0.12 * ppm, 20.0)
    return lstar, np.full(lstar.shape, SCALP, np.uint8), ppm, xy


def test_clear_dots_are_found_with_their_evidence():
    lstar, labels, ppm, xy = _clear_dots()
    det = _detect(lstar, labels, ppm)
    assert len(det.geometry) == len(xy)
    d = np.hypot(*(det.geometry.xy[:, None] - xy[None]).transpose(2, 0, 1)).min(axis=1)
    assert np.median(d) < 0.3
    ev = det.evidence
    assert np.all(ev.contrast_dl > 12) and np.all(ev.significance > 6)
    assert np.all((ev.confidence > 0.5) & (ev.confidence <= 1))
    assert np.all(np.isnan(ev.model_score))  # no model ran


def test_texture_and_faint_specks_are_not_dots():
    rng = np.random.default_rng(1)
    ppm = 16.0
    lstar = _skin((200, 200), rng, noise=2.0)
    # skin texture: many faint specks, as deep as the noise
    specks = rng.uniform(10, 190, (60, 2))
    _stamp(lstar, specks, 0.06 * ppm, 2.5)
    labels = np.full(lstar.shape, SCALP, np.uint8)
    det = _detect(lstar, labels, ppm)
    assert len(det.geometry) == 0
    # too weak to be looked at, or looked at and refused for weak contrast or significance
    assert det.n_candidates == 0 or det.rejected.reasons()["contrast"] + det.rejected.reasons()["significance"] > 0


def test_a_strand_is_not_a_dot_but_an_elongated_fresh_dot_is():
    rng = np.random.default_rng(2)
    ppm = 16.0
    lstar = _skin((160, 240), rng)
    cv2.line(lstar, (20, 40), (220, 60), 40.0, 2, cv2.LINE_AA)  # a long dark strand, not labelled hair
    _stamp(lstar, [(120.0, 120.0)], 0.12 * ppm, 22.0, elong=1.8, angle=0.6)  # a fresh 1.8 : 1 dot
    labels = np.full(lstar.shape, SCALP, np.uint8)
    det = _detect(lstar, labels, ppm)
    xy = det.geometry.xy
    assert len(xy) == 1 and np.hypot(*(xy[0] - (120, 120))) < 1.0
    assert det.geometry.elongation[0] > 1.15  # moments within 1.2 R read a 1.8 : 1 dot as ~1.2 : 1
    assert np.all(det.rejected.reason[det.rejected.xy[:, 1] < 70] != 0)


def test_a_dense_field_of_dots_is_not_its_own_texture():
    """Dots touching their neighbours over the whole photo: the skin between them is the texture,
    not the dots (with the texture measured by response alone most of them are lost)."""
    rng = np.random.default_rng(5)
    ppm = 16.0
    lstar = _skin((200, 240), rng, noise=1.2)
    xy = _grid(200, 240, 8)
    xy = xy + rng.uniform(-1.5, 1.5, xy.shape)  # ~0.5 mm apart, 0.26 mm wide: no bare skin
    _stamp(lstar, xy, 0.13 * ppm, 16.0)
    labels = np.full(lstar.shape, SCALP, np.uint8)
    # these dots read ~11 L* against the 1.5 mm median: pigment at 8 L*. (The default, 10, trades
    # such faint dense fields for fewer false dots between light strands: docs/dots.md)
    det = _detect(lstar, labels, ppm, texture_max_dl=8.0)
    d = np.hypot(*(det.geometry.xy[:, None] - xy[None]).transpose(2, 0, 1)).min(axis=1)
    assert np.mean(d < 1.5) > 0.9  # the reported dots are these dots
    assert len(det.geometry) >= 0.6 * len(xy)
    assert len(_detect(lstar, labels, ppm, texture_max_dl=None).geometry) < 0.05 * len(xy)


def test_a_shaft_as_wide_as_a_small_dot_is_a_strand_and_the_dot_beside_it_is_not():
    """A stubble shaft blurred to ~0.2 mm is as wide as a small dot: what a disc opening a little
    wider than a strand keeps is no proof of a blob; a straight dark run of 0.7 mm is a strand."""
    from pipeline.one_photo.segment import hair_strands

    dark = np.zeros((160, 200), np.float32)
    shaft = np.zeros_like(dark)
    cv2.line(shaft, (30, 30), (170, 90), 1.0, 2, cv2.LINE_AA)
    dark += 16.0 * cv2.GaussianBlur(shaft, (0, 0), 0.7)
    yy, xx = np.mgrid[0:160, 0:200]
    dark += 22.0 * np.exp(-0.5 * ((xx - 100) ** 2 + (yy - 130) ** 2) / 1.7**2)  # a 0.25 mm dot
    on_shaft = (dark > 6) & (yy < 100)
    strands = hair_strands(dark, 16.0, line_mm=0.7, max_width_mm=0.25)
    assert strands[on_shaft].mean() > 0.6
    assert not strands[120:141, 90:111].any()
    assert not hair_strands(dark, 16.0)[on_shaft].any()  # the thin-component rule alone misses it


def test_the_skin_between_dense_light_strands_is_not_a_dot():
    """Blond or grey hair covering half the skin: the 1.5 mm median is the hair's level and the
    bare skin between strands reads as dark blobs. No pigment: no dot (the white top-hat finds
    the strands; without it these gaps are reported)."""
    rng = np.random.default_rng(8)
    ppm = 16.0
    lstar = _skin((200, 240), rng, level=45.0)
    hair = np.zeros_like(lstar)
    for _ in range(700):
        x0, y0 = rng.uniform(-40, 280), rng.uniform(-40, 240)
        a, length = rng.normal(0.6, 0.5), rng.uniform(40, 160)
        cv2.line(
            hair, (int(x0), int(y0)), (int(x0 + length * np.cos(a)), int(y0 + length * np.sin(a))), 1.0, 1, cv2.LINE_AA
        )
    lstar += 30.0 * np.clip(cv2.GaussianBlur(hair, (0, 0), 0.5) * 1.6, 0, 1)
    labels = np.full(lstar.shape, SCALP, np.uint8)
    assert len(_detect(lstar, labels, ppm).geometry) == 0
    assert len(_detect(lstar, labels, ppm, light_hair_mm=0.0).geometry) > 5


def test_a_large_elongated_dot_is_one_dot():
    rng = np.random.default_rng(7)
    ppm = 16.0
    lstar = _skin((120, 120), rng)
    _stamp(lstar, [(60.0, 60.0)], 0.25 * ppm, 28.0, elong=2.0, angle=0.4)  # a fresh 0.5 x 1.0 mm dot
    labels = np.full(lstar.shape, SCALP, np.uint8)
    det = _detect(lstar, labels, ppm)
    assert len(det.geometry) == 1 and np.hypot(*(det.geometry.xy[0] - (60, 60))) < 1.5


@pytest.mark.parametrize("hair", ["segmenter", "strands"])
def test_a_dot_mostly_under_hair_is_not_reported(hair):
    rng = np.random.default_rng(3)
    ppm = 16.0
    lstar = _skin((100, 100), rng)
    _stamp(lstar, [(30.0, 50.0), (70.0, 50.0)], 0.12 * ppm, 20.0)
    labels = np.full(lstar.shape, SCALP, np.uint8)
    if hair == "segmenter":
        labels[40:60, 60:80] = HAIR  # the segmenter says: hair over the second dot
    else:  # a strand lies over it in the photo
        cv2.line(lstar, (66, 0), (74, 99), 30.0, 4, cv2.LINE_AA)
    det = _detect(lstar, labels, ppm, hair=hair)
    assert len(det.geometry) == 1 and det.geometry.xy[0, 0] < 50
    # the hidden one is gone: filled from its surroundings, or refused as mostly under hair
    assert not any(np.hypot(*(xy - (70, 50))) < 4 for xy in det.geometry.xy)


def test_the_supported_scale_range_is_enforced():
    s = DetectSettings()
    assert resample_factor(16.0, s) == 1.0 and resample_factor(32.0, s) == 0.5
    for ppm in (2.0, 7.9, 358.0):
        with pytest.raises(ScaleOutOfRange, match="supported range"):
            resample_factor(ppm, s)
    with pytest.raises(ValueError):
        DetectSettings(canonical_px_per_mm=200.0)
    with pytest.raises(ConfigError, match="detect"):
        load_assess_settings(None, ["detect.min_px_per_mm=40"])


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    cfg = load_settings(SynthSettings, None, SCENE, default="synth/closeup.yaml")
    item = next(iter(generate_images(out, 1, cfg, load_card(), load_flag_settings(), seed=5)))
    truth = json.loads((item.folder / "truth.json").read_text())
    return item.folder / truth["photo"], truth["px_per_mm"]


@pytest.fixture(scope="module")
def assessor():
    return Assessor(load_assess_settings(None, ["segment.method=classical", "overlay=false"]))


def test_the_same_photo_at_half_to_four_times_the_pixels_gives_the_same_count(scene, assessor, tmp_path):
    path, ppm = scene
    img = cv2.imread(str(path))
    counts = {}
    for f in (0.5, 1.0, 2.0, 4.0):
        scaled = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
        p = tmp_path / f"x{f}.png"
        cv2.imwrite(str(p), scaled)
        a = assessor.assess_file(p, px_per_mm=ppm * f)
        counts[f] = a.metrics.dot_count
    ref = counts[1.0]
    assert ref > 50
    for n in counts.values():
        assert abs(n - ref) <= 0.02 * ref, counts


def test_outside_the_supported_scales_dot_metrics_are_null_with_a_warning(scene, assessor):
    path, ppm = scene
    a = assessor.assess_file(path, px_per_mm=358.0)
    m = a.metrics
    assert m.dot_count is None and m.dot_density_per_cm2 is None and m.blue_shift_fraction is None
    assert len(a.dots) == 0
    assert any("supported range" in w for w in a.warnings)
    assert m.scalp_fraction is not None  # what can be measured still is


def test_without_any_scale_dot_metrics_are_null_with_a_warning(scene, assessor):
    """A photo without a card and without --px-per-mm: dots are found at a fixed px/mm, so a
    count at a guessed scale would be a guess."""
    path, ppm = scene
    a = assessor.assess_file(path)
    assert a.calibration.px_per_mm is None
    assert a.metrics.dot_count is None and a.metrics.dots_not_measurable is None and len(a.dots) == 0
    assert any("no scale" in w and "--px-per-mm" in w for w in a.warnings)
    assert a.metrics.scalp_fraction is not None
    assert assessor.assess_file(path, px_per_mm=ppm).metrics.dot_count > 50


def test_assessed_dots_carry_their_evidence(scene, assessor):
    path, ppm = scene
    a = assessor.assess_file(path, px_per_mm=ppm)
    d = a.dots
    for col in ("confidence", "significance", "noise_dL", "continuation", "measurable"):
        assert col in d.columns
    assert d.confidence.between(0, 1).all() and (d.significance > 0).all()
    # flags only on measurable dots
    small = ~d.measurable.astype(bool)
    assert not d.loc[small, ["blue_shift", "faded", "spread"]].to_numpy(bool).any()


def test_reasons_are_named_bits():
    assert len(set(REJECT.values())) == len(REJECT)
    assert all(v & (v - 1) == 0 for v in REJECT.values())


def test_a_ranker_that_says_yes_to_everything_still_cannot_report_a_speck():
    """The ranker only decides among what the physical floors admit: skin texture and faint specks
    are refused before it is asked, whatever it would say."""
    rng = np.random.default_rng(1)
    ppm = 16.0
    lstar = _skin((200, 200), rng, noise=2.0)
    _stamp(lstar, rng.uniform(10, 190, (60, 2)), 0.06 * ppm, 2.5)
    labels = np.full(lstar.shape, SCALP, np.uint8)
    det = _detect(lstar, labels, ppm, ranker=_constant_ranker(40.0), decision="ranker")
    assert len(det.geometry) == 0
    # and one that says no to everything reports nothing, with the reason named
    _stamp(lstar, _grid(200, 200, 25), 0.12 * ppm, 20.0)
    det = _detect(lstar, labels, ppm, ranker=_constant_ranker(-40.0), decision="ranker", ranker_veto=None)
    assert len(det.geometry) == 0 and det.rejected.reasons()["ranker"] > 0


def test_floors_report_every_admitted_candidate_with_what_the_ranker_reads():
    lstar, labels, ppm, xy = _clear_dots()
    det = _detect(lstar, labels, ppm, ranker=None, decision="floors")
    f = det.evidence.features
    assert f.shape == (len(det.geometry), len(FEATURES)) and len(det.geometry) >= len(xy)
    assert np.isnan(det.evidence.confidence).all()  # no ranker: no probability
    col = {k: i for i, k in enumerate(FEATURES)}
    assert np.allclose(np.exp(f[:, col["log_significance"]]), det.evidence.significance)
    assert np.allclose(f[:, col["contrast_dl"]], det.evidence.contrast_dl)
    with pytest.raises(ValueError, match="no ranker"):
        _detect(lstar, labels, ppm, ranker=None, decision="ranker")  # the ranker's decision needs one
    rules = _detect(lstar, labels, ppm, ranker=None, decision="rules")
    assert rules.evidence.features.shape == (len(rules.geometry), 0)


def test_the_ranker_learns_saves_and_loads(tmp_path):
    rng = np.random.default_rng(3)
    n = 4000
    sig = rng.uniform(4, 20, n)
    x = candidate_features(
        significance=sig,
        contrast_dl=rng.uniform(6, 30, n),
        noise_dl=rng.uniform(0.5, 3, n),
        diameter_mm=rng.uniform(0.1, 0.6, n),
        curvature_ratio=rng.uniform(0, 1, n),
        continuation=rng.uniform(0, 1, n),
        skin_lstar=rng.uniform(30, 70, n),
    )
    y = (x[:, FEATURES.index("curvature_ratio")] + 0.05 * sig > 1.0).astype(int)  # round and significant
    r = fit_ranker(x, y, np.random.default_rng(0), epochs=20, batch=128, info={"what": "test"})
    p = r.probability(x)
    assert ((p >= 0.5) == y).mean() > 0.95
    r.save(tmp_path / "r.npz")
    back = DotRanker.load(tmp_path / "r.npz")
    assert np.allclose(back.probability(x), p) and back.info == {"what": "test"} and back.threshold == 0.5
    again = fit_ranker(x, y, np.random.default_rng(0), epochs=20, batch=128)
    assert np.allclose(again.probability(x), p)  # reproducible from the seed
    # more significance or contrast never makes a candidate less likely (built in, for any weights)
    for f in ("log_significance", "contrast_dl"):
        j = FEATURES.index(f)
        up = x.copy()
        up[:, j] += np.abs(rng.normal(0, 1, n))
        assert np.all(r.probability(up) >= p - 1e-12)
    with pytest.raises(FileNotFoundError, match="train_dot_ranker"):
        DotRanker.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ValueError, match="not a dot ranker file"):
        DotRanker.load(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="threshold"):
        DotRanker(mean=r.mean, scale=r.scale, lo=r.lo, hi=r.hi, weights=r.weights, biases=r.biases, threshold=1.5)


def test_the_bundled_ranker_is_recorded_with_each_assessment(scene):
    caught = []
    a = Assessor(
        load_assess_settings(None, ["segment.method=classical", "overlay=false", "detect.decision=ranker"]),
        detection_sink=caught.append,
    )
    path, ppm = scene
    res = a.assess_file(path, px_per_mm=ppm)
    assert len(caught) == 1 and len(caught[0].geometry) == len(res.dots)
    info = a.model_info["dot_ranker"]
    assert len(info["sha256"]) == 64 and 0 < info["threshold"] < 1
    other = Assessor(
        load_assess_settings(
            None, ["segment.method=classical", "overlay=false", "detect.decision=ranker", "detect.ranker_threshold=0.9"]
        )
    )
    assert other.config_hash != a.config_hash  # a different decision, a different hash
    with pytest.raises(FileNotFoundError):
        Assessor(
            load_assess_settings(
                None, ["segment.method=classical", "detect.decision=ranker", "detect.ranker=/nonexistent.npz"]
            )
        )
    assert "dot_ranker" not in Assessor(load_assess_settings(None, ["segment.method=classical"])).model_info


def _constant_patch(logit: float):
    """A patch network that gives every candidate the same probability."""
    import torch

    from models.dot_patch import PatchRanker, _net

    state = {k: torch.zeros_like(v) for k, v in _net().state_dict().items()}
    state["10.bias"] = torch.tensor([logit])
    return PatchRanker(state=state, veto=0.5)


def test_patches_are_darkness_against_their_border():
    from pipeline.one_photo.detect import dot_patches

    lstar, labels, ppm, xy = _clear_dots()
    p = dot_patches(lstar, xy)
    assert p.shape == (len(xy), 19, 19) and p.dtype == np.float32
    assert np.all(p[:, 9, 9] > 1.2)  # the 20 L* dot, in units of 10 L*
    border = np.concatenate([p[:, 0, :], p[:, -1, :]], axis=1)
    assert np.abs(np.median(border, axis=1)).max() < 0.05
    assert dot_patches(lstar, np.zeros((0, 2))).shape == (0, 19, 19)


def test_the_patch_network_can_only_refuse():
    rng = np.random.default_rng(1)
    ppm = 16.0
    lstar = _skin((200, 200), rng, noise=2.0)
    _stamp(lstar, rng.uniform(10, 190, (60, 2)), 0.06 * ppm, 2.5)
    labels = np.full(lstar.shape, SCALP, np.uint8)
    # sure that everything is a dot: the specks are still refused before it is asked
    det = _detect(lstar, labels, ppm, patch_ranker=_constant_patch(40.0), patch_veto=0.5)
    assert len(det.geometry) == 0
    # clear dots: a network that says yes keeps what the rules admit, one that says no drops it with the reason named
    clear, labels, ppm, xy = _clear_dots()
    rules = _detect(clear, labels, ppm)
    yes = _detect(clear, labels, ppm, patch_ranker=_constant_patch(40.0), patch_veto=0.5)
    assert np.array_equal(rules.geometry.xy, yes.geometry.xy)
    assert np.allclose(yes.evidence.patch_score, 1.0) and np.isnan(rules.evidence.patch_score).all()
    no = _detect(clear, labels, ppm, patch_ranker=_constant_patch(-40.0), patch_veto=0.5)
    assert len(no.geometry) == 0 and no.rejected.reasons()["patch"] == len(rules.geometry)
    # without a network (or with the look turned off) no second look is taken
    assert np.array_equal(_detect(clear, labels, ppm, patch_veto=0.5).geometry.xy, rules.geometry.xy)
    off = _detect(clear, labels, ppm, patch_ranker=_constant_patch(-40.0), patch_look=False)
    assert np.array_equal(off.geometry.xy, rules.geometry.xy)
    # the training harvest (floors) keeps each reported dot's patch
    floors = _detect(clear, labels, ppm, ranker=None, decision="floors")
    assert floors.patches.shape == (len(floors.geometry), 19, 19)
    assert rules.patches is None


def test_the_patch_network_learns_saves_and_loads(tmp_path):
    from models.dot_patch import PatchRanker, fit_patch_ranker
    from pipeline.one_photo.detect import dot_patches

    rng = np.random.default_rng(0)
    lstar, labels, ppm, xy = _clear_dots()
    dots = dot_patches(lstar, xy + rng.normal(0, 0.3, xy.shape))
    skin = dot_patches(lstar, xy + 10.0)  # between the dots
    x = np.concatenate([dots, skin] * 4)
    y = np.tile(np.r_[np.ones(len(dots)), np.zeros(len(skin))], 4)
    a = fit_patch_ranker(x, y, seed=3, epochs=15, veto=0.3, info={"what": "test"})
    assert a.probability(dots).mean() > 0.8 and a.probability(skin).mean() < 0.2
    b = fit_patch_ranker(x, y, seed=3, epochs=15, veto=0.3)
    assert all(np.array_equal(a.state[k].numpy(), b.state[k].numpy()) for k in a.state)  # reproducible
    a.save(tmp_path / "p.pt")
    back = PatchRanker.load(tmp_path / "p.pt")
    assert back.veto == 0.3 and back.info["what"] == "test" and len(back.info["sha256"]) == 64
    assert np.allclose(back.probability(dots), a.probability(dots))
    with pytest.raises(FileNotFoundError, match="no such dot patch model"):
        PatchRanker.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(rng.bytes(300))
    with pytest.raises(ValueError, match="not a dot patch model"):
        PatchRanker.load(tmp_path / "junk.pt")


def test_the_bundled_patch_network_is_recorded_with_each_assessment(tmp_path):
    from models.dot_patch import PatchRanker, default_patch_path

    a = Assessor(load_assess_settings(None, ["segment.method=classical", "overlay=false"]))
    bundled = PatchRanker.load(default_patch_path())
    assert a.model_info["dot_patch"] == {"sha256": bundled.info["sha256"], "veto": bundled.veto}
    other = Assessor(load_assess_settings(None, ["segment.method=classical", "detect.patch_veto=0.4"]))
    assert other.model_info["dot_patch"]["veto"] == 0.4
    assert (
        "dot_patch"
        not in Assessor(load_assess_settings(None, ["segment.method=classical", "detect.patch_look=false"])).model_info
    )
    with pytest.raises(FileNotFoundError, match="no such dot patch model"):
        Assessor(load_assess_settings(None, ["segment.method=classical", f"detect.patch_model={tmp_path / 'x.pt'}"]))


def test_patch_inference_path_equals_the_network_as_built() -> None:
    """The inference forward pass (pooling by strided maxima, ReLU after pooling) gives what the
    network as trained gives, on any weights and odd patch sizes."""
    import torch

    from models.dot_patch import _infer, _net

    torch.manual_seed(3)
    net = _net().eval()
    for size in (19, 20, 23):
        x = torch.randn(64, 1, size, size)
        with torch.inference_mode():
            assert torch.allclose(_infer(net, x), net(x), atol=1e-6, rtol=0)


def test_every_reported_dot_lies_where_the_metrics_count_it():
    """The classes are read at the canonical scale and a macro photo's dots re-centred on its own
    pixels: a dot whose final centre is background in the photo's label map is refused, so the dots
    table and ``dot_count`` always agree (data.metrics.dots_in_roi)."""
    rng = np.random.default_rng(5)
    ppm = 40.0
    lstar = _skin((400, 400), rng)
    xy = _grid(400, 400, 50)
    _stamp(lstar, xy, 0.14 * ppm, 20.0)
    labels = np.full(lstar.shape, SCALP, np.uint8)
    x0, y0 = np.round(xy[7]).astype(int)
    labels[y0, x0] = 0  # one pixel of background under a dot's centre: scalp at the canonical scale
    det = _detect(lstar, labels, ppm)
    assert dots_in_roi(det.geometry.xy, labels != 0).all()
    assert len(det.geometry) == len(xy) - 1
    gone = np.hypot(*(det.rejected.xy - xy[7]).T) < 2
    assert gone.any() and (det.rejected.reason[gone] & REJECT["not_scalp"]).all()
