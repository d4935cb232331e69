"""Linking the dots of two registered photos (after :mod:`pipeline.two_photos.register`).

:func:`link_dots` pairs the dots: a gated optimal assignment after the
homography, then a smooth residual warp fitted on those links (skin stretches a
little between visits, the scalp is not exactly a plane) and a second
assignment with a tighter gate. The result names the linked pairs, the dots only
in AFTER (new) and only in BEFORE (lost) inside the area both photos see, and the
residual distances in pixels and millimetres.

Lengths of the linking gates are in units of the dots' own median nearest-neighbour
spacing, so the same settings work at any scale and without a calibration; the scale
(``px_per_mm`` of the BEFORE photo) is used only to report millimetres.

Coordinates follow ``data.metrics``: ``(x, y) = (column, row)``, pixel centres at integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.interpolate import RBFInterpolator
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from data.geometry import apply_homography, mean_linear_scale
from pipeline.two_photos.dot_pattern import dot_spacing
from pipeline.two_photos.register import Registration, register_photos
from pipeline.two_photos.settings import LinkSettings, RegisterSettings


def gated_assignment(
    before_xy: ArrayLike,
    after_xy: ArrayLike,
    gate: float,
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
    """Optimal one-to-one pairs of points closer than ``gate`` (same frame).

    Minimises the sum of squared distances of the pairs, where leaving a point unpaired
    costs ``gate**2``. Candidate pairs come from a KD-tree; the bipartite graph of
    candidates splits into connected groups, almost all a single pair, which are taken
    as they are; the few ambiguous groups (merged dots, a new dot beside an old one) are
    solved exactly with ``linear_sum_assignment`` on their small cost matrix padded with
    "unpaired" rows and columns. Returns ``(before_idx, after_idx, distance)`` sorted by
    ``before_idx``.
    """
    b = np.asarray(before_xy, np.float64).reshape(-1, 2)
    a = np.asarray(after_xy, np.float64).reshape(-1, 2)
    empty = (np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0))
    if len(b) == 0 or len(a) == 0 or not gate > 0:
        return empty
    finite = np.all(np.isfinite(a), axis=1)
    hits = cKDTree(a[finite]).query_ball_point(b, r=gate)
    lens = np.fromiter((len(x) for x in hits), np.intp, len(hits))
    if lens.sum() == 0:
        return empty
    rows = np.repeat(np.arange(len(b)), lens)
    cols = np.flatnonzero(finite)[np.concatenate([np.asarray(x, np.intp) for x in hits if len(x)])]
    d2 = np.sum((b[rows] - a[cols]) ** 2, axis=1)
    nb, na = len(b), len(a)
    graph = coo_matrix((np.ones(len(rows)), (rows, nb + cols)), shape=(nb + na, nb + na))
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[rows]
    per_comp = np.bincount(edge_comp, minlength=comp.max() + 1)
    single = per_comp[edge_comp] == 1
    out_b, out_a = [rows[single]], [cols[single]]
    multi = np.flatnonzero(~single)
    if len(multi):
        order = multi[np.argsort(edge_comp[multi], kind="stable")]
        groups = np.split(order, np.flatnonzero(np.diff(edge_comp[order])) + 1)
        g2 = gate * gate
        for g in groups:
            ub, rb = np.unique(rows[g], return_inverse=True)
            ua, ra = np.unique(cols[g], return_inverse=True)
            m, n = len(ub), len(ua)
            big = 1e6 * g2
            cost = np.full((m + n, n + m), big)
            cost[rb, ra] = d2[g]
            cost[np.arange(m), n + np.arange(m)] = g2  # BEFORE dot left unpaired
            cost[m + np.arange(n), np.arange(n)] = g2  # AFTER dot left unpaired
            cost[m:, n:] = 0.0
            r, c = linear_sum_assignment(cost)
            ok = (r < m) & (c < n) & (cost[r, c] < big)
            out_b.append(ub[r[ok]])
            out_a.append(ua[c[ok]])
    bi = np.concatenate(out_b).astype(np.intp)
    ai = np.concatenate(out_a).astype(np.intp)
    order = np.argsort(bi, kind="stable")
    bi, ai = bi[order], ai[order]
    return bi, ai, np.linalg.norm(b[bi] - a[ai], axis=1)


@dataclass(frozen=True, eq=False)
class DotLinks:
    """Dots of BEFORE and AFTER paired after registration.

    ``before_idx`` / ``after_idx``: the pairs (row indices into each photo's dots).
    ``residual_px``: distance of each pair after the homography and the smooth warp;
    ``homography_residual_px``: after the homography alone. ``after_in_before``: every
    AFTER dot mapped into the BEFORE frame (homography + warp). ``new_idx``: AFTER dots
    without a partner inside the area both photos see; ``lost_idx``: BEFORE dots likewise.
    ``before_in_view`` / ``after_in_view``: which dots lie inside the other photo's frame
    (away from its edge) - only those can be linked, new or lost. ``spacing_px``: the BEFORE
    dots' median nearest-neighbour spacing that scales the gates.
    """

    before_idx: NDArray[np.intp]
    after_idx: NDArray[np.intp]
    residual_px: NDArray[np.float64]
    homography_residual_px: NDArray[np.float64]
    after_in_before: NDArray[np.float64]
    new_idx: NDArray[np.intp]
    lost_idx: NDArray[np.intp]
    before_in_view: NDArray[np.bool_]
    after_in_view: NDArray[np.bool_]
    px_per_mm: float | None
    spacing_px: float | None
    gate_px: float
    relink_gate_px: float
    warp_links: int

    @property
    def n_links(self) -> int:
        return len(self.before_idx)

    @property
    def linked_fraction(self) -> float | None:
        """Linked BEFORE dots inside the AFTER photo's view / BEFORE dots inside it."""
        n = int(self.before_in_view.sum())
        return int(self.before_in_view[self.before_idx].sum()) / n if n else None

    def _stat(self, values: NDArray[np.float64], q: float, mm: bool) -> float | None:
        if not len(values):
            return None
        v = float(np.percentile(values, q))
        if mm:
            return v / self.px_per_mm if self.px_per_mm else None
        return v

    @property
    def residual_px_median(self) -> float | None:
        return self._stat(self.residual_px, 50, False)

    @property
    def residual_mm_median(self) -> float | None:
        return self._stat(self.residual_px, 50, True)

    @property
    def residual_mm_p90(self) -> float | None:
        return self._stat(self.residual_px, 90, True)

    def to_json(self) -> dict[str, Any]:
        def num(v: float | None, nd: int = 5) -> float | None:
            return None if v is None or not math.isfinite(v) else round(float(v), nd)

        return {
            "linked": self.n_links,
            "new": len(self.new_idx),
            "lost": len(self.lost_idx),
            "before_dots": len(self.before_in_view),
            "after_dots": len(self.after_in_view),
            "before_in_view": int(self.before_in_view.sum()),
            "after_in_view": int(self.after_in_view.sum()),
            "linked_fraction": num(self.linked_fraction, 4),
            "residual_px_median": num(self.residual_px_median, 3),
            "residual_px_p90": num(self._stat(self.residual_px, 90, False), 3),
            "residual_mm_median": num(self.residual_mm_median),
            "residual_mm_p90": num(self.residual_mm_p90),
            "homography_residual_mm_median": num(self._stat(self.homography_residual_px, 50, True)),
            "spacing_px": num(self.spacing_px, 3),
            "gate_px": num(self.gate_px, 3),
            "relink_gate_px": num(self.relink_gate_px, 3),
            "warp_links": self.warp_links,
        }


def _in_frame(xy: NDArray[np.float64], size: tuple[int, int], margin: float) -> NDArray[np.bool_]:
    w, h = size
    return (
        np.all(np.isfinite(xy), axis=1)
        & (xy[:, 0] >= margin - 0.5)
        & (xy[:, 0] <= w - 0.5 - margin)
        & (xy[:, 1] >= margin - 0.5)
        & (xy[:, 1] <= h - 0.5 - margin)
    )


def _in_view(
    xy: NDArray[np.float64], size: tuple[int, int], valid: np.ndarray | None, margin: float
) -> NDArray[np.bool_]:
    """Points inside the frame ``size`` and, when ``valid`` is given, on a valid pixel at least
    ``margin`` px from any invalid one."""
    inside = _in_frame(xy, size, margin)
    if valid is None or not inside.any():
        return inside
    # distance of every valid pixel to the nearest invalid one (L2, 5x5 mask)
    dist = cv2.distanceTransform(np.asarray(valid, np.uint8), cv2.DIST_L2, 5)
    ij = np.floor(xy[inside] + 0.5).astype(np.intp)
    ij[:, 0] = np.clip(ij[:, 0], 0, size[0] - 1)
    ij[:, 1] = np.clip(ij[:, 1], 0, size[1] - 1)
    inside[np.flatnonzero(inside)] = dist[ij[:, 1], ij[:, 0]] >= max(margin, 1.0)
    return inside


def _smooth_warp(
    src: NDArray[np.float64], dst: NDArray[np.float64], spacing: float, s: LinkSettings
) -> RBFInterpolator | None:
    """Gaussian-RBF field of the displacement ``dst - src`` (both in the BEFORE frame), fitted
    robustly: links whose displacement is far from the typical one are left out."""
    disp = dst - src
    dev = np.linalg.norm(disp - np.median(disp, axis=0), axis=1)
    keep = dev <= max(3.0 * 1.4826 * float(np.median(dev)), 0.02 * spacing)
    if keep.sum() < s.min_warp_links:
        return None
    length = s.warp_scale * spacing
    # Coordinates scaled by the warp length: the Gaussian kernel then has unit width.
    return RBFInterpolator(
        src[keep] / length,
        disp[keep],
        kernel="gaussian",
        epsilon=1.0,
        smoothing=s.warp_smoothing,
        neighbors=min(s.warp_neighbors, int(keep.sum())),
        degree=0,
    )


def link_dots(
    before_xy: ArrayLike,
    after_xy: ArrayLike,
    after_to_before: ArrayLike,
    settings: RegisterSettings | LinkSettings | None = None,
    *,
    px_per_mm: float | None,
    before_size: tuple[int, int] | None = None,
    after_size: tuple[int, int] | None = None,
    before_valid: np.ndarray | None = None,
    after_valid: np.ndarray | None = None,
) -> DotLinks:
    """Pair the dots of two registered photos (see the module docstring).

    ``before_xy`` ``(N, 2)`` and ``after_xy`` ``(M, 2)``: dot centres in each photo's pixels;
    ``after_to_before``: the registration's homography. ``px_per_mm``: BEFORE scale (mm
    figures are None without). ``before_size`` / ``after_size`` ``(width, height)``: the
    frames, so that dots the other photo cannot see are neither new nor lost (without
    them every unpaired dot counts). ``before_valid`` / ``after_valid``: optional HxW bool
    maps of where each photo shows scalp (the ROI: scalp or hair, not the card or the
    background); a dot that falls outside the other photo's map is not new or lost either.
    The sizes default to the maps' shapes.
    """
    s = settings.link if isinstance(settings, RegisterSettings) else (settings or LinkSettings())
    h = np.asarray(after_to_before, np.float64)
    b = np.asarray(before_xy, np.float64).reshape(-1, 2)
    a = np.asarray(after_xy, np.float64).reshape(-1, 2)
    a_h = apply_homography(h, a) if len(a) else np.zeros((0, 2))
    spacing = dot_spacing(b) or dot_spacing(a_h)
    gate = s.gate * spacing if spacing else 0.0

    if before_valid is not None:
        before_size = (before_valid.shape[1], before_valid.shape[0])
    if after_valid is not None:
        after_size = (after_valid.shape[1], after_valid.shape[0])
    before_in_view = np.ones(len(b), bool)
    after_in_view = np.ones(len(a), bool)
    if before_size is not None and after_size is not None and spacing:
        after_spacing = spacing / mean_linear_scale(h, after_size)
        b_in_after = apply_homography(np.linalg.inv(h), b)
        before_in_view = _in_view(b_in_after, after_size, after_valid, s.edge_margin * after_spacing)
        after_in_view = _in_view(a_h, before_size, before_valid, s.edge_margin * spacing)

    bi, ai, _ = gated_assignment(b, a_h, gate)
    a_w, relink_gate, warp_links = a_h, gate, 0
    if s.warp and len(bi) >= s.min_warp_links and spacing:
        field_ = _smooth_warp(a_h[ai], b[bi], spacing, s)
        if field_ is not None:
            warp_links = len(bi)
            a_w = a_h + field_(a_h / (s.warp_scale * spacing))
            res = np.linalg.norm(b[bi] - a_w[ai], axis=1)
            # the norm of a 2-D Gaussian residual has median 1.1774 sigma (Rayleigh)
            sigma = float(np.median(res)) / 1.1774
            relink_gate = float(np.clip(s.relink_sigmas * sigma, s.relink_min_gate * spacing, gate))
            bi, ai, _ = gated_assignment(b, a_w, relink_gate)

    linked_b = np.zeros(len(b), bool)
    linked_b[bi] = True
    linked_a = np.zeros(len(a), bool)
    linked_a[ai] = True
    return DotLinks(
        before_idx=bi,
        after_idx=ai,
        residual_px=np.linalg.norm(b[bi] - a_w[ai], axis=1),
        homography_residual_px=np.linalg.norm(b[bi] - a_h[ai], axis=1),
        after_in_before=a_w,
        new_idx=np.flatnonzero(~linked_a & after_in_view),
        lost_idx=np.flatnonzero(~linked_b & before_in_view),
        before_in_view=before_in_view,
        after_in_view=after_in_view,
        px_per_mm=px_per_mm,
        spacing_px=spacing,
        gate_px=float(gate),
        relink_gate_px=float(relink_gate),
        warp_links=warp_links,
    )


def register_and_link(
    before_rgb: np.ndarray,
    after_rgb: np.ndarray,
    settings: RegisterSettings,
    *,
    before_xy: np.ndarray | None = None,
    after_xy: np.ndarray | None = None,
    px_per_mm: float | None = None,
    before_valid: np.ndarray | None = None,
    after_valid: np.ndarray | None = None,
) -> tuple[Registration, DotLinks | None]:
    """AFTER registered to BEFORE (:func:`register_photos`: on the skin's features, refined on the dots
    when both photos' dots ``(N, 2)`` are given) and, with dots, the dots linked (:func:`link_dots`);
    without dots the links are None. ``*_valid``: where each photo shows scalp. Raises
    :class:`~pipeline.two_photos.settings.RegistrationError` when the photos cannot be lined up.
    The two-photo order written once: ``smp compare`` and visit tracking both call it."""
    reg = register_photos(
        before_rgb,
        after_rgb,
        settings,
        before_dots_xy=before_xy,
        after_dots_xy=after_xy,
        px_per_mm=px_per_mm,
        before_mask=before_valid,
        after_mask=after_valid,
    )
    if before_xy is None or after_xy is None:
        return reg, None
    links = link_dots(
        before_xy,
        after_xy,
        reg.after_to_before,
        settings,
        px_per_mm=px_per_mm,
        before_size=(before_rgb.shape[1], before_rgb.shape[0]),
        after_size=(after_rgb.shape[1], after_rgb.shape[0]),
        before_valid=before_valid,
        after_valid=after_valid,
    )
    return reg, links
