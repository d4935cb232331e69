"""Evidence measured on a candidate beyond its radial profile: the strand tests (the axis and
curvature ratio of the Hessian, darkness continuing beyond the dot's end) and the normalised
patches the second look reads (:func:`dot_patches`)."""

from __future__ import annotations

import numpy as np

from models.dot_patch import PATCH_RADIUS, normalise_patches
from pipeline.one_photo.dots import sample_points


def _ridge_axis(g: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis of least curvature of the blurred darkness ``g`` at each point (its Hessian; ``g`` is
    blurred at the points' own scale), and the curvature ratio |small| / |large| (1 = blob, 0 = ridge)."""
    x, y = xy[:, 0], xy[:, 1]
    o = sample_points(g, x, y)
    dxx = sample_points(g, x + 1, y) + sample_points(g, x - 1, y) - 2 * o
    dyy = sample_points(g, x, y + 1) + sample_points(g, x, y - 1) - 2 * o
    dxy = 0.25 * (
        sample_points(g, x + 1, y + 1)
        + sample_points(g, x - 1, y - 1)
        - sample_points(g, x + 1, y - 1)
        - sample_points(g, x - 1, y + 1)
    )
    tr, det = dxx + dyy, dxx * dyy - dxy * dxy
    disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0.0))
    l1, l2 = tr / 2 + disc, tr / 2 - disc  # l2 <= l1; a dark line has l2 << 0
    big, small = np.where(np.abs(l2) >= np.abs(l1), l2, l1), np.where(np.abs(l2) >= np.abs(l1), l1, l2)
    ratio = np.abs(small) / np.maximum(np.abs(big), 1e-6)
    # eigenvector of the larger eigenvalue l1: along a bright ridge of the darkness (a dark strand)
    theta = 0.5 * np.arctan2(2 * dxy, dxx - dyy)
    return theta, ratio


def _continuation(
    dark: np.ndarray, xy: np.ndarray, axis: np.ndarray, dist: np.ndarray, width: np.ndarray, peak: np.ndarray
) -> np.ndarray:
    """Ridge test: darkness at ``dist`` beyond the centre along ``axis`` (the larger end) minus the
    darkness at the same distance across it, over the centre darkness ``peak``. A strand (or a cut
    end with its shaft) is dark along its axis and not across: high. A dot returns to skin in
    every direction, and in a dense field its neighbours lie in any direction, along as often as
    across: about 0."""
    if len(xy) == 0:
        return np.zeros(0)
    c, s = np.cos(axis), np.sin(axis)
    # three lateral offsets x three distances (a rendered or photographed strand is often dashed)
    lat = np.tile(np.array([-0.5, 0.0, 0.5]), 3)[None, :] * width[:, None]
    far = np.repeat(np.array([0.7, 1.0, 1.4]), 3)[None, :] * dist[:, None]

    def probe(ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
        xs = xy[:, 0, None] + far * ux[:, None] - lat * uy[:, None]
        ys = xy[:, 1, None] + far * uy[:, None] + lat * ux[:, None]
        return sample_points(dark, xs, ys).max(axis=1)

    along = np.maximum(probe(c, s), probe(-c, -s))
    across = np.maximum(probe(-s, c), probe(s, -c))
    return (along - np.maximum(across, 0.0)) / np.maximum(peak, 1e-3)


def dot_patches(lum: np.ndarray, xy: np.ndarray, radius: int = PATCH_RADIUS) -> np.ndarray:
    """(N, 2r+1, 2r+1) normalised patches (``models.dot_patch.normalise_patches``) of ``lum``
    centred on the sub-pixel points ``xy`` (bilinear; the border replicated outside the image)."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    off = np.arange(-radius, radius + 1, dtype=np.float64)
    oy, ox = (a.ravel() for a in np.meshgrid(off, off, indexing="ij"))
    size = 2 * radius + 1
    if len(xy) == 0:
        return np.zeros((0, size, size), np.float32)
    raw = sample_points(lum, xy[:, :1] + ox[None, :], xy[:, 1:] + oy[None, :])
    return normalise_patches(raw.reshape(len(xy), size, size))
