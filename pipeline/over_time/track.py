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
from data.visits import PIGMENTING_KINDS
from pipeline.two_photos.link import DotLinks, gated_assignment, register_and_link
from pipeline.two_photos.register import Registration
from pipeline.two_photos.settings import RegisterSettings, RegistrationError, retake_advice

__all__ = ["VisitInput", "VisitLink", "Tracking", "link_visits", "PIGMENTING_KINDS", "OBS_COLUMNS"]

#: Columns of the observations table (one row per dot per visit).
OBS_COLUMNS = [
    "track_id",
    "visit",
    "date",
    "day",
    "kind",
    "session",
    "dot_index",
    "x",
    "y",
    "contrast_dL",
    "L",
    "blue_index",
    "diameter_mm",
    "dE00",
    "blue_shift",
    "faded",
    "spread",
]


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
    linked_fraction: float | None = None  # of the reference's dots that this photo can see
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

    observations: pd.DataFrame  # OBS_COLUMNS
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


@dataclass
class _Tracks:
    """The tracks built so far: each linked visit's track ids, and the atlas (every track's
    position in the frame of the first pigmented photo, through the chain of registrations): a dot
    its reference does not show (off its frame, under its card, missed there) can still join the
    track it had in an earlier photo."""

    track_of: dict[int, np.ndarray] = field(default_factory=dict)
    usable: set[int] = field(default_factory=set)
    next_id: int = 0
    to_atlas: dict[int, np.ndarray] = field(default_factory=dict)
    atlas_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    def new_ids(self, n: int) -> np.ndarray:
        ids = np.arange(self.next_id, self.next_id + n)
        self.next_id += n
        return ids

    def start(self, k: int, v: VisitInput) -> VisitLink:
        """The first pigmented visit (or one with no reference): every dot starts a track."""
        n = len(v.dots)
        self.track_of[k] = self.new_ids(n)
        self.usable.add(k)
        if not self.to_atlas:
            self.to_atlas[k] = np.eye(3)
            self.atlas_xy = np.concatenate([self.atlas_xy, v.dots[["x", "y"]].to_numpy(float)])
        else:
            self.atlas_xy = np.concatenate([self.atlas_xy, np.full((n, 2), np.nan)])
        return VisitLink(visit=v.key, reference=None, ok=True, n_dots=n, new=n)

    def join(self, k: int, ref: int, n: int, dl: DotLinks, after_to_ref: np.ndarray) -> None:
        """Visit ``k``'s dots join the tracks of the reference dots they are linked to; the others
        are looked up in the atlas, and what is left starts new tracks."""
        ids = np.full(n, -1, np.int64)
        ids[dl.after_idx] = self.track_of[ref][dl.before_idx]
        fresh = np.flatnonzero(ids < 0)
        ref_atlas = self.to_atlas.get(ref)
        if ref_atlas is not None:
            self.to_atlas[k] = ref_atlas @ after_to_ref
        if len(fresh) and ref_atlas is not None:
            in_atlas = apply_homography(ref_atlas, dl.after_in_before[fresh])
            free = np.setdiff1d(np.flatnonzero(np.isfinite(self.atlas_xy[:, 0])), ids[ids >= 0])
            gate = (dl.relink_gate_px or dl.gate_px) * _scale_at(ref_atlas, dl.after_in_before[fresh])
            if len(free):
                ai, fi, _ = gated_assignment(self.atlas_xy[free], in_atlas, gate)
                ids[fresh[fi]] = free[ai]
        fresh_mask = ids < 0
        ids[fresh_mask] = self.new_ids(int(fresh_mask.sum()))
        self.track_of[k] = ids
        self.usable.add(k)
        new_xy = np.full((int(fresh_mask.sum()), 2), np.nan)
        if ref_atlas is not None:
            new_xy = apply_homography(ref_atlas, dl.after_in_before[fresh_mask])
        self.atlas_xy = np.concatenate([self.atlas_xy, new_xy])


def _visit_link(v: VisitInput, r: VisitInput, reg: Registration, dl: DotLinks, seconds: float) -> VisitLink:
    """How visit ``v`` was linked to its reference ``r``, with the residuals in mm."""
    res_mm = _residual_mm(dl, r)
    visible = int(dl.before_in_view.sum())
    return VisitLink(
        visit=v.key,
        reference=r.key,
        ok=True,
        method=reg.method,
        inliers=reg.n_inliers,
        n_dots=len(v.dots),
        n_links=dl.n_links,
        linked_fraction=dl.n_links / visible if visible else None,
        new=len(dl.new_idx),
        lost=len(dl.lost_idx),
        residual_mm_median=float(np.median(res_mm)) if len(res_mm) and r.px_per_mm else None,
        residual_mm_p90=float(np.percentile(res_mm, 90)) if len(res_mm) and r.px_per_mm else None,
        seconds=seconds,
    )


def _residual_mm(dl: DotLinks, r: VisitInput) -> np.ndarray:
    return dl.residual_px / r.px_per_mm if r.px_per_mm else np.full(len(dl.residual_px), np.nan)


def _observations(vs: Sequence[VisitInput], track_of: dict[int, np.ndarray]) -> pd.DataFrame:
    """One row per dot per linked visit (OBS_COLUMNS)."""
    day0 = vs[0].date if vs else None
    rows = []
    for k, ids in track_of.items():
        v = vs[k]
        assert day0 is not None  # vs[k] exists, so vs is not empty
        d = v.dots

        def col(name: str, default: float = np.nan, d: pd.DataFrame = d) -> np.ndarray:
            return d[name].to_numpy() if name in d else np.full(len(d), default)

        rows.append(
            pd.DataFrame(
                {
                    "track_id": ids,
                    "visit": v.key,
                    "date": v.date.isoformat(),
                    "day": float((v.date - day0).days),
                    "kind": v.kind,
                    "session": v.session,
                    "dot_index": np.arange(len(d)),
                    "x": d["x"].to_numpy(float),
                    "y": d["y"].to_numpy(float),
                    "contrast_dL": col("contrast_dL"),
                    "L": col("L"),
                    "blue_index": col("blue_index"),
                    "diameter_mm": col("diameter_mm"),
                    "dE00": col("dE00"),
                    "blue_shift": col("blue_shift", False),
                    "faded": col("faded", False),
                    "spread": col("spread", False),
                }
            )
        )
    obs = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=OBS_COLUMNS)
    return obs[OBS_COLUMNS]


def link_visits(visits: Sequence[VisitInput], settings: RegisterSettings | None = None) -> Tracking:
    """Register every visit to its reference, link the dots and number the tracks.

    ``visits`` in date order (sorted here by date, then as given). Visits without
    dots (a baseline before any pigment) are kept in the links table with
    ``n_dots = 0`` and need no registration.
    """
    s = settings or RegisterSettings()
    order = sorted(range(len(visits)), key=lambda i: (visits[i].date, i))
    vs = [visits[i] for i in order]
    tracks = _Tracks()
    links: list[VisitLink] = []
    pairs: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]] = []
    warnings: list[str] = []
    images: dict[int, np.ndarray] = {}

    def image(i: int) -> np.ndarray:
        if i not in images:
            images[i] = vs[i].image()
        return images[i]

    for k, v in enumerate(vs):
        n = len(v.dots)
        if n == 0:
            links.append(VisitLink(visit=v.key, reference=None, ok=True, n_dots=0))
            continue
        ref = _reference(vs, k, tracks.usable)
        if ref is None and v.kind not in PIGMENTING_KINDS:
            # nothing pigmented yet: what the detector finds here is not SMP of this treatment
            warnings.append(f"{v.key}: {n} dot(s) found before any session ({v.kind}) ignored")
            links.append(
                VisitLink(visit=v.key, reference=None, ok=True, n_dots=0, error=f"{n} dots before any session ignored")
            )
            continue
        if ref is None:
            links.append(tracks.start(k, v))
            continue
        r = vs[ref]
        t0 = dt.datetime.now()
        try:
            reg, dl = register_and_link(
                image(ref),
                image(k),
                s,
                before_xy=r.dots[["x", "y"]].to_numpy(float),
                after_xy=v.dots[["x", "y"]].to_numpy(float),
                px_per_mm=r.px_per_mm,
                before_valid=r.roi(),
                after_valid=v.roi(),
            )
        except RegistrationError as exc:
            advice = retake_advice("this visit's photo", f"the {r.key} photo")
            warnings.append(
                f"{v.key}: not registered to {r.key} ({exc}); its photo's own figures are kept, its "
                f"dots are left out of the tracks; to follow them, {advice}"
            )
            links.append(
                VisitLink(
                    visit=v.key,
                    reference=r.key,
                    ok=False,
                    n_dots=n,
                    error=str(exc),
                    seconds=(dt.datetime.now() - t0).total_seconds(),
                )
            )
            continue
        assert dl is not None  # both photos' dots were given
        tracks.join(k, ref, n, dl, reg.after_to_before)
        links.append(_visit_link(v, r, reg, dl, (dt.datetime.now() - t0).total_seconds()))
        pairs.append((r.key, v.key, dl.before_idx, dl.after_idx, _residual_mm(dl, r)))
        # keep only the photos later visits may still need as their reference
        for j in list(images):
            if j != k and not (j in tracks.usable and vs[j].kind in PIGMENTING_KINDS):
                del images[j]

    return Tracking(
        observations=_observations(vs, tracks.track_of),
        links=tuple(links),
        pairs=tuple(pairs),
        warnings=tuple(warnings),
    )
