"""`make demo` against the truth it prints: every report's headline is checked from the demo
client's own truth (series.json and each visit's truth tables), on a fresh output folder."""

from __future__ import annotations

import datetime as dt
import html
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.over_time.fading import load_fading_settings

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("smp_demo", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    assert module.run(out) == 0
    series = json.loads((out / "client" / "client_000" / "series.json").read_text())
    return {
        "out": out,
        "series": series,
        "truth": series["truth"],
        "visits": {v["folder"]: v for v in series["visits"]},
    }


def _summary(path: Path) -> str:
    """The headline sentence of a report."""
    m = re.search(r'<p class="summary">(.*?)</p>', path.read_text(encoding="utf-8"), re.S)
    assert m, path
    return " ".join(html.unescape(m.group(1)).split())


def _true_blue_per_year(demo) -> float:
    """Median of the true blue-index slopes (per year) of the dots the generator turns blue."""
    blue = set(demo["truth"]["blue_dot_ids"])
    rows = []
    for v in demo["series"]["visits"]:
        t = pd.read_csv(demo["out"] / "client" / "client_000" / v["folder"] / "dots.csv")
        t = t[t["dot_id"].isin(blue) & t["visible"]]
        year = dt.date.fromisoformat(v["date"]).toordinal() / 365.25
        rows.append(t.assign(year=year)[["dot_id", "year", "blue_index"]])
    d = pd.concat(rows)
    d["blue_index"] = pd.to_numeric(d["blue_index"], errors="coerce")
    d = d.dropna()
    slopes = [np.polyfit(g["year"], g["blue_index"], 1)[0] for _, g in d.groupby("dot_id") if g["year"].nunique() >= 3]
    return float(np.median(slopes))


def test_timeline_headline_agrees_with_the_truth(demo):
    doc = json.loads((demo["out"] / "track" / demo["series"]["region"] / "track.json").read_text())
    fading, truth = doc["fading"], demo["truth"]
    fc = fading["forecast"]
    # the touch-up forecast: its 90% range holds the true date, and the headline says the forecast
    assert fc["status"] == "due"
    assert fc["date_low"] <= truth["touchup_due_date"] <= fc["date_high"], (fc, truth["touchup_due_date"])
    headline = _summary(demo["out"] / "reports" / "timeline.html")
    month = dt.date.fromisoformat(fc["date"]).strftime("%B %Y")
    assert f"A touch-up is expected around {month}" in headline, headline
    # no trend the truth does not have; a blue shift the product's per-dot rule can see is found
    blue, spread = fading["blue_trend"], fading["spread"]
    if not truth["blue_client"]:
        assert not blue["detected"] and "bluer" not in headline
    elif _true_blue_per_year(demo) >= load_fading_settings().blue_turning_min_per_year:
        assert blue["detected"] and "bluer" in headline
    if not truth["spread_client"]:
        assert not spread["detected"] and "growing" not in headline
    if blue["detected"]:
        assert truth["blue_client"]
    if spread["detected"]:
        assert truth["spread_client"]


def test_before_after_headline_agrees_with_the_truth(demo):
    """Before treatment (baseline) against the healed result: the direction of every headline figure
    is the truth's, and the sentence, the cards and the table use the same counts."""
    out, visits = demo["out"], demo["visits"]
    doc = json.loads((out / "compare" / "comparison.json").read_text())
    photos = {
        side: json.loads((out / "compare" / side / "assessment.json").read_text())["photo"]["path"]
        for side in ("before", "after")
    }
    names = {side: Path(path).parent.name for side, path in photos.items()}
    tb, ta = (visits[names[s]]["metrics"] for s in ("before", "after"))
    m = doc["metrics"]
    d_true = ta["dot_density_per_cm2"] - tb["dot_density_per_cm2"]
    d_meas = m["dot_density_per_cm2"]["delta"]
    assert d_true and np.sign(d_meas) == np.sign(d_true), (d_meas, d_true)
    h = doc["headline"]
    headline = _summary(out / "reports" / "before_after.html")
    word = "more" if d_true > 0 else "fewer"
    assert f"({word})" in headline, headline
    assert (
        f"the dots went from {h['common_dots_before']:,} to {h['common_dots_after']:,} "
        f"({h['dots_added']:,} added, {h['dots_lost']:,} not found again)"
    ) in headline, headline
    assert h["common_dots_after"] - h["common_dots_before"] == h["dots_added"] - h["dots_lost"]
    # show-through: judged only beyond what two photos of one scalp differ by, and then the truth's way
    st = m["show_through"]
    st_true = ta["show_through"] - tb["show_through"]
    if abs(st["delta"]) > st["noise"]:
        assert np.sign(st["delta"]) == np.sign(st_true), (st, st_true)
    else:
        assert "Scalp show-through read" in headline and "within what two photos of one scalp differ by" in headline
    # the photos' own density within 20% of the truth's (the detector's measured error on the demo)
    for side, t in (("before", tb), ("after", ta)):
        if t["dot_density_per_cm2"] >= 5:
            assert m["dot_density_per_cm2"][side] == pytest.approx(t["dot_density_per_cm2"], rel=0.2)


@pytest.mark.xfail(
    strict=True,
    reason="counts within 5% of the truth: the detector reads the demo's photos "
    "at 0.39-1.33 of the true count (the last follow-up, under dense grey strands: 182 of 462 "
    "visible dots; with every candidate admitted 77% of the demo's visible dots, so no decision "
    "rule reaches it); BENCHMARKS.md, issue 15 second and third sessions",
)
def test_counts_within_five_percent_of_the_truth(demo):
    out, visits = demo["out"], demo["visits"]
    for folder, v in visits.items():
        if not v["metrics"]["dot_count"]:
            continue
        doc = json.loads(next((out / "assess" / folder).glob("*/assessment.json")).read_text())
        assert doc["metrics"]["dot_count"] == pytest.approx(v["metrics"]["dot_count"], rel=0.05), folder


def test_latest_photo_report_names_its_visit_and_agrees_on_show_through(demo):
    last = demo["series"]["visits"][-1]
    text = (demo["out"] / "reports" / "latest.html").read_text(encoding="utf-8")
    title = html.unescape(text.split("<title>")[1].split("</title>")[0])
    day = dt.date.fromisoformat(last["date"])
    assert title == (
        f"SMP assessment: {demo['series']['client']} / {demo['series']['region']}, "
        f"{day.day} {day.strftime('%b')} {day.year}, {last['kind']}"
    )
    doc = json.loads(next((demo["out"] / "assess" / last["folder"]).glob("*/assessment.json")).read_text())
    assert doc["metrics"]["show_through"] == pytest.approx(last["metrics"]["show_through"], abs=0.05)


def test_the_demo_leaves_its_mlflow_runs(demo):
    """`make demo` records the champion's evaluation (the bundled model, registered first in the demo's own
    store) and the assessments beside their truth, in demo-out/mlflow.db."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(demo['out'] / 'mlflow.db').resolve()}")
    champion = client.get_model_version_by_alias("smp-segmenter", "champion")
    assert str(champion.version) == "1" and champion.tags["source"] == "bundled"
    (evaluation,) = client.search_runs([client.get_experiment_by_name("smp-segmenter-evaluate").experiment_id])
    assert evaluation.data.metrics["n_images"] == len(demo["visits"])
    (assessments,) = client.search_runs([client.get_experiment_by_name("smp-demo").experiment_id])
    history = client.get_metric_history(assessments.info.run_id, "true_dot_count")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [
        float(v["metrics"]["dot_count"]) for v in demo["series"]["visits"]
    ]
