"""`make bench` (assessment part): score `smp assess` against the synthetic truth.

For every photo of the benchmark suites (built by scripts/bench.py into
``OUT/data``): scale and colour calibration errors, dot detection F1, dot
density / scalp fraction / show-through errors, pigment colour error, flag
precision and recall; then the 12-megapixel speed run (fresh 2-thread process,
model loaded, median of 5). Writes ``OUT/assess.json`` and the ``assess``
section of BENCHMARKS.md. Peers (OpenCV SimpleBlobDetector, scikit-image
blob_log, trackpy) run in the same process on the same test photos.

Usage: python scripts/bench_assess.py --out bench-out [--skip-speed | --speed-only] [--no-peers]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import fmt as bench_fmt, update_benchmarks_md  # noqa: E402
from models.scoring import match_dots  # noqa: E402
from pipeline.assess import Assessor, load_assess_settings  # noqa: E402

from data.colour import delta_e00  # noqa: E402

SUITES = ("closeup_easy", "closeup_hard", "global")
FLAGS = ("blue_shift", "faded", "spread")

SPEED_CHILD = r"""
import json, resource, statistics, sys, time
from pipeline.runtime import reuse_freed_memory
reuse_freed_memory()  # as the smp command does
import torch
torch.set_num_threads(2)
import cv2
cv2.setNumThreads(2)
from pipeline.assess import Assessor, load_assess_settings, write_assessment
path, out, method, extra = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
a = Assessor(load_assess_settings(None, [f"segment.method={method}", "segment.threads=2", *extra]))
a.assess_file(path)  # warm: first-call allocations, oneDNN kernels
runs, stages = [], []
for i in range(5):
    t = time.perf_counter()
    r = a.assess_file(path)
    runs.append(time.perf_counter() - t)
    stages.append(r.timings_s)
t = time.perf_counter()
write_assessment(r, out)
write_s = time.perf_counter() - t
med = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
print(json.dumps({"median_s": statistics.median(runs), "min_s": min(runs), "max_s": max(runs), "stages": med,
                  "write_s": write_s, "dots": int(len(r.dots)),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _rel(a, b):
    if a is None or b is None or not b:
        return None
    return abs(a / b - 1.0)


def _abs(a, b):
    if a is None or b is None:
        return None
    return abs(a - b)


def score_photo(assessor: Assessor, folder: Path) -> tuple[dict, dict]:
    """One photo: (row of scalar errors, pooled counts for flags and dots)."""
    truth = json.loads((folder / "truth.json").read_text())
    photo = folder / truth["photo"]
    t = time.perf_counter()
    a = assessor.assess_file(photo)
    secs = time.perf_counter() - t
    tm, m = truth["metrics"], a.metrics.to_dict()
    cal = a.calibration.to_json()
    ppm_true = truth["px_per_mm"]
    true_dots = pd.read_csv(folder / "dots.csv")
    row = {"photo": f"{folder.parent.name}/{folder.name}", "view": truth["view"], "seconds": secs,
           "card": bool(truth["card"]["present"]), "found_card": cal["scale_source"] == "card",
           "px_per_mm_err": _rel(cal["px_per_mm"], ppm_true) if cal["scale_source"] == "card" else None,
           "residual_de00": cal["residual_de00_mean"],
           "density_err": _rel(m["dot_density_per_cm2"], tm["dot_density_per_cm2"]),
           "count_true": tm["dot_count"], "count": m["dot_count"],
           "scalp_fraction_err_pp": None if _abs(m["scalp_fraction"], tm["scalp_fraction"]) is None
           else 100 * _abs(m["scalp_fraction"], tm["scalp_fraction"]),
           "show_through_err_pp": None if _abs(m["show_through"], tm["show_through"]) is None
           else 100 * _abs(m["show_through"], tm["show_through"]),
           "warnings": len(a.warnings), "quality_ok": a.quality.ok}
    counts: dict = {"tp": 0, "fp": 0, "fn": 0, "colour_de": [], "loc_mm": [], "diam_err": []}
    for f in FLAGS:
        counts[f] = {"tp": 0, "fp": 0, "fn": 0, "tp_m": 0, "fp_m": 0, "fn_m": 0}
    if truth["view"] == "closeup" and len(true_dots):
        pred = a.dots
        match = match_dots(pred[["x", "y"]].to_numpy(), true_dots[["x", "y"]].to_numpy(), 0.1 * ppm_true)
        counts.update(tp=match.tp, fp=match.fp, fn=match.fn)
        pi, ti = match.pred_index, match.true_index
        counts["loc_mm"] = (match.distance_px / ppm_true).tolist()
        mp, mt = pred.iloc[pi], true_dots.iloc[ti]
        de = delta_e00(mp[["L", "a", "b"]].to_numpy(float), mt[["L", "a", "b"]].to_numpy(float))
        counts["colour_de"] = de[np.isfinite(de)].tolist()
        counts["diam_err"] = (mp["diameter_mm"].to_numpy() - mt["diameter_mm"].to_numpy()).tolist()
        for f in FLAGS:
            p_all, t_all = pred[f].to_numpy(bool), true_dots[f].to_numpy(bool)
            pm, tmf = p_all[pi], t_all[ti]
            c = counts[f]
            # matched dots only: is the flag right on dots we found?
            c["tp_m"], c["fp_m"], c["fn_m"] = int((pm & tmf).sum()), int((pm & ~tmf).sum()), int((~pm & tmf).sum())
            # end to end: a flagged true dot we missed is a missed flag; a flag on a false dot is a false flag
            c["tp"] = c["tp_m"]
            c["fp"] = c["fp_m"] + int(p_all[np.setdiff1d(np.arange(len(pred)), pi)].sum())
            c["fn"] = c["fn_m"] + int(t_all[np.setdiff1d(np.arange(len(true_dots)), ti)].sum())
    row["dot_f1"] = (2 * counts["tp"] / max(1, 2 * counts["tp"] + counts["fp"] + counts["fn"])
                     if truth["view"] == "closeup" else None)
    return row, counts


def _pr(tp, fp, fn):
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    return p, r


def summarise(rows: list[dict], counts: list[dict]) -> dict:
    df = pd.DataFrame(rows)

    def med(col):
        v = df[col].dropna()
        return float(v.median()) if len(v) else None

    out = {"photos": len(df), "cards_found": int(df.found_card.sum()), "cards_present": int(df.card.sum()),
           "px_per_mm_err_median": med("px_per_mm_err"), "residual_de00_mean": med("residual_de00"),
           "density_err_median": med("density_err"), "scalp_fraction_err_pp_median": med("scalp_fraction_err_pp"),
           "show_through_err_pp_median": med("show_through_err_pp"), "seconds_median": med("seconds"),
           "quality_ok": int(df.quality_ok.sum())}
    tp, fp, fn = (sum(c[k] for c in counts) for k in ("tp", "fp", "fn"))
    p, r = _pr(tp, fp, fn)
    out.update(dot_precision=p, dot_recall=r, dot_f1=(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else None)
    de = np.concatenate([np.asarray(c["colour_de"], float) for c in counts]) if counts else np.zeros(0)
    out["colour_de00_median"] = float(np.median(de)) if len(de) else None
    loc = np.concatenate([np.asarray(c["loc_mm"], float) for c in counts]) if counts else np.zeros(0)
    out["loc_mm_median"] = float(np.median(loc)) if len(loc) else None
    dd = np.concatenate([np.asarray(c["diam_err"], float) for c in counts]) if counts else np.zeros(0)
    dd = dd[np.isfinite(dd)]
    out["diameter_err_mm_median"] = float(np.median(dd)) if len(dd) else None
    for f in FLAGS:
        agg = {k: sum(c[f][k] for c in counts) for k in ("tp", "fp", "fn", "tp_m", "fp_m", "fn_m")}
        out[f"{f}_precision"], out[f"{f}_recall"] = _pr(agg["tp"], agg["fp"], agg["fn"])
        out[f"{f}_precision_matched"], out[f"{f}_recall_matched"] = _pr(agg["tp_m"], agg["fp_m"], agg["fn_m"])
        out[f"{f}_true"] = agg["tp"] + agg["fn"]
    return out


def run_suites(data: Path, methods: list[str], overrides: list[str]) -> dict:
    res: dict = {}
    for method in methods:
        assessor = Assessor(load_assess_settings(None, [f"segment.method={method}", *overrides]))
        res[method] = {}
        for suite in SUITES:
            folder = data / suite
            if not folder.is_dir():
                continue
            rows, counts = [], []
            for img in sorted(p for p in folder.iterdir() if (p / "truth.json").exists()):
                row, cnt = score_photo(assessor, img)
                rows.append(row)
                counts.append(cnt)
            res[method][suite] = {"summary": summarise(rows, counts), "photos": rows}
            s = res[method][suite]["summary"]
            print(f"[bench] assess {method:9s} {suite:13s} F1 {fmt(s['dot_f1'])} density err {fmt(s['density_err_median'])} "
                  f"show-through err {fmt(s['show_through_err_pp_median'])} pp colour dE00 {fmt(s['colour_de00_median'])}",
                  flush=True)
    return res


def speed(photo: Path, out: Path, method: str, overrides: list[str]) -> dict:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2",
           "NO_ALBUMENTATIONS_UPDATE": "1", "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true"}
    res = subprocess.run([sys.executable, "-c", SPEED_CHILD, str(photo), str(out), method, json.dumps(overrides)],
                         capture_output=True,
                         text=True, env=env, cwd=ROOT)
    if res.returncode:
        raise SystemExit(f"assess speed run failed: {res.stderr.strip().splitlines()[-1]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def fmt(v, nd=3):
    return bench_fmt(v, nd)


def tables(res: dict) -> str:
    lines = ["Accuracy of `smp assess` against the synthetic truth (all photos of each suite; dots matched "
             "within 0.1 mm; flags end to end, a flagged true dot that was not found counts as a missed flag; "
             "`matched` = on found dots only).", ""]
    head = ("| segmenter | suite | photos | card found | px/mm err (median) | card residual dE00 | dot F1 | P / R | "
            "loc. err mm | density err (median) | scalp_fraction err pp | show_through err pp | dot colour dE00 |")
    lines += [head, "|" + "|".join(["---"] * 13) + "|"]
    for method, suites in res["suites"].items():
        for suite, r in suites.items():
            s = r["summary"]
            pct = (lambda v: "-" if v is None else f"{100 * v:.2f}%")
            lines.append(f"| {method} | {suite} | {s['photos']} | {s['cards_found']}/{s['cards_present']} | "
                         f"{pct(s['px_per_mm_err_median'])} | {fmt(s['residual_de00_mean'], 2)} | {fmt(s['dot_f1'])} | "
                         f"{fmt(s['dot_precision'], 2)} / {fmt(s['dot_recall'], 2)} | {fmt(s['loc_mm_median'], 4)} | "
                         f"{pct(s['density_err_median'])} | {fmt(s['scalp_fraction_err_pp_median'], 2)} | "
                         f"{fmt(s['show_through_err_pp_median'], 2)} | {fmt(s['colour_de00_median'], 2)} |")
    lines += ["", "| segmenter | suite | flag | true flagged | precision | recall | precision (matched) | recall (matched) |",
              "|---|---|---|---|---|---|---|---|"]
    for method, suites in res["suites"].items():
        for suite, r in suites.items():
            if suite == "global":
                continue
            s = r["summary"]
            for f in FLAGS:
                lines.append(f"| {method} | {suite} | {f} | {s[f + '_true']} | {fmt(s[f + '_precision'], 2)} | "
                             f"{fmt(s[f + '_recall'], 2)} | {fmt(s[f + '_precision_matched'], 2)} | "
                             f"{fmt(s[f + '_recall_matched'], 2)} |")
    if res.get("peers"):
        lines += ["", "Dot detectors side by side (same run, test photos = the last 4 of each suite; peers tuned "
                  "on the first 4 by a small grid search, scripts/peers.py):", "",
                  "| detector | suite | F1 | precision | recall | megapixels/s | parameters |", "|---|---|---|---|---|---|---|"]
        for suite, rows in res["peers"].items():
            for name, r in rows.items():
                lines.append(f"| {name} | {suite} | {fmt(r['f1'])} | {fmt(r['precision'], 2)} | {fmt(r['recall'], 2)} | "
                             f"{fmt(r['megapixels_per_s'], 2)} | {r.get('params', '')} |")
    sp = res.get("speed")
    if sp:
        lines += ["", "12-megapixel close-up (4000x3000, 20 px/mm), end to end with the model loaded, 2 threads, "
                  "median of 5 in one process:", "",
                  "| segmenter | median s | min | max | peak RSS MB | dots | " +
                  " | ".join(f"{k} s" for k in sp[next(iter(sp))]["stages"] if k != "total") + " | write s |",
                  "|" + "|".join(["---"] * (6 + len(sp[next(iter(sp))]["stages"]))) + "|"]
        for method, r in sp.items():
            st = " | ".join(f"{v:.3f}" for k, v in r["stages"].items() if k != "total")
            lines.append(f"| {method} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['dots']} | {st} | {r['write_s']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out")
    ap.add_argument("--methods", nargs="+", default=["model", "classical"])
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--no-md", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="assessment setting for every run (e.g. segment.precision=float32)")
    ap.add_argument("--speed-only", action="store_true",
                    help="rerun only the speed part; accuracy and peers are kept from OUT/assess.json")
    args = ap.parse_args()
    data = args.out / "data"
    if not data.is_dir():
        raise SystemExit(f"{data}: no benchmark data; run scripts/bench.py first")
    if args.speed_only:
        res: dict = json.loads((args.out / "assess.json").read_text())
    else:
        res = {"suites": run_suites(data, args.methods, args.overrides)}
        if not args.no_peers:
            res["peers"] = run_peers(data, res, args.overrides)
    if not args.skip_speed:
        photo = args.out / "speed" / "closeup_4000x3000.jpg"
        if not photo.exists():
            raise SystemExit(f"{photo}: missing; run scripts/bench_model.py first (it writes the 12 MP photo)")
        res["speed"] = {m: speed(photo, args.out / "assess-speed" / m, m, args.overrides) for m in args.methods}
        res["speed_settings"] = args.overrides
        for m, r in res["speed"].items():
            print(f"[bench] assess 12 MP {m}: {r['median_s']:.2f} s median, {r['peak_rss_mb']:.0f} MB")
    (args.out / "assess.json").write_text(json.dumps(res, indent=1, default=float))
    if not args.no_md:
        update_benchmarks_md(ROOT / "BENCHMARKS.md", "assess", tables(res))
    return 0


def run_peers(data: Path, res: dict, overrides: list[str]) -> dict:
    """Peers tuned on the first 4 photos of each close-up suite, all scored on the last 4."""
    import peers

    out: dict = {}
    for suite in ("closeup_easy", "closeup_hard"):
        folder = data / suite
        imgs = []
        for p in sorted(q for q in folder.iterdir() if (q / "truth.json").exists()):
            truth = json.loads((p / "truth.json").read_text())
            rgb = np.ascontiguousarray(cv2.imread(str(p / truth["photo"]), cv2.IMREAD_COLOR)[..., ::-1])
            imgs.append((rgb, truth["px_per_mm"], pd.read_csv(p / "dots.csv")[["x", "y"]].to_numpy(), p))
        tune, test = imgs[:4], imgs[4:]
        rows = {}
        for name in peers.PARAM_GRIDS:
            params, _ = peers.tune(name, [i[:3] for i in tune])
            r = peers.evaluate(name, params, [i[:3] for i in test])
            rows[name] = {**r, "params": params}
        for method in res["suites"]:
            assessor = Assessor(load_assess_settings(None, [f"segment.method={method}", *overrides]))
            tp = fp = fn = 0
            secs = mp = 0.0
            for rgb, ppm, true_xy, path in test:
                t = time.perf_counter()
                a = assessor.assess_file(path / "photo.jpg")
                secs += time.perf_counter() - t
                mp += rgb.shape[0] * rgb.shape[1] / 1e6
                m = match_dots(a.dots[["x", "y"]].to_numpy(), true_xy, 0.1 * ppm)
                tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
            p, r = _pr(tp, fp, fn)
            rows[f"smp-assess ({method}, whole pipeline)"] = {
                "f1": 2 * tp / max(1, 2 * tp + fp + fn), "precision": p, "recall": r,
                "megapixels_per_s": mp / secs, "params": "defaults"}
        out[suite] = rows
        for name, r in rows.items():
            print(f"[bench] peers {suite:13s} {name:40s} F1 {fmt(r['f1'])} {fmt(r['megapixels_per_s'], 2)} MP/s")
    return out


if __name__ == "__main__":
    sys.exit(main())
