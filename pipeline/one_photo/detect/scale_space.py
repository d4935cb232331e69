"""The scale space's planes and the skin's texture at each scale: the robust local RMS of a
filter response, the typical response of the skin's own blobs, and reading the planes at points."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.one_photo.dots import nearest_index


def _local_rms(
    resp: np.ndarray, weight: np.ndarray, px_per_mm: float, sigma_mm: float, dark_side: bool = False
) -> np.ndarray:
    """Robust local RMS of ``resp`` over ``weight`` pixels: values clipped at 2.5 robust sd of the
    whole frame (dots are far above it and barely count), then a normalised Gaussian mean of the
    squares, corrected for the clipping (x 1.07 keeps pure Gaussian noise unbiased)."""
    sub = resp[::6, ::6][weight[::6, ::6]]
    if sub.size < 50:
        sub = resp[::6, ::6].ravel()
    med = float(np.median(sub))
    sd = max(1.4826 * float(np.median(np.abs(sub - med))), 1e-3)
    k = max(1, int(sigma_mm * px_per_mm / 3.0))
    # block means (blocks of k px) from every second pixel when the blocks are large: the same
    # expectation for a quarter of the work
    step = 2 if k >= 4 else 1
    clipped = np.clip(resp[::step, ::step] - np.float32(med), np.float32(-2.5 * sd), np.float32(2.5 * sd))
    if dark_side:  # the RMS of the dark (positive) side, as if the texture were symmetric
        np.maximum(clipped, np.float32(0), out=clipped)
        sq = np.square(clipped)
        sq *= np.float32(2.0)
    else:
        sq = np.square(clipped)
    h, w = resp.shape
    size = (max(1, w // k), max(1, h // k))
    wt = weight[::step, ::step].astype(np.float32)
    num = cv2.resize(sq * wt, size, interpolation=cv2.INTER_AREA)
    den = cv2.resize(wt, size, interpolation=cv2.INTER_AREA)
    sig = max(0.5, sigma_mm * px_per_mm / k)
    num = cv2.GaussianBlur(num, (0, 0), sig)
    den = cv2.GaussianBlur(den, (0, 0), sig)
    ms = np.where(den > 1e-3, num / np.maximum(den, 1e-6), np.float32(sd * sd))
    rms = np.sqrt(ms).astype(np.float32) * np.float32(1.07)
    out = cv2.resize(rms, (w, h), interpolation=cv2.INTER_LINEAR)
    # (np.maximum's values, ~2x faster)
    return cv2.max(out, float(np.float32(0.25 * sd)), dst=out)  # type: ignore[call-overload]  # cv2 stubs: scalar src2


def _blob_texture(
    maxima: tuple[np.ndarray, np.ndarray, np.ndarray], weight: np.ndarray, px_per_mm: float, block_mm: float
) -> np.ndarray:
    """Local typical response of the skin's blobs: the median of the filter's positive local maxima
    ``maxima`` (rows, columns, responses) on ``weight`` pixels in blocks of ``block_mm``, smoothed
    over the neighbouring blocks. A median, so that dots, even when nearly half of the maxima in a
    dense field, do not raise it."""
    h, w = weight.shape
    ys, xs, vals = maxima
    on = weight[ys, xs]
    ys, xs, vals = ys[on], xs[on], vals[on]
    if len(xs) < 20:
        return np.zeros((h, w), np.float32)
    b = max(4, int(round(block_mm * px_per_mm)))
    nby, nbx = -(-h // b), -(-w // b)
    bid = (ys // b) * nbx + xs // b
    # sorted by block, then by value, in one sort of integers: the bits of a positive float32 read
    # as an integer keep its order
    key = np.sort((bid.astype(np.int64) << 32) | vals.view(np.int32).astype(np.int64))
    sorted_vals = (key & 0xFFFFFFFF).astype(np.int32).view(np.float32)
    counts = np.bincount(bid, minlength=nby * nbx)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    grid = np.full(nby * nbx, np.nan, np.float32)
    enough = counts >= 5
    grid[enough] = sorted_vals[starts[enough] + counts[enough] // 2]
    grid = grid.reshape(nby, nbx)
    if np.isnan(grid).all():
        grid[:] = float(np.median(vals))
    elif np.isnan(grid).any():  # blocks without skin: the nearest block's value
        _, (iy, ix) = nearest_index(np.isnan(grid))
        grid = grid[iy, ix]
    grid = cv2.GaussianBlur(grid, (0, 0), 0.7) if min(grid.shape) > 1 else grid
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)


def _nonzero(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-D bool mask (rows, columns, in the same row-major order) by
    ``cv2.findNonZero``: ~4x faster on a full frame."""
    pts = cv2.findNonZero(mask.view(np.uint8))
    if pts is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pts = pts.reshape(-1, 2).astype(np.int64)
    return pts[:, 1], pts[:, 0]


def _at(planes: list[np.ndarray], ks: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``planes[ks[i]][ys[i], xs[i]]`` for every i (the scale space is kept as a list of planes,
    not one stacked array: a 12 MP photo's stack is hundreds of MB)."""
    out = np.zeros(len(ks), np.float32)
    for k in np.unique(ks):
        i = np.flatnonzero(ks == k)
        out[i] = planes[k][ys[i], xs[i]]
    return out
