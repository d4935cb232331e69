"""Colour correction from the card's patches (:class:`ColourCorrection`): the models, the fit
to the reference colours with its guards and residuals, and the identity without a card.

Measurement details:

* Fit. The correction is fitted by nonlinear least squares on the CIELAB difference to
  the references (``scipy.optimize.least_squares``, started from a luminance-weighted
  linear least-squares fit): a plain least-squares fit in linear RGB lets the bright
  patches dominate and generalises worse (leave-one-out) to dark colours such as pigment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import least_squares

from data.colour import (
    RGB_TO_XYZ,
    delta_e00,
    lab_to_linear_rgb,
    linear_rgb_to_lab,
    lstar_from_luminance,
    luminance_lstar,
)
from pipeline.one_photo.calibration.common import _LUMA, _SRGB8_TO_LINEAR, _frozen
from pipeline.one_photo.calibration.settings import NO_COLOUR_WARNING, ColourModel, ColourSource

#: The fewest usable patches each model is fitted from (1, 3 and 6 coefficients per output
#: channel; with fewer patches leave-one-out showed the 3x3 generalising badly).
_MODEL_MIN_PATCHES: dict[str, int] = {"diagonal": 2, "matrix3x3": 8, "root_polynomial2": 10}
#: Simpler model to fall back to when a fit is impossible or degenerate.
_SIMPLER: dict[str, str | None] = {"root_polynomial2": "matrix3x3", "matrix3x3": "diagonal", "diagonal": None}


@dataclass(frozen=True, eq=False)
class ColourCorrection:
    """A colour correction in linear RGB: ``corrected = coefficients @ terms(rgb)``.

    ``model``: ``identity`` (no correction), ``diagonal`` (per-channel gains),
    ``matrix3x3`` or ``root_polynomial2`` (terms R, G, B, sqrt(RG), sqrt(GB), sqrt(RB):
    degree 1 in the input, so exposure-invariant). ``coefficients``: (3, k).
    ``patch_residual_de00``: (n,) dE00 of each card patch after correction (NaN for
    patches not used). ``residual_de00_*``: mean and max over the used patches, and the
    mean leave-one-out residual (each patch predicted by a fit without it); None for the
    identity. ``patches_used``: indices of the patches the fit used.
    """

    model: Literal["identity", "diagonal", "matrix3x3", "root_polynomial2"]
    coefficients: NDArray[np.float64]
    source: ColourSource
    residual_de00_mean: float | None = None
    residual_de00_max: float | None = None
    residual_de00_loo_mean: float | None = None
    patch_residual_de00: NDArray[np.float64] | None = None
    patches_used: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "coefficients", _frozen(self.coefficients))
        if self.patch_residual_de00 is not None:
            object.__setattr__(self, "patch_residual_de00", _frozen(self.patch_residual_de00))

    def apply(self, rgb: ArrayLike) -> NDArray[np.floating]:
        """Correct colours; returns linear RGB of the input's shape (not clipped).

        ``rgb``: uint8 (8-bit sRGB, decoded to linear here) or float (already linear RGB,
        white = 1), any shape with 3 components last. float32 stays float32 (big images),
        other inputs give float64. A whole 12 MP image costs ~0.1 s (3x3 matrix, from
        uint8) to ~0.3 s (root-polynomial) on one core.
        """
        arr = np.asarray(rgb)
        if arr.ndim == 0 or arr.shape[-1] != 3:
            raise ValueError(f"rgb: last axis must have 3 components, got shape {arr.shape}")
        if arr.dtype == np.uint8:
            lin: NDArray[np.floating] = _decode_srgb8(arr)
        elif arr.dtype.kind == "f":
            lin = arr if arr.dtype == np.float32 else arr.astype(np.float64, copy=False)
        else:
            raise TypeError(f"rgb must be uint8 (sRGB) or float (linear RGB), got {arr.dtype}")
        return _apply_model(self.model, self.coefficients, lin)

    def lstar(self, rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
        """HxW float32 L* of the corrected 8-bit sRGB photo ``rgb`` (HxWx3 uint8).

        For the linear models (identity, diagonal, 3x3 matrix) the corrected
        luminance is a weighted sum of the three decoded channels, so it is read
        through one 256-entry table per channel: no full-frame RGB float image
        (a 12 MP photo: 48 MB instead of 144 MB, about 3x faster). Corrected
        channels below zero (out of gamut, rare on skin) are not clipped before
        the sum, unlike ``linear_rgb_to_lab(max(apply(rgb), 0))``. The
        root-polynomial model takes the full path.
        """
        arr = np.asarray(rgb)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"rgb must be HxWx3 uint8, got {arr.dtype} {arr.shape}")
        if self.model == "root_polynomial2":
            return luminance_lstar(np.maximum(self.apply(arr), np.float32(0))).astype(np.float32, copy=False)
        weights = RGB_TO_XYZ[1] @ self.coefficients[:, :3] if self.model != "identity" else RGB_TO_XYZ[1]
        planes = cv2.split(np.ascontiguousarray(arr))
        y = cv2.LUT(planes[0], (weights[0] * _SRGB8_TO_LINEAR).astype(np.float32))
        for c in (1, 2):
            cv2.add(y, cv2.LUT(planes[c], (weights[c] * _SRGB8_TO_LINEAR).astype(np.float32)), dst=y)
        return lstar_from_luminance(y)

    def apply_lab(self, linear_rgb: ArrayLike) -> NDArray[np.floating]:
        """Correct linear RGB (or uint8 sRGB) and return CIELAB (D65); negatives clipped to 0."""
        out = self.apply(linear_rgb)
        return linear_rgb_to_lab(np.maximum(out, out.dtype.type(0)))


def _terms(model: str, lin: NDArray[np.floating]) -> NDArray[np.floating]:
    """Model terms of linear RGB (..., 3) -> (..., k)."""
    if model != "root_polynomial2":
        return lin
    pos = np.maximum(lin, lin.dtype.type(0))
    r, g, b = pos[..., 0], pos[..., 1], pos[..., 2]
    return np.stack([lin[..., 0], lin[..., 1], lin[..., 2], np.sqrt(r * g), np.sqrt(g * b), np.sqrt(r * b)], axis=-1)


def _decode_srgb8(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """8-bit sRGB (..., 3) -> linear float32 through the exact 256-entry table."""
    flat = np.ascontiguousarray(rgb).reshape(-1, 1, 3)
    if flat.shape[0] == 0:
        return np.zeros(rgb.shape, np.float32)
    table = np.repeat(_SRGB8_TO_LINEAR[None, :, None], 3, axis=2)
    return cast(NDArray[np.float32], cv2.LUT(flat, table)).reshape(rgb.shape)  # a float32 table: float32 out


def _apply_model(model: str, coefficients: NDArray[np.float64], lin: NDArray[np.floating]) -> NDArray[np.floating]:
    """Apply a fitted model to linear RGB (..., 3), keeping float32 (big images: OpenCV)."""
    dtype = lin.dtype
    shape = lin.shape
    if model == "identity":
        return np.array(lin, dtype=dtype, copy=True)
    flat = np.ascontiguousarray(lin).reshape(-1, 1, 3)
    if dtype == np.float32 and flat.shape[0] > 0:
        out = cv2.transform(flat, coefficients[:, :3].astype(np.float32))
        if model == "root_polynomial2":
            r, g, b = cv2.split(cv2.max(flat, 0.0))  # type: ignore[call-overload]  # cv2 stubs: scalar src2
            cross = cv2.merge(
                [cv2.sqrt(cv2.multiply(r, g)), cv2.sqrt(cv2.multiply(g, b)), cv2.sqrt(cv2.multiply(r, b))]
            )
            out = cv2.add(out, cv2.transform(cross, coefficients[:, 3:].astype(np.float32)))
        return cast(NDArray[np.float32], out).reshape(shape)  # float32 in, float32 out
    flat2 = flat.reshape(-1, 3)
    out = flat2 @ coefficients[:, :3].T
    if model == "root_polynomial2":
        out = out + _terms(model, flat2)[:, 3:] @ coefficients[:, 3:].T
    return out.astype(dtype, copy=False).reshape(shape)


def _lab(lin: NDArray[np.floating]) -> NDArray[np.float64]:
    return cast(NDArray[np.float64], linear_rgb_to_lab(lin))  # every caller's values are float64: so is Lab


def _initial_fit(model: str, meas: NDArray[np.float64], ref: NDArray[np.float64]) -> NDArray[np.float64]:
    """Linear least squares in linear RGB, each patch's rows weighted by Y_ref**(-2/3)
    (an error dY moves L* by about dY / Y**(2/3)); the start of the Lab fit."""
    wts = 1.0 / np.maximum(ref @ _LUMA, 0.01) ** (2.0 / 3.0)
    if model == "diagonal":
        w2 = wts[:, None] ** 2
        den = np.sum(w2 * meas * meas, axis=0)
        gains = np.sum(w2 * meas * ref, axis=0) / np.where(den > 0, den, 1.0)
        return np.diag(np.where(den > 0, gains, 1.0))
    t = _terms(model, meas) * wts[:, None]
    coef, *_ = np.linalg.lstsq(t, ref * wts[:, None], rcond=None)
    return cast(NDArray[np.float64], coef.T)  # float64 terms and references: float64 coefficients


def _fit(model: str, meas: NDArray[np.float64], ref_lab: NDArray[np.float64], penalty: float) -> NDArray[np.float64]:
    """Coefficients (3, k) minimising the Lab difference to the references."""
    ref = cast(NDArray[np.float64], lab_to_linear_rgb(ref_lab))  # float64 in, float64 out
    start = _initial_fit(model, meas, ref)
    terms = _terms(model, meas)

    if model == "diagonal":

        def residual(p: NDArray[np.float64]) -> NDArray[np.float64]:
            return (_lab(meas * p) - ref_lab).ravel()

        x0 = np.diag(start).copy()
    else:
        k = start.shape[1]

        def residual(p: NDArray[np.float64]) -> NDArray[np.float64]:
            coef = p.reshape(3, k)
            r = (_lab(terms @ coef.T) - ref_lab).ravel()
            if model == "root_polynomial2" and penalty > 0:
                r = np.concatenate([r, penalty * coef[:, 3:].ravel()])
            return r

        x0 = start.ravel()
    n_res = residual(x0).size
    method = "lm" if n_res >= x0.size else "trf"
    sol = least_squares(residual, x0, method=method, x_scale="jac", max_nfev=200 * (x0.size + 1))
    p = sol.x if np.all(np.isfinite(sol.x)) else x0
    return np.diag(p) if model == "diagonal" else p.reshape(3, -1)


def _degenerate(model: str, coef: NDArray[np.float64], meas: NDArray[np.float64]) -> str | None:
    """Why a fitted correction cannot be trusted, or None."""
    if not np.all(np.isfinite(coef)):
        return "the fit did not converge"
    m3 = coef[:, :3]
    if model == "diagonal":
        if np.any(np.diag(m3) <= 0):
            return "a channel gain is not positive"
        return None
    sv = np.linalg.svd(m3, compute_uv=False)
    if sv[-1] <= 0 or sv[0] / sv[-1] > 1e3 or np.linalg.det(m3) <= 0:
        return "the colour matrix is singular or flips colours"
    grey = np.median(meas, axis=0)  # a mid colour of the card must stay positive
    if np.any(_apply_model(model, coef, grey[None, :]) <= 0):
        return "the correction turns a patch colour negative"
    return None


def _rank_ok(model: str, meas: NDArray[np.float64]) -> bool:
    """Whether the patches constrain every coefficient (each channel seen, for gains)."""
    if model == "diagonal":
        return bool(np.all(np.sum(meas * meas, axis=0) > 1e-12))
    t = _terms(model, meas)
    sv = np.linalg.svd(t, compute_uv=False)
    return bool(sv[0] > 0 and sv[-1] / sv[0] > 1e-6 and len(sv) == t.shape[1])


def fit_colour_correction(
    measured_linear: ArrayLike,
    reference_linear: ArrayLike,
    model: ColourModel = "matrix3x3",
    *,
    cross_term_penalty: float = 30.0,
) -> ColourCorrection:
    """Fit a colour correction from measured to reference patch colours (linear RGB, (n, 3)).

    Rows with NaN in ``measured_linear`` (unusable patches) are skipped. Models (linear RGB
    in, linear RGB out): ``diagonal`` - one gain per channel (a white balance);
    ``matrix3x3`` - a full matrix; ``root_polynomial2`` - a 3x6 matrix on R, G, B,
    sqrt(RG), sqrt(GB), sqrt(RB) (Finlayson et al. 2015; degree 1 so exposure-invariant),
    with its cross terms penalised by ``cross_term_penalty`` Lab units per unit coefficient.

    Objective: the sum of squared CIELAB differences between corrected patches and
    references (nonlinear least squares from a weighted linear start).

    Guards: a model needs at least 2 (diagonal), 6 (3x3) or 9 (root-polynomial) usable
    patches with linearly independent terms; a fit that is not finite, singular, flips
    colours or turns a mid patch negative is rejected. In each case the next simpler
    model is fitted instead, with a warning. Raises ``ValueError`` when even per-channel
    gains cannot be fitted (fewer than 2 usable patches, or a black card).

    Residuals: dE00 per patch; mean, max; and the leave-one-out mean (each used patch
    predicted by the same model fitted without it).
    """
    meas_all = np.asarray(measured_linear, dtype=np.float64)
    ref_all = np.asarray(reference_linear, dtype=np.float64)
    if meas_all.ndim != 2 or meas_all.shape[1] != 3 or ref_all.shape != meas_all.shape:
        raise ValueError(f"measured {meas_all.shape} and reference {ref_all.shape} must both be (n, 3)")
    if not np.all(np.isfinite(ref_all)):
        raise ValueError("reference colours must be finite")
    used = np.flatnonzero(np.all(np.isfinite(meas_all), axis=1))
    meas = meas_all[used]
    ref_lab = _lab(ref_all[used])
    warnings: list[str] = []

    current: str | None = model
    coef: NDArray[np.float64] | None = None
    while current is not None:
        problem: str | None = None
        if len(used) < _MODEL_MIN_PATCHES[current]:
            problem = f"only {len(used)} usable colour patches"
        elif not _rank_ok(current, meas):
            problem = "the usable colour patches do not span the colour space"
        else:
            coef = _fit(current, meas, ref_lab, cross_term_penalty)
            problem = _degenerate(current, coef, meas)
        if problem is None:
            break
        coef = None
        simpler = _SIMPLER[current]
        if simpler is None:
            raise ValueError(f"cannot fit a colour correction: {problem}")
        warnings.append(f"{problem}: fitted a {simpler} colour correction instead of {current}")
        current = simpler
    assert current is not None and coef is not None

    per_patch = delta_e00(_lab(_apply_model(current, coef, meas)), ref_lab)
    loo = np.full(len(used), np.nan)
    for j in range(len(used)):
        keep = np.delete(np.arange(len(used)), j)
        cj = _fit(current, meas[keep], ref_lab[keep], cross_term_penalty)
        loo[j] = delta_e00(_lab(_apply_model(current, cj, meas[j : j + 1])), ref_lab[j : j + 1])[0]
    residual = np.full(len(meas_all), np.nan)
    residual[used] = per_patch
    return ColourCorrection(
        model=current,  # type: ignore[arg-type]
        coefficients=coef,
        source="card",
        residual_de00_mean=float(np.mean(per_patch)),
        residual_de00_max=float(np.max(per_patch)),
        residual_de00_loo_mean=float(np.mean(loo)) if np.all(np.isfinite(loo)) else None,
        patch_residual_de00=residual,
        patches_used=tuple(int(i) for i in used),
        warnings=tuple(warnings),
    )


def no_colour_correction(reason: str = NO_COLOUR_WARNING) -> ColourCorrection:
    """The identity correction (``colour_source`` none), with ``reason`` as its warning."""
    return ColourCorrection(model="identity", coefficients=np.eye(3), source="none", warnings=(reason,))
