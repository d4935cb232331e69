"""The before/after report of an ``smp compare`` folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.report.assessment import (
    all_warnings,
    colour_text,
    limits,
    methods_rows,
    model_text,
    photo_name,
    scale_text,
    view_label,
)
from pipeline.report.folders import AssessmentFolder, ReportError, read_assessment_folder, read_doc
from pipeline.report.glossary import WITHIN_NOISE, judge, metric_row, ordered_names, spec_for
from pipeline.report.images import encode_rgb, picture_from_file, read_rgb
from pipeline.report.render import subject_rows, subject_visit, subject_who
from pipeline.report.wording import MISSING, as_number, fmt_date, fmt_int, fmt_num, fmt_pct, fmt_points, fmt_signed
from pipeline.subject import Subject
from pipeline.two_photos.settings import RETAKE_ADVICE

__all__ = ["build_comparison_context"]


#: The headline when no figure of the headline could be compared.
GENERIC_SUMMARY = "The two photos were compared: see the table for what changed."


def _dict(d: Any, key: str) -> dict:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, dict) else {}


def _side(folder: Path, name: str) -> tuple[AssessmentFolder | None, str | None]:
    try:
        return read_assessment_folder(folder / name), None
    except ReportError as exc:
        return None, f"The {name} photo's assessment folder cannot be read ({exc})."


def _verdict(metrics: dict[str, Any], name: str, delta: Any) -> str:
    """The glossary's judgement of ``delta`` (after - before) of metric ``name``, within the change two
    photos of one scalp can show (``metrics[name].noise``); ``same`` when unknown."""
    v = judge(spec_for(name), delta, _dict(metrics, name).get("noise"))
    return "same" if v == "unknown" else v


def _summary(h: dict[str, Any], after_metrics: dict[str, Any], metrics: dict[str, Any]) -> str:
    parts = []
    sb, sa = as_number(h.get("show_through_before")), as_number(h.get("show_through_after"))
    if sb is not None and sa is not None:
        red = sb - sa
        verdict = _verdict(metrics, "show_through", -red)
        if verdict == "same":
            parts.append(f"Scalp show-through stayed at about {fmt_pct(sa)}")
        elif verdict == "unsure":
            parts.append(f"Scalp show-through read {fmt_pct(sb)} before and {fmt_pct(sa)} after, {WITHIN_NOISE}")
        else:
            parts.append(
                f"Scalp show-through went from {fmt_pct(sb)} to {fmt_pct(sa)} "
                f"({fmt_points(abs(red)).lstrip('+')} {'less' if red > 0 else 'more'})"
            )
    added, lost = as_number(h.get("dots_added")), as_number(h.get("dots_lost"))
    cb, ca = as_number(h.get("common_dots_before")), as_number(h.get("common_dots_after"))
    if added is not None and lost is not None and cb is not None and ca is not None:
        parts.append(
            f"in the area both photos show, {_dots_went(cb, ca)} ({fmt_int(added)} added, "
            f"{fmt_int(lost)} not found again)"
        )
    dens = as_number(after_metrics.get("dot_density_per_cm2"))
    dc = as_number(h.get("density_change_per_cm2"))
    if dens is not None and dc is not None:
        parts.append(f"density {_density_went(dens - dc, dens, _verdict(metrics, 'dot_density_per_cm2', dc))}")
    elif dens is not None:
        parts.append(f"density is now {fmt_num(dens, 1)} dots per cm\u00b2")
    if not parts:
        return GENERIC_SUMMARY
    text = "; ".join(parts)
    sentences = [text[:1].upper() + text[1:] + "."]
    c = as_number(h.get("contrast_dL_change_median"))
    if c is not None:
        if abs(c) < 0.5:
            sentences.append("Dots seen in both photos are about as dark as before.")
        else:
            sentences.append(
                f"Dots seen in both photos {'gained' if c > 0 else 'lost'} {fmt_num(abs(c), 1)} L* of "
                f"contrast against the skin (median){': they have faded a little' if c < 0 else ''}."
            )
    return " ".join(sentences)


def _unregistered_summary(figures: str) -> str:
    """The headline of photos that could not be lined up: that first, then what was compared."""
    lead = "The two photos could not be lined up, so no dot is paired between them"
    if figures == GENERIC_SUMMARY:
        return f"{lead}: the table compares the figures that need no alignment. To compare dots, {RETAKE_ADVICE}."
    return f"{lead}. {figures}"


def _dots_went(before: float, after: float) -> str:
    if round(before) == round(after):
        return f"the dots stayed at {fmt_int(after)}"
    return f"the dots went from {fmt_int(before)} to {fmt_int(after)}"


def _density_went(before: float, after: float, verdict: str) -> str:
    if verdict == "same":
        return f"stayed at {fmt_num(after, 1)} dots per cm\u00b2"
    if verdict == "unsure":
        return f"read {fmt_num(before, 1)} and {fmt_num(after, 1)} dots per cm\u00b2, {WITHIN_NOISE}"
    return (
        f"went from {fmt_num(before, 1)} to {fmt_num(after, 1)} dots per cm\u00b2 "
        f"({'more' if after > before else 'fewer'})"
    )


def _headline_cards(h: dict[str, Any], metrics: dict[str, Any]) -> list[dict[str, str]]:
    cards = []
    sb, sa = h.get("show_through_before"), h.get("show_through_after")
    red = as_number(h.get("show_through_reduction"))
    if as_number(sb) is not None or as_number(sa) is not None:
        cards.append(
            {
                "label": "Show-through",
                "value": f"{fmt_pct(sb)} \u2192 {fmt_pct(sa)}",
                "sub": MISSING if red is None else fmt_points(-red),
                "verdict": _verdict(metrics, "show_through", None if red is None else -red),
            }
        )
    if as_number(h.get("common_dots_after")) is not None:
        cards.append(
            {
                "label": "Dots where both photos overlap",
                "value": f"{fmt_int(h.get('common_dots_before'))} \u2192 {fmt_int(h.get('common_dots_after'))}",
                "sub": f"{fmt_int(h.get('dots_added'))} added, {fmt_int(h.get('dots_lost'))} not found again, "
                f"{fmt_int(h.get('dots_linked'))} in both",
                "verdict": "neutral",
            }
        )
    elif as_number(h.get("dot_count_before")) is not None or as_number(h.get("dot_count_after")) is not None:
        cards.append(
            {
                "label": "Dot count",
                "value": f"{fmt_int(h.get('dot_count_before'))} \u2192 {fmt_int(h.get('dot_count_after'))}",
                "sub": fmt_signed(h.get("dot_count_change"), 0),
                "verdict": "neutral",
            }
        )
    dens = _dict(metrics, "dot_density_per_cm2")
    dc = as_number(h.get("density_change_per_cm2"))
    if as_number(dens.get("after")) is not None or dc is not None:
        cards.append(
            {
                "label": "Density",
                "value": fmt_num(dens.get("after"), 1, "per cm\u00b2"),
                "sub": "change " + fmt_signed(dc, 1),
                "verdict": _verdict(metrics, "dot_density_per_cm2", dc),
            }
        )
    c = as_number(h.get("contrast_dL_change_median"))
    if c is not None:
        cards.append(
            {
                "label": "Contrast of dots in both",
                "value": fmt_signed(c, 1, "L*"),
                "sub": "median change (negative: lighter, faded)",
                "verdict": "same" if abs(c) < 0.5 else ("better" if c > 0 else "worse"),
            }
        )
    return cards


def _registration(doc: dict[str, Any]) -> tuple[list[tuple[str, str]], str, bool]:
    reg, links, h = _dict(doc, "registration"), _dict(doc, "links"), _dict(doc, "headline")
    if doc.get("registered") is False:
        why = str(doc.get("registration_error") or "no reason recorded")
        return (
            [("Method", "not registered"), ("Why", why), ("Dots paired", "not paired")],
            f"The two photos could not be lined up ({why}). Only the figures that need no alignment are "
            f"compared: each photo's show-through, density, dot size and spacing and flagged shares. Dots "
            f"were not paired, so nothing is said about dots added, lost or faded. To compare dots, "
            f"{RETAKE_ADVICE}.",
            True,
        )
    rows = [
        ("Method", str(reg.get("method") or MISSING)),
        ("Matching features", f"{fmt_int(reg.get('inliers'))} agreeing of {fmt_int(reg.get('matches'))} matched"),
        (
            "Area both photos show",
            fmt_pct(h.get("overlap_fraction", reg.get("overlap_fraction"))) + " of the before photo",
        ),
        (
            "Scale and turn of the after photo",
            f"\u00d7{fmt_num(reg.get('scale'), 2)}, {fmt_num(reg.get('rotation_deg'), 1)}\u00b0",
        ),
    ]
    if links:
        rows += [
            (
                "Dots paired",
                f"{fmt_int(links.get('linked'))} ({fmt_pct(links.get('linked_fraction'))} of the before dots in view)",
            ),
            ("New / not found again", f"{fmt_int(links.get('new'))} / {fmt_int(links.get('lost'))}"),
            (
                "Distance between paired dots",
                f"{fmt_num(links.get('residual_mm_median'), 3, 'mm')} median, "
                f"{fmt_num(links.get('residual_mm_p90'), 3, 'mm')} at 90%",
            ),
        ]
    else:
        rows.append(("Dots paired", "not paired (whole-head views or too few dots)"))
    warns = [w for w in doc.get("warnings") or [] if isinstance(w, str)]
    poor = any(w.startswith(("poor ", "registration:", "the photos share only")) for w in warns) or bool(
        reg.get("warnings")
    )
    lf = as_number(links.get("linked_fraction")) if links else None
    if poor:
        verdict = (
            "The alignment of the two photos is uncertain (see the warnings): changes at the level of "
            "single dots may be wrong; whole-photo figures are unaffected."
        )
    elif lf is not None:
        verdict = (
            f"The photos were aligned on {fmt_int(reg.get('inliers'))} matching features and "
            f"{fmt_pct(lf)} of the before dots in view were paired with an after dot."
        )
    else:
        verdict = f"The photos were aligned on {fmt_int(reg.get('inliers'))} matching features."
    return rows, verdict, poor


def _photo_panel(
    side: str, info: dict[str, Any], af: AssessmentFolder | None, subject: Subject | None = None
) -> dict[str, Any]:
    if af is not None:
        name = photo_name(af, subject)
        taken = af.photo.get("capture_time")
        pic = read_rgb(af.overlay_path) if af.overlay_path.is_file() else None
        rows = methods_rows(af, name)
    else:
        p = info.get("path")
        name = (
            subject.photo
            if subject is not None and subject.photo
            else Path(p).name
            if isinstance(p, str) and p
            else side
        )
        taken = None
        pic = None
        rows = [
            ("Photo", f"{name}, {view_label(info.get('view'))}"),
            ("Scale", scale_text(info)),
            ("Colour", colour_text(info)),
        ]
    return {
        "side": side,
        "name": name,
        "taken": fmt_date(taken) if taken else "date not recorded",
        "picture": None if pic is None else encode_rgb(pic, max_width=1000, quality=80),
        "methods": rows,
        "limits": limits(af) if af is not None else [],
    }


def build_comparison_context(
    folder: str | Path, *, title: str | None = None, subjects: tuple[Subject | None, Subject | None] | None = None
) -> dict[str, Any]:
    """``subjects``: whose photos and which visits, before and after (default: what the two
    assessments recorded)."""
    doc = read_doc(folder, "comparison")
    path = Path(folder)
    if not isinstance(doc.get("metrics"), dict) or not isinstance(doc.get("headline"), dict):
        raise ReportError(f"{path / 'comparison.json'}: no metrics or headline figures")
    notes = []
    before, n1 = _side(path, "before")
    after, n2 = _side(path, "after")
    notes += [n for n in (n1, n2) if n]
    info_b, info_a = _dict(doc, "before"), _dict(doc, "after")
    given = subjects or (None, None)
    panels = [_photo_panel("before", info_b, before, given[0]), _photo_panel("after", info_a, after, given[1])]
    h = _dict(doc, "headline")
    metrics = doc["metrics"]
    after_metrics = after.metrics if after is not None else {k: _dict(metrics, k).get("after") for k in metrics}

    registered = doc.get("registered") is not False
    pictures = []
    for file, alt, caption in (
        ()
        if not registered
        else (
            (
                "side_by_side.png",
                "Before and after side by side",
                "Before (left) and after (right). The after photo is turned and scaled to line up with the before "
                "photo, so the same scalp sits in the same place; dark grey is outside the after photo.",
            ),
            (
                "difference.png",
                "What changed between the photos",
                "What changed, drawn on the dimmed before photo: blue where the scalp now looks darker (more "
                "pigment), orange where it looks lighter (faded or less pigment); green rings are new dots, red "
                "rings dots not found again, small light rings dots seen in both.",
            ),
        )
    ):
        pic = picture_from_file(path / file)
        if pic is None:
            notes.append(f"{file} is missing from the comparison folder.")
        pictures.append({"picture": pic, "alt": alt, "caption": caption, "file": file})

    reg_rows, reg_verdict, reg_poor = _registration(doc)
    warnings = [str(w) for w in doc.get("warnings") or [] if w is not None]
    for side, af in (("before", before), ("after", after)):
        if af is not None:
            warnings += [f"{side} photo: {w}" for w in all_warnings(af)]
    views = {view_label(info_b.get("view")), view_label(info_a.get("view"))}
    lims = [
        "The two photos are compared as taken: differences in lighting, angle, hair length or healing "
        "show up as changes too."
    ]
    if not registered:
        lims.append(
            "The photos could not be lined up: no dot-level change is reported, and the pictures of "
            "what changed are not drawn."
        )
    elif reg_poor:
        lims.append("The photos did not line up well: dot-level changes (added, lost, contrast) are uncertain.")
    for side, af in (("before", before), ("after", after)):
        if af is not None and as_number(af.calibration.get("px_per_mm")) is None:
            lims.append(
                f"The {side} photo has no scale: its mm and per-cm\u00b2 figures are missing, and so are their changes."
            )
    lims.append(
        "Each photo's figures cover the area that photo shows, so its dot count depends on the framing: "
        "density per cm\u00b2 compares the two."
    )
    if registered:
        lims.append(
            "Dots added, not found again and in both are counted in the area both photos show, the same "
            "figures in every sentence and table."
        )
    named = any(s is not None and s.photo for s in given)
    if panels[0]["name"] == panels[1]["name"] and not named:  # visit_01/photo.jpg vs visit_04/photo.jpg
        for p, info, af in zip(panels, (info_b, info_a), (before, after)):
            raw = (af.photo.get("path") if af is not None else None) or info.get("path")
            if isinstance(raw, str) and Path(raw).parent.name:
                p["name"] = f"{Path(raw).parent.name}/{Path(raw).name}"
    name_b, name_a = panels[0]["name"], panels[1]["name"]
    sb, sa = (g or (af.subject if af is not None else None) for g, af in zip(given, (before, after)))
    both = Subject(
        client=next((s.client for s in (sb, sa) if s and s.client), None),
        region=next((s.region for s in (sb, sa) if s and s.region), None),
    )
    who = subject_who(both)
    visit_b, visit_a = subject_visit(sb), subject_visit(sa)
    # a visit names its photo (the file name follows in brackets); without one, the photo's name and date
    side_b = f"{visit_b} ({name_b})" if visit_b else f"{name_b} ({panels[0]['taken']})"
    side_a = f"{visit_a} ({name_a})" if visit_a else f"{name_a} ({panels[1]['taken']})"
    if visit_b and visit_a:
        heading = f"{who + ', ' if who else ''}{visit_b} \u2192 {visit_a}"
    else:
        heading = f"{who + ': ' if who else ''}{name_b} \u2192 {name_a}"
    return {
        "kind": "comparison",
        "kicker": "SMP before / after",
        "title": title or f"SMP before / after: {heading}",
        "meta": [
            *subject_rows(both),
            ("Before", side_b),
            ("After", side_a),
            ("View", " / ".join(sorted(views))),
            ("Scale", f"before {scale_text(info_b)}; after {scale_text(info_a)}"),
        ],
        "summary": _summary(h, after_metrics, metrics)
        if registered
        else _unregistered_summary(_summary(h, after_metrics, metrics)),
        "cards": _headline_cards(h, metrics),
        "pictures": pictures,
        "picture_notes": notes,
        "metrics": [
            metric_row(
                k,
                before=_dict(metrics, k).get("before"),
                after=_dict(metrics, k).get("after"),
                delta=_dict(metrics, k).get("delta"),
                noise=_dict(metrics, k).get("noise"),
            )
            for k in ordered_names(metrics)
        ],
        "registration": reg_rows,
        "registration_verdict": reg_verdict,
        "registration_poor": reg_poor,
        "panels": panels,
        "models": [(p["side"], model_text(af.model)) for p, af in zip(panels, (before, after)) if af is not None],
        "limits": list(dict.fromkeys(lims)),
        "warnings": list(dict.fromkeys(warnings)),
    }
