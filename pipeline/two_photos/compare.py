"""Comparing two assessed photos of one region: metric deltas, pictures, files.

Input: two assessed photos (:class:`~pipeline.two_photos.assessed.AssessedPhoto`: a fresh
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
from typing import Any

import cv2
import numpy as np
import pandas as pd

from pipeline.two_photos.assessed import AssessedPhoto
from pipeline.two_photos.link import DotLinks, register_and_link
from pipeline.two_photos.pictures import darkening_map, render_difference_overlay, render_side_by_side
from pipeline.two_photos.register import Registration
from pipeline.two_photos.settings import RETAKE_ADVICE, ChangeSettings, RegisterSettings, RegistrationError

__all__ = [
    "SCHEMA",
    "Comparison",
    "change_noise",
    "compare_assessments",
    "compare_photos",
    "write_comparison",
    "LINK_COLUMNS",
    "MIN_DOTS_TO_LINK",
]

SCHEMA = "smp-comparison/1"


LINK_COLUMNS = [
    "status",
    "before_index",
    "after_index",
    "before_dot_id",
    "after_dot_id",
    "before_x",
    "before_y",
    "after_x",
    "after_y",
    "after_x_in_before",
    "after_y_in_before",
    "residual_px",
    "residual_mm",
    "before_contrast_dL",
    "after_contrast_dL",
    "contrast_dL_change",
    "before_diameter_mm",
    "after_diameter_mm",
    "before_blue_index",
    "after_blue_index",
]

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
            return {
                "path": a.photo.path,
                "sha256": a.photo.sha256,
                "width": a.photo.width,
                "height": a.photo.height,
                "view": a.view,
                "px_per_mm": _num(a.calibration.px_per_mm),
                "scale_source": a.calibration.scale.source,
                "colour_source": a.calibration.colour.source,
                "dot_count": int(len(a.dots)),
            }

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

    table = pd.DataFrame(
        {
            "status": ["linked"] * nl + ["new"] * nn + ["lost"] * nx,
            "before_index": pd.array([int(i) if i >= 0 else None for i in bi], dtype="Int64"),
            "after_index": pd.array([int(i) if i >= 0 else None for i in ai], dtype="Int64"),
            "before_dot_id": pd.array(
                [None if np.isnan(v) else int(v) for v in _take(before_dots, "dot_id", bi)], dtype="Int64"
            ),
            "after_dot_id": pd.array(
                [None if np.isnan(v) else int(v) for v in _take(after_dots, "dot_id", ai)], dtype="Int64"
            ),
            "before_x": _take(before_dots, "x", bi),
            "before_y": _take(before_dots, "y", bi),
            "after_x": _take(after_dots, "x", ai),
            "after_y": _take(after_dots, "y", ai),
            "after_x_in_before": a_in_b[:, 0],
            "after_y_in_before": a_in_b[:, 1],
            "residual_px": res,
            "residual_mm": res / links.px_per_mm if links.px_per_mm else np.full(len(res), np.nan),
        }
    )
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


def compare_assessments(
    before: AssessedPhoto,
    after: AssessedPhoto,
    registration: Registration | None,
    links: DotLinks | None = None,
    *,
    registration_error: str | None = None,
    change: ChangeSettings | None = None,
) -> Comparison:
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
    metrics = {
        k: {"before": mb[k], "after": ma.get(k), "delta": _delta(mb[k], ma.get(k))}
        for k in mb
        if (isinstance(mb[k], (int, float)) or mb[k] is None) and not isinstance(mb[k], bool)
    }
    noise = change_noise(metrics, change) if change is not None else {}
    for k, v in metrics.items():
        v["noise"] = noise.get(k)
    if registration is None:
        links = None
    st_b, st_a = mb.get("show_through"), ma.get("show_through")
    overlap = None if registration is None else registration.overlap_fraction()
    headline: dict[str, Any] = {
        "show_through_before": st_b,
        "show_through_after": st_a,
        "show_through_reduction": None if st_b is None or st_a is None else st_b - st_a,
        "dots_added": None,
        "dots_lost": None,
        "dots_linked": None,
        "common_dots_before": None,
        "common_dots_after": None,
        "common_dot_change": None,
        "dot_count_before": mb.get("dot_count"),
        "dot_count_after": ma.get("dot_count"),
        "dot_count_change": _delta(mb.get("dot_count"), ma.get("dot_count")),
        "density_change_per_cm2": _delta(mb.get("dot_density_per_cm2"), ma.get("dot_density_per_cm2")),
        "scalp_fraction_change": _delta(mb.get("scalp_fraction"), ma.get("scalp_fraction")),
        "linked_fraction": None,
        "residual_mm_median": None,
        "contrast_dL_change_median": None,
        "overlap_fraction": overlap,
    }
    warnings: list[str] = []
    for name, a in (("before", before), ("after", after)):
        if a.calibration.px_per_mm is None:
            warnings.append(
                f"the {name} photo has no scale (no card found, no --px-per-mm): its mm and per-cm2 figures are null"
            )
    if before.view != after.view:
        warnings.append(
            f"the photos are of different views ({before.view} before, {after.view} after): "
            "their metrics are not comparable"
        )
    if registration is None:
        warnings.append(
            f"the photos could not be registered ({registration_error or 'no reason given'}): "
            "only figures that need no alignment are compared (show-through, density, dot size and "
            f"spacing, flagged shares); dots were not paired; to compare dots, {RETAKE_ADVICE}"
        )
    else:
        warnings += [f"registration: {w}" for w in registration.warnings]
    if overlap is not None and overlap < _MIN_OVERLAP_WARN:
        warnings.append(
            f"the photos share only {overlap:.0%} of the before photo: each photo's metrics cover a different area"
        )
    if links is not None:
        added, lost, linked = len(links.new_idx), len(links.lost_idx), links.n_links
        headline.update(
            dots_added=added,
            dots_lost=lost,
            dots_linked=linked,
            common_dots_before=linked + lost,
            common_dots_after=linked + added,
            common_dot_change=added - lost,
            linked_fraction=links.linked_fraction,
            residual_mm_median=links.residual_mm_median,
        )
        if links.n_links:
            cb = _take(before.dots, "contrast_dL", links.before_idx)
            ca = _take(after.dots, "contrast_dL", links.after_idx)
            dl_change = (ca - cb)[np.isfinite(ca - cb)]
            headline["contrast_dL_change_median"] = float(np.median(dl_change)) if len(dl_change) else None
        lf = links.linked_fraction
        if lf is not None and lf < _MIN_LINKED_WARN:
            warnings.append(
                f"poor dot linking: only {lf:.0%} of the before dots in view were linked "
                "(registration or dot detection may be off)"
            )
        res = links.residual_mm_median
        if res is not None and res > _MAX_RESIDUAL_MM_WARN:
            warnings.append(f"poor registration: linked dots are {res:.2f} mm apart (median)")
    elif registration is not None and before.view == "closeup" and after.view == "closeup":
        warnings.append("dots not linked: one of the photos has too few dots")
    return Comparison(
        before=before,
        after=after,
        registration=registration,
        links=links,
        metrics=metrics,
        headline=headline,
        warnings=tuple(dict.fromkeys(warnings)),
        registration_error=registration_error if registration is None else None,
    )


def compare_photos(before: AssessedPhoto, after: AssessedPhoto, settings: RegisterSettings) -> Comparison:
    """Register AFTER to BEFORE, link their dots and compare: the one place that knows the order.

    The photos' features are matched first; for two close-ups with at least
    :data:`MIN_DOTS_TO_LINK` dots each, the dot pattern refines the registration and the dots
    are linked. When the photos cannot be registered the comparison is still made, without
    registration: the metrics that need no alignment, a warning that says why and how to retake.
    """

    def dots_xy(a: AssessedPhoto) -> np.ndarray:
        return a.dots[["x", "y"]].to_numpy(float)

    use_dots = (
        before.view == "closeup"
        and after.view == "closeup"
        and min(len(before.dots), len(after.dots)) >= MIN_DOTS_TO_LINK
    )
    try:
        reg, links = register_and_link(
            before.photo.rgb,
            after.photo.rgb,
            settings,
            before_xy=dots_xy(before) if use_dots else None,
            after_xy=dots_xy(after) if use_dots else None,
            px_per_mm=before.calibration.px_per_mm,
            before_valid=before.labels > 0,
            after_valid=after.labels > 0,
        )
    except RegistrationError as exc:
        return compare_assessments(before, after, None, registration_error=str(exc), change=settings.change)
    return compare_assessments(before, after, reg, links, change=settings.change)


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
    put(
        "side_by_side.png",
        png(render_side_by_side(c.before.photo.rgb, warped, after_valid=reg.after_footprint(), px_per_mm=ppm)),
    )
    del warped
    before_xy = c.before.dots[["x", "y"]].to_numpy(float) if len(c.before.dots) else np.zeros((0, 2))
    after_xy = c.links.after_in_before if c.links is not None else None
    st = c.headline.get("show_through_reduction")
    title = (
        ""
        if st is None
        else f"show-through {c.headline['show_through_before']:.1%} -> {c.headline['show_through_after']:.1%}"
    )
    darkening = darkening_map(c.before, c.after, reg)
    put(
        "difference.png",
        png(
            render_difference_overlay(
                c.before.photo.rgb,
                darkening=darkening,
                before_xy=before_xy,
                after_xy_in_before=after_xy,
                links=c.links,
                px_per_mm=ppm,
                title=title,
            )
        ),
    )
    put("comparison.json", json.dumps(c.to_json(), indent=1).encode())
    return out
