"""The benchmark of one-photo assessment (scripts/bench_assess.py): one photo scored against its
synthetic truth, and a suite's photos pooled into its summary.

``score_photo`` assesses one photo of a suite and gives its row of scalar errors (scale, colour
calibration, density, scalp fraction, show-through, hair) and its counts to pool (dots, flags, size
bands, colour by size, the detector's candidates); ``summarise`` pools a suite's rows and counts;
``decision_ceiling`` is what one significance threshold could reach on a suite's candidates.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data.colour import delta_e00  # noqa: E402
from data.flags import decided_flags, flag_dots, load_flag_settings, measurable_dots  # noqa: E402
from data.metrics import HAIR  # noqa: E402
from models.scoring import IGNORE, boundary_scores, false_dot_causes, match_dots, match_radius_px  # noqa: E402
from pipeline.one_photo.assess import Assessor  # noqa: E402
from pipeline.one_photo.detect import REJECT  # noqa: E402

FLAGS = ("blue_shift", "faded", "spread")
#: dot-size bands of the per-band table: true half-maximum diameter in mm and in photo px
MM_BANDS = (0.0, 0.15, 0.25, 0.4, np.inf)
PX_BANDS = (0.0, 2.0, 3.0, 5.0, 8.0, np.inf)
#: A false dot within this of a look-alike the generator drew is put down to it.
CAUSE_RADIUS_MM = 0.15


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
