"""Close-up and series generator: truth consistency, determinism, content."""

import hashlib
import json

import cv2
import numpy as np
import pandas as pd
import pytest

from data.card import load_card
from data.config import load_settings
from data.flags import load_flag_settings, measurable_dots
from data.metrics import PlaneScale, photo_metrics
from data.synth.camera import draw_camera
from data.synth.closeup import single_closeup
from data.synth.generate import generate_images, generate_series, item_rng, write_manifest
from data.synth.scene import decode_lstar16
from data.synth.settings import SynthSettings
from data.synth.visibility import image_px_per_mm

SMALL = ["image.width=400", "image.height=300", "camera.px_per_mm=[10, 16]"]


@pytest.fixture(scope="module")
def cfg():
    return load_settings(SynthSettings, None, SMALL, default="synth/closeup.yaml")


@pytest.fixture(scope="module")
def made(cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    items = list(generate_images(out, 4, cfg, load_card(), load_flag_settings(), seed=11))
    write_manifest(out, [m.row for m in items])
    return out, items


def _read(folder):
    truth = json.loads((folder / "truth.json").read_text())
    mask = cv2.imread(str(folder / "mask.png"), cv2.IMREAD_UNCHANGED)
    dots = pd.read_csv(folder / "dots.csv")
    return truth, mask, dots


def test_files_and_schema(made):
    out, items = made
    for it in items:
        truth, mask, dots = _read(it.folder)
        assert truth["schema"] == "smp-synth-truth/1" and truth["view"] == "closeup"
        assert 10 <= truth["px_per_mm"] <= 16
        assert mask.shape == (300, 400) and set(np.unique(mask)) <= {0, 1, 2, 255}
        for col in ("dot_id", "x", "y", "diameter_mm", "L", "a", "b", "blue_shift", "faded", "spread"):
            assert col in dots.columns
        assert dots.dot_id.is_unique
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 4 and set(manifest.split) <= {"train", "val", "test"}


def test_mask_and_dots_agree(made):
    for it in made[1]:
        _, mask, dots = _read(it.folder)
        ix = np.round(dots[["x", "y"]].to_numpy()).astype(int)
        cls = mask[ix[:, 1], ix[:, 0]]
        # every listed dot is visible scalp or lies under hair, never on the card/background
        assert np.all(cls > 0)
        # a dot whose disc is mostly under hair sits on hair in the mask (the mask is the hair
        # coverage warped like the photo and cut at one half), and the photo does not show it
        under = dots.hair_cover.to_numpy() >= 0.75
        if under.sum() >= 5:
            assert (cls[under] == 2).mean() > 0.9
        assert not dots.visible[dots.hair_cover >= 0.5].any()
        shown = (dots.hair_cover < 0.5) & (dots.contrast_seen >= 3.0)
        # ... and of the others, exactly those the finished photo shows beyond its own skin's specks
        beyond = ~(dots.speck_dL.notna() & ~(dots.contrast_photo.fillna(-np.inf) >= dots.speck_dL))
        assert (dots.visible == (shown & beyond)).all()
        # what a dot takes from the photo: its optical contrast on bare skin, nothing under dense hair
        bare, covered = dots[dots.hair_cover < 0.01], dots[dots.hair_cover > 0.9]
        if len(bare) >= 5:
            assert np.median(bare.contrast_own / bare.contrast_seen) == pytest.approx(1.0, abs=0.1)
        if len(covered) >= 5:
            assert np.median(covered.contrast_own / covered.contrast_seen) < 0.1
        assert dots.speck_dL.notna().any()
        # the true dot is darker than its skin and sized as configured (spread dots larger)
        assert (dots.contrast_dL > 0).mean() > 0.99
        assert dots.diameter_mm.between(0.07, 1.0).all()


def test_metrics_recomputed_from_files(made):
    rules = load_flag_settings()
    for it in made[1]:
        truth, mask, dots = _read(it.folder)
        lstar = decode_lstar16(cv2.imread(str(it.folder / "clean_lstar.png"), cv2.IMREAD_UNCHANGED))
        skin = decode_lstar16(cv2.imread(str(it.folder / "skin_lstar.png"), cv2.IMREAD_UNCHANGED))
        scale = PlaneScale.from_homography(np.linalg.inv(np.array(truth["plane_to_image"])), truth["px_per_mm"])
        # the truth counts what the photo shows: visible dots, flags on those large enough to measure
        dots = dots[dots.visible.astype(bool)]
        flags = {k: dots[k].to_numpy(bool) for k in ("blue_shift", "faded", "spread")}
        hm = np.array(truth["plane_to_image"])
        ppm_at = image_px_per_mm(hm, dots[["x_mm", "y_mm"]].to_numpy())
        # hair the photo does not show (255) is the scalp it lies on in the photo's metrics
        m = photo_metrics(
            np.where(mask == 255, 1, mask).astype(np.uint8),
            dots[["x", "y"]].to_numpy(),
            dots.diameter_mm.to_numpy(),
            flags,
            lstar,
            skin,
            scale,
            rules.show_through_dl,
            show_through_sigma_mm=rules.viewing_sigma_mm,
            measurable=measurable_dots(dots.diameter_mm.to_numpy() * ppm_at, rules),
        ).to_dict()
        for key, value in truth["metrics"].items():
            if value is None:
                assert m[key] is None, key
            else:
                assert m[key] == pytest.approx(value, rel=2e-3, abs=2e-3), key


def test_density_matches_the_placed_pattern(made):
    # density from the truth must agree with counting dots per true plane area
    for it in made[1]:
        truth, mask, dots = _read(it.folder)
        if truth["metrics"]["dot_count"] and truth["metrics"]["dot_count"] > 50:
            d = truth["metrics"]["dot_density_per_cm2"]
            assert 10 < d < 400


def test_same_seed_same_bytes_and_different_seeds_differ(cfg, tmp_path):
    card, rules = load_card(), load_flag_settings()

    def digest(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    a = [digest(m.folder) for m in generate_images(tmp_path / "a", 2, cfg, card, rules, seed=5)]
    b = [digest(m.folder) for m in generate_images(tmp_path / "b", 2, cfg, card, rules, seed=5)]
    c = [digest(m.folder) for m in generate_images(tmp_path / "c", 2, cfg, card, rules, seed=6)]
    assert a == b
    assert a[0]["photo.jpg"] != c[0]["photo.jpg"] and a[0]["mask.png"] != c[0]["mask.png"]
    assert a[0]["photo.jpg"] != a[1]["photo.jpg"]


def test_whole_card_keeps_every_colour_patch_in_frame():
    """``card.whole``: the paper's four corners in frame, as the product's card detection finds
    them (by default only the marker is kept in view and patches are cut off)."""
    from pipeline.one_photo.calibration import calibrate

    rules, card = load_flag_settings(), load_card()
    paper = np.array([[-3, -3, 1], [45, -3, 1], [45, 13, 1], [-3, 13, 1]], float)
    inside, used = {}, {}
    for whole in (False, True):
        cfg = load_settings(
            SynthSettings,
            None,
            [
                "image.width=1280",
                "image.height=960",
                "camera.px_per_mm=[17, 17]",
                "card.probability=1",
                f"card.whole={str(whole).lower()}",
            ],
            default="synth/closeup.yaml",
        )
        inside[whole], used[whole] = [], []
        for i in range(4):
            cal = calibrate(single_closeup(item_rng(21, i), cfg, card, rules, draw_camera).photo, card)
            p = paper @ np.asarray(cal.detection.card_to_image, float).T
            xy = p[:, :2] / p[:, 2:]
            inside[whole].append(bool(((xy >= 0) & (xy <= [1279, 959])).all()))
            used[whole].append(len(cal.colour.patches_used))
    assert all(inside[True]) and min(used[True]) >= 11  # a patch may still clip in a bright exposure
    assert not all(inside[False]) and min(used[False]) < min(used[True])


def test_whole_card_lies_inside_a_turned_frame():
    """In a client series the camera turns against the scalp: the card must lie inside the turned
    frame, not only inside its bounding box."""
    from data.synth.closeup import _inside_convex, draw_card_pose

    cfg = load_settings(SynthSettings, None, ["card.whole=true", "card.probability=1"], default="synth/closeup.yaml")
    a = np.deg2rad(35.0)
    frame = np.array([[-37.5, -28], [37.5, -28], [37.5, 28], [-37.5, 28]]) @ np.array(
        [[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]
    ) + [60.0, 50.0]
    paper = np.array([[-3, -3], [45, -3], [45, 13], [-3, 13]], float)
    for seed in range(30):
        pose = draw_card_pose(np.random.default_rng(seed), cfg, None, frame)
        c, s = np.cos(np.deg2rad(pose.angle_deg)), np.sin(np.deg2rad(pose.angle_deg))
        corners = paper @ np.array([[c, s], [-s, c]]) + pose.centre_mm
        assert _inside_convex(corners, frame, 0.5), seed


def test_card_truth_matches_rendered_marker(cfg):
    rules, card = load_flag_settings(), load_card()
    found = 0
    for i in range(4):
        scene = single_closeup(item_rng(3, i), cfg, card, rules, draw_camera)
        if not scene.card["present"]:
            continue
        params = cv2.aruco.DetectorParameters()
        params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
        det = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50), params)
        corners, ids, _ = det.detectMarkers(cv2.cvtColor(scene.photo, cv2.COLOR_RGB2GRAY))
        if ids is None:
            continue
        found += 1
        assert int(ids.ravel()[0]) == scene.card["marker_id"]
        err = np.abs(corners[0].reshape(4, 2) - np.asarray(scene.card["marker_corners_px"])).max()
        assert err < 1.0
    assert found >= 1


def test_series_keeps_dot_ids_and_fades(cfg, tmp_path):
    card, rules = load_card(), load_flag_settings()
    scfg = load_settings(
        SynthSettings,
        None,
        SMALL
        + [
            "series.followups=[4, 4]",
            "series.touchup_probability=0",
            "series.half_life_days=[200, 200]",
            "card.probability=0",
            "dots.coverage=[1, 1]",
        ],
        default="synth/closeup.yaml",
    )
    items = list(generate_series(tmp_path, 1, scfg, card, rules, seed=2))
    doc = json.loads((tmp_path / "client_000" / "series.json").read_text())
    kinds = [v["kind"] for v in doc["visits"]]
    assert kinds[0] == "baseline" and "session" in kinds and kinds.count("follow-up") == 4
    dates = [v["date"] for v in doc["visits"]]
    assert dates == sorted(dates)
    base = pd.read_csv(items[0].folder / "dots.csv")
    assert len(base) == 0
    # contrast of the same dots falls over follow-ups; ids are stable
    sess = [i for i, k in enumerate(kinds) if k == "session"][-1]
    last = len(kinds) - 1
    a = pd.read_csv(items[sess].folder / "dots.csv").set_index("dot_id")
    b = pd.read_csv(items[last].folder / "dots.csv").set_index("dot_id")
    common = a.index.intersection(b.index)
    assert len(common) > 20
    assert b.loc[common, "contrast_dL"].median() < 0.8 * a.loc[common, "contrast_dL"].median()
    assert doc["truth"]["half_life_days"] == pytest.approx(200)


def test_photo_visibility_compares_a_dot_with_the_photos_own_specks():
    from data.synth.visibility import photo_contrast, photo_lstar, speck_levels

    rng = np.random.default_rng(5)
    # grey skin with noise of sd 2 levels and three dark discs of radius 3 px: 40, 12 and 2 levels
    img = np.clip(150 + rng.normal(0, 2.0, (200, 300)), 0, 255)
    centres = np.array([[50.0, 100.0], [150.0, 100.0], [250.0, 100.0]])
    yy, xx = np.mgrid[:200, :300]
    for (x, y), depth in zip(centres, (40, 12, 2)):
        img[(xx - x) ** 2 + (yy - y) ** 2 <= 9] -= depth
    photo = np.repeat(img.astype(np.uint8)[..., None], 3, axis=2)
    lstar = photo_lstar(photo)
    exclude = np.zeros((200, 300), bool)
    for x, y in centres:
        exclude |= (xx - x) ** 2 + (yy - y) ** 2 <= 25
    c = photo_contrast(lstar, centres, np.full(3, 3.0), exclude)
    assert c[0] > c[1] > c[2] > -1.0
    bare = ~exclude
    speck = speck_levels(lstar, np.full(3, 3.0), bare, exclude, 99.9)
    assert np.allclose(speck, speck[0]) and 0 < speck[0] < c[1]
    assert c[2] < speck[0]  # 2 levels under noise of 2: no better than the skin's own specks
    # a photo with almost no bare skin cannot say: no photo test (NaN), not a guess
    assert np.isnan(speck_levels(lstar, np.full(3, 3.0), np.zeros_like(bare), exclude, 99.9)).all()


def test_red_hair_is_drawn_red(tmp_path):
    # red (copper, auburn) hair is asked for with hair.colours: its strands are redder and yellower
    # than the skin under them, black hair's are not
    chroma = {}
    for colour in ("red", "black"):
        cfg = load_settings(
            SynthSettings,
            None,
            SMALL
            + [f"hair.colours=[{colour}]", "hair.long_fraction=[0.3, 0.3]", "hair.follicle_density_per_cm2=[150, 150]"],
            default="synth/closeup.yaml",
        )
        (m,) = generate_images(tmp_path / colour, 1, cfg, load_card(), load_flag_settings(), seed=3)
        truth, mask, _ = _read(m.folder)
        assert truth["params"]["hair"]["colour"] == colour
        lab = cv2.cvtColor(cv2.imread(str(m.folder / "photo.jpg")).astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
        hair, skin = lab[mask == 2], lab[mask == 1]
        assert len(hair) > 200
        chroma[colour] = np.median(hair[:, 1]) - np.median(skin[:, 1]), np.median(hair[:, 2]) - np.median(skin[:, 2])
    assert chroma["red"][0] > chroma["black"][0] + 3 and chroma["red"][1] > chroma["black"][1] + 3


def test_hair_the_photo_does_not_show_is_left_out_of_the_truth():
    from data.synth.visibility import unseen_hair

    rng = np.random.default_rng(2)
    # skin of L* ~60 with pixel noise; one dark strand, one strand of the skin's own colour
    base = np.clip(150 + rng.normal(0, 3.0, (120, 160, 1)), 0, 255) * np.array([[[1.0, 0.8, 0.65]]])
    hair = np.zeros((120, 160), bool)
    hair[30, 10:150] = True  # dark
    hair[80, 10:150] = True  # the skin's own colour: not in the photo
    photo = base.copy()
    photo[30, 10:150] *= 0.6
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    bare = ~cv2.dilate(hair.view(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    unseen = unseen_hair(photo, hair, bare, 99.0, min_places=200)
    assert not unseen[30].any() and unseen[80, 10:150].mean() > 0.9
    # no bare skin to compare with: nothing is called unseen
    assert not unseen_hair(photo, hair, np.zeros_like(bare), 99.0).any()


@pytest.mark.parametrize("quantile, expect_seen", [(None, True), (99.99, False)])
def test_hair_visibility_threshold_decides_the_hair_label(quantile, expect_seen):
    # wiring: without the test every hair pixel is labelled hair; with one no strand passes, hair
    # is labelled 255 (not labelled) and counted as scalp by the metrics; the rest is unchanged
    cfg = load_settings(
        SynthSettings,
        None,
        SMALL + ["hair.follicle_density_per_cm2=[150, 150]", "hair.colours=[blond]", "skin.fitzpatrick=[2, 2]"],
        default="synth/closeup.yaml",
    )
    rules = load_flag_settings(overrides=[f"hair_visible_quantile={'null' if quantile is None else quantile}"])
    from data.synth.scene import scene_metrics

    scene = single_closeup(item_rng(4, 0), cfg, load_card(), rules, draw_camera)
    hair, unseen = int((scene.mask == 2).sum()), int((scene.mask == 255).sum())
    assert hair + unseen > 500
    assert (unseen == 0) if expect_seen else (unseen > hair)
    m = scene_metrics(scene, rules)
    scalp, roi = int((scene.mask == 1).sum()), int((scene.mask > 0).sum())
    assert m["scalp_fraction"] == pytest.approx((scalp + unseen) / roi, abs=1e-6)


def test_thin_and_faint_strands_are_labelled_along_their_line():
    # a strand narrower than a pixel, or a vellus hair (a third of the opacity), is drawn fainter in
    # the photo, but the truth labels the pixels its line passes through, like any strand
    from dataclasses import replace

    from data.synth.hair import Follicles, draw_hair, render_hair

    cfg = load_settings(SynthSettings, None, SMALL, default="synth/closeup.yaml")
    p = draw_hair(np.random.default_rng(0), cfg.hair)
    follicles = Follicles(xy_mm=np.array([[5.0, 5.0], [12.0, 8.0]]), has_hair=np.array([False, False]))
    for name, q in (
        ("vellus", replace(p, vellus_fraction=1.0, vellus_width_mm=(0.05, 0.05), vellus_length_mm=(1.0, 1.0))),
        (
            "thin strand",
            replace(
                p,
                vellus_fraction=0.0,
                width_mm=0.02,
                stubble_length_mm=(1.0, 1.0),
                long_fraction=0.0,
                cut_end_fraction=0.0,
            ),
        ),
    ):
        fol = follicles if name == "vellus" else Follicles(follicles.xy_mm, np.array([True, True]))
        layer = render_hair(np.random.default_rng(0), q, fol, (200, 300), 20.0)
        cov = layer.composite(np.full((200, 300, 3), 0.3, np.float32))
        assert cov.max() < 0.5, name  # as drawn: too faint to be hair by coverage
        label = layer.label_coverage() >= 0.5
        assert label.sum() > 2 * 15, name  # two ~1 mm strands at 20 px/mm, one pixel wide
        assert (label <= (cov > 0)).all(), name  # only where the strands lie
