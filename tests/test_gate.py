"""The champion gate (models/gate.py): the rule, the fixed suite, and a fresh store's first champion."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from models.gate import GateSettings, decide, gate_suite


def test_no_champion_means_the_candidate_is_champion():
    d = decide("1", 0.42, None, margin=0.01, suite="gate-x")
    assert d.promoted and d.champion_version is None
    assert d.sentence == "version 1 scored 0.4200 on gate-x; there was no champion: it is champion"


@pytest.mark.parametrize("score, promoted", [(0.611, True), (0.610, False), (0.605, False), (0.3, False)])
def test_a_candidate_must_beat_the_champion_by_more_than_the_margin(score, promoted):
    d = decide("7", score, ("3", 0.600), margin=0.01, suite="gate-x")
    assert d.promoted is promoted
    if promoted:
        assert d.sentence.endswith("it is champion") and "above 0.6100" in d.sentence
    else:
        assert d.sentence.endswith("version 3 stays champion") and "not above 0.6100" in d.sentence
    assert d.as_tags()["gate_promoted"] == str(promoted)


def test_an_unscored_candidate_never_displaces_a_champion_and_an_unscored_champion_yields():
    assert not decide("2", math.nan, ("1", 0.5), margin=0.0, suite="s").promoted
    assert decide("2", 0.01, ("1", math.nan), margin=0.05, suite="s").promoted
    assert "n/a" in decide("2", math.nan, ("1", 0.5), margin=0.0, suite="s").sentence


def test_the_suite_id_hashes_every_file_of_the_generator():
    from models.gate import generator_code

    synth = Path(__file__).resolve().parent.parent / "data" / "synth"
    nested = sorted(synth.rglob("*.py"))
    assert any(p.parent != synth for p in nested)  # the generator has sub-packages: they count too
    assert set(nested) <= set(generator_code()) and all(p.is_file() for p in generator_code())


def test_the_suite_id_follows_the_pixels_not_the_margin_or_the_folder(tmp_path):
    a = GateSettings()
    assert a.suite_id() == GateSettings(margin=0.2, cache_dir=tmp_path).suite_id()
    assert a.suite_id() != GateSettings(seed=a.seed + 1).suite_id()
    assert a.suite_id() != GateSettings(n_photos=a.n_photos + 1).suite_id()
    with pytest.raises(ValueError):
        GateSettings(margin=-0.1)


def test_the_gate_suite_is_rendered_once_and_is_the_same_pixels_every_time(tmp_path, monkeypatch):
    import data.synth.generate
    from data.manifest import read_manifest

    # count the renders: the returned path is the same whether or not the suite was rendered again (a
    # second render into the same folder is thrown away), so only the generator's calls can tell
    renders = []
    render = data.synth.generate.generate_images
    monkeypatch.setattr(data.synth.generate, "generate_images", lambda *a, **k: renders.append(1) or render(*a, **k))
    small = dict(n_photos=2, width=192, height=144)
    first = gate_suite(GateSettings(cache_dir=tmp_path / "a", **small))
    assert len(renders) == 1
    again = gate_suite(GateSettings(cache_dir=tmp_path / "a", **small))
    assert len(renders) == 1, "the suite already in the folder was rendered again"
    other = gate_suite(GateSettings(cache_dir=tmp_path / "b", **small))  # a fresh folder: rendered anew
    assert len(renders) == 2
    assert first == again and first.parent.name == GateSettings(**small).suite_id()
    rows = list(read_manifest(first))
    assert len(rows) == 2 and {r.split for r in rows} == {"val"}
    for r, o in zip(rows, read_manifest(other)):
        assert Path(r.image).read_bytes() == Path(o.image).read_bytes()
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no half-written suite left


@pytest.mark.slow
def test_a_fresh_store_serves_the_readme_champion(tmp_path, monkeypatch):
    """README: `smp evaluate --model models:/smp-segmenter@champion` on a fresh clone: the bundled model
    is registered first (version 1, champion, with its gate score), then evaluated."""
    import mlflow
    from mlflow import MlflowClient

    from pipeline.cli import main as smp

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert (
        smp(
            [
                "synth",
                "--out",
                "data",
                "--n",
                "2",
                "--seed",
                "3",
                "--set",
                "image.width=256",
                "--set",
                "image.height=192",
            ]
        )
        == 0
    )
    assert (
        smp(["evaluate", "--model", "models:/smp-segmenter@champion", "--data", "data/manifest.csv", "--out", "ev"])
        == 0
    )
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["n_images"] == 2
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    mv = client.get_model_version_by_alias("smp-segmenter", "champion")
    assert str(mv.version) == "1" and mv.tags["source"] == "bundled"
    assert mv.tags["gate_suite"] == GateSettings().suite_id() and 0 < float(mv.tags["gate_score"]) <= 1
    # a second use registers nothing more
    assert (
        smp(
            [
                "evaluate",
                "--model",
                "models:/smp-segmenter@champion",
                "--data",
                "data/manifest.csv",
                "--out",
                "ev2",
                "--no-mlflow",
            ]
        )
        == 0
    )
    assert len(client.search_model_versions("name='smp-segmenter'")) == 1
