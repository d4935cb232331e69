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

from bench import fmt as bench_fmt  # noqa: E402
from bench import update_benchmarks_md  # noqa: E402

from data.colour import delta_e00  # noqa: E402
from data.flags import decided_flags, flag_dots, load_flag_settings, measurable_dots  # noqa: E402
from data.metrics import HAIR  # noqa: E402
from models.scoring import IGNORE, boundary_scores, false_dot_causes, match_dots, match_radius_px  # noqa: E402
from pipeline.one_photo.assess import Assessor  # noqa: E402
from pipeline.one_photo.detect import REJECT  # noqa: E402
from pipeline.one_photo.settings import load_assess_settings  # noqa: E402

SUITES = ("closeup_easy", "closeup_hard", "fresh_macro", "untreated", "flags", "global")
DOT_SUITES = ("closeup_easy", "closeup_hard", "fresh_macro", "untreated", "flags")
FLAGS = ("blue_shift", "faded", "spread")
#: dot-size bands of the per-band table: true half-maximum diameter in mm and in photo px
MM_BANDS = (0.0, 0.15, 0.25, 0.4, np.inf)
PX_BANDS = (0.0, 2.0, 3.0, 5.0, 8.0, np.inf)
#: A false dot within this of a look-alike the generator drew is put down to it.
CAUSE_RADIUS_MM = 0.15

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


def _rel(a, b):
    if a is None or b is None or not b:
        return None
    return abs(a / b - 1.0)


def _abs(a, b):
    if a is None or b is None:
        return None
    return abs(a - b)


def _true_px(truth: dict, dots: pd.DataFrame) -> np.ndarray:
    """True half-maximum diameters in photo px (local scale of the plane -> image homography)."""
    from data.synth.visibility import image_px_per_mm

    if not len(dots):
        return np.zeros(0)
    return dots["diameter_mm"].to_numpy(float) * image_px_per_mm(
        np.array(truth["plane_to_image"]), dots[["x_mm", "y_mm"]].to_numpy(float)
    )


def _band(values: np.ndarray, edges: tuple) -> np.ndarray:
    return np.clip(np.searchsorted(np.asarray(edges), values, side="right") - 1, 0, len(edges) - 2)


def _given_scale(truth: dict) -> float | None:
    """The scale a clinic would pass: none where the card is in the photo (it gives the scale), the
    known one where it is not (a fixed camera rig's --px-per-mm; without a scale no dots are found)."""
    return None if truth["card"]["present"] else float(truth["px_per_mm"])


def _candidate_evidence(det, true_dots: pd.DataFrame, vis: np.ndarray, ppm_true: float) -> dict:
    """Every candidate the detector looked at (reported or refused), with what the decision ceiling
    needs: their positions and significance, whether each passed every test but significance
    (``others_pass``; one refused for significance was never tested as a duplicate), and the truth."""
    xy = np.vstack([det.geometry.xy, det.rejected.xy])
    sig = np.concatenate([det.evidence.significance, det.rejected.evidence.significance])
    reason = np.concatenate([np.zeros(len(det.geometry.xy), np.int64), det.rejected.reason])
    return {
        "xy": xy,
        "significance": sig,
        "others_pass": (reason & ~REJECT["significance"]) == 0,
        "true_xy": true_dots[["x", "y"]].to_numpy(float),
        "radius": match_radius_px(true_dots["diameter_mm"].to_numpy(float), ppm_true),
        "visible": vis,
    }


def decision_ceiling(cands: list[dict], n_thresholds: int = 40) -> dict:
    """What the decision could reach on a suite's candidates: the share of visible true dots any
    candidate reaches (``candidate_recall``), the share reached by candidates that pass every test
    but significance, and the best pooled F1 of one significance threshold over those (each threshold
    matched afresh; chosen with the truth: a ceiling, not a figure a method gets)."""
    cands = [c for c in cands if c]
    nvis = sum(int(c["visible"].sum()) for c in cands)
    if not nvis:
        return {
            "candidate_recall": None,
            "candidate_recall_other_tests": None,
            "best_threshold_f1": None,
            "best_threshold": None,
        }

    def counts(sel: list[np.ndarray]) -> tuple[int, int]:
        tp = fp = 0
        for c, k in zip(cands, sel):
            m = match_dots(c["xy"][k], c["true_xy"], c["radius"], visible=c["visible"])
            tp, fp = tp + m.tp, fp + m.fp
        return tp, fp

    reach, _ = counts([np.ones(len(c["xy"]), bool) for c in cands])
    ok_reach, _ = counts([c["others_pass"] for c in cands])
    sig = np.concatenate([c["significance"][c["others_pass"]] for c in cands])
    best = (0.0, None)
    for t in np.unique(np.quantile(sig, np.linspace(0.0, 0.99, n_thresholds), method="higher")) if len(sig) else []:
        tp, fp = counts([c["others_pass"] & (c["significance"] >= t) for c in cands])
        best = max(best, (2 * tp / (nvis + tp + fp), float(t)), key=lambda b: b[0])
    return {
        "candidate_recall": reach / nvis,
        "candidate_recall_other_tests": ok_reach / nvis,
        "best_threshold_f1": best[0],
        "best_threshold": best[1],
    }


def score_photo(assessor: Assessor, folder: Path) -> tuple[dict, dict]:
    """One photo: (row of scalar errors, pooled counts for flags, dots, size bands and hair)."""
    rules = assessor.rules
    truth = json.loads((folder / "truth.json").read_text())
    photo = folder / truth["photo"]
    ppm_true = truth["px_per_mm"]
    seen: list = []
    sink, assessor.detection_sink = assessor.detection_sink, seen.append
    try:
        t = time.perf_counter()
        a = assessor.assess_file(photo, px_per_mm=_given_scale(truth))
        secs = time.perf_counter() - t
    finally:
        assessor.detection_sink = sink
    tm, m = truth["metrics"], a.metrics.to_dict()
    cal = a.calibration.to_json()
    true_dots = pd.read_csv(folder / "dots.csv")
    vis = true_dots["visible"].to_numpy(bool) if "visible" in true_dots else np.ones(len(true_dots), bool)
    true_px = _true_px(truth, true_dots)
    true_meas = vis & measurable_dots(true_px, rules)
    mask = cv2.imread(str(folder / "mask.png"), cv2.IMREAD_UNCHANGED)
    labelled = mask != IGNORE  # hair the photo does not show is neither hair nor scalp
    hair = boundary_scores(a.labels == HAIR, mask == HAIR, 1, valid=labelled)
    hair_inter = int(((a.labels == HAIR) & (mask == HAIR)).sum())
    hair_union = int((((a.labels == HAIR) & labelled) | (mask == HAIR)).sum())
    row = {
        "photo": f"{folder.parent.name}/{folder.name}",
        "view": truth["view"],
        "seconds": secs,
        "px_per_mm": ppm_true,
        "card": bool(truth["card"]["present"]),
        "found_card": cal["scale_source"] == "card",
        "px_per_mm_err": _rel(cal["px_per_mm"], ppm_true) if cal["scale_source"] == "card" else None,
        "residual_de00": cal["residual_de00_mean"],
        "density_err": _rel(m["dot_density_per_cm2"], tm["dot_density_per_cm2"]),
        "density": m["dot_density_per_cm2"],
        "density_true": tm["dot_density_per_cm2"],
        "count_true": tm["dot_count"],
        "count": m["dot_count"],
        "true_dots_all": int(len(true_dots)),
        "true_dots_visible": int(vis.sum()),
        "scalp_fraction_err_pp": None
        if _abs(m["scalp_fraction"], tm["scalp_fraction"]) is None
        else 100 * _abs(m["scalp_fraction"], tm["scalp_fraction"]),
        "show_through_err_pp": None
        if _abs(m["show_through"], tm["show_through"]) is None
        else 100 * _abs(m["show_through"], tm["show_through"]),
        "hair_iou": hair_inter / hair_union if hair_union else None,
        "hair_boundary_f1": hair.f1,
        "warnings": len(a.warnings),
        "quality_ok": a.quality.ok,
        "mask_unsure": "mask_unsure" in a.quality.warnings,
        "wobble_pp": a.quality.scalp_fraction_wobble_pp,
        "mask_agreement": a.quality.mask_agreement,
    }
    counts: dict = {
        "tp": 0,
        "fp": 0,
        "fn": 0,
        "colour_de": [],
        "loc_mm": [],
        "diam_err": [],
        "hair": hair,
        "hair_inter": hair_inter,
        "hair_union": hair_union,
        "band_mm_true": np.zeros(len(MM_BANDS) - 1),
        "band_mm_tp": np.zeros(len(MM_BANDS) - 1),
        "band_mm_fp": np.zeros(len(MM_BANDS) - 1),
        "band_px_true": np.zeros(len(PX_BANDS) - 1),
        "band_px_tp": np.zeros(len(PX_BANDS) - 1),
        "band_px_fp": np.zeros(len(PX_BANDS) - 1),
        "oracle_old_stick": None,
        "colour_by_px": [],
        "candidates": None,
    }
    for f in FLAGS:
        counts[f] = {"tp": 0, "fp": 0, "fn": 0, "tp_m": 0, "fp_m": 0, "fn_m": 0}
    if truth["view"] == "closeup":
        pred = a.dots
        match = match_dots(
            pred[["x", "y"]].to_numpy(),
            true_dots[["x", "y"]].to_numpy(),
            match_radius_px(true_dots["diameter_mm"].to_numpy(float), ppm_true),
            visible=vis,
        )
        counts.update(tp=match.tp, fp=match.fp, fn=match.fn)
        # what a perfect detector of the visible dots scores on the old stick (every true dot counted)
        counts["oracle_old_stick"] = (int(vis.sum()), int(len(true_dots)))
        if seen:
            counts["candidates"] = _candidate_evidence(seen[0], true_dots, vis, ppm_true)
        pi, ti = match.pred_index, match.true_index
        false = np.setdiff1d(np.arange(len(pred)), np.concatenate([pi, match.ignored_pred_index]))
        # what the false dots sit on (the look-alikes the generator drew, hair, the skin's own texture)
        la_path = folder / "lookalikes.csv"
        la = pd.read_csv(la_path) if la_path.exists() else pd.DataFrame(columns=["kind", "x", "y"])
        causes = false_dot_causes(
            pred[["x", "y"]].to_numpy()[false],
            la[["x", "y"]].to_numpy(float),
            la["kind"].to_numpy(),
            mask,
            max(1.5, CAUSE_RADIUS_MM * ppm_true),
        )
        kinds, n_kind = np.unique(causes.astype(str), return_counts=True)
        roi = float((mask > 0).sum()) / (ppm_true * ppm_true) / 100.0
        row["false_by_cause_per_cm2"] = {k: int(n) / roi for k, n in zip(kinds, n_kind)} if roi > 0 else {}
        counts["loc_mm"] = (match.distance_px / ppm_true).tolist()
        # size bands: recall by the true dot's size, false dots by the reported size
        for key, edges, tsize, psize in (
            ("mm", MM_BANDS, true_dots["diameter_mm"].to_numpy(float), pred["diameter_mm"].to_numpy(float)),
            ("px", PX_BANDS, true_px, pred["diameter_px"].to_numpy(float)),
        ):
            tb, pb = _band(tsize, edges), _band(np.nan_to_num(psize), edges)
            counts[f"band_{key}_true"] = np.bincount(tb[vis], minlength=len(edges) - 1)
            counts[f"band_{key}_tp"] = np.bincount(tb[ti], minlength=len(edges) - 1)
            counts[f"band_{key}_fp"] = np.bincount(pb[false], minlength=len(edges) - 1)
        mp, mt = pred.iloc[pi], true_dots.iloc[ti]
        both = mp["measurable"].to_numpy(bool) & true_meas[ti]
        de = delta_e00(mp[["L", "a", "b"]].to_numpy(float)[both], mt[["L", "a", "b"]].to_numpy(float)[both])
        counts["colour_de"] = de[np.isfinite(de)].tolist()
        # colour error of every matched dot by its true size in px (how small a dot can carry a flag)
        de_all = delta_e00(mp[["L", "a", "b"]].to_numpy(float), mt[["L", "a", "b"]].to_numpy(float))
        bi_err = np.abs(mp["blue_index"].to_numpy(float) - mt["blue_index"].to_numpy(float))
        counts["colour_by_px"] = np.column_stack([true_px[ti], de_all, bi_err]).tolist()
        counts["diam_err"] = (mp["diameter_mm"].to_numpy() - mt["diameter_mm"].to_numpy()).tolist()
        ignored = np.zeros(len(pred), bool)
        ignored[match.ignored_pred_index] = True
        # a flag's truth is decided only clear of its threshold (configs/flags.yaml flag_margin_*)
        decided = decided_flags(
            true_dots["blue_index"].to_numpy(float),
            true_dots["contrast_dL"].to_numpy(float),
            true_dots["diameter_mm"].to_numpy(float),
            rules,
            lstar=true_dots["L"].to_numpy(float),
        ).as_dict()
        shown = vis & true_meas
        counts["flag_truth"] = np.column_stack(
            [
                true_dots["blue_index"].to_numpy(float)[shown],
                true_dots["contrast_dL"].to_numpy(float)[shown],
                true_dots["diameter_mm"].to_numpy(float)[shown],
                true_dots["L"].to_numpy(float)[shown],
            ]
        ).tolist()
        unmatched = np.ones(len(pred), bool)
        unmatched[pi] = False
        missed = np.ones(len(true_dots), bool)
        missed[ti] = False
        for f in FLAGS:
            p_all, t_all = pred[f].to_numpy(bool), true_dots[f].to_numpy(bool) & true_meas
            pm, tmf, dm = p_all[pi], t_all[ti], decided[f][ti]
            c = counts[f]
            # matched dots only: is the flag right on dots we found? (measurable visible true dots whose
            # flag is decided; within the margin of the threshold a flag counts neither way)
            c["tp_m"], c["fp_m"] = int((pm & tmf & dm).sum()), int((pm & ~tmf & true_meas[ti] & dm).sum())
            c["fn_m"] = int((~pm & tmf & dm).sum())
            # end to end: a decided flagged measurable true dot we missed is a missed flag; a flag on a false
            # dot (or on a true dot too small to measure) is a false flag
            c["tp"] = c["tp_m"]
            c["fp"] = int((pm & ~tmf & (dm | ~true_meas[ti])).sum()) + int((p_all & unmatched & ~ignored).sum())
            c["fn"] = c["fn_m"] + int((t_all & missed & vis & decided[f]).sum())
    scored = truth["view"] == "closeup" and counts["tp"] + counts["fn"] > 0
    row["dot_f1"] = 2 * counts["tp"] / (2 * counts["tp"] + counts["fp"] + counts["fn"]) if scored else None
    row["dot_recall"] = counts["tp"] / (counts["tp"] + counts["fn"]) if scored else None
    # untreated scalps: every reported dot is false; per cm2 of the true scalp + hair (no card needed)
    roi_cm2 = float((mask > 0).sum()) / (ppm_true * ppm_true) / 100.0
    row["false_dots_per_cm2"] = (
        len(a.dots) / roi_cm2
        if truth["view"] == "closeup" and not vis.any() and m["dot_count"] is not None and roi_cm2 > 0
        else None
    )
    return row, counts


#: How well the oracle of the flag table reads a dot: blue index (b*), contrast (L*), diameter (mm), 1 sd.
ORACLE_NOISE = (1.0, 1.0, 0.02)


def _oracle_flags(values: np.ndarray, rules) -> dict:
    """Flag precision and recall of a perfect detector (every measurable visible dot found) whose blue
    index, contrast and diameter carry Gaussian errors of ORACLE_NOISE, on the decided dots (seeded).
    ``values``: (N, 4) true blue index, contrast, diameter and core L* of the measurable visible dots."""
    rng = np.random.default_rng(0)
    if len(values) == 0:
        return {f: (None, None) for f in FLAGS}
    meas = values[:, :3] + rng.normal(0.0, 1.0, (len(values), 3)) * np.asarray(ORACLE_NOISE)
    lstar = values[:, 3]
    truth = flag_dots(values[:, 0], values[:, 1], values[:, 2], rules, lstar=lstar).as_dict()
    read = flag_dots(meas[:, 0], meas[:, 1], meas[:, 2], rules, lstar=lstar).as_dict()
    dec = decided_flags(values[:, 0], values[:, 1], values[:, 2], rules, lstar=lstar).as_dict()
    out = {}
    for f in FLAGS:
        t, r = truth[f] & dec[f], read[f] & dec[f]
        out[f] = _pr(int((t & r).sum()), int((r & ~t).sum()), int((t & ~r).sum()))
    return out


def _pr(tp, fp, fn):
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    return p, r


def summarise(rows: list[dict], counts: list[dict]) -> dict:
    df = pd.DataFrame(rows)

    def med(col):
        v = df[col].dropna()
        return float(v.median()) if len(v) else None

    out = {
        "photos": len(df),
        "cards_found": int(df.found_card.sum()),
        "cards_present": int(df.card.sum()),
        "px_per_mm_err_median": med("px_per_mm_err"),
        "residual_de00_mean": med("residual_de00"),
        "density_err_median": med("density_err"),
        "scalp_fraction_err_pp_median": med("scalp_fraction_err_pp"),
        "show_through_err_pp_median": med("show_through_err_pp"),
        "seconds_median": med("seconds"),
        "quality_ok": int(df.quality_ok.sum()),
    }
    # the second look's warning against the truth: are the scalp fractions it refuses the wrong ones?
    unsure = df["mask_unsure"].astype(bool) if "mask_unsure" in df else pd.Series(False, index=df.index)
    err = df["scalp_fraction_err_pp"] if "scalp_fraction_err_pp" in df else pd.Series(np.nan, index=df.index)
    out.update(
        mask_unsure=int(unsure.sum()),
        scalp_fraction_err_pp_unsure=float(err[unsure].median()) if err[unsure].notna().any() else None,
        scalp_fraction_err_pp_kept=float(err[~unsure].median()) if err[~unsure].notna().any() else None,
        wobble_pp_median=med("wobble_pp") if "wobble_pp" in df else None,
        mask_agreement_min=float(df["mask_agreement"].min())
        if "mask_agreement" in df and df["mask_agreement"].notna().any()
        else None,
    )
    tp, fp, fn = (sum(c[k] for c in counts) for k in ("tp", "fp", "fn"))
    p, r = _pr(tp, fp, fn)
    out.update(dot_precision=p, dot_recall=r, dot_f1=(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else None)
    # the pooled figures hide a photo whose dots collapse (one camera look, one dot size): the worst photo
    for k in ("dot_f1", "dot_recall"):
        v = df[k].dropna() if k in df else pd.Series(dtype=float)
        out[f"{k}_worst_photo"] = float(v.min()) if len(v) else None
    de = np.concatenate([np.asarray(c["colour_de"], float) for c in counts]) if counts else np.zeros(0)
    out["colour_de00_median"] = float(np.median(de)) if len(de) else None
    loc = np.concatenate([np.asarray(c["loc_mm"], float) for c in counts]) if counts else np.zeros(0)
    out["loc_mm_median"] = float(np.median(loc)) if len(loc) else None
    dd = np.concatenate([np.asarray(c["diam_err"], float) for c in counts]) if counts else np.zeros(0)
    dd = dd[np.isfinite(dd)]
    out["diameter_err_mm_median"] = float(np.median(dd)) if len(dd) else None
    # what a perfect detector reaches on the flags' stick when it reads each dot's colour to ORACLE_NOISE
    truth_rows = [np.asarray(c.get("flag_truth", []), float).reshape(-1, 4) for c in counts]
    oracle = _oracle_flags(np.concatenate(truth_rows) if truth_rows else np.zeros((0, 4)), load_flag_settings())
    for f in FLAGS:
        out[f"{f}_oracle_precision"], out[f"{f}_oracle_recall"] = oracle[f]
        agg = {k: sum(c[f][k] for c in counts) for k in ("tp", "fp", "fn", "tp_m", "fp_m", "fn_m")}
        out[f"{f}_precision"], out[f"{f}_recall"] = _pr(agg["tp"], agg["fp"], agg["fn"])
        out[f"{f}_precision_matched"], out[f"{f}_recall_matched"] = _pr(agg["tp_m"], agg["fp_m"], agg["fn_m"])
        out[f"{f}_true"] = agg["tp"] + agg["fn"]
    for key, edges in (("mm", MM_BANDS), ("px", PX_BANDS)):
        tr = sum(c[f"band_{key}_true"] for c in counts)
        tpb = sum(c[f"band_{key}_tp"] for c in counts)
        fpb = sum(c[f"band_{key}_fp"] for c in counts)
        out[f"bands_{key}"] = [
            {
                "lo": float(lo),
                "hi": float(hi),
                "true": int(t),
                "tp": int(a),
                "fp": int(b),
                "recall": (a / t) if t else None,
                "precision": (a / (a + b)) if a + b else None,
            }
            for lo, hi, t, a, b in zip(edges[:-1], edges[1:], tr, tpb, fpb)
        ]
    hb = [c["hair"] for c in counts]
    from models.scoring import pool_boundary

    out["hair_boundary_f1"] = pool_boundary(hb).f1 if hb else None
    hu = sum(c["hair_union"] for c in counts)
    out["hair_iou"] = sum(c["hair_inter"] for c in counts) / hu if hu else None
    orc = [c["oracle_old_stick"] for c in counts if c["oracle_old_stick"]]
    v, n = sum(o[0] for o in orc), sum(o[1] for o in orc)
    out["visible_share"] = v / n if n else None
    out["oracle_f1_old_stick"] = 2 * v / (v + n) if n else None
    if "false_by_cause_per_cm2" in df:
        per = pd.DataFrame([r for r in df["false_by_cause_per_cm2"] if isinstance(r, dict)]).fillna(0.0)
        out["false_by_cause_per_cm2_median"] = {k: float(per[k].median()) for k in sorted(per.columns)}
    fd = df["false_dots_per_cm2"].dropna() if "false_dots_per_cm2" in df else pd.Series(dtype=float)
    out["false_dots_per_cm2_median"] = float(fd.median()) if len(fd) else None
    out["false_dots_per_cm2_max"] = float(fd.max()) if len(fd) else None
    out["photo_f1"] = [r.get("dot_f1") for r in rows]
    out["decision_ceiling"] = decision_ceiling([c.get("candidates") for c in counts])
    cb = np.array([x for c in counts for x in c["colour_by_px"]], float).reshape(-1, 3)
    out["colour_by_px"] = []
    for lo, hi in zip(PX_BANDS[:-1], PX_BANDS[1:]):
        sel = (cb[:, 0] >= lo) & (cb[:, 0] < hi) & np.isfinite(cb[:, 1])
        out["colour_by_px"].append(
            {
                "lo": lo,
                "hi": hi,
                "n": int(sel.sum()),
                "de00_median": float(np.median(cb[sel, 1])) if sel.any() else None,
                "blue_index_err_median": float(np.nanmedian(cb[sel, 2])) if sel.any() else None,
            }
        )
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


def fmt(v, nd=3):
    return bench_fmt(v, nd)


def tables(res: dict) -> str:
    lines = [
        "Accuracy of `smp assess` against the synthetic truth (all photos of each suite). The measuring "
        "stick: a true dot counts only where the photo shows it (`visible`: less than half of its disc "
        "under hair and a contrast as rendered of at least 3 L*, configs/flags.yaml); a prediction on an "
        "invisible dot is neither a hit nor a false dot. Dots match within max(0.1 mm, 0.15 x the true "
        "diameter). Flags are scored on measurable dots only (half-maximum diameter >= "
        f"{res.get('measurable_min_diameter_px', 3):g} px), end to end: a flagged true dot that was not "
        "found is a missed flag.",
        "",
    ]
    head = (
        "| segmenter | suite | photos | card found | px/mm err (median) | card residual dE00 | dot F1 | P / R | "
        "worst photo: F1 / R | loc. err mm | density err (median) | scalp_fraction err pp | show_through err pp | "
        "dot colour dE00 | hair IoU | hair F1 (1 px) |"
    )
    lines += [head, "|" + "|".join(["---"] * 16) + "|"]
    for method, suites in res["suites"].items():
        for suite, r in suites.items():
            s = r["summary"]
            pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"
            lines.append(
                f"| {method} | {suite} | {s['photos']} | {s['cards_found']}/{s['cards_present']} | "
                f"{pct(s['px_per_mm_err_median'])} | {fmt(s['residual_de00_mean'], 2)} | {fmt(s['dot_f1'])} | "
                f"{fmt(s['dot_precision'], 2)} / {fmt(s['dot_recall'], 2)} | "
                f"{fmt(s.get('dot_f1_worst_photo'))} / {fmt(s.get('dot_recall_worst_photo'), 2)} | "
                f"{fmt(s['loc_mm_median'], 4)} | "
                f"{pct(s['density_err_median'])} | {fmt(s['scalp_fraction_err_pp_median'], 2)} | "
                f"{fmt(s['show_through_err_pp_median'], 2)} | {fmt(s['colour_de00_median'], 2)} | "
                f"{fmt(s.get('hair_iou'))} | {fmt(s.get('hair_boundary_f1'))} |"
            )
    lines += [
        "",
        "What a perfect detector of the visible dots reaches: F1 1.000 on this stick by construction; "
        "on the old stick (every true dot counted, hidden ones as misses) the same perfect detector would "
        "score the F1 below, which is why the old figures could not be reached:",
        "",
        "| suite | true dots visible | oracle F1 on the old stick |",
        "|---|---|---|",
    ]
    first = next(iter(res["suites"].values()), {})
    for suite, r in first.items():
        s = r["summary"]
        if s.get("visible_share") is not None and suite != "untreated":
            lines.append(f"| {suite} | {100 * s['visible_share']:.1f}% | {fmt(s['oracle_f1_old_stick'])} |")
    lines += [
        "",
        "What the decision could reach with the candidates and evidence it has (the truth chooses the "
        "threshold: a ceiling, not a method): the share of visible true dots that any candidate reaches, the "
        "share among candidates passing every test but significance, and the best F1 of one significance "
        "threshold over those:",
        "",
        "| segmenter | suite | candidates reach | pass the other tests | best one-threshold F1 (at) | F1 now |",
        "|---|---|---|---|---|---|",
    ]
    for method, suites in res["suites"].items():
        for suite, r in suites.items():
            c, s = r["summary"].get("decision_ceiling") or {}, r["summary"]
            if c.get("candidate_recall") is not None:
                lines.append(
                    f"| {method} | {suite} | {fmt(c['candidate_recall'])} | "
                    f"{fmt(c['candidate_recall_other_tests'])} | {fmt(c['best_threshold_f1'])} "
                    f"({fmt(c['best_threshold'], 1)}) | {fmt(s['dot_f1'])} |"
                )
    lines += [
        "",
        "The segmenter's second look (quality warning `mask_unsure`: the photo's centre segmented again, "
        "mirrored and half a stop darker; its scalp fraction moved by more than "
        "`quality.max_scalp_fraction_wobble_pp` or less than `quality.min_mask_agreement` of it was labelled "
        "alike): how many photos it refuses, and the scalp-fraction error of those refused and of those "
        "kept:",
        "",
        "| segmenter | suite | photos | mask_unsure | two looks differ (median pp) | lowest agreement | "
        "scalp_fraction err pp: refused (median) | kept (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, suites in res["suites"].items():
        for suite, r in suites.items():
            s = r["summary"]
            lines.append(
                f"| {method} | {suite} | {s['photos']} | {s.get('mask_unsure', '-')} | "
                f"{fmt(s.get('wobble_pp_median'), 1)} | {fmt(s.get('mask_agreement_min'), 2)} | "
                f"{fmt(s.get('scalp_fraction_err_pp_unsure'), 1)} | "
                f"{fmt(s.get('scalp_fraction_err_pp_kept'), 1)} |"
            )
    lines += [
        "",
        "Untreated scalps (no pigment at all, rich in look-alikes): every reported dot is false.",
        "",
        "| segmenter | photos | false dots per cm2 (median) | max |",
        "|---|---|---|---|",
    ]
    for method, suites in res["suites"].items():
        s = suites.get("untreated", {}).get("summary")
        if s:
            lines.append(
                f"| {method} | {s['photos']} | {fmt(s['false_dots_per_cm2_median'], 2)} | "
                f"{fmt(s['false_dots_per_cm2_max'], 2)} |"
            )
    causes = sorted(
        {
            k
            for suites in res["suites"].values()
            for r in suites.values()
            for k in (r["summary"].get("false_by_cause_per_cm2_median") or {})
        }
    )
    if causes:
        lines += [
            "",
            "What the false dots sit on, per cm2 of scalp + hair (median over the suite's photos, so the "
            "columns need not add up to the total): the nearest look-alike the generator drew within "
            f"{CAUSE_RADIUS_MM:g} mm (lookalikes.csv of each photo), else hair or background by the true "
            "class, else the skin's own texture.",
            "",
            "| segmenter | suite | " + " | ".join(c.replace("_", " ") for c in causes) + " |",
            "|" + "|".join(["---"] * (2 + len(causes))) + "|",
        ]
        for method, suites in res["suites"].items():
            for suite, r in suites.items():
                fc = r["summary"].get("false_by_cause_per_cm2_median")
                if fc is not None:
                    lines.append(f"| {method} | {suite} | " + " | ".join(fmt(fc.get(c, 0.0), 2) for c in causes) + " |")
    lines += [
        "",
        "By dot size (true half-maximum diameter; false dots by their reported size): recall and precision "
        "per band, pooled over the suite.",
        "",
        "| segmenter | suite | unit | band | visible true | recall | false | precision |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, suites in res["suites"].items():
        for suite, r in suites.items():
            s = r["summary"]
            if suite in ("global", "untreated"):
                continue
            for unit in ("mm", "px"):
                for b in s.get(f"bands_{unit}", []):
                    hi = "" if b["hi"] == float("inf") else f"{b['hi']:g}"
                    lines.append(
                        f"| {method} | {suite} | {unit} | {b['lo']:g}-{hi} | {b['true']} | "
                        f"{fmt(b['recall'], 2)} | {b['fp']} | {fmt(b['precision'], 2)} |"
                    )
    lines += [
        "",
        "How small a dot can carry a flag: colour error of matched dots (measured core vs true core) by "
        "the true half-maximum diameter in photo px, pooled over the close-up suites (first segmenter).",
        "",
        "| diameter px | matched dots | dE00 (median per suite, n-weighted mean) | blue_index error (same) |",
        "|---|---|---|---|",
    ]
    pooled: dict = {}
    for r in first.values():
        for b in r["summary"].get("colour_by_px", []):
            key = (b["lo"], b["hi"])
            acc = pooled.setdefault(key, [])
            if b["n"]:
                acc.append(b)
    for (lo, hi), bs in pooled.items():
        n = sum(b["n"] for b in bs)
        if n:
            de = sum(b["de00_median"] * b["n"] for b in bs) / n
            bi = sum(b["blue_index_err_median"] * b["n"] for b in bs) / n
            top = "" if hi == float("inf") else f"{hi:g}"
            lines.append(f"| {lo:g}-{top} | {n} | {de:.2f} | {bi:.2f} |")
    rules = load_flag_settings()
    lines += [
        "",
        "Flags are scored on the dots whose true value is clear of the flag's threshold by the margin of "
        f"configs/flags.yaml (blue index {rules.flag_margin_blue_index:g} b*, contrast "
        f"{rules.flag_margin_contrast_dl:g} L*, diameter {rules.flag_margin_diameter_mm:g} mm); within it a flag "
        "counts neither way. Perfect detector: every measurable visible dot found, its blue index and contrast "
        f"read to {ORACLE_NOISE[0]:g} and {ORACLE_NOISE[1]:g} units and its diameter to {ORACLE_NOISE[2]:g} mm "
        "(1 sd).",
        "",
        "| segmenter | suite | flag | true flagged (measurable, decided) | precision | recall | "
        "precision (matched) | recall (matched) | perfect detector P / R |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, suites in res["suites"].items():
        for suite, r in suites.items():
            if suite in ("global", "untreated"):
                continue
            s = r["summary"]
            for f in FLAGS:
                lines.append(
                    f"| {method} | {suite} | {f} | {s[f + '_true']} | {fmt(s[f + '_precision'], 2)} | "
                    f"{fmt(s[f + '_recall'], 2)} | {fmt(s[f + '_precision_matched'], 2)} | "
                    f"{fmt(s[f + '_recall_matched'], 2)} | {fmt(s.get(f + '_oracle_precision'), 2)} / "
                    f"{fmt(s.get(f + '_oracle_recall'), 2)} |"
                )
    if res.get("peers"):
        run = (
            "same photos and stick, every figure measured in this run; the peers' parameters carried over from "
            "an earlier tuning on the same photos (--reuse-peers)"
            if res.get("peers_reused")
            else "same run, same stick"
        )
        lines += [
            "",
            f"Dot detectors side by side ({run}, test photos = the last 4 of each suite; peers "
            "tuned on the first 4 by a small grid search, scripts/peers.py; on untreated scalps with the "
            "easy suite's parameters):",
            "",
            "| detector | suite | F1 | precision | recall | false dots/cm2 (untreated) | megapixels/s | parameters |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for suite, rows in res["peers"].items():
            for name, r in rows.items():
                lines.append(
                    f"| {name} | {suite} | {fmt(r['f1'])} | {fmt(r['precision'], 2)} | "
                    f"{fmt(r['recall'], 2)} | "
                    f"{fmt(r.get('false_dots_per_cm2'), 1)} | {fmt(r['megapixels_per_s'], 2)} | "
                    f"{r.get('params', '')} |"
                )
    sp = res.get("speed")
    if sp:
        lines += [
            "",
            "12-megapixel close-up (4000x3000, 20 px/mm given as --px-per-mm: the photo has no card), "
            "end to end with the model loaded, 2 threads, "
            "median of 5 in one process:",
            "",
            "| segmenter | median s | min | max | peak RSS MB | dots | "
            + " | ".join(f"{k} s" for k in sp[next(iter(sp))]["stages"] if k != "total")
            + " | write s |",
            "|" + "|".join(["---"] * (6 + len(sp[next(iter(sp))]["stages"]))) + "|",
        ]
        for method, r in sp.items():
            st = " | ".join(f"{v:.3f}" for k, v in r["stages"].items() if k != "total")
            lines.append(
                f"| {method} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} | "
                f"{r['peak_rss_mb']:.0f} | {r['dots']} | {st} | {r['write_s']:.2f} |"
            )
        for method, r in (res.get("speed_48mp") or {}).items():
            st = " | ".join(
                f"{r['stages'].get(k, float('nan')):.3f}" for k in sp[next(iter(sp))]["stages"] if k != "total"
            )
            lines.append(
                f"| {method}, the same photo at 48 MP (8000x6000) | {r['median_s']:.2f} | {r['min_s']:.2f} | "
                f"{r['max_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['dots']} | {st} | {r['write_s']:.2f} |"
            )
    return "\n".join(lines)


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
