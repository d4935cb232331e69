"""Pixel geometry shared by every stage that resizes a photo and must carry points with it."""
from __future__ import annotations

import numpy as np

__all__ = ["resize_points"]


def resize_points(xy: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """(N, 2) points ``xy`` (OpenCV convention: pixel centres at integers) in an image resized by ``fx``
    across and ``fy`` down; a new array, other columns of ``xy`` (a score, ...) left as they are."""
    out = np.array(xy, dtype=np.result_type(np.asarray(xy).dtype, np.float32), copy=True)
    if len(out):
        out[:, 0] = (out[:, 0] + 0.5) * fx - 0.5
        out[:, 1] = (out[:, 1] + 0.5) * fy - 0.5
    return out
