"""`make demo`: the main job on embedded defaults.

Today: a synthetic client (baseline, sessions, follow-ups) with exact truth,
and a summary of what was made. Later issues add assessment, tracking, the
report and MLflow to this same entry point.
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
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    raise SystemExit(run(ap.parse_args().out))
