"""The photo's physical scale (:class:`ScaleCalibration`): from the card (px/mm at the image
centre and the image -> scalp-plane homography), given by hand, or none."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from data.metrics import PlaneScale
from pipeline.one_photo.calibration.card_detect import CardDetection
from pipeline.one_photo.calibration.common import _frozen
from pipeline.one_photo.calibration.settings import NO_SCALE_WARNING, CalibrationSettings, ScaleSource


@dataclass(frozen=True, eq=False)
class ScaleCalibration:
    """The photo's physical scale and where it came from.

    ``px_per_mm``: pixels per millimetre on the scalp plane at the image centre (None
    without a scale). ``image_to_plane``: 3x3 homography image px -> plane mm (card frame),
    card only. ``marker_px``: the marker's mean side (card only). ``warnings``: one line each.
    """

    px_per_mm: float | None
    source: ScaleSource
    image_to_plane: NDArray[np.float64] | None = None
    marker_px: float | None = None
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.image_to_plane is not None:
            object.__setattr__(self, "image_to_plane", _frozen(self.image_to_plane))

    def plane_scale(self) -> PlaneScale | None:
        """The :class:`data.metrics.PlaneScale` of this scale (projective from a card,
        uniform from a manual value), or None without a scale."""
        if self.px_per_mm is None:
            return None
        if self.image_to_plane is None:
            return PlaneScale.uniform(self.px_per_mm)
        return PlaneScale.from_homography(self.image_to_plane, self.px_per_mm)


def scale_from_card(
    detection: CardDetection, image_size: tuple[int, int], settings: CalibrationSettings | None = None
) -> ScaleCalibration:
    """The photo's scale from a detected card; ``image_size`` is (width, height) px.

    ``px_per_mm = sqrt|det J|`` of the card-plane -> image homography at the image centre
    (pixel ((W - 1) / 2, (H - 1) / 2)), computed as ``1 / sqrt|det J|`` of its inverse
    there (``det J = det(G) / w**3`` for ``G = image_to_plane``). The card lies on the
    scalp, so this is the scalp's scale at the centre; ``image_to_plane`` gives it anywhere.
    If the image centre lies beyond the card plane's horizon (impossible for a photo of
    the scalp, but possible for a wrong detection) the scale at the marker is used instead,
    with a warning.
    """
    s = settings or CalibrationSettings()
    width, height = int(image_size[0]), int(image_size[1])
    g = detection.image_to_card
    warnings: list[str] = []
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0, 1.0])
    w_centre = float(g[2] @ centre)
    w_marker = float(g[2] @ np.r_[detection.corners_px.mean(axis=0), 1.0])
    det_g = float(np.linalg.det(g))
    if w_centre * w_marker > 0:
        ppm = 1.0 / math.sqrt(abs(det_g / w_centre**3))
    else:
        ppm = 1.0 / math.sqrt(abs(det_g / w_marker**3))
        warnings.append("the image centre is beyond the card plane's horizon: px/mm is taken at the card")
    side = detection.marker_side_px
    if side < s.min_marker_px:
        warnings.append(f"card marker is only {side:.0f} px across (< {s.min_marker_px:g}): scale unreliable")
    if detection.foreshortening > s.max_foreshortening:
        warnings.append(
            f"card strongly foreshortened ({detection.foreshortening:.2f}:1 > {s.max_foreshortening:g}:1): "
            "the card may not lie flat on the scalp; scale and colour are less reliable"
        )
    return ScaleCalibration(px_per_mm=ppm, source="card", image_to_plane=g, marker_px=side, warnings=tuple(warnings))


def _valid_px_per_mm(px_per_mm: float) -> float:
    if isinstance(px_per_mm, bool):
        raise ValueError(f"px_per_mm must be a positive finite number, got {px_per_mm!r}")
    try:
        value = float(px_per_mm)
    except (TypeError, ValueError):
        raise ValueError(f"px_per_mm must be a positive finite number, got {px_per_mm!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"px_per_mm must be a positive finite number, got {px_per_mm!r}")
    return value


def manual_scale(px_per_mm: float) -> ScaleCalibration:
    """A uniform scale given by the user (``--px-per-mm``); must be positive and finite."""
    return ScaleCalibration(px_per_mm=_valid_px_per_mm(px_per_mm), source="manual")


def no_scale() -> ScaleCalibration:
    """No scale: densities and sizes in mm are unavailable (said in ``warnings``)."""
    return ScaleCalibration(px_per_mm=None, source="none", warnings=(NO_SCALE_WARNING,))
