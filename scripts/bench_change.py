"""How far a measured change between two photos of one client is from the true change.

For every pair of visits of the first ``--clients`` synthetic clients of each series suite
(``OUT/data/series``, ``OUT/data/series_fading``, built by scripts/bench.py), each photo is
assessed (default settings, the bundled model) and the change of show-through and of dot
density between the two photos is compared with the true change. What a before/after
report calls better or worse must exceed these errors (configs/compare/default.yaml,
``change``): their 90th percentile, the same 90% used by every range the product reports.

Show-through: the error in percentage points. Density: the error as a share of the larger
of the two true densities (pairs where it is at least 5 dots per cm²): the detector's error
grows with the density.

Writes ``OUT/change.json`` and the ``change`` section of BENCHMARKS.md.

Usage: python scripts/bench_change.py --out bench-out [--clients 8] [--no-md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from pipeline.one_photo.assess import Assessor  # noqa: E402

SUITES = ("series", "series_fading")
PERCENTILES = (50, 75, 90)


def client_pairs(assessor: Assessor, client: Path) -> list[dict]:
    """Every pair of visits of one client: measured and true show-through and density of both."""
    series = json.loads((client / "series.json").read_text())
    seen = []
    for v in series["visits"]:
        photo = next((client / v["folder"]).glob("photo.*"))
        m = assessor.assess_file(photo).metrics.to_dict()
        seen.append(
            {
                "visit": v["folder"],
                "show_through": m["show_through"],
                "density": m["dot_density_per_cm2"],
                "true_show_through": v["metrics"]["show_through"],
                "true_density": v["metrics"]["dot_density_per_cm2"],
            }
        )
    rows = []
    for a, b in itertools.combinations(seen, 2):
        row = {"client": client.name, "before": a["visit"], "after": b["visit"]}
        if None not in (a["show_through"], b["show_through"], a["true_show_through"], b["true_show_through"]):
            row["show_through_err"] = (b["show_through"] - a["show_through"]) - (
                b["true_show_through"] - a["true_show_through"]
            )
        if None not in (a["density"], b["density"], a["true_density"], b["true_density"]):
            larger = max(a["true_density"], b["true_density"])
            if larger >= 5:
                row["density_err_relative"] = (
                    (b["density"] - a["density"]) - (b["true_density"] - a["true_density"])
                ) / larger
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    st = np.abs([r["show_through_err"] for r in rows if "show_through_err" in r]) * 100
    de = np.abs([r["density_err_relative"] for r in rows if "density_err_relative" in r])
    return {
        "pairs_show_through": int(len(st)),
        "pairs_density": int(len(de)),
        "show_through_err_pp": {str(p): float(np.percentile(st, p)) for p in PERCENTILES} if len(st) else None,
        "density_err_relative": {str(p): float(np.percentile(de, p)) for p in PERCENTILES} if len(de) else None,
    }


def table(result: dict) -> str:
    lines = [
        "How far a measured change between two photos of one client is from the true change "
        f"(`scripts/bench_change.py`; every pair of visits of up to {result['clients']} clients of each "
        "series suite, each photo assessed with the default settings). Show-through in percentage points; "
        "density as a share of the larger true density of the two photos (pairs where it is at least "
        "5 per cm²). A before/after report calls a change better or worse only beyond the 90th percentile "
        "(configs/compare/default.yaml, `change`).",
        "",
        "| suite | pairs | show-through error p50 / p75 / p90 (pp) | density error p50 / p75 / p90 |",
        "|---|---|---|---|",
    ]
    for name, s in {**result["suites"], "all": result["all"]}.items():
        st, de = s["show_through_err_pp"], s["density_err_relative"]
        fst = " / ".join(f"{st[str(p)]:.1f}" for p in PERCENTILES) if st else "-"
        fde = " / ".join(f"{100 * de[str(p)]:.0f}%" for p in PERCENTILES) if de else "-"
        lines.append(f"| {name} | {s['pairs_show_through']} | {fst} | {fde} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out")
    ap.add_argument("--clients", type=int, default=8, help="clients of each series suite")
    ap.add_argument("--no-md", action="store_true", help="do not touch BENCHMARKS.md")
    args = ap.parse_args()
    assessor = Assessor()
    result: dict = {"clients": args.clients, "suites": {}}
    every = []
    for suite in SUITES:
        folder = args.out / "data" / suite
        clients = (
            sorted(p for p in folder.iterdir() if (p / "series.json").is_file())[: args.clients]
            if folder.is_dir()
            else []
        )
        if not clients:
            print(f"[bench] change: no clients in {folder} (build them with scripts/bench.py)", file=sys.stderr)
            continue
        rows = [r for c in clients for r in client_pairs(assessor, c)]
        every += rows
        result["suites"][suite] = summarise(rows)
        print(f"[bench] change {suite}: {result['suites'][suite]}", flush=True)
    if not every:
        return 1
    result["all"] = summarise(every)
    (args.out / "change.json").write_text(json.dumps(result, indent=1))
    text = table(result)
    print(text)
    if not args.no_md:
        from bench import update_benchmarks_md

        update_benchmarks_md(ROOT / "BENCHMARKS.md", "change", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
