"""Reference definitions of the per-photo metrics (docs/metrics.md).

The synthetic generator computes its ground truth with these functions and the pipeline
computes its measurements with the same ones, so a benchmark compares like with like.
Everything here is a pure function on arrays; results are frozen dataclasses whose
``to_dict()`` gives JSON-ready values (Python floats/ints or ``None``).

Conventions
-----------
* Images are indexed ``[row, col]``; a point is ``(x, y) = (col, row)`` in pixels and the
  **centre** of pixel ``[i, j]`` is at ``(x, y) = (j, i)`` (OpenCV's convention). A point
  falls in pixel ``[floor(y + 0.5), floor(x + 0.5)]``.
* Label maps hold the segmentation classes ``0 background``, ``1 scalp``, ``2 hair``.
  ROI = scalp or hair, optionally intersected with a user polygon.
* Lengths on the scalp are in mm on the *scalp plane* described by a :class:`PlaneScale`;
  densities are per cm^2; luminance is CIE L* (0..100, see :mod:`data.colour`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, cast

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from data.geometry import apply_homography

__all__ = [
    "BACKGROUND",
    "SCALP",
    "HAIR",
    "FLAG_NAMES",
    "DOT_COLOUR_COLUMNS",
    "DIRECT_MAX_SIGMA_PX",
    "PlaneScale",
    "DotPatternMetrics",
    "PhotoMetrics",
    "roi_mask",
    "roi_geometry",
    "dots_in_roi",
    "viewing_lstar",
    "show_through",
    "dot_pattern_metrics",
    "photo_metrics",
]

BACKGROUND = 0
SCALP = 1
HAIR = 2

#: Per-dot flags whose per-photo fractions are reported (``<name>_fraction``).
FLAG_NAMES: tuple[str, ...] = ("blue_shift", "faded", "spread")
#: A dot's colour against its own skin and its flags: the columns the truth's dots and the measured
#: dots (``dots.csv``) share, in this order (docs/metrics.md).
DOT_COLOUR_COLUMNS: tuple[str, ...] = (
    "L",
    "a",
    "b",
    "skin_L",
    "skin_a",
    "skin_b",
    "contrast_dL",
    "dE00",
    "blue_index",
    *FLAG_NAMES,
)

#: Up to this Gaussian sigma (pixels) the viewing-scale blur runs at full resolution;
#: above it, on a block-downsampled copy (see :func:`viewing_lstar`).
DIRECT_MAX_SIGMA_PX = 6.0

#: The Gaussian kernel is truncated at this many sigmas on each side.
_TRUNCATE_SIGMAS = 4.0


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None  # JSON has no NaN/inf


class _ToDict:
    """Mixin for the result dataclasses: ``to_dict()`` with JSON-ready values."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _json_value(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


# --------------------------------------------------------------------------- scale


Matrix3 = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]


@dataclass(frozen=True)
class PlaneScale:
    """How image pixels map to millimetres on the scalp plane.

    Two forms:

    * uniform: ``image_to_plane is None``; plane mm = pixel coordinates / ``px_per_mm``.
    * projective: ``image_to_plane`` is a 3x3 homography taking homogeneous image pixel
      coordinates ``(x, y, 1)`` to homogeneous plane coordinates in mm (for instance from
      the calibration card); ``px_per_mm`` is then the *nominal* scale (for example at the
      card or the ROI centre), used where one number is needed (the viewing-scale blur).

    The homography is stored as a tuple of tuples so that the object is immutable and
    hashable; :attr:`homography` returns it as an array.
    """

    px_per_mm: float
    image_to_plane: Matrix3 | None = None

    def __post_init__(self) -> None:
        ppm = float(self.px_per_mm)
        if not (math.isfinite(ppm) and ppm > 0):
            raise ValueError(f"px_per_mm must be a positive finite number, got {self.px_per_mm!r}")
        object.__setattr__(self, "px_per_mm", ppm)
        if self.image_to_plane is not None:
            h = np.asarray(self.image_to_plane, dtype=np.float64)
            if h.shape != (3, 3) or not np.all(np.isfinite(h)):
                raise ValueError(f"image_to_plane must be a finite 3x3 matrix, got shape {h.shape}")
            if abs(np.linalg.det(h)) < 1e-300:
                raise ValueError("image_to_plane is singular")
            object.__setattr__(self, "image_to_plane", tuple(tuple(float(v) for v in row) for row in h))

    @classmethod
    def uniform(cls, px_per_mm: float) -> PlaneScale:
        """A uniform scale of ``px_per_mm`` image pixels per plane millimetre."""
        return cls(px_per_mm=px_per_mm)

    @classmethod
    def from_homography(cls, image_to_plane: ArrayLike, nominal_px_per_mm: float) -> PlaneScale:
        """A projective scale: 3x3 ``image_to_plane`` (px -> mm) plus its nominal px/mm."""
        return cls(px_per_mm=nominal_px_per_mm, image_to_plane=image_to_plane)  # type: ignore[arg-type]

    @property
    def nominal_px_per_mm(self) -> float:
        """One representative scale (px per mm): exact when uniform, nominal otherwise."""
        return self.px_per_mm

    @property
    def is_uniform(self) -> bool:
        return self.image_to_plane is None

    @property
    def homography(self) -> NDArray[np.float64] | None:
        """``image_to_plane`` as a new 3x3 float64 array, or ``None`` when uniform."""
        return None if self.image_to_plane is None else np.array(self.image_to_plane, dtype=np.float64)

    def to_plane_mm(self, xy_px: ArrayLike) -> NDArray[np.float64]:
        """Map image points ``(N, 2)`` (x, y in px) to scalp-plane points ``(N, 2)`` in mm."""
        xy = np.asarray(xy_px, dtype=np.float64).reshape(-1, 2)
        h = self.homography
        if h is None:
            return xy / self.px_per_mm
        return apply_homography(h, xy)

    def pixel_area_mm2(self, shape: tuple[int, ...]) -> float | NDArray[np.float32]:
        """Plane area (mm^2) covered by each pixel of an image of ``shape`` (H, W, ...).

        Uniform: the float ``1 / px_per_mm**2``. Projective: an ``(H, W)`` float32 array of
        ``|det J|`` of the image -> plane map at every pixel centre, in closed form: for
        ``H = image_to_plane`` and ``w(x, y) = H[2,0] x + H[2,1] y + H[2,2]``,
        ``det J = det(H) / w**3`` (invariant to the overall scale of ``H``). It is built
        by broadcasting one row of x and one column of y, so a 12-megapixel image costs
        one float32 buffer (48 MB).
        """
        h = self.homography
        if h is None:
            return 1.0 / (self.px_per_mm * self.px_per_mm)
        rows, cols = int(shape[0]), int(shape[1])
        det = abs(float(np.linalg.det(h)))
        x = np.arange(cols, dtype=np.float64) * h[2, 0]
        y = np.arange(rows, dtype=np.float64) * h[2, 1] + h[2, 2]
        # |w| ** 3 in float32, computed in place.
        area = np.abs((y[:, None] + x[None, :]).astype(np.float32))
        cube = area * area
        cube *= area
        np.divide(np.float32(det), cube, out=area)
        return area


# --------------------------------------------------------------------------- ROI


def roi_mask(label_map: ArrayLike, polygon: ArrayLike | None = None) -> NDArray[np.bool_]:
    """ROI = pixels of class scalp (1) or hair (2), optionally intersected with a polygon.

    ``polygon`` is ``(K, 2)`` vertices (x, y) in pixels, K >= 3. It is rasterised with
    ``cv2.fillPoly`` (8-connected, vertices kept to 1/16 px), which fills the interior and
    the pixels the outline passes through.
    """
    labels = np.asarray(label_map)
    if labels.ndim != 2:
        raise ValueError(f"label_map must be 2-D, got shape {labels.shape}")
    roi = (labels == SCALP) | (labels == HAIR)
    if polygon is None:
        return roi
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(poly) < 3:
        raise ValueError(f"polygon needs at least 3 vertices, got {len(poly)}")
    shift = 4
    pts = np.round(poly * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
    inside = np.zeros(labels.shape, dtype=np.uint8)
    cv2.fillPoly(inside, [pts], 1, lineType=cv2.LINE_8, shift=shift)
    return roi & inside.astype(bool)


def _boundary_length(polygons: list[NDArray], scale: PlaneScale) -> float:
    """Summed length in plane mm of closed polylines (vertices in px); all mapped at once."""
    polygons = [p for p in polygons if len(p) >= 2]
    if not polygons:
        return 0.0
    sizes = np.array([len(p) for p in polygons])
    pts = scale.to_plane_mm(np.concatenate(polygons).astype(np.float64))
    nxt = np.arange(1, len(pts) + 1)
    ends = np.cumsum(sizes)
    nxt[ends - 1] = ends - sizes  # each polygon closes on its first vertex
    return float(np.sum(np.hypot(*(pts[nxt] - pts).T)))


def roi_geometry(roi: ArrayLike, scale: PlaneScale) -> tuple[float, float]:
    """``(area_mm2, perimeter_mm)`` of the ROI on the scalp plane.

    * Area: the sum over ROI pixels of :meth:`PlaneScale.pixel_area_mm2`.
    * Perimeter: every boundary of the ROI - outer outlines and the outlines of holes -
      found by ``cv2.findContours`` (``RETR_LIST``, ``CHAIN_APPROX_NONE``); each contour is
      the closed 8-connected chain through the centres of boundary pixels; its staircase
      is straightened with ``cv2.approxPolyDP`` (tolerance 1 px), the vertices are mapped
      to plane mm and the closed polyline lengths are summed. (Through pixel centres, it
      runs about half a pixel inside the pixel-edge boundary: a square of n x n pixels
      has perimeter 4 (n - 1) px.)
    """
    mask = np.asarray(roi, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"roi must be 2-D, got shape {mask.shape}")
    if not mask.any():
        return 0.0, 0.0
    pixel_area = scale.pixel_area_mm2(mask.shape)
    if isinstance(pixel_area, float):
        area = float(np.count_nonzero(mask)) * pixel_area
    else:
        area = float(np.sum(pixel_area, where=mask, dtype=np.float64))
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    polys = [(cv2.approxPolyDP(c, 1.0, True) if len(c) > 2 else c).reshape(-1, 2) for c in contours]
    return area, _boundary_length(polys, scale)


def dots_in_roi(dots_xy_px: ArrayLike, roi: ArrayLike) -> NDArray[np.bool_]:
    """``(N,)`` bool: whether each dot's centre pixel ``[floor(y+.5), floor(x+.5)]`` is in the ROI.

    Dots whose centre lies outside the image, or is not finite, are not in the ROI.
    """
    mask = np.asarray(roi, dtype=bool)
    xy = np.asarray(dots_xy_px, dtype=np.float64).reshape(-1, 2)
    out = np.zeros(len(xy), dtype=bool)
    finite = np.all(np.isfinite(xy), axis=1)
    cols = np.floor(xy[finite, 0] + 0.5)
    rows = np.floor(xy[finite, 1] + 0.5)
    inside = (rows >= 0) & (rows < mask.shape[0]) & (cols >= 0) & (cols < mask.shape[1])
    idx = np.flatnonzero(finite)[inside]
    out[idx] = mask[rows[inside].astype(np.intp), cols[inside].astype(np.intp)]
    return out


# --------------------------------------------------------------------------- show-through


def _gaussian(image: NDArray[np.float32], sigma_px: float) -> NDArray[np.float32]:
    """Gaussian blur, kernel truncated at 4 sigma, zeros outside the image."""
    ksize = 2 * math.ceil(_TRUNCATE_SIGMAS * sigma_px) + 1
    # cv2 keeps the depth: float32 in, float32 out
    return cast(
        NDArray[np.float32],
        cv2.GaussianBlur(image, (ksize, ksize), sigmaX=sigma_px, sigmaY=sigma_px, borderType=cv2.BORDER_CONSTANT),
    )


def _block_mean(image: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    """Mean over k x k blocks, after padding the bottom/right with zeros to a multiple of k.

    ``cv2.resize`` with ``INTER_AREA`` and an integer factor is exactly the block mean (and
    much faster than a numpy reshape-sum for small k).
    """
    rows, cols = image.shape
    pr, pc = -rows % k, -cols % k
    if pr or pc:
        image = cast(NDArray[np.float32], cv2.copyMakeBorder(image, 0, pr, 0, pc, cv2.BORDER_CONSTANT, value=0))
    size = (image.shape[1] // k, image.shape[0] // k)  # cv2 wants (width, height)
    return cast(NDArray[np.float32], cv2.resize(image, size, interpolation=cv2.INTER_AREA))  # keeps float32


def viewing_lstar(
    lstar: ArrayLike,
    roi: ArrayLike,
    sigma_px: float,
    *,
    direct_max_sigma_px: float = DIRECT_MAX_SIGMA_PX,
) -> NDArray[np.float32]:
    """L* as seen at viewing scale: a Gaussian mean of L* over the ROI only (float32, NaN outside).

    Algorithm (normalised convolution, so pixels outside the ROI - card, background,
    anything beyond the image edge - carry no weight):

    ``L_view = G_sigma * (L* . roi) / G_sigma * roi`` on ROI pixels, NaN elsewhere, where
    ``G_sigma`` is a Gaussian of standard deviation ``sigma_px`` truncated at 4 sigma, and
    outside the image counts as zero (``cv2.BORDER_CONSTANT``). Both blurs are
    ``cv2.GaussianBlur`` on float32.

    * ``sigma_px <= direct_max_sigma_px`` (default 6): both blurs at full resolution.
    * larger sigma: with ``k = max(2, floor(sigma_px / 3))``, ``L* . roi`` and ``roi`` are
      averaged over k x k blocks (zero-padded bottom/right to a multiple of k), each block
      image is blurred with ``sigma_lo = sqrt(sigma_px**2 - (k**2 - 1) / 12) / k`` (the
      block mean already contributes variance (k^2 - 1)/12 px^2), both are resized back to full
      resolution with bilinear interpolation (``cv2.resize``, block centres at
      ``k i + (k - 1)/2``) and divided. The weights stay non-negative, so the result is
      still a weighted mean of ROI values only; it agrees with the direct path to a
      fraction of an L* unit away from sharp ROI edges, at a fraction of the cost.
    * ``sigma_px <= 0``: no blur, ``L_view = L*`` on the ROI.
    """
    lum = np.asarray(lstar, dtype=np.float32)
    mask = np.asarray(roi, dtype=bool)
    if lum.shape != mask.shape or lum.ndim != 2:
        raise ValueError(f"lstar {lum.shape} and roi {mask.shape} must be 2-D of the same shape")
    if not mask.any():
        return np.full(lum.shape, np.nan, dtype=np.float32)
    if sigma_px <= 0:
        return np.where(mask, lum, np.float32(np.nan))
    bands = list(_viewing_bands(lum, mask, sigma_px, direct_max_sigma_px))
    if len(bands) == 1:
        return bands[0][1]
    out = np.empty(lum.shape, np.float32)
    for r0, band in bands:
        out[r0 : r0 + len(band)] = band
    return out


#: Rows of the full-resolution viewing L* formed at a time on the block-mean path: a 48 MP photo's
#: frame is 192 MB of float32 and the blurred numerator and denominator were the assessment's
#: memory peak; bands of this many rows cost a few MB and give the same values bit for bit.
VIEW_BAND_ROWS = 512


def _viewing_bands(
    lum: NDArray[np.float32],
    mask: NDArray[np.bool_],
    sigma_px: float,
    direct_max_sigma_px: float,
    band_rows: int = VIEW_BAND_ROWS,
):
    """:func:`viewing_lstar` of a non-empty ROI and ``sigma_px > 0`` as ``(first row, rows)`` bands
    (one band on the direct path)."""
    rows, cols = lum.shape
    if sigma_px <= direct_max_sigma_px:
        num_b = _gaussian(np.where(mask, lum, np.float32(0)), sigma_px)
        den_b = _gaussian(mask.astype(np.float32), sigma_px)
        yield 0, _quotient(num_b, den_b, mask)
        return
    k = max(2, int(sigma_px // 3))
    sigma_lo = math.sqrt(sigma_px**2 - (k * k - 1) / 12.0) / k
    # the block means, formed a band of whole blocks at a time (never a full-frame float copy)
    step = max(k, band_rows // k * k)
    num_lo = _gaussian(
        np.vstack(
            [
                _block_mean(np.where(mask[r : r + step], lum[r : r + step], np.float32(0)), k)
                for r in range(0, rows, step)
            ]
        ),
        sigma_lo,
    )
    den_lo = _gaussian(
        np.vstack([_block_mean(mask[r : r + step].astype(np.float32), k) for r in range(0, rows, step)]), sigma_lo
    )
    n_lo = num_lo.shape[0]
    width = num_lo.shape[1] * k  # cv2 wants (width, height)
    for r0 in range(0, rows, band_rows):
        r1 = min(rows, r0 + band_rows)
        # bilinear upsampling by k reads, for output row r, the block rows around (r + 0.5) / k - 0.5:
        # resizing only the block rows a band needs (whole blocks, so the interpolation weights are
        # the same) gives exactly the rows of the full-frame resize
        a = max(0, math.floor((r0 + 0.5) / k - 0.5))
        b = min(n_lo, math.floor((r1 - 0.5) / k - 0.5) + 2)
        size = (width, (b - a) * k)
        # (cv2.resize keeps float32)
        num_b = cast(NDArray[np.float32], cv2.resize(num_lo[a:b], size, interpolation=cv2.INTER_LINEAR))[
            r0 - a * k : r1 - a * k, :cols
        ]
        den_b = cast(NDArray[np.float32], cv2.resize(den_lo[a:b], size, interpolation=cv2.INTER_LINEAR))[
            r0 - a * k : r1 - a * k, :cols
        ]
        yield r0, _quotient(np.ascontiguousarray(num_b), np.ascontiguousarray(den_b), mask[r0:r1])


def _quotient(num_b: NDArray[np.float32], den_b: NDArray[np.float32], mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    """``num_b / den_b`` in place, NaN outside ``mask``."""
    # A ROI pixel always has positive weight (its own tap); guard against float underflow.
    # Whole-band arithmetic, then NaN outside the ROI: boolean gathers of a 12 MP frame cost more.
    np.maximum(den_b, np.float32(1e-12), out=den_b)
    out = np.divide(num_b, den_b, out=num_b)
    np.copyto(out, np.float32(np.nan), where=~mask)
    return out


def show_through(
    lstar: ArrayLike,
    skin_ref_lstar: ArrayLike | float,
    roi: ArrayLike,
    px_per_mm: float,
    *,
    dl_threshold: float,
    sigma_mm: float = 0.5,
) -> float | None:
    """``show_through``: fraction of ROI pixels that read as bare skin at viewing scale.

    1. ``L_view = viewing_lstar(lstar, roi, sigma_mm * px_per_mm)`` (Gaussian mean of L*
       over the ROI only, sigma = 0.5 mm by default; see :func:`viewing_lstar`).
    2. A ROI pixel shows through when ``L_view >= skin_ref - dl_threshold``: it is within
       ``dl_threshold`` L* units of the local bare-skin reference, or brighter than it.
    3. ``show_through = (# ROI pixels that show through) / (# ROI pixels)``, where ROI pixels
       whose reference is NaN (unknown) are left out of both counts.

    ``lstar``: HxW CIE L* of the colour-corrected photo. ``skin_ref_lstar``: HxW array or a
    scalar, L* of the bare skin around each pixel. ``px_per_mm``: the (nominal) scale.
    ``dl_threshold`` (L* units) has no default: it comes from the assessment config.
    Returns ``None`` when no ROI pixel has a reference.
    """
    lum = np.asarray(lstar, dtype=np.float32)
    mask = np.asarray(roi, dtype=bool)
    ref = np.broadcast_to(np.asarray(skin_ref_lstar, dtype=np.float32), lum.shape)
    mask = mask & np.isfinite(ref)
    n_roi = int(np.count_nonzero(mask))
    if n_roi == 0:
        return None
    sigma_px = float(sigma_mm) * float(px_per_mm)
    if sigma_px <= 0:
        bands = iter([(0, np.where(mask, lum, np.float32(np.nan)))])
    else:
        bands = _viewing_bands(lum, mask, sigma_px, DIRECT_MAX_SIGMA_PX)
    n_shows = 0
    for r0, view in bands:  # (band by band: no full-frame float temporaries on a large photo)
        r1 = r0 + len(view)
        with np.errstate(invalid="ignore"):  # NaN outside the ROI compares False
            n_shows += int(np.count_nonzero((view >= ref[r0:r1] - np.float32(dl_threshold)) & mask[r0:r1]))
    return float(n_shows) / n_roi


# --------------------------------------------------------------------------- dot pattern


@dataclass(frozen=True)
class DotPatternMetrics(_ToDict):
    """Spatial pattern of the dots in the ROI (units of the input coordinates; mm normally)."""

    dot_count: int
    #: dots per cm^2 of ROI area; None without an area.
    dot_density_per_cm2: float | None
    #: median nearest-neighbour distance; None for fewer than 2 dots.
    nn_distance_mm_median: float | None
    #: std / mean of the nearest-neighbour distances (population std); None for < 2 dots.
    spacing_cv: float | None
    #: Clark-Evans aggregation index with Donnelly's edge correction; None for < 2 dots.
    clark_evans_r: float | None


def dot_pattern_metrics(
    dots_plane_mm: ArrayLike,
    roi_area_mm2: float | None,
    roi_perimeter_mm: float | None,
) -> DotPatternMetrics:
    """Count, density and spacing statistics of dot centres on the scalp plane.

    ``dots_plane_mm``: ``(N, 2)`` dot centres in plane mm (already restricted to the ROI).

    * ``dot_count = N``.
    * ``dot_density_per_cm2 = N / (roi_area_mm2 / 100)``; None when the area is None or 0.
    * nearest-neighbour distance of each dot: ``cKDTree.query(k=2)`` (the nearest other dot);
      ``nn_distance_mm_median`` = their median, ``spacing_cv`` = population std / mean.
    * ``clark_evans_r = mean(nn) / r_E`` with Donnelly's (1978) edge-corrected expectation
      under complete spatial randomness for a region of area A and perimeter P:
      ``r_E = 0.5 sqrt(A / N) + (0.0514 + 0.041 / sqrt(N)) P / N``.
      ~1: random; < 1: clustered; > 1: regular (square lattice ~2.0, hexagonal ~2.15
      before edge correction). None when the area or perimeter is None or the area is 0.

    Everything but ``dot_count`` is None for fewer than 2 dots (the density is still given
    for 0 or 1 dot when the area is known).
    """
    pts = np.asarray(dots_plane_mm, dtype=np.float64).reshape(-1, 2)
    n = len(pts)
    area = float(roi_area_mm2) if roi_area_mm2 is not None and roi_area_mm2 > 0 else None
    density = n / (area / 100.0) if area is not None else None
    if n < 2:
        return DotPatternMetrics(n, density, None, None, None)
    nn, _ = cKDTree(pts).query(pts, k=2)
    nn = nn[:, 1]  # column 0 is the point itself
    mean_nn = float(np.mean(nn))
    cv = float(np.std(nn)) / mean_nn if mean_nn > 0 else None
    ce = None
    if area is not None and roi_perimeter_mm is not None:
        edge_term = (0.0514 + 0.041 / math.sqrt(n)) * float(roi_perimeter_mm) / n
        ce = mean_nn / (0.5 * math.sqrt(area / n) + edge_term)
    return DotPatternMetrics(n, density, float(np.median(nn)), cv, ce)


# --------------------------------------------------------------------------- one photo


@dataclass(frozen=True)
class PhotoMetrics(_ToDict):
    """The per-photo metrics (docs/metrics.md); None where undefined."""

    scalp_fraction: float | None
    show_through: float | None
    dot_count: int | None
    dot_density_per_cm2: float | None
    dot_diameter_mm_median: float | None
    nn_distance_mm_median: float | None
    spacing_cv: float | None
    clark_evans_r: float | None
    blue_shift_fraction: float | None
    faded_fraction: float | None
    spread_fraction: float | None
    #: counted dots too small to measure their colour (never flagged; the flag fractions leave them out)
    dots_not_measurable: int | None = None


def photo_metrics(
    label_map: ArrayLike,
    dots_xy_px: ArrayLike,
    dot_diameter_mm: ArrayLike | None,
    flags: Mapping[str, ArrayLike],
    lstar: ArrayLike,
    skin_ref_lstar: ArrayLike | float,
    scale: PlaneScale | None,
    show_through_dl: float,
    polygon: ArrayLike | None = None,
    *,
    show_through_sigma_mm: float = 0.5,
    unscaled_sigma_px: float | None = None,
    measurable: ArrayLike | None = None,
) -> PhotoMetrics:
    """All per-photo metrics from a label map, the detected dots and the L* image.

    Inputs: ``label_map`` HxW classes; ``dots_xy_px`` ``(N, 2)`` dot centres (x, y) px;
    ``dot_diameter_mm`` ``(N,)`` (NaN or None where unknown); ``flags`` maps each of
    ``blue_shift``, ``faded``, ``spread`` to an ``(N,)`` bool array; ``lstar`` HxW L* of the
    colour-corrected photo; ``skin_ref_lstar`` HxW or scalar bare-skin reference L*;
    ``scale`` the plane scale or None; ``show_through_dl`` the configured dL* threshold;
    ``polygon`` optional ``(K, 2)`` px polygon limiting the ROI.

    * ROI = :func:`roi_mask`. ``scalp_fraction`` = scalp px / ROI px (None if ROI empty).
    * Only dots whose centre pixel is in the ROI count (:func:`dots_in_roi`).
    * ``show_through``: :func:`show_through` with sigma = ``show_through_sigma_mm`` at the
      scale's nominal px/mm. Without a scale it uses ``unscaled_sigma_px`` (pixels) when
      given - the caller's explicit choice, e.g. a view's typical px/mm times 0.5 mm - and
      is None otherwise: we do not guess a viewing scale.
    * Dot pattern: :func:`dot_pattern_metrics` on the dots mapped to plane mm, with the
      ROI area and perimeter of :func:`roi_geometry`. Without a scale, the quantities with
      units (``dot_density_per_cm2``, ``nn_distance_mm_median``) are None, while the
      dimensionless ``spacing_cv`` and ``clark_evans_r`` are computed in pixel units
      (exact for a fronto-parallel photo).
    * ``dot_diameter_mm_median``: median of the finite diameters of the counted dots (None
      when there are none; pass NaN/None diameters when no scale gave them in mm).
    * ``<flag>_fraction`` = counted measurable dots with the flag / counted measurable dots
      (``measurable``: ``(N,)`` bool, dots large enough to measure their colour; all when
      None); None with no measurable dots. ``dots_not_measurable`` counts the others.
    """
    labels = np.asarray(label_map)
    roi = roi_mask(labels, polygon)
    n_roi = int(np.count_nonzero(roi))
    scalp_fraction = float(np.count_nonzero(roi & (labels == SCALP))) / n_roi if n_roi else None

    xy = np.asarray(dots_xy_px, dtype=np.float64).reshape(-1, 2)
    n_all = len(xy)
    missing = [name for name in FLAG_NAMES if name not in flags]
    if missing:
        raise ValueError(f"flags lacks {', '.join(missing)}; expected keys {', '.join(FLAG_NAMES)}")
    flag_arrays = {name: np.asarray(flags[name], dtype=bool).reshape(-1) for name in FLAG_NAMES}
    for name, arr in flag_arrays.items():
        if len(arr) != n_all:
            raise ValueError(f"flags[{name!r}] has {len(arr)} entries for {n_all} dots")
    if dot_diameter_mm is None:
        diameters = np.full(n_all, np.nan)
    else:
        diameters = np.asarray(dot_diameter_mm, dtype=np.float64).reshape(-1)
        if len(diameters) != n_all:
            raise ValueError(f"dot_diameter_mm has {len(diameters)} entries for {n_all} dots")

    counted = dots_in_roi(xy, roi)
    n_dots = int(np.count_nonzero(counted))

    if scale is not None:
        sigma_px: float | None = show_through_sigma_mm * scale.nominal_px_per_mm
    else:
        sigma_px = unscaled_sigma_px
    if sigma_px is None:
        st = None
    else:
        # sigma in px, hence px_per_mm = 1 and sigma_mm = sigma_px.
        st = show_through(lstar, skin_ref_lstar, roi, 1.0, dl_threshold=show_through_dl, sigma_mm=sigma_px)

    geometry_scale = scale if scale is not None else PlaneScale.uniform(1.0)
    area, perimeter = roi_geometry(roi, geometry_scale)
    pattern = dot_pattern_metrics(geometry_scale.to_plane_mm(xy[counted]), area, perimeter)

    finite_d = diameters[counted]
    finite_d = finite_d[np.isfinite(finite_d)]
    diameter_median = float(np.median(finite_d)) if len(finite_d) else None

    meas = np.ones(n_all, bool) if measurable is None else np.asarray(measurable, bool).reshape(-1)
    if len(meas) != n_all:
        raise ValueError(f"measurable has {len(meas)} entries for {n_all} dots")
    judged = counted & meas
    n_judged = int(np.count_nonzero(judged))
    fractions = {
        name: (float(np.count_nonzero(arr[judged])) / n_judged if n_judged else None)
        for name, arr in flag_arrays.items()
    }
    return PhotoMetrics(
        scalp_fraction=scalp_fraction,
        show_through=st,
        dot_count=n_dots,
        dot_density_per_cm2=pattern.dot_density_per_cm2 if scale is not None else None,
        dot_diameter_mm_median=diameter_median,
        nn_distance_mm_median=pattern.nn_distance_mm_median if scale is not None else None,
        spacing_cv=pattern.spacing_cv,
        clark_evans_r=pattern.clark_evans_r,
        blue_shift_fraction=fractions["blue_shift"],
        faded_fraction=fractions["faded"],
        spread_fraction=fractions["spread"],
        dots_not_measurable=n_dots - n_judged,
    )
