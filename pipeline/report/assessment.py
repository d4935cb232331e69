"""The report of one assessed photo: what it shows, its figures, its flagged dots, its limits.

Also the pieces the before/after report reuses for each of its two photos (scale,
colour, model and limits in words).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.report.folders import AssessmentFolder, read_assessment_folder
from pipeline.report.glossary import metric_row, ordered_names
from pipeline.report.images import (
    FLAG_ORDER,
    Picture,
    as_float,
    dot_crops,
    encode_rgb,
    flag_table,
    flags_of,
    pick_flagged,
    read_rgb,
)
from pipeline.report.render import subject_heading, subject_rows
from pipeline.report.wording import (
    MISSING,
    as_number,
    fmt_date,
    fmt_int,
    fmt_num,
    fmt_pct,
    join_words,
    plural,
    short_hash,
)
from pipeline.subject import Subject

__all__ = [
    "build_assessment_context",
    "find_photo",
    "photo_name",
    "view_label",
    "scale_text",
    "colour_text",
    "model_text",
    "limits",
    "all_warnings",
    "flag_rules",
    "FLAG_LABELS",
    "MAX_CROPS",
]

#: Most crops of flagged dots a report shows.
MAX_CROPS = 24
FLAG_LABELS = {"blue_shift": "blue-shifted", "faded": "faded", "spread": "spread"}
#: Ring colours of overlay.png (pipeline/one_photo/overlay.py), for the legend.
LEGEND = (("#50dc78", "not flagged"), ("#2878ff", "blue-shifted"), ("#ffaa00", "faded"), ("#ff00c8", "spread"))


def photo_name(af: AssessmentFolder, subject: Subject | None = None) -> str:
    """The photo's name in a report: the clinic's own file name when the subject knows it, else the
    assessed file's name."""
    if subject is not None and subject.photo:
        return subject.photo
    p = af.photo.get("path")
    return Path(p).name if isinstance(p, str) and p else af.path.name


def view_label(view: Any) -> str:
    return {"closeup": "close-up", "global": "whole head"}.get(view, str(view) if view else MISSING)


def scale_text(cal: dict[str, Any]) -> str:
    ppm = as_number(cal.get("px_per_mm"))
    src: Any = cal.get("scale_source")  # a JSON value (None when absent)
    if ppm is None:
        return "none (no card found, no scale given)"
    how = {"card": "from the calibration card", "manual": "entered by hand"}.get(src, f"source: {src or MISSING}")
    return f"{fmt_num(ppm, 1)} px per mm ({how})"


def colour_text(cal: dict[str, Any]) -> str:
    src = cal.get("colour_source")
    if src != "card":
        return "none: colours are as the camera recorded them"
    model = cal.get("colour_model")
    n = cal.get("patches_used")
    res = as_number(cal.get("residual_de00_mean"))
    mx = as_number(cal.get("residual_de00_max"))
    text = "corrected with the card's colour patches"
    bits = [b for b in (f"{model} model" if model else "", plural(n, "patch", "patches") if as_number(n) else "") if b]
    if bits:
        text += f" ({', '.join(bits)})"
    if res is not None:
        text += f"; remaining error \u0394E00 {fmt_num(res, 2)} on average"
        if mx is not None:
            text += f", {fmt_num(mx, 2)} at most"
    return text


def model_text(model: dict[str, Any]) -> str:
    if not model:
        return MISSING
    if model.get("kind") == "classical" or model.get("name") == "classical":
        return f"classical segmenter (no trained model), version {model.get('version') or MISSING}"
    return f"{model.get('name') or MISSING}, version {model.get('version') or MISSING}"


def flag_rules() -> dict[str, str]:
    """How each flag is decided, with the thresholds of configs/flags.yaml when it can be read."""
    try:
        from data.flags import load_flag_settings

        r = load_flag_settings()
        return {
            "blue_shift": f"blue index of {fmt_num(r.blue_index_min, 1)} or more (a visibly cool cast)",
            "faded": f"contrast against the skin below {fmt_num(r.faded_contrast_dl_max, 1)} L*",
            "spread": f"{fmt_num(r.spread_diameter_mm_min, 2)} mm across or more",
        }
    except Exception:  # the flags config unreadable (a broken SMP_CONFIG_DIR): describe without numbers
        return {
            "blue_shift": "pigment visibly bluer than a neutral dark pigment",
            "faded": "too little contrast against the skin",
            "spread": "wider than a follicle",
        }


def all_warnings(af: AssessmentFolder) -> list[str]:
    """Every warning of the assessment once: its own list, quality and calibration."""
    out: list[str] = []
    for src in (af.doc.get("warnings"), af.quality.get("warnings"), af.calibration.get("warnings")):
        if isinstance(src, list):
            out += [str(w) for w in src if w is not None]
    return list(dict.fromkeys(out))


def limits(af: AssessmentFolder) -> list[str]:
    """What the numbers of this photo cannot say, in sentences."""
    cal, q, m, model = af.calibration, af.quality, af.metrics, af.model
    out = []
    if as_number(cal.get("px_per_mm")) is None:
        out.append(
            "No scale (no calibration card found and none entered): sizes and spacing in mm and "
            "the density per cm\u00b2 are unavailable."
        )
    elif cal.get("scale_source") == "manual":
        out.append("The scale was entered by hand, not measured on a card: sizes are only as right as that number.")
    if cal.get("colour_source") != "card":
        out.append(
            "No colour correction: contrast and blue index depend on the lighting of this photo and "
            "cannot be compared with other photos as reliably."
        )
    elif (as_number(cal.get("residual_de00_mean")) or 0) > 2.0:
        out.append("The colour correction left a visible error on the card: colour figures are approximate.")
    if af.photo.get("view") == "global":
        out.append(
            "Whole-head view: dots are measured only where the photo resolves them; show-through is "
            "the main figure, dot figures are indicative."
        )
    wobble = as_number(q.get("scalp_fraction_wobble_pp"))
    if "mask_unsure" in (q.get("warnings") or []) and wobble is not None:
        out.append(
            f"The segmenter did not agree with itself: shown the centre of this photo mirrored and half a "
            f"stop darker, it called {wobble:.0f} percentage points more or less of it visible scalp. The "
            f"visible scalp and show-through of this photo cannot be relied on; check the mask overlay."
        )
    if q.get("ok") is False:
        out.append("The photo did not pass the quality check (see the warnings): treat its figures with caution.")
    if af.doc.get("roi_polygon_px"):
        out.append("Measured inside a region drawn by the user, not the whole scalp in the photo.")
    if not as_number(m.get("dot_count")):
        out.append("No dots were measured: dot figures are empty.")
    if model.get("version") == "bundled":
        out.append(
            "The bundled model was trained on synthetic photos only; its accuracy on real photos is "
            "not established yet (see its model card)."
        )
    out.append("Dot flags are automatic: a reviewer should confirm them before acting on them.")
    out.append("One photo shows one moment: lighting, camera angle, hair length and healing affect every figure.")
    return out


def find_photo(af: AssessmentFolder) -> tuple[np.ndarray | None, str | None]:
    """The assessed photo (upright RGB) when it is still where it was and unchanged (same sha256),
    else None and why not (one sentence). A relative path is tried from the working folder and
    from the assessment folder; the file's name alone next to the assessment too."""
    from pipeline.one_photo.loading import PhotoError, load_photo

    raw = af.photo.get("path")
    if not isinstance(raw, str) or not raw:
        return None, "The assessment does not say where its photo is."
    p = Path(raw)
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, af.path / p]
    candidates.append(af.path / p.name)
    for c in candidates:
        if not c.is_file():
            continue
        try:
            photo = load_photo(c)
        except (PhotoError, OSError, ValueError):
            continue
        want = af.photo.get("sha256")
        if not isinstance(want, str) or not want:
            return None, f"The assessment has no fingerprint of its photo, so {p.name} cannot be checked."
        if photo.sha256 != want:
            return None, (
                f"The file at the photo's path ({p.name}) is not the photo that was assessed (its content changed)."
            )
        return np.asarray(photo.rgb), None
    return None, f"The photo {p.name} is no longer at the path recorded when it was assessed."


def _summary(af: AssessmentFolder) -> str:
    m = af.metrics
    n = as_number(m.get("dot_count"))
    dens = as_number(m.get("dot_density_per_cm2"))
    st = as_number(m.get("show_through"))
    parts = []
    if n:
        text = f"{plural(n, 'dot')} found"
        if dens is not None:
            text += f", {fmt_num(dens, 1)} dots per cm\u00b2"
        parts.append(text)
    elif n == 0:
        parts.append("no dots found")
    if st is not None:
        parts.append(f"bare skin shows through on {fmt_pct(st)} of the treated area")
    first = "; ".join(parts)
    sentences = [first[:1].upper() + first[1:] + "."] if first else []
    small = as_number(m.get("dots_not_measurable"))
    judged = None if n is None else (n - small if small is not None else n)
    if small:
        sentences.append(
            f"{plural(small, 'dot')} {'is' if small == 1 else 'are'} too small in this photo to judge "
            "their colour and {} not flagged.".format("is" if small == 1 else "are")
        )
    if judged:
        pos: list[tuple[str, float]] = []
        zero: list[tuple[str, float]] = []
        for f in FLAG_ORDER:
            v = as_number(m.get(f"{f}_fraction"))
            if v is None:
                continue
            (pos if v > 0 else zero).append((FLAG_LABELS[f], v))
        if pos:
            whom = "the dots" if judged == n else f"the {plural(judged, 'dot')} large enough to judge"
            s = f"Of {whom}, " + join_words([f"{fmt_pct(v)} look {lab}" for lab, v in pos])
            if zero:
                s += "; none look " + join_words([lab for lab, _ in zero]).replace(" and ", " or ")
            sentences.append(s + ".")
        elif zero:
            sentences.append(
                "No dot is flagged as " + join_words([lab for lab, _ in zero]).replace(" and ", " or ") + "."
            )
    if af.quality.get("ok") is False:
        sentences.append("The photo did not pass the quality check: see the limits below.")
    return " ".join(sentences) or "No figures could be measured on this photo."


def _picture(af: AssessmentFolder, photo: np.ndarray | None) -> tuple[Picture | None, np.ndarray | None, str | None]:
    """The main picture (the overlay, else the photo) and the image crops are cut from."""
    overlay = read_rgb(af.overlay_path) if af.overlay_path.is_file() else None
    w, h = af.photo.get("width"), af.photo.get("height")
    if overlay is not None and isinstance(w, int) and isinstance(h, int) and overlay.shape[:2] != (h, w):
        overlay_frame = None  # a resized overlay: fine to show, not to cut dots from
    else:
        overlay_frame = overlay
    if overlay is not None:
        return encode_rgb(overlay), (photo if photo is not None else overlay_frame), None
    if photo is not None:
        return encode_rgb(photo), photo, "The overlay was not saved with this assessment: the plain photo is shown."
    return None, None, "Neither the overlay nor the photo is available: no picture."


def _crops(af: AssessmentFolder, source: np.ndarray | None, from_photo: bool) -> dict[str, Any]:
    dots = af.dots
    rules = flag_rules()
    counts = []
    if dots is not None and len(dots):
        flags = flag_table(dots)
        total = len(dots)
        for f in FLAG_ORDER:
            k = int(flags[f].sum())
            counts.append(
                {"flag": f, "label": FLAG_LABELS[f], "count": fmt_int(k), "share": fmt_pct(k / total), "rule": rules[f]}
            )
        any_flag = int(np.logical_or.reduce([flags[f] for f in FLAG_ORDER]).sum())
    else:
        m = af.metrics
        for f in FLAG_ORDER:
            counts.append(
                {
                    "flag": f,
                    "label": FLAG_LABELS[f],
                    "count": MISSING,
                    "share": fmt_pct(m.get(f"{f}_fraction")),
                    "rule": rules[f],
                }
            )
        any_flag = 0
    crops = []
    note = None
    if dots is not None and any_flag:
        rows = pick_flagged(dots, MAX_CROPS)
        if source is None:
            note = "No picture to cut the flagged dots from."
        else:
            ppm = as_number(af.calibration.get("px_per_mm"))
            pics = dot_crops(source, dots, rows, px_per_mm=ppm, mark=from_photo)
            for i, pic in zip(rows, pics):
                values = []
                c = as_float(dots, "contrast_dL", i)
                values.append(("contrast", fmt_num(c, 1, "L*")))
                values.append(("blue index", fmt_num(as_float(dots, "blue_index", i), 1)))
                d = as_float(dots, "diameter_mm", i)
                values.append(
                    (
                        "size",
                        fmt_num(d, 2, "mm") if d is not None else fmt_num(as_float(dots, "diameter_px", i), 1, "px"),
                    )
                )
                values.append(("\u0394E00", fmt_num(as_float(dots, "dE00", i), 1)))
                dot_id = as_float(dots, "dot_id", i)
                crops.append(
                    {
                        "picture": pic,
                        "flags": [FLAG_LABELS[f] for f in flags_of(dots, i)],
                        "tags": [(f, FLAG_LABELS[f]) for f in flags_of(dots, i)],
                        "figures": values,
                        "name": f"dot {fmt_int(dot_id if dot_id is not None else i)}",
                        "where": f"x {fmt_int(as_float(dots, 'x', i))}, y {fmt_int(as_float(dots, 'y', i))}",
                    }
                )
            if not from_photo:
                note = "Crops are cut from the overlay (the photo itself is not available), so rings show."
    return {
        "counts": counts,
        "n_flagged": fmt_int(any_flag),
        "n_flagged_raw": any_flag,
        "crops": crops,
        "n_shown": len(crops),
        "note": note,
        "max": MAX_CROPS,
    }


def methods_rows(af: AssessmentFolder, name: str | None = None) -> list[tuple[str, str]]:
    cal, q, model, photo = af.calibration, af.quality, af.model, af.photo
    size = (
        f"{fmt_int(photo.get('width'))} \u00d7 {fmt_int(photo.get('height'))} px"
        if as_number(photo.get("width")) and as_number(photo.get("height"))
        else MISSING
    )
    quality = "passed" if q.get("ok") is True else ("did not pass" if q.get("ok") is False else MISSING)
    qual_bits = []
    if as_number(q.get("sharpness")) is not None:
        qual_bits.append(f"sharpness {fmt_num(q.get('sharpness'), 2)}")
    if as_number(q.get("roi_fraction")) is not None:
        qual_bits.append(f"scalp and hair fill {fmt_pct(q.get('roi_fraction'))} of the photo")
    if qual_bits:
        quality += f" ({', '.join(qual_bits)})"
    rows = [
        ("Photo", f"{name or photo_name(af)}, {size}, {view_label(photo.get('view'))}"),
        ("Photo fingerprint (sha256)", str(photo.get("sha256") or MISSING)),
        ("Scale", scale_text(cal)),
        (
            "Card",
            ("found" + (f" (marker {cal.get('marker_id')})" if cal.get("marker_id") is not None else ""))
            if cal.get("scale_source") == "card"
            else "not found",
        ),
        ("Colour", colour_text(cal)),
        ("Model", model_text(model)),
        ("Model fingerprint (sha256)", str(model.get("sha256") or MISSING)),
        ("Photo quality", quality),
    ]
    if af.doc.get("config_hash"):
        rows.append(("Settings fingerprint", str(af.doc["config_hash"])))
    return rows


def build_assessment_context(
    folder: str | Path, *, title: str | None = None, subject: Subject | None = None
) -> dict[str, Any]:
    """``subject``: whose photo and which visit (default: what the assessment recorded)."""
    af = read_assessment_folder(folder)
    name = photo_name(af, subject)
    subject = subject or af.subject
    heading = subject_heading(subject)
    photo, missing_note = find_photo(af)
    picture, source, picture_note = _picture(af, photo)
    flagged = _crops(af, source, from_photo=photo is not None and source is photo)
    m = af.metrics
    if missing_note and picture is not None:
        missing_note += " The pictures come from the overlay saved with the assessment."
    notes = [n for n in (missing_note, picture_note) if n]
    notes += list(af.notes)
    return {
        "kind": "assessment",
        "kicker": "SMP assessment",
        "title": title or f"SMP assessment: {heading or name}",
        "meta": [
            *subject_rows(subject),
            ("Photo", name),
            (
                "Taken",
                fmt_date(af.photo.get("capture_time"))
                if af.photo.get("capture_time")
                else "date not recorded in the photo",
            ),
            ("View", view_label(af.photo.get("view"))),
            ("Scale", scale_text(af.calibration)),
        ],
        "summary": _summary(af),
        "picture": picture,
        "picture_alt": f"Overlay of {name}: scalp and hair tinted, each dot ringed by its flag",
        "picture_notes": notes,
        "legend": LEGEND,
        "metrics": [metric_row(k, value=m.get(k)) for k in ordered_names(m) if not isinstance(m.get(k), (dict, list))],
        "flagged": flagged,
        "methods": methods_rows(af, name),
        "limits": limits(af),
        "warnings": all_warnings(af),
        "short_model_hash": short_hash(af.model.get("sha256")),
    }
