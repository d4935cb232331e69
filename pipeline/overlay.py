"""The reviewer's picture: segmentation tint, every dot ringed by its flag, legend, scale bar.

Colours are chosen to stay distinguishable on light and dark skin and for the
common colour-vision deficiencies (blue / orange / magenta / white rings with a
dark outline), and a flagged dot is drawn thicker than an unflagged one so the
eye finds it first.
"""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from data.metrics import HAIR, SCALP

__all__ = ["FLAG_COLOURS", "render_overlay"]

#: RGB ring colour per state (unflagged first).
FLAG_COLOURS: dict[str, tuple[int, int, int]] = {
    "ok": (80, 220, 120),
    "blue_shift": (40, 120, 255),
    "faded": (255, 170, 0),
    "spread": (255, 0, 200),
}
_TINT = {SCALP: (0, 160, 80), HAIR: (150, 60, 255)}


def _scale_bar_mm(px_per_mm: float, width: int) -> float:
    """A round length (mm) whose bar is 8-25% of the photo's width."""
    for mm in (0.5, 1, 2, 5, 10, 20, 50, 100, 200):
        if mm * px_per_mm >= 0.08 * width:
            return mm
    return 200.0


def render_overlay(rgb: np.ndarray, labels: np.ndarray, dots: pd.DataFrame, px_per_mm: float | None,
                   *, title: str = "", tint_alpha: float = 0.25) -> np.ndarray:
    """HxWx3 uint8 RGB overlay of one assessment (the photo is not modified)."""
    h, w = labels.shape
    out = rgb.copy()
    for cls, colour in _TINT.items():
        sel = labels == cls
        if sel.any():
            out[sel] = (out[sel] * (1 - tint_alpha) + np.array(colour) * tint_alpha).astype(np.uint8)
    # background (card, face, wall): dimmed, so the region measured stands out
    bg = labels == 0
    out[bg] = (out[bg] * 0.6).astype(np.uint8)
    unit = max(1.0, min(h, w) / 1000.0)  # line widths and text grow with the photo
    thin, thick = max(1, int(round(unit))), max(2, int(round(2 * unit)))
    if len(dots):
        xy = np.round(dots[["x", "y"]].to_numpy() * 16).astype(np.int64)
        r = np.maximum(np.round(dots["diameter_px"].to_numpy() * 0.5 + 2 * unit) * 16, 3 * 16).astype(np.int64)
        state = np.full(len(dots), "ok", dtype=object)
        for flag in ("faded", "spread", "blue_shift"):  # the last wins: blue shift is the worst defect
            state[dots[flag].to_numpy(bool)] = flag
        for name, colour in FLAG_COLOURS.items():
            idx = np.flatnonzero(state == name)
            width = thin if name == "ok" else thick
            for i in idx.tolist():
                c = (int(xy[i, 0]), int(xy[i, 1]))
                if name != "ok":  # dark outline keeps the ring visible on light skin
                    cv2.circle(out, c, int(r[i] + 16 * width), (0, 0, 0), width, cv2.LINE_AA, 4)
                cv2.circle(out, c, int(r[i]), colour, width, cv2.LINE_AA, 4)
    _legend(out, dots, unit, title)
    if px_per_mm:
        _scale_bar(out, px_per_mm, unit)
    return out


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=(255, 255, 255)) -> None:
    th = max(1, int(round(scale * 2)))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), th + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, th, cv2.LINE_AA)


def _legend(img: np.ndarray, dots: pd.DataFrame, unit: float, title: str) -> None:
    scale = 0.6 * unit
    line = int(28 * unit)
    counts = {"ok": int(len(dots) - dots[["blue_shift", "faded", "spread"]].any(axis=1).sum()) if len(dots) else 0}
    for flag in ("blue_shift", "faded", "spread"):
        counts[flag] = int(dots[flag].sum()) if len(dots) else 0
    labels = {"ok": "dot", "blue_shift": "blue shift", "faded": "faded", "spread": "spread"}
    rows = ([title] if title else []) + [f"{labels[k]}: {counts[k]}" for k in FLAG_COLOURS]
    box_w = int(max(len(r) for r in rows) * 12 * unit + 50 * unit)
    box_h = int(line * len(rows) + 12 * unit)
    x0, y0 = int(10 * unit), int(10 * unit)
    sub = img[y0:y0 + box_h, x0:x0 + box_w]
    sub[:] = (sub * 0.35).astype(np.uint8)
    y = y0 + line
    if title:
        _text(img, title, (x0 + int(8 * unit), y - int(6 * unit)), scale)
        y += line
    for key, colour in FLAG_COLOURS.items():
        cv2.circle(img, (x0 + int(18 * unit), y - int(12 * unit)), int(8 * unit), colour,
                   max(2, int(2 * unit)), cv2.LINE_AA)
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
