"""HTML reports of one photo's assessment and of a before/after comparison: content, escaping, missing pieces."""

import json
import re
import shutil

import cv2
import numpy as np
import pytest
from report_helpers import HOSTILE, _copy, _edit_json, _no_raw_values, _self_contained, _text

from pipeline.report import render_assessment, render_comparison
from pipeline.report.wording import fmt_pct

# --------------------------------------------------------------------------- assessment


def test_assessment_report(made):
    html = render_assessment(made["assessment"])
    images = _self_contained(html)
    _no_raw_values(html)
    doc = json.loads((made["assessment"] / "assessment.json").read_text())
    m = doc["metrics"]
    assert len(images) >= 2  # the overlay and crops of flagged dots
    text = _text(html)
    assert f"{m['dot_count']:,} dots found" in text
    assert fmt_pct(m["show_through"]) in text and "Show-through" in text
    assert "bare skin shows at normal viewing distance" in text
    assert "px per mm (from the calibration card)" in text
    assert "Methods and limits" in text and "What these numbers cannot say" in text
    assert doc["model"]["name"] in text or "classical" in text
    assert doc["photo"]["sha256"] in text
    n_flagged = sum(1 for f in ("blue_shift", "faded", "spread") if m[f"{f}_fraction"])
    assert n_flagged and html.count('class="crop"') == min(24, len(images) - 1)


def test_assessment_escapes_hostile_text(made, tmp_path):
    folder = _copy(made["assessment"], tmp_path / "a")
    _edit_json(folder / "assessment.json", lambda d: d["warnings"].append("<script>alert('w')</script> & more"))
    html = render_assessment(folder, title="<script>alert('t')</script>")
    _self_contained(html)
    assert "<script" not in html and HOSTILE not in html
    assert "&lt;script&gt;alert(" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&amp; more" in html


def test_assessment_without_photo_uses_overlay(made, tmp_path):
    folder = _copy(made["assessment"], tmp_path / "moved")
    _edit_json(folder / "assessment.json", lambda d: d["photo"].update(path="/nowhere/gone.jpg"))
    html = render_assessment(folder)
    images = _self_contained(html)
    assert "no longer at the path" in html and "overlay saved with the assessment" in html
    assert "cut from the overlay" in html and len(images) >= 2


def test_assessment_with_changed_photo_does_not_use_it(made, tmp_path):
    folder = _copy(made["assessment"], tmp_path / "changed")
    other = tmp_path / "other.png"
    cv2.imwrite(str(other), np.zeros((360, 480, 3), np.uint8))
    _edit_json(folder / "assessment.json", lambda d: d["photo"].update(path=str(other)))
    html = render_assessment(folder)
    assert "not the photo that was assessed" in html


def test_assessment_without_pictures_or_scale(made, tmp_path):
    folder = _copy(made["assessment"], tmp_path / "bare")
    (folder / "overlay.png").unlink()
    (folder / "dots.csv").unlink()

    def no_scale(d):
        d["photo"]["path"] = "gone.jpg"
        d["calibration"].update(px_per_mm=None, scale_source="none", colour_source="none")
        d["metrics"].update(dot_density_per_cm2=None, dot_diameter_mm_median=float("nan"))
        d["quality"]["ok"] = False

    _edit_json(folder / "assessment.json", no_scale)
    html = render_assessment(folder)
    assert _self_contained(html) == []
    _no_raw_values(html)
    text = _text(html)
    assert "Neither the overlay nor the photo is available" in text
    assert "No scale" in text and "No colour correction" in text and "quality check" in text
    assert "dots.csv is missing" in text
    assert "\u2014" in text


# --------------------------------------------------------------------------- comparison


def test_comparison_report(made):
    html = render_comparison(made["comparison"])
    images = _self_contained(html)
    _no_raw_values(html)
    assert len(images) == 4  # side by side, difference, the two overlays
    text = _text(html)
    assert "Scalp show-through stayed at about" in text  # the photo against itself
    for word in ("Before", "After", "Change", "What it means", "How well the photos line up", "Dots paired"):
        assert word in text
    assert "verdict-same" in html


def test_comparison_wording_and_verdicts(made, tmp_path):
    folder = _copy(made["comparison"], tmp_path / "cmp")
    shutil.rmtree(folder / "before")
    (folder / "difference.png").unlink()

    def changed(d):
        d["headline"].update(
            show_through_before=0.42,
            show_through_after=0.18,
            show_through_reduction=0.24,
            dots_added=1204,
            dots_lost=20,
            dots_linked=276,
            common_dots_before=296,
            common_dots_after=1480,
            common_dot_change=1184,
            contrast_dL_change_median=-2.0,
        )
        d["metrics"]["show_through"] = {"before": 0.42, "after": 0.18, "delta": -0.24}
        d["metrics"]["faded_fraction"] = {"before": 0.01, "after": 0.05, "delta": 0.04}
        d["metrics"]["dot_density_per_cm2"] = {"before": 20.0, "after": None, "delta": None}
        d["warnings"].append("poor registration: linked dots are 0.30 mm apart (median)")

    _edit_json(folder / "comparison.json", changed)
    html = render_comparison(folder)
    _self_contained(html)
    _no_raw_values(html)
    text = _text(html)
    assert (
        "Scalp show-through went from 42% to 18% (24 points less); in the area both photos show, the dots "
        "went from 296 to 1,480 (1,204 added, 20 not found again)" in text
    )
    assert "296 \u2192 1,480" in text and "1,204 added, 20 not found again, 276 in both" in text
    assert "lost 2.0 L* of contrast" in text
    assert "before photo's assessment folder cannot be read" in text
    assert "difference.png is missing" in text
    assert "alignment of the two photos is uncertain" in text
    rows = {m[1]: m[0] for m in re.findall(r'verdict-(\w+)">.*?</td>\s*<td class="caption">([^<]*)', html, re.S)}
    assert any(v == "better" and "bare skin" in k for k, v in rows.items())
    assert any(v == "worse" and "too light" in k for k, v in rows.items())


def test_a_change_within_what_two_photos_differ_by_is_not_called_better_or_worse(made, tmp_path):
    """smp compare records how large a change two photos of one unchanged scalp can show
    (``metrics[name].noise``); the sentence, the cards and the table do not judge a smaller one."""
    doc = json.loads((made["comparison"] / "comparison.json").read_text())
    assert doc["metrics"]["show_through"]["noise"] == pytest.approx(0.25)
    density = doc["metrics"]["dot_density_per_cm2"]
    assert density["noise"] == pytest.approx(0.86 * max(density["before"], density["after"]))
    folder = _copy(made["comparison"], tmp_path / "cmp")

    def small(d):
        d["headline"].update(
            show_through_before=0.92, show_through_after=0.89, show_through_reduction=0.03, density_change_per_cm2=-3.0
        )
        d["metrics"]["show_through"] = {"before": 0.92, "after": 0.89, "delta": -0.03, "noise": 0.25}
        d["metrics"]["dot_density_per_cm2"] = {"before": 23.0, "after": 20.0, "delta": -3.0, "noise": 19.8}

    _edit_json(folder / "comparison.json", small)
    text = _text(render_comparison(folder))
    html = render_comparison(folder)
    assert "Scalp show-through read 92% before and 89% after, within what two photos of one scalp differ by" in text, (
        text[:600]
    )
    assert re.search(
        r"density read [0-9.]+ and [0-9.]+ dots per cm\u00b2, within what two photos of one scalp "
        r"differ by",
        text,
    )
    assert not re.search(r"class=\"[^\"]*verdict-(better|worse)", html)
    assert html.count('class="card verdict-unsure"') == 2

    def large(d):
        d["metrics"]["show_through"]["noise"] = 0.02
        d["metrics"]["dot_density_per_cm2"]["noise"] = 2.0

    _edit_json(folder / "comparison.json", large)
    text = _text(render_comparison(folder))
    assert "went from 92% to 89% (3.0 points less)" in text and "(fewer)" in text, text[:700]


def test_comparison_of_photos_that_could_not_be_lined_up(made, tmp_path):
    folder = _copy(made["comparison"], tmp_path / "cmp")
    for name in ("side_by_side.png", "difference.png"):
        (folder / name).unlink()

    def unregistered(d):
        d.update(
            registered=False, registration=None, links=None, registration_error="too few matching features (3 < 12)"
        )
        for k in (
            "dots_added",
            "dots_lost",
            "dots_linked",
            "common_dots_before",
            "common_dots_after",
            "common_dot_change",
            "contrast_dL_change_median",
            "overlap_fraction",
            "linked_fraction",
        ):
            d["headline"][k] = None

    _edit_json(folder / "comparison.json", unregistered)
    html = render_comparison(folder)
    assert len(_self_contained(html)) == 2  # the two photos' own overlays, no picture of what changed
    _no_raw_values(html)
    text = _text(html)
    assert "could not be lined up (too few matching features (3 < 12))" in text and "retake the after photo" in text
    assert "is missing" not in text and "Dots where both photos overlap" not in text
    assert "not found again" not in text and "in both" not in text
    # the headline says it first, then the figures it could compare
    summary = re.search(r'<p class="summary">(.*?)</p>', html, re.S).group(1)
    assert summary.startswith(
        "The two photos could not be lined up, so no dot is paired between them. Scalp show-through"
    ), summary
    assert "Dot count" in text  # both photos' own counts are known: the card shows them
    nothing = _copy(folder, tmp_path / "nothing")

    def no_dots(d):
        d["headline"].update(dot_count_before=None, dot_count_after=None, dot_count_change=None)

    _edit_json(nothing / "comparison.json", no_dots)
    assert "Dot count" not in _text(render_comparison(nothing)).split("What changed")[0]  # no empty card

    def no_figures(d):
        d["headline"].update(
            show_through_before=None, show_through_after=None, show_through_reduction=None, density_change_per_cm2=None
        )
        d["metrics"]["dot_density_per_cm2"].update(after=None, delta=None)

    _edit_json(nothing / "comparison.json", no_figures)
    shutil.rmtree(nothing / "after")
    summary = re.search(r'<p class="summary">(.*?)</p>', render_comparison(nothing), re.S).group(1)
    assert summary.startswith(
        "The two photos could not be lined up, so no dot is paired between them: the table "
        "compares the figures that need no alignment. To compare dots, retake"
    ), summary
    assert "Dot density" in text and "Show-through" in text
