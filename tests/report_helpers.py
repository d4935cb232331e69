"""Shared by the report tests (tests/test_report_*.py): folder edits, a smp track result, the self-contained checks."""

import base64
import json
import re
import shutil
from html import unescape
from pathlib import Path

import cv2
import numpy as np

SCENE = ["image.width=480", "image.height=360", "camera.px_per_mm=[14, 18]", "card.probability=1.0"]
HOSTILE = "<img src=x onerror=alert(1)>"


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
