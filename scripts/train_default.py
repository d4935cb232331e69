"""Reproduce the bundled default model from scratch: data, training, test, weights, card.

    python scripts/train_default.py [--work runs/default-model] [--set KEY=VALUE ...]

1. Generates the synthetic training set with `smp synth` (fixed seeds 2001-2003, never
   the benchmark's 1001-1004): close-ups across all skin types and hair states, hard
   close-ups (dark skin, faded / touching / hair-covered dots), global views.
2. Trains with configs/train/default.yaml (`smp train`, tracked in MLflow): the
   configured 14 epochs on one thread, then resumed on two threads with a 40-epoch
   schedule until early stopping (how the bundled weights were made).
3. Scores the best model on the benchmark suites (held out: other seeds) with
   `smp evaluate`, copies it to models/weights/smp-segmenter.pt and writes
   models/weights/MODEL_CARD.md with the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRAIN_SETS = [  # name, view, n, seed, overrides
    ("closeup", "closeup", 240, 2001, []),
    (
        "closeup_hard",
        "closeup",
        80,
        2002,
        [
            "skin.fitzpatrick=[4, 6]",
            "hair.long_fraction=[0.15, 0.4]",
            "dots.aged_fraction=[0.25, 0.45]",
            "dots.merged_fraction=[0.05, 0.12]",
            "dots.contrast_dl=[12, 24]",
            "hair.follicle_density_per_cm2=[100, 220]",
        ],
    ),
    ("global", "global", 80, 2003, []),
]
SUITES = ("closeup_easy", "closeup_hard", "global")
PHASE2 = ["threads=2", "optim.epochs=40", "early_stop.patience=8", "name=unet_mnv3-continued"]


def smp(*args: str) -> None:
    cmd = [sys.executable, "-m", "pipeline.cli", *args]
    print("[train_default] smp", " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def build_data(work: Path, jobs: int, limit: int | None = None, train_sets: list | None = None) -> Path:
    """The training sets (``train_sets``, default :data:`TRAIN_SETS`; generated in parallel
    processes) and one combined manifest.

    ``limit`` caps the photos of each set (a quick check of a recipe, not a training set)."""
    train_sets = TRAIN_SETS if train_sets is None else train_sets
    procs = []
    for name, view, n, seed, sets in train_sets:
        out = work / "data" / name
        if (out / "manifest.csv").exists():
            continue
        n = n if limit is None else min(n, limit)
        args = ["synth", "--out", str(out), "--n", str(n), "--seed", str(seed), "--view", view]
        for s in sets:
            args += ["--set", s]
        procs.append(
            subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL)
        )
        if len(procs) >= jobs:
            if procs.pop(0).wait():
                raise SystemExit("smp synth failed")
    for p in procs:
        if p.wait():
            raise SystemExit("smp synth failed")
    frames = []
    for name, *_ in train_sets:
        df = pd.read_csv(work / "data" / name / "manifest.csv", dtype=str, keep_default_na=False)
        for col in ("image", "mask", "dots", "truth"):
            df[col] = [f"{name}/{v}" if v else "" for v in df[col]]
        frames.append(df)
    manifest = work / "data" / "manifest.csv"
    pd.concat(frames).to_csv(manifest, index=False)
    return manifest


def test_on_suites(model: Path, out: Path, suites_root: Path, names=SUITES, limit: int | None = None) -> dict:
    """`smp evaluate` of ``model`` on the benchmark suites (held out: other seeds), built under
    ``suites_root`` if missing; ``limit`` caps each suite's photos (in a folder of its own)."""
    import yaml

    from scripts.bench import build_suites  # the benchmark's own suites, held out

    spec = yaml.safe_load((ROOT / "configs" / "bench" / "suites.yaml").read_text())["suites"]
    chosen = {k: spec[k] if limit is None else {**spec[k], "n": min(spec[k]["n"], limit)} for k in names}
    suites = build_suites(suites_root if limit is None else suites_root / f"limit{limit}", chosen)
    results = {}
    for name in names:
        smp(
            "evaluate",
            "--model",
            str(model),
            "--data",
            str(suites[name] / "manifest.csv"),
            "--out",
            str(out / name),
            "--no-mlflow",
        )
        results[name] = json.loads((out / name / "summary.json").read_text())
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "default-model")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "train" / "default.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--jobs", type=int, default=2, help="parallel generator processes")
    ap.add_argument("--skip-train", action="store_true", help="only (re)score and package work/train/best.pt")
    args = ap.parse_args()
    work = args.work.resolve()
    t0 = time.perf_counter()
    manifest = build_data(work, args.jobs)
    print(f"[train_default] data ready in {time.perf_counter() - t0:.0f} s: {manifest}", flush=True)
    if not args.skip_train:
        sets = [f"train_manifest={manifest}", f"out_dir={work / 'train'}", *args.overrides]
        # phase 1: the configured schedule on one thread (as the design comparison ran)
        smp("train", "--config", str(args.config), *sum((["--set", s] for s in sets + ["threads=1"]), []))
        # phase 2: resumed on two threads with a longer schedule; early stopping decides the end
        smp("train", "--config", str(args.config), "--resume", *sum((["--set", s] for s in sets + PHASE2), []))
    best = work / "train" / "best.pt"
    results = test_on_suites(best, work / "test", ROOT / "bench-out")
    weights = ROOT / "models" / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, weights / "smp-segmenter.pt")
    (work / "test" / "results.json").write_text(json.dumps(results, indent=2))
    print(
        json.dumps(
            {
                k: {m: v.get(m) for m in ("miou_scalp_hair", "dot_f1", "dot_loc_error_mm_median")}
                for k, v in results.items()
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
