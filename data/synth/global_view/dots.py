"""SMP dots on the head of a global scene: the dot plane, the treated area, placement and drawing.

Dots are placed on a Lambert azimuthal equal-area map of the cranium's visible half (see
:mod:`data.synth.global_view`) and drawn at the image scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from data.synth.dots import DotSet, dot_sprites, place_dots, render_density
from data.synth.fields import smooth_field
from data.synth.global_view.head import Head, Pose, _norm
from data.synth.global_view.scalp import ScalpPattern
from data.synth.settings import SynthSettings


@dataclass(frozen=True)
class DotPlane:
    """Lambert azimuthal equal-area map of the cranium's visible half (plane mm)."""

    size_mm: float
    radius_mm: float
    centre: np.ndarray  # parametric unit vector at the plane's centre
    e1: np.ndarray
    e2: np.ndarray

    def to_sphere(self, xy_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = (xy_mm - self.size_mm / 2.0) / self.radius_mm
        rho = _norm(p, axis=1)
        valid = rho <= np.sqrt(2.0) * 1.02
        psi = 2.0 * np.arcsin(np.clip(rho / 2.0, 0, 1))
        dirv = p / np.maximum(rho, 1e-12)[:, None]
        tang = dirv[:, :1] * self.e1[None, :] + dirv[:, 1:] * self.e2[None, :]
        u = np.cos(psi)[:, None] * self.centre[None, :] + np.sin(psi)[:, None] * tang
        return u, valid


def make_dot_plane(head: Head, pose: Pose) -> DotPlane:
    ax = head.mean_axes
    c = pose.to_camera_head * ax
    c /= _norm(c)
    e1 = pose.rot[0] - (pose.rot[0] @ c) * c
    e1 /= _norm(e1)
    e2 = np.cross(c, e1)
    if e2 @ pose.rot[1] < 0:
        e2 = -e2
    r = head.radius_mm
    return DotPlane(size_mm=float(2 * 1.45 * r), radius_mm=float(r), centre=c, e1=e1, e2=e2)


def _treated_grid(
    rng: np.random.Generator, scalp: ScalpPattern, plane: DotPlane, coverage: float, scar_fn, n: int = 128
) -> tuple[np.ndarray, float]:
    """Coarse map of the plane where the artist worked, and the density threshold used.

    Candidates are cells of the hair-bearing region whose hair density is low (thin,
    receded or bald scalp) or that lie on a scar; ``coverage`` of them (cut by a soft
    random line, as a session that has not reached everywhere) are treated.
    """
    g = (np.arange(n) + 0.5) / n * plane.size_mm
    xx, yy = np.meshgrid(g, g)
    u, valid = plane.to_sphere(np.stack([xx.ravel(), yy.ravel()], 1))
    thr = float(rng.uniform(0.6, 0.85))
    cand = valid & scalp.in_region(u) & ((scalp.density(u) < thr) | (scar_fn(u) > 0.3))
    if coverage <= 0 or not cand.any():
        return np.zeros((n, n), bool), thr
    field = smooth_field(rng, (n, n), n / 2.5).ravel()
    ang = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(ang) * xx.ravel() / plane.size_mm + np.sin(ang) * yy.ravel() / plane.size_mm + 0.08 * field
    cut = np.quantile(ramp[cand], min(coverage, 1.0)) if coverage < 0.999 else np.inf
    return (cand & (ramp <= cut)).reshape(n, n), thr


def place_head_dots(
    rng: np.random.Generator, cfg: SynthSettings, scalp: ScalpPattern, plane: DotPlane, scar_fn
) -> tuple[DotSet, float]:
    """SMP dots of 1-2 sessions over the treated part of the dot plane (plane mm)."""
    palette = list(cfg.dots.palette)
    coverage = float(rng.uniform(*cfg.dots.coverage))
    treated, thr = _treated_grid(rng, scalp, plane, coverage, scar_fn)
    empty = place_dots(rng, cfg.dots, 10.0, 10.0, np.zeros((2, 2), bool), 1, palette)
    if not treated.any():
        return empty, coverage
    n = treated.shape[0]
    cell = plane.size_mm / n
    rows, cols = np.flatnonzero(treated.any(1)), np.flatnonzero(treated.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    sub = treated[r0:r1, c0:c1]
    wmm, hmm = (c1 - c0) * cell, (r1 - r0) * cell
    n_sessions = int(rng.integers(1, 3))
    spacing = float(rng.uniform(*cfg.dots.spacing_mm))
    diameter = float(rng.uniform(*cfg.dots.diameter_mm))
    dots = None
    for session in range(1, n_sessions + 1):
        first = 0 if dots is None else int(dots.dot_id.max()) + 1
        new = place_dots(
            rng,
            cfg.dots,
            wmm,
            hmm,
            sub,
            session,
            palette,
            first_id=first,
            spacing_mm=spacing * np.sqrt(n_sessions),
            diameter_mm=diameter,
        )
        dots = new if dots is None else DotSet.concat(dots, new)
    dots = cast(DotSet, dots)  # n_sessions >= 1: the loop drew at least one session
    dots = dots.with_(xy_mm=dots.xy_mm + np.array([c0 * cell, r0 * cell]))
    # feather the treated edge: the artist fades density out where hair takes over
    u, valid = plane.to_sphere(dots.xy_mm)
    _, el, line = scalp.natural_hairline(u)
    keep_p = np.clip((thr - scalp.density(u)) / 0.15 + 0.6, 0, 1)
    keep_p = np.maximum(keep_p, (scar_fn(u) > 0.3).astype(float))
    keep_p *= np.clip((el - line) / 1.5, 0, 1)  # inside the hairline, thinning out towards it
    keep = valid & (rng.random(len(dots)) < keep_p)
    return dots.take(np.flatnonzero(keep)), coverage


def dot_density_image(
    dots: DotSet, od: np.ndarray, x: np.ndarray, y: np.ndarray, scale_px: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """HxWx3 optical density of dots drawn at image positions (x, y) (OpenCV convention).

    ``od`` (N, 3) is each dot's optical density, ``scale_px`` its local pixels per mm.
    Dots of at least 1.5 px diameter are drawn as sprites (:func:`dot_sprites`,
    :func:`render_density`), with their density lowered so that a sprite (whose soft
    edge is at least half a pixel wide) absorbs what the dot's true area absorbs.
    Smaller dots are splatted bilinearly: each pixel loses the light the dot's area
    absorbs there, ``area * (1 - exp(-od))`` (pixel-averaged Beer-Lambert), which is
    far cheaper than a sprite per sub-pixel dot and exact in the mean.
    """
    h, w = shape
    out = np.zeros((h, w, 3), np.float32)
    n = len(dots)
    if n == 0:
        return out
    diam_px = dots.diameter_mm * scale_px
    big = diam_px >= 1.5
    if big.any():
        idx = np.flatnonzero(big)
        ppm = float(np.median(scale_px[idx]))
        draw = dots.take(idx).with_(
            xy_mm=np.stack([(x[idx] + 0.5) / ppm, (y[idx] + 0.5) / ppm], 1),
            radius_mm=dots.radius_mm[idx] * scale_px[idx] / ppm,
        )
        sprites = dot_sprites(draw, shape, ppm)
        prof_sum = np.zeros(len(idx))
        for sub, sp in sprites:
            prof_sum[sub] = np.where(sp.flat_index >= 0, sp.profile, 0).sum(1)
        area = np.pi * (0.5 * diam_px[idx]) ** 2
        ratio = np.clip(area / np.maximum(prof_sum, 1e-9), 0, 1)[:, None]
        od_draw = -np.log(np.clip(1.0 - ratio * (1.0 - np.exp(-od[idx])), 1e-4, 1.0))
        draw = draw.with_(od_shape=od_draw, strength=np.ones(len(idx)), blue=np.zeros(len(idx)))
        out += render_density(draw, sprites, shape)
    small = np.flatnonzero(~big)
    if len(small):
        absorbed = (np.pi * (0.5 * diam_px[small]) ** 2)[:, None] * (1.0 - np.exp(-od[small]))
        x0, y0 = np.floor(x[small]), np.floor(y[small])
        fx, fy = x[small] - x0, y[small] - y0
        acc = np.zeros((3, h * w))
        for ox, oy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            ix, iy = (x0 + ox).astype(np.int64), (y0 + oy).astype(np.int64)
            ok = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
            fl = (iy * w + ix)[ok]
            for c in range(3):
                acc[c] += np.bincount(fl, wt[ok] * absorbed[ok, c], h * w)
        out += -np.log(np.clip(1.0 - acc, 0.05, 1.0)).T.reshape(h, w, 3).astype(np.float32)
    return out
