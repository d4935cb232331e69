"""The dot pattern as a landmark: refining a registration on the dots both photos show
(:func:`refine_on_dots`) and finding it from the dots alone when the skin's features fail
(:func:`match_dot_patterns`: triangles of neighbouring dots voting, as star fields are matched).

A fit counts only when most dot pairs agree to a tenth of the dot spacing (:class:`DotFit`),
which chance pairings never do: a wrong registration is refused, not reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from data.geometry import apply_homography
from pipeline.two_photos.settings import RegisterSettings


def dot_spacing(xy: ArrayLike) -> float | None:
    """Median nearest-neighbour distance of ``(N, 2)`` points (None for fewer than 2)."""
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    if len(pts) < 2:
        return None
    d, _ = cKDTree(pts).query(pts, k=2)
    return float(np.median(d[:, 1]))


# --------------------------------------------------------------------------- dot refinement


def _mutual_nearest(b: NDArray[np.float64], a: NDArray[np.float64], gate: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (ib, ia) that are each other's nearest neighbour and closer than ``gate``."""
    if len(b) == 0 or len(a) == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    d_ab, j = cKDTree(a).query(b, k=1, distance_upper_bound=gate)
    _, i_back = cKDTree(b).query(a, k=1, distance_upper_bound=gate)
    ib = np.flatnonzero(np.isfinite(d_ab))
    ia = j[ib]
    mutual = i_back[ia] == ib
    return ib[mutual], ia[mutual]


@dataclass(frozen=True, eq=False)
class DotFit:
    """A homography fitted on dot pairs, and how well the dots agree with it.

    ``pairs``: mutual nearest dot pairs within ``dot_gate`` x spacing under ``h``;
    ``tight``: those closer than ``dot_tight`` x spacing. Pairs that only happen to fall
    within the gate are spread over it, so few of them are tight, while a fit on the right
    dots makes nearly all pairs tight: ``ok`` (at least ``min_dot_pairs`` tight pairs,
    forming at least ``min_tight_fraction`` of all pairs) is what tells a true match of two
    dot patterns from a chance one. ``residual_px_median``: median distance of the tight
    pairs; ``region``: ``(x, y, radius)`` in BEFORE px holding 90 % of them.
    """

    h: NDArray[np.float64]
    pairs: int
    tight: int
    residual_px_median: float | None
    ok: bool
    region: tuple[float, float, float] | None = None


def _dot_agreement(
    h: NDArray[np.float64], b: NDArray[np.float64], a: NDArray[np.float64], spacing: float, s: RegisterSettings
) -> DotFit:
    ib, ia = _mutual_nearest(b, apply_homography(h, a), s.dot_gate * spacing)
    d = np.linalg.norm(apply_homography(h, a[ia]) - b[ib], axis=1)
    tight = d <= s.dot_tight * spacing
    n, nt = len(ib), int(tight.sum())
    region = None
    if nt:
        pts = b[ib[tight]]
        centre = np.median(pts, axis=0)
        region = (float(centre[0]), float(centre[1]), float(np.percentile(np.linalg.norm(pts - centre, axis=1), 90)))
    return DotFit(
        h=h,
        pairs=n,
        tight=nt,
        residual_px_median=float(np.median(d[tight])) if nt else None,
        ok=nt >= s.min_dot_pairs and nt >= s.min_tight_fraction * n,
        region=region,
    )


def _fit_pairs(
    h: NDArray[np.float64],
    b: NDArray[np.float64],
    a: NDArray[np.float64],
    gate: float,
    threshold: float,
    s: RegisterSettings,
    *,
    affine: bool = False,
) -> tuple[NDArray[np.float64] | None, tuple[int, ...]]:
    """One refinement step: mutual nearest pairs under ``h``, a robust fit on them (MAGSAC++
    homography, or a RANSAC affine map where a patch is too small to pin down perspective),
    then least squares on its inliers. Returns the new map as a 3x3 matrix (None when too
    few pairs) and the pairs' key."""
    ib, ia = _mutual_nearest(b, apply_homography(h, a), gate)
    if len(ib) < s.min_dot_pairs:
        return None, ()
    if affine:
        aff, inl = cv2.estimateAffine2D(
            a[ia],
            b[ib],
            method=cv2.RANSAC,
            ransacReprojThreshold=threshold,
            maxIters=s.ransac_max_iters,
            confidence=s.ransac_confidence,
        )
        if aff is None or inl is None or int(inl.sum()) < s.min_dot_pairs:
            return None, ()
        return np.vstack([aff, [0.0, 0.0, 1.0]]), tuple(ib.tolist())
    hm, inl = cv2.findHomography(
        a[ia].astype(np.float32),
        b[ib].astype(np.float32),
        cv2.USAC_MAGSAC,
        threshold,
        maxIters=s.ransac_max_iters,
        confidence=s.ransac_confidence,
    )
    if hm is None or inl is None or int(inl.sum()) < s.min_dot_pairs:
        return None, ()
    sel = inl.ravel().astype(bool)
    hm_ls, _ = cv2.findHomography(a[ia][sel], b[ib][sel], 0)
    return (hm_ls if hm_ls is not None else hm), tuple(ib.tolist())


def refine_on_dots(
    after_to_before: ArrayLike,
    before_xy: ArrayLike,
    after_xy: ArrayLike,
    settings: RegisterSettings,
    *,
    region: tuple[float, float, float] | None = None,
) -> DotFit:
    """Refine an AFTER -> BEFORE homography on the two photos' dot centres.

    Iterates: map AFTER dots into BEFORE, take mutual nearest neighbours closer than
    ``dot_gate`` x spacing (the BEFORE dots' median nearest-neighbour distance), refit the
    homography on them (MAGSAC++ with a threshold of ``dot_threshold`` x spacing, then
    least squares on its inliers), until the pairs stop changing.

    ``region`` ``(x, y, radius)`` (BEFORE px): where the starting guess is known to be good
    (a similarity from :func:`match_dot_patterns` fits only near the dots it was found
    on). The fit then starts with the dots inside it and grows the circle by 30 % each
    step, keeping at each step whichever of a homography and an affine map pairs more dots
    tightly inside the circle (on a small or noisy patch a homography can extrapolate
    wildly; on a tilted view an affine map cannot follow the perspective). See :class:`DotFit` for
    the result; its ``ok`` is False when the dots do not confirm the homography.
    """
    s = settings
    h = np.asarray(after_to_before, np.float64)
    b = np.asarray(before_xy, np.float64).reshape(-1, 2)
    a = np.asarray(after_xy, np.float64).reshape(-1, 2)
    spacing = dot_spacing(b)
    if spacing is None or len(a) < s.min_dot_pairs or len(b) < s.min_dot_pairs:
        return DotFit(h, 0, 0, None, False)
    gate, threshold = s.dot_gate * spacing, s.dot_threshold * spacing
    if region is not None:
        centre, radius = np.array(region[:2]), max(region[2], 5 * spacing)
        reach = float(np.max(np.linalg.norm(b - centre, axis=1)))
        while radius < reach:
            radius *= 1.3
            bi = b[np.linalg.norm(b - centre, axis=1) <= radius]
            ai = a[np.linalg.norm(apply_homography(h, a) - centre, axis=1) <= radius]
            fits = [
                f
                for f in (_fit_pairs(h, bi, ai, gate, threshold, s, affine=aff)[0] for aff in (False, True))
                if f is not None
            ]
            if not fits:
                break
            h = max(fits, key=lambda f: _dot_agreement(f, bi, ai, spacing, s).tight)
    previous: tuple[int, ...] = ()
    for _ in range(s.dot_iterations):
        hm, key = _fit_pairs(h, b, a, gate, threshold, s)
        if hm is None:
            break
        h = hm
        if key == previous:
            break
        previous = key
    return _dot_agreement(h, b, a, spacing, s)


# --------------------------------------------------------------------------- dot-pattern search


@dataclass(frozen=True)
class _Triangles:
    vertices: NDArray[np.intp]  # (T, 3) point indices, ordered by the side opposite (short, mid, long)
    shape: NDArray[np.float64]  # (T, 3) short / long, mid / long, handedness (+-1) x 10
    longest: NDArray[np.float64]  # (T,) longest side


def _triangles(xy: NDArray[np.float64], k: int, anchors: NDArray[np.intp] | None = None) -> _Triangles:
    """Triangles of each anchor point with every two of its ``k`` nearest neighbours.

    Their shape (two side ratios and the handedness) does not change under rotation, scale
    and translation, and the order of the vertices (by the length of the opposite side)
    tells which vertex is which. Near-isosceles triangles, whose vertex order noise could
    swap, are left out.
    """
    anchors = np.arange(len(xy)) if anchors is None else anchors
    k = min(k, len(xy) - 1)
    _, nn = cKDTree(xy).query(xy[anchors], k=k + 1)
    j, m = np.triu_indices(k, 1)
    tri = np.stack([np.repeat(anchors, len(j)), nn[:, 1:][:, j].ravel(), nn[:, 1:][:, m].ravel()], axis=1)
    p = xy[tri]  # (T, 3, 2)
    opposite = np.stack(
        [
            np.linalg.norm(p[:, 1] - p[:, 2], axis=1),
            np.linalg.norm(p[:, 0] - p[:, 2], axis=1),
            np.linalg.norm(p[:, 0] - p[:, 1], axis=1),
        ],
        axis=1,
    )
    order = np.argsort(opposite, axis=1)
    tri = np.take_along_axis(tri, order, axis=1)
    sides = np.take_along_axis(opposite, order, axis=1)
    p = xy[tri]
    long_ = sides[:, 2]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    hand = np.sign(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    ok = ((sides[:, 1] - sides[:, 0]) > 0.03 * long_) & ((sides[:, 2] - sides[:, 1]) > 0.03 * long_) & (hand != 0)
    shape = np.column_stack([sides[:, 0] / long_, sides[:, 1] / long_, 10.0 * hand])
    return _Triangles(tri[ok], shape[ok], long_[ok])


def _central(xy: NDArray[np.float64], n: int) -> NDArray[np.intp]:
    """Indices of the ``n`` points nearest the median of ``xy``."""
    if len(xy) <= n:
        return np.arange(len(xy))
    d = np.linalg.norm(xy - np.median(xy, axis=0), axis=1)
    return np.argpartition(d, n - 1)[:n]


def _triangle_proposals(
    anchor_xy: NDArray[np.float64],
    other_xy: NDArray[np.float64],
    s: RegisterSettings,
) -> tuple[NDArray[np.complex128], NDArray[np.complex128]]:
    """Triangle correspondences: triangles of anchor dots (near the pattern's centre) with two
    of their 4 nearest neighbours, looked up by shape among the triangles of every dot of the
    other pattern with two of its 8 nearest (a pattern that gained dots still holds the old
    triangles among them). Returns the vertices as complex numbers, ``(P, 3)`` in each."""
    anchors = _central(anchor_xy, s.pattern_anchors)
    # the other pattern's dots nearest its centre only: photos of one region share their middle,
    # and this bounds the cost on 20 000-dot photos
    t_an, t_ot = _triangles(anchor_xy, 4, anchors), _triangles(other_xy, 8, _central(other_xy, s.pattern_search_dots))
    empty = np.zeros((0, 3), np.complex128)
    if not len(t_an.shape) or not len(t_ot.shape):
        return empty, empty
    hits = cKDTree(t_ot.shape).query_ball_point(t_an.shape, r=s.pattern_shape_tolerance)
    lens = np.fromiter((len(h) for h in hits), np.intp, len(hits))
    if not lens.sum():
        return empty, empty
    i_an = np.repeat(np.arange(len(hits)), lens)
    i_ot = np.concatenate([np.asarray(h, np.intp) for h in hits if len(h)])
    va, vo = t_an.vertices[i_an], t_ot.vertices[i_ot]
    return (anchor_xy[va, 0] + 1j * anchor_xy[va, 1]), (other_xy[vo, 0] + 1j * other_xy[vo, 1])


def _vote_cells(
    zb: NDArray[np.complex128],
    za: NDArray[np.complex128],
    reference: complex,
    anchored_in_before: bool,
    spacing: float,
    s: RegisterSettings,
) -> list[NDArray[np.intp]]:
    """Hough voting of triangle correspondences; returns the proposals of the best cells.

    Each proposal's similarity ``z_b = m z_a + c`` is binned by rotation (6 degrees), log
    scale (0.1) and where it takes ``reference``, a point amid the anchor triangles (to or
    from BEFORE, in 2-spacing cells): a point near the triangles, because perspective makes
    the local similarity of a tilted view drift with position and a far point would smear
    the votes.
    """
    zb_c, za_c = zb - zb.mean(axis=1, keepdims=True), za - za.mean(axis=1, keepdims=True)
    m = (np.conj(za_c) * zb_c).sum(axis=1) / np.maximum((np.abs(za_c) ** 2).sum(axis=1), 1e-12)
    c = zb.mean(axis=1) - m * za.mean(axis=1)
    ok = (np.abs(m) >= 1 / s.max_scale_change) & (np.abs(m) <= s.max_scale_change)
    idx = np.flatnonzero(ok)
    if not len(idx):
        return []
    m, c = m[idx], c[idx]
    at = (reference - c) / m if anchored_in_before else m * reference + c
    key = np.column_stack(
        [
            np.floor(np.degrees(np.angle(m)) / 6.0),
            np.floor(np.log(np.abs(m)) / 0.1),
            np.floor(at.real / (2 * spacing)),
            np.floor(at.imag / (2 * spacing)),
        ]
    ).astype(np.int64)
    key -= key.min(axis=0)
    flat = np.ravel_multi_index(key.T, tuple(key.max(axis=0) + 1))
    _, inverse, votes = np.unique(flat, return_inverse=True, return_counts=True)
    return [idx[inverse == cell] for cell in np.argsort(-votes)[: s.pattern_candidates] if votes[cell] >= 3]


def match_dot_patterns(
    before_xy: ArrayLike,
    after_xy: ArrayLike,
    settings: RegisterSettings,
) -> DotFit | None:
    """A map AFTER -> BEFORE found from the dot patterns alone (no starting guess).

    The classic way stars are matched between sky images (Groth 1986): triangles of
    neighbouring dots whose shapes agree propose a rotation, scale and shift; the
    proposals vote (:func:`_vote_cells`); the vertex pairs of each of the best cells get a
    robust fit, which is checked by how many dots it pairs up tightly. Needed
    when the skin looks too different for features (hair cut short, a session that doubled
    the dots, the card moved): the old dots are still where they were. See
    :func:`_triangle_proposals` for how a pattern that gained or lost dots still matches.
    Returns the map as a :class:`DotFit` judged in the ``region`` where it pairs dots
    tightly (fitted on a patch, it need not hold further out), or None; refine it with
    :func:`refine_on_dots`, passing that ``region``.
    """
    s = settings
    b = np.asarray(before_xy, np.float64).reshape(-1, 2)
    a = np.asarray(after_xy, np.float64).reshape(-1, 2)
    if min(len(b), len(a)) < max(s.min_dot_pairs, 8):
        return None
    spacing = dot_spacing(b) or 1.0
    best: DotFit | None = None
    # Which pattern holds the other (a session added dots, the detector missed or invented
    # some) is not known: triangles are anchored in each and looked up among the other's.
    for anchored_in_before in (True, False):
        anchor = b if anchored_in_before else a
        z_anchor, z_other = _triangle_proposals(anchor, a if anchored_in_before else b, s)
        zb, za = (z_anchor, z_other) if anchored_in_before else (z_other, z_anchor)
        if not len(zb):
            continue
        reference = complex(*np.median(anchor[_central(anchor, s.pattern_anchors)], axis=0))
        for sel in _vote_cells(zb, za, reference, anchored_in_before, spacing, s):
            # the vertex pairs of the cell's triangles, fitted robustly (a cell also holds chance
            # triangles); a homography when they pin one down, as a tilted view needs, else a similarity
            pairs = np.unique(
                np.column_stack(
                    [za[sel].real.ravel(), za[sel].imag.ravel(), zb[sel].real.ravel(), zb[sel].imag.ravel()]
                ),
                axis=0,
            )
            src, dst = np.ascontiguousarray(pairs[:, :2]), np.ascontiguousarray(pairs[:, 2:])
            h = None
            if len(pairs) >= 3 * s.min_dot_pairs:
                h, _ = cv2.findHomography(
                    src,
                    dst,
                    cv2.USAC_MAGSAC,
                    s.dot_threshold * spacing,
                    maxIters=s.ransac_max_iters,
                    confidence=s.ransac_confidence,
                )
            if h is None:
                sim, _ = cv2.estimateAffinePartial2D(
                    src, dst, method=cv2.RANSAC, ransacReprojThreshold=s.dot_threshold * spacing
                )
                if sim is None:
                    continue
                h = np.vstack([sim, [0.0, 0.0, 1.0]])
            # judged where its triangles are
            where = zb[sel].mean(axis=1)
            centre = np.array([np.median(where.real), np.median(where.imag)])
            radius = max(6 * spacing, 1.5 * float(np.percentile(np.abs(where - complex(*centre)), 90)))
            near_b = np.linalg.norm(b - centre, axis=1) <= radius
            near_a = np.linalg.norm(apply_homography(h, a) - centre, axis=1) <= radius
            # h is float64: findHomography's, or the similarity's stacked on [0, 0, 1]
            fit = _dot_agreement(cast("NDArray[np.float64]", h), b[near_b], a[near_a], spacing, s)
            if fit.ok and (best is None or fit.tight > best.tight):
                best = fit  # its region: where its tight pairs are, i.e. where the similarity holds
    return best
