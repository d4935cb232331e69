"""Small helpers shared by the calibration modules: the 8-bit sRGB decoding table and the
luminance weights, read-only result arrays, homography helpers and the input check."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from data.colour import RGB_TO_XYZ, srgb_to_linear

#: 8-bit sRGB code -> linear light (exact IEC 61966-2-1 curve), float32.
_SRGB8_TO_LINEAR: NDArray[np.float32] = srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)
_SRGB8_TO_LINEAR.setflags(write=False)
#: Relative luminance weights of linear sRGB.
_LUMA: NDArray[np.float64] = np.asarray(RGB_TO_XYZ[1], dtype=np.float64)


def _frozen(array: ArrayLike, dtype: type = np.float64) -> NDArray[Any]:
    out: NDArray[Any] = np.array(array, dtype=dtype)
    out.setflags(write=False)
    return out


def _perimeter(quad: NDArray[np.float64]) -> float:
    return float(np.sum(np.linalg.norm(np.roll(quad, -1, axis=0) - quad, axis=1)))


def _check_rgb(rgb: ArrayLike) -> NDArray[np.uint8]:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"rgb must be an HxWx3 image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise TypeError(f"rgb must be 8-bit sRGB (uint8), got {arr.dtype}")
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise ValueError(f"rgb is too small ({arr.shape[1]}x{arr.shape[0]} px)")
    return arr
