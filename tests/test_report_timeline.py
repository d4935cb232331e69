"""HTML timeline reports of a region over its visits: the forecast's wording, trends, missing plots."""

import datetime as dt

import pytest
from report_helpers import _no_raw_values, _self_contained, _text, _track_doc, _track_folder

from pipeline.report import render_timeline
from pipeline.report.timeline import forecast_sentence

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
