"""How the card is searched for, measured and trusted (:class:`CalibrationSettings`), the
sources a scale or a colour correction can come from, and the warnings of the fallbacks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from data.config import Settings

ColourModel = Literal["diagonal", "matrix3x3", "root_polynomial2"]
ScaleSource = Literal["card", "manual", "none"]
ColourSource = Literal["card", "none"]

NO_SCALE_WARNING = "no calibration card found and no --px-per-mm given: dot density and sizes in mm are not available"
NO_COLOUR_WARNING = "no card: colours are not corrected; pigment colour is not comparable across photos"


class CalibrationSettings(Settings):
    """How the card is searched for, measured and trusted. Defaults suit phone/DSLR photos."""

    #: The ArUco search runs on a copy downscaled so that its long side is at most this
    #: (12 MP photos stay fast); the corners are then refined at full resolution.
    detect_max_side: int = Field(2000, ge=256)
    #: When the default ArUco parameters find nothing, search again with parameters for
    #: small, blurred markers (whole-head photos; see ``card_detect._SMALL_MARKER_PARAMS``).
    small_marker_retry: bool = True
    #: When nothing is found on the downscaled copy, search again at full resolution
    #: (finds markers that become too small when downscaled; costs ~0.1 s on 12 MP).
    full_resolution_retry: bool = True
    #: Refine the marker's homography on the straight edges of the colour patches too
    #: (a 42 mm lever arm instead of 10 mm: px/mm far from the card is several times
    #: more accurate). Off: the homography comes from the four marker corners only.
    refine_with_patches: bool = True
    #: Warn when the marker's mean side is shorter than this (px): scale unreliable.
    min_marker_px: float = Field(60.0, gt=0)
    #: Warn when the card is foreshortened beyond this ratio of the largest to the smallest
    #: singular value of the card -> image Jacobian at the marker (1 = seen square on;
    #: 1.5 = tilted ~48 degrees).
    max_foreshortening: float = Field(1.5, gt=1.0)
    #: A "marker" smaller than this (px) is not trusted at all: treated as no card. ArUco
    #: finds marker-like patterns in hair and skin texture now and then, always tiny.
    reject_marker_px: float = Field(14.0, ge=0)
    #: A card whose patches still differ from the references by this mean dE00 after the
    #: colour fit is not the card (a false marker): treated as no card. Real cards under bad
    #: light stay below ~8 on the benchmark; false markers on skin land at 15-30.
    reject_residual_de00: float = Field(12.0, gt=0)
    #: With both a card and a manual px/mm, warn when they differ by more than this fraction.
    max_scale_disagreement: float = Field(0.02, gt=0)
    #: Sample the central part of each patch: this fraction of its side (away from edges,
    #: blur and JPEG chroma bleed).
    patch_inner_fraction: float = Field(0.6, gt=0, le=1)
    #: Trimmed mean of each patch: this fraction is dropped at each end, per channel.
    trim_fraction: float = Field(0.1, ge=0, lt=0.5)
    #: Normalise the patches by the light falling on the card's white paper (a fitted plane).
    flat_field: bool = True
    #: Colour correction model in linear RGB; see :func:`fit_colour_correction`. On 40
    #: generator close-ups (JPEG) the mean leave-one-out dE00 was 0.56 for the 3x3 matrix,
    #: 0.56 for the penalised root-polynomial and 6.4 unpenalised (18 coefficients for 12
    #: patches), 0.48 for per-channel gains - but the generator's camera *is* a per-channel
    #: gain; real sensors need at least the 3x3 matrix.
    colour_model: ColourModel = "matrix3x3"
    #: Root-polynomial only: cost of a unit cross-term coefficient, in Lab units, added to
    #: the fit (ridge towards the 3x3 matrix; 0 = unpenalised, overfits 12 patches).
    cross_term_penalty: float = Field(30.0, ge=0)
    #: Warn when the mean residual dE00 on the card patches is above this.
    max_residual_de00: float = Field(3.0, gt=0)
