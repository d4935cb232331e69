"""The comparison's pictures: where the scalp got darker or lighter (a luminance change map
relative to each photo's own skin), the side-by-side and the difference overlay, drawn in the
BEFORE photo's frame with a scale bar and a legend."""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np

from data.colour import luminance_lstar
from data.metrics import SCALP, viewing_lstar
from pipeline.two_photos.assessed import AssessedPhoto
from pipeline.two_photos.dot_pattern import dot_spacing
from pipeline.two_photos.link import DotLinks
from pipeline.two_photos.register import Registration

__all__ = [
    "DARKER_COLOUR",
    "LIGHTER_COLOUR",
    "LINKED_COLOUR",
    "LOST_COLOUR",
    "NEW_COLOUR",
    "darkening_map",
    "render_difference_overlay",
    "render_side_by_side",
]

#: Display colours (RGB), distinguishable for the common colour-vision deficiencies.
LINKED_COLOUR = (235, 235, 235)
NEW_COLOUR = (40, 200, 90)
LOST_COLOUR = (230, 40, 40)
DARKER_COLOUR = np.array([40, 120, 255], np.float32)  # after darker: more pigment
LIGHTER_COLOUR = np.array([255, 160, 0], np.float32)  # after lighter: faded or less pigment


# --------------------------------------------------------------------------- luminance change


def _smooth_over(values: np.ndarray, weight: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian mean of ``values`` over the pixels where ``weight`` is 1 (normalised
    convolution), on a copy reduced so that sigma spans ~3 px; NaN far from any such pixel."""
    h, w = values.shape
    k = max(1, int(sigma_px / 3))
    size = (max(1, w // k), max(1, h // k))
    num = cv2.resize(np.where(weight > 0, values, 0).astype(np.float32), size, interpolation=cv2.INTER_AREA)
    den = cv2.resize(weight.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    sig = max(0.5, sigma_px / k)
    num = cv2.GaussianBlur(num, (0, 0), sig)
    den = cv2.GaussianBlur(den, (0, 0), sig)
    out = np.where(den > 1e-3, num / np.maximum(den, 1e-6), np.nan).astype(np.float32)
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)


def _relative_darkness(
    lstar: np.ndarray,
    labels: np.ndarray,
    dot_xy: np.ndarray,
    dot_radius_px: np.ndarray,
    px_per_mm: float,
    viewing_sigma_mm: float,
) -> np.ndarray:
    """How much darker than its own bare skin each ROI pixel looks at viewing scale (L* units, NaN
    outside the ROI).

    The skin level is the local mean L* of scalp pixels away from the dots (sigma 2 mm), so
    exposure, white balance and light gradients - which differ between visits - cancel;
    the pixel's own L* is the viewing-scale mean over the ROI that ``show_through`` uses
    (:func:`data.metrics.viewing_lstar`), so the card or the background do not bleed in.
    """
    bare = (labels == SCALP).astype(np.uint8)
    for (x, y), r in zip(np.round(dot_xy).astype(int), np.ceil(1.5 * dot_radius_px + 1).astype(int)):
        cv2.circle(bare, (int(x), int(y)), int(r), 0, -1)
    skin = _smooth_over(lstar, bare, 2.0 * px_per_mm)
    view = viewing_lstar(lstar, labels > 0, viewing_sigma_mm * px_per_mm)
    return skin - view


def darkening_map(
    before: AssessedPhoto, after: AssessedPhoto, registration: Registration, *, viewing_sigma_mm: float = 0.5
) -> np.ndarray:
    """HxW float32 in BEFORE's frame: how much darker AFTER looks than BEFORE, relative to each
    photo's own bare skin, at viewing scale (L* units; positive = more pigment or less skin
    showing; NaN where either photo does not show scalp). A well-treated area darkens by
    2-6 L* at the default 0.5 mm (configs/flags.yaml)."""
    maps = []
    for a in (before, after):
        lin = np.asarray(a.calibration.colour.apply(a.photo.rgb), np.float32)
        lstar = luminance_lstar(np.maximum(lin, np.float32(0))).astype(np.float32, copy=False)
        del lin
        dots = a.dots
        xy = dots[["x", "y"]].to_numpy(float) if len(dots) else np.zeros((0, 2))
        rad = (
            0.5 * dots["diameter_px"].to_numpy(float)
            if "diameter_px" in dots.columns and len(dots)
            else np.full(len(xy), 2.0)
        )
        a_ppm = a.calibration.px_per_mm or _assumed_px_per_mm(a)
        maps.append(
            (
                _relative_darkness(lstar, a.labels, xy, np.nan_to_num(rad, nan=2.0), a_ppm, viewing_sigma_mm),
                a.labels > 0,
            )
        )
    (d_b, roi_b), (d_a, roi_a) = maps
    d_a_w = registration.warp_after(np.nan_to_num(d_a, nan=0.0).astype(np.float32))
    valid_a = registration.warp_after((roi_a & np.isfinite(d_a)).astype(np.uint8), interpolation=cv2.INTER_NEAREST)
    out = d_a_w - d_b
    out[~(roi_b & np.isfinite(d_b) & (valid_a > 0))] = np.nan
    return out


def _assumed_px_per_mm(a: AssessedPhoto) -> float:
    """Without a scale: a close-up scale guessed from the dot spacing (~1 mm), else 20 px/mm."""
    if len(a.dots) >= 10:
        s = dot_spacing(a.dots[["x", "y"]].to_numpy(float))
        if s:
            return float(np.clip(s, 4.0, 40.0))
    return 20.0


# --------------------------------------------------------------------------- pictures


def _display(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A new, writable copy of ``img`` no larger than ``max_side``, and its scale factor."""
    h, w = img.shape[:2]
    f = min(1.0, max_side / max(h, w))
    if f < 1.0:
        return cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA), f
    return np.array(img, copy=True, order="C"), f


def _label(img: np.ndarray, text: str, org: tuple[int, int], unit: float, colour=(255, 255, 255)) -> None:
    scale, th = 0.6 * unit, max(1, int(round(1.2 * unit)))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), th + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, th, cv2.LINE_AA)


def _bar_length_mm(px_per_mm: float, width: int) -> float:
    """A round length whose bar is at least 8 % of the width."""
    return next((mm for mm in (0.5, 1, 2, 5, 10, 20, 50, 100) if mm * px_per_mm >= 0.08 * width), 200.0)


def _draw_scale_bar(img: np.ndarray, px_per_mm: float, unit: float) -> None:
    h, w = img.shape[:2]
    mm = _bar_length_mm(px_per_mm, w)
    x1, y = w - int(16 * unit), h - int(16 * unit)
    x0 = x1 - int(round(mm * px_per_mm))
    t = max(3, int(4 * unit))
    cv2.rectangle(img, (x0 - 2, y - t - 2), (x1 + 2, y + 2), (0, 0, 0), -1)
    cv2.rectangle(img, (x0, y - t), (x1, y), (255, 255, 255), -1)
    _label(img, f"{mm:g} mm", (x0, y - t - int(6 * unit)), unit)


def _legend(img: np.ndarray, rows: list[tuple[str, tuple[int, int, int] | None]], unit: float) -> None:
    """Dark box top-left; each row a colour swatch (or none) and its text."""
    line = int(24 * unit)
    box_w = int(max(len(t) for t, _ in rows) * 11 * unit + 44 * unit)
    x0 = y0 = int(8 * unit)
    sub = img[y0 : y0 + line * len(rows) + int(10 * unit), x0 : x0 + box_w]
    sub[:] = (sub * 0.3).astype(np.uint8)
    y = y0 + line
    for text, colour in rows:
        if colour is not None:
            cv2.circle(img, (x0 + int(14 * unit), y - int(8 * unit)), int(6 * unit), colour, -1, cv2.LINE_AA)
        _label(img, text, (x0 + int(28 * unit), y - int(2 * unit)), unit)
        y += line


def render_side_by_side(
    before_rgb: np.ndarray,
    after_rgb_warped: np.ndarray,
    *,
    after_valid: np.ndarray | None = None,
    px_per_mm: float | None = None,
    labels: tuple[str, str] = ("before", "after"),
    max_width: int = 3200,
) -> np.ndarray:
    """BEFORE and AFTER (already warped into BEFORE's frame) next to each other, same scale.

    Outside ``after_valid`` (where the AFTER photo shows nothing) the right panel is dark
    grey. Each panel has its label and, with ``px_per_mm`` (BEFORE's scale, which both
    panels now share), a scale bar. The result is at most ``max_width`` pixels wide.
    """
    if before_rgb.shape != after_rgb_warped.shape:
        raise ValueError(f"the panels differ in shape: {before_rgb.shape} vs {after_rgb_warped.shape}")
    right = after_rgb_warped.copy()
    if after_valid is not None:
        right[~after_valid] = 40
    h, w = before_rgb.shape[:2]
    gap = max(4, w // 200)
    f = min(1.0, max_width / (2 * w + gap))
    panels = []
    for img, text in ((before_rgb, labels[0]), (right, labels[1])):
        p, _ = _display(img, max(1, round(max(h, w) * f)))
        unit = max(0.6, min(p.shape[:2]) / 700.0)
        _label(p, text, (int(12 * unit), int(30 * unit)), unit * 1.4)
        if px_per_mm:
            _draw_scale_bar(p, px_per_mm * f, unit)
        panels.append(p)
    spacer = np.full((panels[0].shape[0], max(2, round(gap * f)), 3), 255, np.uint8)
    return np.hstack([panels[0], spacer, panels[1]])


def render_difference_overlay(
    before_rgb: np.ndarray,
    *,
    darkening: np.ndarray | None = None,
    before_xy: np.ndarray | None = None,
    after_xy_in_before: np.ndarray | None = None,
    links: DotLinks | None = None,
    px_per_mm: float | None = None,
    dl_floor: float = 0.75,
    dl_full_scale: float = 5.0,
    max_side: int = 2400,
    title: str = "",
) -> np.ndarray:
    """What changed, drawn on the BEFORE photo (dimmed).

    ``darkening`` (BEFORE frame, see :func:`darkening_map`) tints where AFTER looks darker
    (blue: more pigment) or lighter (orange: faded, less pigment), fully at
    ``dl_full_scale`` L* units and not at all below ``dl_floor`` (at viewing scale a
    treated area darkens by 2-6 L*; below ~0.75 is noise). Dots (with ``links``): linked
    BEFORE dots as small light rings, new dots (AFTER only, at their registered place)
    green, lost dots (BEFORE only) red. A legend and, with ``px_per_mm``, a scale bar.
    """
    img, f = _display(before_rgb, max_side)
    out = img.astype(np.float32) * 0.55
    if darkening is not None:
        d, _ = _display(np.nan_to_num(darkening, nan=0.0).astype(np.float32), max_side)
        strength = np.clip((np.abs(d) - dl_floor) / max(dl_full_scale - dl_floor, 1e-6), 0.0, 1.0)[..., None] * 0.75
        colour = np.where(d[..., None] > 0, DARKER_COLOUR, LIGHTER_COLOUR)
        out = out * (1 - strength) + colour * strength
    out = np.clip(out, 0, 255).astype(np.uint8)
    h, w = out.shape[:2]
    unit = max(0.6, min(h, w) / 700.0)
    rows: list[tuple[str, tuple[int, int, int] | None]] = [(title, None)] if title else []
    if links is not None and before_xy is not None and after_xy_in_before is not None:
        r = max(3, int(round(0.25 * (links.spacing_px or 12.0) * f)))
        th = max(1, int(round(unit * 1.2)))

        def rings(xy: np.ndarray, colour: tuple[int, int, int], radius: int, width: int) -> None:
            for x, y in np.round(np.asarray(xy, float).reshape(-1, 2) * f * 16).astype(np.int64):
                cv2.circle(out, (int(x), int(y)), radius * 16, colour, width, cv2.LINE_AA, 4)

        rings(before_xy[links.before_idx], LINKED_COLOUR, max(2, r - 1), 1)
        rings(before_xy[links.lost_idx], LOST_COLOUR, r, th + 1)
        rings(after_xy_in_before[links.new_idx], NEW_COLOUR, r, th + 1)
        rows += [
            (f"linked: {links.n_links}", LINKED_COLOUR),
            (f"new (after only): {len(links.new_idx)}", NEW_COLOUR),
            (f"lost (before only): {len(links.lost_idx)}", LOST_COLOUR),
        ]
    if darkening is not None:
        # the colours have three channels
        rows += [
            ("after darker (more pigment)", cast("tuple[int, int, int]", tuple(int(v) for v in DARKER_COLOUR))),
            ("after lighter (faded)", cast("tuple[int, int, int]", tuple(int(v) for v in LIGHTER_COLOUR))),
        ]
    if rows:
        _legend(out, rows, unit)
    if px_per_mm:
        _draw_scale_bar(out, px_per_mm * f, unit)
    return out
