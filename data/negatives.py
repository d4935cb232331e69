"""Scalp-free photos cut from whole-head views: walls, clothes, furniture, the face, neck and ears.

A segmenter must call such a photo background (the product then refuses it: no scalp). The
whole-head training views show these things only at their own scale and only inside a photo
whose exposure and white balance are set by the head; cut out and shown alone they are the
negatives the model needs. They are not magnified by default: a face or neck enlarged to a
close-up's scale looks like a bare scalp, which must stay scalp.

* :func:`background_windows`: the grid windows of a mask that are (almost) all background;
* :func:`scalp_free_photos`: a few of them, drawn with a passed-in generator, each magnified by a
  drawn factor and returned with its own mask and scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data.metrics import BACKGROUND

__all__ = ["ScalpFree", "background_windows", "scalp_free_photos"]


@dataclass(frozen=True)
class ScalpFree:
    """One scalp-free photo: RGB uint8, its mask (background, 255 where the source was not) and px/mm."""

    image: np.ndarray
    mask: np.ndarray
    px_per_mm: float
    origin: tuple[int, int]
    """Top-left pixel (x, y) of the window in the source photo."""
    zoom: float


def background_windows(mask: np.ndarray, size: int, stride: int, min_share: float = 0.99) -> list[tuple[int, int]]:
    """Top-left (x, y) of each ``size`` window on a ``stride`` grid whose mask is at least ``min_share``
    background (row-major order)."""
    if size < 1 or stride < 1:
        raise ValueError(f"size and stride must be >= 1, got {size}, {stride}")
    if not 0.0 < min_share <= 1.0:
        raise ValueError(f"min_share must be in (0, 1], got {min_share}")
    mask = np.asarray(mask)
    h, w = mask.shape
    bg = (mask == BACKGROUND).astype(np.float64)
    # summed-area table: every window's background count in O(1)
    sat = np.zeros((h + 1, w + 1))
    sat[1:, 1:] = bg.cumsum(0).cumsum(1)
    out = []
    for y in range(0, h - size + 1, stride):
        for x in range(0, w - size + 1, stride):
            count = sat[y + size, x + size] - sat[y, x + size] - sat[y + size, x] + sat[y, x]
            if count >= min_share * size * size:
                out.append((x, y))
    return out


def scalp_free_photos(
    image: np.ndarray,
    mask: np.ndarray,
    px_per_mm: float,
    rng: np.random.Generator,
    *,
    size: int = 384,
    max_n: int = 2,
    zoom: tuple[float, float] = (1.0, 1.0),
    min_share: float = 0.99,
) -> list[ScalpFree]:
    """Up to ``max_n`` scalp-free photos of ``size`` px from one photo and its mask.

    Each is a window of ``size / z`` px (``z`` drawn uniformly from ``zoom``) that is at least
    ``min_share`` background, enlarged to ``size``; its mask is background where the source's was and
    255 (unlabelled) elsewhere;
    its scale is the source's times ``z``. Fewer (or none) when the photo has fewer such windows.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    lo, hi = zoom
    if not 1.0 <= lo <= hi:
        raise ValueError(f"zoom must satisfy 1 <= low <= high, got {zoom}")
    out: list[ScalpFree] = []
    for _ in range(max_n):
        z = float(rng.uniform(lo, hi))
        side = max(8, int(round(size / z)))
        spots = background_windows(mask, side, max(1, side // 2), min_share)
        if not spots:
            break
        x, y = spots[int(rng.integers(len(spots)))]
        window = image[y : y + side, x : x + side]
        labels = np.where(mask[y : y + side, x : x + side] == BACKGROUND, BACKGROUND, 255).astype(np.uint8)
        out.append(
            ScalpFree(
                image=cv2.resize(window, (size, size), interpolation=cv2.INTER_LINEAR),
                mask=cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST),
                px_per_mm=float(px_per_mm) * size / side,
                origin=(x, y),
                zoom=size / side,
            )
        )
    return out
