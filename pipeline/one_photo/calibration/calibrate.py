"""The one call, :func:`calibrate`: the card found, the scale and the colour correction taken
from it (or the fallbacks without it), gathered in a :class:`Calibration`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from data.card import CardSpec, reference_lab
from data.colour import lab_to_linear_rgb
from data.metrics import PlaneScale
from pipeline.one_photo.calibration.card_detect import CardDetection, find_card
from pipeline.one_photo.calibration.colour import ColourCorrection, fit_colour_correction, no_colour_correction
from pipeline.one_photo.calibration.common import _check_rgb
from pipeline.one_photo.calibration.patches import measure_patches
from pipeline.one_photo.calibration.scale import (
    ScaleCalibration,
    _valid_px_per_mm,
    manual_scale,
    no_scale,
    scale_from_card,
)
from pipeline.one_photo.calibration.settings import CalibrationSettings


@dataclass(frozen=True, eq=False)
class Calibration:
    """Everything :func:`calibrate` found out about one photo."""

    scale: ScaleCalibration
    colour: ColourCorrection
    detection: CardDetection | None
    warnings: tuple[str, ...] = field(default=())

    @property
    def px_per_mm(self) -> float | None:
        return self.scale.px_per_mm

    def plane_scale(self) -> PlaneScale | None:
        """The photo's :class:`data.metrics.PlaneScale`, or None without a scale."""
        return self.scale.plane_scale()

    def to_json(self) -> dict[str, Any]:
        """The ``calibration`` block of ``assessment.json`` (plain JSON types)."""
        det = self.detection
        col = self.colour

        def num(v: float | None, nd: int = 4) -> float | None:
            return None if v is None or not math.isfinite(v) else round(float(v), nd)

        h = self.scale.image_to_plane
        return {
            "px_per_mm": num(self.scale.px_per_mm, 6),
            "scale_source": self.scale.source,
            "colour_source": col.source,
            "colour_model": col.model,
            "residual_de00_mean": num(col.residual_de00_mean),
            "residual_de00_max": num(col.residual_de00_max),
            "residual_de00_loo_mean": num(col.residual_de00_loo_mean),
            "patches_used": len(col.patches_used),
            "marker_px": num(det.marker_side_px, 2) if det is not None else None,
            "marker_id": det.marker_id if det is not None else None,
            "foreshortening": num(det.foreshortening) if det is not None else None,
            "marker_corners_px": det.corners_px.round(3).tolist() if det is not None else None,
            "image_to_plane": h.tolist() if h is not None else None,
            "warnings": list(self.warnings),
        }


def calibrate(
    rgb: ArrayLike,
    card: CardSpec,
    settings: CalibrationSettings | None = None,
    *,
    px_per_mm: float | None = None,
) -> Calibration:
    """Scale and colour correction of one photo (HxWx3 uint8 sRGB) from its card.

    * Card found: scale and colour from the card. A manual ``px_per_mm`` given as well is
      not used, but a warning says so when it differs from the card's by more than
      ``max_scale_disagreement``.
    * No card: the manual ``px_per_mm`` (uniform scale) if given, else no scale; colours
      are not corrected. Both are said in ``warnings``.
    """
    s = settings or CalibrationSettings()
    img = _check_rgb(rgb)
    manual = _valid_px_per_mm(px_per_mm) if px_per_mm is not None else None
    detection = find_card(img, card, s)
    warnings: list[str] = []

    def without_card(*why: str) -> Calibration:
        scale = manual_scale(manual) if manual is not None else no_scale()
        colour = no_colour_correction()
        return Calibration(scale, colour, None, tuple(why) + scale.warnings + colour.warnings)

    if detection is None:
        return without_card()
    if detection.marker_side_px < s.reject_marker_px:
        return without_card(
            f"a marker-like pattern {detection.marker_side_px:.0f} px across was found and "
            f"rejected (< {s.reject_marker_px:g} px): treated as no card"
        )

    h, w = img.shape[:2]
    scale = scale_from_card(detection, (w, h), s)
    if detection.other_marker_ids:
        others = ", ".join(str(i) for i in detection.other_marker_ids)
        warnings.append(
            f"several card markers in the photo (also id {others}): used id {detection.marker_id}, the largest"
        )
    if manual is not None and scale.px_per_mm is not None:
        diff = manual / scale.px_per_mm - 1.0
        if abs(diff) > s.max_scale_disagreement:
            warnings.append(
                f"--px-per-mm {manual:g} disagrees with the card ({scale.px_per_mm:.3f} px/mm, {diff:+.1%}): "
                "using the card"
            )

    names = card.patches.names
    measured = measure_patches(img, detection, card, s)
    unusable = [names[i] for i in range(len(names)) if not np.all(np.isfinite(measured[i]))]
    if unusable:
        warnings.append(
            f"{len(unusable)} of {len(names)} colour patches not usable (outside the photo or clipped): "
            + ", ".join(unusable)
        )
    reference = lab_to_linear_rgb(reference_lab(card))
    try:
        colour = fit_colour_correction(measured, reference, s.colour_model, cross_term_penalty=s.cross_term_penalty)
    except ValueError as exc:
        colour = no_colour_correction(
            f"card found but its colours could not be used ({exc}): colours are not corrected"
        )
    else:
        if colour.residual_de00_mean is not None and colour.residual_de00_mean > s.reject_residual_de00:
            return without_card(
                f"a card marker was found but its colour patches do not match the card "
                f"(residual dE00 mean {colour.residual_de00_mean:.1f} > {s.reject_residual_de00:g}): "
                "rejected as a false marker, treated as no card"
            )
        if colour.residual_de00_mean is not None and colour.residual_de00_mean > s.max_residual_de00:
            assert colour.patch_residual_de00 is not None
            worst = int(np.nanargmax(colour.patch_residual_de00))
            warnings.append(
                f"card colour residual dE00 mean {colour.residual_de00_mean:.1f} > {s.max_residual_de00:g} "
                f"(worst patch {names[worst]}: {colour.patch_residual_de00[worst]:.1f}): "
                "colour correction is unreliable (uneven light, glare, or card colours differ from the references)"
            )
    return Calibration(scale, colour, detection, scale.warnings + tuple(warnings) + colour.warnings)
