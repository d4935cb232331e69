"""Registration of two photos of the same scalp region, and linking of their dots.

Two stages, each a plain function on arrays, reused by ``smp compare`` (before ->
after) and by visit tracking (each follow-up -> the reference close-up):

1. :func:`register_photos` finds the homography that maps AFTER image pixels to
   BEFORE image pixels. Skin is close to a plane over a few centimetres, so a
   homography covers rotation, scale and camera tilt. First from local features
   (SIFT on a grey, contrast-equalised (CLAHE) working copy, Lowe's ratio test,
   ``cv2.findHomography`` with MAGSAC++), which does not need a starting guess and
   is indifferent to exposure and white balance. Then, for close-ups whose dots are
   known in both photos, refined on the dot pattern itself: the dots are hundreds
   of sharp, well-localised landmarks spread over the whole photo, so a fit on
   mutually-nearest dot pairs is far more precise than one on skin texture. When
   the features fail or the dots contradict them (hair cut short, a session that
   doubled the dots, the card moved: the skin looks different, the old dots are
   where they were), the dot patterns are matched on their own
   (:func:`match_dot_patterns`, triangles of neighbouring dots voting, as star
   fields are matched). A fit counts only when most dot pairs agree to a tenth of
   the dot spacing (:class:`DotFit`), which chance pairings never do: a wrong
   registration is refused, not reported.
2. :func:`link_dots` pairs the dots: a gated optimal assignment after the
   homography, then a smooth residual warp fitted on those links (skin stretches a
   little between visits, the scalp is not exactly a plane) and a second
   assignment with a tighter gate. The result names the linked pairs, the dots only
   in AFTER (new) and only in BEFORE (lost) inside the area both photos see, and the
   residual distances in pixels and millimetres.

Lengths of the linking gates are in units of the dots' own median nearest-neighbour
spacing, so the same settings work at any scale and without a calibration; the scale
(``px_per_mm`` of the BEFORE photo) is used only to report millimetres.

Coordinates follow ``data.metrics``: ``(x, y) = (column, row)``, pixel centres at
integers (OpenCV's convention). Nothing here draws random numbers: OpenCV's
MAGSAC++ is seeded internally and deterministic for the same input.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import Field
from scipy.interpolate import RBFInterpolator
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from data.config import Settings, load_settings

__all__ = [
    "RegisterSettings",
    "LinkSettings",
    "RegistrationError",
    "RETAKE_ADVICE",
    "ChangeSettings",
    "retake_advice",
    "Registration",
    "DotLinks",
    "load_register_settings",
    "register_photos",
    "refine_on_dots",
    "DotFit",
    "match_dot_patterns",
    "link_dots",
    "gated_assignment",
    "dot_spacing",
    "apply_homography",
]


# --------------------------------------------------------------------------- settings


class LinkSettings(Settings):
    """How dots of two registered photos are paired (lengths in units of the BEFORE dots'
    median nearest-neighbour spacing ``s``; SMP dots are ~1 mm apart, so ``s`` ~ 1 mm)."""

    #: First assignment: a pair is allowed when the two centres are closer than this (x s).
    #: Well below 0.5 s, so a dot is never linked to its neighbour's place.
    gate: float = Field(0.4, gt=0, le=1)
    #: Fit a smooth residual warp on the first links, then link again with a tighter gate.
    warp: bool = True
    #: Length scale of the smooth warp (Gaussian RBF), x s: skin stretches over millimetres, not per dot.
    warp_scale: float = Field(6.0, gt=0)
    #: Regularisation of the warp (RBF ``smoothing``; larger = smoother, ~ noise / signal variance).
    warp_smoothing: float = Field(2.0, ge=0)
    #: Each warp value is solved from this many nearest links (bounds the cost on 20 000 dots).
    warp_neighbors: int = Field(48, ge=8)
    #: Fewer first links than this: no warp, the homography alone is used.
    min_warp_links: int = Field(20, ge=4)
    #: Second gate = this many robust sigmas of the warped residuals ...
    relink_sigmas: float = Field(5.0, gt=0)
    #: ... but never tighter than this (x s) nor wider than ``gate``.
    relink_min_gate: float = Field(0.15, gt=0)
    #: Dots closer than this (x s) to the edge of the other photo are neither "new" nor "lost"
    #: (a dot cut by the frame is not reliably detected).
    edge_margin: float = Field(0.5, ge=0)


class ChangeSettings(Settings):
    """What a change between two photos must exceed before a report calls it better or worse:
    the 90th percentile of how far a measured change is from the true one between two photos of
    one client (scripts/bench_change.py; the same 90% as every range the product reports).
    Smaller changes read "within what two photos of one scalp differ by"."""

    #: Show-through, as a fraction (0.25: 25 percentage points).
    show_through: float = Field(0.25, ge=0, le=1)
    #: Dot density, as a share of the larger of the two photos' densities.
    dot_density_relative: float = Field(0.86, ge=0)


class RegisterSettings(Settings):
    """How AFTER is registered to BEFORE (``configs/compare/default.yaml``)."""

    #: Features are found on a copy whose longer side is at most this (px); the homography
    #: is scaled back to full resolution.
    feature_max_side: int = Field(1600, ge=200)
    #: CLAHE on the grey working copy: evens out exposure, white balance and light gradients.
    clahe_clip: float = Field(2.0, gt=0)
    clahe_tiles: int = Field(8, ge=1)
    #: Keep at most this many SIFT keypoints per photo (strongest first).
    max_features: int = Field(8000, ge=100)
    #: SIFT contrast threshold (OpenCV default 0.04); lower finds features on smooth skin.
    sift_contrast: float = Field(0.02, gt=0)
    #: Lowe's ratio test: best match / second best distance must be below this.
    ratio: float = Field(0.8, gt=0, lt=1)
    #: MAGSAC++ inlier threshold, px of the working copy.
    ransac_threshold_px: float = Field(3.0, gt=0)
    ransac_confidence: float = Field(0.9999, gt=0, lt=1)
    ransac_max_iters: int = Field(10000, ge=100)
    #: Fewer feature inliers than this: the photos cannot be registered.
    min_inliers: int = Field(12, ge=4)
    #: Fewer inliers than this still registers, with a warning - unless the dots contradict it.
    warn_inliers: int = Field(40, ge=4)
    #: The scale between the photos must lie within [1 / x, x].
    max_scale_change: float = Field(3.0, gt=1)
    #: The photos must share at least this fraction of the BEFORE photo's area.
    min_overlap: float = Field(0.05, gt=0, le=1)
    #: Refine on the dots when both photos' dot centres are given (close-ups).
    refine_with_dots: bool = True
    #: Dot pairs for the refinement: mutual nearest neighbours closer than this (x the BEFORE
    #: dots' median nearest-neighbour spacing).
    dot_gate: float = Field(0.35, gt=0, le=1)
    #: MAGSAC++ threshold of the dot fit (x spacing): dots move a little with the skin.
    dot_threshold: float = Field(0.12, gt=0)
    #: A pair closer than this (x spacing) after the fit is "tight"; chance pairs within the gate
    #: rarely are ((0.1 / 0.35)^2 = 8 % of them).
    dot_tight: float = Field(0.1, gt=0)
    #: The dots confirm a homography when at least this fraction of the pairs is tight.
    min_tight_fraction: float = Field(0.5, gt=0, le=1)
    dot_iterations: int = Field(10, ge=1)
    #: Fewer tight dot pairs than this: the dots do not confirm a homography.
    min_dot_pairs: int = Field(12, ge=4)
    #: When features fail (or the dot refinement pairs fewer than ``pattern_fallback_fraction``
    #: of the sparser photo's dots), search the dot patterns themselves (close-ups only).
    pattern_search: bool = True
    pattern_fallback_fraction: float = Field(0.3, ge=0, le=1)
    #: Dots (nearest the centre) of each pattern whose triangles are looked up in the other ...
    pattern_anchors: int = Field(300, ge=10)
    #: ... among the triangles of this many dots nearest the other pattern's centre.
    pattern_search_dots: int = Field(3000, ge=50)
    #: Two triangles have the same shape when their side ratios differ by less than this.
    pattern_shape_tolerance: float = Field(0.02, gt=0)
    #: Best vote cells checked by pairing dots.
    pattern_candidates: int = Field(8, ge=1)
    link: LinkSettings = LinkSettings()
    #: What a before/after must exceed to be called a change (not registration: kept here so that one
    #: file, configs/compare/default.yaml, holds what ``smp compare`` decides).
    change: ChangeSettings = ChangeSettings()


def load_register_settings(path=None, overrides=()) -> RegisterSettings:
    """Settings from ``path`` (default ``configs/compare/default.yaml``) plus ``--set`` overrides."""
    return load_settings(RegisterSettings, path, overrides, default="compare/default.yaml")


def retake_advice(photo: str = "the after photo", reference: str = "the before photo") -> str:
    """What a clinic can do when ``photo`` cannot be registered to ``reference`` (the warnings and
    reports of comparisons and timelines say it)."""
    return (f"retake {photo} of the same region from the same distance and angle, with the card in frame and "
            f"at least half of {reference}'s scalp in view")


#: The advice for a before/after comparison.
RETAKE_ADVICE = retake_advice()


class RegistrationError(ValueError):
    """The two photos cannot be registered; the message says why, in one line."""


# --------------------------------------------------------------------------- geometry


def apply_homography(h: ArrayLike, xy: ArrayLike) -> NDArray[np.float64]:
    """Map ``(N, 2)`` points with the 3x3 homography ``h``."""
    hm = np.asarray(h, np.float64)
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    proj = pts @ hm[:2, :2].T + hm[:2, 2]
    w = pts @ hm[2, :2] + hm[2, 2]
    return proj / w[:, None]


def _jacobian(h: NDArray[np.float64], x: float, y: float) -> NDArray[np.float64]:
    """2x2 derivative of the homography at ``(x, y)``."""
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    u = (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w
    v = (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w
    return np.array([[h[0, 0] - u * h[2, 0], h[0, 1] - u * h[2, 1]],
                     [h[1, 0] - v * h[2, 0], h[1, 1] - v * h[2, 1]]]) / w


def _corners(size: tuple[int, int]) -> NDArray[np.float64]:
    w, h = size
    return np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])


def _is_convex(quad: NDArray[np.float64]) -> bool:
    edges = np.roll(quad, -1, axis=0) - quad
    cross = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    return bool(np.all(cross > 0) or np.all(cross < 0))


def _area_scale(h: NDArray[np.float64], after_size: tuple[int, int]) -> float:
    """Mean linear scale of the homography over the AFTER frame (BEFORE px per AFTER px)."""
    quad = apply_homography(h, _corners(after_size))
    area = 0.5 * abs(np.dot(quad[:, 0], np.roll(quad[:, 1], -1)) - np.dot(quad[:, 1], np.roll(quad[:, 0], -1)))
    return math.sqrt(area / (after_size[0] * after_size[1]))


def _normalised(h: NDArray[np.float64]) -> NDArray[np.float64]:
    out = np.array(h, np.float64) / h[2, 2]
    out.flags.writeable = False
    return out


def dot_spacing(xy: ArrayLike) -> float | None:
    """Median nearest-neighbour distance of ``(N, 2)`` points (None for fewer than 2)."""
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    if len(pts) < 2:
        return None
    d, _ = cKDTree(pts).query(pts, k=2)
    return float(np.median(d[:, 1]))


# --------------------------------------------------------------------------- registration result


@dataclass(frozen=True, eq=False)
class Registration:
    """AFTER -> BEFORE registration of two photos.

    ``after_to_before``: 3x3 homography (``H[2, 2] = 1``, read-only) taking AFTER image
    pixels to BEFORE image pixels. ``method``: ``features`` or ``features+dots``.
    ``n_matches``: feature matches passing the ratio test; ``n_inliers``: those MAGSAC++
    kept; ``feature_rms_px``: their RMS distance after the fit, in BEFORE pixels.
    ``dot_pairs`` and ``dot_residual_px_median``: the pairs of the dot refinement and
    their median distance after it (0 / None without). ``warnings``: one line each.
    """

    after_to_before: NDArray[np.float64]
    before_size: tuple[int, int]   # (width, height)
    after_size: tuple[int, int]
    method: str
    n_features: tuple[int, int]
    n_matches: int
    n_inliers: int
    feature_rms_px: float
    dot_pairs: int = 0
    dot_residual_px_median: float | None = None
    px_per_mm: float | None = None
    warnings: tuple[str, ...] = ()
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def before_to_after(self) -> NDArray[np.float64]:
        return np.linalg.inv(self.after_to_before)

    def to_before(self, after_xy: ArrayLike) -> NDArray[np.float64]:
        """AFTER pixel coordinates ``(N, 2)`` in the BEFORE photo."""
        return apply_homography(self.after_to_before, after_xy)

    def to_after(self, before_xy: ArrayLike) -> NDArray[np.float64]:
        """BEFORE pixel coordinates ``(N, 2)`` in the AFTER photo."""
        return apply_homography(self.before_to_after, before_xy)

    def local_transform(self) -> tuple[float, float]:
        """``(scale, rotation_deg)`` of AFTER -> BEFORE at the centre of the BEFORE photo:
        scale > 1 means the AFTER photo was taken from further away (things look smaller)."""
        w, h = self.before_size
        centre_after = self.to_after([[(w - 1) / 2, (h - 1) / 2]])[0]
        j = _jacobian(np.asarray(self.after_to_before), *centre_after)
        scale = math.sqrt(abs(np.linalg.det(j)))
        rot = math.degrees(math.atan2(j[1, 0] - j[0, 1], j[0, 0] + j[1, 1]))
        return scale, rot

    def overlap_fraction(self) -> float:
        """Fraction of the BEFORE photo's area that the AFTER photo also shows."""
        quad = self.to_before(_corners(self.after_size)).astype(np.float32)
        frame = _corners(self.before_size).astype(np.float32)
        area, _ = cv2.intersectConvexConvex(quad, frame)
        return float(area) / float(self.before_size[0] * self.before_size[1])

    def warp_after(self, image: np.ndarray, *, interpolation: int = cv2.INTER_LINEAR,
                   border_value: float | tuple = 0) -> np.ndarray:
        """An AFTER-frame image (photo, L*, mask) resampled into the BEFORE frame."""
        return cv2.warpPerspective(image, np.asarray(self.after_to_before), self.before_size,
                                   flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)

    def after_footprint(self) -> np.ndarray:
        """HxW bool (BEFORE frame): pixels the AFTER photo also shows."""
        ones = np.ones((self.after_size[1], self.after_size[0]), np.uint8)
        return self.warp_after(ones, interpolation=cv2.INTER_NEAREST).astype(bool)

    def to_json(self) -> dict[str, Any]:
        scale, rot = self.local_transform()

        def num(v: float | None, nd: int = 4) -> float | None:
            return None if v is None or not math.isfinite(v) else round(float(v), nd)

        return {
            "after_to_before": [[float(v) for v in row] for row in np.asarray(self.after_to_before)],
            "method": self.method,
            "before_size": list(self.before_size), "after_size": list(self.after_size),
            "features": list(self.n_features), "matches": self.n_matches, "inliers": self.n_inliers,
            "feature_rms_px": num(self.feature_rms_px, 3),
            "dot_pairs": self.dot_pairs,
            "dot_residual_px_median": num(self.dot_residual_px_median),
            "dot_residual_mm_median": num(self.dot_residual_px_median / self.px_per_mm, 5)
            if self.dot_residual_px_median is not None and self.px_per_mm else None,
            "scale": num(scale, 5), "rotation_deg": num(rot, 3),
            "overlap_fraction": num(self.overlap_fraction()),
            "warnings": list(self.warnings),
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
        }


# --------------------------------------------------------------------------- features


#: OpenCV's SIFT reports keypoints a quarter pixel right of and below where they are (in
#: pixel-centre coordinates): it doubles the image first and halves the positions found
#: there, but the doubled image's pixel centres sit at ``2 x + 0.5``. Harmless between
#: two photos at the same orientation, it becomes a 0.5 px error between photos half a
#: turn apart, so it is taken off (tests/test_register.py checks it on a flipped image).
SIFT_OFFSET_PX = 0.25


@dataclass(frozen=True)
class _Features:
    xy: NDArray[np.float64]          # (N, 2) full-resolution pixel coordinates
    descriptors: NDArray[np.float32]  # (N, 128)


def _working_grey(rgb: np.ndarray, s: RegisterSettings) -> tuple[np.ndarray, float]:
    """Grey, downscaled, CLAHE-equalised copy and its factor (working px per full px)."""
    if rgb.ndim == 3:
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    else:
        grey = np.ascontiguousarray(rgb)
    if grey.dtype != np.uint8:
        raise ValueError(f"photos must be uint8, got {grey.dtype}")
    h, w = grey.shape
    f = min(1.0, s.feature_max_side / max(h, w))
    if f < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    clahe = cv2.createCLAHE(clipLimit=s.clahe_clip, tileGridSize=(s.clahe_tiles, s.clahe_tiles))
    return clahe.apply(grey), f


def _features(rgb: np.ndarray, s: RegisterSettings, mask: np.ndarray | None = None) -> tuple[_Features, float]:
    grey, f = _working_grey(rgb, s)
    work_mask = None
    if mask is not None and mask.shape != rgb.shape[:2]:
        raise ValueError(f"feature mask {mask.shape} does not match the photo {rgb.shape[:2]}")
    # a mask on under 5 % of the photo is a failed segmentation, not a reason to fail registration
    if mask is not None and np.count_nonzero(mask) >= 0.05 * mask.size:
        work_mask = cv2.resize(np.asarray(mask, np.uint8) * np.uint8(255), (grey.shape[1], grey.shape[0]),
                               interpolation=cv2.INTER_NEAREST)
        # keep features whose descriptor window lies on the mask, not on its edge (the card's border)
        work_mask = cv2.erode(work_mask, np.ones((9, 9), np.uint8))
    sift = cv2.SIFT_create(nfeatures=s.max_features, contrastThreshold=s.sift_contrast)
    kps, desc = sift.detectAndCompute(grey, work_mask)
    if desc is None or not kps:
        return _Features(np.zeros((0, 2)), np.zeros((0, 128), np.float32)), f
    xy = np.array([k.pt for k in kps], np.float64) - SIFT_OFFSET_PX
    # the resize maps full-res centre c to working (c + 0.5) f - 0.5; invert it
    return _Features((xy + 0.5) / f - 0.5, desc.astype(np.float32, copy=False)), f


def _ratio_matches(a: _Features, b: _Features, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into a, into b) of matches passing Lowe's ratio test, one per b feature."""
    if len(a.xy) < 2 or len(b.xy) < 2:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    matcher = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 5}, {"checks": 64})
    knn = matcher.knnMatch(a.descriptors, b.descriptors, k=2)
    ia, ib = [], []
    for pair in knn:
        if len(pair) == 2 and pair[0].distance < ratio * pair[1].distance:
            ia.append(pair[0].queryIdx)
            ib.append(pair[0].trainIdx)
    ia_arr, ib_arr = np.asarray(ia, np.intp), np.asarray(ib, np.intp)
    # several AFTER features may pick the same BEFORE one: keep the first (they are ambiguous)
    _, first = np.unique(ib_arr, return_index=True)
    keep = np.sort(first)
    return ia_arr[keep], ib_arr[keep]


def _check_homography(h: NDArray[np.float64], before_size: tuple[int, int], after_size: tuple[int, int],
                      s: RegisterSettings) -> None:
    if not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        raise RegistrationError("the fitted homography is degenerate")
    quad = apply_homography(h, _corners(after_size))
    if not np.all(np.isfinite(quad)) or not _is_convex(quad):
        raise RegistrationError("the fitted homography folds the photo (implausible perspective)")
    scale = _area_scale(h, after_size)
    if not (1 / s.max_scale_change <= scale <= s.max_scale_change):
        raise RegistrationError(f"implausible scale change between the photos ({scale:.2f}x, "
                                f"allowed 1/{s.max_scale_change:g}-{s.max_scale_change:g}x)")
    sign = np.sign(np.linalg.det(h[:2, :2] - np.outer(h[:2, 2], h[2, :2])))
    if sign <= 0:
        raise RegistrationError("the fitted homography mirrors the photo")


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


def _dot_agreement(h: NDArray[np.float64], b: NDArray[np.float64], a: NDArray[np.float64], spacing: float,
                   s: RegisterSettings) -> DotFit:
    ib, ia = _mutual_nearest(b, apply_homography(h, a), s.dot_gate * spacing)
    d = np.linalg.norm(apply_homography(h, a[ia]) - b[ib], axis=1)
    tight = d <= s.dot_tight * spacing
    n, nt = len(ib), int(tight.sum())
    region = None
    if nt:
        pts = b[ib[tight]]
        centre = np.median(pts, axis=0)
        region = (float(centre[0]), float(centre[1]), float(np.percentile(np.linalg.norm(pts - centre, axis=1), 90)))
    return DotFit(h=h, pairs=n, tight=nt, residual_px_median=float(np.median(d[tight])) if nt else None,
                  ok=nt >= s.min_dot_pairs and nt >= s.min_tight_fraction * n, region=region)


def _fit_pairs(h: NDArray[np.float64], b: NDArray[np.float64], a: NDArray[np.float64], gate: float,
               threshold: float, s: RegisterSettings, *, affine: bool = False,
               ) -> tuple[NDArray[np.float64] | None, tuple[int, ...]]:
    """One refinement step: mutual nearest pairs under ``h``, a robust fit on them (MAGSAC++
    homography, or a RANSAC affine map where a patch is too small to pin down perspective),
    then least squares on its inliers. Returns the new map as a 3x3 matrix (None when too
    few pairs) and the pairs' key."""
    ib, ia = _mutual_nearest(b, apply_homography(h, a), gate)
    if len(ib) < s.min_dot_pairs:
        return None, ()
    if affine:
        aff, inl = cv2.estimateAffine2D(a[ia], b[ib], method=cv2.RANSAC, ransacReprojThreshold=threshold,
                                        maxIters=s.ransac_max_iters, confidence=s.ransac_confidence)
        if aff is None or inl is None or int(inl.sum()) < s.min_dot_pairs:
            return None, ()
        return np.vstack([aff, [0.0, 0.0, 1.0]]), tuple(ib.tolist())
    hm, inl = cv2.findHomography(a[ia].astype(np.float32), b[ib].astype(np.float32), cv2.USAC_MAGSAC, threshold,
                                 maxIters=s.ransac_max_iters, confidence=s.ransac_confidence)
    if hm is None or inl is None or int(inl.sum()) < s.min_dot_pairs:
        return None, ()
    sel = inl.ravel().astype(bool)
    hm_ls, _ = cv2.findHomography(a[ia][sel], b[ib][sel], 0)
    return (hm_ls if hm_ls is not None else hm), tuple(ib.tolist())


def refine_on_dots(after_to_before: ArrayLike, before_xy: ArrayLike, after_xy: ArrayLike,
                   settings: RegisterSettings, *, region: tuple[float, float, float] | None = None) -> DotFit:
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
            fits = [f for f in (_fit_pairs(h, bi, ai, gate, threshold, s, affine=aff)[0] for aff in (False, True))
                    if f is not None]
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
    vertices: NDArray[np.intp]      # (T, 3) point indices, ordered by the side opposite (short, mid, long)
    shape: NDArray[np.float64]      # (T, 3) short / long, mid / long, handedness (+-1) x 10
    longest: NDArray[np.float64]    # (T,) longest side


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
    p = xy[tri]                                            # (T, 3, 2)
    opposite = np.stack([np.linalg.norm(p[:, 1] - p[:, 2], axis=1), np.linalg.norm(p[:, 0] - p[:, 2], axis=1),
                         np.linalg.norm(p[:, 0] - p[:, 1], axis=1)], axis=1)
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


def _triangle_proposals(anchor_xy: NDArray[np.float64], other_xy: NDArray[np.float64], s: RegisterSettings,
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


def _vote_cells(zb: NDArray[np.complex128], za: NDArray[np.complex128], reference: complex, anchored_in_before: bool,
                spacing: float, s: RegisterSettings) -> list[NDArray[np.intp]]:
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
    key = np.column_stack([np.floor(np.degrees(np.angle(m)) / 6.0), np.floor(np.log(np.abs(m)) / 0.1),
                           np.floor(at.real / (2 * spacing)), np.floor(at.imag / (2 * spacing))]).astype(np.int64)
    key -= key.min(axis=0)
    flat = np.ravel_multi_index(key.T, tuple(key.max(axis=0) + 1))
    _, inverse, votes = np.unique(flat, return_inverse=True, return_counts=True)
    return [idx[inverse == cell] for cell in np.argsort(-votes)[: s.pattern_candidates] if votes[cell] >= 3]


def match_dot_patterns(before_xy: ArrayLike, after_xy: ArrayLike, settings: RegisterSettings,
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
            pairs = np.unique(np.column_stack([za[sel].real.ravel(), za[sel].imag.ravel(),
                                               zb[sel].real.ravel(), zb[sel].imag.ravel()]), axis=0)
            src, dst = np.ascontiguousarray(pairs[:, :2]), np.ascontiguousarray(pairs[:, 2:])
            h = None
            if len(pairs) >= 3 * s.min_dot_pairs:
                h, _ = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, s.dot_threshold * spacing,
                                          maxIters=s.ransac_max_iters, confidence=s.ransac_confidence)
            if h is None:
                sim, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                                     ransacReprojThreshold=s.dot_threshold * spacing)
                if sim is None:
                    continue
                h = np.vstack([sim, [0.0, 0.0, 1.0]])
            # judged where its triangles are
            where = zb[sel].mean(axis=1)
            centre = np.array([np.median(where.real), np.median(where.imag)])
            radius = max(6 * spacing, 1.5 * float(np.percentile(np.abs(where - complex(*centre)), 90)))
            near_b = np.linalg.norm(b - centre, axis=1) <= radius
            near_a = np.linalg.norm(apply_homography(h, a) - centre, axis=1) <= radius
            fit = _dot_agreement(h, b[near_b], a[near_a], spacing, s)
            if fit.ok and (best is None or fit.tight > best.tight):
                best = fit   # its region: where its tight pairs are, i.e. where the similarity holds
    return best


# --------------------------------------------------------------------------- registration


@dataclass(frozen=True)
class _FeatureFit:
    """Outcome of the feature stage: a homography, or why there is none."""

    h: NDArray[np.float64] | None
    n_features: tuple[int, int]
    n_matches: int
    n_inliers: int
    rms_px: float
    failure: str | None      # why there is no homography, e.g. "too few matching features (7 < 12)"
    hint: str = ""           # what the user might check, for the error message


def _feature_homography(before_rgb: np.ndarray, after_rgb: np.ndarray, s: RegisterSettings,
                        before_mask: np.ndarray | None, after_mask: np.ndarray | None,
                        before_size: tuple[int, int], after_size: tuple[int, int]) -> _FeatureFit:
    fb, f_before = _features(before_rgb, s, before_mask)
    fa, _ = _features(after_rgb, s, after_mask)
    counts = (len(fb.xy), len(fa.xy))
    for name, feats in (("before", fb), ("after", fa)):
        if len(feats.xy) < s.min_inliers:
            return _FeatureFit(None, counts, 0, 0, math.nan,
                               f"too few features in the {name} photo ({len(feats.xy)} < {s.min_inliers})",
                               "blank, blurred or overexposed?")
    ia, ib = _ratio_matches(fa, fb, s.ratio)
    if len(ia) < s.min_inliers:
        return _FeatureFit(None, counts, len(ia), 0, math.nan,
                           f"too few matching features ({len(ia)} < {s.min_inliers})",
                           "are these photos of the same region?")
    # threshold in working px of the BEFORE copy, expressed in full-resolution BEFORE px
    h, inl = cv2.findHomography(fa.xy[ia], fb.xy[ib], cv2.USAC_MAGSAC, s.ransac_threshold_px / f_before,
                                maxIters=s.ransac_max_iters, confidence=s.ransac_confidence)
    n_inl = 0 if inl is None else int(inl.sum())
    if h is None or n_inl < s.min_inliers:
        return _FeatureFit(None, counts, len(ia), n_inl, math.nan,
                           f"too few matching features ({n_inl} < {s.min_inliers}) agree on one geometry",
                           "are these photos of the same region?")
    try:
        _check_homography(h, before_size, after_size, s)
    except RegistrationError as exc:
        return _FeatureFit(None, counts, len(ia), n_inl, math.nan, str(exc))
    sel = inl.ravel().astype(bool)
    rms = float(np.sqrt(np.mean(np.sum((apply_homography(h, fa.xy[ia][sel]) - fb.xy[ib][sel]) ** 2, axis=1))))
    return _FeatureFit(h, counts, len(ia), n_inl, rms, None)


def register_photos(before_rgb: np.ndarray, after_rgb: np.ndarray, settings: RegisterSettings | None = None, *,
                    before_dots_xy: ArrayLike | None = None, after_dots_xy: ArrayLike | None = None,
                    px_per_mm: float | None = None, before_mask: np.ndarray | None = None,
                    after_mask: np.ndarray | None = None) -> Registration:
    """Register AFTER to BEFORE; raises :class:`RegistrationError` with a reason when impossible.

    ``before_rgb`` / ``after_rgb``: HxWx3 uint8 sRGB (or HxW grey). ``*_dots_xy``: ``(N, 2)``
    dot centres (px) of each photo; when both are given (close-ups) the homography is
    refined on the dot pattern, and when features fail the dot patterns are searched on
    their own (:func:`match_dot_patterns`). ``*_mask``: optional HxW bool, where features
    may be taken - pass the scalp (the ROI), so that a calibration card that moved between
    the photos cannot pull the fit its way (a mask on under 5 % of the photo is ignored).
    ``px_per_mm`` (BEFORE photo) only turns residuals into mm. ``method`` of the result:
    ``features``, ``features+dots`` or ``dots``.
    """
    s = settings or RegisterSettings()
    t0 = time.perf_counter()
    before_size = (int(before_rgb.shape[1]), int(before_rgb.shape[0]))
    after_size = (int(after_rgb.shape[1]), int(after_rgb.shape[0]))
    fit = _feature_homography(before_rgb, after_rgb, s, before_mask, after_mask, before_size, after_size)
    timings = {"features": time.perf_counter() - t0}
    warnings: list[str] = []
    h, method, n_pairs, dot_res = fit.h, "features", 0, None
    if fit.h is not None and fit.n_inliers < s.warn_inliers:
        warnings.append(f"weak registration: only {fit.n_inliers} matching features")

    use_dots = s.refine_with_dots and before_dots_xy is not None and after_dots_xy is not None
    if use_dots:
        t = time.perf_counter()
        b = np.asarray(before_dots_xy, np.float64).reshape(-1, 2)
        a = np.asarray(after_dots_xy, np.float64).reshape(-1, 2)
        candidates: list[tuple[DotFit, str]] = []
        if h is not None:
            refined = refine_on_dots(h, b, a, s)
            if refined.ok:
                candidates.append((refined, "features+dots"))
        best_tight = max((f.tight for f, _ in candidates), default=0)
        if s.pattern_search and best_tight < max(s.min_dot_pairs, s.pattern_fallback_fraction * min(len(b), len(a))):
            found = match_dot_patterns(b, a, s)
            if found is not None:
                refined = refine_on_dots(found.h, b, a, s, region=found.region)
                if refined.ok:
                    candidates.append((refined, "dots"))
        timings["dots"] = time.perf_counter() - t
        for dot_fit, name in sorted(candidates, key=lambda c: -c[0].tight):
            try:
                _check_homography(dot_fit.h, before_size, after_size, s)
            except RegistrationError as exc:
                warnings.append(f"dot registration rejected: {exc}")
                continue
            h, method, n_pairs, dot_res = dot_fit.h, name, dot_fit.tight, dot_fit.residual_px_median
            if name == "dots" and fit.h is None:
                warnings.append(f"registered on the dot pattern alone (features: {fit.failure})")
            elif name == "dots" and not any(n == "features+dots" for _, n in candidates):
                warnings = [w for w in warnings if not w.startswith("weak registration")]
                warnings.append("registered on the dot pattern: the features pointed elsewhere")
            break
        if h is not None and method == "features" and min(len(b), len(a)) >= s.min_dot_pairs:
            if fit.n_inliers < s.warn_inliers:
                # a weak feature fit that the dots contradict is more likely wrong than right
                raise RegistrationError(f"weak feature registration ({fit.n_inliers} matching features) that the "
                                        "dots do not confirm, and the dot patterns do not match on their own")
            warnings.append("the dots do not confirm the feature registration: check side_by_side.png")
    if h is None:
        more = "; the dot patterns do not match either" if use_dots else ""
        raise RegistrationError(f"{fit.failure}{more}" + (f": {fit.hint}" if fit.hint else ""))

    reg = Registration(after_to_before=_normalised(h), before_size=before_size, after_size=after_size,
                       method=method, n_features=fit.n_features, n_matches=fit.n_matches,
                       n_inliers=fit.n_inliers, feature_rms_px=fit.rms_px, dot_pairs=n_pairs,
                       dot_residual_px_median=dot_res, px_per_mm=px_per_mm, warnings=tuple(warnings),
                       timings_s=timings)
    overlap = reg.overlap_fraction()
    if overlap < s.min_overlap:
        raise RegistrationError(f"the photos barely overlap ({overlap:.0%} of the before photo)")
    timings["total"] = time.perf_counter() - t0
    return reg


# --------------------------------------------------------------------------- linking


def gated_assignment(before_xy: ArrayLike, after_xy: ArrayLike, gate: float,
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
            cost[np.arange(m), n + np.arange(m)] = g2      # BEFORE dot left unpaired
            cost[m + np.arange(n), np.arange(n)] = g2      # AFTER dot left unpaired
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
            "before_dots": len(self.before_in_view), "after_dots": len(self.after_in_view),
            "before_in_view": int(self.before_in_view.sum()), "after_in_view": int(self.after_in_view.sum()),
            "linked_fraction": num(self.linked_fraction, 4),
            "residual_px_median": num(self.residual_px_median, 3),
            "residual_px_p90": num(self._stat(self.residual_px, 90, False), 3),
            "residual_mm_median": num(self.residual_mm_median),
            "residual_mm_p90": num(self.residual_mm_p90),
            "homography_residual_mm_median": num(self._stat(self.homography_residual_px, 50, True)),
            "spacing_px": num(self.spacing_px, 3),
            "gate_px": num(self.gate_px, 3), "relink_gate_px": num(self.relink_gate_px, 3),
            "warp_links": self.warp_links,
        }


def _in_frame(xy: NDArray[np.float64], size: tuple[int, int], margin: float) -> NDArray[np.bool_]:
    w, h = size
    return (np.all(np.isfinite(xy), axis=1) & (xy[:, 0] >= margin - 0.5) & (xy[:, 0] <= w - 0.5 - margin)
            & (xy[:, 1] >= margin - 0.5) & (xy[:, 1] <= h - 0.5 - margin))


def _in_view(xy: NDArray[np.float64], size: tuple[int, int], valid: np.ndarray | None,
             margin: float) -> NDArray[np.bool_]:
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


def _smooth_warp(src: NDArray[np.float64], dst: NDArray[np.float64], spacing: float,
                 s: LinkSettings) -> RBFInterpolator | None:
    """Gaussian-RBF field of the displacement ``dst - src`` (both in the BEFORE frame), fitted
    robustly: links whose displacement is far from the typical one are left out."""
    disp = dst - src
    dev = np.linalg.norm(disp - np.median(disp, axis=0), axis=1)
    keep = dev <= max(3.0 * 1.4826 * float(np.median(dev)), 0.02 * spacing)
    if keep.sum() < s.min_warp_links:
        return None
    length = s.warp_scale * spacing
    # Coordinates scaled by the warp length: the Gaussian kernel then has unit width.
    return RBFInterpolator(src[keep] / length, disp[keep], kernel="gaussian", epsilon=1.0,
                           smoothing=s.warp_smoothing, neighbors=min(s.warp_neighbors, int(keep.sum())), degree=0)


def link_dots(before_xy: ArrayLike, after_xy: ArrayLike, after_to_before: ArrayLike,
              settings: RegisterSettings | LinkSettings | None = None, *, px_per_mm: float | None,
              before_size: tuple[int, int] | None = None, after_size: tuple[int, int] | None = None,
              before_valid: np.ndarray | None = None, after_valid: np.ndarray | None = None) -> DotLinks:
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
        after_spacing = spacing / _area_scale(h, after_size)
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
        before_idx=bi, after_idx=ai,
        residual_px=np.linalg.norm(b[bi] - a_w[ai], axis=1),
        homography_residual_px=np.linalg.norm(b[bi] - a_h[ai], axis=1),
        after_in_before=a_w,
        new_idx=np.flatnonzero(~linked_a & after_in_view),
        lost_idx=np.flatnonzero(~linked_b & before_in_view),
        before_in_view=before_in_view, after_in_view=after_in_view,
        px_per_mm=px_per_mm, spacing_px=spacing, gate_px=float(gate), relink_gate_px=float(relink_gate),
        warp_links=warp_links,
    )
