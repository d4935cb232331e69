"""Calibration from the printed card SMP-CARD-1: physical scale and colour correction.

One call, :func:`calibrate`, turns an 8-bit sRGB photo into a :class:`Calibration`:

* **scale** - the card's ArUco marker gives a homography between the card plane (which
  lies on the scalp) and the image; ``px_per_mm`` is ``sqrt|det J|`` of the card-plane ->
  image map at the *image centre* (the definition the synthetic truth uses), and
  ``image_to_plane`` maps any pixel to scalp-plane millimetres (:class:`data.metrics.PlaneScale`).
* **colour** - the twelve patches, measured in linear light, fit a correction (3x3 matrix,
  per-channel gains or a root-polynomial) to the card's reference colours, with residual
  CIEDE2000 on the patches (fit and leave-one-out).
* **fallbacks** - no card: the scale comes from a manual ``--px-per-mm`` or is absent, and
  colours are not corrected; every fallback is said in ``warnings``, never a silent guess.

Every stage is a pure function on arrays that can be tested alone: :func:`find_card`,
:func:`scale_from_card` (:func:`manual_scale`, :func:`no_scale`), :func:`measure_patches`,
:func:`fit_colour_correction` (:func:`no_colour_correction`). Results are frozen dataclasses
with read-only arrays.

Conventions: pixel coordinates follow OpenCV (the centre of pixel (row i, column j) is at
x = j, y = i); card coordinates are the millimetres of :mod:`data.card`; linear RGB is
linear sRGB (D65) with white = 1.0; Lab is CIELAB D65 from :mod:`data.colour`.

The package, one topic a module: :mod:`.settings` (:class:`CalibrationSettings`),
:mod:`.card_detect` (:func:`find_card`), :mod:`.edges` (sub-pixel corners and the homography
refined on the card's edges), :mod:`.scale`, :mod:`.patches`, :mod:`.colour` and
:mod:`.calibrate` (the one call); :mod:`.common` holds the small helpers they share. The
measurement details (why they are not one library call) are in the docstrings of
:mod:`.edges`, :mod:`.patches` and :mod:`.colour`.
"""

from __future__ import annotations

from pipeline.one_photo.calibration.calibrate import Calibration, calibrate
from pipeline.one_photo.calibration.card_detect import CardDetection, find_card
from pipeline.one_photo.calibration.colour import ColourCorrection, fit_colour_correction, no_colour_correction
from pipeline.one_photo.calibration.patches import measure_patches
from pipeline.one_photo.calibration.scale import ScaleCalibration, manual_scale, no_scale, scale_from_card
from pipeline.one_photo.calibration.settings import (
    NO_COLOUR_WARNING,
    NO_SCALE_WARNING,
    CalibrationSettings,
    ColourModel,
    ColourSource,
    ScaleSource,
)

__all__ = [
    "ColourModel",
    "ScaleSource",
    "ColourSource",
    "CalibrationSettings",
    "CardDetection",
    "ScaleCalibration",
    "ColourCorrection",
    "Calibration",
    "find_card",
    "scale_from_card",
    "manual_scale",
    "no_scale",
    "measure_patches",
    "fit_colour_correction",
    "no_colour_correction",
    "calibrate",
    "NO_SCALE_WARNING",
    "NO_COLOUR_WARNING",
]
