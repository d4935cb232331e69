"""Registration of two photos of the same scalp region.

The first of two stages (the second is :mod:`pipeline.two_photos.link`), each a plain function on
arrays, reused by ``smp compare`` (before ->
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

Coordinates follow ``data.metrics``: ``(x, y) = (column, row)``, pixel centres at
integers (OpenCV's convention). Nothing here draws random numbers: OpenCV's
MAGSAC++ is seeded internally and deterministic for the same input.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, cast

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

# --------------------------------------------------------------------------- registration result
from data.geometry import (
    apply_homography,
    frame_corners,
    homography_jacobian,
    is_convex_quad,
    mean_linear_scale,
    normalised_homography,
)
from pipeline.two_photos.dot_pattern import DotFit, match_dot_patterns, refine_on_dots
from pipeline.two_photos.settings import RegisterSettings, RegistrationError


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
    before_size: tuple[int, int]  # (width, height)
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
        return cast("NDArray[np.float64]", np.linalg.inv(self.after_to_before))  # numpy stubs: inv(float64) is float64

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
        j = homography_jacobian(self.after_to_before, centre_after)
        scale = math.sqrt(abs(np.linalg.det(j)))
        rot = math.degrees(math.atan2(j[1, 0] - j[0, 1], j[0, 0] + j[1, 1]))
        return scale, rot

    def overlap_fraction(self) -> float:
        """Fraction of the BEFORE photo's area that the AFTER photo also shows."""
        quad = self.to_before(frame_corners(self.after_size)).astype(np.float32)
        frame = frame_corners(self.before_size).astype(np.float32)
        area, _ = cv2.intersectConvexConvex(quad, frame)
        return float(area) / float(self.before_size[0] * self.before_size[1])

    def warp_after(
        self, image: np.ndarray, *, interpolation: int = cv2.INTER_LINEAR, border_value: float | tuple = 0
    ) -> np.ndarray:
        """An AFTER-frame image (photo, L*, mask) resampled into the BEFORE frame."""
        return cv2.warpPerspective(
            image,
            np.asarray(self.after_to_before),
            self.before_size,
            flags=interpolation,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=border_value,
        )

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
            "before_size": list(self.before_size),
            "after_size": list(self.after_size),
            "features": list(self.n_features),
            "matches": self.n_matches,
            "inliers": self.n_inliers,
            "feature_rms_px": num(self.feature_rms_px, 3),
            "dot_pairs": self.dot_pairs,
            "dot_residual_px_median": num(self.dot_residual_px_median),
            "dot_residual_mm_median": num(self.dot_residual_px_median / self.px_per_mm, 5)
            if self.dot_residual_px_median is not None and self.px_per_mm
            else None,
            "scale": num(scale, 5),
            "rotation_deg": num(rot, 3),
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
    xy: NDArray[np.float64]  # (N, 2) full-resolution pixel coordinates
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
        work_mask = cv2.resize(
            np.asarray(mask, np.uint8) * np.uint8(255), (grey.shape[1], grey.shape[0]), interpolation=cv2.INTER_NEAREST
        )
        # keep features whose descriptor window lies on the mask, not on its edge (the card's border)
        work_mask = cv2.erode(work_mask, np.ones((9, 9), np.uint8))
    sift = cv2.SIFT_create(  # type: ignore[attr-defined]  # OpenCV 5 stubs lack SIFT_create (cv2 has it)
        nfeatures=s.max_features, contrastThreshold=s.sift_contrast
    )
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


def _check_homography(
    h: NDArray[np.float64], before_size: tuple[int, int], after_size: tuple[int, int], s: RegisterSettings
) -> None:
    if not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        raise RegistrationError("the fitted homography is degenerate")
    quad = apply_homography(h, frame_corners(after_size))
    if not np.all(np.isfinite(quad)) or not is_convex_quad(quad):
        raise RegistrationError("the fitted homography folds the photo (implausible perspective)")
    scale = mean_linear_scale(h, after_size)
    if not (1 / s.max_scale_change <= scale <= s.max_scale_change):
        raise RegistrationError(
            f"implausible scale change between the photos ({scale:.2f}x, "
            f"allowed 1/{s.max_scale_change:g}-{s.max_scale_change:g}x)"
        )
    sign = np.sign(np.linalg.det(h[:2, :2] - np.outer(h[:2, 2], h[2, :2])))
    if sign <= 0:
        raise RegistrationError("the fitted homography mirrors the photo")


# --------------------------------------------------------------------------- registration


@dataclass(frozen=True)
class _FeatureFit:
    """Outcome of the feature stage: a homography, or why there is none."""

    h: NDArray[np.float64] | None
    n_features: tuple[int, int]
    n_matches: int
    n_inliers: int
    rms_px: float
    failure: str | None  # why there is no homography, e.g. "too few matching features (7 < 12)"
    hint: str = ""  # what the user might check, for the error message


def _feature_homography(
    before_rgb: np.ndarray,
    after_rgb: np.ndarray,
    s: RegisterSettings,
    before_mask: np.ndarray | None,
    after_mask: np.ndarray | None,
    before_size: tuple[int, int],
    after_size: tuple[int, int],
) -> _FeatureFit:
    fb, f_before = _features(before_rgb, s, before_mask)
    fa, _ = _features(after_rgb, s, after_mask)
    counts = (len(fb.xy), len(fa.xy))
    for name, feats in (("before", fb), ("after", fa)):
        if len(feats.xy) < s.min_inliers:
            return _FeatureFit(
                None,
                counts,
                0,
                0,
                math.nan,
                f"too few features in the {name} photo ({len(feats.xy)} < {s.min_inliers})",
                "blank, blurred or overexposed?",
            )
    ia, ib = _ratio_matches(fa, fb, s.ratio)
    if len(ia) < s.min_inliers:
        return _FeatureFit(
            None,
            counts,
            len(ia),
            0,
            math.nan,
            f"too few matching features ({len(ia)} < {s.min_inliers})",
            "are these photos of the same region?",
        )
    # threshold in working px of the BEFORE copy, expressed in full-resolution BEFORE px
    h, inl = cv2.findHomography(
        fa.xy[ia],
        fb.xy[ib],
        cv2.USAC_MAGSAC,
        s.ransac_threshold_px / f_before,
        maxIters=s.ransac_max_iters,
        confidence=s.ransac_confidence,
    )
    n_inl = 0 if inl is None else int(inl.sum())
    if h is None or n_inl < s.min_inliers:
        return _FeatureFit(
            None,
            counts,
            len(ia),
            n_inl,
            math.nan,
            f"too few matching features ({n_inl} < {s.min_inliers}) agree on one geometry",
            "are these photos of the same region?",
        )
    try:
        _check_homography(h, before_size, after_size, s)
    except RegistrationError as exc:
        return _FeatureFit(None, counts, len(ia), n_inl, math.nan, str(exc))
    sel = inl.ravel().astype(bool)
    rms = float(np.sqrt(np.mean(np.sum((apply_homography(h, fa.xy[ia][sel]) - fb.xy[ib][sel]) ** 2, axis=1))))
    return _FeatureFit(h, counts, len(ia), n_inl, rms, None)


def register_photos(
    before_rgb: np.ndarray,
    after_rgb: np.ndarray,
    settings: RegisterSettings | None = None,
    *,
    before_dots_xy: ArrayLike | None = None,
    after_dots_xy: ArrayLike | None = None,
    px_per_mm: float | None = None,
    before_mask: np.ndarray | None = None,
    after_mask: np.ndarray | None = None,
) -> Registration:
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
                raise RegistrationError(
                    f"weak feature registration ({fit.n_inliers} matching features) that the "
                    "dots do not confirm, and the dot patterns do not match on their own"
                )
            warnings.append("the dots do not confirm the feature registration: check side_by_side.png")
    if h is None:
        more = "; the dot patterns do not match either" if use_dots else ""
        raise RegistrationError(f"{fit.failure}{more}" + (f": {fit.hint}" if fit.hint else ""))

    reg = Registration(
        after_to_before=normalised_homography(h),
        before_size=before_size,
        after_size=after_size,
        method=method,
        n_features=fit.n_features,
        n_matches=fit.n_matches,
        n_inliers=fit.n_inliers,
        feature_rms_px=fit.rms_px,
        dot_pairs=n_pairs,
        dot_residual_px_median=dot_res,
        px_per_mm=px_per_mm,
        warnings=tuple(warnings),
        timings_s=timings,
    )
    overlap = reg.overlap_fraction()
    if overlap < s.min_overlap:
        raise RegistrationError(f"the photos barely overlap ({overlap:.0%} of the before photo)")
    timings["total"] = time.perf_counter() - t0
    return reg
