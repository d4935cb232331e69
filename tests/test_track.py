"""Dots followed across visits: every visit registered to its reference close-up, tracks numbered."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from data.card import load_card
from data.config import load_settings
from data.flags import load_flag_settings
from data.synth.generate import item_rng
from data.synth.series import render_series
from data.synth.settings import SynthSettings
from pipeline.over_time.track import OBS_COLUMNS, VisitInput, link_visits

SERIES = [
    "image.width=600",
    "image.height=450",
    "camera.px_per_mm=[13, 15]",
    "series.sessions=[2, 2]",
    "series.followups=[2, 2]",
    "series.touchup_probability=0",
    "dots.coverage=[1, 1]",
    "card.probability=1",
    "skin.fitzpatrick=[1, 3]",
    "hair.long_fraction=[0, 0.05]",
    "hair.follicle_density_per_cm2=[20, 60]",
    "series.hair_length_scale=[0.3, 0.5]",
]


@pytest.fixture(scope="module")
def series():
    cfg = load_settings(SynthSettings, None, SERIES, default="synth/closeup.yaml")
    scenes, truth = render_series(item_rng(53, 0), cfg, load_card(), load_flag_settings())
    return scenes, truth


def _inputs(scenes, drop=()) -> list[VisitInput]:
    out = []
    for visit, scene in scenes:
        dots = scene.dots[~scene.dots.index.isin(drop)] if len(drop) else scene.dots
        out.append(
            VisitInput(
                key=f"visit_{visit.index:02d}",
                date=dt.date.fromisoformat(visit.date),
                kind=visit.kind,
                session=visit.session,
                dots=dots.reset_index(drop=True),
                image=(lambda p=scene.photo: p),
                px_per_mm=scene.px_per_mm,
                roi=(lambda m=scene.mask: m > 0),
            )
        )
    return out


def test_tracks_follow_the_true_dots(series) -> None:
    scenes, _ = series
    tr = link_visits(_inputs(scenes))
    obs = tr.observations
    assert list(obs.columns) == OBS_COLUMNS
    assert [lk.visit for lk in tr.links] == [f"visit_{i:02d}" for i in range(len(scenes))]
    assert tr.links[0].n_dots == 0 and tr.links[0].reference is None  # baseline: no pigment yet
    refs = {lk.visit: lk.reference for lk in tr.links}
    assert refs["visit_02"] == "visit_01"  # session 2 -> session 1
    assert refs["visit_03"] == refs["visit_04"] == "visit_02"  # follow-ups -> last session
    assert all(lk.ok for lk in tr.links)
    # each track is one true dot: join the observations to the true ids
    true_id = np.concatenate([s.dots["dot_id"].to_numpy() for _, s in scenes if len(s.dots)])
    obs = obs.assign(dot_id=true_id)
    per_track = obs.groupby("track_id")["dot_id"].nunique()
    per_dot = obs.groupby("dot_id")["track_id"].nunique()
    assert (per_track == 1).mean() >= 0.98 and (per_dot == 1).mean() >= 0.98
    for lk in tr.links[2:]:
        assert lk.linked_fraction is not None and lk.linked_fraction > 0.9
        assert lk.residual_mm_median is not None and lk.residual_mm_median <= 0.05
    # session 2 adds dots: they start tracks there
    s2 = next(lk for lk in tr.links if lk.visit == "visit_02")
    assert s2.new > 0.2 * s2.n_dots


def test_an_unregistrable_visit_is_left_out_with_a_warning(series) -> None:
    scenes, _ = series
    inputs = _inputs(scenes)
    blank = np.full_like(scenes[3][1].photo, 128)
    rng = np.random.default_rng(0)
    junk = pd.DataFrame(
        {
            "x": rng.uniform(0, 600, 300),
            "y": rng.uniform(0, 450, 300),
            "contrast_dL": 10.0,
            "blue_index": 0.0,
            "diameter_mm": 0.2,
        }
    )
    inputs[3] = VisitInput(
        key="visit_03", date=inputs[3].date, kind="follow-up", session=0, dots=junk, image=lambda: blank, px_per_mm=14.0
    )
    tr = link_visits(inputs)
    bad = next(lk for lk in tr.links if lk.visit == "visit_03")
    assert not bad.ok and bad.error
    said = [w for w in tr.warnings if "visit_03: not registered" in w]
    assert said and "own figures are kept" in said[0] and "retake this visit's photo" in said[0]
    assert "visit_03" not in set(tr.observations["visit"])
    assert next(lk for lk in tr.links if lk.visit == "visit_04").ok


def test_an_unregistrable_visit_is_reported_as_measured_on_its_own(series, tmp_path) -> None:
    """The timeline keeps what needs no alignment (the visit's own figures and its dots' medians),
    says which visit could not be lined up and how to retake it; nothing else is lost."""
    from pipeline.over_time.fading import load_fading_settings
    from pipeline.over_time.history import track_region, write_history
    from pipeline.report import render_timeline

    scenes, _ = series
    inputs = _inputs(scenes)
    rng = np.random.default_rng(0)
    junk = pd.DataFrame(
        {
            "x": rng.uniform(0, 600, 300),
            "y": rng.uniform(0, 450, 300),
            "contrast_dL": 10.0,
            "blue_index": 0.5,
            "diameter_mm": 0.2,
        }
    )
    blank = np.full_like(scenes[3][1].photo, 128)
    inputs[3] = VisitInput(
        key="visit_03",
        date=inputs[3].date,
        kind="follow-up",
        session=0,
        dots=junk,
        image=lambda: blank,
        px_per_mm=14.0,
        metrics={"dot_density_per_cm2": 31.5},
    )
    h = track_region("C-3", "crown", inputs, fading=load_fading_settings(), rng=np.random.default_rng(1))
    v3 = next(v for v in h.visits if v.key == "visit_03")
    assert v3.metrics["dot_density_per_cm2"] == 31.5
    assert v3.median_contrast_dL == 10.0 and v3.median_blue_index == 0.5
    assert all(v.median_contrast_dL is not None for v in h.visits if v.kind != "baseline")
    html = render_timeline(write_history(h, tmp_path / "crown"))
    date = inputs[3].date
    text = " ".join(html.split())
    assert (
        f"The follow-up of {date.day} {date.strftime('%b')} {date.year} could not be lined up with the photo "
        "before it: its own figures are in the table, its dots are not followed over time."
    ) in text
    assert "retake its photo of the same region" in text
    assert "not aligned: " in text


def test_no_visits_and_no_dots() -> None:
    tr = link_visits([])
    assert tr.n_tracks == 0 and list(tr.observations.columns) == OBS_COLUMNS
    empty = VisitInput(
        key="v",
        date=dt.date(2026, 1, 1),
        kind="baseline",
        session=0,
        dots=pd.DataFrame(columns=["x", "y"]),
        image=lambda: np.zeros((10, 10, 3), np.uint8),
        px_per_mm=None,
    )
    tr = link_visits([empty])
    assert tr.n_tracks == 0 and tr.links[0].n_dots == 0


def test_smp_track_from_the_records(series, tmp_path, capsys) -> None:
    """Visits ingested with `smp visit add --assess`, then `smp track`: tracks, links in the
    records, forecast and plots written."""
    import json

    import cv2

    from pipeline.cli import main as smp

    scenes, _ = series
    db = f"sqlite:///{tmp_path / 'records.db'}"
    for visit, scene in scenes:
        photo = tmp_path / f"visit_{visit.index:02d}.png"
        photo.write_bytes(cv2.imencode(".png", np.ascontiguousarray(scene.photo[..., ::-1]))[1].tobytes())
        args = [
            "visit",
            "add",
            str(photo),
            "--client",
            "C-1",
            "--region",
            "crown",
            "--date",
            visit.date,
            "--kind",
            visit.kind,
            "--db",
            db,
            "--store",
            str(tmp_path / "store"),
            "--create-client",
            "--assess",
            "--set",
            "segment.method=classical",
        ]
        if visit.session:
            args += ["--session", str(visit.session)]
        assert smp(args) == 0
    out = tmp_path / "track"
    assert smp(["track", "C-1", "--out", str(out), "--db", db, "--store", str(tmp_path / "store")]) == 0
    doc = json.loads((out / "crown" / "track.json").read_text())
    assert doc["schema"] == "smp-track/1" and doc["client"] == "C-1" and len(doc["visits"]) == len(scenes)
    assert doc["tracks"]["n_tracks"] > 100
    linked = [lk for lk in doc["links"] if lk["reference"]]
    assert linked and all(lk["ok"] for lk in linked)
    assert {"half_life_days", "forecast", "blue_trend"} <= set(doc["fading"])
    for name in ("tracks.csv", "dots_fading.csv", "contrast.png", "blue_index.png", "density.png", "show_through.png"):
        assert (out / "crown" / name).stat().st_size > 0
    printed = capsys.readouterr().out
    assert "C-1/crown" in printed and "half-life" in printed
    # the links are in the records, and running again adds none
    from sqlalchemy import func, select

    from pipeline.records import open_records
    from pipeline.records.schema import DotLink

    records = open_records(db)
    with records.session(read_only=True) as s:
        n_links = s.scalar(select(func.count()).select_from(DotLink))
    assert n_links > 100
    assert smp(["track", "C-1", "--out", str(out), "--db", db, "--store", str(tmp_path / "store")]) == 0
    with records.session(read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(DotLink)) == n_links
    # unknown client or region: one clear line, exit 2
    assert smp(["track", "nobody", "--out", str(out), "--db", db]) == 2
    assert smp(["track", "C-1", "--region", "nape", "--out", str(out), "--db", db]) == 2
    assert "no region 'nape'" in capsys.readouterr().err
