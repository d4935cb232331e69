"""Pigment stage: each dot's colour against its own skin, and the flags a reviewer checks.

Colours are measured in linear RGB after the card's colour correction (applied
to the pixels around each sample point only, never to the whole photo) and
reported in CIELAB (D65): the dot's core mean, and its skin annulus (median per
channel of the annulus samples on bare scalp, robust to a pore or a stray hair
edge). From those, with the definitions of ``data/colour.py``:
``contrast_dL`` = skin L* - dot L*, ``dE00``, ``blue_index``; flags with the
thresholds of ``configs/flags.yaml`` (``data/flags.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data.colour import blue_index, delta_e00, linear_rgb_to_lab
from data.flags import FlagSettings, flag_dots, measurable_dots
from data.metrics import DOT_COLOUR_COLUMNS
from pipeline.one_photo.calibration import ColourCorrection
from pipeline.one_photo.detect import DotEvidence
from pipeline.one_photo.dots import DotGeometry, annulus_valid, core_and_annulus_points

__all__ = ["DOT_COLUMNS", "dot_table", "sample_corrected"]

#: Columns of ``dots.csv`` (docs/design.md, then extras).
DOT_COLUMNS = [
    "dot_id",
    "x",
    "y",
    "diameter_mm",
    "diameter_px",
    "elongation",
    *DOT_COLOUR_COLUMNS,
    "score",
    "skin_samples",
    "confidence",
    "significance",
    "noise_dL",
    "continuation",
    "curvature_ratio",
    "model_score",
    "patch_score",
    "measurable",
]


@dataclass(frozen=True)
class _Colours:
    core: np.ndarray  # (N, 3) linear RGB, corrected
    skin: np.ndarray  # (N, 3) linear RGB, corrected; NaN rows without bare skin around
    n_skin: np.ndarray  # (N,) annulus samples used


def sample_corrected(rgb: np.ndarray, colour: ColourCorrection, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Colour-corrected linear RGB of the 8-bit sRGB photo at float positions (any shape) -> (..., 3).

    Bilinear interpolation of the corrected pixels: the four pixels around each
    point are decoded and corrected, then weighted, which equals sampling a fully
    corrected copy of the photo (for any correction model) at a fraction of its
    cost. Positions outside the photo take the nearest border pixel.
    """
    h, w = rgb.shape[:2]
    xf = np.clip(np.asarray(x, np.float32), np.float32(0), np.float32(w - 1))
    yf = np.clip(np.asarray(y, np.float32), np.float32(0), np.float32(h - 1))
    x0 = np.minimum(xf.astype(np.int64), max(w - 2, 0))  # floor: the values are >= 0
    y0 = np.minimum(yf.astype(np.int64), max(h - 2, 0))
    fx = (xf - x0)[..., None]
    fy = (yf - y0)[..., None]
    # the four neighbours as one gather from the flat photo
    i00 = y0 * w + x0
    step_x, step_y = int(w > 1), w * int(h > 1)
    idx = np.stack([i00, i00 + step_x, i00 + step_y, i00 + step_y + step_x], axis=-1)
    # each pixel as one 3-byte item: numpy gathers whole items ~2x faster than rows of a (N, 3) array
    pixels = np.ascontiguousarray(rgb).view(np.dtype((np.void, 3))).reshape(-1)
    quad = pixels[idx].view(np.uint8).reshape(idx.shape + (3,))  # (..., 4, 3) uint8
    c = colour.apply(quad)
    return (c[..., 0, :] * (1 - fx) + c[..., 1, :] * fx) * (1 - fy) + (c[..., 2, :] * (1 - fx) + c[..., 3, :] * fx) * fy


def _measure(
    rgb: np.ndarray,
    colour: ColourCorrection,
    geom: DotGeometry,
    labels: np.ndarray,
    occupied: np.ndarray,
    ppm_local: np.ndarray,
    annulus_mm: float,
) -> _Colours:
    (cx, cy), (ax, ay) = core_and_annulus_points(geom, ppm_local, annulus_mm)
    core = sample_corrected(rgb, colour, cx, cy).mean(axis=1)
    ring = sample_corrected(rgb, colour, ax, ay)
    ok = annulus_valid(ax, ay, labels, occupied)
    n_ok = ok.sum(axis=1)
    return _Colours(core=core, skin=_valid_median(ring, ok, n_ok, min_count=3), n_skin=n_ok)


def _valid_median(values: np.ndarray, valid: np.ndarray, count: np.ndarray, min_count: int) -> np.ndarray:
    """Per row of ``values`` (N, K, C), the median over its ``valid`` (N, K) samples, NaN with fewer
    than ``min_count``. The same as ``np.nanmedian`` on NaN-masked rows (which is slow for short rows):
    invalid samples are sorted to the end, the median read at the middle of the ``count`` valid ones."""
    n = len(values)
    out = np.full((n, values.shape[2]), np.nan)
    if n == 0 or values.shape[1] == 0:
        return out
    ordered = np.sort(np.where(valid[..., None], values, np.inf), axis=1)  # valid first, ascending
    lo = np.clip((count - 1) // 2, 0, None)[:, None, None]
    hi = np.clip(count // 2, 0, None)[:, None, None]
    shape = (n, 1, values.shape[2])
    mid = (
        0.5
        * (
            np.take_along_axis(ordered, np.broadcast_to(lo, shape), axis=1)
            + np.take_along_axis(ordered, np.broadcast_to(hi, shape), axis=1)
        )[:, 0]
    )
    has = count >= min_count
    out[has] = mid[has]
    return out


def dot_table(
    rgb: np.ndarray,
    colour: ColourCorrection,
    geom: DotGeometry,
    labels: np.ndarray,
    occupied: np.ndarray,
    ppm_local: np.ndarray | None,
    annulus_mm: float,
    rules: FlagSettings,
    nominal_ppm: float,
    evidence: DotEvidence | None = None,
) -> pd.DataFrame:
    """One row per dot with the docs/metrics.md columns (``DOT_COLUMNS``).

    ``rgb``: the HxWx3 uint8 sRGB photo; ``colour``: the card's colour correction,
    applied at the sample points. ``ppm_local``: px/mm
    at each dot (None without a scale: ``diameter_mm`` is NaN, the annulus width
    uses ``nominal_ppm``, the nominal close-up scale the caller assumed).
    ``evidence``: why each dot was reported (``pipeline.one_photo.detect``); its columns are
    NaN without it. ``measurable``: the half-maximum diameter spans at least
    ``rules.measurable_min_diameter_px`` photo pixels and bare skin was found
    around the dot; only measurable dots can carry a flag.
    """
    n = len(geom)
    scale_known = ppm_local is not None
    ppm = ppm_local if ppm_local is not None else np.full(n, float(nominal_ppm))  # (= scale_known)
    col = _measure(rgb, colour, geom, labels, occupied, ppm, annulus_mm)
    lab = linear_rgb_to_lab(np.clip(col.core, 1e-6, None)) if n else np.zeros((0, 3))
    with np.errstate(invalid="ignore"):
        skin_lab = linear_rgb_to_lab(np.clip(col.skin, 1e-6, None)) if n else np.zeros((0, 3))
        diameter_mm = 2.0 * geom.radius_px / ppm if scale_known else np.full(n, np.nan)
        contrast = skin_lab[:, 0] - lab[:, 0]
        de = delta_e00(lab, skin_lab) if n else np.zeros(0)
        bi = blue_index(lab, skin_lab) if n else np.zeros(0)
    measurable = measurable_dots(2.0 * geom.radius_px, rules) & np.isfinite(contrast)
    flags = flag_dots(
        np.where(measurable, bi, np.nan),
        np.where(measurable, contrast, np.nan),
        np.where(measurable, diameter_mm, np.nan),
        rules,
        lstar=lab[:, 0],
    )
    ev = {
        k: np.full(n, np.nan)
        for k in (
            "confidence",
            "significance",
            "noise_dL",
            "continuation",
            "curvature_ratio",
            "model_score",
            "patch_score",
        )
    }
    if evidence is not None:
        ev.update(
            confidence=evidence.confidence,
            significance=evidence.significance,
            noise_dL=evidence.noise_dl,
            continuation=evidence.continuation,
            curvature_ratio=evidence.curvature_ratio,
            model_score=evidence.model_score,
            patch_score=evidence.patch_score,
        )
    return pd.DataFrame(
        {
            "dot_id": np.arange(n),
            "x": geom.xy[:, 0],
            "y": geom.xy[:, 1],
            "diameter_mm": diameter_mm,
            "diameter_px": 2.0 * geom.radius_px,
            "elongation": geom.elongation,
            "L": lab[:, 0],
            "a": lab[:, 1],
            "b": lab[:, 2],
            "skin_L": skin_lab[:, 0],
            "skin_a": skin_lab[:, 1],
            "skin_b": skin_lab[:, 2],
            "contrast_dL": contrast,
            "dE00": de,
            "blue_index": bi,
            "blue_shift": flags.blue_shift,
            "faded": flags.faded,
            "spread": flags.spread,
            "score": geom.score,
            "skin_samples": col.n_skin,
            **ev,
            "measurable": measurable,
        },
        columns=DOT_COLUMNS,
    )
