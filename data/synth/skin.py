"""Scalp skin albedo: tone, mottling, redness, pores, follicle openings, scars.

Everything here is *reflectance* (linear RGB in [0, 1]) on the scalp plane,
before light and camera. Modulations are multiplicative in linear RGB, which
is how absorbers (melanin, haemoglobin, shadowed pits) combine.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data.colour import lab_to_linear_rgb
from data.synth.fields import poisson_points, smooth_field
from data.synth.settings import SkinSettings

# Direction in linear RGB along which haemoglobin (redness) changes reflectance:
# green and blue are absorbed, red much less.
_REDNESS_DIR = np.array([-0.05, -0.55, -0.45], np.float32)


@dataclass(frozen=True)
class SkinParams:
    """The drawn parameters of one client's scalp skin (JSON-ready via ``__dict__``)."""

    fitzpatrick: int
    tone_lab: tuple[float, float, float]
    mottling: float
    pore_density_per_cm2: float
    pore_diameter_mm: float
    pore_depth: float
    redness: float
    oiliness: float
    scar: bool
    scar_width_mm: float
    scar_pigment_uptake: float


def draw_skin(rng: np.random.Generator, s: SkinSettings) -> SkinParams:
    ftype = int(rng.integers(s.fitzpatrick[0], s.fitzpatrick[1] + 1))
    base = np.array(s.tone_lab[ftype], float) + rng.normal(0, 1, 3) * np.array(s.tone_jitter_lab)
    return SkinParams(
        fitzpatrick=ftype,
        tone_lab=tuple(float(v) for v in base),
        mottling=float(rng.uniform(*s.mottling)),
        pore_density_per_cm2=float(rng.uniform(*s.pore_density_per_cm2)),
        pore_diameter_mm=float(rng.uniform(*s.pore_diameter_mm)),
        pore_depth=float(rng.uniform(*s.pore_depth)),
        redness=float(rng.uniform(*s.redness)),
        oiliness=float(rng.uniform(*s.oiliness)),
        scar=bool(rng.random() < s.scar_probability),
        scar_width_mm=float(rng.uniform(*s.scar_width_mm)),
        scar_pigment_uptake=float(rng.uniform(*s.scar_pigment_uptake)),
    )


@dataclass(frozen=True)
class SkinLayer:
    albedo: np.ndarray
    """HxWx3 float32 linear RGB reflectance of bare skin (pores and scars included)."""
    scar: np.ndarray
    """HxW float32 in [0, 1]: how much of each pixel is scar tissue."""
    oil: np.ndarray
    """HxW float32 >= 0: specular strength (oily sheen), used by the camera."""


def scar_band(rng: np.random.Generator, shape: tuple[int, int], px_per_mm: float,
              width_mm: float) -> np.ndarray:
    """A curved band across the frame (e.g. a donor-strip or surgical scar)."""
    h, w = shape
    t = np.linspace(-0.2, 1.2, 24)
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    cx, cy = w * rng.uniform(0.3, 0.7), h * rng.uniform(0.3, 0.7)
    span = 1.4 * max(h, w)
    bend = rng.normal(0, 0.08) * span
    x = cx + (t - 0.5) * span * c - s * bend * 4 * (t - 0.5) ** 2
    y = cy + (t - 0.5) * span * s + c * bend * 4 * (t - 0.5) ** 2
    # draw at quarter resolution, then smooth and upsample: the edge is soft anyway
    q = 4
    small = np.zeros(((h + q - 1) // q, (w + q - 1) // q), np.float32)
    pts = np.round(np.stack([x, y], -1) / q * 16).astype(np.int32)
    thick = max(1, int(round(width_mm * px_per_mm / q)))
    cv2.polylines(small, [pts], False, 1.0, thick, cv2.LINE_AA, shift=4)
    small = cv2.GaussianBlur(small, (0, 0), max(0.5, 0.15 * thick))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def splat(shape: tuple[int, int], xy_px: np.ndarray, weights: np.ndarray, sigma_px: float,
          ) -> np.ndarray:
    """Sum of Gaussian blobs: impulses at ``xy_px`` with ``weights``, blurred once.

    Blurring one impulse image costs the same whatever the number of blobs,
    which is why pores and follicle openings are drawn this way.
    """
    h, w = shape
    img = np.zeros(h * w, np.float32)
    if len(xy_px):
        ix = np.clip(np.round(xy_px[:, 0]).astype(np.int64), 0, w - 1)
        iy = np.clip(np.round(xy_px[:, 1]).astype(np.int64), 0, h - 1)
        np.add.at(img, iy * w + ix, np.asarray(weights, np.float32))
    img = img.reshape(h, w)
    if sigma_px > 0.3:
        # a unit impulse blurred keeps its sum; rescale so the peak equals the weight
        cv2.GaussianBlur(img, (0, 0), sigma_px, dst=img)  # in place: no second frame
        img *= np.float32(2 * np.pi * sigma_px ** 2)
    return img


def _low_res_factor(px_per_mm: float) -> int:
    """Raster reduction for the smooth parts of the skin (features >= 1 mm).

    At the reduced raster 1 mm still spans at least 2.5 pixels, so bilinear
    upsampling leaves no visible steps.
    """
    return int(np.clip(px_per_mm // 2.5, 1, 8))


def render_skin(rng: np.random.Generator, p: SkinParams, shape: tuple[int, int],
                px_per_mm: float, follicles_px: np.ndarray, follicle_open: np.ndarray,
                extra_redness: float = 0.0) -> SkinLayer:
    """Render bare scalp skin at ``px_per_mm`` over ``shape`` (H, W).

    ``follicles_px`` are hair follicle positions (pixels); ``follicle_open`` (0-1)
    says how visible each opening is (empty, miniaturised follicles show most).

    Tone, mottling, redness, scars and oil vary over millimetres: they are
    combined on a raster reduced by ``_low_res_factor`` and upsampled once;
    only pores and follicle openings are drawn at full resolution.
    """
    h, w = shape
    q = _low_res_factor(px_per_mm)
    low = (-(-h // q), -(-w // q))
    base = lab_to_linear_rgb(np.array(p.tone_lab, float)).astype(np.float32)
    base = np.clip(base, 0.005, 1.0)

    # low-frequency mottling of brightness (melanin) and of redness (vessels)
    mot = smooth_field(rng, low, 4.0 * px_per_mm / q, octaves=3, persistence=0.55)
    red = smooth_field(rng, low, 6.0 * px_per_mm / q, octaves=2, persistence=0.5)
    red = np.clip(p.redness + extra_redness + 0.15 * red, 0.0, 1.5)

    scar_low = scar_band(rng, low, px_per_mm / q, p.scar_width_mm) if p.scar else np.zeros(low, np.float32)

    gain = 1.0 + p.mottling * mot * (1.0 - 0.8 * scar_low)
    # pores: many small pits; fewer on scars (smooth tissue)
    area_cm2 = h * w / px_per_mm ** 2 / 100.0
    step = max(1, 16 // q)
    pores = poisson_points(rng, (1.0 - 0.85 * scar_low[::step, ::step]), p.pore_density_per_cm2 * area_cm2)
    pores_px = pores * np.array([w, h])
    depth = p.pore_depth * rng.uniform(0.5, 1.2, len(pores_px))
    # pores and follicle openings are both pits about 0.1 mm across: one impulse
    # image, one blur (the blur costs the same whatever the number of pits)
    sigma = 0.5 * (0.5 * p.pore_diameter_mm + 0.05) * px_per_mm
    pit = splat(shape, np.concatenate([pores_px, np.asarray(follicles_px, float).reshape(-1, 2)]),
                np.concatenate([depth, 0.35 * np.asarray(follicle_open, float)]), sigma)
    # pit -> transmitted fraction, clip(1 - pit, 0.3, 1), in place
    np.subtract(np.float32(1.0), pit, out=pit)
    np.clip(pit, 0.3, 1.0, out=pit)

    albedo_low = np.empty((*low, 3), np.float32)
    scar_tint = np.array([1.10, 1.02, 1.04], np.float32) if rng.random() < 0.5 else np.array(
        [1.12, 0.93, 0.95], np.float32)  # lighter, or pinker
    for c in range(3):
        ch = base[c] * gain * (1.0 + _REDNESS_DIR[c] * 0.35 * red)
        ch *= 1.0 + (scar_tint[c] - 1.0) * scar_low
        albedo_low[..., c] = ch
    np.clip(albedo_low, 0.0, 1.0, out=albedo_low)
    albedo = _upsample(albedo_low, shape)
    albedo *= pit[..., None]

    oil_low = np.clip(smooth_field(rng, low, 8.0 * px_per_mm / q, octaves=2) - 0.3, 0, None)
    oil = _upsample((p.oiliness * oil_low).astype(np.float32), shape)
    scar = _upsample(scar_low, shape) if p.scar else np.zeros(shape, np.float32)
    return SkinLayer(albedo=albedo, scar=scar, oil=oil)


def _upsample(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    if img.shape[:2] == (h, w):
        return np.ascontiguousarray(img)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
