"""The benchmark of one-photo assessment (scripts/bench_assess.py): the ``assess`` section of
BENCHMARKS.md written from the results (``OUT/assess.json``): accuracy per segmenter and suite, the
perfect detector on the old stick, the decision ceiling, the second look, untreated scalps, false dots
by cause, size bands, colour by size, flags, the peers and the speed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from assess_scoring import CAUSE_RADIUS_MM, FLAGS, ORACLE_NOISE  # noqa: E402
from bench import fmt as bench_fmt  # noqa: E402

from data.flags import load_flag_settings  # noqa: E402


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
