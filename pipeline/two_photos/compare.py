"""Comparing two assessed photos of one region: metric deltas, pictures, files.

Input: two assessed photos (:class:`AssessedPhoto`: a fresh
:class:`~pipeline.one_photo.assessment.Assessment`, or one read back from its output folder), the AFTER -> BEFORE
:class:`~pipeline.two_photos.register.Registration` (None when the photos could not be registered)
and, for close-ups, the :class:`~pipeline.two_photos.link.DotLinks`. Output: a
:class:`Comparison` (every numeric metric of both photos with its change, named
headline figures, warnings) and the files of ``smp compare`` (:func:`write_comparison`):
``comparison.json``, ``links.csv``, ``side_by_side.png`` and ``difference.png`` (the
two pictures only when the photos were registered). :func:`compare_photos` is the one
place that knows the order register -> link -> compare (``smp compare`` and the web app
call it).

One definition of added, lost and linked dots, used by every figure and sentence:
in the area both photos show (:class:`~pipeline.two_photos.link.DotLinks`), a linked dot is in
both, an added dot is in AFTER only, a lost dot in BEFORE only; so the dots of that
area are ``linked + lost`` before and ``linked + added`` after, and their change is
``added - lost``. Each photo's own dot count covers the area that photo frames, which
differs between visits: density per cm2 is the figure that compares them.

The pictures are drawn in the BEFORE photo's frame: AFTER is warped into it with the
registration's homography, so the same scalp sits at the same place in both panels.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import cv2
import numpy as np
import pandas as pd

from data.colour import luminance_lstar
from data.metrics import SCALP, viewing_lstar
from pipeline.one_photo.calibration import ColourCorrection
from pipeline.one_photo.loading import Photo
from pipeline.two_photos.dot_pattern import dot_spacing
from pipeline.two_photos.link import DotLinks, register_and_link
from pipeline.two_photos.register import Registration
from pipeline.two_photos.settings import RETAKE_ADVICE, ChangeSettings, RegisterSettings, RegistrationError

__all__ = ["SCHEMA", "AssessedPhoto", "Comparison", "change_noise", "compare_assessments", "compare_photos",
           "darkening_map", "render_side_by_side", "render_difference_overlay", "write_comparison", "LINK_COLUMNS",
           "MIN_DOTS_TO_LINK"]

SCHEMA = "smp-comparison/1"


class _Scale(Protocol):
    @property
    def source(self) -> str: ...


class _Calibration(Protocol):
    @property
    def px_per_mm(self) -> float | None: ...

    @property
    def scale(self) -> _Scale: ...

    @property
    def colour(self) -> ColourCorrection: ...


class _Metrics(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class AssessedPhoto(Protocol):
    """What a comparison reads of an assessed photo: the photo, its view, its calibration
    (scale and colour correction), its metrics, its dots and its label mask.

    :class:`pipeline.one_photo.assessment.Assessment` is one; the web app's
    :class:`pipeline.web.comparisons.StoredAssessment` (an assessment read back from its
    output folder, no second segmentation) is the other."""

    @property
    def photo(self) -> Photo: ...

    @property
    def view(self) -> str: ...

    @property
    def calibration(self) -> _Calibration: ...

    @property
    def metrics(self) -> _Metrics: ...

    @property
    def dots(self) -> pd.DataFrame: ...

    @property
    def labels(self) -> np.ndarray: ...

#: Columns of ``links.csv``: one row per linked pair, new dot and lost dot.
LINK_COLUMNS = ["status", "before_index", "after_index", "before_dot_id", "after_dot_id",
                "before_x", "before_y", "after_x", "after_y", "after_x_in_before", "after_y_in_before",
                "residual_px", "residual_mm", "before_contrast_dL", "after_contrast_dL", "contrast_dL_change",
                "before_diameter_mm", "after_diameter_mm", "before_blue_index", "after_blue_index"]

#: Display colours (RGB), distinguishable for the common colour-vision deficiencies.
LINKED_COLOUR = (235, 235, 235)
NEW_COLOUR = (40, 200, 90)
LOST_COLOUR = (230, 40, 40)
DARKER_COLOUR = np.array([40, 120, 255], np.float32)   # after darker: more pigment
LIGHTER_COLOUR = np.array([255, 160, 0], np.float32)   # after lighter: faded or less pigment

#: Fewer dots than this in either photo: the dots are not linked (nothing to pair reliably).
MIN_DOTS_TO_LINK = 10
# Thresholds of the "poor registration" warnings (a comparison is still written).
_MIN_OVERLAP_WARN = 0.6
_MIN_LINKED_WARN = 0.5
_MAX_RESIDUAL_MM_WARN = 0.1


def _num(v: Any, nd: int = 6) -> Any:
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    f = float(v)
    return round(f, nd) if math.isfinite(f) else None


def _delta(before: Any, after: Any) -> Any:
    if before is None or after is None or isinstance(before, bool) or isinstance(after, bool):
        return None
    return after - before


@dataclass(frozen=True, eq=False)
class Comparison:
    """BEFORE vs AFTER of one region.

    ``metrics``: every numeric metric of both assessments, ``{name: {before, after,
    delta}}`` with ``delta = after - before`` (each photo's metrics cover its own region
    of interest). ``headline``: the figures a clinic reads first (see
    :func:`compare_assessments`). ``warnings``: one line each. ``registration`` is None
    when the photos could not be registered (``registration_error`` says why): then only
    the metrics that need no alignment are compared.
    """

    before: AssessedPhoto
    after: AssessedPhoto
    registration: Registration | None
    links: DotLinks | None
    metrics: dict[str, dict[str, Any]]
    headline: dict[str, Any]
    warnings: tuple[str, ...]
    registration_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        def photo(a: AssessedPhoto) -> dict[str, Any]:
            return {"path": a.photo.path, "sha256": a.photo.sha256, "width": a.photo.width,
                    "height": a.photo.height, "view": a.view, "px_per_mm": _num(a.calibration.px_per_mm),
                    "scale_source": a.calibration.scale.source, "colour_source": a.calibration.colour.source,
                    "dot_count": int(len(a.dots))}

        return {
            "schema": SCHEMA,
            "before": photo(self.before),
            "after": photo(self.after),
            "registered": self.registration is not None,
            "registration": None if self.registration is None else self.registration.to_json(),
            "registration_error": self.registration_error,
            "links": None if self.links is None else self.links.to_json(),
            "headline": {k: _num(v) for k, v in self.headline.items()},
            "metrics": {k: {kk: _num(vv) for kk, vv in v.items()} for k, v in self.metrics.items()},
            "warnings": list(self.warnings),
        }

    def links_table(self) -> pd.DataFrame:
        """``links.csv``: linked pairs, then new (AFTER only) and lost (BEFORE only) dots."""
        return links_table(self.before.dots, self.after.dots, self.links)


def _take(df: pd.DataFrame, name: str, idx: np.ndarray) -> np.ndarray:
    """Column ``name`` of ``df`` at rows ``idx`` as float, NaN where ``idx`` is -1 or the column is absent."""
    out = np.full(len(idx), np.nan)
    ok = idx >= 0
    if name in df.columns and ok.any():
        out[ok] = df[name].to_numpy(float)[idx[ok]]
    return out


def links_table(before_dots: pd.DataFrame, after_dots: pd.DataFrame, links: DotLinks | None) -> pd.DataFrame:
    """One row per linked pair, new dot and lost dot (columns :data:`LINK_COLUMNS`); indices are
    rows of each photo's ``dots.csv``."""
    if links is None:
        return pd.DataFrame(columns=LINK_COLUMNS)
    nl, nn, nx = links.n_links, len(links.new_idx), len(links.lost_idx)
    none_b, none_a = np.full(nn, -1, np.intp), np.full(nx, -1, np.intp)
    bi = np.concatenate([links.before_idx, none_b, links.lost_idx])
    ai = np.concatenate([links.after_idx, links.new_idx, none_a])
    a_in_b = np.full((len(ai), 2), np.nan)
    a_in_b[ai >= 0] = links.after_in_before[ai[ai >= 0]]
    res = np.concatenate([links.residual_px, np.full(nn + nx, np.nan)])

    table = pd.DataFrame({
        "status": ["linked"] * nl + ["new"] * nn + ["lost"] * nx,
        "before_index": pd.array([int(i) if i >= 0 else None for i in bi], dtype="Int64"),
        "after_index": pd.array([int(i) if i >= 0 else None for i in ai], dtype="Int64"),
        "before_dot_id": pd.array([None if np.isnan(v) else int(v) for v in _take(before_dots, "dot_id", bi)],
                                  dtype="Int64"),
        "after_dot_id": pd.array([None if np.isnan(v) else int(v) for v in _take(after_dots, "dot_id", ai)],
                                 dtype="Int64"),
        "before_x": _take(before_dots, "x", bi), "before_y": _take(before_dots, "y", bi),
        "after_x": _take(after_dots, "x", ai), "after_y": _take(after_dots, "y", ai),
        "after_x_in_before": a_in_b[:, 0], "after_y_in_before": a_in_b[:, 1],
        "residual_px": res,
        "residual_mm": res / links.px_per_mm if links.px_per_mm else np.full(len(res), np.nan),
    })
    for name in ("contrast_dL", "diameter_mm", "blue_index"):
        table[f"before_{name}"] = _take(before_dots, name, bi)
        table[f"after_{name}"] = _take(after_dots, name, ai)
    table["contrast_dL_change"] = table["after_contrast_dL"] - table["before_contrast_dL"]
    return table[LINK_COLUMNS]


def change_noise(metrics: dict[str, dict[str, Any]], change: ChangeSettings) -> dict[str, float]:
    """The change each metric must exceed to be called better or worse, in its own units (show-through
    as a fraction, density per cm2 from the larger of the two photos' densities)."""
    out = {"show_through": change.show_through}
    dens = metrics.get("dot_density_per_cm2") or {}
    both = [v for v in (dens.get("before"), dens.get("after")) if v is not None]
    if both:
        out["dot_density_per_cm2"] = change.dot_density_relative * max(both)
    return out


def compare_assessments(before: AssessedPhoto, after: AssessedPhoto, registration: Registration | None,
                        links: DotLinks | None = None, *, registration_error: str | None = None,
                        change: ChangeSettings | None = None) -> Comparison:
    """Metric deltas and headline figures of AFTER against BEFORE.

    ``metrics[name]["noise"]``: the change the metric must exceed to be called better or worse
    (:func:`change_noise` from ``change``; None without it or for metrics it does not cover).

    Headline figures (None where undefined):

    * ``show_through_before`` / ``_after`` and ``show_through_reduction`` = before - after
      (a fraction: 0.12 means 12 percentage points less skin showing through);
    * in the area both photos show (from the links; None without links; module doc):
      ``dots_linked``, ``dots_added`` (AFTER only), ``dots_lost`` (BEFORE only),
      ``common_dots_before`` = linked + lost, ``common_dots_after`` = linked + added and
      ``common_dot_change`` = added - lost;
      ``dot_count_change``: AFTER count - BEFORE count over each photo's whole ROI (each
      photo frames its own area: not a change of the client's dots);
    * ``density_change_per_cm2``, ``scalp_fraction_change``;
    * ``linked_fraction``, ``residual_mm_median``: how well the dots were paired;
    * ``contrast_dL_change_median``: median change of the linked dots' contrast
      (negative = the dots faded); ``overlap_fraction``: share of the BEFORE photo the
      AFTER photo also shows.
    """
    mb, ma = before.metrics.to_dict(), after.metrics.to_dict()
    metrics = {k: {"before": mb[k], "after": ma.get(k), "delta": _delta(mb[k], ma.get(k))}
               for k in mb if (isinstance(mb[k], (int, float)) or mb[k] is None) and not isinstance(mb[k], bool)}
    noise = change_noise(metrics, change) if change is not None else {}
    for k, v in metrics.items():
        v["noise"] = noise.get(k)
    if registration is None:
        links = None
    st_b, st_a = mb.get("show_through"), ma.get("show_through")
    overlap = None if registration is None else registration.overlap_fraction()
    headline: dict[str, Any] = {
        "show_through_before": st_b, "show_through_after": st_a,
        "show_through_reduction": None if st_b is None or st_a is None else st_b - st_a,
        "dots_added": None, "dots_lost": None, "dots_linked": None,
        "common_dots_before": None, "common_dots_after": None, "common_dot_change": None,
        "dot_count_before": mb.get("dot_count"), "dot_count_after": ma.get("dot_count"),
        "dot_count_change": _delta(mb.get("dot_count"), ma.get("dot_count")),
        "density_change_per_cm2": _delta(mb.get("dot_density_per_cm2"), ma.get("dot_density_per_cm2")),
        "scalp_fraction_change": _delta(mb.get("scalp_fraction"), ma.get("scalp_fraction")),
        "linked_fraction": None, "residual_mm_median": None, "contrast_dL_change_median": None,
        "overlap_fraction": overlap,
    }
    warnings: list[str] = []
    for name, a in (("before", before), ("after", after)):
        if a.calibration.px_per_mm is None:
            warnings.append(f"the {name} photo has no scale (no card found, no --px-per-mm): "
                            "its mm and per-cm2 figures are null")
    if before.view != after.view:
        warnings.append(f"the photos are of different views ({before.view} before, {after.view} after): "
                        "their metrics are not comparable")
    if registration is None:
        warnings.append(f"the photos could not be registered ({registration_error or 'no reason given'}): "
                        "only figures that need no alignment are compared (show-through, density, dot size and "
                        f"spacing, flagged shares); dots were not paired; to compare dots, {RETAKE_ADVICE}")
    else:
        warnings += [f"registration: {w}" for w in registration.warnings]
    if overlap is not None and overlap < _MIN_OVERLAP_WARN:
        warnings.append(f"the photos share only {overlap:.0%} of the before photo: each photo's metrics "
                        "cover a different area")
    if links is not None:
        added, lost, linked = len(links.new_idx), len(links.lost_idx), links.n_links
        headline.update(dots_added=added, dots_lost=lost, dots_linked=linked,
                        common_dots_before=linked + lost, common_dots_after=linked + added,
                        common_dot_change=added - lost,
                        linked_fraction=links.linked_fraction, residual_mm_median=links.residual_mm_median)
        if links.n_links:
            cb = _take(before.dots, "contrast_dL", links.before_idx)
            ca = _take(after.dots, "contrast_dL", links.after_idx)
            dl_change = (ca - cb)[np.isfinite(ca - cb)]
            headline["contrast_dL_change_median"] = float(np.median(dl_change)) if len(dl_change) else None
        lf = links.linked_fraction
        if lf is not None and lf < _MIN_LINKED_WARN:
            warnings.append(f"poor dot linking: only {lf:.0%} of the before dots in view were linked "
                            "(registration or dot detection may be off)")
        res = links.residual_mm_median
        if res is not None and res > _MAX_RESIDUAL_MM_WARN:
            warnings.append(f"poor registration: linked dots are {res:.2f} mm apart (median)")
    elif registration is not None and before.view == "closeup" and after.view == "closeup":
        warnings.append("dots not linked: one of the photos has too few dots")
    return Comparison(before=before, after=after, registration=registration, links=links, metrics=metrics,
                      headline=headline, warnings=tuple(dict.fromkeys(warnings)),
                      registration_error=registration_error if registration is None else None)


def compare_photos(before: AssessedPhoto, after: AssessedPhoto, settings: RegisterSettings) -> Comparison:
    """Register AFTER to BEFORE, link their dots and compare: the one place that knows the order.

    The photos' features are matched first; for two close-ups with at least
    :data:`MIN_DOTS_TO_LINK` dots each, the dot pattern refines the registration and the dots
    are linked. When the photos cannot be registered the comparison is still made, without
    registration: the metrics that need no alignment, a warning that says why and how to retake.
    """
    def dots_xy(a: AssessedPhoto) -> np.ndarray:
        return a.dots[["x", "y"]].to_numpy(float)

    use_dots = (before.view == "closeup" and after.view == "closeup"
                and min(len(before.dots), len(after.dots)) >= MIN_DOTS_TO_LINK)
    try:
        reg, links = register_and_link(before.photo.rgb, after.photo.rgb, settings,
                                       before_xy=dots_xy(before) if use_dots else None,
                                       after_xy=dots_xy(after) if use_dots else None,
                                       px_per_mm=before.calibration.px_per_mm,
                                       before_valid=before.labels > 0, after_valid=after.labels > 0)
    except RegistrationError as exc:
        return compare_assessments(before, after, None, registration_error=str(exc), change=settings.change)
    return compare_assessments(before, after, reg, links, change=settings.change)


# --------------------------------------------------------------------------- luminance change


def _smooth_over(values: np.ndarray, weight: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian mean of ``values`` over the pixels where ``weight`` is 1 (normalised
    convolution), on a copy reduced so that sigma spans ~3 px; NaN far from any such pixel."""
    h, w = values.shape
    k = max(1, int(sigma_px / 3))
    size = (max(1, w // k), max(1, h // k))
    num = cv2.resize(np.where(weight > 0, values, 0).astype(np.float32), size, interpolation=cv2.INTER_AREA)
    den = cv2.resize(weight.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    sig = max(0.5, sigma_px / k)
    num = cv2.GaussianBlur(num, (0, 0), sig)
    den = cv2.GaussianBlur(den, (0, 0), sig)
    out = np.where(den > 1e-3, num / np.maximum(den, 1e-6), np.nan).astype(np.float32)
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)


def _relative_darkness(lstar: np.ndarray, labels: np.ndarray, dot_xy: np.ndarray, dot_radius_px: np.ndarray,
                       px_per_mm: float, viewing_sigma_mm: float) -> np.ndarray:
    """How much darker than its own bare skin each ROI pixel looks at viewing scale (L* units, NaN
    outside the ROI).

    The skin level is the local mean L* of scalp pixels away from the dots (sigma 2 mm), so
    exposure, white balance and light gradients - which differ between visits - cancel;
    the pixel's own L* is the viewing-scale mean over the ROI that ``show_through`` uses
    (:func:`data.metrics.viewing_lstar`), so the card or the background do not bleed in.
    """
    bare = (labels == SCALP).astype(np.uint8)
    for (x, y), r in zip(np.round(dot_xy).astype(int), np.ceil(1.5 * dot_radius_px + 1).astype(int)):
        cv2.circle(bare, (int(x), int(y)), int(r), 0, -1)
    skin = _smooth_over(lstar, bare, 2.0 * px_per_mm)
    view = viewing_lstar(lstar, labels > 0, viewing_sigma_mm * px_per_mm)
    return skin - view


def darkening_map(before: AssessedPhoto, after: AssessedPhoto, registration: Registration, *,
                  viewing_sigma_mm: float = 0.5) -> np.ndarray:
    """HxW float32 in BEFORE's frame: how much darker AFTER looks than BEFORE, relative to each
    photo's own bare skin, at viewing scale (L* units; positive = more pigment or less skin
    showing; NaN where either photo does not show scalp). A well-treated area darkens by
    2-6 L* at the default 0.5 mm (configs/flags.yaml)."""
    maps = []
    for a in (before, after):
        lin = np.asarray(a.calibration.colour.apply(a.photo.rgb), np.float32)
        lstar = luminance_lstar(np.maximum(lin, np.float32(0))).astype(np.float32, copy=False)
        del lin
        dots = a.dots
        xy = dots[["x", "y"]].to_numpy(float) if len(dots) else np.zeros((0, 2))
        rad = (0.5 * dots["diameter_px"].to_numpy(float) if "diameter_px" in dots.columns and len(dots)
               else np.full(len(xy), 2.0))
        a_ppm = a.calibration.px_per_mm or _assumed_px_per_mm(a)
        maps.append((_relative_darkness(lstar, a.labels, xy, np.nan_to_num(rad, nan=2.0), a_ppm, viewing_sigma_mm),
                     a.labels > 0))
    (d_b, roi_b), (d_a, roi_a) = maps
    d_a_w = registration.warp_after(np.nan_to_num(d_a, nan=0.0).astype(np.float32))
    valid_a = registration.warp_after((roi_a & np.isfinite(d_a)).astype(np.uint8), interpolation=cv2.INTER_NEAREST)
    out = d_a_w - d_b
    out[~(roi_b & np.isfinite(d_b) & (valid_a > 0))] = np.nan
    return out


def _assumed_px_per_mm(a: AssessedPhoto) -> float:
    """Without a scale: a close-up scale guessed from the dot spacing (~1 mm), else 20 px/mm."""
    if len(a.dots) >= 10:
        s = dot_spacing(a.dots[["x", "y"]].to_numpy(float))
        if s:
            return float(np.clip(s, 4.0, 40.0))
    return 20.0


# --------------------------------------------------------------------------- pictures


def _display(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A new, writable copy of ``img`` no larger than ``max_side``, and its scale factor."""
    h, w = img.shape[:2]
    f = min(1.0, max_side / max(h, w))
    if f < 1.0:
        return cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA), f
    return np.array(img, copy=True, order="C"), f


def _label(img: np.ndarray, text: str, org: tuple[int, int], unit: float, colour=(255, 255, 255)) -> None:
    scale, th = 0.6 * unit, max(1, int(round(1.2 * unit)))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), th + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, th, cv2.LINE_AA)


def _bar_length_mm(px_per_mm: float, width: int) -> float:
    """A round length whose bar is at least 8 % of the width."""
    return next((mm for mm in (0.5, 1, 2, 5, 10, 20, 50, 100) if mm * px_per_mm >= 0.08 * width), 200.0)


def _draw_scale_bar(img: np.ndarray, px_per_mm: float, unit: float) -> None:
    h, w = img.shape[:2]
    mm = _bar_length_mm(px_per_mm, w)
    x1, y = w - int(16 * unit), h - int(16 * unit)
    x0 = x1 - int(round(mm * px_per_mm))
    t = max(3, int(4 * unit))
    cv2.rectangle(img, (x0 - 2, y - t - 2), (x1 + 2, y + 2), (0, 0, 0), -1)
    cv2.rectangle(img, (x0, y - t), (x1, y), (255, 255, 255), -1)
    _label(img, f"{mm:g} mm", (x0, y - t - int(6 * unit)), unit)


def _legend(img: np.ndarray, rows: list[tuple[str, tuple[int, int, int] | None]], unit: float) -> None:
    """Dark box top-left; each row a colour swatch (or none) and its text."""
    line = int(24 * unit)
    box_w = int(max(len(t) for t, _ in rows) * 11 * unit + 44 * unit)
    x0 = y0 = int(8 * unit)
    sub = img[y0:y0 + line * len(rows) + int(10 * unit), x0:x0 + box_w]
    sub[:] = (sub * 0.3).astype(np.uint8)
    y = y0 + line
    for text, colour in rows:
        if colour is not None:
            cv2.circle(img, (x0 + int(14 * unit), y - int(8 * unit)), int(6 * unit), colour, -1, cv2.LINE_AA)
        _label(img, text, (x0 + int(28 * unit), y - int(2 * unit)), unit)
        y += line


def render_side_by_side(before_rgb: np.ndarray, after_rgb_warped: np.ndarray, *, after_valid: np.ndarray | None = None,
                        px_per_mm: float | None = None, labels: tuple[str, str] = ("before", "after"),
                        max_width: int = 3200) -> np.ndarray:
    """BEFORE and AFTER (already warped into BEFORE's frame) next to each other, same scale.

    Outside ``after_valid`` (where the AFTER photo shows nothing) the right panel is dark
    grey. Each panel has its label and, with ``px_per_mm`` (BEFORE's scale, which both
    panels now share), a scale bar. The result is at most ``max_width`` pixels wide.
    """
    if before_rgb.shape != after_rgb_warped.shape:
        raise ValueError(f"the panels differ in shape: {before_rgb.shape} vs {after_rgb_warped.shape}")
    right = after_rgb_warped.copy()
    if after_valid is not None:
        right[~after_valid] = 40
    h, w = before_rgb.shape[:2]
    gap = max(4, w // 200)
    f = min(1.0, max_width / (2 * w + gap))
    panels = []
    for img, text in ((before_rgb, labels[0]), (right, labels[1])):
        p, _ = _display(img, max(1, round(max(h, w) * f)))
        unit = max(0.6, min(p.shape[:2]) / 700.0)
        _label(p, text, (int(12 * unit), int(30 * unit)), unit * 1.4)
        if px_per_mm:
            _draw_scale_bar(p, px_per_mm * f, unit)
        panels.append(p)
    spacer = np.full((panels[0].shape[0], max(2, round(gap * f)), 3), 255, np.uint8)
    return np.hstack([panels[0], spacer, panels[1]])


def render_difference_overlay(before_rgb: np.ndarray, *, darkening: np.ndarray | None = None,
                              before_xy: np.ndarray | None = None, after_xy_in_before: np.ndarray | None = None,
                              links: DotLinks | None = None, px_per_mm: float | None = None,
                              dl_floor: float = 0.75, dl_full_scale: float = 5.0, max_side: int = 2400,
                              title: str = "") -> np.ndarray:
    """What changed, drawn on the BEFORE photo (dimmed).

    ``darkening`` (BEFORE frame, see :func:`darkening_map`) tints where AFTER looks darker
    (blue: more pigment) or lighter (orange: faded, less pigment), fully at
    ``dl_full_scale`` L* units and not at all below ``dl_floor`` (at viewing scale a
    treated area darkens by 2-6 L*; below ~0.75 is noise). Dots (with ``links``): linked
    BEFORE dots as small light rings, new dots (AFTER only, at their registered place)
    green, lost dots (BEFORE only) red. A legend and, with ``px_per_mm``, a scale bar.
    """
    img, f = _display(before_rgb, max_side)
    out = img.astype(np.float32) * 0.55
    if darkening is not None:
        d, _ = _display(np.nan_to_num(darkening, nan=0.0).astype(np.float32), max_side)
        strength = np.clip((np.abs(d) - dl_floor) / max(dl_full_scale - dl_floor, 1e-6), 0.0, 1.0)[..., None] * 0.75
        colour = np.where(d[..., None] > 0, DARKER_COLOUR, LIGHTER_COLOUR)
        out = out * (1 - strength) + colour * strength
    out = np.clip(out, 0, 255).astype(np.uint8)
    h, w = out.shape[:2]
    unit = max(0.6, min(h, w) / 700.0)
    rows: list[tuple[str, tuple[int, int, int] | None]] = [(title, None)] if title else []
    if links is not None and before_xy is not None and after_xy_in_before is not None:
        r = max(3, int(round(0.25 * (links.spacing_px or 12.0) * f)))
        th = max(1, int(round(unit * 1.2)))

        def rings(xy: np.ndarray, colour: tuple[int, int, int], radius: int, width: int) -> None:
            for x, y in np.round(np.asarray(xy, float).reshape(-1, 2) * f * 16).astype(np.int64):
                cv2.circle(out, (int(x), int(y)), radius * 16, colour, width, cv2.LINE_AA, 4)

        rings(before_xy[links.before_idx], LINKED_COLOUR, max(2, r - 1), 1)
        rings(before_xy[links.lost_idx], LOST_COLOUR, r, th + 1)
        rings(after_xy_in_before[links.new_idx], NEW_COLOUR, r, th + 1)
        rows += [(f"linked: {links.n_links}", LINKED_COLOUR), (f"new (after only): {len(links.new_idx)}", NEW_COLOUR),
                 (f"lost (before only): {len(links.lost_idx)}", LOST_COLOUR)]
    if darkening is not None:
        # the colours have three channels
        rows += [("after darker (more pigment)", cast("tuple[int, int, int]", tuple(int(v) for v in DARKER_COLOUR))),
                 ("after lighter (faded)", cast("tuple[int, int, int]", tuple(int(v) for v in LIGHTER_COLOUR)))]
    if rows:
        _legend(out, rows, unit)
    if px_per_mm:
        _draw_scale_bar(out, px_per_mm * f, unit)
    return out


# --------------------------------------------------------------------------- files


def write_comparison(comparison: Comparison, out_dir: str | Path) -> Path:
    """Write ``links.csv``, ``side_by_side.png``, ``difference.png`` (the pictures only when the
    photos were registered) and (last, so its presence means done) ``comparison.json`` into
    ``out_dir``; each file goes to a temporary name first and is renamed, so the folder never
    holds a half-written file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c = comparison

    def put(name: str, data: bytes) -> None:
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(out / name)

    def png(rgb: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:  # pragma: no cover - OpenCV fails only on impossible shapes
            raise ValueError("cannot encode PNG")
        return buf.tobytes()

    put("links.csv", c.links_table().to_csv(index=False, float_format="%.4f").encode())
    reg = c.registration
    if reg is None:
        put("comparison.json", json.dumps(c.to_json(), indent=1).encode())
        return out
    ppm = c.before.calibration.px_per_mm
    warped = reg.warp_after(c.after.photo.rgb)
    put("side_by_side.png", png(render_side_by_side(c.before.photo.rgb, warped, after_valid=reg.after_footprint(),
                                                    px_per_mm=ppm)))
    del warped
    before_xy = c.before.dots[["x", "y"]].to_numpy(float) if len(c.before.dots) else np.zeros((0, 2))
    after_xy = c.links.after_in_before if c.links is not None else None
    st = c.headline.get("show_through_reduction")
    title = "" if st is None else f"show-through {c.headline['show_through_before']:.1%} -> " \
                                  f"{c.headline['show_through_after']:.1%}"
    darkening = darkening_map(c.before, c.after, reg)
    put("difference.png", png(render_difference_overlay(c.before.photo.rgb, darkening=darkening, before_xy=before_xy,
                                                        after_xy_in_before=after_xy, links=c.links, px_per_mm=ppm,
                                                        title=title)))
    put("comparison.json", json.dumps(c.to_json(), indent=1).encode())
    return out
