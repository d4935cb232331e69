"""Random scalar fields and point processes used to build scenes.

Large images need fields that are cheap per pixel: a field is drawn as a
coarse grid of Gaussian values and upsampled with bicubic interpolation
(one ``cv2.resize`` per octave), which costs a few milliseconds per megapixel.
"""

from __future__ import annotations

import cv2
import numpy as np


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], cell_px: float, octaves: int = 1, persistence: float = 0.5
) -> np.ndarray:
    """A zero-mean random field with features about ``cell_px`` pixels wide.

    Each octave halves the feature size and multiplies the amplitude by
    ``persistence``; the result is normalised to unit standard deviation
    (float32, ``shape``). A field whose finest features span many pixels is
    drawn on a coarser raster (finest cell >= 4 raster pixels) and upsampled
    once at the end, so its cost hardly depends on the output size.
    """
    h, w = shape
    finest = float(max(cell_px, 1.0)) / 2.0 ** (octaves - 1)
    q = max(1, int(finest // 4.0))
    if q > 1:
        small = smooth_field(rng, (-(-h // q), -(-w // q)), cell_px / q, octaves, persistence)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((h, w), np.float32)
    amp, cell = 1.0, float(max(cell_px, 1.0))
    for _ in range(octaves):
        gh, gw = int(np.ceil(h / cell)) + 3, int(np.ceil(w / cell)) + 3
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        # upsample the whole grid, then crop with a random sub-cell offset
        big_w, big_h = int(round(gw * cell)), int(round(gh * cell))
        up = cv2.resize(grid, (big_w, big_h), interpolation=cv2.INTER_CUBIC)
        oy = int(rng.integers(0, max(1, big_h - h - int(cell))))
        ox = int(rng.integers(0, max(1, big_w - w - int(cell))))
        if amp == 1.0:
            out += up[oy : oy + h, ox : ox + w]
        else:
            cv2.scaleAdd(up[oy : oy + h, ox : ox + w], amp, out, dst=out)
        amp *= persistence
        cell = max(cell / 2.0, 1.0)
    sd = float(out.std())
    if sd > 0:
        out *= np.float32(1.0 / sd)
    return out


def poisson_points(
    rng: np.random.Generator,
    density_map: np.ndarray,
    mean_count: float,
) -> np.ndarray:
    """Points of an inhomogeneous Poisson process over a rectangle.

    ``density_map`` (any resolution, values >= 0) is the relative intensity over
    the unit square; ``mean_count`` is the expected count where the map is 1.
    Returns (N, 2) coordinates in [0, 1) x [0, 1) as (u, v) = (x/width, y/height).
    """
    dmax = float(density_map.max()) if density_map.size else 0.0
    if dmax <= 0 or mean_count <= 0:
        return np.zeros((0, 2))
    n = rng.poisson(mean_count * dmax)
    uv = rng.random((n, 2))
    gh, gw = density_map.shape
    iy = np.minimum((uv[:, 1] * gh).astype(int), gh - 1)
    ix = np.minimum((uv[:, 0] * gw).astype(int), gw - 1)
    keep = rng.random(n) * dmax < density_map[iy, ix]
    return uv[keep]


def blue_noise_points(
    rng: np.random.Generator, width: float, height: float, spacing: float, jitter: float
) -> np.ndarray:
    """Points about ``spacing`` apart, irregular like an artist's hand.

    A hexagonal lattice with a random orientation is jittered by ``jitter`` x
    spacing (Gaussian), then points closer than 0.55 x spacing are thinned
    (the later of each close pair goes). The result has the short-range
    regularity of a Poisson-disk pattern without any lattice order beyond a
    few neighbours. Coordinates in the same units as ``width``/``height``.
    """
    theta = rng.uniform(0, np.pi)
    diag = float(np.hypot(width, height))
    dy = spacing * np.sqrt(3) / 2
    nx, ny = int(diag / spacing) + 3, int(diag / dy) + 3
    jj, ii = np.meshgrid(np.arange(-nx // 2, nx // 2 + 1), np.arange(-ny // 2, ny // 2 + 1))
    x = (jj + 0.5 * (ii % 2)) * spacing
    y = ii * dy
    c, s = np.cos(theta), np.sin(theta)
    pts = np.stack([c * x - s * y + width / 2, s * x + c * y + height / 2], axis=-1).reshape(-1, 2)
    pts = pts + rng.normal(0.0, jitter * spacing, pts.shape)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height)
    pts = pts[inside]
    pts = pts[rng.permutation(len(pts))]
    if len(pts) < 2:
        return pts
    from scipy.spatial import cKDTree

    pairs = cKDTree(pts).query_pairs(0.55 * spacing, output_type="ndarray")
    drop = np.zeros(len(pts), bool)
    # greedy: visit pairs in order and drop the second unless the first is gone
    for a, b in pairs[np.argsort(pairs.max(axis=1))]:
        if not drop[a] and not drop[b]:
            drop[max(a, b)] = True
    return pts[~drop]
