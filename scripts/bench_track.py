"""Benchmark of visit tracking end to end: assessed dots -> links -> fading -> forecast.

For every client of a series suite (default ``OUT/data/series``, built by scripts/bench.py;
``--suite series_fading`` for the larger one of scripts/bench_fading.py, ``--limit`` clients),
each visit's photo is assessed (``smp assess`` defaults: the bundled model), the visits are
linked into dot tracks (``pipeline.over_time.track``) and the fading model is fitted on the tracks
(``pipeline.over_time.fading``), exactly as ``smp track`` does, without the records in between.

Scored against the truth: links (assessed dots matched to the true dots of their photo
within 0.1 mm; a link is right when both ends are the same ``dot_id``), residual after
registration (mm), then half-life, forecast coverage and blue trend as in
scripts/bench_fading.py (same scoring), and the same model on the true dots beside it.

Usage: python scripts/bench_track.py --out bench-out [--suite series] [--limit N] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import update_benchmarks_md  # noqa: E402
from bench_fading import load_client, score_result  # noqa: E402

from models.scoring import match_dots  # noqa: E402
from pipeline.one_photo.assess import Assessor  # noqa: E402
from pipeline.one_photo.settings import load_assess_settings  # noqa: E402
from pipeline.over_time.fading import fit_fading, load_fading_settings  # noqa: E402
from pipeline.over_time.track import VisitInput, link_visits  # noqa: E402


def track_client(assessor: Assessor, cdir: Path, seed: int, overrides: list[str] = ()) -> dict:
    doc, true_obs, visits = load_client(cdir)
    truth = doc["truth"]
    inputs, true_ids, t_assess = [], {}, 0.0
    for v in doc["visits"]:
        folder = cdir / v["folder"]
        vt = json.loads((folder / "truth.json").read_text())
        t = time.perf_counter()
        a = assessor.assess_file(folder / vt["photo"])
        t_assess += time.perf_counter() - t
        td = pd.read_csv(folder / "dots.csv")
        ids = np.full(len(a.dots), -1)
        if len(a.dots) and len(td):
            m = match_dots(a.dots[["x", "y"]].to_numpy(), td[["x", "y"]].to_numpy(), 0.1 * vt["px_per_mm"])
            ids[m.pred_index] = td["dot_id"].to_numpy()[m.true_index]
        true_ids[v["folder"]] = ids
        inputs.append(
            VisitInput(
                key=v["folder"],
                date=dt.date.fromisoformat(v["date"]),
                kind=v["kind"],
                session=v["session"],
                dots=a.dots,
                image=(lambda rgb=a.photo.rgb: rgb),
                px_per_mm=a.calibration.px_per_mm,
                roi=(lambda lab=a.labels: lab > 0),
                metrics=a.metrics.to_dict(),
            )
        )
    t = time.perf_counter()
    tr = link_visits(inputs)
    t_link = time.perf_counter() - t
    right = judged = 0
    residuals = []
    for ref, key, bi, ai, res in tr.pairs:
        a_ids, b_ids = true_ids[ref][bi], true_ids[key][ai]
        both = (a_ids >= 0) & (b_ids >= 0)
        judged += int(both.sum())
        right += int((a_ids[both] == b_ids[both]).sum())
        residuals += [r for r in res.tolist() if np.isfinite(r)]
    settings = load_fading_settings(overrides=[f"touchup_contrast_dl={truth['touchup_contrast_dl']}", *overrides])
    base = dt.date.fromisoformat(doc["visits"][0]["date"])
    obs = tr.observations.rename(columns={"track_id": "dot_key"})
    rng = np.random.default_rng([seed, int(cdir.name.split("_")[-1])])
    measured = score_result(fit_fading(obs, visits, settings, rng, baseline_date=base), truth, visits, true_obs)
    oracle = score_result(fit_fading(true_obs, visits, settings, rng, baseline_date=base), truth, visits, true_obs)
    return {
        "client": cdir.name,
        "visits": len(inputs),
        "pairs": len(tr.pairs),
        "unregistered": sum(not lk.ok for lk in tr.links),
        "links_judged": judged,
        "links_right": right,
        "residual_mm_median": float(np.median(residuals)) if residuals else None,
        "assess_s": t_assess,
        "link_s": t_link,
        "measured": measured,
        "true_dots": oracle,
    }


def summarise(rows: list[dict]) -> dict:
    def frac(key: str, which: str) -> float | None:
        vals = [bool(r[which][key]) for r in rows]
        return sum(vals) / len(vals) if vals else None

    out = {
        "clients": len(rows),
        "pairs": sum(r["pairs"] for r in rows),
        "unregistered": sum(r["unregistered"] for r in rows),
        "links_right_fraction": (sum(r["links_right"] for r in rows) / max(1, sum(r["links_judged"] for r in rows))),
        "residual_mm_median": float(
            np.median([r["residual_mm_median"] for r in rows if r["residual_mm_median"] is not None] or [np.nan])
        ),
    }
    for which in ("measured", "true_dots"):
        errs = [abs(r[which]["half_life_rel_err"]) for r in rows if r[which]["half_life_rel_err"] is not None]
        blue = [r for r in rows if r[which]["blue_client"]]
        plain = [r for r in rows if not r[which]["blue_client"]]
        spreading = [r for r in rows if r[which]["spread_client"]]
        still = [r for r in rows if not r[which]["spread_client"]]
        out[which] = {
            "half_life_within_15pct": (sum(e <= 0.15 for e in errs) / len(rows)) if rows else None,
            "half_life_err_median": float(np.median(errs)) if errs else None,
            "forecast_covered": frac("forecast_covered", which),
            "blue_found_on_blue": (sum(r[which]["blue_detected"] for r in blue) / len(blue)) if blue else None,
            "blue_found_on_others": (sum(r[which]["blue_detected"] for r in plain) / len(plain)) if plain else None,
            "blue_clients": len(blue),
            "spread_found_on_spread": (sum(r[which]["spread_detected"] for r in spreading) / len(spreading))
            if spreading
            else None,
            "spread_found_on_others": (sum(r[which]["spread_detected"] for r in still) / len(still)) if still else None,
            "spread_clients": len(spreading),
        }
    return out


def table(s: dict, suite: str) -> str:
    def f(v, nd=3):
        return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    m, t = s["measured"], s["true_dots"]
    lines = [
        f"End to end on the `{suite}` suite ({s['clients']} clients, {s['pairs']} registered visit pairs; "
        "dots found by `smp assess` with the bundled model), the fading model on the same clients' true "
        "dots beside it:",
        "",
        "| figure | assessed dots | true dots | target |",
        "|---|---|---|---|",
        f"| correct dot links | {f(s['links_right_fraction'], 4)} | - | >= 0.98 |",
        f"| residual after registration, mm (median) | {f(s['residual_mm_median'], 4)} | - | <= 0.05 |",
        f"| visits not registered | {s['unregistered']} | - | - |",
        f"| half-life within 15% | {f(m['half_life_within_15pct'], 2)} | {f(t['half_life_within_15pct'], 2)} | "
        "all clients with >= 4 follow-ups |",
        f"| half-life error (median) | {f(m['half_life_err_median'], 3)} | {f(t['half_life_err_median'], 3)} | - |",
        f"| forecast interval holds the true date | {f(m['forecast_covered'], 2)} | "
        f"{f(t['forecast_covered'], 2)} | >= 0.90 |",
        f"| blue trend found, blue clients ({m['blue_clients']}) | {f(m['blue_found_on_blue'], 2)} | "
        f"{f(t['blue_found_on_blue'], 2)} | >= 0.90 |",
        f"| blue trend found, other clients | {f(m['blue_found_on_others'], 2)} | "
        f"{f(t['blue_found_on_others'], 2)} | <= 0.10 |",
        f"| spread found, spreading clients ({m['spread_clients']}) | {f(m['spread_found_on_spread'], 2)} | "
        f"{f(t['spread_found_on_spread'], 2)} | >= 0.90 |",
        f"| spread found, other clients | {f(m['spread_found_on_others'], 2)} | "
        f"{f(t['spread_found_on_others'], 2)} | <= 0.05 |",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}.",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out")
    ap.add_argument("--suite", default="series")
    ap.add_argument("--limit", type=int, default=0, help="at most this many clients (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-md", action="store_true")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a fading setting (repeatable)",
    )
    args = ap.parse_args()
    folder = args.out / "data" / args.suite
    clients = sorted(p for p in folder.glob("client_*") if (p / "series.json").exists())
    if args.limit:
        clients = clients[: args.limit]
    if not clients:
        raise SystemExit(f"{folder}: no client series; run scripts/bench.py (or bench_fading.py) first")
    assessor = Assessor(load_assess_settings())
    rows = []
    for cdir in clients:
        r = track_client(assessor, cdir, args.seed, args.overrides)
        rows.append(r)
        print(
            f"[bench] track {cdir.name}: links {r['links_right']}/{r['links_judged']} right, "
            f"half-life err {r['measured']['half_life_rel_err']}, "
            f"forecast covered {r['measured']['forecast_covered']}",
            flush=True,
        )
    s = summarise(rows)
    (args.out / f"track-{args.suite}.json").write_text(
        json.dumps({"summary": s, "clients": rows}, indent=1, default=float)
    )
    text = table(s, args.suite)
    print(text)
    if not args.no_md:
        update_benchmarks_md(ROOT / "BENCHMARKS.md", f"track-{args.suite}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
