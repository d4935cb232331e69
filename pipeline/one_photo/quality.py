"""Quality gate: can the numbers of this photo be trusted?

Each check is a pure function of arrays the pipeline already has and yields a
named warning; ``quality.ok`` is False when any *blocking* check fails (a
reviewer should retake the photo). The thresholds are in :class:`QualitySettings`
with their reasoning; the benchmark's synthetic photos (blur, noise, exposure
ranges of ``configs/synth``) all pass with the defaults.

Checks
------
* ``out_of_focus``: the fine-to-coarse detail ratio of :func:`sharpness` over
  scalp pixels. Dots are ~0.1-0.3 mm: once blurred by ~0.2 mm their edges are
  gone and dot sizes and contrasts are biased.
* ``motion_blur``: dots are round; when the measured dots are elongated
  (median ratio of axes above ``motion_elongation``) *and* point the same way
  (circular coherence of their axes above ``motion_coherence``), the camera
  moved. Hair flowing one way does not trigger it: only dots are used.
* ``overexposed`` / ``underexposed``: fraction of scalp-and-hair pixels with a
  clipped channel (>= 254) or crushed to black (all channels <= 3).
* ``glare``: fraction of scalp pixels that are near-white and grey (specular
  reflection from oily skin or a flash): colour cannot be measured there.
* ``scale_too_low_for_dots``: a close-up below ``min_px_per_mm_dots``: a dot of
  0.1 mm spans under a pixel, so dot metrics are not reported.
* ``no_scalp``: scalp and hair cover less than ``min_roi_fraction`` of the photo, or, in a close-up,
  less than ``min_roi_fraction_closeup``. A close-up frames the scalp (the benchmark suites: 0.42-0.99
  of the frame, real clinic close-ups 0.56-0.91); a "close-up" whose scalp and hair are a sliver is a
  photo of something else (walls, clothes, a face or an ear, where a segmenter calls a few patches
  scalp: 11 of the 12 scalp-free windows the product kept before this test, docs/quality.md).
* ``mask_unsure``: the segmenter's second look disagrees with its first. The centre of the photo
  (half its width and height) is segmented again mirrored and half a stop darker, two things
  that do not change what is scalp and what is hair; when the scalp fraction of that window
  moves by more than ``max_scalp_fraction_wobble_pp`` between the two looks, or the looks label
  less than ``min_mask_agreement`` of what either calls scalp or hair alike (a photo of a room
  whose specks the model calls hair: the fraction stays put, the pixels do not), no scalp fraction
  or show-through of this photo can be defended (:func:`second_look_window`, :func:`mask_wobble`).
  Measured with the bundled model (docs/quality.md): it refused 7 of the benchmark suites' 46
  photos, each with a scalp fraction 8-49 pp off; a mask wrong the same way twice passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from data.config import Settings
from data.metrics import HAIR, SCALP

__all__ = [
    "QualitySettings",
    "QualityReport",
    "MaskWobble",
    "check_quality",
    "mask_wobble",
    "second_look",
    "second_look_window",
    "sharpness",
]


class QualitySettings(Settings):
    #: Fine-to-coarse detail ratio (see :func:`sharpness`): sharp photos 0.46-1.05, blurred by 0.2 mm <= 0.41.
    min_sharpness: float = Field(0.42, ge=0)
    motion_elongation: float = Field(1.45, gt=1)
    motion_coherence: float = Field(0.6, gt=0, le=1)
    max_clipped_fraction: float = Field(0.02, ge=0, le=1)
    max_dark_fraction: float = Field(0.05, ge=0, le=1)
    max_glare_fraction: float = Field(0.03, ge=0, le=1)
    #: Below this a 0.1 mm dot is under a pixel across.
    min_px_per_mm_dots: float = Field(8.0, gt=0)
    min_roi_fraction: float = Field(0.01, ge=0, le=1)
    #: ... and in a close-up (which frames the scalp) at least this share.
    min_roi_fraction_closeup: float = Field(0.2, ge=0, le=1)
    #: Segment the photo's centre a second time (mirrored, ``second_look_stops`` darker) and compare.
    second_look: bool = True
    second_look_stops: float = Field(-0.5, ge=-2.0, le=2.0)
    #: The scalp fraction may move this much (percentage points) between the two looks ...
    max_scalp_fraction_wobble_pp: float = Field(10.0, gt=0, le=100)
    #: ... and at least this share of what either look calls scalp or hair must be labelled alike.
    min_mask_agreement: float = Field(0.6, ge=0, le=1)
    #: Warnings that make ``ok`` False.
    blocking: tuple[str, ...] = (
        "out_of_focus",
        "motion_blur",
        "overexposed",
        "underexposed",
        "no_scalp",
        "mask_unsure",
    )


@dataclass(frozen=True)
class MaskWobble:
    """The segmenter's two looks at the same window (:func:`mask_wobble`)."""

    agreement: float
    """Share of the pixels called scalp or hair by either look that both label alike."""
    scalp_fraction_first: float
    scalp_fraction_second: float

    @property
    def wobble_pp(self) -> float:
        """How far the scalp fraction moved between the looks, in percentage points."""
        return 100.0 * abs(self.scalp_fraction_first - self.scalp_fraction_second)


@dataclass(frozen=True)
class QualityReport:
    ok: bool
    warnings: tuple[str, ...]
    sharpness: float | None
    clipped_fraction: float
    dark_fraction: float
    glare_fraction: float
    roi_fraction: float
    dot_elongation_median: float | None
    dot_axis_coherence: float | None
    mask_agreement: float | None = None
    """:attr:`MaskWobble.agreement` of the second look (None: not taken, or no scalp or hair in either)."""
    scalp_fraction_wobble_pp: float | None = None
    """:attr:`MaskWobble.wobble_pp` of the second look (None: not taken, or no scalp or hair in either)."""

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "warnings": list(self.warnings),
            "sharpness": _r(self.sharpness),
            "clipped_fraction": _r(self.clipped_fraction),
            "dark_fraction": _r(self.dark_fraction),
            "glare_fraction": _r(self.glare_fraction),
            "roi_fraction": _r(self.roi_fraction),
            "dot_elongation_median": _r(self.dot_elongation_median),
            "dot_axis_coherence": _r(self.dot_axis_coherence),
            "mask_agreement": _r(self.mask_agreement),
            "scalp_fraction_wobble_pp": _r(self.scalp_fraction_wobble_pp),
        }


def _r(v: float | None) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


def sharpness(lstar: np.ndarray, mask: np.ndarray, px_per_mm: float, target_px_per_mm: float = 10.0) -> float | None:
    """Fine-to-coarse detail ratio of L* over ``mask`` at ``target_px_per_mm``.

    The photo is resampled to 10 px/mm (0.1 mm per pixel, so the figure does
    not depend on the camera's resolution); the robust spread (MAD) of its
    Laplacian is divided by that of the Laplacian at half that resolution. Skin
    texture, dots and hair have detail at both scales, so the ratio does not
    depend on how textured the skin is; defocus removes the fine band first.
    On the benchmark's photos it is 0.46-1.05 sharp and 0.33-0.44 once blurred
    by a Gaussian of 0.2 mm (0.33-0.41); 0.1 mm gives 0.33-0.44.
    """
    if not mask.any():
        return None
    f = target_px_per_mm / px_per_mm
    h, w = lstar.shape
    size = (max(16, int(round(w * f))), max(16, int(round(h * f))))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    fine_img = cv2.resize(lstar, size, interpolation=interp)
    m = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    # keep off the mask's edges, where the step to the card or background dominates
    inner = cv2.erode(m, np.ones((7, 7), np.uint8)).astype(bool)
    if not inner.any():
        inner = m.astype(bool)
    fine = cv2.Laplacian(fine_img, cv2.CV_32F, ksize=1)
    half = cv2.resize(fine_img, (size[0] // 2, size[1] // 2), interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(cv2.Laplacian(half, cv2.CV_32F, ksize=1), size, interpolation=cv2.INTER_NEAREST)

    def mad(v: np.ndarray) -> float:
        return float(np.median(np.abs(v - np.median(v))))

    return mad(fine[inner]) / max(mad(coarse[inner]), 1e-6)


def second_look_window(shape: tuple[int, int]) -> tuple[slice, slice]:
    """The centre of a photo of ``shape`` (rows, columns): half its height and half its width, a
    quarter of its pixels (at least one of each)."""
    h, w = shape[:2]
    hh, hw = max(1, h // 2), max(1, w // 2)
    y0, x0 = (h - hh) // 2, (w - hw) // 2
    return slice(y0, y0 + hh), slice(x0, x0 + hw)


def second_look(rgb: np.ndarray, segment, stops: float) -> np.ndarray:
    """Labels of ``rgb`` seen again: mirrored left to right and ``stops`` brighter (negative: darker) in
    linear light, segmented by ``segment(rgb) -> labels`` and mirrored back into place."""
    from data.photometry import exposure_lut

    lut = exposure_lut(np.full(3, 2.0**stops))
    alt = np.ascontiguousarray(cv2.LUT(np.ascontiguousarray(rgb[:, ::-1]), lut))
    return np.ascontiguousarray(np.asarray(segment(alt))[:, ::-1])


def mask_wobble(first: np.ndarray, second: np.ndarray) -> MaskWobble | None:
    """How two label maps of the same pixels agree: the share of the pixels either calls scalp or hair
    that both label alike, and each one's scalp fraction (scalp over scalp and hair). None when either
    has no scalp or hair (there is no fraction to compare)."""
    first, second = np.asarray(first), np.asarray(second)
    if first.shape != second.shape:
        raise ValueError(f"label maps differ in shape: {first.shape} and {second.shape}")
    roi_a = (first == SCALP) | (first == HAIR)
    roi_b = (second == SCALP) | (second == HAIR)
    n_a, n_b = int(np.count_nonzero(roi_a)), int(np.count_nonzero(roi_b))
    if not n_a or not n_b:
        return None
    either = roi_a | roi_b
    agreement = float(np.count_nonzero((first == second) & either)) / float(np.count_nonzero(either))
    return MaskWobble(
        agreement=agreement,
        scalp_fraction_first=float(np.count_nonzero(first == SCALP)) / n_a,
        scalp_fraction_second=float(np.count_nonzero(second == SCALP)) / n_b,
    )


def check_quality(
    rgb: np.ndarray,
    lstar: np.ndarray,
    labels: np.ndarray,
    px_per_mm: float | None,
    view: str,
    settings: QualitySettings,
    *,
    dot_elongation: np.ndarray | None = None,
    dot_orientation: np.ndarray | None = None,
    wobble: MaskWobble | None = None,
) -> QualityReport:
    """Run every check; ``px_per_mm`` None means no scale is known; ``wobble`` is the segmenter's second
    look (:func:`mask_wobble`; None: not taken or nothing to compare)."""
    warnings: list[str] = []
    # pixel fractions are estimated on every second row and column: 4x less work, same figures
    # to well under a percentage point on photos of a megapixel or more
    step = 2 if labels.size >= 1_000_000 else 1
    lab_s, rgb_s = labels[::step, ::step], rgb[::step, ::step]
    roi = (lab_s == SCALP) | (lab_s == HAIR)
    scalp = lab_s == SCALP
    roi_frac = float(roi.mean()) if roi.size else 0.0
    need = (
        max(settings.min_roi_fraction, settings.min_roi_fraction_closeup)
        if view == "closeup"
        else settings.min_roi_fraction
    )
    if roi_frac < need:
        warnings.append("no_scalp")
    # per-pixel brightest and darkest channel, as planes (a reduction over a short last axis is slow)
    r, g, b = rgb_s[..., 0], rgb_s[..., 1], rgb_s[..., 2]
    hi, lo = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    where = roi if roi.any() else np.ones(roi.shape, bool)
    n_where = max(int(np.count_nonzero(where)), 1)
    clipped = np.count_nonzero((hi >= 254) & where) / n_where
    dark = np.count_nonzero((hi <= 3) & where) / n_where
    if clipped > settings.max_clipped_fraction:
        warnings.append("overexposed")
    if dark > settings.max_dark_fraction:
        warnings.append("underexposed")
    glare = 0.0
    if scalp.any():
        # bright and grey: every channel >= 235 and the channels within 18 levels of each other
        glare = np.count_nonzero((lo >= 235) & (hi - lo <= 18) & scalp) / np.count_nonzero(scalp)
    if glare > settings.max_glare_fraction:
        warnings.append("glare")
    sharp = None
    if px_per_mm is not None and view == "closeup":
        sharp = sharpness(lstar, labels == SCALP, px_per_mm)
        if sharp is not None and sharp < settings.min_sharpness:
            warnings.append("out_of_focus")
        if px_per_mm < settings.min_px_per_mm_dots:
            warnings.append("scale_too_low_for_dots")
    elong_med = coherence = None
    if dot_elongation is not None and len(dot_elongation) >= 20:
        elong_med = float(np.median(dot_elongation))
        z = np.exp(2j * np.asarray(dot_orientation, float))
        coherence = float(abs(z.mean()))
        if elong_med >= settings.motion_elongation and coherence >= settings.motion_coherence:
            warnings.append("motion_blur")
    if wobble is not None and (
        wobble.wobble_pp > settings.max_scalp_fraction_wobble_pp or wobble.agreement < settings.min_mask_agreement
    ):
        warnings.append("mask_unsure")
    ok = not any(w in settings.blocking for w in warnings)
    return QualityReport(
        ok=ok,
        warnings=tuple(warnings),
        sharpness=sharp,
        clipped_fraction=clipped,
        dark_fraction=dark,
        glare_fraction=glare,
        roi_fraction=roi_frac,
        dot_elongation_median=elong_med,
        dot_axis_coherence=coherence,
        mask_agreement=None if wobble is None else wobble.agreement,
        scalp_fraction_wobble_pp=None if wobble is None else wobble.wobble_pp,
    )
