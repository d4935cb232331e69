"""A client region's timeline: the visits, the fading, the touch-up forecast in words."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, cast

from data.visits import PIGMENTING_KINDS
from pipeline.report.folders import ReportError, read_doc
from pipeline.report.images import picture_from_file
from pipeline.report.wording import (
    MISSING,
    as_number,
    fmt_date,
    fmt_int,
    fmt_month,
    fmt_month_short,
    fmt_num,
    fmt_pct,
    fmt_signed,
    join_words,
    kind_label,
    parse_date,
    plural,
)
from pipeline.two_photos.settings import retake_advice

__all__ = ["build_timeline_context", "forecast_sentence", "kind_label"]

#: Default plots of ``smp track`` and what each shows.
PLOTS = (
    (
        "contrast",
        "Dot contrast over time",
        "Each faint point is one dot at one visit, the line the median of each visit. The dashed red line is the "
        "touch-up level; orange is the fitted fading with its {interval} band; the red band is the range of the "
        "forecast. Grey vertical lines mark sessions and touch-ups.",
    ),
    (
        "blue_index",
        "Pigment colour (blue index)",
        "Median blue index of the dots at each visit: how much bluer the pigment looks than a neutral dark "
        "pigment would on this skin. A steady rise is a blue shift.",
    ),
    ("density", "Dot density", "Dots per cm\u00b2 at each visit (missing where a photo had no scale)."),
    (
        "show_through",
        "Show-through",
        "Share of the treated area where bare skin shows, at each visit. Lower is better.",
    ),
)


def _interval(fading: dict[str, Any]) -> str:
    v = as_number(fading.get("interval"))
    return f"{fmt_num(100 * v, 0)}%" if v is not None and 0 < v < 1 else "90%"


def _last_pigmenting_day(visits: list[dict[str, Any]]) -> float | None:
    found = [as_number(v.get("day")) for v in visits if v.get("kind") in PIGMENTING_KINDS]
    days = [d for d in found if d is not None]
    return max(days) if days else None


def forecast_sentence(fading: dict[str, Any], visits: list[dict[str, Any]], today: dt.date | None = None) -> str:
    """The touch-up forecast in one or two sentences, for each ``status``."""
    fc = raw if isinstance(raw := fading.get("forecast"), dict) else {}
    status = fc.get("status")
    thr = fmt_num(fc.get("threshold_dl"), 0)
    interval = _interval(fading)
    base = parse_date(visits[0].get("date")) if visits else None
    horizon_day = as_number(fc.get("horizon_day"))
    horizon_date = base + dt.timedelta(days=horizon_day) if base and horizon_day is not None else None
    last_pig = _last_pigmenting_day(visits)
    years = (horizon_day - last_pig) / 365.25 if horizon_day is not None and last_pig is not None else None
    if status == "due":
        date = fc.get("date")
        if parse_date(date) is None:
            day, last = as_number(fc.get("day")), as_number(visits[-1].get("day")) if visits else None
            if day is not None and last is not None:
                return f"A touch-up is expected about {fmt_int(day - last)} days after the last visit."
            return "A touch-up is expected, but its date could not be worked out."
        lo, hi = fc.get("date_low"), fc.get("date_high")
        if parse_date(lo) and parse_date(hi):
            rng = f" ({interval} range: {fmt_month_short(lo)} \u2013 {fmt_month_short(hi)})"
        elif parse_date(lo):
            rng = f" ({interval} range: from {fmt_month_short(lo)} to beyond " + (
                f"{fmt_month_short(horizon_date)})" if horizon_date else "the forecast horizon)"
            )
        elif parse_date(hi):
            rng = f" ({interval} range: up to {fmt_month_short(hi)})"
        else:
            rng = ""
        today = today or dt.date.today()
        if cast(dt.date, parse_date(date)) <= today:  # a date: the None case returned above
            # a forecast date already past: overdue by the forecast, not "due now" (only the dots measured
            # at a visit can say that: status already_below)
            last_date = parse_date(visits[-1].get("date")) if visits else None
            upto = f" up to the last visit ({fmt_date(last_date)})" if last_date else ""
            return (
                f"A touch-up is probably overdue: by the fading measured{upto}, the dots were to reach the "
                f"touch-up level around {fmt_month(date)}{rng}. This is a forecast, not a measurement: a new "
                "photo will show where the dots stand."
            )
        return f"A touch-up is expected around {fmt_month(date)}{rng}."
    if status == "already_below":
        last = as_number(fading.get("last_median_contrast_dl"))
        now = f" ({fmt_num(last, 1)} L*)" if last is not None else ""
        return f"A touch-up is due now: the dots' median contrast{now} is already below the touch-up level ({thr} L*)."
    if status == "not_within_horizon":
        span = f"{fmt_num(years, 0)} years" if years is not None else "the forecast horizon"
        before = f" (before {fmt_month(horizon_date)})" if horizon_date else ""
        if as_number(_get(fading, "half_life_days", "value")) is None:
            return (
                f"No touch-up is foreseen: the dots' contrast has not fallen measurably so far, so none is "
                f"expected within {span} of the last session{before}."
            )
        return f"No touch-up is expected within {span} of the last session{before}: the dots fade slowly."
    reasons = [w for w in fading.get("warnings") or [] if isinstance(w, str)]
    why = f" ({reasons[0]})" if reasons else ""
    return f"The touch-up date cannot be forecast yet{why}. More visits, spread over at least a few months, are needed."


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _range(est: Any, digits: int, unit: str = "", signed: bool = False) -> str:
    f = (lambda v: fmt_signed(v, digits)) if signed else (lambda v: fmt_num(v, digits))
    lo, hi = _get(est, "low"), _get(est, "high")
    if as_number(lo) is None and as_number(hi) is None:
        return ""
    text = f"{f(lo)} to {f(hi)}"
    return f"{text} {unit}".rstrip()


def _share(trend: Any) -> str:
    """'46 of 310 dots (15%)' of a trend's turning dots."""
    return (
        f"{fmt_int(_get(trend, 'n_turning'))} of {fmt_int(_get(trend, 'n_dots'))} dots "
        f"({fmt_pct(_get(trend, 'turning_fraction'))})"
    )


def _turning(trend: Any, verb: str) -> str:
    """'46 of 310 dots (15%) are turning bluer' (``verb``: 'are turning bluer')."""
    share = _share(trend)
    return f"{share[:1].upper()}{share[1:]} {verb}"


def _facts(fading: dict[str, Any]) -> list[dict[str, str]]:
    interval = _interval(fading)
    out = []
    hl = _get(fading, "half_life_days")
    v = as_number(_get(hl, "value"))
    if v is not None:
        years = f" ({fmt_num(v / 365.25, 1)} years)" if v >= 365 else ""
        rng = _range(hl, 0, "days")
        out.append(
            {
                "label": "Half-life of the contrast",
                "value": f"{fmt_num(v, 0)} days{years}",
                "text": "The dots lose half their contrast against the skin in about this time"
                + (f" ({interval} range: {rng})." if rng else "."),
            }
        )
    else:
        out.append(
            {
                "label": "Half-life of the contrast",
                "value": MISSING,
                "text": "Not measured: no fading could be measured over the visits so far.",
            }
        )
    fresh, last = as_number(fading.get("fresh_contrast_dl")), as_number(fading.get("last_median_contrast_dl"))
    if fresh is not None or last is not None:
        out.append(
            {
                "label": "Contrast now",
                "value": fmt_num(last, 1, "L*"),
                "text": f"Median contrast of the dots at the last visit; fresh dots read at about "
                f"{fmt_num(fresh, 1)} L*. The touch-up level is "
                f"{fmt_num(_get(fading, 'forecast', 'threshold_dl'), 0)} L*.",
            }
        )
    bt = _get(fading, "blue_trend")
    bv = as_number(_get(bt, "per_year", "value"))
    rng = _range(_get(bt, "per_year"), 2, signed=True)
    if bv is None:
        out.append(
            {
                "label": "Blue shift",
                "value": "not measured",
                "text": "Not enough settled visits to follow the pigment's colour.",
            }
        )
    elif _get(bt, "detected") and _get(bt, "found_by") == "minority":
        out.append(
            {
                "label": "Blue shift",
                "value": f"found in {_share(bt)}",
                "text": f"{_turning(bt, 'are turning bluer')}: their blue index rises by "
                f"{fmt_signed(_get(bt, 'turning_per_year'), 2)} per year (median), while the region as "
                f"a whole changes by {fmt_signed(bv, 2)}"
                + (f" ({interval} range {rng})" if rng else "")
                + ". The dots are listed in dots_fading.csv (blue_turning). Consider the pigment and "
                "its depth at their next touch-up.",
            }
        )
    elif _get(bt, "detected"):
        out.append(
            {
                "label": "Blue shift",
                "value": "found",
                "text": f"The pigment is turning bluer: the blue index rises by {fmt_signed(bv, 2)} per year"
                + (f" ({interval} range {rng})" if rng else "")
                + (f"; {_turning(bt, 'turn bluer on their own')}" if as_number(_get(bt, "n_turning")) else "")
                + ". Consider the pigment and its dilution at the next touch-up.",
            }
        )
    else:
        out.append(
            {
                "label": "Blue shift",
                "value": "not found",
                "text": f"No blue shift found: the blue index changes by {fmt_signed(bv, 2)} per year"
                + (f" ({interval} range {rng})" if rng else "")
                + ", within what is normal, and no "
                "more single dots turn bluer than measurement noise makes.",
            }
        )
    sp = _get(fading, "spread")
    sv = as_number(_get(sp, "per_year", "value"))
    if sv is not None and _get(sp, "detected") and _get(sp, "found_by") == "minority":
        srng = _range(_get(sp, "per_year"), 3, "mm", signed=True)
        out.append(
            {
                "label": "Dot spreading",
                "value": f"found in {_share(sp)}",
                "text": f"{_turning(sp, 'are growing')}: by {fmt_signed(_get(sp, 'turning_per_year'), 3, 'mm')} "
                f"per year (median), while the region's dots as a whole change by "
                f"{fmt_signed(sv, 3, 'mm')}"
                + (f" ({interval} range {srng})" if srng else "")
                + ". They are listed in dots_fading.csv (spreading).",
            }
        )
    elif sv is not None:
        srng = _range(_get(sp, "per_year"), 3, "mm", signed=True)
        found = bool(_get(sp, "detected"))
        out.append(
            {
                "label": "Dot spreading",
                "value": "found" if found else "not found",
                "text": (
                    f"The region's dots {'are' if found else 'are not measurably'} growing: "
                    f"{fmt_signed(sv, 3, 'mm')} per year"
                    + (f" ({interval} range {srng})" if srng else "")
                    + "."
                    + (
                        f" {plural(fading.get('n_spreading'), 'single dot')} "
                        f"{'is' if as_number(fading.get('n_spreading')) == 1 else 'are'} growing "
                        "(listed in dots_fading.csv)."
                        if as_number(fading.get("n_spreading"))
                        else ""
                    )
                ),
            }
        )
    nf = as_number(fading.get("n_fast_fading"))
    out.append(
        {
            "label": "Fast-fading dots",
            "value": fmt_int(nf),
            "text": (
                "Dots fading at least twice as fast as the rest of the region (listed in "
                "dots_fading.csv): worth a look at the next visit."
                if nf
                else "No dot fades much faster than the rest of the region."
            ),
        }
    )
    return out


def _visit_rows(visits: list[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for v in visits:
        m = raw if isinstance(raw := v.get("metrics"), dict) else {}
        rows.append(
            {
                "date": fmt_date(v.get("date")),
                "kind": kind_label(v.get("kind"), v.get("session")),
                "dots": fmt_int(m.get("dot_count")),
                "density": fmt_num(m.get("dot_density_per_cm2"), 1),
                "show_through": fmt_pct(m.get("show_through")),
                "contrast": fmt_num(v.get("median_contrast_dL"), 1),
                "blue": fmt_num(v.get("median_blue_index"), 1),
                "faded": fmt_pct(m.get("faded_fraction")),
            }
        )
    return rows


def _link_rows(links: list[dict[str, Any]], visits: list[dict[str, Any]]) -> list[dict[str, str]]:
    names = {v.get("key"): f"{fmt_date(v.get('date'))}, {kind_label(v.get('kind'), v.get('session'))}" for v in visits}
    rows = []
    for lk in links:
        if not isinstance(lk, dict):
            continue
        ref = lk.get("reference")
        lf = as_number(lk.get("linked_fraction"))
        if not lk.get("ok"):
            state, quality = f"not aligned: {lk.get('error') or 'unknown reason'}", "poor"
        elif ref is None:
            state = lk.get("error") or "starts the tracks"
            quality = "none"
        else:
            quality = "good" if lf is not None and lf >= 0.5 else ("fair" if lf is not None and lf >= 0.3 else "poor")
            state = f"{quality}" + (f" ({lk['error']})" if lk.get("error") else "")
        rows.append(
            {
                "visit": names.get(lk.get("visit"), str(lk.get("visit") or MISSING)),
                "reference": names.get(ref, str(ref)) if ref else MISSING,
                "links": fmt_int(lk.get("n_links")) if ref else MISSING,
                "linked": fmt_pct(lf),
                "new": fmt_int(lk.get("new")),
                "lost": fmt_int(lk.get("lost")),
                "residual": fmt_num(lk.get("residual_mm_median"), 3),
                "state": state,
                "quality": quality,
            }
        )
    return rows


def _unaligned(links: list[dict[str, Any]], visits: list[dict[str, Any]]) -> str | None:
    """The sentence naming the visits whose photo could not be lined up (None when every one was)."""
    names = {
        v.get("key"): f"the {kind_label(v.get('kind'), v.get('session'))} of {fmt_date(v.get('date'))}" for v in visits
    }
    bad = [names.get(lk.get("visit"), str(lk.get("visit"))) for lk in links if not lk.get("ok")]
    if not bad:
        return None
    one = len(bad) == 1
    return (
        f"{join_words(bad)[0].upper()}{join_words(bad)[1:]} could not be lined up with the photo before "
        f"{'it' if one else 'them'}: {'its' if one else 'their'} own figures are in the table, "
        f"{'its' if one else 'their'} dots are not followed over time."
    )


def build_timeline_context(
    folder: str | Path, *, title: str | None = None, today: dt.date | None = None
) -> dict[str, Any]:
    doc = read_doc(folder, "timeline")
    path = Path(folder)
    visits = [v for v in doc.get("visits") or [] if isinstance(v, dict)]
    if not visits:
        raise ReportError(f"{path / 'track.json'}: no visits")
    fading = raw if isinstance(raw := doc.get("fading"), dict) else {}
    client, region = str(doc.get("client") or MISSING), str(doc.get("region") or path.name)
    interval = _interval(fading)
    plot_files = raw if isinstance(raw := doc.get("plots"), dict) else {}
    plots, notes = [], []
    known = {name for name, _, _ in PLOTS}
    extra = [(str(k), str(k).replace("_", " ").capitalize(), "") for k in plot_files if k not in known]
    for name, heading, caption in (*PLOTS, *extra):
        file = plot_files.get(name) or f"{name}.png"
        pic = picture_from_file(path / Path(str(file)).name, fmt="png")
        if pic is None:
            notes.append(f"The {heading.lower()} plot ({Path(str(file)).name}) is missing.")
        plots.append({"name": name, "heading": heading, "caption": caption.format(interval=interval), "picture": pic})
    forecast = forecast_sentence(fading, visits, today)
    hl = as_number(_get(fading, "half_life_days", "value"))
    summary = forecast
    if hl is not None:
        summary += f" The dots lose half their contrast in about {fmt_num(hl, 0)} days" + (
            f" ({fmt_num(hl / 365.25, 1)} years)." if hl >= 365 else "."
        )
    bt = _get(fading, "blue_trend")
    if _get(bt, "detected") and _get(bt, "found_by") == "minority":
        summary += f" {_turning(bt, 'are turning bluer')}."
    elif _get(bt, "detected"):
        summary += " The pigment is slowly turning bluer."
    sp = _get(fading, "spread")
    if _get(sp, "detected"):
        summary += (
            f" {_turning(sp, 'are growing')}."
            if _get(sp, "found_by") == "minority"
            else " The dots are slowly growing."
        )
    links = [lk for lk in doc.get("links") or [] if isinstance(lk, dict)]
    link_rows = _link_rows(links, visits)
    unaligned = _unaligned(links, visits)
    if unaligned:
        summary += f" {unaligned}"
    warnings = [str(w) for w in list(doc.get("warnings") or []) + list(fading.get("warnings") or []) if w]
    lims = [
        "The forecast extends the fading measured so far; sun exposure, skin care, healing or a change of "
        "camera or lighting between visits can move it.",
        f"Half-life, trends and the forecast come with {interval} ranges from resampling the dots; a range that "
        "reaches past the horizon means the data cannot rule out a much later date.",
        "Visits are compared through their close-up photos, each aligned to the latest session before it; a "
        "poorly aligned visit (few dots paired) weakens every estimate.",
    ]
    if any(r["quality"] == "poor" for r in link_rows):
        lims.append("At least one visit was poorly aligned (see the table below).")
    if unaligned:
        lims.append(
            f"A visit that could not be lined up is measured on its own (density, show-through, its dots' "
            f"contrast), not followed dot by dot; to follow its dots, "
            f"{retake_advice('its photo', 'the photo it is aligned to')}."
        )
    dates = [parse_date(v.get("date")) for v in visits]
    span = f"{fmt_date(dates[0])} \u2013 {fmt_date(dates[-1])}" if dates[0] and dates[-1] else MISSING
    tracks = raw if isinstance(raw := doc.get("tracks"), dict) else {}
    return {
        "kind": "timeline",
        "kicker": "SMP timeline",
        "title": title or f"SMP timeline: {client} / {region}",
        "meta": [
            ("Client", client),
            ("Region", region),
            ("Visits", f"{fmt_int(len(visits))} ({span})"),
            ("Dots followed", fmt_int(tracks.get("n_tracks", fading.get("n_dots")))),
        ],
        "summary": summary,
        "forecast": {
            "status": str(_get(fading, "forecast", "status") or "unknown"),
            "sentence": forecast,
            "threshold": fmt_num(_get(fading, "forecast", "threshold_dl"), 0),
        },
        "facts": _facts(fading),
        "plots": plots,
        "picture_notes": notes,
        "visits": _visit_rows(visits),
        "links": link_rows,
        "limits": lims,
        "warnings": list(dict.fromkeys(warnings)),
    }
