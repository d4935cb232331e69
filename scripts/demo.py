"""`make demo`: the main job on embedded defaults.

Today: a synthetic client (baseline, sessions, follow-ups) with exact truth,
a summary of what was made, the bundled model's segmentation and dots on
every visit's photo (overlays in demo-out/segmentation/, scored against the
truth), ``smp assess`` on every photo, named by its visit (demo-out/assess/<visit>/), the visits
ingested into the records (``smp visit add --assess``: demo-out/records.db and
its photo store) and ``smp track`` on the client (demo-out/track/<region>/:
tracks, fading, touch-up forecast, plots), printed next to the truth; then the
client's reports (demo-out/reports/: timeline, the latest close-up, before treatment vs the
healed result), self-contained HTML. MLflow (demo-out/mlflow.db) keeps the evaluation of the
registry's champion on the demo photos (the bundled model, registered on first use) and a run
of the assessments with their truth; the last lines say how to open them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pipeline.cli import main as smp


def run(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri  # the demo's runs stay in its own folder
    try:
        rc = _run(out)
        rc = rc or record_assessments(out)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    if not rc:
        print(f"\nMLflow runs (the champion's evaluation, the assessments against their truth): {uri}")
        print(f"  open them with: .venv/bin/mlflow ui --backend-store-uri {uri}")
    return rc


def _run(out: Path) -> int:
    rc = smp(
        [
            "synth",
            "--out",
            str(out / "client"),
            "--n",
            "1",
            "--series",
            "--seed",
            "7",
            "--set",
            "image.width=1024",
            "--set",
            "image.height=768",
        ]
    )
    if rc:
        return rc
    series = json.loads((out / "client" / "client_000" / "series.json").read_text())
    print(f"\nsynthetic client {series['client']} (region {series['region']}):")
    for v in series["visits"]:
        m = v["metrics"]
        dens = m["dot_density_per_cm2"]
        print(
            f"  {v['date']}  {v['kind']:<9} {v['folder']:<26} dots {m['dot_count'] or 0:>5}  "
            f"density {dens if dens is None else round(dens, 1)!s:>6}/cm2  "
            f"show-through {m['show_through']:.3f}  faded {m['faded_fraction'] or 0:.2f}"
        )
    t = series["truth"]
    print(
        f"  truth: contrast half-life {t['half_life_days']:.0f} days, blue-shift client: {t['blue_client']}, "
        f"touch-up due {t['touchup_due_date']}"
    )
    rc = segment(out / "client", out / "segmentation")
    rc = rc or assess(out / "client", out / "assess", series)
    rc = rc or track(out / "client", out, series)
    return rc or reports(out, series)


def segment(data: Path, out: Path) -> int:
    """The registry's champion (on a fresh store: the bundled model, registered first) on every photo of
    the demo client: ``smp evaluate``, recorded in MLflow, with overlays and scores."""
    import pandas as pd

    rc = smp(
        [
            "evaluate",
            "--model",
            "models:/smp-segmenter@champion",
            "--data",
            str(data / "manifest.csv"),
            "--out",
            str(out),
            "--overlays",
            "99",
        ]
    )
    if rc:
        return rc
    table = pd.read_csv(out / "evaluation.csv")
    print("\nthe champion model (models:/smp-segmenter@champion) on the demo photos:")
    for _, r in table.iterrows():
        f1 = r.get("dot_f1")
        print(
            f"  {Path(r['image']).parent.name:<26} mIoU scalp/hair {r['miou_scalp_hair']:.3f}  "
            f"dots predicted {int(r['n_pred_dots']):>5}, true {int(r.get('n_true_dots', 0) or 0):>5}  "
            f"F1 {'-' if f1 != f1 or f1 is None else f'{f1:.3f}'}  {r['seconds']:.2f} s"
        )
    print(
        f"  overlays: {out}/overlay_*.png (tint: scalp orange, hair blue; dots: green found, red missed, yellow false)"
    )
    return 0


def record_assessments(out: Path) -> int:
    """One MLflow run (experiment smp-demo) for the demo's assessments: each visit's measured figures
    beside its truth (``<visit>.<metric>`` and ``<visit>.true_<metric>``), and the files."""
    import mlflow

    from models.registry import use_experiment

    series = json.loads((out / "client" / "client_000" / "series.json").read_text())
    use_experiment("smp-demo", os.environ["MLFLOW_TRACKING_URI"])
    names = ("dot_count", "dot_density_per_cm2", "show_through", "dot_diameter_mm_median")
    with mlflow.start_run(run_name=f"assessments {series['client']} / {series['region']}") as run:
        first = json.loads(next((out / "assess" / series["visits"][0]["folder"]).glob("*/assessment.json")).read_text())
        mlflow.log_params(
            {
                "client": series["client"],
                "region": series["region"],
                "visits": len(series["visits"]),
                "model_sha256": str((first.get("model") or {}).get("sha256")),
                "config_hash": str(first.get("config_hash")),
            }
        )
        for i, v in enumerate(series["visits"]):
            path = next((out / "assess" / v["folder"]).glob("*/assessment.json"))
            m, t = json.loads(path.read_text())["metrics"], v["metrics"]
            for name in names:
                if m.get(name) is not None:
                    mlflow.log_metric(name, float(m[name]), step=i)
                if t.get(name) is not None:
                    mlflow.log_metric(f"true_{name}", float(t[name]), step=i)
            mlflow.log_artifact(str(path), artifact_path=f"assessments/{v['folder']}")
        for report in sorted((out / "reports").glob("*.html")):
            mlflow.log_artifact(str(report), artifact_path="reports")
        print(f"\nMLflow run {run.info.run_id} (experiment smp-demo): each visit's figures and truth by step")
    return 0


def _visit_options(v: dict, prefix: str = "") -> list[str]:
    """``--date``, ``--kind`` (and ``--session``) of a visit of series.json, as smp assess/compare take them."""
    opts = [f"--{prefix}date", v["date"], f"--{prefix}kind", v["kind"]]
    return opts + [f"--{prefix}session", str(v["session"])] if v["session"] else opts


def assess(data: Path, out: Path, series: dict) -> int:
    """``smp assess`` on every visit's photo, named by its client, region and visit; the measured
    figures next to the truth."""
    print(f"\nsmp assess on the demo photos ({out}/<visit>/photo/assessment.json, dots.csv, mask.png, overlay.png):")
    print(
        f"  {'visit':<26} {'dots':>5} {'true':>5}  {'density/cm2':>11} {'true':>6}  show-through (true)  "
        f"faded  blue  spread"
    )
    for v in series["visits"]:
        p = next((data / "client_000" / v["folder"]).glob("photo.*"))
        rc = smp(
            [
                "assess",
                str(p),
                "--out",
                str(out / v["folder"]),
                "--client",
                series["client"],
                "--region",
                series["region"],
                *_visit_options(v),
            ]
        )
        if rc:
            return rc
        doc = json.loads((out / v["folder"] / p.stem / "assessment.json").read_text())
        m, t = doc["metrics"], v["metrics"]

        def f(x, nd=1):
            return "-" if x is None else f"{x:.{nd}f}"

        print(
            f"  {v['folder']:<26} {f(m['dot_count'], 0):>5} {t.get('dot_count') or 0:>5}  "
            f"{f(m['dot_density_per_cm2']):>11} {f(t.get('dot_density_per_cm2')):>6}  "
            f"{f(m['show_through'], 3):>6} ({f(t.get('show_through'), 3)})        "
            f"{f(m['faded_fraction'], 2):>5}  {f(m['blue_shift_fraction'], 2):>4}  {f(m['spread_fraction'], 2):>6}"
        )
    return 0


def track(data: Path, out: Path, series: dict) -> int:
    """Ingest every visit into the records (assessing its photo), then ``smp track`` the client."""
    db = f"sqlite:///{(out / 'records.db').resolve()}"
    common = ["--db", db, "--store", str(out / "store")]
    client, region = series["client"], series["region"]
    print(f"\ningesting the visits into the records ({out / 'records.db'}):")
    for v in series["visits"]:
        photo = next((data / "client_000" / v["folder"]).glob("photo.*"))
        args = [
            "visit",
            "add",
            str(photo),
            "--client",
            client,
            "--region",
            region,
            "--date",
            v["date"],
            "--kind",
            v["kind"],
            "--create-client",
            "--assess",
            *common,
        ]
        if v["session"]:
            args += ["--session", str(v["session"])]
        rc = smp(args)
        if rc:
            return rc
    print(f"\nsmp track {client} ({out / 'track'}/{region}/track.json, tracks.csv, dots_fading.csv, plots):")
    rc = smp(["track", client, "--out", str(out / "track"), *common])
    t = series["truth"]
    print(
        f"  truth: half-life {t['half_life_days']:.0f} days, touch-up due {t['touchup_due_date']}, "
        f"blue-shift client: {t['blue_client']}"
    )
    return rc


def reports(out: Path, series: dict) -> int:
    """The clinic's reports: the client's timeline, the latest photo, and before/after."""
    rep = out / "reports"
    visits = series["visits"]
    region = series["region"]
    latest = visits[-1]["folder"]
    # a clinic's before/after: before treatment (the baseline) against the healed result (the first
    # follow-up after the last session); the timeline follows every visit
    before = next((v for v in visits if v["kind"] == "baseline"), visits[0])
    last_session = max(i for i, v in enumerate(visits) if v["kind"] in ("session", "touch-up"))
    healed = next((v for v in visits[last_session + 1 :] if v["kind"] == "follow-up"), visits[-1])
    photo = lambda v: str(next((out / "client" / "client_000" / v["folder"]).glob("photo.*")))
    rc = smp(["report", str(out / "track" / region), "--out", str(rep / "timeline.html")])
    rc = rc or smp(["report", str(out / "assess" / latest), "--out", str(rep / "latest.html")])
    if rc:
        return rc
    made = ["timeline.html", "latest.html"]
    if (
        smp(
            [
                "compare",
                photo(before),
                photo(healed),
                "--out",
                str(out / "compare"),
                "--client",
                series["client"],
                "--region",
                region,
                *_visit_options(before, "before-"),
                *_visit_options(healed, "after-"),
            ]
        )
        == 0
    ):
        rc = smp(["report", str(out / "compare"), "--out", str(rep / "before_after.html")])
        made.append("before_after.html")
    print("\nreports (self-contained HTML, print to PDF from a browser):")
    for name in made:
        print(f"  {(rep / name).resolve()}")
    return rc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    raise SystemExit(run(ap.parse_args().out))
