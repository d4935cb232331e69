"""The data scientist's loop end to end: reviewers judge photos in the web app (confirm, reject, add, paint,
done) -> the label export -> `smp train --init models:/smp-segmenter@champion` for a few steps -> a new
registered version that takes `champion` only if it beats the champion on the gate suite -> the champion and
the new version compared on the clinic's held-out labels beside a synthetic suite, in one MLflow run. All in
a temporary data home and a temporary MLflow store."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from web_support import dispose, make_world, synthetic_photos, upload

pytestmark = pytest.mark.slow

GATE = ("tracking.gate.n_photos=2", "tracking.gate.width=256", "tracking.gate.height=192")


def _review(world, assessment_id: int) -> None:
    """A reviewer's pass over one photo through the photo review API: two dots confirmed, one rejected,
    a missed one added, hair and scalp painted, the dots marked done."""
    from pipeline.records.schema import Dot

    reviewer = world.login("a-reviewer")
    with world.ctx.records.session() as s:
        dots = s.scalars(sa.select(Dot).where(Dot.assessment_id == assessment_id).order_by(Dot.dot_index)).all()
    api = f"/api/v1/review/photos/{assessment_id}"
    acts = [
        ("decisions", {"dot_id": dots[0].id, "decision": "accept"}),
        ("decisions", {"dot_id": dots[1].id, "decision": "accept"}),
        ("decisions", {"dot_id": dots[2].id, "decision": "reject"}),
        ("dots", {"x": 40.5, "y": 50.25}),
        ("shapes", {"label": "hair", "kind": "brush", "points": [[10, 10], [120, 60]], "radius_px": 3}),
        ("shapes", {"label": "scalp", "kind": "polygon", "points": [[200, 200], [400, 200], [400, 380]]}),
        ("done", {}),
    ]
    for action, body in acts:
        world.clock.advance(1)
        r = reviewer.post(f"{api}/{action}", json=body, headers={"X-CSRF-Token": reviewer.csrf})
        assert r.status_code == 200, (action, r.text)


def test_reviewer_labels_to_a_gated_new_version(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from data.manifest import read_manifest
    from models.gate import GateSettings, gate_suite
    from pipeline.cli import main as smp
    from pipeline.records.schema import Assessment

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    # three clients' photos, assessed by the app; clients 1 and 2 export to train, client 3 to test
    world = make_world(tmp_path / "home")
    try:
        photos = synthetic_photos(tmp_path / "synth", 3, seed=31)
        sent = []
        for i, photo in enumerate(photos):
            r = upload(world.api("a-staff"), photo, client_id=f"A-{i + 1}", date=f"2026-03-0{i + 1}", view="closeup")
            assert r.status_code == 201, r.text
            sent.append(r.json()["photo_id"])
        assert world.drain() == 3
        with world.ctx.records.session() as s:
            assessments = [s.scalar(sa.select(Assessment.id).where(Assessment.photo_id == p)) for p in sent]
        for aid in assessments:
            _review(world, aid)
        c = world.login("a-reviewer")
        r = c.post("/review/export", data={"csrf_token": c.csrf})
        assert r.status_code == 200, r.text
        archive = zipfile.ZipFile(io.BytesIO(r.content))
        archive.extractall(tmp_path / "export")
    finally:
        dispose()
    (manifest_path,) = (tmp_path / "export").glob("*/manifest.csv")
    rows = list(read_manifest(manifest_path))
    assert len(rows) == 3 and all(r.dots is not None and r.source == "review" for r in rows)
    assert sorted(r.split for r in rows) == ["test", "train", "train"]

    # fine-tune the champion (a fresh store: the bundled model, registered first) for a few steps
    val = gate_suite(GateSettings(n_photos=2, width=256, height=192))  # synthetic, every row "val"
    sets = [
        f"train_manifest={manifest_path}",
        f"val_manifest={val}",
        f"out_dir={tmp_path / 'run'}",
        "device=cpu",
        "batch_size=2",
        "threads=2",
        "num_workers=0",
        "data.crop_size=96",
        "optim.epochs=1",
        "optim.steps_per_epoch=2",
        "optim.warmup_steps=1",
        "eval.max_images=2",
        "tracking.system_metrics=false",
        "tracking.overlays=0",
        *GATE,
    ]
    args = ["train", "--init", "models:/smp-segmenter@champion", "--quiet"]
    for item in sets:
        args += ["--set", item]
    assert smp(args) == 0

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    versions = {str(v.version): v for v in client.search_model_versions("name='smp-segmenter'")}
    assert set(versions) == {"1", "2"} and versions["1"].tags["source"] == "bundled"
    new, bundled = versions["2"], versions["1"]
    champion = str(client.get_model_version_by_alias("smp-segmenter", "champion").version)
    beats = float(new.tags["gate_score"]) > float(bundled.tags["gate_score"]) + 0.01
    assert champion == ("2" if beats else "1"), (new.tags, bundled.tags)
    assert new.tags["gate_promoted"] == str(beats) and new.tags["gate_suite"] == bundled.tags["gate_suite"]
    run = client.get_run(new.run_id)
    assert run.data.tags["champion_decision"] == new.tags["gate_decision"]
    assert run.data.params["init_weights"] == "models:/smp-segmenter@champion"
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"train", "val"}

    # the champion and the new version on the clinic's held-out labels beside the synthetic suite
    out = tmp_path / "cmp"
    assert (
        smp(
            [
                "evaluate",
                "--model",
                "models:/smp-segmenter@champion",
                "--model",
                "models:/smp-segmenter/2",
                "--data",
                str(manifest_path),
                "--split",
                "test",
                "--data",
                str(val),
                "--split",
                "val",
                "--out",
                str(out),
                "--overlays",
                "0",
            ]
        )
        == 0
    )
    table = pd.read_csv(out / "comparison.csv")
    assert len(table) == 4 and set(table["split"]) == {"test", "val"}
    assert (table.loc[table["split"] == "test", "n_images"] == 1).all()
    parents = [
        r
        for r in client.search_runs([client.get_experiment_by_name("smp-segmenter-evaluate").experiment_id])
        if "mlflow.parentRunId" not in r.data.tags
    ]
    assert len(parents) == 1
    assert Path(out / "comparison.csv").read_text().count("models:/smp-segmenter") == 4
