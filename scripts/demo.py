"""`make demo`: the main job on embedded defaults.

Today: a synthetic client (baseline, sessions, follow-ups) with exact truth,
a summary of what was made, the bundled model's segmentation and dots on
every visit's photo (overlays in demo-out/segmentation/, scored against the
truth), ``smp assess`` on every photo, named by its visit (demo-out/assess/<visit>/), the visits
ingested into the records (``smp visit add --assess``: demo-out/records.db and
its photo store) and ``smp track`` on the client (demo-out/track/<region>/:
tracks, fading, touch-up forecast, plots), printed next to the truth; then the
client's reports (demo-out/reports/: timeline, the latest close-up, before treatment vs the
healed result), self-contained HTML.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli import main as smp


def run(out: Path) -> int:
    rc = smp(["synth", "--out", str(out / "client"), "--n", "1", "--series", "--seed", "7",
              "--set", "image.width=1024", "--set", "image.height=768"])
    if rc:
        return rc
    series = json.loads((out / "client" / "client_000" / "series.json").read_text())
    print(f"\nsynthetic client {series['client']} (region {series['region']}):")
    for v in series["visits"]:
        m = v["metrics"]
        dens = m["dot_density_per_cm2"]
        print(f"  {v['date']}  {v['kind']:<9} {v['folder']:<26} dots {m['dot_count'] or 0:>5}  "
              f"density {dens if dens is None else round(dens, 1)!s:>6}/cm2  "
              f"show-through {m['show_through']:.3f}  faded {m['faded_fraction'] or 0:.2f}")
    t = series["truth"]
    print(f"  truth: contrast half-life {t['half_life_days']:.0f} days, blue-shift client: {t['blue_client']}, "
          f"touch-up due {t['touchup_due_date']}")
    rc = segment(out / "client", out / "segmentation")
    rc = rc or assess(out / "client", out / "assess", series)
    rc = rc or track(out / "client", out, series)
    return rc or reports(out, series)


def segment(data: Path, out: Path) -> int:
    """The bundled model on every photo of the demo client, with overlays and scores."""
    import torch

    from data.manifest import read_manifest
    from models.bundled import default_model_path
    from models.checkpoint import load_model
    from models.evaluate import evaluate, write_report

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    loaded = load_model(default_model_path())
    manifest = read_manifest(data / "manifest.csv")
    ev = evaluate(loaded.model, manifest, keep_samples=len(manifest))
    write_report(ev, out)
    print(f"\nbundled model ({loaded.path.name}, sha256 {loaded.sha256[:12]}) on the demo photos:")
    for (_, r), s in zip(ev.table.iterrows(), ev.samples):
        f1 = r.get("dot_f1")
        print(f"  {Path(r['image']).parent.name:<26} mIoU scalp/hair {r['miou_scalp_hair']:.3f}  "
              f"dots predicted {int(r['n_pred_dots']):>5}, true {int(r.get('n_true_dots', 0) or 0):>5}  "
              f"F1 {'-' if f1 != f1 or f1 is None else f'{f1:.3f}'}  {r['seconds']:.2f} s")
    print(f"  overlays: {out}/overlay_*.png (tint: scalp orange, hair blue; dots: green found, "
          f"red missed, yellow false)")
    return 0


def _visit_options(v: dict, prefix: str = "") -> list[str]:
    """``--date``, ``--kind`` (and ``--session``) of a visit of series.json, as smp assess/compare take them."""
    opts = [f"--{prefix}date", v["date"], f"--{prefix}kind", v["kind"]]
    return opts + [f"--{prefix}session", str(v["session"])] if v["session"] else opts


def assess(data: Path, out: Path, series: dict) -> int:
    """``smp assess`` on every visit's photo, named by its client, region and visit; the measured
    figures next to the truth."""
    print(f"\nsmp assess on the demo photos ({out}/<visit>/photo/assessment.json, dots.csv, mask.png, overlay.png):")
    print(f"  {'visit':<26} {'dots':>5} {'true':>5}  {'density/cm2':>11} {'true':>6}  show-through (true)  "
          f"faded  blue  spread")
    for v in series["visits"]:
        p = next((data / "client_000" / v["folder"]).glob("photo.*"))
        rc = smp(["assess", str(p), "--out", str(out / v["folder"]), "--client", series["client"],
                  "--region", series["region"], *_visit_options(v)])
        if rc:
            return rc
        doc = json.loads((out / v["folder"] / p.stem / "assessment.json").read_text())
        m, t = doc["metrics"], v["metrics"]

        def f(x, nd=1):
            return "-" if x is None else f"{x:.{nd}f}"
        print(f"  {v['folder']:<26} {f(m['dot_count'], 0):>5} {t.get('dot_count') or 0:>5}  "
              f"{f(m['dot_density_per_cm2']):>11} {f(t.get('dot_density_per_cm2')):>6}  "
              f"{f(m['show_through'], 3):>6} ({f(t.get('show_through'), 3)})        "
              f"{f(m['faded_fraction'], 2):>5}  {f(m['blue_shift_fraction'], 2):>4}  {f(m['spread_fraction'], 2):>6}")
    return 0


def track(data: Path, out: Path, series: dict) -> int:
    """Ingest every visit into the records (assessing its photo), then ``smp track`` the client."""
    db = f"sqlite:///{(out / 'records.db').resolve()}"
    common = ["--db", db, "--store", str(out / "store")]
    client, region = series["client"], series["region"]
    print(f"\ningesting the visits into the records ({out / 'records.db'}):")
    for v in series["visits"]:
        photo = next((data / "client_000" / v["folder"]).glob("photo.*"))
        args = ["visit", "add", str(photo), "--client", client, "--region", region, "--date", v["date"],
                "--kind", v["kind"], "--create-client", "--assess", *common]
        if v["session"]:
            args += ["--session", str(v["session"])]
        rc = smp(args)
        if rc:
            return rc
    print(f"\nsmp track {client} ({out / 'track'}/{region}/track.json, tracks.csv, dots_fading.csv, plots):")
    rc = smp(["track", client, "--out", str(out / "track"), *common])
    t = series["truth"]
    print(f"  truth: half-life {t['half_life_days']:.0f} days, touch-up due {t['touchup_due_date']}, "
          f"blue-shift client: {t['blue_client']}")
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
    healed = next((v for v in visits[last_session + 1:] if v["kind"] == "follow-up"), visits[-1])
    photo = (lambda v: str(next((out / "client" / "client_000" / v["folder"]).glob("photo.*"))))
    rc = smp(["report", str(out / "track" / region), "--out", str(rep / "timeline.html")])
    rc = rc or smp(["report", str(out / "assess" / latest), "--out", str(rep / "latest.html")])
    if rc:
        return rc
    made = ["timeline.html", "latest.html"]
    if smp(["compare", photo(before), photo(healed), "--out", str(out / "compare"),
            "--client", series["client"], "--region", region, *_visit_options(before, "before-"),
            *_visit_options(healed, "after-")]) == 0:
        rc = smp(["report", str(out / "compare"), "--out", str(rep / "before_after.html")])
        made.append("before_after.html")
    print(f"\nreports (self-contained HTML, print to PDF from a browser):")
    for name in made:
        print(f"  {(rep / name).resolve()}")
    return rc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    raise SystemExit(run(ap.parse_args().out))
