"""Throughput of ``smp batch``: Ray with 1 and 2 workers, local with 1 and 2 workers.

Runs the same manifest of N synthetic close-ups (default 48 photos of 1600x1200, default
model) with each engine, worker count and CPUs per worker of RUNS into a fresh output folder,
and writes photos/s (whole command, model loading and Ray start included), the steady rate
(first to last result) and the 2-vs-1 worker ratios to OUT/batch.json and BENCHMARKS.md.
Acceptance (issue "Scale and speed"): Ray 2 workers >= 1.7x Ray 1 worker, same results.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data.card import load_card  # noqa: E402
from data.config import load_settings  # noqa: E402
from data.flags import load_flag_settings  # noqa: E402
from data.synth.generate import generate_images  # noqa: E402
from data.synth.settings import SynthSettings  # noqa: E402
from pipeline.batch import METRIC_COLUMNS  # noqa: E402
from pipeline.cli import main as smp  # noqa: E402
from scripts.bench import update_benchmarks_md  # noqa: E402

# (engine, workers, CPUs per worker): a worker holding one CPU is Ray's unit of scale; the last
# row of each engine gives one worker the whole machine (the default for --workers 1 here)
RUNS = (("ray", 1, 1), ("ray", 2, 1), ("ray", 1, 0), ("local", 1, 1), ("local", 2, 1), ("local", 1, 0))


def make_photos(folder: Path, n: int, width: int, height: int) -> Path:
    manifest = folder / "manifest.csv"
    if manifest.exists() and len(manifest.read_text().splitlines()) == n + 1:
        return manifest
    cfg = load_settings(
        SynthSettings,
        None,
        [f"image.width={width}", f"image.height={height}", "card.probability=1.0"],
        default="synth/closeup.yaml",
    )
    rows = []
    for it in generate_images(folder / "photos", n, cfg, load_card(), load_flag_settings(), seed=7):
        rows.append((it.folder / json.loads((it.folder / "truth.json").read_text())["photo"]).relative_to(folder))
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["photo"])
        w.writerows([r] for r in rows)
    return manifest


def label(engine: str, workers: int, cpus: int) -> str:
    return f"{engine}-{workers}x{cpus or 'auto'}"


def table(report: dict) -> str:
    lines = [
        f"`scripts/bench_batch.py --n {report['photos']}`: one manifest of {report['photos']} synthetic "
        f"{report['size']} close-ups assessed by `smp batch` (bundled model) with each engine, "
        f"{report['cpus']} cores, nothing else running. *photos/s* is the whole command (engine start and "
        "model loading included); *steady* is the rate between the first and the last result.",
        "",
        "| engine | workers | CPUs each | seconds | first result s | photos/s | steady photos/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in report["runs"].items():
        engine, rest = key.split("-")
        workers, cpus = rest.split("x")
        lines.append(
            f"| {engine} | {workers} | {cpus} | {r['seconds']:.1f} | {r['first_result_s']:.1f} | "
            f"{r['photos_per_second']:.3f} | {r['steady_photos_per_second']:.3f} |"
        )
    rt = report["ratios"]
    lines += [
        "",
        f"Ray, 2 workers vs 1 (one CPU each): {rt['ray_2_vs_1_whole']:.2f}x whole command, "
        f"{rt['ray_2_vs_1_steady']:.2f}x steady (target 1.7x). Ray, 2 workers of one CPU vs 1 worker "
        f"given both CPUs: {rt['ray_2x1_vs_1x2_whole']:.2f}x whole, {rt['ray_2x1_vs_1x2_steady']:.2f}x steady. "
        f"Local, 2 workers vs 1 (one CPU each): {rt['local_2_vs_1_whole']:.2f}x whole.",
        f"Same results as `--engine local` (every metric within 1e-5 relative, statuses and dot counts "
        f"equal): {'yes' if report['all_close'] else 'NO'}; bit-identical where the thread count per worker "
        f"is the same: {'yes' if report['same_threads_exact'] else 'NO'}.",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--size", default="1600x1200", help="WIDTHxHEIGHT")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-md", action="store_true", help="do not touch BENCHMARKS.md")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    work = args.out / "batch"
    work.mkdir(parents=True, exist_ok=True)
    manifest = make_photos(work, args.n, w, h)
    sets = [a for o in args.overrides for a in ("--set", o)]
    results, frames = {}, {}
    for engine, workers, cpus in RUNS:
        key = label(engine, workers, cpus)
        out = work / key
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        rc = smp(
            [
                "batch",
                str(manifest),
                "--out",
                str(out),
                "--engine",
                engine,
                "--workers",
                str(workers),
                "--cpus-per-worker",
                str(cpus),
                "--no-mlflow",
                *sets,
            ]
        )
        seconds = time.perf_counter() - t
        summary = json.loads((out / "summary.json").read_text())
        frames[key] = pd.read_parquet(out / "results.parquet")
        results[key] = {
            "rc": rc,
            "seconds": round(seconds, 2),
            "photos_per_second": round(args.n / seconds, 4),
            "first_result_s": summary["first_result_s"],
            "steady_photos_per_second": summary["steady_photos_per_second"],
        }
        print(
            f"{key}: {seconds:.1f} s, {args.n / seconds:.3f} photos/s, steady "
            f"{summary['steady_photos_per_second']:.3f}",
            flush=True,
        )
    cols = ["row", "sha256", "status"] + list(METRIC_COLUMNS)
    ref = frames[label("local", 1, 1)][cols]
    # 1 vs 2 torch threads per worker differ in float rounding only: a pixel of the scalp mask (~1e-6
    # of scalp_fraction), ~1e-10 in spacing statistics; dot counts are equal
    close = {
        k: bool(
            np.allclose(
                f[list(METRIC_COLUMNS)].astype(float),
                ref[list(METRIC_COLUMNS)].astype(float),
                rtol=1e-5,
                atol=1e-9,
                equal_nan=True,
            )
            and f[cols[:3]].equals(ref[cols[:3]])
        )
        for k, f in frames.items()
    }
    exact = {
        k: bool(f[cols].equals(frames[label("local", 1, 1) if k.endswith("x1") else label("local", 1, 0)][cols]))
        for k, f in frames.items()
    }
    r = results

    def ratio(a: str, b: str, what: str) -> float:
        return round(r[a][what] / r[b][what], 3)

    report = {
        "photos": args.n,
        "size": args.size,
        "cpus": os.cpu_count(),
        "runs": results,
        "ratios": {
            "ray_2_vs_1_whole": ratio("ray-2x1", "ray-1x1", "photos_per_second"),
            "ray_2_vs_1_steady": ratio("ray-2x1", "ray-1x1", "steady_photos_per_second"),
            "ray_2x1_vs_1x2_whole": ratio("ray-2x1", "ray-1xauto", "photos_per_second"),
            "ray_2x1_vs_1x2_steady": ratio("ray-2x1", "ray-1xauto", "steady_photos_per_second"),
            "local_2_vs_1_whole": ratio("local-2x1", "local-1x1", "photos_per_second"),
        },
        "close_to_local": close,
        "exact_same_threads": exact,
        "all_close": all(close.values()),
        "same_threads_exact": all(exact.values()),
        "target_ratio": 1.7,
    }
    (args.out / "batch.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report["ratios"]), "all close:", report["all_close"], "exact:", report["same_threads_exact"])
    if not args.no_md:
        update_benchmarks_md(ROOT / "BENCHMARKS.md", "batch", table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
