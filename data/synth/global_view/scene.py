"""One global photo as a sequence of steps: the client's draws, the geometry, the reflectance of backdrop,
skin, dots and hair, shading, the card, the camera, and the truth (see :mod:`data.synth.global_view`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import cast

import cv2
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from data.card import CardSpec
from data.colour import blue_index, delta_e00, linear_rgb_to_lab
from data.flags import FlagSettings
from data.synth.camera import CameraParams, defocus, encode_srgb8, expose, illuminant_rgb, light_field
from data.synth.closeup import ClientScalp, Plane, aged_single_visit
from data.synth.dots import DotSet, solve_strength
from data.synth.fields import smooth_field
from data.synth.global_view.backdrop import _lab_rgb, paint_clothes, render_backdrop
from data.synth.global_view.card import add_card
from data.synth.global_view.dots import DotPlane, dot_density_image, make_dot_plane, place_head_dots
from data.synth.global_view.hair import render_head_hair
from data.synth.global_view.head import (
    _SKIN_PARTS,
    BG,
    CRANIUM,
    Head,
    Hits,
    Pose,
    _norm,
    _warp_at,
    cast_rays,
    draw_head,
    draw_pose,
    smooth_seams,
)
from data.synth.global_view.scalp import ScalpPattern, _region_scar, draw_scalp
from data.synth.global_view.skin import paint_skin, skin_pixels
from data.synth.hair import HAIR_LAB, Follicles, HairParams, draw_hair
from data.synth.scene import Scene, dot_flags_table, lstar_of
from data.synth.settings import SynthSettings
from data.synth.skin import SkinParams, draw_skin
from data.synth.visibility import seen_contrast
from data.synth.visibility import visible as dot_visible


@dataclass(frozen=True)
class _Client:
    """What is drawn first: camera, view, head and pose, skin, hair, scalp pattern and scar."""

    cam: CameraParams
    kind: str
    head: Head
    pose: Pose
    skin: SkinParams
    hp: HairParams
    scalp: ScalpPattern
    scar_fn: Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class _Light:
    """The key light: its direction in the camera (``c``) and head (``h``) frames, the half vector
    (head frame) and the ambient share."""

    c: np.ndarray
    h: np.ndarray
    half_h: np.ndarray
    ambient: float


@dataclass(frozen=True)
class _SeenDots:
    """The visit's dots the camera sees: image position (x, y), depth, flat pixel index, surface normal."""

    plane: DotPlane
    placed: DotSet
    coverage: float
    dots: DotSet
    contrast: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    flat: np.ndarray
    normal: np.ndarray


@dataclass(frozen=True)
class _DrawnDots:
    """The dots drawn into the reflectance: their box (y0, y1, x0, x1) and the bare skin there before,
    and per dot its strength, surrounding skin colour, scar and core colour."""

    dots: DotSet
    box: tuple[int, int, int, int]
    bare_patch: np.ndarray
    skin_rgb: np.ndarray
    in_scar: np.ndarray
    core_rgb: np.ndarray


@dataclass(frozen=True)
class _HairLayer:
    """Hair over its box (y0, y1, x0, x1): coverage, fibre brightness, shading and sheen; the hair mask."""

    box: tuple[int, int, int, int]
    cov: np.ndarray
    bright: np.ndarray
    lit: np.ndarray
    spec: np.ndarray
    rgb: np.ndarray
    mask: np.ndarray
    n_strands: int


def single_global(
    rng: np.random.Generator, cfg: SynthSettings, card: CardSpec, rules: FlagSettings, from_camera
) -> Scene:
    """One independent global photo: a new client's whole head, one view of ``global_view.views``."""
    size = (cfg.image.width, cfg.image.height)
    cl = _draw_client(rng, cfg, from_camera, size)
    ppm = cl.cam.px_per_mm
    warp, hits = _geometry(rng, cl.head, cl.pose, size, ppm)
    part_flat = hits.part.ravel()[hits.flat]
    lt = _draw_light(rng, cl.pose)
    # base reflectance: backdrop, clothes, skin, then the dots drawn into it
    albedo = render_backdrop(rng, size, ppm)
    paint_clothes(rng, albedo, hits, ppm)
    px = skin_pixels(cl.head, cl.scalp, hits, part_flat, size)
    oil, scar_img = paint_skin(rng, albedo, px, hits, cl.head, cl.skin, cl.hp, cl.scar_fn, ppm, size)
    seen = _visible_dots(rng, cfg, cl, warp, hits, size)
    drawn = _draw_dots(rng, cl, seen, hits, albedo, scar_img, size)
    # hair, shading, and the layers composited
    hair = _hair_layer(rng, cl, hits, warp, lt, size)
    shade, spec = _shading(rng, cl, hits, part_flat, lt, oil, size)
    clean, radiance, light_map = _composite(cl.cam, albedo, shade, spec, hair, size)
    hair_mask, n_strands = hair.mask, hair.n_strands
    del hair
    card_cover, card_truth = add_card(
        rng,
        cfg,
        card,
        cl.head,
        cl.pose,
        hits,
        warp,
        size,
        px.scalp_u,
        lt.h,
        lt.c,
        lt.ambient,
        clean,
        radiance,
        light_map,
    )
    # truth images, the photo, the dots' truth
    mask = _mask(px.region, hair_mask, card_cover, size)
    clean_l, skin_l = _truth_lstar(clean, albedo, mask, drawn, size)
    del clean
    photo = _photograph(rng, radiance, cl.cam)
    del radiance
    table = _dot_table(cfg, rules, seen, drawn, hair_mask, card_cover, ppm)
    h_img = _plane_to_image(cl.head, cl.pose, seen.plane, warp, size, ppm)
    params = _params(cl, seen, n_strands)
    return Scene(
        photo=photo,
        mask=mask,
        dots=table,
        clean_lstar=clean_l,
        skin_lstar=skin_l,
        plane_to_image=h_img,
        px_per_mm=ppm,
        view="global",
        params=params,
        card=card_truth,
    )


def _draw_client(
    rng: np.random.Generator, cfg: SynthSettings, from_camera: Callable[..., CameraParams], size: tuple[int, int]
) -> _Client:
    """The camera, the view and a new client: head and its pose, skin, hair, scalp pattern, scar."""
    w, h = size
    cam = from_camera(rng, cfg.camera, w)
    kind = str(rng.choice(list(cfg.global_view.views)))
    head = draw_head(rng, rng.uniform(*cfg.global_view.head_width_mm))
    pose = draw_pose(rng, kind, cam, size)
    skin = draw_skin(rng, cfg.skin)
    hp = draw_hair(rng, cfg.hair)
    scalp = draw_scalp(rng, hp)
    scar_fn = _region_scar(rng, skin, head)
    return _Client(cam=cam, kind=kind, head=head, pose=pose, skin=skin, hp=hp, scalp=scalp, scar_fn=scar_fn)


def _geometry(
    rng: np.random.Generator,
    head: Head,
    pose: Pose,
    size: tuple[int, int],
    ppm: float,
) -> tuple[tuple[np.ndarray, ...], Hits]:
    """Rays with a slightly irregular outline: the warp of the rays and what they hit."""
    w, h = size
    amp = 0.012 * head.width_mm * ppm
    cell = 0.45 * head.width_mm * ppm
    small = (max(h // 8, 4), max(w // 8, 4))
    warp = cast(
        tuple[np.ndarray, np.ndarray],  # range(2): two fields
        tuple(
            cv2.resize(np.float32(amp) * smooth_field(rng, small, cell / 8.0), (w, h), interpolation=cv2.INTER_LINEAR)
            for _ in range(2)
        ),
    )
    hits = cast_rays(head, pose, size, warp)
    hits = replace(hits, normal=smooth_seams(hits, size, 0.06 * head.width_mm * ppm))
    return warp, hits


def _draw_light(rng: np.random.Generator, pose: Pose) -> _Light:
    """The key light, near the camera (camera frame: x right, y down, z forward)."""
    phi = rng.uniform(-150, -30) if rng.random() < 0.8 else rng.uniform(-180, 180)
    off = rng.uniform(0.1, 0.8)
    light_c = np.array([off * np.cos(np.deg2rad(phi)), off * np.sin(np.deg2rad(phi)), -1.0])
    light_c /= _norm(light_c)
    light_h = pose.rot.T @ light_c
    view_h = pose.rot.T @ np.array([0.0, 0.0, -1.0])
    half_h = (light_h + view_h) / _norm(light_h + view_h)
    ambient = rng.uniform(0.25, 0.5)
    return _Light(c=light_c, h=light_h, half_h=half_h, ambient=ambient)


def _visible_dots(
    rng: np.random.Generator, cfg: SynthSettings, cl: _Client, warp, hits: Hits, size: tuple[int, int]
) -> _SeenDots:
    """Dots placed on the dot plane, aged as after one visit, projected; those on visible cranium."""
    w, h = size
    head, pose, skin, hp, scalp, scar_fn = cl.head, cl.pose, cl.skin, cl.hp, cl.scalp, cl.scar_fn
    ppm = cl.cam.px_per_mm
    plane = make_dot_plane(head, pose)
    placed, coverage = place_head_dots(rng, cfg, scalp, plane, scar_fn)
    client = ClientScalp(
        plane=Plane(plane.size_mm, plane.size_mm, ppm),
        skin=skin,
        hair=hp,
        follicles=Follicles(np.zeros((0, 2)), np.zeros(0, bool)),
        dots=placed,
        texture_seed=0,
        palette=tuple(cfg.dots.palette),
    )
    visit = aged_single_visit(rng, cfg, client)
    dots = visit.dots
    u_d, _ = plane.to_sphere(dots.xy_mm) if len(dots) else (np.zeros((0, 3)), None)
    pd_, nd_ = head.surface(u_d) if len(dots) else (np.zeros((0, 3)), np.zeros((0, 3)))
    dx, dy, dz = pose.project(pd_) if len(dots) else (np.zeros(0), np.zeros(0), np.zeros(0))
    dx, dy = _warp_at(warp, dx, dy, size) if len(dots) else (dx, dy)
    ix, iy = np.rint(dx).astype(np.int64), np.rint(dy).astype(np.int64)
    inside = (dx >= 0) & (dx <= w - 1) & (dy >= 0) & (dy <= h - 1)
    fl = np.where(inside, iy * w + ix, 0)
    visible = inside & (dz <= hits.depth.ravel()[fl] + 0.6) & (hits.part.ravel()[fl] == CRANIUM)
    sel = np.flatnonzero(visible)
    dots = dots.take(sel)
    contrast = visit.contrast_dl[sel]
    dx, dy, dz, fl, nd_ = dx[sel], dy[sel], dz[sel], fl[sel], nd_[sel]
    return _SeenDots(
        plane=plane,
        placed=placed,
        coverage=coverage,
        dots=dots,
        contrast=contrast,
        x=dx,
        y=dy,
        z=dz,
        flat=fl,
        normal=nd_,
    )


def _draw_dots(
    rng: np.random.Generator,
    cl: _Client,
    seen: _SeenDots,
    hits: Hits,
    albedo: np.ndarray,
    scar_img: np.ndarray,
    size: tuple[int, int],
) -> _DrawnDots:
    """The dots' strength against the skin around them, and their optical density drawn into ``albedo``
    (in place, only in the dots' box)."""
    w, h = size
    pose, skin, ppm = cl.pose, cl.skin, cl.cam.px_per_mm
    dots, contrast = seen.dots, seen.contrast
    dx, dy, dz, fl, nd_ = seen.x, seen.y, seen.z, seen.flat, seen.normal
    n = len(dots)
    # everything about the dots happens in their box (12-megapixel frames stay cheap)
    sig = max(0.8, 0.6 * ppm)
    if n:
        pad = int(np.ceil(4 * sig + 3 * dots.radius_mm.max() * pose.focal_px / dz.min() + 4))
        bx0, by0 = max(int(dx.min()) - pad, 0), max(int(dy.min()) - pad, 0)
        bx1, by1 = min(int(dx.max()) + pad + 1, w), min(int(dy.max()) + pad + 1, h)
    else:
        bx0 = by0 = bx1 = by1 = 0
    bare_patch = albedo[by0:by1, bx0:bx1].copy()  # bare skin where dots will darken it
    # surrounding skin: bare reflectance averaged over about a millimetre
    local = (np.rint(dy).astype(np.int64) - by0) * (bx1 - bx0) + np.rint(dx).astype(np.int64) - bx0
    ring = cv2.GaussianBlur(bare_patch, (0, 0), sig).reshape(-1, 3) if n else np.zeros((0, 3), np.float32)
    skin_rgb = np.clip(ring[local].astype(np.float64), 1e-4, 1.0)
    in_scar = scar_img[fl] > 0.3
    uptake = np.where(in_scar, skin.scar_pigment_uptake * rng.uniform(0.6, 1.2, n), 1.0)
    strength = solve_strength(skin_rgb, dots.od_shape, dots.blue, contrast)
    dots = dots.with_(strength=strength)
    od = dots.od() * uptake[:, None]
    if n:
        # drawn at the local scale, the area foreshortened by the surface's slant
        cos_v = np.clip(np.abs(nd_ @ pose.to_camera_head), 0.15, 1.0)
        scale_px = pose.focal_px / dz * np.sqrt(cos_v)
        dens = dot_density_image(dots, od, dx - bx0, dy - by0, scale_px, (by1 - by0, bx1 - bx0))
        dens *= (hits.part[by0:by1, bx0:bx1] == CRANIUM)[..., None]
        np.exp(-dens, out=dens)
        albedo[by0:by1, bx0:bx1] *= dens
        del dens, ring
    # truth colour of each dot's core: the skin seen through its pigment, with the core
    # fill solve_strength assumes (computed, not measured: the dots are below a pixel here)
    core_rgb = skin_rgb * np.exp(-od * 0.92) if n else np.zeros((0, 3))
    return _DrawnDots(
        dots=dots,
        box=(by0, by1, bx0, bx1),
        bare_patch=bare_patch,
        skin_rgb=skin_rgb,
        in_scar=in_scar,
        core_rgb=core_rgb,
    )


def _hair_layer(
    rng: np.random.Generator, cl: _Client, hits: Hits, warp, lt: _Light, size: tuple[int, int]
) -> _HairLayer:
    """The head's hair accumulated per pixel, as coverage and mean brightness, shading and sheen."""
    w, h = size
    hp, scalp, head, pose = cl.hp, cl.scalp, cl.head, cl.pose
    light_h, half_h, ambient = lt.h, lt.half_h, lt.ambient
    light = {"dir": light_h, "half": half_h, "ambient": ambient}
    acc, n_strands = render_head_hair(rng, hp, scalp, head, pose, hits, warp, size, light)
    hy0, hy1, hx0, hx1 = acc.box
    hshape = (hy1 - hy0, hx1 - hx0)
    cov = (1.0 - np.exp(-acc.tau)).reshape(hshape).astype(np.float32)
    safe = np.maximum(acc.tau, 1e-12)
    hair_rgb = _lab_rgb(HAIR_LAB[hp.colour])
    hbright = (acc.bright / safe).reshape(hshape).astype(np.float32)
    hlit = (acc.lit / safe).reshape(hshape).astype(np.float32)
    hspec = (acc.spec / safe).reshape(hshape).astype(np.float32)
    hair_mask = np.zeros((h, w), bool)
    hair_mask[hy0:hy1, hx0:hx1] = cov >= 0.5
    return _HairLayer(
        box=(hy0, hy1, hx0, hx1),
        cov=cov,
        bright=hbright,
        lit=hlit,
        spec=hspec,
        rgb=hair_rgb,
        mask=hair_mask,
        n_strands=n_strands,
    )


def _shading(
    rng: np.random.Generator,
    cl: _Client,
    hits: Hits,
    part_flat: np.ndarray,
    lt: _Light,
    oil: np.ndarray,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Shading (HxW) and skin sheen (HxW) of the base layer: Lambert and sky light, Blinn-Phong sheen,
    a soft ambient occlusion from depth, and the head's soft shadow on the wall."""
    w, h = size
    head, pose, skin, ppm = cl.head, cl.pose, cl.skin, cl.cam.px_per_mm
    light_c, light_h, half_h, ambient = lt.c, lt.h, lt.half_h, lt.ambient
    shade: NDArray[np.float32] = np.ones(h * w, np.float32)
    spec: NDArray[np.float32] = np.zeros(h * w, np.float32)
    lam = np.clip(hits.normal @ light_h.astype(np.float32), 0, None)
    sky = 0.75 + 0.25 * (hits.normal @ (-pose.rot[1]).astype(np.float32))
    shade[hits.flat] = ambient * sky + (1 - ambient) * lam
    is_skin_flat = np.isin(part_flat, _SKIN_PARTS)
    nh = np.clip(hits.normal @ half_h.astype(np.float32), 0, 1)
    ks = np.float32(0.015 + 0.2 * skin.oiliness)
    gloss_skin = np.where(part_flat == CRANIUM, 1.0, 0.5).astype(np.float32)
    spec[hits.flat] = (
        is_skin_flat * ks * gloss_skin * nh ** np.float32(rng.uniform(15, 50)) * (0.6 + oil.ravel()[hits.flat])
    )
    shade = shade.reshape(h, w)
    spec = spec.reshape(h, w)
    # soft ambient occlusion from depth: what lies behind its surroundings is darker
    far = pose.centre_cam[2] + 3.0 * head.width_mm
    dep = np.where(np.isfinite(hits.depth), hits.depth, np.float32(far)).astype(np.float32)
    k = max(1, int(round(min(h, w) / 200)))
    dsm = cv2.resize(dep, (max(w // k, 1), max(h // k, 1)), interpolation=cv2.INTER_AREA)
    blur = cv2.GaussianBlur(dsm, (0, 0), max(1.0, 0.12 * head.width_mm * ppm / k))
    blur = cv2.resize(blur, (w, h), interpolation=cv2.INTER_LINEAR)
    ao = np.exp(-np.maximum(dep - blur, 0) / np.float32(0.25 * head.width_mm))
    ao = np.where(hits.part > 0, np.maximum(ao, 0.45), 1.0).astype(np.float32)
    shade *= ao
    # the head's soft shadow on the wall
    body = (hits.part > 0).astype(np.float32)
    kk = max(1, int(round(min(h, w) / 150)))
    bsm = cv2.resize(body, (max(w // kk, 1), max(h // kk, 1)), interpolation=cv2.INTER_AREA)
    sh_dist = rng.uniform(0.1, 0.6) * head.width_mm * ppm / kk
    # np.float32 of a nested list is a float32 array
    mshift = cast(NDArray[np.float32], np.float32([[1, 0, -light_c[0] * sh_dist], [0, 1, -light_c[1] * sh_dist]]))  # type: ignore[arg-type]  # numpy stubs: scalars only
    bsm = cv2.warpAffine(bsm, mshift, (bsm.shape[1], bsm.shape[0]))
    bsm = cv2.GaussianBlur(bsm, (0, 0), max(1.0, rng.uniform(0.1, 0.4) * head.width_mm * ppm / kk))
    wall_shadow = cv2.resize(bsm, (w, h), interpolation=cv2.INTER_LINEAR)
    shade = np.where(hits.part == BG, 1.0 - np.float32(rng.uniform(0.1, 0.45)) * wall_shadow, shade)
    return shade, spec


def _composite(
    cam: CameraParams, albedo: np.ndarray, shade: np.ndarray, spec: np.ndarray, hair: _HairLayer, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hair over the base layer (shading and sheen were accumulated per sample): the clean reflectance,
    the radiance, and the camera's light field (fall-off, vignetting), folded into all radiance."""
    w, h = size
    hy0, hy1, hx0, hx1 = hair.box
    cov, hbright, hlit, hspec, hair_rgb = hair.cov, hair.bright, hair.lit, hair.spec, hair.rgb
    light_map = light_field(cam, (h, w))
    shade *= light_map
    spec *= light_map
    hlit *= light_map[hy0:hy1, hx0:hx1]
    hspec *= light_map[hy0:hy1, hx0:hx1]
    clean = albedo.copy()
    radiance = albedo * shade[..., None]
    radiance += spec[..., None]
    bare_cov = (1.0 - cov)[..., None]
    sub = clean[hy0:hy1, hx0:hx1]
    sub *= bare_cov
    sub += (hbright * cov)[..., None] * hair_rgb
    sub = radiance[hy0:hy1, hx0:hx1]
    sub *= bare_cov
    sub += (hlit * cov)[..., None] * hair_rgb
    sub += (hspec * cov)[..., None]
    return clean, radiance, light_map


def _mask(region: np.ndarray, hair_mask: np.ndarray, card_cover: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Classes: 0 background (incl. face, ears, neck, clothes, card), 1 scalp of the region, 2 hair."""
    w, h = size
    mask: NDArray[np.uint8] = np.zeros(h * w, np.uint8)
    mask[region] = 1
    mask = mask.reshape(h, w)
    mask[hair_mask] = 2
    mask[card_cover >= 0.5] = 0
    return mask


def _truth_lstar(
    clean: np.ndarray, albedo: np.ndarray, mask: np.ndarray, drawn: _DrawnDots, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``clean_lstar`` and ``skin_lstar``: L* of the clean reflectance, and of the bare skin under hair,
    dots and card."""
    w, h = size
    by0, by1, bx0, bx1 = drawn.box
    bare_patch = drawn.bare_patch
    clean_l = lstar_of(clean)
    roi = mask > 0
    skin_l = clean_l.copy()
    # bare skin under hair, dots and card: the reflectance before them (dots changed only their box)
    roi_flat = np.flatnonzero(roi)
    ref = albedo.reshape(-1, 3)[roi_flat]
    ry, rx = np.divmod(roi_flat, w)
    in_box = (ry >= by0) & (ry < by1) & (rx >= bx0) & (rx < bx1)
    ref[in_box] = bare_patch[ry[in_box] - by0, rx[in_box] - bx0]
    skin_l.ravel()[roi_flat] = lstar_of(ref)
    return clean_l, skin_l


def _photograph(rng: np.random.Generator, radiance: np.ndarray, cam: CameraParams) -> np.ndarray:
    """Light and camera: illuminant, defocus, lens blur, exposure and noise, 8-bit sRGB."""
    ppm = cam.px_per_mm
    radiance *= illuminant_rgb(cam.illuminant_kelvin).astype(np.float32)
    radiance = defocus(radiance, cam, cam.dof_blur_mm * ppm)
    radiance = cv2.GaussianBlur(radiance, (0, 0), float(rng.uniform(0.35, 0.8)))
    radiance = expose(radiance, cam, rng)
    photo = encode_srgb8(radiance)
    return photo


def _dot_table(
    cfg: SynthSettings,
    rules: FlagSettings,
    seen: _SeenDots,
    drawn: _DrawnDots,
    hair_mask: np.ndarray,
    card_cover: np.ndarray,
    ppm: float,
) -> pd.DataFrame:
    """The truth table of the visible dots (those under the card left out), with flags and visibility."""
    dots, core_rgb, skin_rgb, in_scar = drawn.dots, drawn.core_rgb, drawn.skin_rgb, drawn.in_scar
    dx, dy, fl = seen.x, seen.y, seen.flat
    n = len(dots)
    lab = linear_rgb_to_lab(np.clip(core_rgb, 1e-6, 1)) if n else np.zeros((0, 3))
    skin_lab = linear_rgb_to_lab(skin_rgb) if n else np.zeros((0, 3))
    palette = np.array(list(cfg.dots.palette))
    table = pd.DataFrame(
        {
            "dot_id": dots.dot_id,
            "x": dx,
            "y": dy,
            "x_mm": dots.xy_mm[:, 0],
            "y_mm": dots.xy_mm[:, 1],
            "diameter_mm": dots.diameter_mm,
            "L": lab[:, 0],
            "a": lab[:, 1],
            "b": lab[:, 2],
            "skin_L": skin_lab[:, 0],
            "skin_a": skin_lab[:, 1],
            "skin_b": skin_lab[:, 2],
            "contrast_dL": skin_lab[:, 0] - lab[:, 0],
            "dE00": delta_e00(lab, skin_lab) if n else np.zeros(0),
            "blue_index": blue_index(lab, skin_lab) if n else np.zeros(0),
            "session": dots.session,
            "shade": palette[dots.shade] if n else np.array([], str),
            "merged_with": dots.merged_with,
            "hair_covered": hair_mask.ravel()[fl] if n else np.zeros(0, bool),
            "in_scar": in_scar,
            "fresh": dots.fresh.astype(bool),
            "elongation": dots.elongation,
            "angle_deg": np.rad2deg(dots.angle),
            "scab": dots.scab > 0,
        }
    )
    # a dot under the card is not in the photo: drop it from the truth
    under_card = card_cover.ravel()[fl] >= 0.5 if n else np.zeros(0, bool)
    table = dot_flags_table(table[~under_card].reset_index(drop=True), rules)
    # what the photo shows: a whole-head view renders a dot over a pixel or two (a 0.5-px-sigma footprint)
    table["hair_cover"] = table["hair_covered"].to_numpy(float)
    table["contrast_seen"] = seen_contrast(
        table["contrast_dL"].to_numpy(float), 0.5 * table["diameter_mm"].to_numpy(float) * ppm, 0.0, 0.5
    )
    # (the photo test of close-ups is not made on whole-head views: their dots span a pixel or two)
    table["contrast_own"], table["contrast_photo"], table["speck_dL"] = np.nan, np.nan, np.nan
    table["visible"] = dot_visible(
        table["hair_cover"].to_numpy(),
        table["contrast_seen"].to_numpy(),
        max_hair_cover=rules.visible_max_hair_cover,
        min_contrast_dl=rules.visible_min_contrast_dl,
    )
    return table


def _plane_to_image(
    head: Head,
    pose: Pose,
    plane: DotPlane,
    warp,
    size: tuple[int, int],
    ppm: float,
) -> np.ndarray:
    """Nominal similarity: dot plane mm -> image px, exact at the plane's centre direction."""
    c_p, _ = head.surface(plane.centre[None, :])
    cx_, cy_, _ = pose.project(c_p)
    cx_, cy_ = _warp_at(warp, cx_, cy_, size)
    half = plane.size_mm / 2.0
    h_img = np.array([[ppm, 0.0, cx_[0] - ppm * half], [0.0, ppm, cy_[0] - ppm * half], [0.0, 0.0, 1.0]])
    return h_img


def _params(cl: _Client, seen: _SeenDots, n_strands: int) -> dict:
    """The scene's parameters for its truth file."""
    kind, skin, hp, cam, head, pose, scalp = cl.kind, cl.skin, cl.hp, cl.cam, cl.head, cl.pose, cl.scalp
    coverage, placed, plane, n = seen.coverage, seen.placed, seen.plane, len(seen.dots)
    params = {
        "view_kind": kind,
        "skin": asdict(skin),
        "hair": asdict(hp),
        "camera": asdict(cam),
        "head": {
            "width_mm": head.width_mm,
            "length_mm": head.b_front + head.b_back,
            "cranium_height_mm": head.c_up,
            "camera_distance_mm": float(pose.centre_cam[2]),
            "focal_px": pose.focal_px,
        },
        "scalp": {
            "pattern": scalp.pattern,
            "strength": scalp.strength,
            "crown_spot": scalp.crown is not None,
            "patches": int(len(scalp.patches[1])),
        },
        "hair_strands": int(n_strands),
        "dots": {"coverage": coverage, "placed": int(len(placed)), "visible": int(n), "dot_plane_mm": plane.size_mm},
    }
    return params
