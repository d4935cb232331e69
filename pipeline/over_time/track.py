"""Dots followed across a client's visits: registration to the reference close-up, links, tracks.

Each visit's close-up is registered to its *reference*: the photo of the most
recent earlier visit that placed pigment (a session or a touch-up) and has dots.
Follow-ups therefore all link to the same last-session photo (errors do not
chain from one follow-up to the next), a session links to the session before it
(its new dots start tracks), and a touch-up links to the last session (the dots
it refreshed keep their tracks; the fading model decides which were refreshed).

A *track* is one physical dot: the dots of the first pigmented visit start one
track each; a dot of a later visit joins the track of the reference dot it is
linked to, or starts a new track (a new dot, or one that was not linked). Visits
that cannot be registered are reported and left out of the tracks, never linked
by guesswork.

Stage functions on arrays and tables (``pipeline.two_photos.register`` does the geometry);
the records and the command (``smp track``) live elsewhere.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from data.geometry import apply_homography
from pipeline.two_photos.link import gated_assignment, link_dots
from pipeline.two_photos.register import register_photos
from pipeline.two_photos.settings import RegisterSettings, RegistrationError, retake_advice

__all__ = ["VisitInput", "VisitLink", "Tracking", "link_visits", "PIGMENTING_KINDS", "OBS_COLUMNS"]

#: Visit kinds that put pigment into the skin (and so start or refresh dots).
PIGMENTING_KINDS = ("session", "touch-up")
#: Columns of the observations table (one row per dot per visit).
OBS_COLUMNS = ["track_id", "visit", "date", "day", "kind", "session", "dot_index", "x", "y",
               "contrast_dL", "L", "blue_index", "diameter_mm", "dE00", "blue_shift", "faded", "spread"]


@dataclass(frozen=True)
class VisitInput:
    """One visit's close-up as tracking needs it.

    ``dots``: the assessment's dot table (``dots.csv`` columns: at least ``x``, ``y``,
    ``contrast_dL``, ``blue_index``, ``diameter_mm``). ``image``: returns the HxWx3
    uint8 photo (called when the visit is registered; photos are not all held at
    once). ``roi``: returns the HxW bool map of scalp or hair (features and new/lost
    dots are restricted to it), or None.
    """

    key: str
    date: dt.date
    kind: str
    session: int
    dots: pd.DataFrame
    image: Callable[[], np.ndarray]
    px_per_mm: float | None
    roi: Callable[[], np.ndarray | None] = field(default=lambda: None)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VisitLink:
    """How one visit was linked to its reference (``reference`` None: the first pigmented visit)."""

    visit: str
    reference: str | None
    ok: bool
    method: str | None = None
    inliers: int | None = None
    n_dots: int = 0
    n_links: int = 0
    linked_fraction: float | None = None   # of the reference's dots that this photo can see
    new: int = 0
    lost: int = 0
    residual_mm_median: float | None = None
    residual_mm_p90: float | None = None
    seconds: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Tracking:
    """Result of :func:`link_visits`: the observations table and how each visit was linked."""

    observations: pd.DataFrame       # OBS_COLUMNS
    links: tuple[VisitLink, ...]
    pairs: tuple[tuple[str, str, np.ndarray, np.ndarray, np.ndarray], ...]  # (ref, visit, ref idx, idx, residual mm)
    warnings: tuple[str, ...]

    @property
    def n_tracks(self) -> int:
        return int(self.observations["track_id"].nunique()) if len(self.observations) else 0


def _reference(visits: Sequence[VisitInput], k: int, usable: set[int]) -> int | None:
    """Index of visit ``k``'s reference: the latest earlier pigmenting visit with dots."""
    for j in range(k - 1, -1, -1):
        if j in usable and visits[j].kind in PIGMENTING_KINDS:
            return j
    return None


def _scale_at(h: np.ndarray, xy: np.ndarray) -> float:
    """Linear scale of homography ``h`` near the centre of the points ``xy`` (sqrt |det J|)."""
    c = np.nanmedian(xy, axis=0) if len(xy) else np.zeros(2)
    d = 1.0
    p = apply_homography(h, np.array([c, c + [d, 0.0], c + [0.0, d]]))
    j = np.column_stack([p[1] - p[0], p[2] - p[0]]) / d
    return float(np.sqrt(abs(np.linalg.det(j))))


def link_visits(visits: Sequence[VisitInput], settings: RegisterSettings | None = None) -> Tracking:
    """Register every visit to its reference, link the dots and number the tracks.

    ``visits`` in date order (sorted here by date, then as given). Visits without
    dots (a baseline before any pigment) are kept in the links table with
    ``n_dots = 0`` and need no registration.
    """
    s = settings or RegisterSettings()
    order = sorted(range(len(visits)), key=lambda i: (visits[i].date, i))
    vs = [visits[i] for i in order]
    day0 = vs[0].date if vs else None
    track_of: dict[int, np.ndarray] = {}
    usable: set[int] = set()
    links: list[VisitLink] = []
    pairs: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]] = []
    warnings: list[str] = []
    next_id = 0
    images: dict[int, np.ndarray] = {}
    # the atlas: every track's position in the frame of the first pigmented photo, through the
    # chain of registrations; a dot its reference does not show (off its frame, under its card,
    # missed there) can still join the track it had in an earlier photo
    to_atlas: dict[int, np.ndarray] = {}
    atlas_xy = np.zeros((0, 2))

    def image(i: int) -> np.ndarray:
        if i not in images:
            images[i] = vs[i].image()
        return images[i]

    for k, v in enumerate(vs):
        n = len(v.dots)
        if n == 0:
            links.append(VisitLink(visit=v.key, reference=None, ok=True, n_dots=0))
            continue
        ref = _reference(vs, k, usable)
        if ref is None and v.kind not in PIGMENTING_KINDS:
            # nothing pigmented yet: what the detector finds here is not SMP of this treatment
            warnings.append(f"{v.key}: {n} dot(s) found before any session ({v.kind}) ignored")
            links.append(VisitLink(visit=v.key, reference=None, ok=True, n_dots=0,
                                   error=f"{n} dots before any session ignored"))
            continue
        if ref is None:
            track_of[k] = np.arange(next_id, next_id + n)
            next_id += n
            usable.add(k)
            if not to_atlas:
                to_atlas[k] = np.eye(3)
                atlas_xy = np.concatenate([atlas_xy, v.dots[["x", "y"]].to_numpy(float)])
            else:
                atlas_xy = np.concatenate([atlas_xy, np.full((n, 2), np.nan)])
            links.append(VisitLink(visit=v.key, reference=None, ok=True, n_dots=n, new=n))
            continue
        r = vs[ref]
        t0 = dt.datetime.now()
        try:
            roi_b, roi_a = r.roi(), v.roi()
            reg = register_photos(image(ref), image(k), s, before_dots_xy=r.dots[["x", "y"]].to_numpy(float),
                                  after_dots_xy=v.dots[["x", "y"]].to_numpy(float), px_per_mm=r.px_per_mm,
                                  before_mask=roi_b, after_mask=roi_a)
            dl = link_dots(r.dots[["x", "y"]].to_numpy(float), v.dots[["x", "y"]].to_numpy(float),
                           reg.after_to_before, s, px_per_mm=r.px_per_mm,
                           before_size=(image(ref).shape[1], image(ref).shape[0]),
                           after_size=(image(k).shape[1], image(k).shape[0]),
                           before_valid=roi_b, after_valid=roi_a)
        except RegistrationError as exc:
            advice = retake_advice("this visit's photo", f"the {r.key} photo")
            warnings.append(f"{v.key}: not registered to {r.key} ({exc}); its photo's own figures are kept, its "
                            f"dots are left out of the tracks; to follow them, {advice}")
            links.append(VisitLink(visit=v.key, reference=r.key, ok=False, n_dots=n, error=str(exc),
                                   seconds=(dt.datetime.now() - t0).total_seconds()))
            continue
        ids = np.full(n, -1, np.int64)
        ids[dl.after_idx] = track_of[ref][dl.before_idx]
        fresh = np.flatnonzero(ids < 0)
        ref_atlas = to_atlas.get(ref)
        if ref_atlas is not None:
            to_atlas[k] = ref_atlas @ reg.after_to_before
        if len(fresh) and ref_atlas is not None:
            in_atlas = apply_homography(ref_atlas, dl.after_in_before[fresh])
            free = np.setdiff1d(np.flatnonzero(np.isfinite(atlas_xy[:, 0])), ids[ids >= 0])
            gate = (dl.relink_gate_px or dl.gate_px) * _scale_at(ref_atlas, dl.after_in_before[fresh])
            if len(free):
                ai, fi, _ = gated_assignment(atlas_xy[free], in_atlas, gate)
                ids[fresh[fi]] = free[ai]
        fresh = ids < 0
        ids[fresh] = np.arange(next_id, next_id + int(fresh.sum()))
        next_id += int(fresh.sum())
        track_of[k] = ids
        usable.add(k)
        new_xy = np.full((int(fresh.sum()), 2), np.nan)
        if ref_atlas is not None:
            new_xy = apply_homography(ref_atlas, dl.after_in_before[fresh])
        atlas_xy = np.concatenate([atlas_xy, new_xy])
        res_mm = dl.residual_px / r.px_per_mm if r.px_per_mm else np.full(len(dl.residual_px), np.nan)
        visible = int(dl.before_in_view.sum())
        links.append(VisitLink(
            visit=v.key, reference=r.key, ok=True, method=reg.method, inliers=reg.n_inliers,
            n_dots=n, n_links=dl.n_links, linked_fraction=dl.n_links / visible if visible else None,
            new=len(dl.new_idx), lost=len(dl.lost_idx),
            residual_mm_median=float(np.median(res_mm)) if len(res_mm) and r.px_per_mm else None,
            residual_mm_p90=float(np.percentile(res_mm, 90)) if len(res_mm) and r.px_per_mm else None,
            seconds=(dt.datetime.now() - t0).total_seconds()))
        pairs.append((r.key, v.key, dl.before_idx, dl.after_idx, res_mm))
        # keep only the photos later visits may still need as their reference
        for j in list(images):
            if j != k and not (j in usable and vs[j].kind in PIGMENTING_KINDS):
                del images[j]

    rows = []
    for k, ids in track_of.items():
        v = vs[k]
        d = v.dots
        def col(name: str, default: float = np.nan, d: pd.DataFrame = d) -> np.ndarray:
            return d[name].to_numpy() if name in d else np.full(len(d), default)
        rows.append(pd.DataFrame({
            "track_id": ids, "visit": v.key, "date": v.date.isoformat(), "day": float((v.date - day0).days),
            "kind": v.kind, "session": v.session, "dot_index": np.arange(len(d)),
            "x": d["x"].to_numpy(float), "y": d["y"].to_numpy(float),
            "contrast_dL": col("contrast_dL"), "L": col("L"), "blue_index": col("blue_index"),
            "diameter_mm": col("diameter_mm"),
            "dE00": col("dE00"), "blue_shift": col("blue_shift", False), "faded": col("faded", False),
            "spread": col("spread", False)}))
    obs = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=OBS_COLUMNS)
    return Tracking(observations=obs[OBS_COLUMNS], links=tuple(links), pairs=tuple(pairs), warnings=tuple(warnings))
