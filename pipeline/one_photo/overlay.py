"""The reviewer's picture: segmentation tint, every dot ringed by its flag, legend, scale bar.

Colours are chosen to stay distinguishable on light and dark skin and for the
common colour-vision deficiencies (blue / orange / magenta / white rings with a
dark outline), and a flagged dot is drawn thicker than an unflagged one so the
eye finds it first. Rings sit just outside each dot's half-maximum edge, so the
dot itself is never covered; dots too small to measure a colour (never flagged)
are ringed in grey.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from data.metrics import FLAG_NAMES, HAIR, SCALP

__all__ = ["FLAG_COLOURS", "render_overlay"]

#: RGB ring colour per state (unflagged first).
FLAG_COLOURS: dict[str, tuple[int, int, int]] = {
    "ok": (80, 220, 120),
    "not_measurable": (200, 200, 200),
    "blue_shift": (40, 120, 255),
    "faded": (255, 170, 0),
    "spread": (255, 0, 200),
}
_TINT = {SCALP: (0, 160, 80), HAIR: (150, 60, 255)}
_SEAM = 32  # rows of margin around the seam of the two drawing threads (see _draw_rings)


def _scale_bar_mm(px_per_mm: float, width: int) -> float:
    """A round length (mm) whose bar is 8-25% of the photo's width."""
    for mm in (0.5, 1, 2, 5, 10, 20, 50, 100, 200):
        if mm * px_per_mm >= 0.08 * width:
            return mm
    return 200.0


def render_overlay(
    rgb: np.ndarray,
    labels: np.ndarray,
    dots: pd.DataFrame,
    px_per_mm: float | None,
    *,
    title: str = "",
    tint_alpha: float = 0.25,
) -> np.ndarray:
    """HxWx3 uint8 RGB overlay of one assessment (the photo is not modified)."""
    h, w = labels.shape
    out = _tinted(rgb, labels, tint_alpha)
    unit = max(1.0, min(h, w) / 1000.0)  # line widths and text grow with the photo
    thin, thick = max(1, int(round(unit))), max(2, int(round(2 * unit)))
    if len(dots):
        xy = np.round(dots[["x", "y"]].to_numpy() * 16).astype(np.int64)
        r = np.maximum(np.round(dots["diameter_px"].to_numpy() * 0.5 + 2 * unit) * 16, 3 * 16).astype(np.int64)
        state = np.full(len(dots), "ok", dtype=object)
        if "measurable" in dots:  # too small to measure a colour: never flagged, drawn apart
            state[~dots["measurable"].to_numpy(bool)] = "not_measurable"
        for flag in ("faded", "spread", "blue_shift"):  # the last wins: blue shift is the worst defect
            state[dots[flag].to_numpy(bool)] = flag
        rings: list[tuple[int, int, int, tuple[int, int, int], int]] = []  # x, y, radius (1/16 px), colour, width
        for name, colour in FLAG_COLOURS.items():
            width = thin if name in ("ok", "not_measurable") else thick
            for i in np.flatnonzero(state == name).tolist():
                if name not in ("ok", "not_measurable"):  # dark outline keeps the ring visible on light skin
                    rings.append((int(xy[i, 0]), int(xy[i, 1]), int(r[i] + 16 * width), (0, 0, 0), width))
                rings.append((int(xy[i, 0]), int(xy[i, 1]), int(r[i]), colour, width))
        _draw_rings(out, rings)
    _legend(out, dots, unit, title)
    if px_per_mm:
        _scale_bar(out, px_per_mm, unit)
    return out


_TINT_BAND = 512  # rows tinted at a time


def _tinted(rgb: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """The photo with scalp and hair tinted and the background dimmed (card, face, wall).

    Each class is an affine map of every 8-bit channel value, so it is applied as a
    256-entry table (``cv2.LUT``) and copied in under the class mask.
    """
    values = np.arange(256, dtype=np.float64)[:, None]
    tables = {
        cls: (values * (1 - alpha) + np.array(colour, np.float64)[None, :] * alpha).astype(np.uint8)
        for cls, colour in _TINT.items()
    }
    tables[0] = np.repeat((values * 0.6).astype(np.uint8), 3, axis=1)
    out = np.ascontiguousarray(rgb).copy()
    # in bands of rows: the same pixels, without a full-frame table lookup and mask per class (a 48 MP
    # photo's frame is 144 MB, and drawing the overlay was the command's memory peak)
    for top in range(0, out.shape[0], _TINT_BAND):
        rows = slice(top, top + _TINT_BAND)
        for cls, table in tables.items():
            mask = (labels[rows] == cls).view(np.uint8)
            if mask.any():
                cv2.copyTo(cv2.LUT(rgb[rows], table.reshape(256, 1, 3)), mask, out[rows])
    return out


def _draw_rings(
    img: np.ndarray, rings: list[tuple[int, int, int, tuple[int, int, int], int]], min_parallel: int = 2000
) -> None:
    """Anti-aliased circles (centres and radii in 1/16 px), drawn in order.

    Many rings are drawn by two threads, each into a copy of its half of ``img`` plus a
    margin of ``_SEAM`` rows, with the rings shifted into it; a ring crossing the seam
    is drawn in both. Only each half (not the margin, where OpenCV's clipping at the
    copy's edge shows) is copied back. Coordinates are whole pixels apart and each
    half keeps the order, so the pixels equal drawing everything into ``img`` at once.
    """

    def draw(band: np.ndarray, top: int, items) -> None:
        shift = 16 * top
        for x, y, r, colour, width in items:
            cv2.circle(band, (x, y - shift), r, colour, width, cv2.LINE_AA, 4)

    h = img.shape[0]
    if len(rings) < min_parallel or h < 64:
        draw(img, 0, rings)
        return
    from concurrent.futures import ThreadPoolExecutor

    mid = h // 2
    lo, hi = max(0, mid - _SEAM), min(h, mid + _SEAM)
    reach = 16 * 4  # AA and line width spill a few pixels beyond radius + width / 2
    top = [g for g in rings if g[1] - g[2] - 16 * g[4] - reach < 16 * hi]
    bottom = [g for g in rings if g[1] + g[2] + 16 * g[4] + reach >= 16 * lo]
    upper, lower = img[:hi].copy(), img[lo:].copy()
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(draw, upper, 0, top), pool.submit(draw, lower, lo, bottom)]
        for job in jobs:
            job.result()
    img[:mid] = upper[:mid]
    img[mid:] = lower[mid - lo :]


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=(255, 255, 255)) -> None:
    th = max(1, int(round(scale * 2)))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), th + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, th, cv2.LINE_AA)


def _legend(img: np.ndarray, dots: pd.DataFrame, unit: float, title: str) -> None:
    scale = 0.6 * unit
    line = int(28 * unit)
    flagged = dots[list(FLAG_NAMES)].any(axis=1).to_numpy() if len(dots) else np.zeros(0, bool)
    small = ~dots["measurable"].to_numpy(bool) if "measurable" in dots else np.zeros(len(dots), bool)
    counts = {"ok": int((~flagged & ~small).sum()), "not_measurable": int(small.sum())}
    for flag in FLAG_NAMES:
        counts[flag] = int(dots[flag].sum()) if len(dots) else 0
    labels = {
        "ok": "dot",
        "not_measurable": "too small to judge",
        "blue_shift": "blue shift",
        "faded": "faded",
        "spread": "spread",
    }
    rows = ([title] if title else []) + [f"{labels[k]}: {counts[k]}" for k in FLAG_COLOURS]
    box_w = int(max(len(r) for r in rows) * 12 * unit + 50 * unit)
    box_h = int(line * len(rows) + 12 * unit)
    x0, y0 = int(10 * unit), int(10 * unit)
    sub = img[y0 : y0 + box_h, x0 : x0 + box_w]
    sub[:] = (sub * 0.35).astype(np.uint8)
    y = y0 + line
    if title:
        _text(img, title, (x0 + int(8 * unit), y - int(6 * unit)), scale)
        y += line
    for key, colour in FLAG_COLOURS.items():
        cv2.circle(
            img, (x0 + int(18 * unit), y - int(12 * unit)), int(8 * unit), colour, max(2, int(2 * unit)), cv2.LINE_AA
        )
        _text(img, f"{labels[key]}: {counts[key]}", (x0 + int(36 * unit), y - int(4 * unit)), scale)
        y += line


def _scale_bar(img: np.ndarray, px_per_mm: float, unit: float) -> None:
    h, w = img.shape[:2]
    mm = _scale_bar_mm(px_per_mm, w)
    length = int(round(mm * px_per_mm))
    x1, y = w - int(20 * unit), h - int(20 * unit)
    x0 = x1 - length
    t = max(3, int(5 * unit))
    cv2.rectangle(img, (x0 - 2, y - t - 2), (x1 + 2, y + 2), (0, 0, 0), -1)
    cv2.rectangle(img, (x0, y - t), (x1, y), (255, 255, 255), -1)
    label = f"{mm:g} mm"
    _text(img, label, (x0, y - t - int(8 * unit)), 0.6 * unit)
