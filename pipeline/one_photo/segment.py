"""Segmentation stage: background / scalp / hair per pixel, and SMP dot candidates.

Two segmenters share one result type:

* :class:`ModelSegmenter` runs the trained network of ``models/`` (the bundled
  default weights, a checkpoint file, or a registry URI) tile by tile.
* :func:`classical_segmentation` needs no model: hair as thin dark ridges,
  dots as compact dark blobs (difference of Gaussians at the dot scale), the
  card's paper as background. It is the fallback when no model can be loaded
  and the baseline the benchmark compares the model against.

Both return a :class:`Segmentation`; dot refinement and colour measurement
(``pipeline.one_photo.dots``, ``pipeline.one_photo.pigment``) do not care which one ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

from data.metrics import BACKGROUND, HAIR, SCALP

__all__ = [
    "Segmentation",
    "ModelSegmenter",
    "classical_segmentation",
    "card_polygon_mask",
    "local_darkness",
    "hair_strands",
]


@dataclass(frozen=True)
class Segmentation:
    """Classes per pixel and dot centre candidates of one photo."""

    labels: np.ndarray
    """HxW uint8: 0 background, 1 scalp, 2 hair."""
    dots_xy: np.ndarray
    """(N, 2) float64 candidate dot centres (x, y) in pixels."""
    dot_scores: np.ndarray
    """(N,) float64 confidence in [0, 1]."""
    source: str
    """``model`` or ``classical``."""


class ModelSegmenter:
    """The trained network, loaded once, run on any photo size by overlapping tiles."""

    def __init__(
        self,
        ref: str | Path | None = None,
        *,
        device: str = "cpu",
        threads: int | None = None,
        tile: int = 1536,
        overlap: int = 128,
        dot_threshold: float = 0.3,
        precision: str = "auto",
    ) -> None:
        import torch

        from models.bundled import default_model_path
        from models.checkpoint import load_model, resolve_model
        from models.inference import resolve_precision
        from models.network import prepare_for_inference

        #: the arithmetic actually used (``auto`` resolved for this machine); part of the assessment's model record
        self.precision = resolve_precision(precision, device)

        if threads:
            torch.set_num_threads(int(threads))
        if ref and str(ref).startswith("models:/"):
            from models.registry import resolve_model as resolve_registered  # the bundled model registered first

            path = resolve_registered(ref)
        else:
            path = resolve_model(ref) if ref else default_model_path()
        loaded = load_model(path, device=device)
        self.model = prepare_for_inference(loaded.model) if device == "cpu" else loaded.model
        self.name = str(loaded.meta.get("name", "smp-segmenter"))
        self.version = str(loaded.meta.get("version", path.stem if ref else "bundled"))
        self.path = str(path)
        self.sha256 = loaded.sha256
        self.device = device
        self.tile, self.overlap, self.dot_threshold = tile, overlap, dot_threshold

    def describe(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "path": self.path,
            "kind": "model",
            "precision": self.precision,
        }

    def __call__(self, rgb: np.ndarray, view: str = "closeup") -> Segmentation:
        from models.inference import predict_view

        pred = predict_view(
            self.model,
            rgb,
            view,
            tile=self.tile,
            overlap=self.overlap,
            device=self.device,
            threshold=self.dot_threshold,
            precision=self.precision,
        )
        return Segmentation(
            labels=pred.labels,
            dots_xy=pred.dots[:, :2].astype(np.float64),
            dot_scores=pred.dots[:, 2].astype(np.float64),
            source="model",
        )


def card_polygon_mask(shape: tuple[int, int], polygon_px: np.ndarray | None) -> np.ndarray:
    """HxW bool: inside the card's paper outline (``(4, 2)`` px), all False without one."""
    mask = np.zeros(shape, np.uint8)
    if polygon_px is not None and len(polygon_px) >= 3:
        pts = np.round(np.asarray(polygon_px, np.float64) * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _lightness(rgb: np.ndarray) -> np.ndarray:
    """A fast perceptual lightness proxy (0-100) for the classical detector: L* of the luma."""
    y = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1 / 255)
    lin = np.where(y <= 0.04045, y / 12.92, ((y + 0.055) / 1.055) ** 2.4).astype(np.float32)
    return (116.0 * np.cbrt(lin) - 16.0).astype(np.float32)


def local_darkness(lstar: np.ndarray, px_per_mm: float) -> np.ndarray:
    """HxW float32: a median of L* over ~1.5 mm (on a 4x downscaled copy) minus L*."""
    h, w = lstar.shape
    k = 4
    small = cv2.resize(lstar, (max(1, w // k), max(1, h // k)), interpolation=cv2.INTER_AREA)
    ksize = max(3, int(round(1.5 * px_per_mm / k)) | 1)
    if ksize > 5:  # cv2.medianBlur on float32 only takes 3 or 5: use uint8 quantised L* (0.5 L* steps)
        q = np.clip(small * 2.0, 0, 255).astype(np.uint8)
        skin_small = cv2.medianBlur(q, min(ksize, 255)).astype(np.float32) * 0.5
    else:
        skin_small = cv2.medianBlur(small, ksize)
    return cv2.resize(skin_small, (w, h), interpolation=cv2.INTER_LINEAR) - lstar


def hair_strands(
    dark: np.ndarray,
    px_per_mm: float,
    *,
    min_contrast_dl: float = 2.5,
    min_length_mm: float = 0.4,
    line_mm: float = 0.0,
    max_width_mm: float = 0.25,
) -> np.ndarray:
    """HxW bool: thin, long dark structures (hair shafts) in a darkness image (skin L* - L*).

    Dark pixels (darker than ``2 min_contrast_dl``, at least 6 L*); an opening with a disc a
    little wider than a strand (0.12 mm) keeps the dots (blobs) and removes the strands; what it
    removed and is long (``min_length_mm``) and thin (length >= 3 widths) is hair. With
    ``line_mm``, dark straight runs that long within structures narrower than ``max_width_mm``
    are hair too (a shaft blurred to the width of a small dot survives the disc opening).
    """
    dark_mask = (dark > max(min_contrast_dl * 2.0, 6.0)).astype(np.uint8)
    k = max(3, int(round(0.12 * px_per_mm)) | 1)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    blobs = cast(NDArray[np.uint8], cv2.dilate(cv2.morphologyEx(dark_mask, cv2.MORPH_OPEN, disc), disc))  # uint8
    thin = dark_mask & (1 - blobs)
    out = np.zeros(dark.shape, bool)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(thin, connectivity=8)
    if n > 1:
        bw, bh, area = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT], stats[1:, cv2.CC_STAT_AREA]
        length = np.hypot(bw, bh)
        width = area / np.maximum(length, 1.0)
        is_hair = (length >= min_length_mm * px_per_mm) & (length / np.maximum(width, 1.0) >= 3.0)
        lut = np.zeros(n, bool)
        lut[1:] = is_hair
        # (a table look-up of the int32 labels: np.take is ~2.5x faster than lut[comp])
        out = np.take(lut, cast(NDArray[np.int32], comp))
    if line_mm:
        out |= _line_strands(dark_mask, px_per_mm, line_mm, max_width_mm)
    return out


def _line_strands(dark_mask: np.ndarray, px_per_mm: float, line_mm: float, max_width_mm: float) -> np.ndarray:
    """Dark pixels on a straight run of ``line_mm`` in some direction (12 directions) within the
    structures narrower than ``max_width_mm``: shafts that a blur or a sharpening halo made as wide
    as a small dot, and strands that cross or touch a dot (the dot, wider, stays out)."""
    kb = max(3, int(round(max_width_mm * px_per_mm)) | 1)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kb, kb))
    wide = cv2.dilate(cv2.morphologyEx(dark_mask, cv2.MORPH_OPEN, disc), disc)
    thin = dark_mask & (1 - wide)
    if not thin.any():
        return np.zeros(dark_mask.shape, bool)
    n = max(5, int(round(line_mm * px_per_mm)) | 1)
    out = np.zeros_like(thin)
    for ang in np.arange(12) * np.pi / 12:
        line = np.zeros((n, n), np.uint8)
        r = (n - 1) / 2  # a centred line across the whole kernel
        p0 = (int(round(r - r * np.cos(ang))), int(round(r - r * np.sin(ang))))
        p1 = (int(round(r + r * np.cos(ang))), int(round(r + r * np.sin(ang))))
        cv2.line(line, p0, p1, 1, 1)
        out |= cv2.morphologyEx(thin, cv2.MORPH_OPEN, line)
    return out.view(bool)


def classical_segmentation(
    rgb: np.ndarray,
    px_per_mm: float,
    *,
    card_mask: np.ndarray | None = None,
    dot_diameter_mm: tuple[float, float] = (0.08, 0.9),
    min_contrast_dl: float = 2.5,
    hair_min_length_mm: float = 0.4,
) -> Segmentation:
    """Hair, scalp and dot candidates without a model (close-ups; a baseline).

    * Local skin lightness: a median of L* over ~1.5 mm (on a 4x downscaled copy);
      darkness = skin - L*.
    * Dark structures: darkness above ``2 min_contrast_dl`` (at least 6 L*). What a
      morphological opening with a 0.12 mm disc removes (strands; dots survive
      it) and is long and thin (extent >= ``hair_min_length_mm``, elongation
      above 3) is hair; the rest is scalp.
    * Dots: maxima of a difference of Gaussians tuned to dot radii in
      ``dot_diameter_mm``, with a peak darkness of at least ``min_contrast_dl``,
      not on hair. Scores grow with contrast.
    * Background: the card (``card_mask``) and blown-out pixels (L* > 97).
    The scale matters: at ``px_per_mm`` below ~6 dots are not resolvable and none
    are returned.
    """
    h, w = rgb.shape[:2]
    lstar = _lightness(rgb)
    dark = local_darkness(lstar, px_per_mm)
    labels = np.full((h, w), SCALP, np.uint8)
    labels[hair_strands(dark, px_per_mm, min_contrast_dl=min_contrast_dl, min_length_mm=hair_min_length_mm)] = HAIR
    if card_mask is not None:
        labels[card_mask] = BACKGROUND
    labels[lstar > 97.0] = BACKGROUND

    if px_per_mm < 6.0:
        return Segmentation(labels, np.zeros((0, 2)), np.zeros(0), "classical")
    # dots: DoG at the middle of the radius range, peaks by a 3x3 maximum filter
    r_lo, r_hi = (0.5 * d * px_per_mm for d in dot_diameter_mm)
    sigma = max(0.8, 0.6 * np.sqrt(r_lo * r_hi))
    dog = cv2.GaussianBlur(dark, (0, 0), sigma) - cv2.GaussianBlur(dark, (0, 0), 2.5 * sigma)
    peak_size = max(3, int(round(2 * r_lo)) | 1)
    local_max = cv2.dilate(dog, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (peak_size, peak_size)))
    dark_s = cv2.GaussianBlur(dark, (0, 0), max(0.5, 0.5 * sigma))
    peaks = (dog >= local_max) & (dark_s >= min_contrast_dl) & (dog > 0.3 * min_contrast_dl) & (labels == SCALP)
    ys, xs = np.nonzero(peaks)
    contrast = dark_s[ys, xs]
    scores = np.clip(contrast / (4.0 * min_contrast_dl), 0.0, 1.0)
    return Segmentation(labels, np.column_stack([xs, ys]).astype(np.float64), scores.astype(np.float64), "classical")
