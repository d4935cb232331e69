"""Pixel geometry: points carried through a resize, and homographies of image points (one place
for the projective maths every stage uses).

A 3x3 homography ``H`` maps an image point ``(x, y)`` (column, row; pixel centres at
integers, OpenCV's convention) to ``(u / w, v / w)`` with ``(u, v, w) = H @ (x, y, 1)``:
card millimetres to photo pixels (calibration), photo pixels to the scalp plane (scale),
one photo to another (registration), the synthetic camera's plane to its image.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "resize_points",
    "apply_homography",
    "homography_jacobian",
    "frame_corners",
    "is_convex_quad",
    "mean_linear_scale",
    "normalised_homography",
]


def apply_homography(h: ArrayLike, xy: ArrayLike) -> NDArray[np.float64]:
    """Map ``(N, 2)`` points with the 3x3 homography ``h`` (float64 ``(N, 2)``)."""
    hm = np.asarray(h, np.float64)
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    p = pts @ hm[:, :2].T + hm[:, 2]
    return p[:, :2] / p[:, 2:3]


def homography_jacobian(h: ArrayLike, xy: ArrayLike) -> NDArray[np.float64]:
    """2x2 derivative of the projective map ``h`` at the point ``xy``; the square root of its
    determinant's magnitude is the local linear scale."""
    hm = np.asarray(h, np.float64)
    x, y = np.asarray(xy, dtype=np.float64).reshape(2)
    u, v, w = hm @ np.array([x, y, 1.0])
    return np.array(
        [
            [(hm[0, 0] * w - u * hm[2, 0]) / w**2, (hm[0, 1] * w - u * hm[2, 1]) / w**2],
            [(hm[1, 0] * w - v * hm[2, 0]) / w**2, (hm[1, 1] * w - v * hm[2, 1]) / w**2],
        ]
    )


def frame_corners(size: tuple[int, int]) -> NDArray[np.float64]:
    """The outer corners of a ``(width, height)`` image, clockwise from the top left."""
    w, h = size
    return np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])


def is_convex_quad(quad: NDArray[np.float64]) -> bool:
    """Whether the ``(4, 2)`` quadrilateral is convex (and not folded)."""
    edges = np.roll(quad, -1, axis=0) - quad
    cross = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    return bool(np.all(cross > 0) or np.all(cross < 0))


def mean_linear_scale(h: NDArray[np.float64], after_size: tuple[int, int]) -> float:
    """Mean linear scale of ``h`` over a frame of ``after_size`` (output px per input px)."""
    quad = apply_homography(h, frame_corners(after_size))
    area = 0.5 * abs(np.dot(quad[:, 0], np.roll(quad[:, 1], -1)) - np.dot(quad[:, 1], np.roll(quad[:, 0], -1)))
    return math.sqrt(area / (after_size[0] * after_size[1]))


def normalised_homography(h: NDArray[np.float64]) -> NDArray[np.float64]:
    """A read-only copy of ``h`` scaled so that ``H[2, 2] = 1``."""
    out = np.array(h, np.float64) / h[2, 2]
    out.flags.writeable = False
    return out


def resize_points(xy: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """(N, 2) points ``xy`` (OpenCV convention: pixel centres at integers) in an image resized by ``fx``
    across and ``fy`` down; a new array, other columns of ``xy`` (a score, ...) left as they are."""
    out = np.array(xy, dtype=np.result_type(np.asarray(xy).dtype, np.float32), copy=True)
    if len(out):
        out[:, 0] = (out[:, 0] + 0.5) * fx - 0.5
        out[:, 1] = (out[:, 1] + 0.5) * fy - 0.5
    return out
