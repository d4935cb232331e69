"""Polygons <-> pixels: rasterising outlines, tracing masks back to outlines, composing class masks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from data.importers.results import BACKGROUND, DEFAULT_PRIORITY

# Hand-written because neither library does what the contract needs: cv2.fillPoly (even with
# sub-pixel `shift`) rounds edge crossings to the nearest pixel and fills both ends inclusively,
# so the COCO unit square of side 4 ([-0.5, 3.5] in centre coordinates) comes out 5x5 pixels;
# skimage.draw.polygon tests every pixel of the bounding box against every edge (O(area x
# vertices), about a minute for one large scalp outline) and includes centres on the boundary.


def _fill_polygon(canvas: np.ndarray, xy: np.ndarray) -> None:
    """Set ``canvas`` pixels whose centres lie inside polygon ``xy`` (project coordinates).

    Scanline fill, vectorised over all (row, edge) crossings: a row ``r`` crosses an edge when
    ``min(y0, y1) <= r < max(y0, y1)``; within a row, sorted crossings pair up (even-odd rule)
    and the pixels ``ceil(x_a) .. ceil(x_b) - 1`` between a pair are inside.
    """
    h, w = canvas.shape
    x0, y0 = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    r_start = np.clip(np.ceil(np.minimum(y0, y1)), 0, h).astype(np.int64)
    r_stop = np.clip(np.ceil(np.maximum(y0, y1)), 0, h).astype(np.int64)
    n = r_stop - r_start
    crossing = np.flatnonzero(n > 0)
    if crossing.size == 0:
        return
    n = n[crossing]
    edge = np.repeat(crossing, n)
    rows = r_start[edge] + np.arange(edge.size) - np.repeat(np.cumsum(n) - n, n)
    t = (rows - y0[edge]) / (y1[edge] - y0[edge])
    xs = x0[edge] + t * (x1[edge] - x0[edge])
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    if rows.size % 2 or np.any(rows[0::2] != rows[1::2]):  # pragma: no cover - closed polygons
        raise AssertionError("odd number of crossings on a scanline")
    pair_rows = rows[0::2]
    start = np.clip(np.ceil(xs[0::2]), 0, w).astype(np.int64)
    stop = np.clip(np.ceil(xs[1::2]), 0, w).astype(np.int64)
    top, bottom = int(pair_rows.min()), int(pair_rows.max()) + 1
    span = (bottom - top) * (w + 1)
    base = (pair_rows - top) * (w + 1)
    diff = np.bincount(base + start, minlength=span) - np.bincount(base + stop, minlength=span)
    inside = np.cumsum(diff.reshape(bottom - top, w + 1), axis=1)[:, :w] > 0
    canvas[top:bottom] |= inside


def rasterise_polygon(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxW boolean mask of the pixels whose centres are inside polygon ``xy``.

    ``xy`` is (N, 2) x, y in project coordinates (pixel centres at integers). Even-odd rule,
    half-open edges; vertices may lie outside the image.
    """
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(pts)}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("polygon coordinates must be finite numbers")
    canvas = np.zeros((height, width), dtype=bool)
    _fill_polygon(canvas, pts)
    return canvas


def _drop_redundant_vertices(poly: np.ndarray) -> np.ndarray:
    """Remove repeated and collinear vertices (including zero-width spikes) of an integer ring."""
    p = poly
    while len(p) >= 3:
        repeated = np.all(p == np.roll(p, -1, axis=0), axis=1)
        if repeated.any():
            p = p[~repeated]
            continue
        prev, nxt = np.roll(p, 1, axis=0), np.roll(p, -1, axis=0)
        cross = (p[:, 0] - prev[:, 0]) * (nxt[:, 1] - p[:, 1]) - (p[:, 1] - prev[:, 1]) * (nxt[:, 0] - p[:, 0])
        straight = cross == 0
        if not straight.any():
            return p
        if straight.all():
            return p[:0]
        p = p[~straight]
    return p[:0]


def mask_outlines(region: np.ndarray) -> list[np.ndarray]:
    """Outer outlines of a boolean mask along pixel edges, in project coordinates.

    Each outline is an (N, 2) float64 polygon whose vertices are pixel corners (half-integers);
    filling it with :func:`rasterise_polygon` gives the region back exactly, holes filled (a
    polygon cannot carry holes; export RLE/masks when they matter). The outline is traced by
    ``cv2.findContours`` on the mask upsampled 2x: there a boundary pixel ``u`` of an original
    pixel ``j`` is ``2j`` (its left/top half) or ``2j + 1`` (right/bottom half), so
    ``ceil(u / 2)`` is the pixel edge in corner coordinates.
    """
    m = np.asarray(region, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"region must be 2-D, got shape {m.shape}")
    if not m.any():
        return []
    up = np.repeat(np.repeat(m.astype(np.uint8), 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outlines = []
    for contour in contours:
        corners = (contour.reshape(-1, 2).astype(np.int64) + 1) // 2
        ring = _drop_redundant_vertices(corners)
        if len(ring) >= 3:
            outlines.append(ring.astype(np.float64) - 0.5)
    return outlines


def compose_mask(
    layers: Mapping[int, np.ndarray],
    height: int,
    width: int,
    *,
    unlabelled: int = BACKGROUND,
    priority: Sequence[int] = DEFAULT_PRIORITY,
) -> np.ndarray:
    """HxW uint8 class mask from per-class boolean layers, painted in ``priority`` order."""
    out = np.full((height, width), unlabelled, dtype=np.uint8)
    for value in priority:
        layer = layers.get(value)
        if layer is not None:
            out[np.asarray(layer, dtype=bool)] = value
    return out
