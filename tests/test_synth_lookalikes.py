"""Look-alikes of SMP dots, fresh dots and camera looks in the close-up generator."""

from dataclasses import replace

import cv2
import numpy as np
import pytest
import yaml

from data.card import load_card
from data.colour import luminance_lstar
from data.config import ConfigError, config_dir, load_settings
from data.flags import load_flag_settings
from data.synth.camera import draw_camera, isp_detail
from data.synth.closeup import Plane, aged_single_visit, new_client, single_closeup
from data.synth.dots import DotSet, dot_sprites
from data.synth.generate import item_rng
from data.synth.hair import Follicles, draw_hair, render_hair
from data.synth.settings import SynthSettings
from data.synth.skin import draw_skin, render_skin

SMALL = ["image.width=320", "image.height=240", "camera.px_per_mm=[14, 18]", "card.probability=0"]
ALL_ON = [
    "skin.crease_coverage=[0.8, 0.8]",
    "skin.junctions_per_cm2=[15, 15]",
    "skin.wrinkles_per_cm2=[2, 2]",
    "skin.freckles_per_cm2=[3, 3]",
    "skin.naevi_per_cm2=[2, 2]",
    "hair.cut_end_fraction=[0.6, 0.6]",
    "hair.fragments_per_cm2=[10, 10]",
    "hair.vellus_fraction=[0.6, 0.6]",
    "hair.follicle_density_per_cm2=[150, 150]",
    "hair.patterns=[diffuse]",
    "hair.long_fraction=[0, 0]",
    "dots.fresh_fraction=[0.5, 0.5]",
    "dots.scab_fraction=[1, 1]",
]
ALL_OFF = [
    "skin.crease_coverage=[0, 0]",
    "skin.wrinkles_per_cm2=[0, 0]",
    "skin.freckles_per_cm2=[0, 0]",
    "skin.naevi_per_cm2=[0, 0]",
    "hair.cut_end_fraction=[0, 0]",
    "hair.fragments_per_cm2=[0, 0]",
    "hair.vellus_fraction=[0, 0]",
    "hair.follicle_density_per_cm2=[150, 150]",
    "hair.patterns=[diffuse]",
    "hair.long_fraction=[0, 0]",
    "dots.fresh_fraction=[0, 0]",
]
KINDS = (
    "pores",
    "creases",
    "crease_junctions",
    "wrinkles",
    "freckles",
    "naevi",
    "cut_ends",
    "fragments",
    "vellus_hairs",
    "follicle_openings",
    "scabs",
)


def _cfg(*overrides: str) -> SynthSettings:
    return load_settings(SynthSettings, None, SMALL + list(overrides), default="synth/closeup.yaml")


def _scene(cfg: SynthSettings, seed: int = 3):
    return single_closeup(item_rng(seed, 0), cfg, load_card(), load_flag_settings(), draw_camera)


def test_every_lookalike_kind_is_drawn_and_counted():
    scene = _scene(_cfg(*ALL_ON))
    counts = scene.params["skin"]["lookalikes"]
    assert set(KINDS) <= set(counts)
    for kind in KINDS:
        assert counts[kind] > 0, kind
    off = _scene(_cfg(*ALL_OFF))
    for kind in (
        "creases",
        "crease_junctions",
        "wrinkles",
        "freckles",
        "naevi",
        "cut_ends",
        "fragments",
        "vellus_hairs",
        "scabs",
    ):
        assert off.params["skin"]["lookalikes"][kind] == 0, kind


def test_the_lookalike_table_lists_what_the_counts_count(tmp_path):
    from data.synth.scene import write_scene

    scene = _scene(_cfg(*ALL_ON))
    table = scene.lookalikes
    assert table.groupby("kind").size().to_dict() == {k: v for k, v in scene.params["skin"]["lookalikes"].items() if v}
    h, w = scene.mask.shape
    assert table.x.between(-0.5, w - 0.5).all() and table.y.between(-0.5, h - 0.5).all()
    write_scene(scene, tmp_path, fmt="png", jpeg_quality=90, seed=3, rules=load_flag_settings())
    import pandas as pd

    back = pd.read_csv(tmp_path / "lookalikes.csv")
    assert list(back.columns) == ["kind", "x", "y", "x_mm", "y_mm"] and len(back) == len(table)


def test_lookalikes_never_add_truth_dots():
    untreated = _scene(_cfg(*ALL_ON, "dots.coverage=[0, 0]"))
    assert len(untreated.dots) == 0 and untreated.params["skin"]["lookalikes"]["crease_junctions"] > 0
    on, off = _scene(_cfg(*ALL_ON, "dots.fresh_fraction=[0, 0]")), _scene(_cfg(*ALL_OFF))
    # the same client's dots, whatever look-alikes lie around them
    assert on.dots.dot_id.tolist() == off.dots.dot_id.tolist()
    assert np.allclose(on.dots[["x_mm", "y_mm"]].to_numpy(), off.dots[["x_mm", "y_mm"]].to_numpy())


def test_untreated_suite_has_no_truth_dots():
    spec = yaml.safe_load((config_dir() / "bench" / "suites.yaml").read_text())["suites"]
    s = spec["untreated"]
    assert s["n"] == 8 and s["seed"] == 1005
    cfg = load_settings(
        SynthSettings, None, list(s["set"]) + ["image.width=320", "image.height=240"], default=s["config"]
    )
    assert cfg.skin.fitzpatrick == (1, 6)
    for i in range(2):
        scene = _scene(cfg, seed=s["seed"] + i)
        assert len(scene.dots) == 0
        counts = scene.params["skin"]["lookalikes"]
        assert counts["pores"] > 0 and counts["creases"] > 0 and counts["cut_ends"] + counts["fragments"] > 0
    fresh = load_settings(SynthSettings, None, list(spec["fresh_macro"]["set"]), default="synth/closeup.yaml")
    assert fresh.camera.px_per_mm == (30.0, 60.0) and fresh.dots.fresh_fraction == (1.0, 1.0)
    assert spec["fresh_macro"]["seed"] == 1006 and spec["fresh_macro"]["n"] == 8


def test_fresh_dots_are_large_sharp_and_elongated():
    cfg = _cfg("dots.fresh_fraction=[1, 1]", "dots.coverage=[1, 1]", "dots.merged_fraction=[0, 0]")
    rng = np.random.default_rng(4)
    client = new_client(rng, cfg, Plane(20.0, 15.0, 15.0))
    dots = aged_single_visit(rng, cfg, client).dots
    assert len(dots) > 100 and dots.fresh.all()
    assert ((dots.elongation >= 1.5) & (dots.elongation <= 2.0)).all()
    assert ((dots.diameter_mm >= 0.2 - 1e-9) & (dots.diameter_mm <= 0.6 + 1e-9)).all()
    assert (dots.softness <= 0.2).all() and (dots.halo_redness > 0).all()
    healed = aged_single_visit(np.random.default_rng(4), _cfg("dots.fresh_fraction=[0, 0]"), client).dots
    assert not healed.fresh.any() and (healed.elongation <= 1.3).all()


@pytest.mark.parametrize("elongation", [1.0, 1.6, 2.0])
def test_rendered_dot_has_its_elongation(elongation):
    one = DotSet(
        dot_id=np.array([0]),
        xy_mm=np.array([[2.0, 2.0]]),
        radius_mm=np.array([0.2]),
        harmonics=np.zeros((1, 3, 2)),
        softness=np.array([0.05]),
        od_shape=np.ones((1, 3)),
        strength=np.ones(1),
        blue=np.zeros(1),
        shade=np.zeros(1, int),
        session=np.ones(1, int),
        merged_with=np.full(1, -1),
        elongation=np.array([elongation]),
        angle=np.array([0.7]),
        fresh=np.ones(1, bool),
        halo_mm=np.zeros(1),
        halo_redness=np.zeros(1),
        scab=np.zeros(1),
    )
    ((_, sp),) = dot_sprites(one, (200, 200), 50.0)
    ok = sp.flat_index[0] >= 0
    w = sp.profile[0][ok]
    y, x = np.divmod(sp.flat_index[0][ok], 200)
    xy = np.stack([x, y], 1) - np.average(np.stack([x, y], 1), axis=0, weights=w)
    ev = np.linalg.eigvalsh((xy * w[:, None]).T @ xy / w.sum())
    assert np.sqrt(ev[1] / ev[0]) == pytest.approx(elongation, rel=0.06)
    # the area (the equivalent diameter of the truth) does not change with elongation
    assert (w > 0.5).sum() == pytest.approx(np.pi * (0.2 * 50) ** 2, rel=0.05)


def test_crease_junction_contrast_is_as_configured():
    cfg = _cfg(
        "skin.crease_coverage=[1, 1]",
        "skin.junctions_per_cm2=[20, 20]",
        "skin.junction_contrast_dl=[15, 15]",
        "skin.crease_contrast_dl=[0, 0]",
        "skin.pore_density_per_cm2=[0, 0]",
        "skin.mottling=[0, 0]",
        "skin.redness=[0, 0]",
        "skin.freckles_per_cm2=[0, 0]",
        "skin.naevi_per_cm2=[0, 0]",
        "skin.wrinkles_per_cm2=[0, 0]",
    )
    skin = replace(draw_skin(np.random.default_rng(1), cfg.skin), tone_lab=(60.0, 10.0, 15.0), scar=False)
    layer = render_skin(np.random.default_rng(2), skin, (400, 400), 20.0, np.zeros((0, 2)), np.zeros(0))
    lstar = luminance_lstar(layer.albedo)
    j = np.round(layer.marks["crease_junctions"]).astype(int)
    j = j[(j >= 0).all(1) & (j < 400).all(1)]
    assert len(j) > 5
    contrast = np.median(lstar) - lstar[j[:, 1], j[:, 0]]
    assert np.median(contrast) == pytest.approx(15.0, abs=1.5)


def test_hair_lookalikes_are_hair_in_the_coverage():
    cfg = _cfg(
        "hair.fragments_per_cm2=[20, 20]",
        "hair.cut_end_fraction=[1, 1]",
        "hair.long_fraction=[0, 0]",
        "hair.colours=[black]",
    )
    hp = draw_hair(np.random.default_rng(0), cfg.hair)
    roots = np.random.default_rng(1).uniform(1, 19, (200, 2))
    fol = Follicles(xy_mm=roots, has_hair=np.ones(200, bool))
    layer = render_hair(np.random.default_rng(2), hp, fol, (400, 400), 20.0)
    cov = layer.coverage()
    assert len(layer.marks["cut_ends"]) == 200 and len(layer.marks["fragments"]) > 20
    for kind in ("cut_ends", "fragments"):
        p = np.clip(np.round(layer.marks[kind] * 20.0).astype(int), 0, 399)
        assert (cov[p[:, 1], p[:, 0]] >= 0.5).mean() > 0.8, kind


def test_same_seed_same_photo_with_every_look():
    cfg = _cfg(
        *ALL_ON,
        "camera.sharpen_probability=1",
        "camera.denoise_probability=1",
        "camera.macro_probability=1",
        "camera.colour_cast=[0.05, 0.05]",
    )
    a, b = _scene(cfg, 7), _scene(cfg, 7)
    assert np.array_equal(a.photo, b.photo) and np.array_equal(a.mask, b.mask)
    assert a.params["skin"]["lookalikes"] == b.params["skin"]["lookalikes"]
    assert a.dots.equals(b.dots)
    cam = a.params["camera"]
    assert cam["macro"] and 20 <= cam["tilt_deg"] <= 45 and cam["sharpen_amount"] > 0 and cam["denoise_threshold"] > 0
    assert not np.array_equal(a.photo, _scene(cfg, 8).photo)


def test_sharpening_halos_and_noise_reduction():
    step = np.full((40, 80, 3), 80, np.uint8)
    step[:, 40:] = 160
    sharp = step.copy()
    isp_detail(sharp, 1.0, 1.5, 0.0)
    assert sharp[:, :40].min() < 75 and sharp[:, 40:].max() > 165  # under- and overshoot: the halo
    noisy = (np.random.default_rng(0).normal(120, 2.0, (60, 60, 3))).clip(0, 255).astype(np.uint8)
    smooth = noisy.copy()
    isp_detail(smooth, 0.0, 1.5, 4.0)

    def luma_sd(img):
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(float).std()

    assert luma_sd(smooth) < 0.7 * luma_sd(noisy)  # the luma noise is smeared away
    # OpenCV's JPEG encoder subsamples chroma 4:2:0 unless told otherwise (what write_scene relies on)
    img = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    plain = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 60])[1]
    s420 = cv2.imencode(
        ".jpg",
        img,
        [cv2.IMWRITE_JPEG_QUALITY, 60, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420],
    )[1]
    assert plain.tobytes() == s420.tobytes()


@pytest.mark.parametrize(
    "override",
    [
        "dots.fresh_elongation=[0.8, 2.0]",
        "dots.elongation=[1.0, 5.0]",
        "dots.fresh_diameter_mm=[0.2, 3.0]",
        "skin.junction_contrast_dl=[10, 70]",
        "skin.crease_width_mm=[0.03, 0.9]",
        "skin.crease_cell_mm=[0.05, 1]",
        "hair.vellus_width_mm=[0.02, 0.5]",
        "hair.fragment_length_mm=[0.1, 9]",
        "camera.macro_tilt_deg=[20, 75]",
        "camera.colour_cast=[0, 0.8]",
        "camera.sharpen_probability=1.5",
        "camera.denoise_threshold=[1, 80]",
        "camera.px_per_mm=[30, 70]",
        "dots.fresh_fraction=[0.5, 1.2]",
        "skin.freckles_per_cm2=[-1, 1]",
    ],
)
def test_settings_refuse_impossible_values(override):
    with pytest.raises((ConfigError, ValueError)):
        _cfg(override)
