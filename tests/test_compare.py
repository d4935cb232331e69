"""smp compare: metric deltas, pictures, output files, CLI (pipeline/two_photos/compare.py,
pipeline/commands/compare.py)."""

import dataclasses
import json

import cv2
import numpy as np
import pandas as pd
import pytest

from data.card import load_card
from data.config import load_settings
from data.flags import load_flag_settings
from data.metrics import PhotoMetrics
from data.synth.generate import item_rng
from data.synth.series import render_series
from data.synth.settings import SynthSettings
from pipeline.cli import main
from pipeline.one_photo.assess import Assessor
from pipeline.one_photo.calibration import ScaleCalibration
from pipeline.one_photo.settings import load_assess_settings
from pipeline.two_photos.compare import LINK_COLUMNS, SCHEMA, compare_assessments, write_comparison
from pipeline.two_photos.link import DotLinks, link_dots
from pipeline.two_photos.pictures import (
    LOST_COLOUR,
    NEW_COLOUR,
    darkening_map,
    render_difference_overlay,
    render_side_by_side,
)
from pipeline.two_photos.register import register_photos
from pipeline.two_photos.settings import RegisterSettings

# session 1 -> session 2 of a client: the second session adds dots between the first ones and
# the card lies elsewhere; light skin and short sparse hair so that the (fast) classical
# detector finds the dots.
SERIES = [
    "image.width=600",
    "image.height=450",
    "camera.px_per_mm=[13, 15]",
    "series.sessions=[2, 2]",
    "series.followups=[0, 0]",
    "series.touchup_probability=0",
    "dots.coverage=[1, 1]",
    "card.probability=1",
    "skin.fitzpatrick=[1, 3]",
    "hair.long_fraction=[0, 0.05]",
    "hair.follicle_density_per_cm2=[20, 60]",
    "dots.contrast_dl=[22, 36]",
    "series.hair_length_scale=[0.3, 0.5]",
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """PNG files of session 1 and session 2, and their scenes (truth)."""
    cfg = load_settings(SynthSettings, None, SERIES, default="synth/closeup.yaml")
    scenes, _ = render_series(item_rng(47, 0), cfg, load_card(), load_flag_settings())
    out = tmp_path_factory.mktemp("compare")
    paths = []
    for name, (_, scene) in zip(("before", "after"), scenes[1:3]):
        path = out / f"{name}.png"
        path.write_bytes(cv2.imencode(".png", np.ascontiguousarray(scene.photo[..., ::-1]))[1].tobytes())
        paths.append(path)
    return paths, [s for _, s in scenes[1:3]]


@pytest.fixture(scope="module")
def compared(photos):
    paths, _ = photos
    assessor = Assessor(load_assess_settings(None, ["segment.method=classical"]))
    before, after = (assessor.assess_file(p) for p in paths)
    s = RegisterSettings()
    bxy, axy = before.dots[["x", "y"]].to_numpy(), after.dots[["x", "y"]].to_numpy()
    reg = register_photos(
        before.photo.rgb,
        after.photo.rgb,
        s,
        before_dots_xy=bxy,
        after_dots_xy=axy,
        px_per_mm=before.calibration.px_per_mm,
        before_mask=before.labels > 0,
        after_mask=after.labels > 0,
    )
    links = link_dots(
        bxy,
        axy,
        reg.after_to_before,
        s,
        px_per_mm=before.calibration.px_per_mm,
        before_valid=before.labels > 0,
        after_valid=after.labels > 0,
    )
    return before, after, reg, links


def test_metric_deltas_and_headline(compared):
    before, after, reg, links = compared
    c = compare_assessments(before, after, reg, links)
    numeric = [f.name for f in dataclasses.fields(PhotoMetrics)]
    assert set(c.metrics) == set(numeric)
    mb, ma = before.metrics.to_dict(), after.metrics.to_dict()
    for k, v in c.metrics.items():
        assert v["before"] == mb[k] and v["after"] == ma[k]
        if mb[k] is not None and ma[k] is not None:
            assert v["delta"] == pytest.approx(ma[k] - mb[k])
    h = c.headline
    assert h["show_through_reduction"] == pytest.approx(mb["show_through"] - ma["show_through"])
    assert h["dots_added"] == len(links.new_idx) and h["dots_lost"] == len(links.lost_idx)
    # one definition of the dots in the area both photos show: their counts and change follow from it
    assert h["common_dots_before"] == h["dots_linked"] + h["dots_lost"]
    assert h["common_dots_after"] == h["dots_linked"] + h["dots_added"]
    assert h["common_dot_change"] == h["common_dots_after"] - h["common_dots_before"] > 0
    assert h["dot_count_change"] == ma["dot_count"] - mb["dot_count"]
    assert h["density_change_per_cm2"] == pytest.approx(ma["dot_density_per_cm2"] - mb["dot_density_per_cm2"])
    # session 2 added dots: more dots, denser, less skin showing through
    assert h["dots_added"] > 100 and h["density_change_per_cm2"] > 0 and h["show_through_reduction"] > 0
    doc = json.loads(json.dumps(c.to_json()))
    assert doc["schema"] == SCHEMA and doc["links"]["linked"] == links.n_links
    assert doc["before"]["sha256"] == before.photo.sha256


def test_warnings_for_missing_scale_and_different_views(compared):
    before, after, reg, links = compared
    assert not any("no scale" in w for w in compare_assessments(before, after, reg, links).warnings)
    unscaled = dataclasses.replace(
        after,
        calibration=dataclasses.replace(after.calibration, scale=ScaleCalibration(px_per_mm=None, source="none")),
        view="global",
    )
    w = compare_assessments(before, unscaled, reg, None).warnings
    assert any("after photo has no scale" in x for x in w)
    assert any("different views" in x for x in w)


def test_poor_linking_is_warned(compared):
    before, after, reg, links = compared
    few = dataclasses.replace(
        links,
        before_idx=links.before_idx[:10],
        after_idx=links.after_idx[:10],
        residual_px=links.residual_px[:10] + 5.0,
    )
    w = compare_assessments(before, after, reg, few).warnings
    assert any("poor dot linking" in x for x in w) and any("poor registration" in x for x in w)


def test_new_dots_show_as_darkening(compared):
    before, after, reg, links = compared
    d = darkening_map(before, after, reg)
    assert d.shape == before.labels.shape
    valid = np.isfinite(d)
    assert 0.2 < valid.mean() < 0.9  # the card (in a new place each visit) is left out
    # session 2 added dots all over: the region looks darker, nowhere lighter
    assert np.nanmedian(d) > 0.4
    assert np.mean(d[valid] > 0.75) > 5 * np.mean(d[valid] < -0.75)
    xy = np.round(links.after_in_before[links.new_idx]).astype(int)
    ok = (xy[:, 0] >= 0) & (xy[:, 0] < d.shape[1]) & (xy[:, 1] >= 0) & (xy[:, 1] < d.shape[0])
    assert np.nanmedian(d[xy[ok, 1], xy[ok, 0]]) > 0.5
    # the other way round (after as the reference) the same change reads as lighter
    h = np.linalg.inv(reg.after_to_before)
    back = dataclasses.replace(reg, after_to_before=h / h[2, 2], before_size=reg.after_size, after_size=reg.before_size)
    assert np.nanmedian(darkening_map(after, before, back)) < -0.4


def test_write_comparison_files(compared, tmp_path):
    before, after, reg, links = compared
    out = write_comparison(compare_assessments(before, after, reg, links), tmp_path / "cmp")
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["schema"] == SCHEMA and "show_through_reduction" in doc["headline"]
    table = pd.read_csv(out / "links.csv")
    assert list(table.columns) == LINK_COLUMNS
    counts = table["status"].value_counts()
    assert counts["linked"] == links.n_links and counts["new"] == len(links.new_idx)
    assert counts.get("lost", 0) == len(links.lost_idx)
    linked = table[table.status == "linked"]
    assert (linked.residual_px >= 0).all() and linked.before_index.notna().all()
    side = cv2.imread(str(out / "side_by_side.png"))
    h, w = before.labels.shape
    assert side.shape[0] == h and side.shape[1] > 2 * w
    diff = cv2.imread(str(out / "difference.png"))
    assert diff.shape[:2] == (h, w)
    assert not list(out.glob(".*.tmp"))


def test_difference_overlay_colours_new_and_lost_dots():
    rgb = np.full((200, 300, 3), 180, np.uint8)
    b = np.array([[50.0, 50.0], [150.0, 50.0]])
    a_in_b = np.array([[50.0, 50.0], [250.0, 150.0]])
    links = DotLinks(
        before_idx=np.array([0]),
        after_idx=np.array([0]),
        residual_px=np.zeros(1),
        homography_residual_px=np.zeros(1),
        after_in_before=a_in_b,
        new_idx=np.array([1]),
        lost_idx=np.array([1]),
        before_in_view=np.ones(2, bool),
        after_in_view=np.ones(2, bool),
        px_per_mm=10.0,
        spacing_px=20.0,
        gate_px=8.0,
        relink_gate_px=3.0,
        warp_links=0,
    )
    img = render_difference_overlay(rgb, before_xy=b, after_xy_in_before=a_in_b, links=links, px_per_mm=10.0)
    assert img.shape == rgb.shape and img.dtype == np.uint8

    def near(colour, x, y):
        patch = img[y - 8 : y + 9, x - 8 : x + 9].reshape(-1, 3).astype(int)
        return np.any(np.abs(patch - np.array(colour)).max(axis=1) < 30)

    assert near(NEW_COLOUR, 250, 150) and not near(NEW_COLOUR, 150, 50)
    assert near(LOST_COLOUR, 150, 50) and not near(LOST_COLOUR, 250, 150)
    # the photo is dimmed away from the marks
    assert img[100, 30].max() < 140


def test_side_by_side_marks_what_after_does_not_show():
    a = np.full((100, 160, 3), 200, np.uint8)
    valid = np.zeros((100, 160), bool)
    valid[:, :80] = True
    img = render_side_by_side(a, a, after_valid=valid, px_per_mm=8.0)
    assert img.shape[0] == 100 and img.shape[1] > 320
    right = img[:, -160:]
    assert right[60, 120].max() < 60 and right[60, 40].min() > 150
    with pytest.raises(ValueError):
        render_side_by_side(a, a[:50])


# --------------------------------------------------------------------------- CLI


def test_cli_compare_writes_everything(photos, tmp_path, capsys):
    paths, _ = photos
    out = tmp_path / "run"
    code = main(
        [
            "compare",
            str(paths[0]),
            str(paths[1]),
            "--out",
            str(out),
            "--set",
            "segment.method=classical",
            "--set",
            "overlay=false",
        ]
    )
    assert code == 0
    for name in (
        "comparison.json",
        "links.csv",
        "side_by_side.png",
        "difference.png",
        "before/assessment.json",
        "after/assessment.json",
        "before/dots.csv",
    ):
        assert (out / name).is_file(), name
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["registration"]["method"] == "features+dots"
    assert doc["headline"]["dots_added"] > 100
    assert "show-through" in capsys.readouterr().out


def test_cli_missing_file_fails_in_one_line(photos, tmp_path, capsys):
    paths, _ = photos
    code = main(
        [
            "compare",
            str(paths[0]),
            str(tmp_path / "nope.jpg"),
            "--out",
            str(tmp_path / "o"),
            "--set",
            "segment.method=classical",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [f"smp compare: failed: {tmp_path / 'nope.jpg'}: no such file"]
    assert not (tmp_path / "o").exists()


def test_cli_unreadable_after_photo_keeps_the_before_assessment(photos, tmp_path, capsys):
    paths, _ = photos
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    out = tmp_path / "o"
    code = main(["compare", str(paths[0]), str(bad), "--out", str(out), "--set", "segment.method=classical"])
    assert code == 1 and "not an image file" in capsys.readouterr().err
    assert (out / "before" / "assessment.json").is_file() and not (out / "after").exists()
    assert not (out / "comparison.json").exists()


def test_cli_unregistrable_photos_keep_both_assessments_and_compare_what_needs_no_alignment(photos, tmp_path, capsys):
    paths, _ = photos
    blank = tmp_path / "blank.png"
    blank.write_bytes(cv2.imencode(".png", np.full((450, 600, 3), 150, np.uint8))[1].tobytes())
    out = tmp_path / "o"
    code = main(["compare", str(paths[0]), str(blank), "--out", str(out), "--set", "segment.method=classical"])
    cap = capsys.readouterr()
    assert code == 0 and "NOT registered" in cap.out
    warn = [line for line in cap.err.splitlines() if "could not be registered" in line]
    assert len(warn) == 1 and "too few features in the after photo" in warn[0] and "retake" in warn[0]
    for side in ("before", "after"):
        assert (out / side / "assessment.json").is_file() and (out / side / "dots.csv").is_file()
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["registered"] is False and doc["registration"] is None and doc["links"] is None
    assert "too few features in the after photo" in doc["registration_error"]
    # the figures that need no alignment are compared; nothing at the level of single dots is claimed
    before = json.loads((out / "before" / "assessment.json").read_text())["metrics"]
    assert doc["metrics"]["dot_count"]["before"] == before["dot_count"]
    assert doc["metrics"]["show_through"]["before"] == pytest.approx(before["show_through"], abs=1e-6)
    h = doc["headline"]
    assert h["dots_added"] is None and h["dots_lost"] is None and h["common_dots_after"] is None
    assert not (out / "side_by_side.png").exists() and not (out / "difference.png").exists()
    assert (out / "links.csv").read_text().startswith("status,")


def test_cli_bad_register_setting_is_a_user_error(photos, tmp_path, capsys):
    paths, _ = photos
    code = main(
        ["compare", str(paths[0]), str(paths[1]), "--out", str(tmp_path / "o"), "--register-set", "link.gate=7"]
    )
    assert code == 2
    assert "link.gate" in capsys.readouterr().err
