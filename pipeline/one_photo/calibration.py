"""Calibration from the printed card SMP-CARD-1: physical scale and colour correction.

One call, :func:`calibrate`, turns an 8-bit sRGB photo into a :class:`Calibration`:

* **scale** - the card's ArUco marker gives a homography between the card plane (which
  lies on the scalp) and the image; ``px_per_mm`` is ``sqrt|det J|`` of the card-plane ->
  image map at the *image centre* (the definition the synthetic truth uses), and
  ``image_to_plane`` maps any pixel to scalp-plane millimetres (:class:`data.metrics.PlaneScale`).
* **colour** - the twelve patches, measured in linear light, fit a correction (3x3 matrix,
  per-channel gains or a root-polynomial) to the card's reference colours, with residual
  CIEDE2000 on the patches (fit and leave-one-out).
* **fallbacks** - no card: the scale comes from a manual ``--px-per-mm`` or is absent, and
  colours are not corrected; every fallback is said in ``warnings``, never a silent guess.

Every stage is a pure function on arrays that can be tested alone: :func:`find_card`,
:func:`scale_from_card` (:func:`manual_scale`, :func:`no_scale`), :func:`measure_patches`,
:func:`fit_colour_correction` (:func:`no_colour_correction`). Results are frozen dataclasses
with read-only arrays.

Conventions: pixel coordinates follow OpenCV (the centre of pixel (row i, column j) is at
x = j, y = i); card coordinates are the millimetres of :mod:`data.card`; linear RGB is
linear sRGB (D65) with white = 1.0; Lab is CIELAB D65 from :mod:`data.colour`.

Measurement details (why they are not one library call):

* Marker corners. ``cv2.aruco`` finds the marker on a downscaled grey image (fast on
  12 MP photos). Its corners, and ``cv2.cornerSubPix`` on an L-shaped corner, are biased
  by blur: a blurred corner is rounded, and an sRGB-encoded edge's mid-grey is not the
  edge's middle in light. So the corners are refined at full resolution on a *linear-light*
  crop: ``cornerSubPix`` first, then each of the four outer edges of the marker is located
  along ~100 profiles across it (area-balance edge position, unbiased for any symmetric
  blur), a straight line is fitted to each edge (``cv2.fitLine``, Huber) and the corners
  are the lines' intersections. On generator close-ups this takes the corner error from
  ~1.2 px (ArUco) / ~0.2 px (linear ``cornerSubPix``) to ~0.03 px, and the px/mm error at
  the image centre from ~0.8 % / ~0.13 % to ~0.05 % (median).
* Homography. Four corners 10 mm apart leave the perspective poorly pinned down, and
  px/mm is wanted at the image centre, often several marker widths away (0.05 px of
  corner noise gave up to 0.53 % there on 40 generator close-ups). So the homography is
  refined on every straight edge of the card's design that contrasts with the paper
  (marker border and patch sides, up to 42 mm apart): each is located along profiles as
  above, and the homography minimising the points' distances to their design lines is
  fitted (``scipy.optimize.least_squares``, soft-L1 loss against hair or glare). On the
  same 40 close-ups: px/mm error median 0.019 %, max 0.097 % (marker only: 0.075 %, 0.53 %).
* Patches. The inner part of each patch is sampled in the photo through the homography
  (only the pixels in each patch's bounding box are touched), decoded to linear light and
  averaged with a per-channel trimmed mean (glare, dust, hair). A patch partly outside the
  photo, or with clipped pixels beyond the trimmed fraction, is not used.
* Flat field. Light falls off across a 48 mm card (lamp gradient, vignetting), which a
  global colour correction cannot absorb. The white paper between and around the patches
  is sampled, a plane ``a + b x + c y`` (card mm) is fitted to its luminance, and each
  patch is divided by the plane's value at the patch relative to the patch grid's centre.
  On generator close-ups this lowers the fit and leave-one-out residuals by a quarter to a third.
* Fit. The correction is fitted by nonlinear least squares on the CIELAB difference to
  the references (``scipy.optimize.least_squares``, started from a luminance-weighted
  linear least-squares fit): a plain least-squares fit in linear RGB lets the bright
  patches dominate and generalises worse (leave-one-out) to dark colours such as pigment.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import Field
from scipy.optimize import least_squares

from data.card import (
    CardSpec,
    marker_corners_mm,
    paper_rect_mm,
    patch_rects_mm,
    reference_lab,
)
from data.colour import (
    RGB_TO_XYZ,
    delta_e00,
    lab_to_linear_rgb,
    linear_rgb_to_lab,
    lstar_from_luminance,
    luminance_lstar,
    srgb_to_linear,
)
from data.config import Settings
from data.metrics import PlaneScale

__all__ = [
    "ColourModel",
    "ScaleSource",
    "ColourSource",
    "CalibrationSettings",
    "CardDetection",
    "ScaleCalibration",
    "ColourCorrection",
    "Calibration",
    "find_card",
    "scale_from_card",
    "manual_scale",
    "no_scale",
    "measure_patches",
    "fit_colour_correction",
    "no_colour_correction",
    "calibrate",
    "NO_SCALE_WARNING",
    "NO_COLOUR_WARNING",
]

ColourModel = Literal["diagonal", "matrix3x3", "root_polynomial2"]
ScaleSource = Literal["card", "manual", "none"]
ColourSource = Literal["card", "none"]

NO_SCALE_WARNING = (
    "no calibration card found and no --px-per-mm given: dot density and sizes in mm are not available"
)
NO_COLOUR_WARNING = "no card: colours are not corrected; pigment colour is not comparable across photos"

#: The fewest usable patches each model is fitted from (1, 3 and 6 coefficients per output
#: channel; with fewer patches leave-one-out showed the 3x3 generalising badly).
_MODEL_MIN_PATCHES: dict[str, int] = {"diagonal": 2, "matrix3x3": 8, "root_polynomial2": 10}
#: Simpler model to fall back to when a fit is impossible or degenerate.
_SIMPLER: dict[str, str | None] = {"root_polynomial2": "matrix3x3", "matrix3x3": "diagonal", "diagonal": None}

#: 8-bit sRGB code -> linear light (exact IEC 61966-2-1 curve), float32.
_SRGB8_TO_LINEAR: NDArray[np.float32] = srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)
_SRGB8_TO_LINEAR.setflags(write=False)
#: Relative luminance weights of linear sRGB.
_LUMA: NDArray[np.float64] = np.asarray(RGB_TO_XYZ[1], dtype=np.float64)


# --------------------------------------------------------------------------- settings


class CalibrationSettings(Settings):
    """How the card is searched for, measured and trusted. Defaults suit phone/DSLR photos."""

    #: The ArUco search runs on a copy downscaled so that its long side is at most this
    #: (12 MP photos stay fast); the corners are then refined at full resolution.
    detect_max_side: int = Field(2000, ge=256)
    #: When the default ArUco parameters find nothing, search again with parameters for
    #: small, blurred markers (whole-head photos; see ``_SMALL_MARKER_PARAMS``).
    small_marker_retry: bool = True
    #: When nothing is found on the downscaled copy, search again at full resolution
    #: (finds markers that become too small when downscaled; costs ~0.1 s on 12 MP).
    full_resolution_retry: bool = True
    #: Refine the marker's homography on the straight edges of the colour patches too
    #: (a 42 mm lever arm instead of 10 mm: px/mm far from the card is several times
    #: more accurate). Off: the homography comes from the four marker corners only.
    refine_with_patches: bool = True
    #: Warn when the marker's mean side is shorter than this (px): scale unreliable.
    min_marker_px: float = Field(60.0, gt=0)
    #: Warn when the card is foreshortened beyond this ratio of the largest to the smallest
    #: singular value of the card -> image Jacobian at the marker (1 = seen square on;
    #: 1.5 = tilted ~48 degrees).
    max_foreshortening: float = Field(1.5, gt=1.0)
    #: A "marker" smaller than this (px) is not trusted at all: treated as no card. ArUco
    #: finds marker-like patterns in hair and skin texture now and then, always tiny.
    reject_marker_px: float = Field(14.0, ge=0)
    #: A card whose patches still differ from the references by this mean dE00 after the
    #: colour fit is not the card (a false marker): treated as no card. Real cards under bad
    #: light stay below ~8 on the benchmark; false markers on skin land at 15-30.
    reject_residual_de00: float = Field(12.0, gt=0)
    #: With both a card and a manual px/mm, warn when they differ by more than this fraction.
    max_scale_disagreement: float = Field(0.02, gt=0)
    #: Sample the central part of each patch: this fraction of its side (away from edges,
    #: blur and JPEG chroma bleed).
    patch_inner_fraction: float = Field(0.6, gt=0, le=1)
    #: Trimmed mean of each patch: this fraction is dropped at each end, per channel.
    trim_fraction: float = Field(0.1, ge=0, lt=0.5)
    #: Normalise the patches by the light falling on the card's white paper (a fitted plane).
    flat_field: bool = True
    #: Colour correction model in linear RGB; see :func:`fit_colour_correction`. On 40
    #: generator close-ups (JPEG) the mean leave-one-out dE00 was 0.56 for the 3x3 matrix,
    #: 0.56 for the penalised root-polynomial and 6.4 unpenalised (18 coefficients for 12
    #: patches), 0.48 for per-channel gains - but the generator's camera *is* a per-channel
    #: gain; real sensors need at least the 3x3 matrix.
    colour_model: ColourModel = "matrix3x3"
    #: Root-polynomial only: cost of a unit cross-term coefficient, in Lab units, added to
    #: the fit (ridge towards the 3x3 matrix; 0 = unpenalised, overfits 12 patches).
    cross_term_penalty: float = Field(30.0, ge=0)
    #: Warn when the mean residual dE00 on the card patches is above this.
    max_residual_de00: float = Field(3.0, gt=0)


# --------------------------------------------------------------------------- results


def _frozen(array: ArrayLike, dtype: type = np.float64) -> NDArray[Any]:
    out = np.array(array, dtype=dtype)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class CardDetection:
    """The card's marker found in a photo.

    ``corners_px``: (4, 2) outer corners of the marker's black square, order TL, TR, BR, BL
    of the *card* (that of :func:`data.card.marker_corners_mm`), px. ``card_to_image``: 3x3
    homography from card mm to image px (normalised so that ``[2, 2] == 1``).
    ``marker_side_px``: mean side of the marker quadrilateral, px. ``foreshortening``: ratio
    of the singular values of the card -> image Jacobian at the marker centre (1 = square
    on). ``other_marker_ids``: further markers of the dictionary seen (the largest is used).
    """

    marker_id: int
    corners_px: NDArray[np.float64]
    card_to_image: NDArray[np.float64]
    marker_side_px: float
    foreshortening: float
    other_marker_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "corners_px", _frozen(self.corners_px))
        object.__setattr__(self, "card_to_image", _frozen(self.card_to_image))

    @property
    def image_to_card(self) -> NDArray[np.float64]:
        """3x3 homography from image px to card mm."""
        h = np.linalg.inv(self.card_to_image)
        return h / h[2, 2]


@dataclass(frozen=True, eq=False)
class ScaleCalibration:
    """The photo's physical scale and where it came from.

    ``px_per_mm``: pixels per millimetre on the scalp plane at the image centre (None
    without a scale). ``image_to_plane``: 3x3 homography image px -> plane mm (card frame),
    card only. ``marker_px``: the marker's mean side (card only). ``warnings``: one line each.
    """

    px_per_mm: float | None
    source: ScaleSource
    image_to_plane: NDArray[np.float64] | None = None
    marker_px: float | None = None
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.image_to_plane is not None:
            object.__setattr__(self, "image_to_plane", _frozen(self.image_to_plane))

    def plane_scale(self) -> PlaneScale | None:
        """The :class:`data.metrics.PlaneScale` of this scale (projective from a card,
        uniform from a manual value), or None without a scale."""
        if self.px_per_mm is None:
            return None
        if self.image_to_plane is None:
            return PlaneScale.uniform(self.px_per_mm)
        return PlaneScale.from_homography(self.image_to_plane, self.px_per_mm)


@dataclass(frozen=True, eq=False)
class ColourCorrection:
    """A colour correction in linear RGB: ``corrected = coefficients @ terms(rgb)``.

    ``model``: ``identity`` (no correction), ``diagonal`` (per-channel gains),
    ``matrix3x3`` or ``root_polynomial2`` (terms R, G, B, sqrt(RG), sqrt(GB), sqrt(RB):
    degree 1 in the input, so exposure-invariant). ``coefficients``: (3, k).
    ``patch_residual_de00``: (n,) dE00 of each card patch after correction (NaN for
    patches not used). ``residual_de00_*``: mean and max over the used patches, and the
    mean leave-one-out residual (each patch predicted by a fit without it); None for the
    identity. ``patches_used``: indices of the patches the fit used.
    """

    model: Literal["identity", "diagonal", "matrix3x3", "root_polynomial2"]
    coefficients: NDArray[np.float64]
    source: ColourSource
    residual_de00_mean: float | None = None
    residual_de00_max: float | None = None
    residual_de00_loo_mean: float | None = None
    patch_residual_de00: NDArray[np.float64] | None = None
    patches_used: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "coefficients", _frozen(self.coefficients))
        if self.patch_residual_de00 is not None:
            object.__setattr__(self, "patch_residual_de00", _frozen(self.patch_residual_de00))

    def apply(self, rgb: ArrayLike) -> NDArray[np.floating]:
        """Correct colours; returns linear RGB of the input's shape (not clipped).

        ``rgb``: uint8 (8-bit sRGB, decoded to linear here) or float (already linear RGB,
        white = 1), any shape with 3 components last. float32 stays float32 (big images),
        other inputs give float64. A whole 12 MP image costs ~0.1 s (3x3 matrix, from
        uint8) to ~0.3 s (root-polynomial) on one core.
        """
        arr = np.asarray(rgb)
        if arr.ndim == 0 or arr.shape[-1] != 3:
            raise ValueError(f"rgb: last axis must have 3 components, got shape {arr.shape}")
        if arr.dtype == np.uint8:
            lin: NDArray[np.floating] = _decode_srgb8(arr)
        elif arr.dtype.kind == "f":
            lin = arr if arr.dtype == np.float32 else arr.astype(np.float64, copy=False)
        else:
            raise TypeError(f"rgb must be uint8 (sRGB) or float (linear RGB), got {arr.dtype}")
        return _apply_model(self.model, self.coefficients, lin)

    def lstar(self, rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
        """HxW float32 L* of the corrected 8-bit sRGB photo ``rgb`` (HxWx3 uint8).

        For the linear models (identity, diagonal, 3x3 matrix) the corrected
        luminance is a weighted sum of the three decoded channels, so it is read
        through one 256-entry table per channel: no full-frame RGB float image
        (a 12 MP photo: 48 MB instead of 144 MB, about 3x faster). Corrected
        channels below zero (out of gamut, rare on skin) are not clipped before
        the sum, unlike ``linear_rgb_to_lab(max(apply(rgb), 0))``. The
        root-polynomial model takes the full path.
        """
        arr = np.asarray(rgb)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"rgb must be HxWx3 uint8, got {arr.dtype} {arr.shape}")
        if self.model == "root_polynomial2":
            return luminance_lstar(np.maximum(self.apply(arr), np.float32(0))).astype(np.float32, copy=False)
        weights = RGB_TO_XYZ[1] @ self.coefficients[:, :3] if self.model != "identity" else RGB_TO_XYZ[1]
        planes = cv2.split(np.ascontiguousarray(arr))
        y = cv2.LUT(planes[0], (weights[0] * _SRGB8_TO_LINEAR).astype(np.float32))
        for c in (1, 2):
            cv2.add(y, cv2.LUT(planes[c], (weights[c] * _SRGB8_TO_LINEAR).astype(np.float32)), dst=y)
        return lstar_from_luminance(y)

    def apply_lab(self, linear_rgb: ArrayLike) -> NDArray[np.floating]:
        """Correct linear RGB (or uint8 sRGB) and return CIELAB (D65); negatives clipped to 0."""
        out = self.apply(linear_rgb)
        return linear_rgb_to_lab(np.maximum(out, out.dtype.type(0)))


@dataclass(frozen=True, eq=False)
class Calibration:
    """Everything :func:`calibrate` found out about one photo."""

    scale: ScaleCalibration
    colour: ColourCorrection
    detection: CardDetection | None
    warnings: tuple[str, ...] = field(default=())

    @property
    def px_per_mm(self) -> float | None:
        return self.scale.px_per_mm

    def plane_scale(self) -> PlaneScale | None:
        """The photo's :class:`data.metrics.PlaneScale`, or None without a scale."""
        return self.scale.plane_scale()

    def to_json(self) -> dict[str, Any]:
        """The ``calibration`` block of ``assessment.json`` (plain JSON types)."""
        det = self.detection
        col = self.colour

        def num(v: float | None, nd: int = 4) -> float | None:
            return None if v is None or not math.isfinite(v) else round(float(v), nd)

        h = self.scale.image_to_plane
        return {
            "px_per_mm": num(self.scale.px_per_mm, 6),
            "scale_source": self.scale.source,
            "colour_source": col.source,
            "colour_model": col.model,
            "residual_de00_mean": num(col.residual_de00_mean),
            "residual_de00_max": num(col.residual_de00_max),
            "residual_de00_loo_mean": num(col.residual_de00_loo_mean),
            "patches_used": len(col.patches_used),
            "marker_px": num(det.marker_side_px, 2) if det is not None else None,
            "marker_id": det.marker_id if det is not None else None,
            "foreshortening": num(det.foreshortening) if det is not None else None,
            "marker_corners_px": det.corners_px.round(3).tolist() if det is not None else None,
            "image_to_plane": h.tolist() if h is not None else None,
            "warnings": list(self.warnings),
        }


# --------------------------------------------------------------------------- small geometry helpers


def _apply_h(h: NDArray[np.float64], xy: NDArray[np.float64]) -> NDArray[np.float64]:
    """Apply a 3x3 homography to (N, 2) points."""
    p = xy @ h[:, :2].T + h[:, 2]
    return p[:, :2] / p[:, 2:3]


def _jacobian(h: NDArray[np.float64], xy: ArrayLike) -> NDArray[np.float64]:
    """2x2 Jacobian of the projective map ``h`` at point ``xy``."""
    x, y = np.asarray(xy, dtype=np.float64)
    u, v, w = h @ np.array([x, y, 1.0])
    return np.array(
        [
            [(h[0, 0] * w - u * h[2, 0]) / w**2, (h[0, 1] * w - u * h[2, 1]) / w**2],
            [(h[1, 0] * w - v * h[2, 0]) / w**2, (h[1, 1] * w - v * h[2, 1]) / w**2],
        ]
    )


def _check_rgb(rgb: ArrayLike) -> NDArray[np.uint8]:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"rgb must be an HxWx3 image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise TypeError(f"rgb must be 8-bit sRGB (uint8), got {arr.dtype}")
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise ValueError(f"rgb is too small ({arr.shape[1]}x{arr.shape[0]} px)")
    return arr


# --------------------------------------------------------------------------- finding the card


#: ``cv2.aruco.DetectorParameters`` overrides for the second search pass, for markers of
#: ~15-40 px that are blurred or foreshortened (whole-head photos): bits read on a finer
#: grid away from the cell borders, and more adaptive-threshold window sizes. On the
#: generator's global views this finds 29 of 30 cards instead of 24 (no false markers on
#: 16 photos without a card); it is only a fallback because it missed 1 of 16 close-up
#: cards that the defaults find.
_SMALL_MARKER_PARAMS: dict[str, float] = {
    "perspectiveRemovePixelPerCell": 8,
    "perspectiveRemoveIgnoredMarginPerCell": 0.3,
    "adaptiveThreshWinSizeStep": 4,
}


def _detector(dictionary: str, overrides: dict[str, float] | None = None) -> cv2.aruco.ArucoDetector:
    # Built per call (microseconds): no detector object is shared between threads.
    params = cv2.aruco.DetectorParameters()
    for key, value in (overrides or {}).items():
        setattr(params, key, value)
    return cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary)), params)


def _detect(
    gray: NDArray[np.uint8], dictionary: str, overrides: dict[str, float] | None = None
) -> list[tuple[int, NDArray[np.float64]]]:
    corners, ids, _ = _detector(dictionary, overrides).detectMarkers(gray)
    if ids is None:
        return []
    return [(int(i), np.asarray(c, dtype=np.float64).reshape(4, 2)) for i, c in zip(ids.ravel(), corners)]


def _perimeter(quad: NDArray[np.float64]) -> float:
    return float(np.sum(np.linalg.norm(np.roll(quad, -1, axis=0) - quad, axis=1)))


def _linear_luminance(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """HxW float32 relative luminance in linear light of an 8-bit sRGB image (a crop)."""
    lin = cv2.LUT(rgb, np.repeat(_SRGB8_TO_LINEAR[None, :, None], 3, axis=2))
    return cv2.transform(lin, _LUMA[None, :].astype(np.float32))


def _edge_line(
    lum: NDArray[np.float32], p: NDArray[np.float64], q: NDArray[np.float64], outward: NDArray[np.float64], half: float
) -> NDArray[np.float64] | None:
    """Homogeneous line through the dark->light edge from ``p`` to ``q`` (crop px), or None.

    Profiles across the edge (dark inside, light outside along ``outward``) at 12-88 % of
    its length; each profile's edge position is where the area under the normalised
    profile balances (``e = b - integral((I - lo) / (hi - lo))``), which is the edge itself
    for any symmetric blur. A straight line is fitted to those points (Huber weights).
    """
    length = float(np.linalg.norm(q - p))
    n = int(np.clip(0.76 * length, 8, 120))
    ts = np.linspace(0.12, 0.88, n)
    step = 0.25
    offs = np.arange(-half, half + 1e-9, step)
    base = p[None, :] + (q - p)[None, :] * ts[:, None]
    pts = base[:, None, :] + offs[None, :, None] * outward[None, None, :]
    prof = cv2.remap(
        lum, pts[..., 0].astype(np.float32), pts[..., 1].astype(np.float32), cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    ).astype(np.float64)
    k = max(2, len(offs) // 6)
    lo = np.median(prof[:, :k], axis=1)
    hi = np.median(prof[:, -k:], axis=1)
    contrast = hi - lo
    norm = (prof - lo[:, None]) / np.maximum(contrast, 1e-6)[:, None]
    area = (np.sum(norm, axis=1) - 0.5 * (norm[:, 0] + norm[:, -1])) * step
    e = offs[-1] - area
    good = (contrast > 0.3 * max(float(np.median(contrast)), 1e-6)) & (np.abs(e) < 0.8 * half)
    if np.count_nonzero(good) < 6:
        return None
    edge = base[good] + e[good, None] * outward[None, :]
    vx, vy, x0, y0 = cv2.fitLine(edge.astype(np.float32), cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
    return np.cross([x0, y0, 1.0], [x0 + vx, y0 + vy, 1.0])


def _refine_by_edges(lum: NDArray[np.float32], quad: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """Corners as intersections of lines fitted to the marker's four outer edges."""
    side = _perimeter(quad) / 4.0
    # Profiles must stay inside the black border module (side / 6 wide) on the inner side.
    half = max(1.5, side / 14.0)
    centre = quad.mean(axis=0)
    lines = []
    for i in range(4):
        p, q = quad[i], quad[(i + 1) % 4]
        d = (q - p) / max(float(np.linalg.norm(q - p)), 1e-9)
        outward = np.array([-d[1], d[0]])
        if np.dot(outward, (p + q) / 2.0 - centre) < 0:
            outward = -outward
        line = _edge_line(lum, p, q, outward, half)
        if line is None:
            return None
        lines.append(line)
    out = np.empty((4, 2))
    for i in range(4):
        x = np.cross(lines[(i - 1) % 4], lines[i])
        if abs(x[2]) < 1e-12:
            return None
        out[i] = x[:2] / x[2]
    return out


def _refine_corners(rgb: NDArray[np.uint8], quad: NDArray[np.float64]) -> NDArray[np.float64]:
    """Sub-pixel marker corners at full resolution, in linear light (see the module notes)."""
    h, w = rgb.shape[:2]
    side = _perimeter(quad) / 4.0
    margin = int(math.ceil(0.3 * side + 12))
    x0 = max(int(math.floor(quad[:, 0].min())) - margin, 0)
    y0 = max(int(math.floor(quad[:, 1].min())) - margin, 0)
    x1 = min(int(math.ceil(quad[:, 0].max())) + margin + 1, w)
    y1 = min(int(math.ceil(quad[:, 1].max())) + margin + 1, h)
    lum = _linear_luminance(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
    local = quad - [x0, y0]
    # cornerSubPix: the window stays within half a module of the corner.
    win = int(np.clip(side / 12.0, 2, 12))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 40, 0.001)
    sub = cv2.cornerSubPix(lum, local.astype(np.float32).reshape(-1, 1, 2), (win, win), (-1, -1), criteria)
    sub = sub.reshape(4, 2).astype(np.float64)
    if not np.all(np.isfinite(sub)) or np.max(np.linalg.norm(sub - local, axis=1)) > max(3.0, 0.1 * side):
        sub = local
    best = sub
    if side >= 30.0:  # below that the border module is too thin to profile across
        for _ in range(2):  # the second pass re-centres the profiles on the refined edges
            edges = _refine_by_edges(lum, best)
            if edges is None or np.max(np.linalg.norm(edges - sub, axis=1)) > max(2.0, 0.05 * side):
                break
            best = edges
    return best + [x0, y0]


@dataclass(frozen=True, eq=False)
class _CardEdges:
    """Straight dark->light edges of the card design (card mm), for the homography fit.

    Edge i is the segment ``starts[i]``-``ends[i]`` (trimmed clear of corners) on the line
    ``normals[i] . X = offsets[i]``; ``normals`` point from the printed feature (marker
    border or patch) to the paper; ``clearance[i]`` mm on both sides hold nothing else.
    """

    starts: NDArray[np.float64]
    ends: NDArray[np.float64]
    normals: NDArray[np.float64]
    offsets: NDArray[np.float64]
    clearance: NDArray[np.float64]


#: Smallest luminance contrast ``1 - Y_patch / Y_paper`` of a patch whose edges are used.
_MIN_EDGE_CONTRAST = 0.2


@functools.lru_cache(maxsize=8)
def _card_edges(card: CardSpec) -> _CardEdges:
    """The outer edges of the marker and of every patch that contrasts with the paper."""
    px0, py0, px1, py1 = paper_rect_mm(card)
    mk = marker_corners_mm(card)
    marker = (*mk.min(axis=0), *mk.max(axis=0))
    patches = [tuple(r) for r in patch_rects_mm(card)]
    paper_y = float(srgb_to_linear(np.array(card.paper_srgb, dtype=np.float64) / 255.0) @ _LUMA)
    patch_y = lab_to_linear_rgb(reference_lab(card)) @ _LUMA
    module = card.marker.size_mm / card.marker.modules
    features = [(marker, module)] + [
        (rect, min(rect[2] - rect[0], rect[3] - rect[1]) / 2.0)
        for rect, y in zip(patches, patch_y)
        if 1.0 - y / paper_y >= _MIN_EDGE_CONTRAST
    ]
    obstacles = [marker] + patches
    starts, ends, normals, offsets, clear = [], [], [], [], []
    for rect, inner in features:
        x0, y0, x1, y1 = rect
        # (normal, edge coordinate, span along the edge, axis of the normal)
        sides = [((-1.0, 0.0), x0, (y0, y1), 0), ((1.0, 0.0), x1, (y0, y1), 0),
                 ((0.0, -1.0), y0, (x0, x1), 1), ((0.0, 1.0), y1, (x0, x1), 1)]
        for normal, coord, (lo, hi), axis in sides:
            sign = normal[axis]
            paper_edge = (px1 if sign > 0 else px0) if axis == 0 else (py1 if sign > 0 else py0)
            gap = abs(paper_edge - coord)
            for other in obstacles:
                if other == rect:
                    continue
                o_lo, o_hi = (other[1], other[3]) if axis == 0 else (other[0], other[2])
                if o_hi <= lo or o_lo >= hi:
                    continue  # not facing this edge
                near = (other[0] if sign > 0 else other[2]) if axis == 0 else (other[1] if sign > 0 else other[3])
                if (near - coord) * sign >= 0:
                    gap = min(gap, abs(near - coord))
            # the gap is shared with whatever lies beyond it (its own blurred edge)
            c = min(inner, 0.5 * gap)
            trim = 0.15 * (hi - lo)  # keep the profiles clear of the blurred corners
            along = (lo + trim, hi - trim)
            if axis == 0:
                a, b = (coord, along[0]), (coord, along[1])
            else:
                a, b = (along[0], coord), (along[1], coord)
            starts.append(a)
            ends.append(b)
            normals.append(normal)
            offsets.append(sign * coord)
            clear.append(c)
    arrays = [np.array(v, dtype=np.float64) for v in (starts, ends, normals, offsets, clear)]
    for arr in arrays:
        arr.setflags(write=False)
    return _CardEdges(*arrays)


def _edge_points(
    lum: NDArray[np.float32], origin: NDArray[np.float64], hmat: NDArray[np.float64], edges: _CardEdges, ppm: float
) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Sub-pixel image points (crop-independent px) on the card's design edges, and the
    index of the edge each lies on. Profiles are laid out in card mm across each edge
    (75 % of its clearance each side), mapped into the photo with ``hmat`` and located
    with the same area-balance rule as the marker's edges."""
    samples = 33
    u = np.linspace(-1.0, 1.0, samples)
    length_px = np.linalg.norm(edges.ends - edges.starts, axis=1) * ppm
    half_mm = 0.75 * edges.clearance
    use = half_mm * ppm >= 1.5
    idx_list, base_list, half_list = [], [], []
    for i in np.flatnonzero(use):
        n = int(np.clip(length_px[i] / 1.5, 3, 40))
        t = np.linspace(0.0, 1.0, n)[:, None]
        base = edges.starts[i] + (edges.ends[i] - edges.starts[i]) * t
        base_list.append(base)
        idx_list.append(np.full(n, i))
        half_list.append(np.full(n, half_mm[i]))
    if not base_list:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.intp)
    base = np.concatenate(base_list)
    idx = np.concatenate(idx_list)
    half = np.concatenate(half_list)
    normal = edges.normals[idx]
    prof_mm = base[:, None, :] + (u[None, :, None] * half[:, None, None]) * normal[:, None, :]
    img = _apply_h(hmat, prof_mm.reshape(-1, 2)).reshape(len(base), samples, 2) - origin
    rows, cols = lum.shape
    inside = np.all((img[..., 0] >= 0) & (img[..., 0] <= cols - 1) & (img[..., 1] >= 0) & (img[..., 1] <= rows - 1),
                    axis=1)
    inside &= np.all(np.isfinite(img), axis=(1, 2))
    base, idx, half, normal, img = base[inside], idx[inside], half[inside], normal[inside], img[inside]
    if len(base) == 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.intp)
    prof = cv2.remap(lum, img[..., 0].astype(np.float32), img[..., 1].astype(np.float32), cv2.INTER_LINEAR).astype(
        np.float64
    )
    k = samples // 6
    lo = np.median(prof[:, :k], axis=1)
    hi = np.median(prof[:, -k:], axis=1)
    contrast = hi - lo
    norm = (prof - lo[:, None]) / np.where(contrast > 0, contrast, 1.0)[:, None]
    area = (np.sum(norm, axis=1) - 0.5 * (norm[:, 0] + norm[:, -1])) * (2.0 / (samples - 1))
    e = (1.0 - area) * half  # edge offset along the normal, card mm (through hmat)
    good = (contrast > 0.15 * np.maximum(hi, 1e-6)) & (np.abs(e) < 0.8 * half)
    found = _apply_h(hmat, base[good] + e[good, None] * normal[good])
    return found, idx[good]


def _fit_homography_to_edges(
    points: NDArray[np.float64], idx: NDArray[np.intp], edges: _CardEdges, h0: NDArray[np.float64], ppm: float
) -> NDArray[np.float64] | None:
    """Card mm -> image homography minimising the (robust) distances of the image edge
    points, mapped onto the card, to their design lines; started from ``h0``."""
    centre = points.mean(axis=0)
    spread = float(np.sqrt(np.mean(np.sum((points - centre) ** 2, axis=1)))) or 1.0
    t = np.array([[1.0 / spread, 0.0, -centre[0] / spread], [0.0, 1.0 / spread, -centre[1] / spread], [0.0, 0.0, 1.0]])
    g0 = np.linalg.inv(h0) @ np.linalg.inv(t)  # card <- normalised image
    g0 = g0 / g0[2, 2]
    xh = np.column_stack([points, np.ones(len(points))]) @ t.T
    nrm, off = edges.normals[idx], edges.offsets[idx]

    def residual(p: NDArray[np.float64]) -> NDArray[np.float64]:
        g = np.append(p, 1.0).reshape(3, 3)
        x = xh @ g.T
        mm = x[:, :2] / x[:, 2:3]
        return (np.sum(nrm * mm, axis=1) - off) * ppm  # px

    sol = least_squares(
        residual, g0.ravel()[:8], method="trf", loss="soft_l1", f_scale=0.3, x_scale="jac", tr_solver="lsmr"
    )
    if not np.all(np.isfinite(sol.x)):
        return None
    g = np.append(sol.x, 1.0).reshape(3, 3) @ t
    h = np.linalg.inv(g)
    return h / h[2, 2]


def _refine_with_card(
    rgb: NDArray[np.uint8], card: CardSpec, h_marker: NDArray[np.float64], marker_px: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The card -> image homography refined on the edges of the marker and the patches.

    The marker alone is 10 mm across; the patches extend the lever arm to 42 mm, which
    pins down the perspective (and so px/mm away from the card) several times better.
    Falls back to ``h_marker`` unless the edge points span at least twice the marker and
    the refined homography keeps the marker's corners within 1 px.
    """
    edges = _card_edges(card)
    if len(edges.starts) == 0:
        return h_marker
    h, w = rgb.shape[:2]
    paper = paper_rect_mm(card)
    box = _apply_h(h_marker, np.array([[paper[0], paper[1]], [paper[2], paper[1]],
                                       [paper[2], paper[3]], [paper[0], paper[3]]]))
    if not np.all(np.isfinite(box)):
        return h_marker
    x0 = int(np.clip(np.floor(box[:, 0].min()) - 4, 0, w - 1))
    y0 = int(np.clip(np.floor(box[:, 1].min()) - 4, 0, h - 1))
    x1 = int(np.clip(np.ceil(box[:, 0].max()) + 5, x0 + 1, w))
    y1 = int(np.clip(np.ceil(box[:, 1].max()) + 5, y0 + 1, h))
    lum = _linear_luminance(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
    origin = np.array([x0, y0], dtype=np.float64)
    centre_mm = marker_corners_mm(card).mean(axis=0)
    ppm = math.sqrt(abs(np.linalg.det(_jacobian(h_marker, centre_mm))))
    marker_size = card.marker.size_mm
    best = h_marker
    for _ in range(2):  # the second pass lays the profiles out with the refined homography
        points, idx = _edge_points(lum, origin, best, edges, ppm)
        if len(points) < 60 or len(np.unique(idx)) < 6:
            return best
        on_card = _apply_h(np.linalg.inv(best), points)
        if np.ptp(on_card, axis=0).max() < 2.0 * marker_size:
            return best
        refined = _fit_homography_to_edges(points, idx, edges, best, ppm)
        if refined is None:
            return best
        moved = np.linalg.norm(_apply_h(refined, marker_corners_mm(card)) - marker_px, axis=1).max()
        if moved > 1.0:
            return best
        best = refined
    return best


def find_card(
    rgb: ArrayLike, card: CardSpec, settings: CalibrationSettings | None = None
) -> CardDetection | None:
    """Find the card's ArUco marker in an HxWx3 uint8 sRGB photo; None when there is none.

    Any id of the card's dictionary is accepted (the id names a card; it is recorded).
    When several markers are seen, the largest is used and the others are listed.
    The search runs on a grey copy downscaled to ``settings.detect_max_side``, first with
    OpenCV's default detector parameters, then (``small_marker_retry``) with parameters for
    small blurred markers, then (``full_resolution_retry``) at full resolution. The corners
    are refined at full resolution in linear light, and the homography from the marker is
    refined on the straight edges of the colour patches (``refine_with_patches``).
    """
    s = settings or CalibrationSettings()
    img = _check_rgb(rgb)
    h, w = img.shape[:2]
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    dictionary = card.marker.dictionary
    passes: list[dict[str, float] | None] = [None] + ([_SMALL_MARKER_PARAMS] if s.small_marker_retry else [])
    factor = max(h, w) / float(s.detect_max_side)
    search = gray
    if factor > 1.0:
        size = (max(1, round(w / factor)), max(1, round(h / factor)))
        search = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    sx, sy = w / search.shape[1], h / search.shape[0]
    found: list[tuple[int, NDArray[np.float64]]] = []
    for overrides in passes:
        # pixel centres: x_full + 0.5 = (x_small + 0.5) * sx
        found = [(i, (q + 0.5) * [sx, sy] - 0.5) for i, q in _detect(search, dictionary, overrides)]
        if found:
            break
    if not found and factor > 1.0 and s.full_resolution_retry:
        found = _detect(gray, dictionary)
    found = [(i, q) for i, q in found if 0 <= i < card.marker.id_count and np.all(np.isfinite(q))]
    if not found:
        return None
    found.sort(key=lambda item: -_perimeter(item[1]))
    marker_id, quad = found[0]
    corners = _refine_corners(img, quad)
    src = marker_corners_mm(card)
    hmat, _ = cv2.findHomography(src, corners, 0)
    if hmat is None or not np.all(np.isfinite(hmat)) or abs(hmat[2, 2]) < 1e-12:
        return None
    hmat = hmat / hmat[2, 2]
    if s.refine_with_patches:
        hmat = _refine_with_card(img, card, hmat, corners)
        corners = _apply_h(hmat, src)
    sv = np.linalg.svd(_jacobian(hmat, src.mean(axis=0)), compute_uv=False)
    foreshortening = float(sv[0] / sv[1]) if sv[1] > 0 else math.inf
    return CardDetection(
        marker_id=marker_id,
        corners_px=corners,
        card_to_image=hmat,
        marker_side_px=_perimeter(corners) / 4.0,
        foreshortening=foreshortening,
        other_marker_ids=tuple(i for i, _ in found[1:]),
    )


# --------------------------------------------------------------------------- scale


def scale_from_card(
    detection: CardDetection, image_size: tuple[int, int], settings: CalibrationSettings | None = None
) -> ScaleCalibration:
    """The photo's scale from a detected card; ``image_size`` is (width, height) px.

    ``px_per_mm = sqrt|det J|`` of the card-plane -> image homography at the image centre
    (pixel ((W - 1) / 2, (H - 1) / 2)), computed as ``1 / sqrt|det J|`` of its inverse
    there (``det J = det(G) / w**3`` for ``G = image_to_plane``). The card lies on the
    scalp, so this is the scalp's scale at the centre; ``image_to_plane`` gives it anywhere.
    If the image centre lies beyond the card plane's horizon (impossible for a photo of
    the scalp, but possible for a wrong detection) the scale at the marker is used instead,
    with a warning.
    """
    s = settings or CalibrationSettings()
    width, height = int(image_size[0]), int(image_size[1])
    g = detection.image_to_card
    warnings: list[str] = []
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0, 1.0])
    w_centre = float(g[2] @ centre)
    w_marker = float(g[2] @ np.r_[detection.corners_px.mean(axis=0), 1.0])
    det_g = float(np.linalg.det(g))
    if w_centre * w_marker > 0:
        ppm = 1.0 / math.sqrt(abs(det_g / w_centre**3))
    else:
        ppm = 1.0 / math.sqrt(abs(det_g / w_marker**3))
        warnings.append("the image centre is beyond the card plane's horizon: px/mm is taken at the card")
    side = detection.marker_side_px
    if side < s.min_marker_px:
        warnings.append(f"card marker is only {side:.0f} px across (< {s.min_marker_px:g}): scale unreliable")
    if detection.foreshortening > s.max_foreshortening:
        warnings.append(
            f"card strongly foreshortened ({detection.foreshortening:.2f}:1 > {s.max_foreshortening:g}:1): "
            "the card may not lie flat on the scalp; scale and colour are less reliable"
        )
    return ScaleCalibration(
        px_per_mm=ppm, source="card", image_to_plane=g, marker_px=side, warnings=tuple(warnings)
    )


def _valid_px_per_mm(px_per_mm: float) -> float:
    if isinstance(px_per_mm, bool):
        raise ValueError(f"px_per_mm must be a positive finite number, got {px_per_mm!r}")
    try:
        value = float(px_per_mm)
    except (TypeError, ValueError):
        raise ValueError(f"px_per_mm must be a positive finite number, got {px_per_mm!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"px_per_mm must be a positive finite number, got {px_per_mm!r}")
    return value


def manual_scale(px_per_mm: float) -> ScaleCalibration:
    """A uniform scale given by the user (``--px-per-mm``); must be positive and finite."""
    return ScaleCalibration(px_per_mm=_valid_px_per_mm(px_per_mm), source="manual")


def no_scale() -> ScaleCalibration:
    """No scale: densities and sizes in mm are unavailable (said in ``warnings``)."""
    return ScaleCalibration(px_per_mm=None, source="none", warnings=(NO_SCALE_WARNING,))


# --------------------------------------------------------------------------- patches


def _sample_rect(
    rgb: NDArray[np.uint8], h: NDArray[np.float64], g: NDArray[np.float64], rect: NDArray[np.float64]
) -> NDArray[np.uint8] | None:
    """8-bit pixels (m, 3) whose centres fall inside the card rectangle ``rect`` (mm), or
    None when the rectangle is not wholly inside the image or covers no pixel centre."""
    x0, y0, x1, y1 = rect
    quad = _apply_h(h, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    if not np.all(np.isfinite(quad)):
        return None
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    rows, cols = rgb.shape[:2]
    if lo[0] < 0 or lo[1] < 0 or hi[0] > cols - 1 or hi[1] > rows - 1:
        return None
    xs = np.arange(lo[0], hi[0] + 1, dtype=np.float64)
    ys = np.arange(lo[1], hi[1] + 1, dtype=np.float64)
    # card coordinates of every pixel centre in the box (separable numerators / denominator)
    num_x = g[0, 0] * xs[None, :] + g[0, 1] * ys[:, None] + g[0, 2]
    num_y = g[1, 0] * xs[None, :] + g[1, 1] * ys[:, None] + g[1, 2]
    den = g[2, 0] * xs[None, :] + g[2, 1] * ys[:, None] + g[2, 2]
    cx, cy = num_x / den, num_y / den
    inside = (cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)
    if not inside.any():
        return None
    return rgb[lo[1] : hi[1] + 1, lo[0] : hi[0] + 1][inside]


def _trimmed_mean(values: NDArray[np.floating], trim: float) -> NDArray[np.float64]:
    """Per-column mean after dropping ``trim`` of the values at each end."""
    n = len(values)
    k = int(trim * n)
    if k == 0:
        return values.mean(axis=0, dtype=np.float64)
    # after partitioning at both cut points, rows k .. n-k-1 hold exactly the kept values
    part = np.partition(values, (k, n - k - 1), axis=0)
    return part[k : n - k].mean(axis=0, dtype=np.float64)


@functools.lru_cache(maxsize=8)
def _paper_points(card: CardSpec) -> NDArray[np.float64]:
    """Points (mm) on bare card paper, clear of the marker and the patches, 0.5 mm apart."""
    x0, y0, x1, y1 = paper_rect_mm(card)
    inset, clear, step = 0.6, 0.4, 0.5
    xs = np.arange(x0 + inset, x1 - inset + 1e-9, step)
    ys = np.arange(y0 + inset, y1 - inset + 1e-9, step)
    pts = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    mk = marker_corners_mm(card)
    blocked = [np.r_[mk.min(axis=0), mk.max(axis=0)]] + list(patch_rects_mm(card))
    keep = np.ones(len(pts), dtype=bool)
    for bx0, by0, bx1, by1 in blocked:
        keep &= ~(
            (pts[:, 0] > bx0 - clear) & (pts[:, 0] < bx1 + clear)
            & (pts[:, 1] > by0 - clear) & (pts[:, 1] < by1 + clear)
        )
    out = pts[keep]
    out.setflags(write=False)
    return out


def _flat_field_gains(
    rgb: NDArray[np.uint8], h: NDArray[np.float64], card: CardSpec, centres: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Relative light on each patch centre, from the white paper (1 = at the grid centre).

    The paper's linear luminance at ~500 points (one pixel each) is fitted with a plane in
    card mm (least squares, then again without 3-MAD outliers). Falls back to all ones
    when too few paper points are visible or the fit is implausible.
    """
    ones = np.ones(len(centres))
    pts = _paper_points(card)
    px = np.rint(_apply_h(h, pts))
    rows, cols = rgb.shape[:2]
    ok = np.all(np.isfinite(px), axis=1)
    ok &= (px[:, 0] >= 0) & (px[:, 0] <= cols - 1) & (px[:, 1] >= 0) & (px[:, 1] <= rows - 1)
    if np.count_nonzero(ok) < 30:
        return ones
    pix = rgb[px[ok, 1].astype(np.intp), px[ok, 0].astype(np.intp)]
    unclipped = np.all(pix < 255, axis=1)
    lum = _SRGB8_TO_LINEAR[pix] @ _LUMA.astype(np.float32)
    xy = pts[ok][unclipped]
    y = lum[unclipped].astype(np.float64)
    if len(y) < 30 or np.ptp(xy[:, 0]) < 0.5 * np.ptp(centres[:, 0]):
        return ones
    a = np.column_stack([np.ones(len(xy)), xy])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    resid = y - a @ coef
    mad = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    inl = np.abs(resid) <= 3.0 * max(mad, 1e-6)
    if np.count_nonzero(inl) >= 30:
        coef, *_ = np.linalg.lstsq(a[inl], y[inl], rcond=None)
    at = np.column_stack([np.ones(len(centres)), centres]) @ coef
    ref = float(np.r_[1.0, centres.mean(axis=0)] @ coef)
    if ref <= 0 or not np.all(np.isfinite(at)):
        return ones
    gains = at / ref
    if np.any(gains < 2.0 / 3.0) or np.any(gains > 1.5):
        return ones
    return gains


def measure_patches(
    rgb: ArrayLike, detection: CardDetection, card: CardSpec, settings: CalibrationSettings | None = None
) -> NDArray[np.float64]:
    """Linear RGB of each card patch, (n, 3) row by row; NaN rows for unusable patches.

    Each patch's central square (``patch_inner_fraction`` of its side) is mapped into the
    photo with the detection's homography; the 8-bit pixels whose centres fall in it are
    decoded to linear light and averaged with a per-channel trimmed mean
    (``trim_fraction`` at each end). A patch is unusable (NaN) when its central square is
    not wholly inside the photo, covers fewer than 4 pixels, or has more clipped pixels
    (any channel 0 or 255) than the trimmed fraction. With ``flat_field`` the values are
    divided by the relative light on the card's white paper at each patch.
    """
    s = settings or CalibrationSettings()
    img = _check_rgb(rgb)
    h = detection.card_to_image
    g = detection.image_to_card
    rects = patch_rects_mm(card)
    centres = (rects[:, :2] + rects[:, 2:]) / 2.0
    half = (rects[:, 2:] - rects[:, :2]) * (s.patch_inner_fraction / 2.0)
    inner = np.column_stack([centres - half, centres + half])
    out = np.full((len(rects), 3), np.nan)
    for i, rect in enumerate(inner):
        pix = _sample_rect(img, h, g, rect)
        if pix is None or len(pix) < 4:
            continue
        clipped = np.count_nonzero(np.any((pix == 0) | (pix == 255), axis=1))
        if clipped > s.trim_fraction * len(pix):
            continue
        out[i] = _trimmed_mean(_SRGB8_TO_LINEAR[pix], s.trim_fraction)
    if s.flat_field:
        out /= _flat_field_gains(img, h, card, centres)[:, None]
    return out


# --------------------------------------------------------------------------- colour correction


def _terms(model: str, lin: NDArray[np.floating]) -> NDArray[np.floating]:
    """Model terms of linear RGB (..., 3) -> (..., k)."""
    if model != "root_polynomial2":
        return lin
    pos = np.maximum(lin, lin.dtype.type(0))
    r, g, b = pos[..., 0], pos[..., 1], pos[..., 2]
    return np.stack([lin[..., 0], lin[..., 1], lin[..., 2], np.sqrt(r * g), np.sqrt(g * b), np.sqrt(r * b)], axis=-1)


def _decode_srgb8(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """8-bit sRGB (..., 3) -> linear float32 through the exact 256-entry table."""
    flat = np.ascontiguousarray(rgb).reshape(-1, 1, 3)
    if flat.shape[0] == 0:
        return np.zeros(rgb.shape, np.float32)
    table = np.repeat(_SRGB8_TO_LINEAR[None, :, None], 3, axis=2)
    return cv2.LUT(flat, table).reshape(rgb.shape)


def _apply_model(model: str, coefficients: NDArray[np.float64], lin: NDArray[np.floating]) -> NDArray[np.floating]:
    """Apply a fitted model to linear RGB (..., 3), keeping float32 (big images: OpenCV)."""
    dtype = lin.dtype
    shape = lin.shape
    if model == "identity":
        return np.array(lin, dtype=dtype, copy=True)
    flat = np.ascontiguousarray(lin).reshape(-1, 1, 3)
    if dtype == np.float32 and flat.shape[0] > 0:
        out = cv2.transform(flat, coefficients[:, :3].astype(np.float32))
        if model == "root_polynomial2":
            r, g, b = cv2.split(cv2.max(flat, 0.0))
            cross = cv2.merge([cv2.sqrt(cv2.multiply(r, g)), cv2.sqrt(cv2.multiply(g, b)),
                               cv2.sqrt(cv2.multiply(r, b))])
            out = cv2.add(out, cv2.transform(cross, coefficients[:, 3:].astype(np.float32)))
        return out.reshape(shape)
    flat2 = flat.reshape(-1, 3)
    out = flat2 @ coefficients[:, :3].T
    if model == "root_polynomial2":
        out = out + _terms(model, flat2)[:, 3:] @ coefficients[:, 3:].T
    return out.astype(dtype, copy=False).reshape(shape)


def _lab(lin: NDArray[np.float64]) -> NDArray[np.float64]:
    return linear_rgb_to_lab(lin)


def _initial_fit(model: str, meas: NDArray[np.float64], ref: NDArray[np.float64]) -> NDArray[np.float64]:
    """Linear least squares in linear RGB, each patch's rows weighted by Y_ref**(-2/3)
    (an error dY moves L* by about dY / Y**(2/3)); the start of the Lab fit."""
    wts = 1.0 / np.maximum(ref @ _LUMA, 0.01) ** (2.0 / 3.0)
    if model == "diagonal":
        w2 = wts[:, None] ** 2
        den = np.sum(w2 * meas * meas, axis=0)
        gains = np.sum(w2 * meas * ref, axis=0) / np.where(den > 0, den, 1.0)
        return np.diag(np.where(den > 0, gains, 1.0))
    t = _terms(model, meas) * wts[:, None]
    coef, *_ = np.linalg.lstsq(t, ref * wts[:, None], rcond=None)
    return coef.T


def _fit(model: str, meas: NDArray[np.float64], ref_lab: NDArray[np.float64], penalty: float) -> NDArray[np.float64]:
    """Coefficients (3, k) minimising the Lab difference to the references."""
    ref = lab_to_linear_rgb(ref_lab)
    start = _initial_fit(model, meas, ref)
    terms = _terms(model, meas)

    if model == "diagonal":
        def residual(p: NDArray[np.float64]) -> NDArray[np.float64]:
            return (_lab(meas * p) - ref_lab).ravel()

        x0 = np.diag(start).copy()
    else:
        k = start.shape[1]

        def residual(p: NDArray[np.float64]) -> NDArray[np.float64]:
            coef = p.reshape(3, k)
            r = (_lab(terms @ coef.T) - ref_lab).ravel()
            if model == "root_polynomial2" and penalty > 0:
                r = np.concatenate([r, penalty * coef[:, 3:].ravel()])
            return r

        x0 = start.ravel()
    n_res = residual(x0).size
    method = "lm" if n_res >= x0.size else "trf"
    sol = least_squares(residual, x0, method=method, x_scale="jac", max_nfev=200 * (x0.size + 1))
    p = sol.x if np.all(np.isfinite(sol.x)) else x0
    return np.diag(p) if model == "diagonal" else p.reshape(3, -1)


def _degenerate(model: str, coef: NDArray[np.float64], meas: NDArray[np.float64]) -> str | None:
    """Why a fitted correction cannot be trusted, or None."""
    if not np.all(np.isfinite(coef)):
        return "the fit did not converge"
    m3 = coef[:, :3]
    if model == "diagonal":
        if np.any(np.diag(m3) <= 0):
            return "a channel gain is not positive"
        return None
    sv = np.linalg.svd(m3, compute_uv=False)
    if sv[-1] <= 0 or sv[0] / sv[-1] > 1e3 or np.linalg.det(m3) <= 0:
        return "the colour matrix is singular or flips colours"
    grey = np.median(meas, axis=0)  # a mid colour of the card must stay positive
    if np.any(_apply_model(model, coef, grey[None, :]) <= 0):
        return "the correction turns a patch colour negative"
    return None


def _rank_ok(model: str, meas: NDArray[np.float64]) -> bool:
    """Whether the patches constrain every coefficient (each channel seen, for gains)."""
    if model == "diagonal":
        return bool(np.all(np.sum(meas * meas, axis=0) > 1e-12))
    t = _terms(model, meas)
    sv = np.linalg.svd(t, compute_uv=False)
    return bool(sv[0] > 0 and sv[-1] / sv[0] > 1e-6 and len(sv) == t.shape[1])


def fit_colour_correction(
    measured_linear: ArrayLike,
    reference_linear: ArrayLike,
    model: ColourModel = "matrix3x3",
    *,
    cross_term_penalty: float = 30.0,
) -> ColourCorrection:
    """Fit a colour correction from measured to reference patch colours (linear RGB, (n, 3)).

    Rows with NaN in ``measured_linear`` (unusable patches) are skipped. Models (linear RGB
    in, linear RGB out): ``diagonal`` - one gain per channel (a white balance);
    ``matrix3x3`` - a full matrix; ``root_polynomial2`` - a 3x6 matrix on R, G, B,
    sqrt(RG), sqrt(GB), sqrt(RB) (Finlayson et al. 2015; degree 1 so exposure-invariant),
    with its cross terms penalised by ``cross_term_penalty`` Lab units per unit coefficient.

    Objective: the sum of squared CIELAB differences between corrected patches and
    references (nonlinear least squares from a weighted linear start).

    Guards: a model needs at least 2 (diagonal), 6 (3x3) or 9 (root-polynomial) usable
    patches with linearly independent terms; a fit that is not finite, singular, flips
    colours or turns a mid patch negative is rejected. In each case the next simpler
    model is fitted instead, with a warning. Raises ``ValueError`` when even per-channel
    gains cannot be fitted (fewer than 2 usable patches, or a black card).

    Residuals: dE00 per patch; mean, max; and the leave-one-out mean (each used patch
    predicted by the same model fitted without it).
    """
    meas_all = np.asarray(measured_linear, dtype=np.float64)
    ref_all = np.asarray(reference_linear, dtype=np.float64)
    if meas_all.ndim != 2 or meas_all.shape[1] != 3 or ref_all.shape != meas_all.shape:
        raise ValueError(f"measured {meas_all.shape} and reference {ref_all.shape} must both be (n, 3)")
    if not np.all(np.isfinite(ref_all)):
        raise ValueError("reference colours must be finite")
    used = np.flatnonzero(np.all(np.isfinite(meas_all), axis=1))
    meas = meas_all[used]
    ref_lab = _lab(ref_all[used])
    warnings: list[str] = []

    current: str | None = model
    coef: NDArray[np.float64] | None = None
    while current is not None:
        problem: str | None = None
        if len(used) < _MODEL_MIN_PATCHES[current]:
            problem = f"only {len(used)} usable colour patches"
        elif not _rank_ok(current, meas):
            problem = "the usable colour patches do not span the colour space"
        else:
            coef = _fit(current, meas, ref_lab, cross_term_penalty)
            problem = _degenerate(current, coef, meas)
        if problem is None:
            break
        coef = None
        simpler = _SIMPLER[current]
        if simpler is None:
            raise ValueError(f"cannot fit a colour correction: {problem}")
        warnings.append(f"{problem}: fitted a {simpler} colour correction instead of {current}")
        current = simpler
    assert current is not None and coef is not None

    per_patch = delta_e00(_lab(_apply_model(current, coef, meas)), ref_lab)
    loo = np.full(len(used), np.nan)
    for j in range(len(used)):
        keep = np.delete(np.arange(len(used)), j)
        cj = _fit(current, meas[keep], ref_lab[keep], cross_term_penalty)
        loo[j] = delta_e00(_lab(_apply_model(current, cj, meas[j : j + 1])), ref_lab[j : j + 1])[0]
    residual = np.full(len(meas_all), np.nan)
    residual[used] = per_patch
    return ColourCorrection(
        model=current,  # type: ignore[arg-type]
        coefficients=coef,
        source="card",
        residual_de00_mean=float(np.mean(per_patch)),
        residual_de00_max=float(np.max(per_patch)),
        residual_de00_loo_mean=float(np.mean(loo)) if np.all(np.isfinite(loo)) else None,
        patch_residual_de00=residual,
        patches_used=tuple(int(i) for i in used),
        warnings=tuple(warnings),
    )


def no_colour_correction(reason: str = NO_COLOUR_WARNING) -> ColourCorrection:
    """The identity correction (``colour_source`` none), with ``reason`` as its warning."""
    return ColourCorrection(model="identity", coefficients=np.eye(3), source="none", warnings=(reason,))


# --------------------------------------------------------------------------- the one call


def calibrate(
    rgb: ArrayLike,
    card: CardSpec,
    settings: CalibrationSettings | None = None,
    *,
    px_per_mm: float | None = None,
) -> Calibration:
    """Scale and colour correction of one photo (HxWx3 uint8 sRGB) from its card.

    * Card found: scale and colour from the card. A manual ``px_per_mm`` given as well is
      not used, but a warning says so when it differs from the card's by more than
      ``max_scale_disagreement``.
    * No card: the manual ``px_per_mm`` (uniform scale) if given, else no scale; colours
      are not corrected. Both are said in ``warnings``.
    """
    s = settings or CalibrationSettings()
    img = _check_rgb(rgb)
    manual = _valid_px_per_mm(px_per_mm) if px_per_mm is not None else None
    detection = find_card(img, card, s)
    warnings: list[str] = []

    def without_card(*why: str) -> Calibration:
        scale = manual_scale(manual) if manual is not None else no_scale()
        colour = no_colour_correction()
        return Calibration(scale, colour, None, tuple(why) + scale.warnings + colour.warnings)

    if detection is None:
        return without_card()
    if detection.marker_side_px < s.reject_marker_px:
        return without_card(f"a marker-like pattern {detection.marker_side_px:.0f} px across was found and "
                            f"rejected (< {s.reject_marker_px:g} px): treated as no card")

    h, w = img.shape[:2]
    scale = scale_from_card(detection, (w, h), s)
    if detection.other_marker_ids:
        others = ", ".join(str(i) for i in detection.other_marker_ids)
        warnings.append(f"several card markers in the photo (also id {others}): used id {detection.marker_id}, "
                        "the largest")
    if manual is not None and scale.px_per_mm is not None:
        diff = manual / scale.px_per_mm - 1.0
        if abs(diff) > s.max_scale_disagreement:
            warnings.append(
                f"--px-per-mm {manual:g} disagrees with the card ({scale.px_per_mm:.3f} px/mm, {diff:+.1%}): "
                "using the card"
            )

    names = card.patches.names
    measured = measure_patches(img, detection, card, s)
    unusable = [names[i] for i in range(len(names)) if not np.all(np.isfinite(measured[i]))]
    if unusable:
        warnings.append(
            f"{len(unusable)} of {len(names)} colour patches not usable (outside the photo or clipped): "
            + ", ".join(unusable)
        )
    reference = lab_to_linear_rgb(reference_lab(card))
    try:
        colour = fit_colour_correction(
            measured, reference, s.colour_model, cross_term_penalty=s.cross_term_penalty
        )
    except ValueError as exc:
        colour = no_colour_correction(f"card found but its colours could not be used ({exc}): "
                                      "colours are not corrected")
    else:
        if colour.residual_de00_mean is not None and colour.residual_de00_mean > s.reject_residual_de00:
            return without_card(f"a card marker was found but its colour patches do not match the card "
                                f"(residual dE00 mean {colour.residual_de00_mean:.1f} > {s.reject_residual_de00:g}): "
                                "rejected as a false marker, treated as no card")
        if colour.residual_de00_mean is not None and colour.residual_de00_mean > s.max_residual_de00:
            assert colour.patch_residual_de00 is not None
            worst = int(np.nanargmax(colour.patch_residual_de00))
            warnings.append(
                f"card colour residual dE00 mean {colour.residual_de00_mean:.1f} > {s.max_residual_de00:g} "
                f"(worst patch {names[worst]}: {colour.patch_residual_de00[worst]:.1f}): "
                "colour correction is unreliable (uneven light, glare, or card colours differ from the references)"
            )
    return Calibration(scale, colour, detection, scale.warnings + tuple(warnings) + colour.warnings)
