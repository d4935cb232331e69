"""Reference colour quantities: sRGB <-> linear RGB <-> CIE XYZ <-> CIELAB (D65), CIEDE2000,
and the two SMP-specific dot colour measures ``contrast_dl`` and ``blue_index``.

These definitions are shared by the synthetic generator's ground truth and by the
pipeline, so that "truth" and "measurement" use one and the same arithmetic.

Conventions
-----------
* Every colour array has its three components on the **last axis**; any leading shape
  is allowed and all functions are vectorised over it (broadcasting where two arrays
  are combined).
* sRGB and linear RGB are floats with white = 1.0 (not 0..255). Integer arrays are
  refused so that 8-bit data cannot be misread silently; divide by 255 first.
* float32 input gives float32 output (big images); anything else is computed in float64.
* XYZ is relative with the white's Y = 1 (not 100). L* is in 0..100.
* The reference white is CIE D65 as defined by the sRGB standard, chromaticity
  (x, y) = (0.3127, 0.3290). The RGB -> XYZ matrix is derived in closed form from the
  sRGB primaries and that white (IEC 61966-2-1 / ITU-R BT.709), so that sRGB white maps
  to exactly L* = 100, a* = b* = 0. (scikit-image's ``rgb2lab`` uses a rounded matrix
  and a slightly different white; the two agree to about 0.05 in L*a*b*.)
"""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray
from skimage.color import deltaE_ciede2000

__all__ = [
    "WHITE_XY",
    "WHITE_XYZ",
    "RGB_TO_XYZ",
    "XYZ_TO_RGB",
    "srgb_to_linear",
    "linear_to_srgb",
    "linear_rgb_to_xyz",
    "xyz_to_linear_rgb",
    "xyz_to_lab",
    "lab_to_xyz",
    "srgb_to_lab",
    "lab_to_srgb",
    "linear_rgb_to_lab",
    "lab_to_linear_rgb",
    "luminance_lstar",
    "lstar_from_luminance",
    "lstar_to_y",
    "delta_e00",
    "blue_index",
    "contrast_dl",
]

FloatArray = NDArray[np.floating]

#: sRGB primaries (x, y): red, green, blue (IEC 61966-2-1, same as ITU-R BT.709).
_PRIMARIES_XY = np.array([[0.64, 0.33], [0.30, 0.60], [0.15, 0.06]], dtype=np.float64)
#: D65 white point chromaticity (x, y) as used by sRGB.
WHITE_XY: tuple[float, float] = (0.3127, 0.3290)


def _xy_to_xyz(xy: NDArray[np.float64]) -> NDArray[np.float64]:
    """Chromaticity (x, y) -> XYZ with Y = 1."""
    x, y = xy[..., 0], xy[..., 1]
    return np.stack([x / y, np.ones_like(x), (1.0 - x - y) / y], axis=-1)


def _rgb_to_xyz_matrix() -> NDArray[np.float64]:
    # Columns are the primaries' XYZ, scaled so that R = G = B = 1 gives the white.
    prim = _xy_to_xyz(_PRIMARIES_XY).T  # 3x3, column j = primary j with Y = 1
    white = _xy_to_xyz(np.asarray(WHITE_XY, dtype=np.float64))
    scale = np.linalg.solve(prim, white)
    return prim * scale[None, :]


#: Linear sRGB -> XYZ (D65, white Y = 1). Row 1 holds the luminance weights.
RGB_TO_XYZ: NDArray[np.float64] = _rgb_to_xyz_matrix()
#: XYZ -> linear sRGB.
XYZ_TO_RGB: NDArray[np.float64] = cast(NDArray[np.float64], np.linalg.inv(RGB_TO_XYZ))  # float64 in, out
#: XYZ of the reference white (D65, Y = 1): about (0.95046, 1, 1.08906).
WHITE_XYZ: NDArray[np.float64] = RGB_TO_XYZ.sum(axis=1)

for _const in (RGB_TO_XYZ, XYZ_TO_RGB, WHITE_XYZ):
    _const.setflags(write=False)

# CIE 1976 constants in exact rational form (CIE 15:2004 note on continuity).
_EPS = 216.0 / 24389.0  # (6/29)^3: below this Y/Yn the L* curve is linear
_KAPPA = 24389.0 / 27.0  # (29/3)^3

# sRGB transfer function breakpoints (IEC 61966-2-1).
_SRGB_ENC_BREAK = 0.04045
_SRGB_LIN_BREAK = 0.0031308


def _as_float(x: ArrayLike) -> FloatArray:
    """Return ``x`` as a float array: float32 stays float32, everything else float64."""
    arr = np.asarray(x)
    if arr.dtype.kind in "iub":
        raise TypeError(
            f"colour arrays must be floating point with white = 1.0, got {arr.dtype}; divide 8-bit data by 255 first"
        )
    if arr.dtype == np.float32:
        return arr
    return arr.astype(np.float64, copy=False)


def _check_last_axis(arr: FloatArray, name: str) -> None:
    if arr.ndim == 0 or arr.shape[-1] != 3:
        raise ValueError(f"{name}: last axis must have 3 components, got shape {arr.shape}")


def _apply_matrix(arr: FloatArray, matrix: NDArray[np.float64]) -> FloatArray:
    """Multiply each colour (last axis) by a 3x3 matrix, keeping the input's float dtype."""
    return arr @ matrix.T.astype(arr.dtype)


# --------------------------------------------------------------------------- sRGB


def srgb_to_linear(srgb: ArrayLike) -> FloatArray:
    """sRGB-encoded values (white = 1.0) -> linear RGB, IEC 61966-2-1 piecewise curve.

    ``c <= 0.04045``: ``c / 12.92``; otherwise ``((c + 0.055) / 1.055) ** 2.4``.
    Negative values follow the linear segment; values above 1 follow the power law.
    Works on any shape (it is applied per component).
    """
    c = _as_float(srgb)
    high = ((np.maximum(c, _SRGB_ENC_BREAK) + 0.055) / 1.055) ** 2.4
    return np.where(c <= _SRGB_ENC_BREAK, c / 12.92, high).astype(c.dtype, copy=False)


def linear_to_srgb(linear: ArrayLike) -> FloatArray:
    """Linear RGB (white = 1.0) -> sRGB encoding, inverse of :func:`srgb_to_linear`.

    ``c <= 0.0031308``: ``12.92 c``; otherwise ``1.055 c ** (1/2.4) - 0.055``.
    No clipping: out-of-gamut values stay out of [0, 1].
    """
    c = _as_float(linear)
    high = 1.055 * np.maximum(c, _SRGB_LIN_BREAK) ** (1.0 / 2.4) - 0.055
    return np.where(c <= _SRGB_LIN_BREAK, 12.92 * c, high).astype(c.dtype, copy=False)


# --------------------------------------------------------------------------- XYZ


def linear_rgb_to_xyz(linear_rgb: ArrayLike) -> FloatArray:
    """Linear sRGB (white = 1.0) -> CIE XYZ relative to D65 (white Y = 1), via ``RGB_TO_XYZ``."""
    arr = _as_float(linear_rgb)
    _check_last_axis(arr, "linear_rgb")
    return _apply_matrix(arr, RGB_TO_XYZ)


def xyz_to_linear_rgb(xyz: ArrayLike) -> FloatArray:
    """CIE XYZ (D65, white Y = 1) -> linear sRGB, via ``XYZ_TO_RGB``; no gamut clipping."""
    arr = _as_float(xyz)
    _check_last_axis(arr, "xyz")
    return _apply_matrix(arr, XYZ_TO_RGB)


# --------------------------------------------------------------------------- CIELAB


def _lab_f(t: FloatArray) -> FloatArray:
    """CIE 1976 f(t): cube root above (6/29)^3, the linear segment (kappa t + 16)/116 below."""
    return np.where(t > _EPS, np.cbrt(t), (_KAPPA * t + 16.0) / 116.0).astype(t.dtype, copy=False)


def _lab_f_inv(f: FloatArray) -> FloatArray:
    """Inverse of :func:`_lab_f`."""
    f3 = f * f * f
    return np.where(f3 > _EPS, f3, (116.0 * f - 16.0) / _KAPPA).astype(f.dtype, copy=False)


def xyz_to_lab(xyz: ArrayLike) -> FloatArray:
    """CIE XYZ (white Y = 1) -> CIELAB 1976 relative to D65 ``WHITE_XYZ``.

    ``L* = 116 f(Y/Yn) - 16``, ``a* = 500 (f(X/Xn) - f(Y/Yn))``, ``b* = 200 (f(Y/Yn) - f(Z/Zn))``
    with ``f(t) = t^(1/3)`` for ``t > (6/29)^3`` and ``(kappa t + 16) / 116`` otherwise,
    ``kappa = 24389/27``.
    """
    arr = _as_float(xyz)
    _check_last_axis(arr, "xyz")
    f = _lab_f(arr / WHITE_XYZ.astype(arr.dtype))
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1).astype(arr.dtype, copy=False)


def lab_to_xyz(lab: ArrayLike) -> FloatArray:
    """CIELAB (D65) -> CIE XYZ (white Y = 1); exact inverse of :func:`xyz_to_lab`."""
    arr = _as_float(lab)
    _check_last_axis(arr, "lab")
    fy = (arr[..., 0] + 16.0) / 116.0
    f = np.stack([fy + arr[..., 1] / 500.0, fy, fy - arr[..., 2] / 200.0], axis=-1)
    return (_lab_f_inv(f.astype(arr.dtype, copy=False)) * WHITE_XYZ.astype(arr.dtype)).astype(arr.dtype, copy=False)


def linear_rgb_to_lab(linear_rgb: ArrayLike) -> FloatArray:
    """Linear sRGB (white = 1.0) -> CIELAB (D65)."""
    return xyz_to_lab(linear_rgb_to_xyz(linear_rgb))


def lab_to_linear_rgb(lab: ArrayLike) -> FloatArray:
    """CIELAB (D65) -> linear sRGB (white = 1.0), no gamut clipping."""
    return xyz_to_linear_rgb(lab_to_xyz(lab))


def srgb_to_lab(srgb: ArrayLike) -> FloatArray:
    """sRGB-encoded (white = 1.0) -> CIELAB (D65)."""
    return linear_rgb_to_lab(srgb_to_linear(srgb))


def lab_to_srgb(lab: ArrayLike) -> FloatArray:
    """CIELAB (D65) -> sRGB encoding (white = 1.0), no gamut clipping."""
    return linear_to_srgb(lab_to_linear_rgb(lab))


def lstar_to_y(lstar: ArrayLike) -> FloatArray:
    """L* (0..100) -> relative luminance Y (white = 1), inverse of the L* curve."""
    arr = _as_float(lstar)
    return _lab_f_inv((arr + 16.0) / 116.0)


def luminance_lstar(linear_rgb: ArrayLike) -> FloatArray:
    """L* of linear sRGB colours (white = 1.0): the fast path for whole images.

    ``Y = linear_rgb . RGB_TO_XYZ[1]`` (the luminance row of the sRGB matrix, about
    0.2126 R + 0.7152 G + 0.0722 B), then ``L* = 116 f(Y) - 16`` with the CIE 1976 ``f``.
    Equal to ``linear_rgb_to_lab(x)[..., 0]`` (to ~1e-5 L*) but computes only what L*
    needs, with the cube root done by ``cv2.pow``, so a 12-megapixel float32 image costs
    well under 0.1 s and two HxW buffers.

    Returns an array of the input's shape without the last axis (float32 for float32 input).
    """
    arr = _as_float(linear_rgb)
    _check_last_axis(arr, "linear_rgb")
    weights = RGB_TO_XYZ[1].astype(arr.dtype)
    flat = np.ascontiguousarray(arr).reshape(-1, 3)
    y = np.asarray(flat @ weights, dtype=arr.dtype)  # relative luminance Y, Yn = 1
    return lstar_from_luminance(y).reshape(arr.shape[:-1])


def lstar_from_luminance(y: ArrayLike) -> FloatArray:
    """CIE 1976 L* of relative luminance ``Y`` (white = 1.0), any shape; float32 stays float32."""
    y = _as_float(y)
    shape = y.shape
    y = np.ascontiguousarray(y).reshape(-1)
    if y.size == 0:
        return y.reshape(shape)
    low = y <= _EPS
    low_values = y[low] * (_KAPPA / 116.0) + (16.0 / 116.0)
    # cv2.pow (SIMD, multi-threaded) instead of np.cbrt, which is ~10x slower on float32;
    # it takes |y|, which only matters on the linear segment overwritten just below.
    fy = cast(FloatArray, cv2.pow(y.reshape(-1, 1), 1.0 / 3.0)).reshape(-1)  # keeps y's float dtype
    fy[low] = low_values
    fy *= 116.0
    fy -= 16.0
    return fy.reshape(shape)


# --------------------------------------------------------------------------- differences


def delta_e00(lab1: ArrayLike, lab2: ArrayLike) -> FloatArray:
    """CIEDE2000 colour difference (Sharma, Wu & Dalal 2005) with kL = kC = kH = 1.

    Thin wrapper over :func:`skimage.color.deltaE_ciede2000`; ``lab1`` and ``lab2`` are
    broadcast against each other. Returns an array of the broadcast shape without the
    last axis (float64).
    """
    a = np.asarray(_as_float(lab1), dtype=np.float64)
    b = np.asarray(_as_float(lab2), dtype=np.float64)
    _check_last_axis(a, "lab1")
    _check_last_axis(b, "lab2")
    a, b = np.broadcast_arrays(a, b)
    return np.asarray(deltaE_ciede2000(a, b, channel_axis=-1), dtype=np.float64)


def contrast_dl(dot_lab: ArrayLike, skin_lab: ArrayLike) -> FloatArray:
    """``contrast_dL`` = skin L* - dot L* (L* units; positive when the dot is darker)."""
    dot = _as_float(dot_lab)
    skin = _as_float(skin_lab)
    _check_last_axis(dot, "dot_lab")
    _check_last_axis(skin, "skin_lab")
    return skin[..., 0] - dot[..., 0]


def blue_index(dot_lab: ArrayLike, skin_lab: ArrayLike) -> FloatArray:
    """How much bluer a dot is than a neutral dark pigment on the same skin would be (b* units).

    Model: a neutral (spectrally flat) pigment seen through skin attenuates the skin's
    linear-RGB reflectance by one common factor ``t`` in every channel. So the colour a
    neutral pigment would give, at the dot's own lightness, is

    1. ``s = lab_to_linear_rgb(skin_lab)`` (equivalently its XYZ; both are linear in the
       reflectance, so a common factor commutes with the matrix),
    2. ``t = Y_dot / Y_skin`` where ``Y`` is relative luminance (``Y_dot`` from the dot's L*),
    3. ``lab_n = linear_rgb_to_lab(t * s)``, the *neutral expectation*; its L* equals the
       dot's L* by construction,

    and ``blue_index = b*_n - b*_dot``. Positive: the dot is bluer (lower b*) than a neutral
    pigment of the same darkness on that skin - the Tyndall "blue shift" of pigment placed
    too deep; ~0: neutral; negative: warmer/browner than neutral.

    Why this form: skin is yellow-red, so even a perfectly neutral black dot has a positive
    b* that depends on the skin tone and on the dot's darkness; comparing against the
    neutral expectation removes both. Both colours must be measured after the card's colour
    correction (same white); an illuminant change that the card corrects (per-channel gains
    on linear RGB, divided out by the correction) then cannot move the index.

    ``dot_lab`` and ``skin_lab`` broadcast against each other; the result has the broadcast
    shape without the last axis. Skin with Y <= 0 gives NaN.
    """
    dot = _as_float(dot_lab)
    skin = _as_float(skin_lab)
    _check_last_axis(dot, "dot_lab")
    _check_last_axis(skin, "skin_lab")
    dtype = np.result_type(dot.dtype, skin.dtype)
    dot = dot.astype(dtype, copy=False)
    skin = skin.astype(dtype, copy=False)
    skin_xyz = lab_to_xyz(skin)
    y_skin = skin_xyz[..., 1]
    y_dot = lstar_to_y(dot[..., 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(y_skin > 0, y_dot / np.where(y_skin > 0, y_skin, 1), np.nan)
    lab_n = xyz_to_lab(skin_xyz * t[..., None].astype(dtype, copy=False))
    return lab_n[..., 2] - dot[..., 2]
