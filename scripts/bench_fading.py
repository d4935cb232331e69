"""Benchmark of the fading model (``pipeline/over_time/fading/``) on synthetic client series with known truth.

1. Builds (or reuses) the suite ``OUT/data/series_fading``: ``--n`` clients made by
   ``smp synth --series`` at 512 x 384 px (small photos: the model reads only the true
   dot tables, and generation stays ~3 s a client on one core) with seed 1005 (distinct
   from the benchmark suites 1001-1004 and the training sets 2001-2003).
2. For every client, fits the fading model on the TRUE dots of each visit (``dots.csv``,
   linked by ``dot_id``): the model alone, without detection or linking errors. The
   touch-up threshold is the truth's (``series.json``: ``touchup_contrast_dl``).
3. Scores against ``series.json``'s truth: half-life error (clients with >= 4 visits
   after the last regular session), whether the half-life interval holds the truth, the
   forecast interval's coverage of the true crossing date (``touchup_due_date``; no
   date = no crossing within 15 years: covered when the interval reaches past the
   horizon), blue-trend detection on blue clients and false alarms on the others,
   fast-fader precision/recall against ``fast_fading_dot_ids`` (dots with a rate), and
   spreading-dot precision/recall against ``spread_dot_ids``.

The truth's crossing date (``series.json``) uses each dot's fresh contrast as rendered
(dots of a few pixels render lighter than asked, scar tissue takes up less pigment), which
is what ``dots.csv`` and any measurement see. The forecast is still scored separately for
clients with dots of at least and below 2.5 px (``dot_px``: median true diameter times the
nominal scale), and for those of at least 2.5 px with under 5 % of dots in a scar.

Prints a markdown table and writes ``OUT/fading.json`` (per-client rows included).

``--suite minority`` builds ``OUT/data/series_minority`` instead (seed 1006): clients of whom
half have a blue shift in 5-30 % of their dots and, independently, half have 5-30 % of their
dots spreading (the rest none), to check that a trend carried by a minority of the dots is found
(>= 90 % of such clients) and not claimed for the others (<= 5 %).

Usage: python scripts/bench_fading.py --out bench-out [--suite series_fading|minority] [--n 60] [--seed 1005]
       [--bootstrap 200]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.over_time.fading import fit_fading, load_fading_settings  # noqa: E402

SIZE = (512, 384)
#: Generator settings of each suite (``smp synth --set``) and its seed.
SUITES = {
    "series_fading": ([], 1005),
    "minority": (
        [
            "series.blue_dot_fraction=[0.05, 0.3]",
            "series.spread_client_probability=0.5",
            "series.spread_dot_fraction=[0.05, 0.3]",
        ],
        1006,
    ),
}
SMALL_DOT_PX = 2.5
COLUMNS = ["dot_id", "contrast_dL", "blue_index", "diameter_mm", "L", "in_scar"]


def build_suite(folder: Path, n: int, seed: int, synth_set: list[str] = ()) -> None:
    spec = {"n": n, "seed": seed, "width": SIZE[0], "height": SIZE[1]}
    if synth_set:
        spec["set"] = list(synth_set)
    marker = folder / "suite.json"
    if (folder / "manifest.csv").exists() and marker.exists() and json.loads(marker.read_text()) == spec:
        return
    from pipeline.cli import main as smp

    t = time.perf_counter()
    rc = smp(
        [
            "synth",
            "--series",
            "--out",
            str(folder),
            "--n",
            str(n),
            "--seed",
            str(seed),
            "--set",
            f"image.width={SIZE[0]}",
            "--set",
            f"image.height={SIZE[1]}",
            *[a for o in synth_set for a in ("--set", o)],
        ]
    )
    if rc != 0:
        raise SystemExit(f"smp synth failed ({rc})")
    marker.write_text(json.dumps(spec))
    print(f"built {folder} in {time.perf_counter() - t:.0f} s", file=sys.stderr)


def load_client(cdir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    doc = json.loads((cdir / "series.json").read_text())
    rows = []
    for v in doc["visits"]:
        t = pd.read_csv(cdir / v["folder"] / "dots.csv")
        if len(t):
            rows.append(t[COLUMNS].astype(float).assign(day=float(v["day"])))
    obs = pd.concat(rows, ignore_index=True).rename(columns={"dot_id": "dot_key"})
    obs["dot_key"] = obs["dot_key"].astype(int)
    visits = pd.DataFrame([{k: v[k] for k in ("day", "kind", "session", "date")} for v in doc["visits"]])
    return doc, obs, visits


def score_client(cdir: Path, settings_overrides: list[str], n_boot: int, seed: int) -> dict:
    doc, obs, visits = load_client(cdir)
    truth = doc["truth"]
    settings = load_fading_settings(
        overrides=[*settings_overrides, f"n_bootstrap={n_boot}", f"touchup_contrast_dl={truth['touchup_contrast_dl']}"]
    )
    base = dt.date.fromisoformat(visits["date"].iloc[0])
    t = time.perf_counter()
    res = fit_fading(
        obs, visits, settings, np.random.default_rng([seed, int(cdir.name.split("_")[-1])]), baseline_date=base
    )
    secs = time.perf_counter() - t
    return {"client": cdir.name, "fit_s": secs, **score_result(res, truth, visits, obs)}


def score_result(res, truth: dict, visits: pd.DataFrame, true_obs: pd.DataFrame) -> dict:
    """Score one fitted client against its truth (``true_obs``: the true dots, for the dot size
    and scar breakdowns)."""
    obs = true_obs
    base = dt.date.fromisoformat(visits["date"].iloc[0])
    last_session = visits.loc[visits["kind"] == "session", "day"].max()
    n_after = int((visits["day"] > last_session).sum())
    hl = res.half_life_days
    true_hl = float(truth["half_life_days"])
    row = {
        "n_dots": res.n_dots,
        "n_visits": res.n_visits,
        "visits_after_sessions": n_after,
        "true_half_life": true_hl,
        "half_life": hl.value,
        "half_life_low": hl.low,
        "half_life_high": hl.high,
        "half_life_rel_err": (hl.value - true_hl) / true_hl if hl.value else None,
        "half_life_covered": bool(hl.low is not None and hl.high is not None and hl.low <= true_hl <= hl.high),
        "forecast_status": res.forecast.status,
        "forecast_day": res.forecast.day,
        "forecast_low": res.forecast.day_low,
        "forecast_high": res.forecast.day_high,
        "blue_client": bool(truth["blue_client"]),
        "blue_detected": res.blue_trend.detected,
        "blue_found_by": res.blue_trend.found_by,
        "blue_turning": res.blue_trend.n_turning,
        "blue_true_fraction": float(
            np.isin(obs["dot_key"].unique().astype(int), np.asarray(truth.get("blue_dot_ids", []), int)).mean()
        ),
        "spread_client": bool(truth.get("spread_client", len(truth.get("spread_dot_ids", [])) > 0)),
        "spread_detected": res.spread.detected,
        "spread_found_by": res.spread.found_by,
        "blue_adjusted_per_year": res.blue_trend.per_year.value,
        "blue_adjusted_low": res.blue_trend.per_year.low,
        "blue_index_per_year": res.blue_index_per_year.value,
        "n_refreshed": res.n_refreshed,
        "n_refresh_imputed": res.n_refresh_imputed,
        "visit_sd": res.visit_sd,
        "warnings": list(res.warnings),
    }
    due = truth.get("touchup_due_date")
    true_day = (dt.date.fromisoformat(due) - base).days if due else None
    row["true_crossing_day"] = true_day
    lo, hi = res.forecast.day_low, res.forecast.day_high
    if res.forecast.status == "unknown":
        covered = False
    elif true_day is None:
        covered = hi is None  # the interval reaches past the horizon
    else:
        covered = (
            lo is None and res.forecast.status == "already_below" or lo is not None and lo <= true_day + 0.5
        ) and (hi is None or true_day - 0.5 <= hi)
        if lo is None and res.forecast.status != "already_below":
            covered = False  # the whole interval lies past the horizon
    row["forecast_covered"] = bool(covered)
    # dot size in pixels of the rendered plane: below ~2.5 px the renderer does not reach the
    # requested contrast (see the module doc), so the truth's crossing date is not what the dots show
    row["dot_px"] = float(obs["diameter_mm"].median() * truth["px_per_mm_nominal"])
    row["scar_fraction"] = float(obs["in_scar"].mean())
    known = res.forecast.day is not None and true_day is not None
    row["forecast_err_days"] = res.forecast.day - true_day if known else None
    # fast faders and spreading dots among dots with a rate / slope
    d = res.dots
    rated = d[d["rate_per_day"].notna()]
    true_fast = set(int(k) for k in truth.get("fast_fading_dot_ids", []))
    row["fast_true"] = int(rated["dot_key"].astype(int).isin(true_fast).sum())
    row["fast_flagged"] = int(rated["fast_fading"].sum())
    row["fast_hit"] = int((rated["fast_fading"] & rated["dot_key"].astype(int).isin(true_fast)).sum())
    sloped = d[d["spread_mm_per_year"].notna()]
    true_spread = set(int(k) for k in truth.get("spread_dot_ids", []))
    row["spread_true"] = int(sloped["dot_key"].astype(int).isin(true_spread).sum())
    row["spread_flagged"] = int(sloped["spreading"].sum())
    row["spread_hit"] = int((sloped["spreading"] & sloped["dot_key"].astype(int).isin(true_spread)).sum())
    return row


def _frac(xs: list[bool]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summarise(rows: list[dict]) -> dict:
    hl_rows = [r for r in rows if r["visits_after_sessions"] >= 4 and r["half_life_rel_err"] is not None]
    errs = [abs(r["half_life_rel_err"]) for r in hl_rows]
    blue = [r["blue_detected"] for r in rows if r["blue_client"]]
    other = [r["blue_detected"] for r in rows if not r["blue_client"]]
    spread = [r["spread_detected"] for r in rows if r["spread_client"]]
    still = [r["spread_detected"] for r in rows if not r["spread_client"]]
    ft, ff, fh = (sum(r[k] for r in rows) for k in ("fast_true", "fast_flagged", "fast_hit"))
    st, sf, sh = (sum(r[k] for r in rows) for k in ("spread_true", "spread_flagged", "spread_hit"))
    fe = [abs(r["forecast_err_days"]) for r in rows if r["forecast_err_days"] is not None]
    big = [r["forecast_covered"] for r in rows if r["dot_px"] >= SMALL_DOT_PX]
    clean = [r["forecast_covered"] for r in rows if r["dot_px"] >= SMALL_DOT_PX and r["scar_fraction"] < 0.05]
    small = [r["forecast_covered"] for r in rows if r["dot_px"] < SMALL_DOT_PX]
    return {
        "clients": len(rows),
        "half_life_clients": len(hl_rows),
        "half_life_abs_rel_err_median": statistics.median(errs) if errs else None,
        "half_life_within_15pct": _frac([e <= 0.15 for e in errs]),
        "half_life_interval_coverage": _frac([r["half_life_covered"] for r in rows]),
        "forecast_interval_coverage": _frac([r["forecast_covered"] for r in rows]),
        "forecast_abs_err_days_median": statistics.median(fe) if fe else None,
        f"forecast_coverage_dots_ge_{SMALL_DOT_PX:g}px": _frac(big),
        f"clients_dots_ge_{SMALL_DOT_PX:g}px": len(big),
        f"forecast_coverage_dots_lt_{SMALL_DOT_PX:g}px": _frac(small),
        f"clients_dots_lt_{SMALL_DOT_PX:g}px": len(small),
        f"forecast_coverage_dots_ge_{SMALL_DOT_PX:g}px_no_scar": _frac(clean),
        f"clients_dots_ge_{SMALL_DOT_PX:g}px_no_scar": len(clean),
        "blue_clients": len(blue),
        "blue_detection_rate": _frac(blue),
        "non_blue_clients": len(other),
        "blue_false_positive_rate": _frac(other),
        "spread_clients": len(spread),
        "spread_detection_rate": _frac(spread),
        "non_spread_clients": len(still),
        "spread_false_positive_rate": _frac(still),
        "fast_precision": fh / ff if ff else None,
        "fast_recall": fh / ft if ft else None,
        "spread_precision": sh / sf if sf else None,
        "spread_recall": sh / st if st else None,
        "fit_s_median": statistics.median(r["fit_s"] for r in rows),
    }


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out")
    ap.add_argument("--n", type=int, default=60, help="clients in the suite (default 60, ~3 min to build)")
    ap.add_argument("--suite", choices=sorted(SUITES), default="series_fading")
    ap.add_argument("--seed", type=int, default=None, help="default: the suite's (series_fading 1005, minority 1006)")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a fading setting (repeatable)",
    )
    ap.add_argument("--no-md", action="store_true", help="do not touch BENCHMARKS.md")
    args = ap.parse_args(argv)
    synth_set, default_seed = SUITES[args.suite]
    args.seed = default_seed if args.seed is None else args.seed
    name = "series_fading" if args.suite == "series_fading" else f"series_{args.suite}"
    folder = args.out / "data" / name
    build_suite(folder, args.n, args.seed, synth_set)
    clients = [folder / f"client_{i:03d}" for i in range(args.n)]  # an older, larger build may lie there
    rows = [score_client(c, args.overrides, args.bootstrap, args.seed) for c in clients]
    summary = summarise(rows)
    targets = {
        "half_life_within_15pct": ">= 0.9 (acceptance: within 15 %)",
        "forecast_interval_coverage": ">= 0.9",
        "blue_detection_rate": ">= 0.9",
        "blue_false_positive_rate": "<= 0.05",
        "spread_detection_rate": ">= 0.9",
        "spread_false_positive_rate": "<= 0.05",
    }
    what = (
        ""
        if args.suite == "series_fading"
        else " (suite `minority`: blue shift in 5-30 % of the dots of half the clients, spreading in 5-30 % of half)"
    )
    lines = [
        f"Fading model on the true dots of {summary['clients']} synthetic clients{what} (seed {args.seed}, "
        f"{SIZE[0]}x{SIZE[1]} px, {args.bootstrap} bootstrap resamples):",
        "",
        "| figure | value | target |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {_fmt(v)} | {targets.get(k, '')} |" for k, v in summary.items()]
    lines += ["", f"Measured {time.strftime('%Y-%m-%d')}."]
    text = "\n".join(lines)
    print(text)
    if not args.no_md:
        sys.path.insert(0, str(ROOT / "scripts"))
        from bench import update_benchmarks_md

        update_benchmarks_md(
            ROOT / "BENCHMARKS.md", "fading" if args.suite == "series_fading" else f"fading-{args.suite}", text
        )
    doc = {
        "suite": {"folder": str(folder), "n": args.n, "seed": args.seed, "size": list(SIZE)},
        "settings_overrides": args.overrides,
        "bootstrap": args.bootstrap,
        "summary": summary,
        "clients": rows,
    }
    (args.out / ("fading.json" if args.suite == "series_fading" else f"fading-{args.suite}.json")).write_text(
        json.dumps(doc, indent=1, default=float)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
