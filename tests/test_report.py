"""HTML reports: the three kinds render, are self-contained and printable, escape what they read,
survive missing pieces, write numbers for people, and ``smp report`` picks the kind."""

import base64
import datetime as dt
import json
import re
import shutil
from html import unescape
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.card import load_card
from data.config import load_settings
from data.flags import load_flag_settings
from data.synth.generate import generate_images
from data.synth.settings import SynthSettings
from pipeline.cli import main
from pipeline.one_photo.assess import Assessor
from pipeline.one_photo.assessment import write_assessment
from pipeline.one_photo.settings import load_assess_settings
from pipeline.report import ReportError, detect_kind, render_assessment, render_comparison, render_timeline
from pipeline.report.timeline import forecast_sentence
from pipeline.report.wording import fmt_date, fmt_int, fmt_month, fmt_num, fmt_pct, fmt_points, fmt_signed

ROOT = Path(__file__).resolve().parent.parent
SCENE = ["image.width=480", "image.height=360", "camera.px_per_mm=[14, 18]", "card.probability=1.0"]
HOSTILE = "<img src=x onerror=alert(1)>"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A synthetic close-up (saved under a hostile name), its classical assessment, and an
    ``smp compare`` of the photo with itself."""
    root = tmp_path_factory.mktemp("report")
    cfg = load_settings(SynthSettings, None, SCENE, default="synth/closeup.yaml")
    item = next(iter(generate_images(root / "synth", 1, cfg, load_card(), load_flag_settings(), seed=21)))
    src = item.folder / json.loads((item.folder / "truth.json").read_text())["photo"]
    photo = root / "photos" / f"{HOSTILE}{src.suffix}"
    photo.parent.mkdir()
    shutil.copyfile(src, photo)
    assessor = Assessor(load_assess_settings(None, ["segment.method=classical"]))
    folder = write_assessment(assessor.assess_file(photo), root / "assess" / "one")
    assert (
        main(["compare", str(photo), str(photo), "--out", str(root / "cmp"), "--set", "segment.method=classical"]) == 0
    )
    return {"root": root, "photo": photo, "assessment": folder, "comparison": root / "cmp"}


def _copy(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


def _edit_json(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def _plot(path: Path, w: int = 320, h: int = 160) -> None:
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.line(img, (10, h - 10), (w - 10, 10), (180, 90, 40), 2)
    cv2.imwrite(str(path), img)


def _track_doc(forecast: dict | None = None, **fading) -> dict:
    visits = [
        {
            "key": "2026-01-10_session-1",
            "date": "2026-01-10",
            "day": 0.0,
            "kind": "session",
            "session": 1,
            "metrics": {"dot_count": 1204, "dot_density_per_cm2": 61.24, "show_through": 0.18, "faded_fraction": 0.02},
            "median_contrast_dL": 24.5,
            "median_blue_index": -2.1,
        },
        {
            "key": "2026-02-10_session-2",
            "date": "2026-02-10",
            "day": 31.0,
            "kind": "session",
            "session": 2,
            "metrics": {"dot_count": 1500, "dot_density_per_cm2": None, "show_through": None, "faded_fraction": None},
            "median_contrast_dL": 25.0,
            "median_blue_index": None,
        },
        {
            "key": "2026-08-10_follow-up",
            "date": "2026-08-10",
            "day": 212.0,
            "kind": "follow-up",
            "session": 0,
            "metrics": {"dot_count": 1450, "dot_density_per_cm2": 58.0, "show_through": 0.21, "faded_fraction": 0.05},
            "median_contrast_dL": 21.0,
            "median_blue_index": -1.9,
        },
    ]
    links = [
        {
            "visit": "2026-01-10_session-1",
            "reference": None,
            "ok": True,
            "n_dots": 1204,
            "new": 1204,
            "lost": 0,
            "n_links": 0,
            "linked_fraction": None,
            "residual_mm_median": None,
            "error": None,
        },
        {
            "visit": "2026-02-10_session-2",
            "reference": "2026-01-10_session-1",
            "ok": True,
            "n_links": 1000,
            "linked_fraction": 0.83,
            "new": 500,
            "lost": 204,
            "residual_mm_median": 0.012,
            "error": None,
        },
        {
            "visit": "2026-08-10_follow-up",
            "reference": "2026-02-10_session-2",
            "ok": False,
            "n_links": 0,
            "linked_fraction": None,
            "new": 0,
            "lost": 0,
            "residual_mm_median": None,
            "error": "too few features",
        },
    ]
    fc = {
        "status": "due",
        "threshold_dl": 12.0,
        "day": 430.0,
        "day_low": 340.0,
        "day_high": 560.0,
        "horizon_day": 31.0 + 15 * 365.25,
        "date": "2027-03-16",
        "date_low": "2026-12-16",
        "date_high": "2027-07-24",
    }
    fc.update(forecast or {})
    fad = {
        "n_dots": 1700,
        "half_life_days": {"value": 900.0, "low": 700.0, "high": 1200.0},
        "fresh_contrast_dl": 25.0,
        "last_median_contrast_dl": 21.0,
        "blue_trend": {"per_year": {"value": 0.02, "low": -0.05, "high": 0.09}, "detected": False, "n_dots": 300},
        "spread": {"per_year": {"value": 0.01, "low": 0.0, "high": 0.02}, "detected": False, "n_dots": 300},
        "forecast": fc,
        "n_fast_fading": 12,
        "n_spreading": 0,
        "warnings": [],
    }
    fad.update(fading)
    return {
        "schema": "smp-track/1",
        "client": "C-17",
        "region": "crown",
        "visits": visits,
        "links": links,
        "tracks": {"n_tracks": 1700, "n_observations": 4154},
        "fading": fad,
        "plots": {
            "contrast": "contrast.png",
            "blue_index": "blue_index.png",
            "density": "density.png",
            "show_through": "show_through.png",
        },
        "warnings": [],
    }


def _track_folder(folder: Path, doc: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "track.json").write_text(json.dumps(doc))
    for name in doc["plots"].values():
        _plot(folder / name)
    return folder


# --------------------------------------------------------------------------- checks


def _self_contained(html: str) -> list[np.ndarray]:
    """Every check of "one file, works offline, prints"; returns the decoded pictures."""
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert '<meta charset="utf-8">' in html
    low = html.lower()
    assert "http://" not in low and "https://" not in low
    assert 'src="/' not in html and "src='/" not in html and "href=" not in low
    assert "<script" not in low and "<link" not in low and "@import" not in low and "url(" not in low
    assert "@media print" in html and "size: A4" in html and "break-before: page" in html
    images = []
    for src in re.findall(r'src="([^"]*)"', html):
        m = re.fullmatch(r"data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)", src)
        assert m, src[:60]
        img = cv2.imdecode(np.frombuffer(base64.b64decode(m[2]), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[1] <= 1600
        images.append(img)
    return images


def _text(html: str) -> str:
    html = re.sub(r"<style>.*?</style>", " ", html, flags=re.S)
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def _no_raw_values(html: str) -> None:
    assert not re.search(r"\b(None|nan|NaN|inf|null|True|False)\b", _text(html))


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


# --------------------------------------------------------------------------- timeline


def test_timeline_report(tmp_path):
    folder = _track_folder(tmp_path / "track" / "crown", _track_doc())
    html = render_timeline(folder)
    images = _self_contained(html)
    _no_raw_values(html)
    assert len(images) == 4
    text = _text(html)
    assert "A touch-up is expected around March 2027 (90% range: Dec 2026 \u2013 Jul 2027)." in text
    assert "900 days" in text and "No blue shift found" in text and "12" in text
    assert "1,204" in text and "61.2" in text and "18%" in text and "10 Jan 2026" in text
    assert "session 2" in text and "too few features" in text
    assert "At least one visit was poorly aligned" in text


@pytest.mark.parametrize(
    "forecast, fading, expected",
    [
        (
            {"date": "2027-03-16", "date_low": "2026-12-16", "date_high": None},
            {},
            "A touch-up is expected around March 2027 (90% range: from Dec 2026 to beyond Feb 2041).",
        ),
        (
            {"date": "2020-03-16", "date_low": "2020-01-01", "date_high": "2020-06-01"},
            {},
            "A touch-up is probably overdue: by the fading measured up to the last visit (10 Aug 2026), the dots were "
            "to reach the touch-up level around March 2020",
        ),
        (
            {"status": "already_below", "day": None, "date": None, "date_low": None, "date_high": None},
            {"last_median_contrast_dl": 10.4},
            "A touch-up is due now: the dots' median contrast (10.4 L*) is already below the touch-up level (12 L*).",
        ),
        (
            {"status": "not_within_horizon", "day": None, "date": None, "date_low": None, "date_high": None},
            {},
            "No touch-up is expected within 15 years of the last session (before February 2041)",
        ),
        (
            {"status": "not_within_horizon", "day": None, "date": None, "date_low": None, "date_high": None},
            {"half_life_days": {"value": None, "low": None, "high": None}},
            "No touch-up is foreseen: the dots' contrast has not fallen measurably so far",
        ),
        (
            {"status": "unknown", "day": None, "date": None, "date_low": None, "date_high": None, "horizon_day": None},
            {
                "half_life_days": {"value": None, "low": None, "high": None},
                "warnings": ["dots were measured at 1 visit; a fading rate needs at least 2"],
            },
            "The touch-up date cannot be forecast yet (dots were measured at 1 visit; a fading rate needs at least 2).",
        ),
    ],
)
def test_forecast_wording(tmp_path, forecast, fading, expected):
    doc = _track_doc(forecast, **fading)
    assert forecast_sentence(doc["fading"], doc["visits"], today=dt.date(2026, 9, 1)).startswith(expected)
    html = render_timeline(_track_folder(tmp_path / "r", doc))
    _no_raw_values(html)
    assert expected.split(" (")[0] in _text(html)


def test_timeline_blue_trend_and_missing_plot(tmp_path):
    doc = _track_doc(blue_trend={"per_year": {"value": 0.35, "low": 0.2, "high": 0.5}, "detected": True, "n_dots": 300})
    folder = _track_folder(tmp_path / "r", doc)
    (folder / "density.png").unlink()
    html = render_timeline(folder)
    text = _text(html)
    assert "turning bluer" in text and "+0.35 per year" in text
    assert "density plot (density.png) is missing" in text
    assert len(_self_contained(html)) == 3


def test_timeline_names_a_minority_of_dots_that_turn_and_claims_no_region_trend(tmp_path):
    doc = _track_doc(
        blue_trend={
            "per_year": {"value": 0.04, "low": -0.02, "high": 0.1},
            "detected": True,
            "n_dots": 310,
            "n_turning": 46,
            "turning_fraction": 46 / 310,
            "turning_per_year": 0.73,
            "found_by": "minority",
        },
        spread={
            "per_year": {"value": 0.004, "low": -0.001, "high": 0.01},
            "detected": True,
            "n_dots": 300,
            "n_turning": 31,
            "turning_fraction": 31 / 300,
            "turning_per_year": 0.12,
            "found_by": "minority",
        },
    )
    text = _text(render_timeline(_track_folder(tmp_path / "r", doc)))
    assert "46 of 310 dots (15%) are turning bluer." in text  # the headline
    assert (
        "46 of 310 dots (15%) are turning bluer: their blue index rises by +0.73 per year (median), while the "
        "region as a whole changes by +0.04 (90% range -0.02 to +0.10)"
    ) in text.replace("\u2212", "-")
    assert "31 of 300 dots (10%) are growing" in text and "blue_turning" in text
    assert "The pigment is slowly turning bluer" not in text  # no region trend claimed: its range includes 0
    quiet = _track_doc()  # nothing found: no dot list, and it says noise was ruled out
    text = _text(render_timeline(_track_folder(tmp_path / "q", quiet)))
    assert "No blue shift found" in text and "than measurement noise makes" in text and "turning bluer" not in text


# --------------------------------------------------------------------------- errors and the command


def test_bad_folders_raise_one_line(made, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_json = _copy(made["assessment"], tmp_path / "badjson")
    (bad_json / "assessment.json").write_text("{not json")
    wrong = _copy(made["assessment"], tmp_path / "wrong")
    _edit_json(wrong / "assessment.json", lambda d: d.update(schema="smp-other/9"))
    cases = [
        (render_assessment, tmp_path / "missing", "no such folder"),
        (render_assessment, empty, "no assessment.json"),
        (render_assessment, bad_json, "not valid JSON"),
        (render_assessment, wrong, "schema is 'smp-other/9'"),
        (render_comparison, made["assessment"], "no comparison.json"),
        (render_timeline, empty, "no track.json"),
    ]
    for fn, folder, reason in cases:
        with pytest.raises(ReportError) as info:
            fn(folder)
        assert reason in str(info.value) and "\n" not in str(info.value)
    assert issubclass(ReportError, ValueError)


def test_detect_kind(made, tmp_path):
    assert detect_kind(made["assessment"]) == ("assessment", made["assessment"])
    assert detect_kind(made["comparison"] / "comparison.json") == ("comparison", made["comparison"])
    one = _track_folder(tmp_path / "track" / "crown", _track_doc())
    assert detect_kind(tmp_path / "track") == ("timeline", one)


def test_cli_report(made, tmp_path, capsys):
    out = tmp_path / "out" / "assessment.html"
    assert main(["report", str(made["assessment"]), "--out", str(out), "--title", "Client A"]) == 0
    html = out.read_text(encoding="utf-8")
    assert "<title>Client A</title>" in html
    _self_contained(html)
    track = tmp_path / "track"
    _track_folder(track / "crown", _track_doc())
    assert main(["report", str(track), "--out", str(tmp_path / "t.html")]) == 0
    assert "SMP timeline: C-17 / crown" in (tmp_path / "t.html").read_text(encoding="utf-8")
    capsys.readouterr()

    _track_folder(track / "front", _track_doc())
    for args in (
        [str(track), "--out", str(tmp_path / "x.html")],
        [str(tmp_path / "nope"), "--out", str(tmp_path / "x.html")],
        [str(made["assessment"]), "--out", str(tmp_path)],
    ):
        assert main(["report", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("smp report: error: ") and err.count("\n") == 1
    assert not (tmp_path / "x.html").exists()


def _title(html: str) -> str:
    return unescape(html.split("<title>")[1].split("</title>")[0])


def test_reports_are_named_by_client_region_and_visit(made, tmp_path, capsys):
    """What `smp assess/compare --client --region --date --kind` record names the reports; without it
    the photo's name does; a link back into the app is shown on screen, never a script address."""
    assert _title(render_assessment(made["assessment"])) == f"SMP assessment: {made['photo'].name}"
    photo = made["photo"]
    out = tmp_path / "assess"
    assert (
        main(
            [
                "assess",
                str(photo),
                "--out",
                str(out),
                "--set",
                "segment.method=classical",
                "--client",
                "C-17",
                "--region",
                "Left temple",
                "--date",
                "2026-03-01",
                "--kind",
                "touch-up",
                "--session",
                "2",
            ]
        )
        == 0
    )
    folder = next(out.iterdir())
    subject = json.loads((folder / "assessment.json").read_text())["subject"]
    assert subject == {
        "client": "C-17",
        "region": "left-temple",
        "date": "2026-03-01",
        "kind": "touch-up",
        "session": 2,
    }
    html = render_assessment(folder, link="/clients/7", link_label="Back to C-17")
    assert _title(html) == "SMP assessment: C-17 / left-temple, 1 Mar 2026, touch-up 2"
    text = _text(html)
    for label, value in (("Client", "C-17"), ("Region", "left-temple"), ("Visit", "1 Mar 2026, touch-up 2")):
        assert re.search(rf"{label}\s+{re.escape(value)}", text), label
    assert '<nav class="back"><a href="/clients/7">&larr; Back to C-17</a></nav>' in html
    assert ".back { display: none; }" in html  # on screen only: not printed
    # given by the caller (the web app, from its records), the subject wins over the folder's
    from pipeline.subject import Subject

    html = render_assessment(
        folder, subject=Subject(client="C-9", region="crown", date=dt.date(2027, 1, 2), kind="follow-up")
    )
    assert _title(html) == "SMP assessment: C-9 / crown, 2 Jan 2027, follow-up"
    assert 'nav class="back"' not in html
    for bad in ("javascript:alert(1)", "//evil.example/x", "data:text/html,x", "/clients/7 onclick=x"):
        with pytest.raises(ReportError, match="link"):
            render_assessment(folder, link=bad)
    assert main(["report", str(folder), "--out", str(tmp_path / "x.html"), "--link", "javascript:alert(1)"]) == 2
    assert "link" in capsys.readouterr().err

    # a comparison: both visits in the title, each photo named by its visit
    cmp = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                str(photo),
                str(photo),
                "--out",
                str(cmp),
                "--set",
                "segment.method=classical",
                "--client",
                "C-17",
                "--region",
                "crown",
                "--before-date",
                "2025-01-05",
                "--before-kind",
                "session",
                "--before-session",
                "1",
                "--after-date",
                "2026-01-05",
                "--after-kind",
                "follow-up",
            ]
        )
        == 0
    )
    html = render_comparison(cmp)
    assert _title(html) == "SMP before / after: C-17 / crown, 5 Jan 2025, session 1 \u2192 5 Jan 2026, follow-up"
    assert "5 Jan 2025, session 1 (photos/" in unescape(html)
    assert "date not recorded" not in _text(html)
    capsys.readouterr()


@pytest.mark.parametrize(
    "args, says",
    [
        (["--date", "2026-02-30"], "no such day"),
        (["--kind", "session"], "session number"),
        (["--kind", "checkup"], "unknown kind"),
        (["--session", "2"], "needs its kind"),
        (["--region", "crown/../x"], "bad region"),
    ],
)
def test_bad_subject_options_are_one_line_errors(made, tmp_path, capsys, args, says):
    assert main(["assess", str(made["photo"]), "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smp assess: error: ") and says in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_visit_date_names_one_photo_only(made, tmp_path, capsys):
    p = str(made["photo"])
    assert main(["assess", p, p, "--out", str(tmp_path / "o"), "--date", "2026-01-01"]) == 2
    assert "single photo" in capsys.readouterr().err


def test_cli_several_regions_are_listed(tmp_path, capsys):
    track = tmp_path / "track"
    for region in ("crown", "front"):
        _track_folder(track / region, _track_doc())
    assert main(["report", str(track), "--out", str(tmp_path / "x.html")]) == 2
    assert "several regions (crown, front)" in capsys.readouterr().err


# --------------------------------------------------------------------------- small parts


def test_numbers_for_people():
    assert fmt_int(1204) == "1,204" and fmt_int(None) == "\u2014" and fmt_int(float("nan")) == "\u2014"
    assert fmt_pct(0.42) == "42%" and fmt_pct(0.042) == "4.2%" and fmt_pct(0) == "0%" and fmt_pct(-0.0001) == "0%"
    assert fmt_pct(0.0002) == "<0.1%" and fmt_pct(0.5, 1) == "50.0%"
    assert fmt_points(-0.24) == "\u221224 points" and fmt_points(0.05) == "+5.0 points" and fmt_points(0) == "0 points"
    assert fmt_num(61.24, 1, "per cm\u00b2") == "61.2 per cm\u00b2" and fmt_num(float("inf")) == "\u2014"
    assert fmt_num(-0.04, 1) == "0.0" and fmt_signed(-0.88, 1) == "\u22120.9" and fmt_signed(True) == "\u2014"
    assert fmt_date("2026-03-01") == "1 Mar 2026" and fmt_month("2027-03-14") == "March 2027"
    assert fmt_date("not a date") == "\u2014"


def test_templates_and_css_are_package_data():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = cfg["tool"]["setuptools"]["package-data"]["pipeline"]
    shipped = {
        p.relative_to(ROOT / "pipeline").as_posix()
        for p in (ROOT / "pipeline" / "report").rglob("*")
        if p.suffix in (".j2", ".css")
    }
    assert {"report/templates/assessment.html.j2", "report/report.css"} <= shipped
    assert all(any(Path(f).match(p) for p in patterns) for f in shipped)
