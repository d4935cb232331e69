"""smp batch: manifest, result folders, Parquet, failures, resume after a kill, records, MLflow, Ray."""

import csv
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from data.card import load_card
from data.config import load_settings
from data.flags import load_flag_settings
from data.synth.generate import generate_images
from data.synth.settings import SynthSettings
from pipeline import batch as B
from pipeline.batch import engines
from pipeline.cli import main
from pipeline.errors import UserError

CLASSICAL = ["--set", "segment.method=classical", "--set", "overlay=false"]
SCENE = [
    "image.width=600",
    "image.height=450",
    "camera.px_per_mm=[14, 18]",
    "card.probability=1.0",
    "skin.fitzpatrick=[1, 3]",
    "hair.long_fraction=[0, 0.05]",
]
N_GOOD = 5


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch_photos")
    cfg = load_settings(SynthSettings, None, SCENE, default="synth/closeup.yaml")
    paths = []
    for it in generate_images(out / "synth", N_GOOD, cfg, load_card(), load_flag_settings(), seed=31):
        paths.append(it.folder / json.loads((it.folder / "truth.json").read_text())["photo"])
    bad = out / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return out, paths, bad


def _manifest(root: Path, paths, name="manifest.csv", visits=False) -> Path:
    m = root / name
    with open(m, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["photo", "client", "region", "date", "kind"] if visits else ["photo"])
        for i, p in enumerate(paths):
            rel = Path(p).relative_to(root)
            w.writerow([rel, f"C-{i % 2}", "crown", "2026-03-0" + str(1 + i % 2), "baseline"] if visits else [rel])
    return m


def _run(manifest, out, *extra):
    return main(["batch", str(manifest), "--out", str(out), "--no-mlflow", *CLASSICAL, *extra])


def test_manifest_errors_have_row_numbers(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text(
        "photo,client,region,date,kind\na.jpg,C1,crown,2026-13-01,baseline\n,C1,crown,2026-01-01,baseline\n"
        "a.jpg,C1,crown,2026-01-01,baseline\n"
    )
    with pytest.raises(UserError) as err:
        B.read_batch_manifest(m)
    msg = str(err.value)
    assert "row 2: bad date" in msg and "row 3: no photo given" in msg and "row 4: a.jpg is already on row 2" in msg
    m.write_text("picture\na.jpg\n")
    with pytest.raises(UserError, match="row 1: no 'photo' column"):
        B.read_batch_manifest(m)
    m.write_text("photo,client\na.jpg,C1\n")
    with pytest.raises(UserError, match="missing region, date, kind"):
        B.read_batch_manifest(m)
    m.write_text("photo\nsub/a.jpg\n")
    items, visits = B.read_batch_manifest(m)
    assert not visits and items[0].path == (tmp_path / "sub" / "a.jpg").resolve() and items[0].row == 2


def test_local_batch_tables_failures_and_exit_code(photos, tmp_path, capsys):
    root, paths, bad = photos
    m = _manifest(root, [paths[0], bad, paths[1]], name="three.csv")
    rc = _run(m, tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 1
    assert [ln for ln in err.splitlines() if "failed:" in ln] == [
        ln for ln in err.splitlines() if ln.startswith("smp batch: failed: ") and "broken.jpg" in ln
    ]
    assert len([ln for ln in err.splitlines() if "failed:" in ln]) == 1
    assert "no visit columns" in err
    frame = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert list(frame["row"]) == [2, 3, 4] and list(frame["status"]) == ["ok", "failed", "ok"]
    assert set(B.METRIC_COLUMNS) <= set(frame.columns) and frame.loc[0, "dot_count"] > 0
    assert frame.loc[0, "model"] == "classical@1" and frame.loc[1, "error"].startswith(str(bad))
    fails = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert list(fails["row"]) == [3]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["assessed"] == 2 and summary["failed"] == 1 and summary["cpus_per_worker"] >= 1
    assert summary["first_result_s"] > 0 and summary["steady_photos_per_second"] > 0
    for folder in frame.loc[frame.status == "ok", "result_dir"]:
        assert (Path(folder) / "assessment.json").is_file() and (Path(folder) / "dots.csv").is_file()
        assert Path(folder).parent == tmp_path / "out" / "results"


def test_resume_after_kill_redoes_nothing_and_loses_nothing(photos, tmp_path, monkeypatch, capsys):
    root, paths, _ = photos
    m = _manifest(root, paths, name="all.csv")
    out = tmp_path / "out"
    real = B.assess_one
    calls = {"n": 0}

    def dies_after_two(assessor, item):
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if the batch were killed half-way
        calls["n"] += 1
        return real(assessor, item)

    monkeypatch.setattr(engines, "assess_one", dies_after_two)
    assert _run(m, out) == 130
    finished = sorted((out / "results").glob("*/assessment.json"))
    assert len(finished) == 2 and not (out / "results.parquet").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in finished}

    seen = []
    monkeypatch.setattr(engines, "assess_one", lambda a, it: seen.append(it.path) or real(a, it))
    capsys.readouterr()
    assert _run(m, out) == 0
    assert len(seen) == N_GOOD - 2  # nothing redone
    assert {p: p.stat().st_mtime_ns for p in finished} == mtimes
    frame = pd.read_parquet(out / "results.parquet")
    assert sorted(frame["status"]) == ["ok"] * (N_GOOD - 2) + ["skipped"] * 2  # nothing lost
    assert len(list((out / "results").glob("*/assessment.json"))) == N_GOOD
    assert "3 assessed, 2 already done, 0 failed" in capsys.readouterr().err

    seen.clear()
    assert _run(m, out) == 0 and seen == []  # a third run does nothing
    again = pd.read_parquet(out / "results.parquet")
    assert (again["status"] == "skipped").all()
    cols = ["sha256"] + list(B.METRIC_COLUMNS)
    pd.testing.assert_frame_equal(again[cols], frame[cols])


def test_local_pool_matches_in_process(photos, tmp_path):
    root, paths, _ = photos
    m = _manifest(root, paths[:3], name="pool.csv")
    assert _run(m, tmp_path / "one") == 0
    assert _run(m, tmp_path / "two", "--workers", "2") == 0
    a, b = (pd.read_parquet(tmp_path / d / "results.parquet") for d in ("one", "two"))
    cols = ["row", "sha256", "status", "model", "config_hash"] + list(B.METRIC_COLUMNS)
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_records_once_and_mlflow_run(photos, tmp_path, monkeypatch, capsys):
    import sqlalchemy as sa

    from pipeline.records import open_records
    from pipeline.records.schema import Assessment, Visit

    root, paths, _ = photos
    m = _manifest(root, paths[:3], name="visits.csv", visits=True)
    db = f"sqlite:///{tmp_path / 'records.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    args = [
        "batch",
        str(m),
        "--out",
        str(tmp_path / "out"),
        *CLASSICAL,
        "--db",
        db,
        "--store",
        str(tmp_path / "store"),
        "--create-client",
    ]
    assert main(args) == 0
    assert "3 new assessment(s) stored" in capsys.readouterr().err
    assert main(args + ["--no-mlflow"]) == 0
    assert "0 new assessment(s) stored" in capsys.readouterr().err
    with open_records(db).session(read_only=True) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Assessment)) == 3
        assert s.scalar(sa.select(sa.func.count()).select_from(Visit)) == 2

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["smp-batch"])
    assert len(runs) == 1
    r = runs.iloc[0]
    assert r["metrics.photos_total"] == 3 and r["metrics.photos_assessed"] == 3 and r["metrics.photos_failed"] == 0
    assert r["metrics.photos_per_second"] > 0 and "metrics.median_dot_density_per_cm2" in runs.columns
    assert r["params.engine"] == "local" and r["params.model"] == "classical@1"


def test_summary_rates_and_worker_threads(monkeypatch):
    frame = B.results_frame([{"row": r, "path": f"{r}.jpg", "status": "ok"} for r in range(2, 7)])
    res = B.summarise(frame, 0, 10.0, [4.0, 5.0, 6.5, 7.0, 8.0])
    assert res.throughput == 0.5 and res.first_result_s == 4.0 and res.steady_throughput == 1.0  # 4 photos in 4 s
    assert B.summarise(frame, 0, 10.0, [3.0]).steady_throughput is None
    monkeypatch.setattr(engines.os, "cpu_count", lambda: 8)
    assert B.worker_threads(3) == 2 and B.worker_threads(16) == 1 and B.worker_threads(2, 1) == 1


def test_cpus_per_worker_is_checked(photos, tmp_path, capsys):
    root, paths, _ = photos
    m = _manifest(root, paths[:1], name="one.csv")
    assert main(["batch", str(m), "--out", str(tmp_path / "o"), "--cpus-per-worker", "-1", "--no-mlflow"]) == 2
    assert "--cpus-per-worker must be at least 1" in capsys.readouterr().err
    assert _run(m, tmp_path / "o", "--cpus-per-worker", "1") == 0
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["cpus_per_worker"] == 1


@pytest.mark.slow
def test_ray_two_workers_same_results_as_local(photos, tmp_path):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")
    root, paths, bad = photos
    m = _manifest(root, [*paths[:3], bad], name="ray.csv")
    assert _run(m, tmp_path / "local") == 1
    assert _run(m, tmp_path / "ray", "--engine", "ray", "--workers", "2") == 1
    a, b = (pd.read_parquet(tmp_path / d / "results.parquet") for d in ("local", "ray"))
    cols = ["row", "sha256", "status", "model", "config_hash", "warnings"] + list(B.METRIC_COLUMNS)
    pd.testing.assert_frame_equal(a[cols], b[cols])
    for d in a["result_dir"].dropna():
        rel = Path(d).relative_to(tmp_path / "local")
        assert (Path(d) / "dots.csv").read_bytes() == (tmp_path / "ray" / rel / "dots.csv").read_bytes()


@pytest.mark.slow  # a real process killed mid-batch: run in CI's slow pass
def test_a_batch_killed_with_sigkill_resumes_without_redoing_or_losing(photos, tmp_path):
    """The real thing: `smp batch` in its own process, SIGKILLed once two photos are done."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root, paths, _ = photos
    m = _manifest(root, paths, name="killed.csv")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline.cli", "batch", str(m), "--out", str(out), "--no-mlflow", *CLASSICAL]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((out / "results").glob("*/assessment.json"))) < 2:
        assert proc.poll() is None, "the batch ended before it could be killed"
        assert time.monotonic() < deadline, "no photo finished within 2 minutes"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = {p.parent.name: p.stat().st_mtime_ns for p in (out / "results").glob("*/assessment.json")}
    assert 2 <= len(done) < N_GOOD and not (out / "results.parquet").exists()
    # no half-written result: every folder with an assessment.json is complete
    for name in done:
        assert (out / "results" / name / "dots.csv").exists()

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{N_GOOD - len(done)} assessed, {len(done)} already done, 0 failed" in rerun.stderr
    after = {p.parent.name: p.stat().st_mtime_ns for p in (out / "results").glob("*/assessment.json")}
    assert len(after) == N_GOOD and all(after[k] == v for k, v in done.items())  # nothing redone, nothing lost
    frame = pd.read_parquet(out / "results.parquet")
    assert len(frame) == N_GOOD and set(frame["status"]) <= {"ok", "skipped"}
