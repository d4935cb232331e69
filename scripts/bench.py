"""`make bench`: build the fixed benchmark set and run the suites.

Writes ``OUT/results.json`` (machine-readable) and refreshes the generated
tables of BENCHMARKS.md (between the ``<!-- bench:NAME -->`` markers).
Suites added by later issues register themselves in ``SUITES``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data.config import config_dir  # noqa: E402

SPEED_CHILD = r"""
import json, os, resource, sys, time
import cv2, numpy as np
cv2.setNumThreads(1)
from data.card import load_card
from data.config import load_settings
from data.flags import load_flag_settings
from data.synth.camera import draw_camera
from data.synth.closeup import single_closeup
from data.synth.generate import item_rng
from data.synth.settings import SynthSettings
w, h, ppm, seed = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
cfg = load_settings(SynthSettings, None, [f"image.width={w}", f"image.height={h}",
                    f"camera.px_per_mm=[{ppm}, {ppm}]"], default="synth/closeup.yaml")
card, rules = load_card(), load_flag_settings()
single_closeup(item_rng(0, 0), load_settings(SynthSettings, None, ["image.width=64", "image.height=48"],
               default="synth/closeup.yaml"), card, rules, draw_camera)  # warm imports and caches
u0 = resource.getrusage(resource.RUSAGE_SELF)
t = time.perf_counter()
scene = single_closeup(item_rng(seed, 0), cfg, card, rules, draw_camera)
secs = time.perf_counter() - t
u1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": secs, "peak_rss_mb": u1.ru_maxrss / 1024,
                  "extra_rss_mb": (u1.ru_maxrss - u0.ru_maxrss) / 1024, "dots": int(len(scene.dots)),
                  "user_s": u1.ru_utime - u0.ru_utime, "sys_s": u1.ru_stime - u0.ru_stime,
                  "page_faults": u1.ru_minflt - u0.ru_minflt}))
"""


def build_suites(out: Path, suites: dict) -> dict:
    """Generate each suite with `smp synth` (the product's own command)."""
    from pipeline.cli import main as smp

    made = {}
    for name, s in suites.items():
        folder = out / "data" / name
        if (folder / "manifest.csv").exists():
            made[name] = folder
            continue
        args = [
            "synth",
            "--out",
            str(folder),
            "--n",
            str(s["n"]),
            "--seed",
            str(s["seed"]),
            "--config",
            str(config_dir() / s["config"]),
            "--view",
            "global" if "global" in s["config"] else "closeup",
        ]
        if s["series"]:
            args.append("--series")
        for o in s["set"]:
            args += ["--set", o]
        t = time.perf_counter()
        rc = smp(args)
        if rc:
            raise SystemExit(f"suite {name}: smp synth failed with exit code {rc}")
        print(f"[bench] built {name} in {time.perf_counter() - t:.1f} s")
        made[name] = folder
    return made


def generator_speed(spec: dict) -> dict:
    """Median of ``repeats`` 12-megapixel close-ups, each in a fresh 1-thread process."""
    runs = []
    env = {
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "PATH": "/usr/bin:/bin",
    }
    for i in range(spec["repeats"]):
        cmd = [
            sys.executable,
            "-c",
            SPEED_CHILD,
            str(spec["width"]),
            str(spec["height"]),
            str(spec["px_per_mm"]),
            str(100 + i),
        ]
        taskset = ["taskset", "-c", "1"] if Path("/usr/bin/taskset").exists() else []
        res = subprocess.run(taskset + cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if res.returncode:
            raise SystemExit(f"speed run failed: {res.stderr.strip().splitlines()[-1]}")
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"[bench] 12 MP close-up {i + 1}/{spec['repeats']}: {runs[-1]['seconds']:.2f} s")
    secs = [r["seconds"] for r in runs]
    return {
        "megapixels": spec["width"] * spec["height"] / 1e6,
        "px_per_mm": spec["px_per_mm"],
        "median_s": statistics.median(secs),
        "min_s": min(secs),
        "max_s": max(secs),
        "peak_rss_mb_median": statistics.median(r["peak_rss_mb"] for r in runs),
        "extra_rss_mb_median": statistics.median(r["extra_rss_mb"] for r in runs),
        "dots_median": statistics.median(r["dots"] for r in runs),
        "threads": 1,
        "user_s_median": statistics.median(r["user_s"] for r in runs),
        "sys_s_median": statistics.median(r["sys_s"] for r in runs),
        "page_faults_median": statistics.median(r["page_faults"] for r in runs),
    }


def truth_summary(folder: Path) -> dict:
    """What a suite contains, from its truth files."""
    man = pd.read_csv(folder / "manifest.csv")
    rows = []
    for t in man["truth"]:
        truth = json.loads((folder / t).read_text())
        dots = pd.read_csv((folder / t).parent / "dots.csv")
        m = truth["metrics"]
        rows.append(
            {
                "px_per_mm": truth["px_per_mm"],
                "dots": len(dots),
                "density": m["dot_density_per_cm2"],
                "scalp_fraction": m["scalp_fraction"],
                "show_through": m["show_through"],
                "card": truth["card"].get("present", False),
                "fitz": truth["params"]["skin"]["fitzpatrick"] if "skin" in truth["params"] else None,
                "hair_covered": float(dots["hair_covered"].mean()) if len(dots) else 0.0,
                "merged": float((dots["merged_with"] >= 0).mean()) if len(dots) else 0.0,
                "faded": float(dots["faded"].mean()) if len(dots) else 0.0,
                "blue": float(dots["blue_shift"].mean()) if len(dots) else 0.0,
                "spread": float(dots["spread"].mean()) if len(dots) else 0.0,
            }
        )
    df = pd.DataFrame(rows)

    def med(col):
        v = df[col].dropna()
        return None if v.empty else float(v.median())

    return {
        "images": len(df),
        "px_per_mm": [float(df.px_per_mm.min()), float(df.px_per_mm.max())],
        "fitzpatrick": sorted({int(v) for v in df.fitz.dropna()}),
        "dots_median": med("dots"),
        "density_median": med("density"),
        "scalp_fraction_median": med("scalp_fraction"),
        "show_through_median": med("show_through"),
        "card_fraction": float(df.card.mean()),
        "hair_covered_dot_fraction": med("hair_covered"),
        "merged_dot_fraction": med("merged"),
        "faded_fraction": med("faded"),
        "blue_shift_fraction": med("blue"),
        "spread_fraction": med("spread"),
    }


def fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def generator_tables(res: dict) -> str:
    sp = res["generator"]["speed"]
    lines = [
        "| measure | value | target |",
        "|---|---|---|",
        f"| 12 MP close-up ({sp['px_per_mm']} px/mm, {sp['dots_median']:.0f} dots), median of 5, 1 core | "
        f"{sp['median_s']:.2f} s (min {sp['min_s']:.2f}, max {sp['max_s']:.2f}) | <= 2 s |",
        f"| of which CPU in the process / in the kernel (page faults) | {sp['user_s_median']:.2f} s / "
        f"{sp['sys_s_median']:.2f} s ({sp['page_faults_median'] / 1e3:.0f} k minor faults) | - |",
        f"| peak RSS of the generating process | {sp['peak_rss_mb_median']:.0f} MB "
        f"(+{sp['extra_rss_mb_median']:.0f} MB for the image) | - |",
        "",
        "| suite | images | px/mm | Fitzpatrick | dots (median) | density /cm2 | scalp frac. | "
        "show-through | card | hair-covered dots | merged | faded | blue | spread | build s |",
        "|---" * 15 + "|",
    ]
    for name, s in res["generator"]["suites"].items():
        lines.append(
            f"| {name} | {s['images']} | {s['px_per_mm'][0]:.1f}-{s['px_per_mm'][1]:.1f} | "
            f"{','.join(map(str, s['fitzpatrick'])) or '-'} | {fmt(s['dots_median'], 0)} | "
            f"{fmt(s['density_median'], 1)} | {fmt(s['scalp_fraction_median'])} | {fmt(s['show_through_median'])} | "
            f"{fmt(s['card_fraction'])} | {fmt(s['hair_covered_dot_fraction'])} | {fmt(s['merged_dot_fraction'])} | "
            f"{fmt(s['faded_fraction'])} | {fmt(s['blue_shift_fraction'])} | {fmt(s['spread_fraction'])} | "
            f"{fmt(s.get('build_s'), 1)} |"
        )
    lines.append("")
    lines.append(f"Measured {res['when']} on {res['machine']}.")
    return "\n".join(lines)


def update_benchmarks_md(path: Path, section: str, body: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    block = f"{start}\n{body}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n{block}\n"
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--skip-speed", action="store_true", help="skip the 12-megapixel timing runs")
    ap.add_argument("--benchmarks-md", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    spec = yaml.safe_load((config_dir() / "bench" / "suites.yaml").read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings = {}
    suites_done = {}
    for name, s in spec["suites"].items():
        t = time.perf_counter()
        suites_done.update(build_suites(args.out, {name: s}))
        timings[name] = time.perf_counter() - t
    res = {
        "when": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {platform.python_version()}, {__import__('os').cpu_count()} cores",
        "generator": {"suites": {}},
    }
    for name, folder in suites_done.items():
        res["generator"]["suites"][name] = {**truth_summary(folder), "build_s": timings[name]}
    if args.skip_speed:
        prev = args.out / "results.json"
        res["generator"]["speed"] = json.loads(prev.read_text())["generator"]["speed"] if prev.exists() else None
    else:
        res["generator"]["speed"] = generator_speed(spec["speed"])
    (args.out / "results.json").write_text(json.dumps(res, indent=1))
    if res["generator"]["speed"]:
        update_benchmarks_md(args.benchmarks_md, "generator", generator_tables(res))
    print(f"[bench] done in {time.perf_counter() - t0:.0f} s; results in {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
