"""The photo at the canonical scale: resampling, the scalp and hair classes read at it, compact
blobs a segmenter calls hair given back to the scalp, and hair pixels filled from the skin around."""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

from data.metrics import HAIR, SCALP


def _resize(img: np.ndarray, f: float, interp: int | None = None) -> np.ndarray:
    h, w = img.shape[:2]
    size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
    if interp is None:
        interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interp)


def _classes_at(labels: np.ndarray, f: float) -> tuple[np.ndarray, np.ndarray]:
    """Scalp and hair masks at the canonical scale. Downscaling keeps hair where it covers a
    quarter of a canonical pixel (thin strands stay hair), scalp where it covers half."""
    if abs(f - 1.0) < 1e-9:
        return labels == SCALP, labels == HAIR
    if f > 1:
        small = _resize(labels, f, cv2.INTER_NEAREST)
        return small == SCALP, small == HAIR
    scalp = _resize((labels == SCALP).astype(np.float32), f) >= 0.5
    hair = _resize((labels == HAIR).astype(np.float32), f) >= 0.25
    return scalp & ~hair, hair


def _compact_blobs(hair: np.ndarray, px_per_mm: float, max_diameter_mm: float) -> np.ndarray:
    """Parts of a hair mask that are not strands: what survives an opening with a disc wider than a
    strand (about 0.1 mm), in pieces no longer than a dot (``max_diameter_mm``)."""
    if not hair.any():
        return np.zeros_like(hair)
    k = max(3, int(round(0.1 * px_per_mm)) | 1)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    opened = cv2.morphologyEx(hair.view(np.uint8), cv2.MORPH_OPEN, disc)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if n <= 1:
        return np.zeros_like(hair)
    extent = np.hypot(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT])
    small = np.zeros(n, bool)
    small[1:] = extent <= max_diameter_mm * px_per_mm
    # (a table look-up of the int32 labels: np.take is ~2.5x faster than small[comp])
    return np.take(small, cast(NDArray[np.int32], comp))


def _fill(lum: np.ndarray, holes: np.ndarray, sigma_px: float) -> np.ndarray:
    """``lum`` with the ``holes`` pixels replaced by a normalised Gaussian mean of the others
    (widening the kernel where a hole is wider than it)."""
    keep = (~holes).astype(np.float32)
    out = lum.copy()
    todo = holes.copy()
    sg = max(0.7, sigma_px)
    weighted = lum * keep
    for _ in range(4):
        num = cv2.GaussianBlur(weighted, (0, 0), sg)
        den = cv2.GaussianBlur(keep, (0, 0), sg)
        ok = todo & (den > 0.05)
        out[ok] = num[ok] / den[ok]
        todo &= ~ok
        if not todo.any():
            break
        sg *= 2.5
    return out
