"""The photo's exposure and white balance taken out before the network sees it.

Two photos of the same scalp taken one stop apart, or under a warmer light, differ
in linear light by one gain per channel (until a channel clips). A network that
sees the photo as it is must learn to ignore those gains, and measurably does not
quite (the model benchmark's invariance table). :func:`white_point_normalise`
removes them instead: in linear light, each channel is divided by its own
``percentile`` (the photo's bright skin, or the card's paper where the card fills
more of the frame) and multiplied by ``target``. A gain per channel moves that
percentile by the same gain, so it cancels exactly; what stays is what the gain
clipped. The same function runs on every training photo (before cropping and
augmentation) and on every photo a model assesses (before tiling), chosen by
the model's own ``input_norm`` setting, so that both see the same kind of input.

``skin_point`` reads the same percentile on the photo with its thin dark
structures closed first (a grey closing of each channel: the brightest value
within a small window, then the darkest of those). Strands narrower than the
window are lifted to the skin between them, so on a close-up where dense hair
covers most of the frame the percentile is still read on skin, not on hair (a
plain percentile reads the hair there: gains of 17-20 on the hard close-ups). A
closing commutes with any increasing function of a channel, so a gain per
channel still cancels exactly.

It works on the 8-bit sRGB photo through 256-entry tables: one histogram per
channel, one lookup per pixel.
"""

from __future__ import annotations

from typing import Literal, get_args

import cv2
import numpy as np

from data.colour import linear_to_srgb, srgb_to_linear

__all__ = [
    "INPUT_NORMS",
    "PERCENTILE",
    "InputNorm",
    "exposure_lut",
    "normalise_input",
    "skin_point_gains",
    "white_point_gains",
    "white_point_normalise",
]

InputNorm = Literal["none", "white_point", "skin_point"]
"""How a model wants its input photos: as they are, by :func:`white_point_normalise`, or by the same
with the percentile read on the photo with hair closed (:func:`skin_point_gains`)."""
INPUT_NORMS: tuple[str, ...] = get_args(InputNorm)

_LINEAR = srgb_to_linear(np.arange(256) / 255.0)
_EDGES = srgb_to_linear(np.clip((np.arange(257) - 0.5) / 255.0, 0.0, 1.0))
#: Each channel's ``percentile`` is mapped to this linear value (sRGB ~0.80: bright skin stays bright).
TARGET = 0.6
PERCENTILE = 90.0
MAX_GAIN = 32.0  # a type VI scalp one stop under: its blue channel needs ~20


#: ``skin_point``: the closing's window (px of the photo sampled every second pixel: ~10 photo px,
#: 0.6 mm at the 16 px/mm close-ups are segmented at, wider than any strand).
SKIN_WINDOW = 5


def _channel_gain(channel: np.ndarray, percentile: float, target: float) -> float:
    """Linear-light gain that brings ``percentile`` of an 8-bit channel to ``target``."""
    hist = np.bincount(np.asarray(channel).ravel(), minlength=256)
    cum = np.cumsum(hist)
    q = percentile / 100.0 * cum[-1]
    level = min(int(np.searchsorted(cum, q)), 255)
    if level == 0:  # a channel black at its percentile carries no white point
        return 1.0
    # within the level's bin, linearly: an 8-bit level spans [level - 0.5, level + 0.5] of the signal
    frac = (q - cum[level - 1]) / max(hist[level], 1)
    white = _EDGES[level] + frac * (_EDGES[level + 1] - _EDGES[level])
    return float(np.clip(target / white, 1.0 / MAX_GAIN, MAX_GAIN))


def white_point_gains(rgb: np.ndarray, percentile: float = PERCENTILE, target: float = TARGET) -> np.ndarray:
    """(3,) linear-light gain per channel that brings the channel's ``percentile`` to ``target``
    (limited to 1/``MAX_GAIN``..``MAX_GAIN``; 1 for a channel that is black all over)."""
    return np.array([_channel_gain(rgb[..., c], percentile, target) for c in range(3)])


def skin_point_gains(rgb: np.ndarray, percentile: float = PERCENTILE, target: float = TARGET) -> np.ndarray:
    """(3,) gains as :func:`white_point_gains`, the percentile read on each channel of every second
    pixel after a ``SKIN_WINDOW`` square grey closing (thin dark structures, hair, lifted to what
    surrounds them)."""
    sub = np.asarray(rgb)[::2, ::2]
    kernel = np.ones((SKIN_WINDOW, SKIN_WINDOW), np.uint8)
    return np.array(
        [
            _channel_gain(
                cv2.morphologyEx(
                    np.ascontiguousarray(sub[..., c]), cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE
                ),
                percentile,
                target,
            )
            for c in range(3)
        ]
    )


def white_point_normalise(
    rgb: np.ndarray, percentile: float = PERCENTILE, target: float = TARGET, *, hair_closed: bool = False
) -> np.ndarray:
    """HxWx3 uint8 sRGB: ``rgb`` (HxWx3 uint8 sRGB) with each channel's gain in linear light taken out
    (the gains of :func:`skin_point_gains` with ``hair_closed``, else of :func:`white_point_gains`)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}")
    gains = (skin_point_gains if hair_closed else white_point_gains)(rgb, percentile, target)
    out = np.empty_like(rgb)
    for c in range(3):
        lut = np.round(255.0 * linear_to_srgb(np.clip(_LINEAR * gains[c], 0.0, 1.0))).astype(np.uint8)
        np.take(lut, rgb[..., c], out=out[..., c])
    return out


def normalise_input(rgb: np.ndarray, how: str, percentile: float = PERCENTILE) -> np.ndarray:
    """The photo as a model with ``input_norm = how`` (and ``input_norm_percentile``) wants it (``rgb``
    itself for ``none``)."""
    if how == "none":
        return rgb
    if how in ("white_point", "skin_point"):
        return white_point_normalise(rgb, percentile, hair_closed=how == "skin_point")
    raise ValueError(f"unknown input normalisation {how!r}; expected one of {INPUT_NORMS}")


def exposure_lut(gains: np.ndarray) -> np.ndarray:
    """(256, 1, 3) uint8 table: each sRGB level to linear light, times the channel's gain, clipped,
    back to sRGB (for ``cv2.LUT`` on an RGB image)."""
    v = np.arange(256) / 255.0
    lin = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)[:, None] * np.asarray(gains)[None, :]
    lin = np.clip(lin, 0.0, 1.0)
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    return np.clip(np.round(srgb * 255.0), 0, 255).astype(np.uint8).reshape(256, 1, 3)
