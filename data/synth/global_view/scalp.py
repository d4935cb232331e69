"""The scalp of a global scene: hairline, thinning pattern, hair flow and scars on the cranium's sphere.

Head-scale patterns live on the cranium's parametric sphere (``u = p / axes``), see
:mod:`data.synth.global_view`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.synth.global_view.head import Head, _norm
from data.synth.hair import HairParams
from data.synth.skin import SkinParams

# Natural hairline: elevation (deg) on the cranium's parametric sphere against |azimuth|
# (deg, 0 = front): forehead, temple corner, sideburn, above the ear, behind it, nape.
_AZ_KNOTS = np.array([0, 25, 45, 55, 68, 80, 88, 100, 112, 130, 155, 180], float)
_EL_KNOTS = np.array([34, 32, 22, 8, -16, -16, 6, 10, 4, -25, -45, -50], float)
# Male-pattern recession (relative) against |azimuth|: temples most, midline less.
_REC_AZ = np.array([0, 20, 35, 55, 75, 90, 180], float)


def _sphere_noise(rng: np.random.Generator, n_terms: int, freq: tuple[float, float]):
    """A smooth random function on the unit sphere: a sum of random plane waves in 3-D."""
    k = rng.normal(0, 1, (n_terms, 3))
    k *= (rng.uniform(*freq, n_terms) / _norm(k, axis=1))[:, None]
    ph = rng.uniform(0, 2 * np.pi, n_terms)
    return k, ph


def _eval_noise(u: np.ndarray, kp: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    k, ph = kp
    return np.sqrt(2.0 / len(ph)) * np.cos(u @ k.T + ph).sum(axis=1)


def _angles(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth (deg, 0 = front, signed: + towards x) and elevation (deg) of unit vectors."""
    az = np.degrees(np.arctan2(u[:, 0], u[:, 1]))
    el = np.degrees(np.arcsin(np.clip(u[:, 2], -1, 1)))
    return az, el


def _sph(az_deg: float, el_deg: float) -> np.ndarray:
    az, el = np.deg2rad(az_deg), np.deg2rad(el_deg)
    return np.array([np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)])


@dataclass(frozen=True)
class ScalpPattern:
    """Hairline, thinning pattern and hair flow of one client's scalp (sphere coordinates)."""

    pattern: str
    strength: float
    hairline: np.ndarray  # (2, K) natural hairline elevation knots, side x<0 / x>=0
    jitter: np.ndarray  # (721,) hairline irregularity (deg) against azimuth -180..180
    recession: np.ndarray  # (2, len(_REC_AZ)) receded degrees, per side
    soft_deg: float
    noise: tuple[np.ndarray, np.ndarray]
    crown: tuple[np.ndarray, float, float] | None  # centre, radius (rad), strength
    patches: tuple[np.ndarray, np.ndarray]  # centres (P, 3), radii (P,)
    diffuse: float
    whorl: np.ndarray
    spiral: float
    style: np.ndarray
    style_weight: float

    def natural_hairline(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(azimuth, elevation, natural hairline elevation) in degrees."""
        az, el = _angles(u)
        a = np.abs(az)
        line = np.where(az < 0, np.interp(a, _AZ_KNOTS, self.hairline[0]), np.interp(a, _AZ_KNOTS, self.hairline[1]))
        line += np.interp(az, np.linspace(-180, 180, len(self.jitter)), self.jitter)
        return az, el, line

    def in_region(self, u: np.ndarray) -> np.ndarray:
        """Whether parametric directions lie in the (natural) hair-bearing region."""
        _, el, line = self.natural_hairline(u)
        return el >= line

    def density(self, u: np.ndarray) -> np.ndarray:
        """Relative hair density (0-1) at parametric directions ``u`` (N, 3)."""
        az, el, line = self.natural_hairline(u)
        a = np.abs(az)
        rec = np.where(az < 0, np.interp(a, _REC_AZ, self.recession[0]), np.interp(a, _REC_AZ, self.recession[1]))
        z = np.clip((el - line - rec) / self.soft_deg, -30, 30)
        dens = 1.0 / (1.0 + np.exp(-z))
        noise = _eval_noise(u, self.noise)
        s = self.strength
        if self.pattern == "diffuse":
            top = np.clip((el - 12.0) / 30.0, 0, 1)
            dens = dens * np.clip(1.0 - self.diffuse * s * top + 0.12 * noise, 0, 1)
        elif self.pattern in ("crown", "receding"):
            dens = dens * np.clip(1.0 + 0.06 * noise, 0, 1)
        if self.crown is not None:
            centre, rad, cs = self.crown
            d = np.arccos(np.clip(u @ centre, -1, 1)) / rad
            dens = dens * np.clip(1.0 - cs * np.clip(1.3 - d + 0.1 * noise, 0, 1), 0, 1)
        cen, radii = self.patches
        for c, r in zip(cen, radii):
            d = np.arccos(np.clip(u @ c, -1, 1)) / r
            dens = dens * (1.0 - s / (1.0 + np.exp(np.clip((d - 1.0 + 0.08 * noise) / 0.08, -30, 30))))
        return np.clip(dens, 0.0, 1.0)

    def flow(self, u: np.ndarray, n: np.ndarray, head: Head, long_weight: np.ndarray) -> np.ndarray:
        """Unit tangent (head frame) along which hair leaves the skin at ``u``.

        Away from the whorl along the sphere, with a spiral near the whorl; long hair
        is also combed (``style``) and pulled down by gravity.
        """
        v = u - self.whorl[None, :]
        t = v - (v * u).sum(1, keepdims=True) * u
        t = t * head.axes_of(u)  # sphere tangent -> ellipsoid tangent
        t -= (t * n).sum(1, keepdims=True) * n
        t /= np.maximum(_norm(t, axis=1, keepdims=True), 1e-9)
        d = np.arccos(np.clip(u @ self.whorl, -1, 1))
        ang = self.spiral * np.exp(-d / 0.3)
        b = np.cross(n, t)
        t = np.cos(ang)[:, None] * t + np.sin(ang)[:, None] * b
        down = np.array([0.0, 0.0, -1.0])
        extra = (self.style_weight * long_weight)[:, None] * self.style[None, :] + (0.8 * long_weight)[:, None] * down[
            None, :
        ]
        t = t + extra
        t -= (t * n).sum(1, keepdims=True) * n
        return t / np.maximum(_norm(t, axis=1, keepdims=True), 1e-9)


def draw_scalp(rng: np.random.Generator, hair: HairParams) -> ScalpPattern:
    s = hair.thinning_strength
    knots = np.stack([_EL_KNOTS + rng.normal(0, 2.5, len(_EL_KNOTS)) for _ in range(2)])
    knots += rng.normal(0, 3.0)
    harm = np.arange(1, 25)
    amp = rng.normal(0, 1, len(harm)) * 2.2 / harm**0.7
    ph = rng.uniform(0, 2 * np.pi, len(harm))
    azr = np.deg2rad(np.linspace(-180, 180, 721))
    jitter = (amp[None, :] * np.sin(azr[:, None] * harm[None, :] + ph[None, :])).sum(1)
    jitter *= 2.0 / max(float(np.abs(jitter).max()), 1e-6)
    rec = np.zeros((2, len(_REC_AZ)))
    crown = None
    patches = (np.zeros((0, 3)), np.zeros(0))
    pattern = hair.pattern
    whorl = _sph(180.0 + rng.normal(0, 10), rng.uniform(55, 72))
    if pattern == "receding":
        mid = rng.uniform(0.25, 0.8) if s < 0.8 else rng.uniform(0.7, 1.0)
        depth = s * rng.uniform(25, 48)
        prof = np.array([mid, 0.5 + 0.5 * mid, 1.0, 1.0, 0.35, 0.0, 0.0])
        rec = np.stack([depth * prof * rng.uniform(0.85, 1.15) for _ in range(2)])
        rec[:, -2:] = 0.0
        if rng.random() < 0.4:  # Norwood III-vertex and beyond: a crown spot too
            crown = (whorl, float(rng.uniform(0.2, 0.45)), float(s * rng.uniform(0.5, 1.0)))
    elif pattern == "crown":
        cen = whorl + rng.normal(0, 0.05, 3)
        crown = (cen / _norm(cen), float(rng.uniform(0.28, 0.6)), float(s))
    elif pattern == "patches":
        k = int(rng.integers(1, 5))
        cen = np.stack([_sph(rng.uniform(-180, 180), rng.uniform(-10, 75)) for _ in range(k)])
        patches = (cen, rng.uniform(0.10, 0.32, k))
    style = _sph(rng.choice([180.0, 90.0, -90.0, 0.0]), -20.0)
    return ScalpPattern(
        pattern=pattern,
        strength=s,
        hairline=knots,
        jitter=jitter,
        recession=rec,
        soft_deg=float(rng.uniform(1.5, 3.5)),
        noise=_sphere_noise(rng, 16, (2.0, 7.0)),
        crown=crown,
        patches=patches,
        diffuse=float(rng.uniform(0.6, 0.95)),
        whorl=whorl,
        spiral=float(rng.choice([-1, 1]) * rng.uniform(0.4, 1.2)),
        style=style,
        style_weight=float(rng.uniform(0.0, 0.8)),
    )


def _region_scar(rng: np.random.Generator, skin: SkinParams, head: Head):
    """A scar on the cranium as a soft band around a random great circle (or none)."""
    if not skin.scar:
        return lambda u: np.zeros(len(u))
    if rng.random() < 0.5:  # donor-strip scar across the back of the head
        nrm = _sph(rng.normal(180, 10), rng.uniform(65, 85))
        nrm = np.array([0.0, 0.0, 1.0]) * np.cos(0.3) + nrm * 0.3
        off = rng.uniform(-0.35, -0.1)
    else:
        nrm = rng.normal(0, 1, 3)
        off = rng.uniform(-0.4, 0.4)
    nrm = nrm / _norm(nrm)
    half = skin.scar_width_mm / 2.0 / head.radius_mm
    span_c = rng.normal(0, 1, 3)
    span_c /= _norm(span_c)
    span = rng.uniform(0.5, 1.4)

    def scar(u: np.ndarray) -> np.ndarray:
        d = np.abs(u @ nrm - off) / half
        along = np.arccos(np.clip(u @ span_c, -1, 1))
        return np.clip(1.3 - d, 0, 1) * np.clip((span - along) / 0.15, 0, 1)

    return scar
