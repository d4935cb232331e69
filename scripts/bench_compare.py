"""Benchmark of registration and dot linking (``smp compare``, visit tracking) on the series suite.

For consecutive visits of every synthetic client in ``OUT/data/series`` (built by
scripts/bench.py), AFTER is registered to BEFORE and the dots are linked, twice:

* ``true``: with the true dot centres of both photos (``dots.csv``): the registration
  and linking stages alone;
* ``assessed``: with the dots ``smp assess`` finds (default settings, the bundled
  model), end to end; slow (~5 s a photo), so only ``--limit`` pairs, taken in turn
  from each client.

Scored against the truth: the corner error of the homography (px, against the
product of the two visits' true plane-to-image homographies); the fraction of links
that join the same ``dot_id`` (assessed dots are first matched to the true dots of
their own photo within 0.1 mm; a link also counts as right when the AFTER dot lies
within 0.1 mm of where the BEFORE dot's ``dot_id`` truly is in AFTER: a new dot placed
that close to an old one makes one blob); the recall of the dots both photos show;
the median residual in mm (after the smooth warp, and after the homography alone);
the time. Prints a markdown table and writes ``OUT/compare.json``.

Usage: python scripts/bench_compare.py --out bench-out [--limit 4] [--no-assessed]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from data.geometry import apply_homography  # noqa: E402
from models.scoring import match_dots  # noqa: E402
from pipeline.two_photos.link import link_dots  # noqa: E402
from pipeline.two_photos.register import register_photos  # noqa: E402
from pipeline.two_photos.settings import RegistrationError, load_register_settings  # noqa: E402


def _visit(folder: Path) -> dict:
    truth = json.loads((folder / "truth.json").read_text())
    rgb = cv2.cvtColor(cv2.imread(str(folder / truth["photo"]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return {
        "folder": folder,
        "truth": truth,
        "rgb": rgb,
        "dots": pd.read_csv(folder / "dots.csv"),
        "valid": cv2.imread(str(folder / "mask.png"), cv2.IMREAD_UNCHANGED) > 0,
    }


def _pairs(series: Path) -> list[tuple[Path, Path]]:
    out = []
    for client in sorted(p for p in series.glob("client_*") if p.is_dir()):
        visits = sorted(p for p in client.iterdir() if p.is_dir() and (p / "truth.json").exists())
        out += list(zip(visits[:-1], visits[1:]))
    return out


def _spread(pairs: list[tuple[Path, Path]], limit: int) -> set[tuple[Path, Path]]:
    """``limit`` pairs whose BEFORE has dots, taken in turn from each client."""
    by_client: dict[Path, list] = {}
    for fb, fa in pairs:
        if len(pd.read_csv(fb / "dots.csv")):
            by_client.setdefault(fb.parent, []).append((fb, fa))
    queues = list(by_client.values())
    chosen: list = []
    while len(chosen) < limit and any(queues):
        for q in queues:
            if q and len(chosen) < limit:
                chosen.append(q.pop(0))
    return set(chosen)


def _score(before: dict, after: dict, b_xy, a_xy, b_ids, a_ids, b_valid, a_valid, settings) -> dict:
    """Register and link one pair; ``*_ids``: true dot_id of each dot (-1 = not a true dot)."""
    tb, ta = before["truth"], after["truth"]
    ppm = tb["px_per_mm"]
    h_true = np.array(tb["plane_to_image"]) @ np.linalg.inv(np.array(ta["plane_to_image"]))
    t = time.perf_counter()
    try:
        reg = register_photos(
            before["rgb"],
            after["rgb"],
            settings,
            before_dots_xy=b_xy if len(b_xy) else None,
            after_dots_xy=a_xy if len(a_xy) else None,
            px_per_mm=ppm,
            before_mask=b_valid,
            after_mask=a_valid,
        )
    except RegistrationError as exc:
        return {"failed": str(exc)}
    reg_s = time.perf_counter() - t
    w, h = reg.after_size
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], float)
    err = float(np.abs(reg.to_before(corners) - apply_homography(h_true, corners)).max())
    row = {"method": reg.method, "inliers": reg.n_inliers, "corner_err_px": err, "register_s": reg_s}
    if len(b_xy) and len(a_xy):
        t = time.perf_counter()
        links = link_dots(
            b_xy, a_xy, reg.after_to_before, settings, px_per_mm=ppm, before_valid=b_valid, after_valid=a_valid
        )
        row["link_s"] = time.perf_counter() - t
        lb, la = b_ids[links.before_idx], a_ids[links.after_idx]
        known = (lb >= 0) & (la >= 0)
        # correct: the AFTER dot is (within 0.1 mm of) the true dot the BEFORE dot is. Two true dots
        # closer than that (a new dot placed onto an old one) are one blob: either id is right.
        truth_a = after["dots"].set_index("dot_id")[["x", "y"]]
        has = known & np.isin(lb, truth_a.index.to_numpy())
        correct = known & (lb == la)
        if has.any():
            d = np.linalg.norm(truth_a.loc[lb[has]].to_numpy() - a_xy[links.after_idx[has]], axis=1)
            correct[np.flatnonzero(has)[d <= 0.1 * ta["px_per_mm"]]] = True
        # true dots both photos show (and, for assessed dots, both found)
        common = np.intersect1d(b_ids[b_ids >= 0], a_ids[a_ids >= 0])
        row.update(
            links=links.n_links,
            links_known=int(known.sum()),
            correct=int(correct.sum()),
            correct_fraction=float(correct.sum() / known.sum()) if known.any() else None,
            common=len(common),
            recall=float(np.isin(lb[correct], common).sum() / len(common)) if len(common) else None,
            linked_fraction=links.linked_fraction,
            new=len(links.new_idx),
            lost=len(links.lost_idx),
            residual_mm_median=links.residual_mm_median,
            residual_mm_p90=links.residual_mm_p90,
            homography_residual_mm_median=float(np.median(links.homography_residual_px)) / ppm
            if links.n_links
            else None,
        )
    return row


def _ids(truth_dots: pd.DataFrame, xy: np.ndarray, ppm: float) -> np.ndarray:
    """True dot_id of each detected dot (matched within 0.1 mm), -1 for false detections."""
    ids = np.full(len(xy), -1, np.int64)
    if len(xy) and len(truth_dots):
        m = match_dots(xy, truth_dots[["x", "y"]].to_numpy(), 0.1 * ppm)
        ids[m.pred_index] = truth_dots["dot_id"].to_numpy()[m.true_index]
    return ids


def _summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if "failed" not in r]
    linked = [r for r in ok if r.get("links_known")]

    def med(key):
        v = [r[key] for r in ok if r.get(key) is not None]
        return statistics.median(v) if v else None

    return {
        "pairs": len(rows),
        "failed": len(rows) - len(ok),
        "correct_fraction": (
            sum(r["correct"] for r in linked) / sum(r["links_known"] for r in linked) if linked else None
        ),
        "recall": (
            sum(r["recall"] * r["common"] for r in linked) / sum(r["common"] for r in linked)
            if linked and sum(r["common"] for r in linked)
            else None
        ),
        "residual_mm_median": med("residual_mm_median"),
        "homography_residual_mm_median": med("homography_residual_mm_median"),
        "corner_err_px_median": med("corner_err_px"),
        "corner_err_px_max": max((r["corner_err_px"] for r in ok), default=None),
        "register_s_median": med("register_s"),
        "link_s_median": med("link_s"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out")
    ap.add_argument("--limit", type=int, default=4, help="pairs scored with assessed dots (slow)")
    ap.add_argument("--no-assessed", action="store_true")
    ap.add_argument("--no-md", action="store_true", help="do not touch BENCHMARKS.md")
    args = ap.parse_args()
    settings = load_register_settings()
    pairs = _pairs(args.out / "data" / "series")
    if not pairs:
        print(f"no series under {args.out / 'data' / 'series'}: run scripts/bench.py first", file=sys.stderr)
        return 1

    rows: dict[str, list[dict]] = {"true": [], "assessed": []}
    assessor, assessed = None, {}
    if not args.no_assessed and args.limit > 0:
        from pipeline.one_photo.assess import Assessor
        from pipeline.one_photo.settings import load_assess_settings

        assessor = Assessor(load_assess_settings())
    chosen = _spread(pairs, args.limit) if not args.no_assessed else set()
    for i, (fb, fa) in enumerate(pairs):
        before, after = _visit(fb), _visit(fa)
        name = f"{fb.parent.name}/{fb.name[:8]}->{fa.name[:8]}"
        db, da = before["dots"], after["dots"]
        r = _score(
            before,
            after,
            db[["x", "y"]].to_numpy(),
            da[["x", "y"]].to_numpy(),
            db["dot_id"].to_numpy(),
            da["dot_id"].to_numpy(),
            before["valid"],
            after["valid"],
            settings,
        )
        rows["true"].append({"pair": name, **r})
        if assessor is None or (fb, fa) not in chosen:
            continue
        for v in (before, after):
            key = str(v["folder"])
            if key not in assessed:
                a = assessor.assess_file(v["folder"] / v["truth"]["photo"])
                xy = a.dots[["x", "y"]].to_numpy()
                assessed[key] = (xy, _ids(v["dots"], xy, v["truth"]["px_per_mm"]), a.labels > 0)
        (bxy, bid, bval), (axy, aid, aval) = assessed[str(fb)], assessed[str(fa)]
        r = _score(before, after, bxy, axy, bid, aid, bval, aval, settings)
        rows["assessed"].append({"pair": name, **r})
        print(f"[{i + 1}/{len(pairs)}] {name} assessed: {r}", file=sys.stderr)

    result = {k: {"summary": _summary(v), "pairs": v} for k, v in rows.items() if v}
    (args.out / "compare.json").write_text(json.dumps(result, indent=1))

    text = table(result)
    print(text)
    if not args.no_md:
        from bench import update_benchmarks_md

        update_benchmarks_md(ROOT / "BENCHMARKS.md", "compare", text)
    return 0


def table(result: dict) -> str:
    def f(v, nd=3):
        return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    lines = [
        "| dots | pairs | failed | correct links | recall of common dots | "
        "residual mm (median; homography only) | corner err px (median / max) | register s | link s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k, v in result.items():
        s = v["summary"]
        lines.append(
            f"| {k} | {s['pairs']} | {s['failed']} | {f(s['correct_fraction'], 4)} | {f(s['recall'], 4)} | "
            f"{f(s['residual_mm_median'], 4)}; {f(s['homography_residual_mm_median'], 4)} | "
            f"{f(s['corner_err_px_median'])} / {f(s['corner_err_px_max'])} | "
            f"{f(s['register_s_median'], 2)} | {f(s['link_s_median'], 2)} |"
        )
    import platform

    lines += [
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, consecutive visits of the series suite.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
