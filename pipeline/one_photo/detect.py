"""Dot detection: candidates at a canonical scale, and a decision with physical meaning.

A reported dot is a pigment deposit measured against its own skin (docs/dots.md,
"What a dot is"). The stage works on the colour-corrected L* of the photo,
resampled to ``canonical_px_per_mm`` (from the card or ``--px-per-mm``), so that
the same scalp photographed with more or fewer pixels gives the same dots; the
results are mapped back to the photo's pixels.

1. **Skin reference** (``pipeline.one_photo.dots.skin_reference``): the local bare-skin L*
   around every point; darkness ``D = reference - L*``.
2. **Candidates**: maxima over space and scale of the scale-normalised
   Laplacian of Gaussian of ``D`` (``-sigma^2 Lap G_sigma * D``, sigmas for dot
   radii ``radius_mm``), plus any centres a learned model proposes. A
   candidate is only a place to look.
3. **Evidence**, measured on each candidate:

   * ``contrast_dL``: centre darkness against the local bare skin (L*), from
     the radial profile (``pipeline.one_photo.dots.radial_profile``);
   * ``noise_dL`` and ``significance``: the skin's own texture at the dot's
     scale is the local robust RMS of the same filter over bare skin (pores,
     mottling, sensor noise and JPEG all count), and ``significance`` is the
     dot's filter response over it: a speck of the skin's texture has ~1-3,
     a pigment deposit many times that;
   * ``diameter`` (half-maximum, mm) and ``elongation``;
   * ``continuation``: darkness beyond the dot's end along its long axis, as
     a share of its centre darkness. A hair shaft or its cut end continues
     along a ridge; a dot, round or elongated 2 : 1, returns to skin.
4. **Decision**: contrast at least the visibility floor of
   ``configs/flags.yaml`` (the truth uses the same), significance at least
   ``min_significance``, size within ``diameter_mm``, elongation at most
   ``max_elongation``, continuation at most ``max_continuation``, centre on
   scalp. A model's score never admits a candidate; it only ranks the admitted
   ones (``confidence``).
5. **A second look** (``patch_look``, ``models.dot_patch``): a small network on the
   1.2 mm of pixels around each admitted candidate refuses look-alikes the
   measured figures cannot tell from a dot (pores, crease junctions, cut ends).
   It only refuses.

Outside ``[min_px_per_mm, max_px_per_mm]`` dots are not detected at all (the
caller reports dot metrics as null with a warning): below, a settled dot
spans less than a pixel; above, the photo is a trichoscope field of a few
millimetres, not an SMP close-up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from data.config import PositiveRange, Settings
from data.metrics import BACKGROUND, HAIR, SCALP, dots_in_roi
from data.synth.visibility import disc_mean  # the truth's own hair-over-disc measure: one rule for both
from models.dot_patch import PATCH_RADIUS, PatchRanker, normalise_patches
from models.dot_ranker import FEATURES, DotRanker, candidate_features
from pipeline.one_photo.dots import (
    DotGeometry,
    DotSettings,
    nearest_index,
    radial_profile,
    sample_points,
    skin_reference,
    suppress_duplicates,
)
from pipeline.one_photo.segment import hair_strands, local_darkness

__all__ = ["DetectSettings", "DotEvidence", "CandidateTable", "Detection", "REJECT", "ScaleOutOfRange", "detect_dots",
           "resample_factor"]


class DetectSettings(Settings):
    """How dots are detected and decided (lengths in mm on the scalp)."""

    #: The scale every photo is resampled to before detection.
    canonical_px_per_mm: float = Field(16.0, gt=0)
    #: Supported scales of the photo; outside them dot metrics are null with a warning.
    min_px_per_mm: float = Field(8.0, gt=0)
    max_px_per_mm: float = Field(128.0, gt=0)
    #: Radii searched by the scale space (settled 0.10 mm to spread 0.7 mm diameters).
    radius_mm: PositiveRange = (0.04, 0.35)
    n_scales: int = Field(5, ge=2, le=9)
    #: Two peaks within this share of a stronger blob's radius (sqrt(2) sigma) are one dot (0: off).
    blob_merge: float = Field(0.0, ge=0, le=2)
    #: Of two admitted dots, the weaker is the same dot when its centre lies within this share of the
    #: stronger one's half-maximum semi-major axis (0: only ``dots.min_separation_mm`` applies).
    footprint_merge: float = Field(0.9, ge=0, le=2)
    #: The hair the dot stage leaves out: the segmenter's (``segmenter``), thin long dark ridges found
    #: in the photo (``strands``), or both.
    hair: Literal["segmenter", "strands", "both"] = "strands"
    #: A dark run this long and straight, narrower than ``strand_width_mm``, is a strand too
    #: (0: only long thin components)
    strand_line_mm: float = Field(0.7, ge=0)
    strand_width_mm: float = Field(0.25, gt=0)
    #: Light (blond, grey) strands narrower than this are found by a white top-hat (0: off)
    light_hair_mm: float = Field(0.45, ge=0)
    #: How a candidate becomes a dot: ``rules`` (the physical floors below plus fixed thresholds on
    #: significance and the strand tests), ``ranker`` (the rules corrected by the learned ranking of
    #: models/dot_ranker.py: see ``ranker_threshold`` and ``ranker_veto``), ``floors`` (every candidate
    #: the floors admit: for training the ranker and for looking at what the floors alone let through).
    #: The default stays ``rules``: measured on the benchmark, the ranker finds more faint dots in hard
    #: close-ups but reports more false dots on untreated scalps (docs/dots.md).
    decision: Literal["ranker", "rules", "floors"] = "rules"
    #: The ranker's weights (None: the bundled models/weights/dot-ranker.npz) and the probability at
    #: which a candidate is reported (None: the threshold chosen when it was trained).
    ranker: str | None = None
    ranker_threshold: float | None = Field(None, gt=0, lt=1)
    #: A candidate the rules (``min_significance``, the strand tests) admit is reported unless the
    #: ranker's probability is under this (None: the ranker's threshold, i.e. the ranker alone decides).
    ranker_veto: float | None = Field(0.05, ge=0, lt=1)
    #: The learned second look at the pixels around each candidate (models/dot_patch.py): a candidate
    #: the rules admit is refused when the network's probability is under ``patch_veto`` (None: the
    #: veto chosen when it was trained). It only ever refuses. ``patch_model``: its weights (None: the
    #: bundled ones); ``patch_look: false`` turns it off.
    patch_look: bool = True
    patch_veto: float | None = Field(None, gt=0, lt=1)
    patch_model: str | None = None
    #: Measure-and-re-centre passes when the decided dots of a photo finer than the canonical scale are
    #: re-centred on its own pixels. A centroid in a round window creeps along an elongated dot by
    #: about a radius per pass; measured on the fresh-dot macros (30-60 px/mm), 2 passes left 14% of
    #: isolated dots more than 0.1 mm from their centre (the photo's own darkness centroid: 1%).
    fine_recentre_passes: int = Field(4, ge=1, le=8)
    #: Where candidates come from: the scale space, the model's proposals (when a model runs), or both.
    candidates: Literal["scale_space", "model", "both"] = "both"
    #: A candidate needs a filter response of this many local noise sd (it is only a place to look).
    candidate_significance: float = Field(4.0, gt=0)
    #: A reported dot is at least this much darker than its skin (L*), and never less than the
    #: visibility floor of configs/flags.yaml: pores and follicle openings reach 2-10 L*.
    min_contrast_dl: float = Field(6.0, ge=0)
    #: The decision: response over the skin's texture noise at the dot's scale ...
    min_significance: float = Field(6.0, gt=0)
    #: ... or this much where the learned model scores the place at least ``model_support``
    #: (a second opinion; it never lowers the contrast floor, the size or the hair rule).
    min_significance_supported: float = Field(6.0, gt=0)
    model_support: float = Field(0.3, gt=0, le=1)
    #: Half-maximum diameter of a dot (SMP needles make 0.1-0.6 mm dots; spread ones reach ~0.9 mm).
    diameter_mm: PositiveRange = (0.07, 1.0)
    #: Longer than this ratio of axes is a strand, not a dot (fresh dots reach 2 : 1).
    max_elongation: float = Field(2.6, gt=1)
    #: Darkness beyond the dot's end along its long axis, share of its centre darkness.
    max_continuation: float = Field(0.45, gt=0)
    #: Ratio of the Hessian's eigenvalues at the dot's scale (1 a round blob, 0 a straight ridge);
    #: a 2 : 1 dot reads ~0.4 at its own width, a strand < 0.2.
    min_curvature_ratio: float = Field(0.3, ge=0, lt=1)
    #: Above this ratio a candidate is a blob whatever lies beyond it (a round dot among neighbours).
    blob_curvature_ratio: float = Field(0.6, ge=0, le=1)
    #: The skin's texture is measured again without the neighbourhoods of structures this many times
    #: above it (clear dots, which would otherwise count as texture in a dense field), this many
    #: times. Pores, creases and specks stay in: they are the texture a dot must stand out of.
    noise_exclude: float = Field(5.0, gt=1)
    #: ``blobs``: the texture is the typical response of the skin's own blobs at the dot's scale
    #: (pores, specks: the median of the filter's local maxima in ~2 mm blocks, so the dots among
    #: them do not count), never below the RMS of the filter; ``rms``: the RMS alone.
    texture: Literal["blobs", "rms"] = "blobs"
    noise_passes: int = Field(1, ge=0, le=3)
    #: Pixels darker than their surroundings (a ~1.5 mm median) by this much are pigment: left out of
    #: the texture (with each scale's sigma around them) whatever their response, and the texture is
    #: then the dark side of the skin between them (a dense field of dots would otherwise be its own
    #: texture). None: structures are left out by their response only.
    texture_max_dl: float | None = Field(10.0, gt=0)
    #: Width of the neighbourhood over which the skin's texture noise is measured.
    noise_sigma_mm: float = Field(1.0, gt=0)
    #: A structure left out of the texture by its response takes this many of its scale's sigmas
    #: around it along
    exclude_reach: float = Field(3.0, gt=0)

    @model_validator(mode="after")
    def _order(self) -> DetectSettings:
        if not self.min_px_per_mm < self.canonical_px_per_mm < self.max_px_per_mm:
            raise ValueError("need min_px_per_mm < canonical_px_per_mm < max_px_per_mm")
        return self


class ScaleOutOfRange(ValueError):
    """The photo's scale is outside the range where dots can be measured."""


@dataclass(frozen=True)
class DotEvidence:
    """Why each dot was reported (arrays parallel to the geometry)."""

    contrast_dl: np.ndarray    # centre darkness vs local bare skin, L* (canonical scale)
    noise_dl: np.ndarray       # the skin's texture at the dot's scale (filter units ~ L*)
    significance: np.ndarray   # filter response / noise_dl
    continuation: np.ndarray   # darkness beyond the ends along the long axis / centre darkness
    curvature_ratio: np.ndarray  # |smaller| / |larger| Hessian eigenvalue at the dot's scale (1 blob, 0 ridge)
    model_score: np.ndarray    # the learned model's score near the dot (NaN: no model)
    patch_score: np.ndarray    # the second look's probability (models.dot_patch; NaN: not looked at)
    confidence: np.ndarray     # 0-1: the ranker's probability, or the margins over the rules' thresholds
    features: np.ndarray       # (N, F) what the ranker read (models.dot_ranker.FEATURES; F = 0 under the rules)

    def take(self, idx: np.ndarray) -> DotEvidence:
        return DotEvidence(*(getattr(self, k)[idx] for k in self.__dataclass_fields__))


#: Why a candidate was not reported (bits of ``CandidateTable.reason``).
REJECT = {"not_scalp": 1, "contrast": 2, "significance": 4, "size": 8, "elongation": 16, "continuation": 32,
          "duplicate": 64, "ridge": 128, "ranker": 256, "patch": 512}


@dataclass(frozen=True)
class CandidateTable:
    """Candidates that were looked at and not reported, with their evidence and the reasons."""

    xy: np.ndarray            # (M, 2) photo px
    diameter_mm: np.ndarray   # (M,) at the nominal scale
    elongation: np.ndarray
    evidence: DotEvidence
    reason: np.ndarray        # (M,) int, OR of REJECT bits

    def reasons(self) -> dict[str, int]:
        """How many candidates failed each test (a candidate can fail several)."""
        return {k: int(np.count_nonzero(self.reason & b)) for k, b in REJECT.items()}


@dataclass(frozen=True)
class Detection:
    geometry: DotGeometry        # in the photo's pixels
    evidence: DotEvidence
    factor: float                # canonical px per photo px
    n_candidates: int
    rejected: CandidateTable
    skin_lstar: np.ndarray       # HxW float32 bare-skin L* reference, resampled to the photo's pixels
    #: (N, S, S) the normalised canonical-scale patches of the reported dots (models.dot_patch), kept
    #: under ``decision=floors`` for training; None otherwise
    patches: np.ndarray | None = None


def resample_factor(px_per_mm: float, settings: DetectSettings) -> float:
    """Canonical px per photo px; :class:`ScaleOutOfRange` outside the supported scales."""
    if not (settings.min_px_per_mm <= px_per_mm <= settings.max_px_per_mm):
        raise ScaleOutOfRange(
            f"{px_per_mm:.1f} px/mm is outside the supported range for dots "
            f"({settings.min_px_per_mm:g}-{settings.max_px_per_mm:g} px/mm)")
    return settings.canonical_px_per_mm / px_per_mm


def _resize(img: np.ndarray, f: float, interp: int | None = None) -> np.ndarray:
    h, w = img.shape[:2]
    size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
    if interp is None:
        interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interp)


def _classes_at(labels: np.ndarray, f: float) -> tuple[np.ndarray, np.ndarray]:
    """Scalp and hair masks at the canonical scale. Downscaling keeps hair where it covers a
    quarter of a canonical pixel (thin strands stay hair), scalp where it covers half."""
    if abs(f - 1.0) < 1e-9:
        return labels == SCALP, labels == HAIR
    if f > 1:
        small = _resize(labels, f, cv2.INTER_NEAREST)
        return small == SCALP, small == HAIR
    scalp = _resize((labels == SCALP).astype(np.float32), f) >= 0.5
    hair = _resize((labels == HAIR).astype(np.float32), f) >= 0.25
    return scalp & ~hair, hair


def _local_rms(resp: np.ndarray, weight: np.ndarray, px_per_mm: float, sigma_mm: float,
               dark_side: bool = False) -> np.ndarray:
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
    if dark_side:   # the RMS of the dark (positive) side, as if the texture were symmetric
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
    return cv2.max(out, float(np.float32(0.25 * sd)), dst=out)   # (np.maximum's values, ~2x faster)


def _ridge_axis(g: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis of least curvature of the blurred darkness ``g`` at each point (its Hessian; ``g`` is
    blurred at the points' own scale), and the curvature ratio |small| / |large| (1 = blob, 0 = ridge)."""
    x, y = xy[:, 0], xy[:, 1]
    o = sample_points(g, x, y)
    dxx = sample_points(g, x + 1, y) + sample_points(g, x - 1, y) - 2 * o
    dyy = sample_points(g, x, y + 1) + sample_points(g, x, y - 1) - 2 * o
    dxy = 0.25 * (sample_points(g, x + 1, y + 1) + sample_points(g, x - 1, y - 1)
                  - sample_points(g, x + 1, y - 1) - sample_points(g, x - 1, y + 1))
    tr, det = dxx + dyy, dxx * dyy - dxy * dxy
    disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0.0))
    l1, l2 = tr / 2 + disc, tr / 2 - disc              # l2 <= l1; a dark line has l2 << 0
    big, small = np.where(np.abs(l2) >= np.abs(l1), l2, l1), np.where(np.abs(l2) >= np.abs(l1), l1, l2)
    ratio = np.abs(small) / np.maximum(np.abs(big), 1e-6)
    # eigenvector of the larger eigenvalue l1: along a bright ridge of the darkness (a dark strand)
    theta = 0.5 * np.arctan2(2 * dxy, dxx - dyy)
    return theta, ratio


def _blob_texture(maxima: tuple[np.ndarray, np.ndarray, np.ndarray], weight: np.ndarray, px_per_mm: float,
                  block_mm: float) -> np.ndarray:
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
    elif np.isnan(grid).any():                       # blocks without skin: the nearest block's value
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


def _continuation(dark: np.ndarray, xy: np.ndarray, axis: np.ndarray, dist: np.ndarray, width: np.ndarray,
                  peak: np.ndarray) -> np.ndarray:
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


def _compact_blobs(hair: np.ndarray, px_per_mm: float, max_diameter_mm: float) -> np.ndarray:
    """Parts of a hair mask that are not strands: what survives an opening with a disc wider than a
    strand (about 0.1 mm), in pieces no longer than a dot (``max_diameter_mm``)."""
    if not hair.any():
        return np.zeros_like(hair)
    k = max(3, int(round(0.1 * px_per_mm)) | 1)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    opened = cv2.morphologyEx(hair.view(np.uint8), cv2.MORPH_OPEN, disc)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if n <= 1:
        return np.zeros_like(hair)
    extent = np.hypot(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT])
    small = np.zeros(n, bool)
    small[1:] = extent <= max_diameter_mm * px_per_mm
    return np.take(small, comp)                  # (a table look-up: np.take is ~2.5x faster than small[comp])


def _fill(lum: np.ndarray, holes: np.ndarray, sigma_px: float) -> np.ndarray:
    """``lum`` with the ``holes`` pixels replaced by a normalised Gaussian mean of the others
    (widening the kernel where a hole is wider than it)."""
    keep = (~holes).astype(np.float32)
    out = lum.copy()
    todo = holes.copy()
    sg = max(0.7, sigma_px)
    weighted = lum * keep
    for _ in range(4):
        num = cv2.GaussianBlur(weighted, (0, 0), sg)
        den = cv2.GaussianBlur(keep, (0, 0), sg)
        ok = todo & (den > 0.05)
        out[ok] = num[ok] / den[ok]
        todo &= ~ok
        if not todo.any():
            break
        sg *= 2.5
    return out


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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def detect_dots(lstar: np.ndarray, labels: np.ndarray, px_per_mm: float, settings: DetectSettings,
                dot_settings: DotSettings, min_contrast_dl: float, max_hair_cover: float = 0.5, *,
                model_xy: np.ndarray | None = None, model_score: np.ndarray | None = None,
                ranker: DotRanker | None = None, patch_ranker: PatchRanker | None = None) -> Detection:
    """Dots of one close-up (see the module docstring).

    ``lstar``: HxW float32 colour-corrected L*; ``labels``: HxW classes;
    ``px_per_mm``: the photo's scale; ``min_contrast_dl``, ``max_hair_cover``: the
    visibility rule (``FlagSettings.visible_min_contrast_dl``, ``visible_max_hair_cover``).
    ``model_xy``/``model_score``: centres a learned model proposes (photo pixels), optional.
    ``ranker``: the learned ranking of the admitted candidates (``models.dot_ranker``), needed
    when ``settings.decision`` is ``ranker``.
    ``patch_ranker``: the second look at the pixels (``models.dot_patch``; without one, or with
    ``settings.patch_look`` off, none is taken).
    Raises :class:`ScaleOutOfRange` outside the supported scales.
    """
    if settings.decision == "ranker" and ranker is None:
        raise ValueError("detect.decision is 'ranker' but no ranker was given")
    f = resample_factor(px_per_mm, settings)
    c = settings.canonical_px_per_mm
    lum = lstar if abs(f - 1) < 1e-9 else _resize(lstar, f)
    scalp, hair = _classes_at(labels, f)
    h, w = lum.shape
    # hair is a strand: compact dark blobs a segmenter calls hair (a dot, a cut end) are given back
    # to the scalp and judged like every other candidate (the strand test still applies to them)
    blobs = _compact_blobs(hair, c, settings.diameter_mm[1])
    if blobs.any():
        hair = hair & ~blobs
        scalp = scalp | blobs
    ld = local_darkness(lum, c)
    if settings.hair != "segmenter":
        # hair as what it physically is: thin, long dark ridges of this photo (pipeline.one_photo.segment.hair_strands)
        skin = scalp | hair
        # dark hair: thin long dark ridges. Light (blond, grey) hair: anything clearly lighter than the
        # skin around it, since pigment only darkens skin (the gaps between light strands would
        # otherwise read as dark blobs)
        light = ld < -6.0
        if settings.light_hair_mm:
            # light strands narrower than light_hair_mm: what an opening (a minimum, then a maximum)
            # removes, lighter than what it leaves by 6 L*. In dense light hair the median above is
            # the hair's level, the skin between strands reads as dark blobs; this is not fooled
            k_lh = max(3, int(round(settings.light_hair_mm * c)) | 1)
            disc_lh = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_lh, k_lh))
            light |= cv2.morphologyEx(lum, cv2.MORPH_TOPHAT, disc_lh) > 6.0
        strands = (hair_strands(ld, c, line_mm=settings.strand_line_mm, max_width_mm=settings.strand_width_mm)
                   | light) & skin
        hair = strands if settings.hair == "strands" else (hair | strands)
        scalp = skin & ~hair
    # the exact factor of each axis (whole pixels: it differs from f by up to half a pixel per edge)
    fxy = np.array([w / lstar.shape[1], h / lstar.shape[0]])
    # hair is not skin: its pixels (and a 1-px rim of soft edges) are filled from the skin and dots
    # around them, so a strand leaves no ridge in the darkness and a dot it crosses stays a dot.
    # (A light strand's rim too: left as skin, the skin beside dense light strands reads as dark
    # blobs; measured: a pigment-free demo photo under light hair 0.7 -> 3.1 false dots per cm2.)
    hair_rim = cv2.dilate(hair.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool) if hair.any() else hair
    raw = lum
    if hair_rim.any():
        lum = _fill(lum, hair_rim, 0.06 * c)
    skin_like = scalp | hair
    # the scale space needs no skin level (a Laplacian ignores an offset and a smooth reference):
    # it runs on the negated lightness, and the skin level is taken later, from the quiet skin
    dark = np.negative(lum, dtype=np.float32)

    # --- scale space: scale-normalised LoG of the darkness ---
    r_lo, r_hi = (r * c for r in settings.radius_mm)
    sigmas = np.geomspace(max(0.6, r_lo / np.sqrt(2)), max(0.9, r_hi / np.sqrt(2)), settings.n_scales)
    bare = scalp & ~hair_rim
    # the blurred darkness is read again only by the strand test, and only when no hair was filled
    # (otherwise it blurs the photo as it is): not kept when it is not needed (a 12 MP photo's
    # planes are ~30 MB each)
    resp, blurred = [], []
    kernel = np.ones((3, 3), np.uint8)
    maxima = []
    for sg in sigmas:
        g = cv2.GaussianBlur(dark, (0, 0), float(sg))
        blurred.append(g if raw is lum else None)
        r = cv2.Laplacian(g, cv2.CV_32F, ksize=1)
        del g
        r *= np.float32(-sg * sg)
        resp.append(r)
        # the local maxima over 3x3 (plateaus included) with a positive response, as points: the
        # structures left out of the texture, the skin's blobs and the candidates are all among
        # them (every noise level is positive, so each threshold on it implies a positive
        # response), and testing a list of points is cheaper than testing whole frames again
        is_max = r >= cv2.dilate(r, kernel)
        is_max &= r > 0
        ys_k, xs_k = _nonzero(is_max)
        maxima.append((ys_k, xs_k, r[ys_k, xs_k]))
    del dark
    # the skin's texture at each scale: first over all bare skin, then again without the
    # neighbourhoods of the strong structures that first pass finds (in a dense dot field the
    # dots themselves would otherwise be counted as texture and hide each other)
    quiet = bare
    noise = [_local_rms(r, quiet, c, settings.noise_sigma_mm) for r in resp]
    # pigment (and the darkest look-alikes): clearly darker than the skin around it. Left out of the
    # texture with the reach of each scale, so that between the dots of a dense field the skin
    # itself is measured; only its dark side (pigment only darkens: the bright side between dense
    # dots is their surround, not texture)
    pigment = (ld >= settings.texture_max_dl).view(np.uint8) if settings.texture_max_dl is not None else None

    def _disc(radius: float) -> np.ndarray:
        r = int(np.ceil(radius))
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))

    # what the pigment takes out of each scale does not change from pass to pass
    near_pigment = [None if pigment is None else cv2.dilate(pigment, _disc(sg)) for sg in sigmas]
    stills = [quiet] * len(sigmas)
    for _ in range(settings.noise_passes):
        stills = []
        for k, sg in enumerate(sigmas):
            ys_k, xs_k, v = maxima[k]
            strong = v >= settings.noise_exclude * noise[k][ys_k, xs_k]
            peaks = np.zeros((h, w), np.uint8)
            peaks[ys_k[strong], xs_k[strong]] = 1
            busy = cv2.dilate(peaks, _disc(settings.exclude_reach * sg))
            if near_pigment[k] is not None:
                busy |= near_pigment[k]
            st = quiet & (busy == 0)
            stills.append(st if np.count_nonzero(st[::4, ::4]) >= 200 else quiet)
        del noise                               # (not held beside its successor)
        noise = [_local_rms(r, st, c, 2.0 * settings.noise_sigma_mm, dark_side=pigment is not None)
                 for r, st in zip(resp, stills)]
    # the skin away from every structure at any scale: where the bare-skin reference is taken
    still = np.logical_and.reduce(stills) if len(stills) > 1 else stills[0]
    if settings.texture == "blobs":
        for mx, n, st in zip(maxima, noise, stills):
            np.maximum(n, _blob_texture(mx, st, c, 2.0 * settings.noise_sigma_mm), out=n)
    # the bare-skin reference from the quiet skin (away from every dot-like structure and hair)
    base = still if np.count_nonzero(still[::4, ::4]) >= 200 else (bare if bare.any() else skin_like)
    ref = skin_reference(lum, base, c, dot_settings.skin_sigma_mm,
                         clip_sd=dot_settings.skin_clip_sd, iterations=dot_settings.skin_iterations)
    # candidates: maxima over 3x3 in space at each scale (a dot among dots is a maximum at its own
    # scale, not at the larger scales where its neighbours merge with it)
    found = []
    if not (settings.candidates == "model" and model_xy is not None):
        for k, (ys_k, xs_k, v) in enumerate(maxima):
            is_cand = (v >= settings.candidate_significance * noise[k][ys_k, xs_k]) & skin_like[ys_k, xs_k]
            found.append((np.full(np.count_nonzero(is_cand), k), ys_k[is_cand], xs_k[is_cand]))
    ks, ys, xs = (np.concatenate(a) for a in zip(*found)) if found else (np.zeros(0, np.int64),) * 3
    sig = _at(resp, ks, ys, xs) / _at(noise, ks, ys, xs)
    # one candidate per place: the scale with the highest significance
    cand = np.column_stack([xs, ys]).astype(np.float64)
    from_model = np.zeros(len(cand), bool)
    if model_xy is not None and len(model_xy) and settings.candidates != "scale_space":
        mxy = (np.asarray(model_xy, np.float64).reshape(-1, 2) + 0.5) * fxy - 0.5
        inside = (mxy[:, 0] >= 0) & (mxy[:, 0] <= w - 1) & (mxy[:, 1] >= 0) & (mxy[:, 1] <= h - 1)
        mxy = mxy[inside]
        mi = np.clip(np.round(mxy).astype(np.int64), 0, [w - 1, h - 1])
        mk = np.argmax(np.stack([r[mi[:, 1], mi[:, 0]] / n[mi[:, 1], mi[:, 0]] for r, n in zip(resp, noise)]), axis=0)
        cand = np.vstack([cand, mxy])
        ks = np.concatenate([ks, mk])
        sig = np.concatenate([sig, _at(resp, mk, mi[:, 1], mi[:, 0]) / _at(noise, mk, mi[:, 1], mi[:, 0])])
        from_model = np.concatenate([from_model, np.ones(len(mxy), bool)])
    n_cand = len(cand)
    if n_cand:
        # one candidate per blob: ranked by the scale-normalised response (largest at the blob's own
        # scale), each suppressing the weaker ones within its radius (the ends of a large elongated dot
        # are maxima at a small scale, inside the dot's radius at its own scale)
        ci = np.clip(np.round(cand).astype(np.int64), 0, [w - 1, h - 1])
        strength = _at(resp, ks, ci[:, 1], ci[:, 0])
        keep = suppress_duplicates(cand, (strength if settings.blob_merge else sig) + 1e-6 * from_model,
                                   dot_settings.min_separation_mm * c,
                                   reach_px=(settings.blob_merge * np.sqrt(2) * sigmas[ks] if settings.blob_merge
                                             else None))
        cand, ks, sig = cand[keep], ks[keep], sig[keep]

    # --- evidence ---
    prof = radial_profile(lum, ref, cand, c, dot_settings)
    xi = np.clip(np.round(prof.xy[:, 0]).astype(np.int64), 0, w - 1)
    yi = np.clip(np.round(prof.xy[:, 1]).astype(np.int64), 0, h - 1)
    resp_at = _at(resp, ks, yi, xi)
    noise_at = _at(noise, ks, yi, xi)
    # the scale space and the skin's texture are read no further: their planes (~30 MB each at the
    # canonical scale of a 12 MP photo) are let go before the strand test and the re-centring on
    # the photo's own pixels allocate theirs
    del resp, noise, maxima, stills, still, base, quiet, bare, near_pigment, pigment, ld
    # significance at the refined centre (the maximum may sit half a pixel off)
    sig = np.maximum(sig, resp_at / np.maximum(noise_at, 1e-6))
    # the axis is read at no less than ~0.1 mm of blur: a thin strand, aliased into dashes, reads as a
    # row of specks at the finest scale and as a ridge from there on
    k_axis = np.maximum(ks, int(np.searchsorted(sigmas, 0.07 * c)))
    k_axis = np.minimum(k_axis, len(sigmas) - 1)
    # the strand test (curvature ratio, axis, continuation) reads the photo as it is (hair not
    # filled): at the tip of a strand the hair mask covers, the filled darkness is a round blob,
    # the photo a ridge
    raw_dark = np.subtract(ref, raw, dtype=np.float32)
    axis, ridge_ratio = np.zeros(len(cand)), np.ones(len(cand))
    for k in np.unique(k_axis):                 # one blurred plane at a time
        i = np.flatnonzero(k_axis == k)
        g = blurred[k] if raw is lum else cv2.GaussianBlur(raw_dark, (0, 0), float(sigmas[k]))
        axis[i], ridge_ratio[i] = _ridge_axis(g, prof.xy[i])
        del g
    del blurred
    r_half = np.maximum(prof.radius_px, 0.5)
    reach = np.maximum(r_half * np.sqrt(np.maximum(prof.elongation, 1.0)), sigmas[ks] * np.sqrt(2))
    # continuation on the photo as it is (hair not filled): a piece of a strand the hair mask missed
    # continues into the masked part
    cont = _continuation(cv2.GaussianBlur(raw_dark, (0, 0), float(sigmas[0])), prof.xy, axis,
                         reach + np.maximum(0.1 * c, 0.8 * reach), r_half, prof.peak_dl)
    diameter_mm = 2.0 * prof.radius_px / c
    # on scalp: not background, and less than half of the dot's disc under hair (the `visible` rule)
    hair_cover = disc_mean(hair.astype(np.float32), prof.xy, np.maximum(prof.radius_px, 0.5))
    on_scalp = (skin_like[yi, xi] & (hair_cover < max_hair_cover)) if len(cand) else np.zeros(0, bool)
    inside = (prof.xy[:, 0] >= -0.5) & (prof.xy[:, 0] <= w - 0.5) & (prof.xy[:, 1] >= -0.5) & (prof.xy[:, 1] <= h - 0.5)
    # the model's view of each dot: its best score within the separation radius (NaN without a model)
    if model_xy is not None and model_score is not None:
        mscore = np.zeros(len(cand))
        if len(model_xy) and len(cand):
            from scipy.spatial import cKDTree

            mxy = (np.asarray(model_xy, np.float64).reshape(-1, 2) + 0.5) * fxy - 0.5
            pairs = cKDTree(prof.xy).sparse_distance_matrix(cKDTree(mxy), dot_settings.min_separation_mm * c,
                                                            output_type="ndarray")
            ms = np.asarray(model_score, np.float64)
            np.maximum.at(mscore, pairs["i"], ms[pairs["j"]])
    else:
        mscore = np.full(len(cand), np.nan)
    d_lo, d_hi = settings.diameter_mm
    reason = np.zeros(len(cand), np.int64)
    # a second opinion lowers the bar, never below the physical floor: where the learned model also
    # sees a dot, significance must reach min_significance_supported and only a candidate that is both
    # a ridge and continues along it is a strand; alone, the scale space needs min_significance and
    # either sign of a strand rejects
    supported = np.nan_to_num(mscore) >= settings.model_support
    ridge = ridge_ratio < settings.min_curvature_ratio
    runs_on = cont > settings.max_continuation
    # (continuing darkness alone is no proof: in a dense field a neighbour often lies along the axis)
    strand = np.where(supported, ridge & runs_on, ridge | (runs_on & (ridge_ratio < settings.blob_curvature_ratio)))
    rules = settings.decision == "rules"
    # the physical floors hold in every mode; the rules add their thresholds on significance and the
    # strand tests, the ranker weighs all the evidence instead
    rules_need = np.where(supported, settings.min_significance_supported, settings.min_significance)
    need = rules_need if rules else np.full(len(cand), settings.candidate_significance)
    tests = [(REJECT["not_scalp"], ~(on_scalp & inside)),
             (REJECT["contrast"], ~(prof.peak_dl >= max(min_contrast_dl, settings.min_contrast_dl))),
             (REJECT["significance"], ~(sig >= need)),
             (REJECT["size"], ~((diameter_mm >= d_lo) & (diameter_mm <= d_hi))),
             (REJECT["elongation"], ~(prof.elongation <= settings.max_elongation))]
    if rules:
        tests += [(REJECT["continuation"], strand & runs_on), (REJECT["ridge"], strand & ridge)]
    else:
        # a floor too: a ridge that continues beyond its end is a strand whatever else is measured
        tests += [(REJECT["continuation"], ridge & runs_on), (REJECT["ridge"], ridge & runs_on)]
    for bit, failed in tests:
        reason |= np.where(failed, bit, 0)
    real = reason == 0
    if len(cand):
        # two admitted candidates closer than the separation are one dot (re-centring can bring them together)
        idx = np.flatnonzero(real)
        if len(idx):
            # ... and so are two whose centres lie within the stronger one's half-maximum footprint (the
            # ends of a large or elongated dot are maxima of their own at a small scale)
            foot = settings.footprint_merge * prof.radius_px[idx] * np.sqrt(np.clip(prof.elongation[idx], 1.0, 4.0))
            keep = idx[suppress_duplicates(prof.xy[idx], sig[idx], dot_settings.min_separation_mm * c,
                                           reach_px=foot if settings.footprint_merge else None)]
            real = np.zeros(len(cand), bool)
            real[keep] = True
            reason[idx[~real[idx]]] |= REJECT["duplicate"]

    features = np.zeros((len(cand), 0 if rules else len(FEATURES)))
    if rules:
        conf = (_sigmoid((sig - settings.min_significance) / 1.5) * _sigmoid((prof.peak_dl - min_contrast_dl) / 1.5)
                * np.clip(1.0 - 0.5 * cont / settings.max_continuation, 0.0, 1.0))
        conf = np.where(np.isnan(mscore), conf, conf * (0.6 + 0.4 * np.nan_to_num(mscore)))
    else:
        # the ranker weighs the evidence of the candidates physics admitted; it never sees the others
        conf = np.full(len(cand), np.nan)
        idx = np.flatnonzero(real)
        if len(idx):
            features[idx] = candidate_features(
                significance=sig[idx], contrast_dl=prof.peak_dl[idx], noise_dl=noise_at[idx],
                diameter_mm=diameter_mm[idx], curvature_ratio=ridge_ratio[idx],
                continuation=cont[idx], skin_lstar=ref[yi[idx], xi[idx]])
            if ranker is not None:
                conf[idx] = ranker.probability(features[idx])
            if settings.decision == "ranker":
                # what the rules admit stays unless the ranker is sure it is a look-alike (under
                # ranker_veto); what they refuse needs the ranker's threshold
                by_rules = ~(strand & (ridge | runs_on)) & (sig >= rules_need)
                veto = ranker.threshold if settings.ranker_veto is None else min(settings.ranker_veto, ranker.threshold)
                need_p = np.where(by_rules[idx], veto, ranker.threshold)
                low = idx[~(conf[idx] >= need_p)]
                real[low] = False
                reason[low] |= REJECT["ranker"]
    # the second look at the pixels (the photo as it is, hair not filled): it can only refuse
    patches = None
    pscore = np.full(len(cand), np.nan)
    look = patch_ranker is not None and settings.patch_look and settings.decision != "floors"
    if look or settings.decision == "floors":
        idx = np.flatnonzero(real)
        pt = dot_patches(raw, prof.xy[idx])
        if settings.decision == "floors":
            patches = pt
        if look and len(idx):
            veto = patch_ranker.veto if settings.patch_veto is None else settings.patch_veto
            pscore[idx] = patch_ranker.probability(pt)
            low = idx[~(pscore[idx] >= veto)]
            real[low] = False
            reason[low] |= REJECT["patch"]
    ev = DotEvidence(contrast_dl=prof.peak_dl, noise_dl=noise_at.astype(np.float64), significance=sig,
                     continuation=cont, curvature_ratio=ridge_ratio, model_score=mscore, patch_score=pscore,
                     confidence=conf,
                     features=features)

    sel = np.flatnonzero(real)
    xy_all = (prof.xy + 0.5) / fxy - 0.5
    # the bare-skin reference at the photo's pixels (reported, and read by the re-centring below)
    skin = (ref if abs(f - 1) < 1e-9
            else cv2.resize(ref, (lstar.shape[1], lstar.shape[0]), interpolation=cv2.INTER_LINEAR))
    if f < 0.8 and len(sel):
        # a photo finer than the canonical scale: the decided dots are re-centred on its own pixels
        # (an elongated fresh dot of a macro photo is located to ~1 canonical px otherwise)
        fine = radial_profile(lstar, skin, xy_all[sel], px_per_mm,
                              dot_settings.model_copy(update={"recentre_passes": settings.fine_recentre_passes}))
        moved = np.hypot(*(fine.xy - xy_all[sel]).T)
        ok = np.isfinite(moved) & (moved <= np.maximum(prof.radius_px[sel] / f, 1.0))
        xy_all[sel[ok]] = fine.xy[ok]
    if len(sel):
        # where it is reported: a dot whose final centre pixel is background in the photo's own label
        # map (the classes were read at the canonical scale; re-centring moves a dot by up to its
        # radius) is refused here, so every reported dot is one the metrics count (data.metrics.dots_in_roi)
        off = ~dots_in_roi(xy_all[sel], labels != BACKGROUND)
        real[sel[off]] = False
        reason[sel[off]] |= REJECT["not_scalp"]
        sel = sel[~off]
        if patches is not None:    # one per decided dot (decision "floors": nothing refused since)
            patches = patches[~off]
    geom = DotGeometry(xy=xy_all[sel], radius_px=prof.radius_px[sel] / f, peak_dl=prof.peak_dl[sel],
                       elongation=prof.elongation[sel], orientation=prof.orientation[sel], score=conf[sel])
    rejected = CandidateTable(xy=xy_all[~real], diameter_mm=diameter_mm[~real],
                              elongation=prof.elongation[~real], evidence=ev.take(np.flatnonzero(~real)),
                              reason=reason[~real])
    return Detection(geometry=geom, evidence=ev.take(sel), factor=f, n_candidates=n_cand, rejected=rejected,
                     skin_lstar=skin, patches=patches)
