"""`make bench` (assessment part): score `smp assess` against the synthetic truth.

For every photo of the benchmark suites (built by scripts/bench.py into
``OUT/data``): scale and colour calibration errors, dot detection F1, dot
density / scalp fraction / show-through errors, pigment colour error, flag
precision and recall; then the 12-megapixel speed run (fresh 2-thread process,
model loaded, median of 5). Writes ``OUT/assess.json`` and the ``assess``
section of BENCHMARKS.md. Peers (OpenCV SimpleBlobDetector, scikit-image
blob_log, trackpy) run in the same process on the same test photos.

This script holds the command line and the runs (suites, peers, speed); the scoring of one photo
against its truth and the pooling of a suite are in scripts/assess_scoring.py, the tables of
BENCHMARKS.md in scripts/assess_tables.py.

Usage: python scripts/bench_assess.py --out bench-out [--skip-speed | --speed-only] [--no-peers]
"""

from __future__ import annotations

import argparse
import json
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

from assess_scoring import _given_scale, _pr, score_photo, summarise  # noqa: E402

# re-exported: tests/test_bench_ceiling.py imports decision_ceiling from here
from assess_scoring import decision_ceiling as decision_ceiling  # noqa: E402
from assess_tables import fmt, tables  # noqa: E402
from bench import update_benchmarks_md  # noqa: E402

from data.flags import load_flag_settings  # noqa: E402
from models.scoring import match_dots, match_radius_px  # noqa: E402
from pipeline.one_photo.assess import Assessor  # noqa: E402
from pipeline.one_photo.settings import load_assess_settings  # noqa: E402

SUITES = ("closeup_easy", "closeup_hard", "fresh_macro", "untreated", "flags", "global")
DOT_SUITES = ("closeup_easy", "closeup_hard", "fresh_macro", "untreated", "flags")

SPEED_CHILD = r"""
import json, resource, statistics, sys, time
from pipeline.runtime import reuse_freed_memory
reuse_freed_memory()  # as the smp command does
import torch
torch.set_num_threads(2)
import cv2
cv2.setNumThreads(2)
from pipeline.one_photo.assess import Assessor
from pipeline.one_photo.settings import load_assess_settings
from pipeline.one_photo.assessment import write_assessment
path, out, method, extra = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
ppm = float(sys.argv[5]) if len(sys.argv) > 5 else None
a = Assessor(load_assess_settings(None, [f"segment.method={method}", "segment.threads=2", *extra]))
a.assess_file(path, px_per_mm=ppm)  # warm: first-call allocations, oneDNN kernels
runs, stages = [], []
for i in range(5):
    t = time.perf_counter()
    r = a.assess_file(path, px_per_mm=ppm)
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
            print(
                f"[bench] assess {method:9s} {suite:13s} F1 {fmt(s['dot_f1'])} "
                f"density err {fmt(s['density_err_median'])} "
                f"show-through err {fmt(s['show_through_err_pp_median'])} pp "
                f"colour dE00 {fmt(s['colour_de00_median'])}",
                flush=True,
            )
    return res


def speed(photo: Path, out: Path, method: str, overrides: list[str], px_per_mm: float = 20.0) -> dict:
    env = {
        "PYTHONPATH": str(ROOT),
        "PATH": "/usr/bin:/bin",
        "OMP_NUM_THREADS": "2",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
    }
    res = subprocess.run(
        [sys.executable, "-c", SPEED_CHILD, str(photo), str(out), method, json.dumps(overrides), str(px_per_mm)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if res.returncode:
        raise SystemExit(f"assess speed run failed: {res.stderr.strip().splitlines()[-1]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer,)):
        return int(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out")
    ap.add_argument("--methods", nargs="+", default=["model", "classical"])
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--no-md", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument(
        "--reuse-peers",
        action="store_true",
        help="take the peers' tuned parameters from OUT/assess.json (same photos) instead of tuning them "
        "again (about an hour); every figure is still measured",
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="assessment setting for every run (e.g. segment.precision=float32)",
    )
    ap.add_argument(
        "--speed-only",
        action="store_true",
        help="rerun only the speed part; accuracy and peers are kept from OUT/assess.json",
    )
    args = ap.parse_args()
    data = args.out / "data"
    if not data.is_dir():
        raise SystemExit(f"{data}: no benchmark data; run scripts/bench.py first")
    if args.speed_only:
        res: dict = json.loads((args.out / "assess.json").read_text())
    else:
        res = {"suites": run_suites(data, args.methods, args.overrides)}
        if not args.no_peers:
            earlier = None
            if args.reuse_peers and (args.out / "assess.json").exists():
                earlier = json.loads((args.out / "assess.json").read_text()).get("peers")
            res["peers"] = run_peers(data, res, args.overrides, earlier)
            res["peers_reused"] = earlier is not None
    if not args.skip_speed:
        photo = args.out / "speed" / "closeup_4000x3000.jpg"
        if not photo.exists():
            raise SystemExit(f"{photo}: missing; run scripts/bench_model.py first (it writes the 12 MP photo)")
        res["speed"] = {m: speed(photo, args.out / "assess-speed" / m, m, args.overrides) for m in args.methods}
        res["speed_settings"] = args.overrides
        for m, r in res["speed"].items():
            print(f"[bench] assess 12 MP {m}: {r['median_s']:.2f} s median, {r['peak_rss_mb']:.0f} MB")
        # the same photo enlarged to 48 MP (8000 x 6000, 40 px/mm from its card): time, memory, and that
        # it gives the dots of the original (the canonical scale)
        big = args.out / "speed" / "closeup_8000x6000.jpg"
        if not big.exists():
            img = cv2.imread(str(photo))
            cv2.imwrite(
                str(big),
                cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC),
                [cv2.IMWRITE_JPEG_QUALITY, 95],
            )
        m0 = args.methods[0]
        res["speed_48mp"] = {m0: speed(big, args.out / "assess-speed-48" / m0, m0, args.overrides, 40.0)}
        r = res["speed_48mp"][m0]
        print(
            f"[bench] assess 48 MP {m0}: {r['median_s']:.2f} s median, {r['peak_rss_mb']:.0f} MB, {r['dots']} dots "
            f"(12 MP: {res['speed'][m0]['dots']})"
        )
    res["measurable_min_diameter_px"] = load_flag_settings().measurable_min_diameter_px
    (args.out / "assess.json").write_text(json.dumps(res, indent=1, default=_jsonable))
    if not args.no_md:
        update_benchmarks_md(ROOT / "BENCHMARKS.md", "assess", tables(res))
    return 0


def run_peers(data: Path, res: dict, overrides: list[str], reuse: dict | None = None) -> dict:
    """Peers tuned on the first 4 photos of each dot suite (the untreated suite, which has no dots to
    tune on, takes the easy suite's parameters), all scored on the last 4 with the same stick as ours.
    ``reuse``: the peers' rows of an earlier run on the same photos: their tuned parameters are taken
    over (the tuning takes about an hour) and every figure is measured again on today's truth."""
    import peers

    out: dict = {}
    tuned_easy: dict = {}
    for suite in ("closeup_easy", "closeup_hard", "fresh_macro", "untreated"):
        folder = data / suite
        if not folder.is_dir():
            continue
        imgs = []
        for p in sorted(q for q in folder.iterdir() if (q / "truth.json").exists()):
            truth = json.loads((p / "truth.json").read_text())
            rgb = np.ascontiguousarray(cv2.imread(str(p / truth["photo"]), cv2.IMREAD_COLOR)[..., ::-1])
            d = pd.read_csv(p / "dots.csv")
            imgs.append(
                (
                    rgb,
                    truth["px_per_mm"],
                    d[["x", "y"]].to_numpy(),
                    d["visible"].to_numpy(bool),
                    d["diameter_mm"].to_numpy(float),
                    p,
                    truth,
                )
            )
        tune, test = imgs[:4], imgs[4:]
        rows = {}
        for name in peers.PARAM_GRIDS:
            if reuse is not None and name in reuse.get(suite, {}):
                params = reuse[suite][name]["params"]  # the slow part, the tuning, is carried over
            elif suite == "untreated":
                params = tuned_easy[name]
            else:
                params, _ = peers.tune(name, [i[:5] for i in tune])
            if suite == "closeup_easy":
                tuned_easy[name] = params
            r = peers.evaluate(name, params, [i[:5] for i in test])
            r["false_dots_per_cm2"] = _false_per_cm2(name, params, test, peers) if suite == "untreated" else None
            rows[name] = {**r, "params": params}
        for method in res["suites"]:
            assessor = Assessor(load_assess_settings(None, [f"segment.method={method}", *overrides]))
            tp = fp = fn = 0
            secs = mp = 0.0
            per_cm2 = []
            for rgb, ppm, true_xy, vis, diam, path, truth in test:
                t = time.perf_counter()
                a = assessor.assess_file(path / truth["photo"], px_per_mm=_given_scale(truth))
                secs += time.perf_counter() - t
                mp += rgb.shape[0] * rgb.shape[1] / 1e6
                m = match_dots(a.dots[["x", "y"]].to_numpy(), true_xy, match_radius_px(diam, ppm), visible=vis)
                tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
                per_cm2.append(a.metrics.dot_density_per_cm2)
            p, r = _pr(tp, fp, fn)
            rows[f"smp-assess ({method}, whole pipeline)"] = {
                "f1": 2 * tp / max(1, 2 * tp + fp + fn) if tp + fn else None,
                "precision": p,
                "recall": r,
                "megapixels_per_s": mp / secs,
                "params": "defaults",
                "false_dots_per_cm2": float(np.median([v for v in per_cm2 if v is not None]))
                if suite == "untreated" and any(v is not None for v in per_cm2)
                else None,
            }
        out[suite] = rows
        for name, r in rows.items():
            print(
                f"[bench] peers {suite:13s} {name:40s} F1 {fmt(r['f1'])} false/cm2 {fmt(r['false_dots_per_cm2'], 1)} "
                f"{fmt(r['megapixels_per_s'], 2)} MP/s",
                flush=True,
            )
    return out


def _false_per_cm2(name: str, params: dict, photos: list, peers) -> float:
    """Median over untreated photos of a peer's detections per cm2 of scalp + hair (all false)."""
    vals = []
    for rgb, ppm, _, _, _, path, _ in photos:
        n = len(peers.DETECTORS[name](rgb, ppm, params))
        mask = cv2.imread(str(path / "mask.png"), cv2.IMREAD_UNCHANGED)
        area_cm2 = float((mask > 0).sum()) / (ppm * ppm) / 100.0
        vals.append(n / area_cm2 if area_cm2 > 0 else np.nan)
    return float(np.nanmedian(vals))


if __name__ == "__main__":
    sys.exit(main())
