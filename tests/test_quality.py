"""The quality gate's second look: the segmenter asked twice about the same pixels."""

import numpy as np
import pytest
from PIL import Image

from data.config import ConfigError
from data.metrics import BACKGROUND, HAIR, SCALP
from pipeline.one_photo.assess import Assessor
from pipeline.one_photo.quality import (
    MaskWobble,
    QualitySettings,
    check_quality,
    mask_wobble,
    second_look,
    second_look_window,
)
from pipeline.one_photo.segment import Segmentation
from pipeline.one_photo.settings import load_assess_settings


def test_mask_wobble_counts_agreement_and_fractions():
    first = np.array([[SCALP, SCALP, HAIR, HAIR], [BACKGROUND, BACKGROUND, SCALP, SCALP]], np.uint8)
    second = np.array([[SCALP, HAIR, HAIR, HAIR], [BACKGROUND, SCALP, SCALP, SCALP]], np.uint8)
    w = mask_wobble(first, second)
    # either calls 7 pixels scalp or hair; 5 of them alike
    assert w.agreement == pytest.approx(5 / 7)
    assert w.scalp_fraction_first == pytest.approx(4 / 6)
    assert w.scalp_fraction_second == pytest.approx(4 / 7)
    assert w.wobble_pp == pytest.approx(100 * (4 / 6 - 4 / 7))
    same = mask_wobble(first, first)
    assert same.agreement == 1.0 and same.wobble_pp == 0.0


def test_mask_wobble_without_scalp_or_hair_is_none():
    bg = np.zeros((4, 4), np.uint8)
    some = bg.copy()
    some[1, 1] = SCALP
    assert mask_wobble(bg, some) is None and mask_wobble(some, bg) is None
    with pytest.raises(ValueError, match="shape"):
        mask_wobble(bg, np.zeros((4, 5), np.uint8))


def test_second_look_window_is_the_centre_quarter():
    rows, cols = second_look_window((100, 60))
    assert (rows.start, rows.stop, cols.start, cols.stop) == (25, 75, 15, 45)
    rows, cols = second_look_window((1, 1))
    assert rows.stop - rows.start == 1 and cols.stop - cols.start == 1


def test_second_look_sees_a_mirrored_darker_photo_and_puts_labels_back():
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[:, :3] = 200  # a bright band on the left
    seen = []

    def segment(im):
        seen.append(im.copy())
        return np.where(im[..., 0] > 100, SCALP, HAIR).astype(np.uint8)

    labels = second_look(rgb, segment, -0.5)
    # the segmenter saw the band on the right, darker (half a stop in linear light: 200 -> ~164)
    assert seen[0][:, -3:, 0].max() < 200 and seen[0][:, -3:, 0].min() > 150 and seen[0][:, :7].max() == 0
    # and the labels are back where the band is
    assert (labels[:, :3] == SCALP).all() and (labels[:, 3:] == HAIR).all()


def test_check_quality_warns_when_the_looks_disagree():
    rgb = np.full((40, 40, 3), 150, np.uint8)
    labels = np.full((40, 40), SCALP, np.uint8)
    lstar = np.full((40, 40), 60.0, np.float32)
    s = QualitySettings()
    shaky = MaskWobble(agreement=0.7, scalp_fraction_first=0.8, scalp_fraction_second=0.6)
    steady = MaskWobble(agreement=0.98, scalp_fraction_first=0.8, scalp_fraction_second=0.79)
    bad = check_quality(rgb, lstar, labels, None, "global", s, wobble=shaky)
    assert "mask_unsure" in bad.warnings and not bad.ok
    assert bad.to_json()["scalp_fraction_wobble_pp"] == pytest.approx(20.0)
    good = check_quality(rgb, lstar, labels, None, "global", s, wobble=steady)
    assert "mask_unsure" not in good.warnings and good.ok
    assert good.mask_agreement == pytest.approx(0.98)
    none = check_quality(rgb, lstar, labels, None, "global", s)
    assert none.scalp_fraction_wobble_pp is None and none.to_json()["mask_agreement"] is None


def test_wobble_setting_is_validated():
    with pytest.raises(ConfigError, match="max_scalp_fraction_wobble_pp"):
        load_assess_settings(None, ["quality.max_scalp_fraction_wobble_pp=0"])


class _Stub:
    """A segmenter that calls scalp whatever is brighter than mid-grey in red, hair the rest."""

    def describe(self):
        return {"name": "stub", "version": "0", "sha256": "-", "path": "-", "kind": "model", "precision": "float32"}

    def __call__(self, rgb, view="closeup"):
        labels = np.where(rgb[..., 0] > 128, SCALP, HAIR).astype(np.uint8)
        return Segmentation(labels, np.zeros((0, 2)), np.zeros(0), "model")


@pytest.mark.parametrize("scene, unsure", [("stripes", False), ("ramp", True)])
def test_assessment_refuses_a_mask_that_moves(tmp_path, scene, unsure):
    if scene == "ramp":  # left dark, right bright: mirrored, the other half is scalp
        img = np.tile(np.linspace(60, 250, 320)[None, :, None], (240, 1, 3)).astype(np.uint8)
    else:  # the same labels whichever way round and half a stop darker
        img = np.full((240, 320, 3), 60, np.uint8)
        img[:, (np.arange(320) // 8) % 2 == 1] = 250
        img[:, 160:] = img[:, :160][:, ::-1]  # left-right symmetric
    path = tmp_path / f"{scene}.png"
    Image.fromarray(img).save(path)
    base = ["segment.method=classical", "view=global", "segment.max_px_per_mm=100"]  # segmented at its own scale
    assessor = Assessor(load_assess_settings(None, base))
    assessor.segmenter = _Stub()
    a = assessor.assess_file(path)
    q = a.quality.to_json()
    assert ("mask_unsure" in a.quality.warnings) == unsure
    if unsure:
        assert q["scalp_fraction_wobble_pp"] > 10 and not a.quality.ok
    else:
        assert q["scalp_fraction_wobble_pp"] == pytest.approx(0.0) and q["mask_agreement"] == pytest.approx(1.0)
    off = Assessor(load_assess_settings(None, base + ["quality.second_look=false"]))
    off.segmenter = _Stub()
    assert off.assess_file(path).quality.scalp_fraction_wobble_pp is None


def test_report_says_why_the_mask_is_not_trusted(tmp_path):
    from pipeline.report.assessment import limits
    from pipeline.report.folders import AssessmentFolder

    doc = {
        "photo": {"view": "closeup"},
        "calibration": {"px_per_mm": 20.0, "colour_source": "card"},
        "quality": {"ok": False, "warnings": ["mask_unsure"], "scalp_fraction_wobble_pp": 23.4},
        "metrics": {"dot_count": 10},
        "model": {"version": "v1"},
    }
    said = " ".join(limits(AssessmentFolder(tmp_path, doc, None)))
    assert "did not agree with itself" in said and "23 percentage points" in said
    doc["quality"] = {"ok": True, "warnings": [], "scalp_fraction_wobble_pp": 1.0}
    assert "did not agree" not in " ".join(limits(AssessmentFolder(tmp_path, doc, None)))


def test_looks_that_keep_the_fraction_but_not_the_pixels_are_unsure():
    rgb = np.full((40, 40, 3), 150, np.uint8)
    labels = np.full((40, 40), HAIR, np.uint8)
    lstar = np.full((40, 40), 60.0, np.float32)
    # specks of "hair" in a room, somewhere else each time: the fraction (no scalp) stays put
    specks = MaskWobble(agreement=0.2, scalp_fraction_first=0.0, scalp_fraction_second=0.0)
    q = check_quality(rgb, lstar, labels, None, "global", QualitySettings(), wobble=specks)
    assert "mask_unsure" in q.warnings and q.scalp_fraction_wobble_pp == 0.0
    relaxed = QualitySettings(min_mask_agreement=0.1)
    assert "mask_unsure" not in check_quality(rgb, lstar, labels, None, "global", relaxed, wobble=specks).warnings


def test_a_close_up_needs_a_fifth_of_its_frame_to_be_scalp_or_hair():
    """A close-up frames the scalp: a sliver called scalp (a wall and an ear) is refused as no_scalp;
    the same sliver in a whole-head view is a head far away and is kept."""
    rgb = np.full((100, 100, 3), 150, np.uint8)
    lstar = np.full((100, 100), 60.0, np.float32)
    labels = np.full((100, 100), BACKGROUND, np.uint8)
    labels[:, :10] = SCALP  # 10% of the frame
    s = QualitySettings()
    closeup = check_quality(rgb, lstar, labels, None, "closeup", s)
    assert "no_scalp" in closeup.warnings and not closeup.ok
    assert "no_scalp" not in check_quality(rgb, lstar, labels, None, "global", s).warnings
    labels[:, :30] = SCALP  # 30%: a close-up with the card beside it
    assert "no_scalp" not in check_quality(rgb, lstar, labels, None, "closeup", s).warnings
    relaxed = QualitySettings(min_roi_fraction_closeup=0.05)
    labels[:, 10:30] = BACKGROUND
    assert "no_scalp" not in check_quality(rgb, lstar, labels, None, "closeup", relaxed).warnings


class _Sliver(_Stub):
    """A segmenter that calls scalp whatever is brighter than mid-grey in red, background the rest."""

    def __call__(self, rgb, view="closeup"):
        labels = np.where(rgb[..., 0] > 128, SCALP, BACKGROUND).astype(np.uint8)
        return Segmentation(labels, np.zeros((0, 2)), np.zeros(0), "model")


def test_a_photo_assumed_a_close_up_with_a_sliver_of_scalp_says_how_to_assess_it(tmp_path):
    """No card and no scale: the photo is assumed a close-up; a tenth of it scalp is refused, and the
    warning says how to assess a whole-head photo instead; given as one, it is kept."""
    img = np.full((240, 320, 3), 60, np.uint8)
    img[:, :32] = 200  # the stub calls this scalp: 10%
    path = tmp_path / "sliver.png"
    Image.fromarray(img).save(path)
    base = ["segment.method=classical", "segment.max_px_per_mm=100", "quality.second_look=false"]
    results = {}
    for view in ("auto", "global"):
        assessor = Assessor(load_assess_settings(None, base + [f"view={view}"]))
        assessor.segmenter = _Sliver()
        results[view] = assessor.assess_file(path)
    assumed = results["auto"]
    assert assumed.view == "closeup" and "no_scalp" in assumed.quality.warnings and not assumed.quality.ok
    assert any("pass --set view=global" in w for w in assumed.warnings)
    assert "no_scalp" not in results["global"].quality.warnings
