"""The skin of a global scene: the hair-bearing region of the cranium, skin texture and tints, the face."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from data.synth.global_view.backdrop import _lab_rgb
from data.synth.global_view.head import _SKIN_PARTS, CRANIUM, EAR, FACE, NOSE, Head, Hits
from data.synth.global_view.scalp import ScalpPattern
from data.synth.hair import HAIR_LAB, HairParams
from data.synth.skin import SkinParams, render_skin


@dataclass(frozen=True)
class SkinPixels:
    """The skin pixels of the body and the cranium's hair-bearing region among them."""

    skin_idx: np.ndarray  # indices of the skin pixels into the hit arrays
    skin_flat: np.ndarray  # their flat pixel indices
    skin_part: np.ndarray  # their parts
    is_cr: np.ndarray  # of the skin pixels: on the cranium
    cr_idx: np.ndarray  # indices of the cranium pixels into the hit arrays
    u_cr: np.ndarray  # (K, 3) parametric directions of the cranium pixels
    el_cr: np.ndarray  # their elevation (deg)
    line_cr: np.ndarray  # the natural hairline's elevation at their azimuth (deg)
    region: np.ndarray  # (H*W,) bool: the natural hairline's region (mask classes 1 and 2)
    scalp_u: np.ndarray  # parametric directions of the region's pixels


def skin_pixels(
    head: Head, scalp: ScalpPattern, hits: Hits, part_flat: np.ndarray, size: tuple[int, int]
) -> SkinPixels:
    """Which pixels are skin, which of them are cranium, and the hair-bearing region."""
    w, h = size
    skin_idx = np.flatnonzero(np.isin(part_flat, _SKIN_PARTS))  # into the hit arrays
    skin_flat = hits.flat[skin_idx]
    skin_part = part_flat[skin_idx]
    is_cr = skin_part == CRANIUM
    cr_idx = skin_idx[is_cr]
    u_cr = head.to_param(hits.pos[cr_idx].astype(np.float64))
    _, el_cr, line_cr = scalp.natural_hairline(u_cr)
    in_reg = el_cr >= line_cr
    scalp_flat, scalp_u = hits.flat[cr_idx[in_reg]], u_cr[in_reg]
    region = np.zeros(h * w, bool)
    region[scalp_flat] = True
    return SkinPixels(
        skin_idx=skin_idx,
        skin_flat=skin_flat,
        skin_part=skin_part,
        is_cr=is_cr,
        cr_idx=cr_idx,
        u_cr=u_cr,
        el_cr=el_cr,
        line_cr=line_cr,
        region=region,
        scalp_u=scalp_u,
    )


def paint_skin(
    rng: np.random.Generator,
    albedo: np.ndarray,
    px: SkinPixels,
    hits: Hits,
    head: Head,
    skin: SkinParams,
    hp: HairParams,
    scar_fn: Callable[[np.ndarray], np.ndarray],
    ppm: float,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Skin texture, face and ear tints, scar tint and the face's features on the skin pixels of
    ``albedo`` (in place); returns the skin's oiliness (HxW) and the scar's strength (H*W)."""
    w, h = size
    flat_alb = albedo.reshape(-1, 3)
    skin_idx, skin_flat, skin_part, is_cr, cr_idx = px.skin_idx, px.skin_flat, px.skin_part, px.is_cr, px.cr_idx
    u_cr, el_cr, line_cr = px.u_cr, px.el_cr, px.line_cr
    oil: NDArray[np.float32] = np.zeros(h * w, np.float32)
    scar_img = np.zeros(h * w, np.float32)
    if len(skin_idx):
        iy, ix = np.divmod(skin_flat, w)
        y0, y1, x0, x1 = iy.min(), iy.max() + 1, ix.min(), ix.max() + 1
        # pores and follicle openings (0.04-0.09 mm) darken far less than a pixel here
        tex_params = replace(skin, scar=False, pore_density_per_cm2=0.0)
        layer = render_skin(rng, tex_params, (int(y1 - y0), int(x1 - x0)), ppm, np.zeros((0, 2)), np.zeros(0))
        local = (iy - y0) * (x1 - x0) + (ix - x0)
        vals = layer.albedo.reshape(-1, 3)[local]
        oil[skin_flat] = layer.oil.ravel()[local]
        del layer
        face_tint = np.array([1.0, 0.9, 0.86], np.float32) * np.float32(rng.uniform(0.85, 1.0))
        tint = np.empty((len(skin_idx), 3), np.float32)
        tint[:] = face_tint
        ear = skin_part == EAR
        if ear.any():  # pinker ears with a shadowed concha inside the helix rim
            ears = [e for e in head.parts if e.part == EAR]
            pe = hits.pos[skin_idx[ear]]
            r = np.full(len(pe), 9.0)
            for e in ears:
                c, ax = np.array(e.centre), np.array(e.axes)
                on = np.sign(pe[:, 0]) == np.sign(c[0])
                r[on] = np.hypot((pe[on, 1] - c[1] + 0.15 * ax[1]) / ax[1], (pe[on, 2] - c[2]) / ax[2])
            concha = np.clip(1.0 - r / 0.62, 0, 1) ** 0.7
            rim = np.exp(-(((r - 0.85) / 0.08) ** 2))
            tint[ear] *= np.array([1.0, 0.9, 0.9], np.float32) * (1.0 - 0.45 * concha - 0.12 * rim)[:, None].astype(
                np.float32
            )
        # face skin fades into scalp skin across the forehead
        blend = np.clip((el_cr - line_cr + 12.0) / 14.0, 0, 1).astype(np.float32)[:, None]
        tint[is_cr] = face_tint * (1 - blend) + blend
        sc = scar_fn(u_cr).astype(np.float32)
        scar_img[hits.flat[cr_idx]] = sc
        if sc.any():
            scar_tint = (
                np.array([1.10, 1.02, 1.04], np.float32)
                if rng.random() < 0.5
                else np.array([1.12, 0.93, 0.95], np.float32)
            )
            tint[is_cr] *= 1.0 + (scar_tint[None, :] - 1.0) * sc[:, None]
        vals *= tint
        _paint_face(rng, vals, hits.pos[skin_idx], skin_part, head.width_mm, _lab_rgb(HAIR_LAB[hp.colour]))
        flat_alb[skin_flat] = np.clip(vals, 0, 1)
        del vals, tint
    oil = oil.reshape(h, w)
    return oil, scar_img


def _paint_face(
    rng: np.random.Generator, alb: np.ndarray, pos: np.ndarray, part: np.ndarray, w: float, hair_rgb: np.ndarray
) -> None:
    """Eyebrows, eyes, nostrils, lips and maybe a beard shadow, on face-side pixels (in place)."""
    sel = np.flatnonzero((pos[:, 1] > 0.2 * w) & np.isin(part, (CRANIUM, FACE, NOSE)))
    if len(sel) == 0:
        return
    full, alb = alb, alb[sel]
    full_pos, full_part = pos, part
    pos, part = pos[sel], part[sel]
    x, z = pos[:, 0], pos[:, 2]
    front = np.ones(len(sel), bool)
    xa = np.abs(x)
    brow_z = 0.02 * w + 0.035 * w * (1 - ((xa - 0.19 * w) / (0.13 * w)) ** 2)
    brow = (
        front
        & (np.abs(xa - 0.19 * w) < 0.12 * w)
        & (np.abs(z - brow_z) < 0.014 * w * (1.3 - (xa - 0.07 * w) / (0.3 * w)))
    )
    alb[brow] = alb[brow] * 0.35 + hair_rgb * 0.65
    ex, ez = (xa - 0.165 * w) / (0.058 * w), (z + 0.07 * w) / (0.019 * w)
    socket = np.clip(1.0 - ((xa - 0.165 * w) / (0.1 * w)) ** 2 - ((z + 0.06 * w) / (0.055 * w)) ** 2, 0, 1)
    alb *= (1.0 - 0.22 * socket**1.5)[:, None]
    eye = front & (ex**2 + ez**2 < 1)
    alb[eye] = _lab_rgb([70, 0, 4])
    iris = eye & (((xa - 0.165 * w) ** 2 + (z + 0.07 * w) ** 2) < (0.019 * w) ** 2)
    alb[iris] = _lab_rgb([rng.uniform(20, 45), rng.uniform(-2, 8), rng.uniform(-15, 20)])
    lid = front & (np.abs(np.hypot(ex, (z + 0.064 * w) / (0.022 * w)) - 1.0) < 0.18) & (z > -0.07 * w)
    alb[lid] *= 0.35
    nostril = (
        front & (part == NOSE) & (((xa - 0.035 * w) / (0.022 * w)) ** 2 + ((z + 0.385 * w) / (0.012 * w)) ** 2 < 1)
    )
    alb[nostril] *= 0.3
    lip_c = -0.59 * w - 0.008 * w * np.cos(np.pi * np.clip(xa / (0.13 * w), 0, 1))
    lips = (
        front
        & (xa < 0.13 * w * np.sqrt(np.clip(1 - ((z - lip_c) / (0.035 * w)) ** 2, 0, 1)))
        & (np.abs(z - lip_c) < 0.035 * w)
    )
    alb[lips] = alb[lips] * np.array([0.95, 0.62, 0.62], np.float32)
    line = lips & (np.abs(z - lip_c) < 0.004 * w)
    alb[line] *= 0.45
    full[sel] = alb
    if rng.random() < 0.3:  # beard shadow: soft, over jaw and chin, fading towards the ears
        fz, fy = full_pos[:, 2], full_pos[:, 1]
        wgt = np.clip((-0.42 * w - fz) / (0.08 * w), 0, 1) * np.clip((fy + 0.02 * w) / (0.15 * w), 0, 1)
        wgt = (wgt * (full_part == FACE)).astype(np.float32)[:, None] * np.float32(rng.uniform(0.15, 0.35))
        full *= 1.0 - wgt
        full += wgt * 0.4 * hair_rgb
