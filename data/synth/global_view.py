"""Global scenes: a whole head in front of a background (1-6 px/mm), with exact truth.

The scene is a small 3-D model seen by a pinhole camera:

* **Body.** The head is a union of ellipsoids in a head frame (millimetres, origin at
  eyebrow level in the middle of the head; x = the subject's right, y = forward, z = up):
  a cranium made of a front and a back half-ellipsoid (the back of the skull is longer),
  a face, a nose, two ears, a neck, and shoulders and chest wearing clothes. Rays are cast
  analytically per pixel (a quadratic per ellipsoid, evaluated only inside the part's
  projected bounding box), giving a z-buffer, the part of every pixel, its 3-D position
  and normal. A smooth, small image warp of the rays makes the outline slightly
  irregular, as real skulls are.
* **Scalp.** Head-scale thinning patterns live on the cranium's parametric sphere
  (``u = p / axes``): a natural hairline (frontal, temples, sideburns, above the ears,
  nape) with per-client jitter, the pattern of :class:`data.synth.hair.HairParams`
  (``diffuse`` thinning on top, ``crown`` bald spot at the whorl, ``receding`` temples and
  front, alopecia ``patches``, ``none``) and a hair flow radiating from a crown whorl
  (forwards on top, down on the sides and back), with a spiral at the whorl, combing and
  gravity for long hair. :func:`data.synth.hair.thinning_map` describes a close-up frame;
  a head needs these patterns on a sphere, hence :class:`ScalpPattern`.
* **Hair.** Every visible hair is a 3-D polyline (stubble: one straight segment standing
  out of the skin; long hair: a path that follows the head at a small lift). At 1-6 px/mm
  a hair is far thinner than a pixel, so strands are not rasterised as lines: each is
  sampled about every 0.75 px and the covered area (width x length) is accumulated per
  pixel as an optical depth ``tau``; the hair coverage is ``1 - exp(-tau)`` (the
  uncovered fraction of a pixel crossed by many random thin fibres). Samples hidden
  behind the head (z-buffer) are dropped, so strands sticking out beyond the outline
  are drawn over the background. The cost is bounded: beyond ``MAX_STRANDS`` hairs,
  strands are merged while they stay under half a pixel wide; beyond a sample budget,
  strands are sampled every 2-3 px and then merged into locks, and the accumulated
  optical depth is spread over the area a sample stands for (so dense hair still covers
  the skin), keeping the per-pixel shading sharp for strand texture.
* **SMP dots** are placed with :func:`data.synth.dots.place_dots` on a plane of the head's
  size: a Lambert azimuthal equal-area map of the cranium's visible half, centred on the
  point facing the camera, so that dots keep their density per area of scalp and crowd
  towards the outline as on a real head. The treated area follows the thin and receded
  parts of the scalp. Dots are drawn with :func:`dot_sprites` / :func:`render_density` at
  the image scale; below a pixel the optical density is rescaled so that each dot
  absorbs the light its true area absorbs (sprites have an edge of at least half a pixel).
* **Camera.** Light, white balance, exposure, noise and 8-bit encoding are those of
  :mod:`data.synth.camera`; shading is Lambertian with a key light near the camera, a soft
  screen-space ambient occlusion (neck under the chin, ear roots), Blinn-Phong sheen on
  skin and Kajiya-Kay sheen on hair.

Truth: the mask (0 background incl. face, ears, neck, clothes, card; 1 scalp of the
hair-bearing region; 2 hair where the coverage is at least 0.5), every visible dot with
its physical diameter and colour, the card's marker corners, ``clean_lstar`` (L* of the
reflectance before light and camera) and ``skin_lstar`` (L* of the bare scalp under hair
and dots; elsewhere the reflectance's own L*). Pixel coordinates follow OpenCV (pixel
``[i, j]`` has its centre at ``(x, y) = (j, i)``). ``plane_to_image`` is the nominal
similarity (``px_per_mm`` at the head centre) from the dot plane to the image.

The hair-bearing region (classes 1 and 2) is the *natural* hairline's region: a receded
hairline leaves bare scalp (class 1) in front of the remaining hair, down to where the
original hairline was, which is also where an SMP artist rebuilds it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np
import pandas as pd

from data.card import CardSpec, marker_corners_mm, paper_rect_mm, render_card
from data.colour import blue_index, delta_e00, lab_to_linear_rgb, linear_rgb_to_lab, srgb_to_linear
from data.flags import FlagSettings
from data.synth.camera import CameraParams, defocus, encode_srgb8, expose, illuminant_rgb, light_field
from data.synth.closeup import ClientScalp, Plane, aged_single_visit
from data.synth.dots import DotSet, dot_sprites, place_dots, render_density, solve_strength
from data.synth.fields import smooth_field
from data.synth.hair import HAIR_LAB, Follicles, HairParams, _strand_tones, draw_hair
from data.synth.scene import Scene, dot_flags_table, lstar_of
from data.synth.settings import SynthSettings
from data.synth.skin import SkinParams, draw_skin, render_skin
from data.synth.visibility import seen_contrast
from data.synth.visibility import visible as dot_visible

MAX_STRANDS = 25000
"""Above this many visible hairs, strands are merged (while they stay thinner than half a pixel)."""
VIEW_KINDS = ("top", "crown", "front", "back", "left", "right")

# parts of the body model (material of a ray-cast pixel)
BG, CRANIUM, FACE, NOSE, EAR, NECK, CLOTHES = range(7)
_SKIN_PARTS = (CRANIUM, FACE, NOSE, EAR, NECK)
_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)

# Natural hairline: elevation (deg) on the cranium's parametric sphere against |azimuth|
# (deg, 0 = front): forehead, temple corner, sideburn, above the ear, behind it, nape.
_AZ_KNOTS = np.array([0, 25, 45, 55, 68, 80, 88, 100, 112, 130, 155, 180], float)
_EL_KNOTS = np.array([34, 32, 22, 8, -16, -16, 6, 10, 4, -25, -45, -50], float)
# Male-pattern recession (relative) against |azimuth|: temples most, midline less.
_REC_AZ = np.array([0, 20, 35, 55, 75, 90, 180], float)


# --------------------------------------------------------------------------- body model


@dataclass(frozen=True)
class Ellipsoid:
    centre: tuple[float, float, float]
    axes: tuple[float, float, float]
    part: int
    clips: tuple[tuple[int, int], ...] = ()
    """(axis, sign) pairs: keep only the part with ``sign * (p[axis] - centre[axis]) >= 0``."""


@dataclass(frozen=True)
class Head:
    """Sizes of one client's head and body (mm, head frame)."""

    width_mm: float
    a: float
    b_front: float
    b_back: float
    c_up: float
    c_low: float
    parts: tuple[Ellipsoid, ...]

    def axes_of(self, u: np.ndarray) -> np.ndarray:
        """(N, 3) cranium semi-axes for parametric directions ``u`` (by quadrant)."""
        b = np.where(u[:, 1] >= 0, self.b_front, self.b_back)
        c = np.where(u[:, 2] >= 0, self.c_up, self.c_low)
        return np.stack([np.full(len(u), self.a), b, c], axis=1)

    def surface(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cranium points and unit normals for parametric unit vectors ``u`` (N, 3)."""
        ax = self.axes_of(u)
        n = u / ax
        n /= _norm(n, axis=1, keepdims=True)
        return u * ax, n

    def to_param(self, p: np.ndarray) -> np.ndarray:
        """Parametric unit vector of the cranium point radially below ``p``."""
        q = p / self.axes_of(p)
        return q / np.maximum(_norm(q, axis=1, keepdims=True), 1e-9)

    @property
    def mean_axes(self) -> np.ndarray:
        return np.array([self.a, 0.5 * (self.b_front + self.b_back), 0.5 * (self.c_up + self.c_low)])

    @property
    def radius_mm(self) -> float:
        return float(self.mean_axes.mean())


def draw_head(rng: np.random.Generator, width_mm: float) -> Head:
    """Head and body proportions from the head width, with individual variation.

    The cranium is four ellipsoid pieces (front/back x upper/lower) sharing their
    cross-sections, so the surface is smooth: the back of the skull is longer than the
    front, and below the ears the skull narrows into the neck.
    """
    w = float(width_mm)
    j = lambda s: float(rng.normal(1.0, s))  # noqa: E731 - tiny local helper
    a = w / 2
    bf, bb = 0.60 * w * j(0.03), 0.66 * w * j(0.03)
    cu, cl = 0.68 * w * j(0.04), 0.55 * w * j(0.04)
    shoulders = 1.45 * w * j(0.06)
    ear_z = 0.17 * w * j(0.05)
    cranium = tuple(Ellipsoid((0, 0, 0), (a, b, c), CRANIUM, ((1, sy), (2, sz)))
                    for b, sy in ((bf, 1), (bb, -1)) for c, sz in ((cu, 1), (cl, -1)))
    parts = cranium + (
        Ellipsoid((0, 0.22 * w, -0.30 * w), (0.40 * w * j(0.03), 0.34 * w, 0.52 * w * j(0.03)), FACE),
        Ellipsoid((0, 0.585 * w, -0.25 * w), (0.075 * w, 0.11 * w * j(0.08), 0.16 * w), NOSE),
        Ellipsoid((0.455 * w, -0.04 * w, -0.12 * w), (0.06 * w, 0.105 * w, ear_z), EAR),
        Ellipsoid((-0.455 * w, -0.04 * w, -0.12 * w), (0.06 * w, 0.105 * w, ear_z), EAR),
        Ellipsoid((0, -0.10 * w, -1.5 * w), (0.36 * w * j(0.05), 0.35 * w, 2.0 * w), NECK),
        Ellipsoid((0, -0.12 * w, -1.80 * w), (shoulders, 0.62 * w, 0.52 * w), CLOTHES),
        Ellipsoid((0, -0.08 * w, -2.6 * w), (0.9 * shoulders, 0.7 * w, 1.0 * w), CLOTHES),
    )
    return Head(w, a, bf, bb, cu, cl, parts)


@dataclass(frozen=True)
class Pose:
    """How the camera sees the head: p_cam = rot @ p_head + centre_cam."""

    kind: str
    rot: np.ndarray          # 3x3, rows = camera x (right), y (down), z (forward) in head frame
    centre_cam: np.ndarray   # head origin in camera coordinates (mm)
    focal_px: float
    principal: tuple[float, float]

    def project(self, p_head: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image (x, y) in px (before the outline warp) and depth (mm) of head points."""
        pc = p_head @ self.rot.T + self.centre_cam
        z = pc[:, 2]
        inv = self.focal_px / np.maximum(z, 1e-3)
        return pc[:, 0] * inv + self.principal[0], pc[:, 1] * inv + self.principal[1], z

    @property
    def to_camera_head(self) -> np.ndarray:
        """Unit vector from the head origin towards the camera, head frame."""
        v = -self.rot.T @ self.centre_cam
        return v / _norm(v)


def _view_direction(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Direction from head to camera and the head-frame vector that points up in the image."""
    deg = np.deg2rad
    up = np.array([0.0, 0.0, 1.0])
    if kind == "top":
        e = deg(rng.uniform(62, 90))
        if rng.random() < 0.7:  # bent forward: frontal hairline at the bottom of the photo
            c = np.array([0.0, np.cos(e), np.sin(e)])
            up = np.array([0.0, -1.0, 0.0])
        else:
            c = np.array([0.0, -0.3 * np.cos(e), np.sin(e)])
            up = np.array([0.0, 1.0, 0.0])
    elif kind == "crown":
        e = deg(rng.uniform(40, 70))
        c = np.array([0.0, -np.cos(e), np.sin(e)])
    elif kind == "front":
        e = deg(rng.uniform(0, 25))
        c = np.array([0.0, np.cos(e), np.sin(e)])
    elif kind == "back":
        e = deg(rng.uniform(0, 30))
        c = np.array([0.0, -np.cos(e), np.sin(e)])
    elif kind in ("left", "right"):
        e = deg(rng.uniform(0, 20))
        s = -1.0 if kind == "left" else 1.0  # x is the subject's right
        c = np.array([s * np.cos(e), 0.0, np.sin(e)])
    else:  # pragma: no cover - settings restrict the names
        raise ValueError(f"unknown global view {kind!r}")
    az = deg(rng.normal(0, 7))
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ c, rz @ up


def draw_pose(rng: np.random.Generator, kind: str, cam: CameraParams, size: tuple[int, int],
              ) -> Pose:
    """Camera looking at the head centre from the view's direction.

    The camera's tilt (``tilt_deg`` towards ``tilt_azimuth_deg``) turns the optical axis
    away from the canonical view, its roll is ``rotation_deg``; the head centre lands
    near the middle of the frame (a little high for views with shoulders), at the
    distance where the scale at the head centre is exactly ``px_per_mm``. The distance
    is at least 450 mm, which keeps the perspective mild.
    """
    w, h = size
    c_dir, up = _view_direction(rng, kind)
    fwd = -c_dir / _norm(c_dir)
    t, ta = np.deg2rad(cam.tilt_deg), np.deg2rad(cam.tilt_azimuth_deg)

    def basis(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = np.cross(f, up)
        r /= _norm(r)
        return r, np.cross(f, r)

    r, d = basis(fwd)
    fwd = np.cos(t) * fwd + np.sin(t) * (np.cos(ta) * r + np.sin(ta) * d)
    r, d = basis(fwd / _norm(fwd))
    roll = np.deg2rad(cam.rotation_deg)
    r, d = np.cos(roll) * r + np.sin(roll) * d, -np.sin(roll) * r + np.cos(roll) * d
    rot = np.stack([r, d, np.cross(r, d)])
    focal = max(cam.focal_px, 450.0 * cam.px_per_mm)
    dist = focal / cam.px_per_mm
    low = kind in ("front", "back", "left", "right")
    hx = w * rng.uniform(0.42, 0.58)
    hy = h * (rng.uniform(0.36, 0.48) if low else rng.uniform(0.42, 0.58))
    cx, cy = w / 2.0 - 0.5, h / 2.0 - 0.5
    centre = np.array([(hx - cx) * dist / focal, (hy - cy) * dist / focal, dist])
    return Pose(kind, rot, centre, float(focal), (cx, cy))


@dataclass(frozen=True)
class Hits:
    """Per-pixel result of casting rays into the body model."""

    part: np.ndarray     # HxW uint8 part id (BG where nothing)
    depth: np.ndarray    # HxW float32 camera depth (mm), inf where nothing
    pos: np.ndarray      # (K, 3) float32 head-frame points of the hit pixels
    normal: np.ndarray   # (K, 3) float32 head-frame unit normals of the hit pixels
    flat: np.ndarray     # (K,) flat pixel index of the hit pixels


def _ray_grid(pose: Pose, size: tuple[int, int], warp: tuple[np.ndarray, np.ndarray]):
    w, h = size
    cx, cy = pose.principal
    xs = (np.arange(w, dtype=np.float32)[None, :] + warp[0] - np.float32(cx)) / np.float32(pose.focal_px)
    ys = (np.arange(h, dtype=np.float32)[:, None] + warp[1] - np.float32(cy)) / np.float32(pose.focal_px)
    return xs, ys


def cast_rays(head: Head, pose: Pose, size: tuple[int, int],
              warp: tuple[np.ndarray, np.ndarray]) -> Hits:
    """Nearest intersection of every pixel's ray with the body's ellipsoids.

    A ray is ``o + t d`` with ``d = (x', y', 1)`` in camera coordinates, so ``t`` is the
    camera depth. For an ellipsoid, ``|G (x', y', 1) t + o'|^2 = 1`` is a quadratic in
    ``t`` whose coefficients are a quadratic form and an affine function of ``(x', y')``;
    it is evaluated only inside the ellipsoid's projected bounding box.
    """
    w, h = size
    xs, ys = _ray_grid(pose, size, warp)
    margin = int(np.ceil(float(max(np.abs(warp[0]).max(), np.abs(warp[1]).max())))) + 2
    rt = pose.rot.T                     # columns: camera axes in head frame
    o_h = -rt @ pose.centre_cam         # camera centre in head frame
    depth = np.full((h, w), np.inf, np.float32)
    index = np.full((h, w), -1, np.int8)
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    for e, ell in enumerate(head.parts):
        m, s = np.array(ell.centre, float), np.array(ell.axes, float)
        lo, hi = -s.copy(), s.copy()
        for axis, side in ell.clips:  # a clipped piece's box is only its half
            if side > 0:
                lo[axis] = 0.0
            else:
                hi[axis] = 0.0
        u, v, z = pose.project(m + lo + (corners + 1.0) / 2.0 * (hi - lo))
        if np.any(z <= 1.0):
            x0, y0, x1, y1 = 0, 0, w, h
        else:
            x0 = max(int(np.floor(u.min())) - margin, 0)
            x1 = min(int(np.ceil(u.max())) + margin + 1, w)
            y0 = max(int(np.floor(v.min())) - margin, 0)
            y1 = min(int(np.ceil(v.max())) + margin + 1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        g = rt / s[:, None]              # local direction = g @ (x', y', 1)
        q = g.T @ g
        ol = (o_h - m) / s
        bv = ol @ g
        cc = float(ol @ ol - 1.0)
        xb, yb = xs[y0:y1, x0:x1], ys[y0:y1, x0:x1]
        f32 = np.float32
        a_ = (f32(q[0, 0]) * xb + f32(2 * q[0, 1]) * yb + f32(2 * q[0, 2])) * xb \
            + (f32(q[1, 1]) * yb + f32(2 * q[1, 2])) * yb + f32(q[2, 2])
        b_ = f32(bv[0]) * xb + f32(bv[1]) * yb + f32(bv[2])
        disc = b_ * b_ - a_ * f32(cc)
        hit = disc > 0
        if not hit.any():
            continue
        # Only the near root can be where a ray enters a piece (an ellipsoid is convex and
        # pieces of the cranium lie in disjoint quadrants), so the first valid near root
        # over all parts is the visible surface.
        t = (-b_ - np.sqrt(np.maximum(disc, 0))) / a_
        sub = depth[y0:y1, x0:x1]
        better = hit & (t > 0) & (t < sub)
        for axis, side in ell.clips:
            coord = f32(o_h[axis]) + t * (f32(rt[axis, 0]) * xb + f32(rt[axis, 1]) * yb + f32(rt[axis, 2]))
            better &= (coord >= m[axis]) if side > 0 else (coord < m[axis])
        np.copyto(sub, t, where=better)
        np.copyto(index[y0:y1, x0:x1], np.int8(e), where=better)
    part_of = np.array([p.part for p in head.parts] + [BG], np.uint8)
    part = part_of[index]
    flat = np.flatnonzero(index.ravel() >= 0)
    iy, ix = np.divmod(flat, w)
    xf, yf = xs_at(xs, iy, ix), xs_at(ys, iy, ix)
    t = depth.ravel()[flat]
    dirs = np.stack([xf, yf, np.ones_like(xf)], axis=1) @ rt.T.astype(np.float32)
    pos = (o_h.astype(np.float32)[None, :] + t[:, None] * dirs).astype(np.float32)
    idx = index.ravel()[flat].astype(np.int64)
    cen = np.array([p.centre for p in head.parts], np.float32)
    ax = np.array([p.axes for p in head.parts], np.float32)
    nrm = (pos - cen[idx]) / (ax[idx] ** 2)
    nrm /= np.maximum(_norm(nrm, axis=1, keepdims=True), 1e-12)
    return Hits(part=part, depth=depth, pos=pos, normal=nrm.astype(np.float32), flat=flat)


def _norm(v: np.ndarray, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """Euclidean norm along ``axis`` (cheaper than ``np.linalg.norm`` for many short vectors)."""
    if v.ndim == 1 and axis in (0, -1) and not keepdims:
        return float(np.sqrt(v @ v))
    return np.sqrt((v * v).sum(axis=axis, keepdims=keepdims))


def xs_at(grid: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Values of a broadcastable 2-D grid at pixels (iy, ix)."""
    gy = iy if grid.shape[0] > 1 else 0
    gx = ix if grid.shape[1] > 1 else 0
    return grid[gy, gx]


def smooth_seams(hits: Hits, size: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Normals with the creases where the face meets the cranium softened.

    Unioned ellipsoids meet in sharp creases that real faces do not have; near a seam
    between the cranium, face and nose the normal is blended (weight ``4 s (1 - s)``,
    ``s`` the local share of face pixels) with its Gaussian average over that group.
    The blur runs on a downsampled box around the face only.
    """
    w, h = size
    normal = hits.normal.copy()
    part = hits.part
    face = (part == FACE) | (part == NOSE)
    if not face.any() or sigma_px < 0.5:
        return normal
    ys, xs = np.nonzero(face)
    pad = int(3 * sigma_px) + 2
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, h)
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, w)
    sub_part = part[y0:y1, x0:x1]
    grp = face[y0:y1, x0:x1] | (sub_part == CRANIUM)
    box = np.zeros((y1 - y0, x1 - x0, 5), np.float32)
    iy, ix = np.divmod(hits.flat, w)
    inb = (iy >= y0) & (iy < y1) & (ix >= x0) & (ix < x1)
    sel = np.flatnonzero(inb)
    ly, lx = iy[sel] - y0, ix[sel] - x0
    keep = grp[ly, lx]
    sel, ly, lx = sel[keep], ly[keep], lx[keep]
    box[ly, lx, :3] = normal[sel]
    box[ly, lx, 3] = 1.0
    box[..., 4] = face[y0:y1, x0:x1]
    k = max(1, int(sigma_px / 3))
    dsize = (max((x1 - x0) // k, 1), max((y1 - y0) // k, 1))
    parts = []
    for chans in (box[..., :4], box[..., 4]):  # OpenCV resizes at most 4 channels at once
        small = cv2.resize(np.ascontiguousarray(chans), dsize, interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), max(sigma_px / k, 0.5))
        up = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        parts.append(up.reshape(y1 - y0, x1 - x0, -1)[ly, lx])
    big = np.concatenate(parts, axis=1)
    wsum = np.maximum(big[:, 3:4], 1e-6)
    avg = big[:, :3] / wsum
    avg /= np.maximum(_norm(avg, axis=1, keepdims=True), 1e-6)
    share = np.clip(big[:, 4:5] / wsum, 0, 1)
    alpha = 4.0 * share * (1.0 - share)
    out = normal[sel] + alpha * (avg - normal[sel])
    normal[sel] = out / np.maximum(_norm(out, axis=1, keepdims=True), 1e-6)
    return normal


# --------------------------------------------------------------------------- scalp


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
    hairline: np.ndarray       # (2, K) natural hairline elevation knots, side x<0 / x>=0
    jitter: np.ndarray         # (721,) hairline irregularity (deg) against azimuth -180..180
    recession: np.ndarray      # (2, len(_REC_AZ)) receded degrees, per side
    soft_deg: float
    noise: tuple[np.ndarray, np.ndarray]
    crown: tuple[np.ndarray, float, float] | None   # centre, radius (rad), strength
    patches: tuple[np.ndarray, np.ndarray]          # centres (P, 3), radii (P,)
    diffuse: float
    whorl: np.ndarray
    spiral: float
    style: np.ndarray
    style_weight: float

    def natural_hairline(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(azimuth, elevation, natural hairline elevation) in degrees."""
        az, el = _angles(u)
        a = np.abs(az)
        line = np.where(az < 0, np.interp(a, _AZ_KNOTS, self.hairline[0]),
                        np.interp(a, _AZ_KNOTS, self.hairline[1]))
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
        rec = np.where(az < 0, np.interp(a, _REC_AZ, self.recession[0]),
                       np.interp(a, _REC_AZ, self.recession[1]))
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
        cen, rad = self.patches
        for c, r in zip(cen, rad):
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
        t = t * head.axes_of(u)                       # sphere tangent -> ellipsoid tangent
        t -= (t * n).sum(1, keepdims=True) * n
        t /= np.maximum(_norm(t, axis=1, keepdims=True), 1e-9)
        d = np.arccos(np.clip(u @ self.whorl, -1, 1))
        ang = self.spiral * np.exp(-d / 0.3)
        b = np.cross(n, t)
        t = np.cos(ang)[:, None] * t + np.sin(ang)[:, None] * b
        down = np.array([0.0, 0.0, -1.0])
        extra = (self.style_weight * long_weight)[:, None] * self.style[None, :] \
            + (0.8 * long_weight)[:, None] * down[None, :]
        t = t + extra
        t -= (t * n).sum(1, keepdims=True) * n
        return t / np.maximum(_norm(t, axis=1, keepdims=True), 1e-9)


def draw_scalp(rng: np.random.Generator, hair: HairParams) -> ScalpPattern:
    s = hair.thinning_strength
    knots = np.stack([_EL_KNOTS + rng.normal(0, 2.5, len(_EL_KNOTS)) for _ in range(2)])
    knots += rng.normal(0, 3.0)
    harm = np.arange(1, 25)
    amp = rng.normal(0, 1, len(harm)) * 2.2 / harm ** 0.7
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
        pattern=pattern, strength=s, hairline=knots, jitter=jitter, recession=rec,
        soft_deg=float(rng.uniform(1.5, 3.5)), noise=_sphere_noise(rng, 16, (2.0, 7.0)),
        crown=crown, patches=patches, diffuse=float(rng.uniform(0.6, 0.95)), whorl=whorl,
        spiral=float(rng.choice([-1, 1]) * rng.uniform(0.4, 1.2)), style=style,
        style_weight=float(rng.uniform(0.0, 0.8)))


# --------------------------------------------------------------------------- hair


@dataclass
class HairAccum:
    """Per-pixel sums over hair samples, each weighted by its covered area (px^2)."""

    box: tuple[int, int, int, int]   # (y0, y1, x0, x1): the image region the sums cover
    tau: np.ndarray      # covered area: optical depth of the hair layer
    bright: np.ndarray   # x fibre brightness (relative to the client's hair colour)
    lit: np.ndarray      # x brightness x diffuse shading
    spec: np.ndarray     # x specular sheen


def _warp_at(warp: tuple[np.ndarray, np.ndarray], x: np.ndarray, y: np.ndarray,
             size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image position of projected points: the rays are warped by +D, points move by -D."""
    w, h = size
    ix = np.clip(np.rint(x), 0, w - 1).astype(np.intp)
    iy = np.clip(np.rint(y), 0, h - 1).astype(np.intp)
    return x - xs_at(warp[0], iy, ix), y - xs_at(warp[1], iy, ix)


def _strand_points(rng: np.random.Generator, head: Head, p0: np.ndarray, n0: np.ndarray,
                   t0: np.ndarray, lengths: np.ndarray, curl: np.ndarray, lift_mm: float,
                   n_points: int) -> np.ndarray:
    """(N, n_points, 3) paths of long hair lying on the head at a small lift."""
    n = len(p0)
    beta = np.deg2rad(rng.uniform(15, 35, n))
    d = np.cos(beta)[:, None] * t0 + np.sin(beta)[:, None] * n0
    step = lengths / (n_points - 1)
    lift = lift_mm * np.clip(lengths / 25.0, 0.15, 1.0)
    out = np.empty((n, n_points, 3))
    out[:, 0] = p0
    p = p0
    for k in range(1, n_points):
        q = p + step[:, None] * d
        ax = head.axes_of(q)            # q and its radial surface point share the quadrant
        uq = q / ax
        uq /= _norm(uq, axis=1, keepdims=True)
        s = uq * ax
        nq = uq / ax
        nq /= _norm(nq, axis=1, keepdims=True)
        h = lift * (1.0 - np.exp(-k * step / 4.0))
        p_new = s + h[:, None] * nq
        d = p_new - p
        d -= 0.7 * (d * nq).sum(1, keepdims=True) * nq
        ang = curl * step / 10.0
        b = np.cross(nq, d)
        d = np.cos(ang)[:, None] * d + np.sin(ang)[:, None] * b
        d /= np.maximum(_norm(d, axis=1, keepdims=True), 1e-9)
        out[:, k] = p_new
        p = p_new
    return out


def _splat_strands(pts: np.ndarray, width_mm: np.ndarray, bright: np.ndarray, shadow: np.ndarray,
                   pose: Pose, hits: Hits, warp, size: tuple[int, int], light: dict, head: Head,
                   acc: HairAccum, budget: int, rng: np.random.Generator) -> int:
    """Accumulate strands (N, K, 3 head-frame polylines) into ``acc``; returns strands drawn.

    Each segment is sampled about once per pixel of its projected length; a sample adds
    its covered area (width x step, px^2) to its pixel unless the z-buffer hides it.
    Shading per segment: half Lambert on the head normal (the hair mass follows the
    head), half Kajiya-Kay (a fibre is lit by the sine of its angle to the light), times
    the strand's self-shadowing; sheen is Kajiya-Kay specular.
    """
    w, h = size
    n, k = pts.shape[:2]
    if n == 0:
        return 0
    x, y, z = pose.project(pts.reshape(-1, 3))
    x, y = _warp_at(warp, x, y, size)
    x, y, z = (a.reshape(n, k) for a in (x, y, z))
    seg_len = np.hypot(np.diff(x, axis=1), np.diff(y, axis=1))
    inside = (x.max(1) >= -1) & (x.min(1) <= w) & (y.max(1) >= -1) & (y.min(1) <= h)
    total = float(np.maximum(seg_len[inside], 1.0).sum())
    # over budget: first sample strands more sparsely (up to every 3 px, each sample
    # weighing more), then keep fewer, wider strands (hair clumps into locks anyway)
    stride = float(np.clip(total / budget, 1.0, 3.0))
    bundle = max(1.0, total / stride / budget)
    keep = inside & (rng.random(n) < 1.0 / bundle) if bundle > 1.0 else inside
    sel = np.flatnonzero(keep)
    if len(sel) == 0:
        return 0
    x, y, z, seg_len = x[sel], y[sel], z[sel], seg_len[sel]
    n_sub = np.maximum(1, np.ceil(seg_len / stride)).astype(np.int64)
    pts_s = pts[sel]
    mid = 0.5 * (pts_s[:, 1:] + pts_s[:, :-1]).reshape(-1, 3)
    _, nrm = head.surface(head.to_param(mid))
    tang = np.diff(pts_s, axis=1).reshape(-1, 3)
    tang /= np.maximum(_norm(tang, axis=1, keepdims=True), 1e-9)
    tl, th = tang @ light["dir"], tang @ light["half"]
    kk = np.sqrt(np.clip(1 - tl * tl, 0, 1))
    diffuse = light["ambient"] + (1 - light["ambient"]) * (0.5 * np.clip(nrm @ light["dir"], 0, None) + 0.5 * kk)
    spec = light["gloss"] * np.sqrt(np.clip(1 - th * th, 0, 1)) ** light["gloss_exp"]
    nseg = k - 1
    strand_of = np.repeat(np.arange(len(sel)), nseg)
    seg_bright = bright[sel][strand_of]
    seg_lit = seg_bright * diffuse * shadow[sel][strand_of]
    seg_spec = spec * shadow[sel][strand_of]
    wseg = ((width_mm[sel] * bundle)[:, None] * pose.focal_px
            / np.maximum(0.5 * (z[:, 1:] + z[:, :-1]), 1.0) * seg_len / n_sub).ravel()

    ns = n_sub.ravel()
    m = int(ns.sum())
    seg = np.repeat(np.arange(ns.size, dtype=np.intp), ns)
    # one table row per segment, gathered once per sample: start, step, depth, and the
    # sub-step position (random phase per segment, so strides do not line up)
    tab = np.empty((ns.size, 8), np.float32)
    for c, a in enumerate((x, y, z)):
        tab[:, 2 * c] = a[:, :-1].ravel() + (0.5 if c < 2 else 0.0)  # +0.5: floor = nearest pixel
        tab[:, 2 * c + 1] = np.diff(a, axis=1).ravel()
    tab[:, 6] = (np.cumsum(ns) - ns) - rng.random(ns.size)
    tab[:, 7] = 1.0 / ns
    g = tab[seg]
    frac = (np.arange(m, dtype=np.float32) - g[:, 6]) * g[:, 7]
    xs = g[:, 0] + frac * g[:, 1]
    ys = g[:, 2] + frac * g[:, 3]
    zz = g[:, 4] + frac * g[:, 5]
    del g, frac
    y0, y1, x0, x1 = acc.box
    ok = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    flat = ys.astype(np.intp) * w + xs.astype(np.intp)
    flat[~ok] = 0
    vis = ok & (zz <= hits.depth.ravel()[flat] + np.float32(0.6))
    flat = (ys[vis].astype(np.intp) - y0) * (x1 - x0) + xs[vis].astype(np.intp) - x0
    seg = seg[vis]
    wtab = np.stack([wseg, wseg * seg_bright, wseg * seg_lit, wseg * seg_spec], axis=1).astype(np.float64)
    wv = wtab[seg]
    size_ = (y1 - y0) * (x1 - x0)
    sums = [np.bincount(flat, wv[:, c], size_) for c in range(4)]
    spread = stride * bundle
    if spread > 1.5:
        # each sample stands for ``spread`` px^2 of strand: spread it over about that area,
        # or the optical depth would pile up in few pixels and the coverage come out low
        # The per-pixel means (fibre brightness, shading, sheen) stay sharp where samples
        # fell, and the sampled density modulates the shading a little: strand texture.
        sig = 0.45 * np.sqrt(spread)
        raw = np.stack(sums, axis=-1).astype(np.float32)
        soft = cv2.GaussianBlur(raw.reshape(y1 - y0, x1 - x0, 4), (0, 0), sig).reshape(-1, 4)
        t_raw, t_soft = raw[:, 0], np.maximum(soft[:, 0], 1e-12)
        hit = t_raw > 0
        texture = np.clip(0.8 + 0.2 * t_raw / t_soft, 0.8, 1.3)
        sums = [soft[:, 0]]
        for c in (1, 2, 3):
            mean = soft[:, c] / t_soft
            mean[hit] = raw[hit, c] / t_raw[hit]
            if c > 1:
                mean *= texture
            sums.append(mean * soft[:, 0])
    acc.tau += sums[0]
    acc.bright += sums[1]
    acc.lit += sums[2]
    acc.spec += sums[3]
    return len(sel)


def render_head_hair(rng: np.random.Generator, hp: HairParams, scalp: ScalpPattern, head: Head,
                     pose: Pose, hits: Hits, warp, size: tuple[int, int], light: dict,
                     ) -> tuple[HairAccum, int]:
    """Grow the visible hairs of the head and accumulate them per pixel."""
    w, h = size
    # roots: uniform on the cranium (area-weighted), on the side that faces the camera
    ax = head.mean_axes
    pp = 1.6075
    area = 4 * np.pi * (((ax[0] * ax[1]) ** pp + (ax[0] * ax[2]) ** pp + (ax[1] * ax[2]) ** pp) / 3) ** (1 / pp)
    quads = [np.array([head.a, b, c]) for b in (head.b_front, head.b_back) for c in (head.c_up, head.c_low)]
    ratio_max = max(float(np.prod(q) / q.min()) for q in quads)
    mean_ratio = area / (4 * np.pi)
    # A hair is a fraction of a pixel wide here: merging strands into fewer, wider ones
    # (still at most half a pixel wide) gives the same coverage and bounds the cost.
    width_px = hp.width_mm * pose.focal_px / pose.centre_cam[2]
    n_expect = hp.density_per_cm2 * area / 100.0 * 0.5
    bundle = float(np.clip(n_expect / MAX_STRANDS, 1.0, max(1.0, 0.5 / width_px)))
    n_cand = rng.poisson(hp.density_per_cm2 * area / 100.0 * ratio_max / mean_ratio / bundle)
    u = rng.standard_normal((n_cand, 3))
    u /= _norm(u, axis=1, keepdims=True)
    cdir = pose.to_camera_head
    u = u[(u * (cdir * ax / _norm(cdir * ax))).sum(1) > -0.45]
    axu = head.axes_of(u)
    ratio = np.prod(axu, axis=1) * _norm(u / axu, axis=1)
    u = u[rng.random(len(u)) * ratio_max < ratio]
    _, el, line = scalp.natural_hairline(u)
    u = u[el >= line - 3.0 * scalp.soft_deg]  # no hair below the natural hairline
    dens = scalp.density(u)
    keep = rng.random(len(u)) < dens
    u, dens = u[keep], dens[keep]
    n = len(u)
    p0, n0 = head.surface(u)
    is_long = rng.random(n) < hp.long_fraction
    lengths = np.where(is_long, hp.long_length_mm * rng.uniform(0.5, 1.3, n),
                       rng.uniform(*hp.stubble_length_mm, n))
    lw = np.where(is_long, np.clip(lengths / 40.0, 0.2, 1.0), 0.0)
    t0 = scalp.flow(u, n0, head, lw)
    jit = rng.normal(0, np.where(is_long, 0.3, 0.22), n)
    b = np.cross(n0, t0)
    t0 = np.cos(jit)[:, None] * t0 + np.sin(jit)[:, None] * b
    widths = hp.width_mm * bundle * rng.uniform(0.8, 1.2, n)
    # fibre brightness relative to the client's hair colour (grey: white and dark fibres)
    tones = _strand_tones(rng, hp.colour, 16)
    base = _lab_rgb(HAIR_LAB[hp.colour]).astype(np.float64)
    bright = (tones @ _LUMA) / float(base @ _LUMA)
    bright = bright[rng.integers(0, 16, n)]
    # self-shadowing grows with the hair's mass over the skin (density x length x width)
    mass = hp.density_per_cm2 / 100.0 * dens * lengths * hp.width_mm
    shadow = 0.55 + 0.45 * np.exp(-0.5 * mass)
    curl = hp.curl * rng.normal(1.0, 0.5, n) * np.where(is_long, 1.0, 0.3)
    light = dict(light)
    light["gloss"] = float(rng.uniform(0.03, 0.12))
    light["gloss_exp"] = float(rng.uniform(20, 60))
    # hair stays within a strand's length of the cranium's outline: accumulate in that box
    reach = int(np.ceil((1.3 * max(hp.long_length_mm, hp.stubble_length_mm[1]) + 10.0) * pose.focal_px
                        / max(pose.centre_cam[2] - head.width_mm, 1.0)))
    cy, cx = np.divmod(hits.flat[hits.part.ravel()[hits.flat] == CRANIUM], w)
    if len(cy):
        box = (max(int(cy.min()) - reach, 0), min(int(cy.max()) + reach + 1, h),
               max(int(cx.min()) - reach, 0), min(int(cx.max()) + reach + 1, w))
    else:
        box = (0, 0, 0, 0)
    na = (box[1] - box[0]) * (box[3] - box[2])
    acc = HairAccum(box, np.zeros(na), np.zeros(na), np.zeros(na), np.zeros(na))
    budget = int(min(1.2 * w * h, 5e6))
    drawn = 0
    st = ~is_long
    if st.any():
        beta = np.deg2rad(rng.uniform(30, 65, int(st.sum())))
        d = np.cos(beta)[:, None] * t0[st] + np.sin(beta)[:, None] * n0[st]
        pts = np.stack([p0[st], p0[st] + lengths[st, None] * d], axis=1)
        drawn += _splat_strands(pts, widths[st], bright[st], shadow[st], pose, hits, warp, size, light,
                                head, acc, budget // 3, rng)
    if is_long.any():
        lift = float(rng.uniform(1.0, 7.0))
        # enough points for the curvature, fewer when strands are short in pixels
        len_px = hp.long_length_mm * pose.focal_px / pose.centre_cam[2]
        n_pts = int(np.clip(round(len_px / 12.0) + 2, 4, 8))
        pts = _strand_points(rng, head, p0[is_long], n0[is_long], t0[is_long], lengths[is_long],
                             curl[is_long], lift, n_pts)
        drawn += _splat_strands(pts, widths[is_long], bright[is_long], shadow[is_long], pose, hits, warp,
                                size, light, head, acc, budget, rng)
    return acc, drawn


# --------------------------------------------------------------------------- dots


@dataclass(frozen=True)
class DotPlane:
    """Lambert azimuthal equal-area map of the cranium's visible half (plane mm)."""

    size_mm: float
    radius_mm: float
    centre: np.ndarray    # parametric unit vector at the plane's centre
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


def _treated_grid(rng: np.random.Generator, scalp: ScalpPattern, plane: DotPlane, coverage: float,
                  scar_fn, n: int = 128) -> tuple[np.ndarray, float]:
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


def place_head_dots(rng: np.random.Generator, cfg: SynthSettings, scalp: ScalpPattern, plane: DotPlane,
                    scar_fn) -> tuple[DotSet, float]:
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
        new = place_dots(rng, cfg.dots, wmm, hmm, sub, session, palette, first_id=first,
                         spacing_mm=spacing * np.sqrt(n_sessions), diameter_mm=diameter)
        dots = new if dots is None else DotSet.concat(dots, new)
    dots = dots.with_(xy_mm=dots.xy_mm + np.array([c0 * cell, r0 * cell]))
    # feather the treated edge: the artist fades density out where hair takes over
    u, valid = plane.to_sphere(dots.xy_mm)
    _, el, line = scalp.natural_hairline(u)
    keep_p = np.clip((thr - scalp.density(u)) / 0.15 + 0.6, 0, 1)
    keep_p = np.maximum(keep_p, (scar_fn(u) > 0.3).astype(float))
    keep_p *= np.clip((el - line) / 1.5, 0, 1)  # inside the hairline, thinning out towards it
    keep = valid & (rng.random(len(dots)) < keep_p)
    return dots.take(np.flatnonzero(keep)), coverage


def dot_density_image(dots: DotSet, od: np.ndarray, x: np.ndarray, y: np.ndarray, scale_px: np.ndarray,
                      shape: tuple[int, int]) -> np.ndarray:
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
        draw = dots.take(idx).with_(xy_mm=np.stack([(x[idx] + 0.5) / ppm, (y[idx] + 0.5) / ppm], 1),
                                    radius_mm=dots.radius_mm[idx] * scale_px[idx] / ppm)
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


# --------------------------------------------------------------------------- background


def _lab_rgb(lab) -> np.ndarray:
    return np.clip(lab_to_linear_rgb(np.asarray(lab, float)), 0.002, 1.0).astype(np.float32)


def render_backdrop(rng: np.random.Generator, size: tuple[int, int], ppm: float) -> np.ndarray:
    """A wall or photo backdrop: colour, gradient, blotches, fine texture, maybe an edge.

    The smooth parts are built on a quarter-resolution grid and upsampled once.
    """
    w, h = size
    kinds = [((86, 93), (-1, 1), (0, 6)), ((62, 80), (-1, 1), (-2, 3)), ((40, 58), (-1, 1), (-3, 2)),
             ((12, 28), (-1, 1), (-2, 2)), ((70, 85), (1, 5), (8, 18)), ((68, 84), (-5, -1), (-14, -5)),
             ((50, 72), (-14, -5), (-2, 6))]
    kl, ka, kb = kinds[int(rng.integers(len(kinds)))]
    base = _lab_rgb([rng.uniform(*kl), rng.uniform(*ka), rng.uniform(*kb)])
    q = 4
    gw, gh = max(w // q, 2), max(h // q, 2)
    ang = rng.uniform(0, 2 * np.pi)
    xs = np.linspace(-0.5, 0.5, gw, dtype=np.float32)[None, :]
    ys = np.linspace(-0.5, 0.5, gh, dtype=np.float32)[:, None]
    g = np.float32(rng.uniform(0.0, 0.5))
    gain = 1.0 + g * (xs * np.float32(np.cos(ang)) + ys * np.float32(np.sin(ang)))
    sx, sy = rng.uniform(-0.3, 0.3, 2)
    spot = np.float32(rng.uniform(0.0, 0.35))
    gain = gain * (1.0 - spot * np.minimum(((xs - sx) ** 2 + (ys - sy) ** 2) * 3.0, 1.0))
    gain = gain * (1.0 + np.float32(rng.uniform(0.01, 0.05)) * smooth_field(rng, (gh, gw), 60.0 * ppm / q, octaves=3))
    if rng.random() < 0.35:  # a wall corner or door frame
        edge_x = rng.uniform(0.05, 0.95) * gw
        step = np.float32(rng.uniform(0.75, 1.2))
        soft = max(0.3, rng.uniform(0.5, 8.0) * ppm / q)
        col = np.arange(gw, dtype=np.float32)[None, :]
        gain = gain * (1.0 + (step - 1.0) / (1.0 + np.exp(np.clip(-(col - edge_x) / soft, -30, 30))))
    gain = cv2.resize(gain.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    grain = rng.standard_normal((h, w), dtype=np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), 0.8)
    gain *= 1.0 + np.float32(rng.uniform(0.01, 0.04)) * grain
    out = gain[..., None] * base[None, None, :]
    return np.minimum(out, np.float32(1.0), out=out)


def _clothes_colour(rng: np.random.Generator) -> np.ndarray:
    r = rng.random()
    if r < 0.3:
        lab = [rng.uniform(8, 20), rng.uniform(-1, 1), rng.uniform(-3, 1)]     # black cape / top
    elif r < 0.5:
        lab = [rng.uniform(20, 40), rng.uniform(-2, 4), rng.uniform(-25, -8)]  # navy
    elif r < 0.65:
        lab = [rng.uniform(35, 70), rng.uniform(-1, 1), rng.uniform(-2, 2)]    # grey
    elif r < 0.8:
        lab = [rng.uniform(80, 92), rng.uniform(-1, 1), rng.uniform(-2, 4)]    # white
    else:
        hue = rng.uniform(0, 2 * np.pi)
        ch = rng.uniform(20, 50)
        lab = [rng.uniform(30, 62), ch * np.cos(hue), ch * np.sin(hue)]
    return _lab_rgb(lab)


# --------------------------------------------------------------------------- card


def _paste_card(layers: list[tuple[np.ndarray, float | np.ndarray]], cover: np.ndarray, card: CardSpec, marker_id: int,
                affine: np.ndarray) -> None:
    """Composite the card into each (HxWx3 image, gain) of ``layers`` and into ``cover``, in place.

    ``affine`` (2x3) maps card mm to image pixels (OpenCV centre convention); the card's
    reflectance times ``gain`` (a number or an HxW map) is laid over each image with its
    coverage. Like
    :func:`data.synth.closeup.composite_card` but for a general affine, because a card
    lying on the curved scalp is foreshortened; only the card's box is touched.
    """
    a3 = np.vstack([affine, [0, 0, 1]])
    ppm = float(np.linalg.svd(affine[:, :2], compute_uv=False).max())
    raster = render_card(card, max(ppm, 0.5), marker_id=marker_id)
    m = a3 @ np.linalg.inv(raster.mm_to_pixel())
    hr, wr = raster.alpha.shape
    box = (m @ np.array([[-0.5, -0.5, 1], [wr, -0.5, 1], [wr, hr, 1], [-0.5, hr, 1]], float).T)[:2].T
    ph, pw = cover.shape
    x0, y0 = np.maximum(np.floor(box.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(box.max(axis=0)).astype(int) + 2, [pw, ph])
    if x1 <= x0 or y1 <= y0:
        return
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], float) @ m
    size = (int(x1 - x0), int(y1 - y0))
    rgb = cv2.warpAffine(srgb_to_linear(raster.rgb).astype(np.float32), shift[:2], size,
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    al = cv2.warpAffine(raster.alpha, shift[:2], size, flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    for img, gain in layers:
        g = gain[y0:y1, x0:x1] if isinstance(gain, np.ndarray) else np.float32(gain)
        sub = img[y0:y1, x0:x1]
        sub *= (1.0 - al)[..., None]
        sub += rgb * (al * g)[..., None]
    np.maximum(cover[y0:y1, x0:x1], al, out=cover[y0:y1, x0:x1])


def _card_affine_on_scalp(head: Head, pose: Pose, warp, size,
                          u: np.ndarray, scale: float, angle: float, card: CardSpec) -> np.ndarray:
    """2x3 affine card mm -> image px of a card lying on the scalp's tangent plane at ``u``."""
    p, n = head.surface(u[None, :])
    p, n = p[0], n[0]
    t1 = np.cross(n, [0.0, 0.0, 1.0]) if abs(n[2]) < 0.95 else np.cross(n, [1.0, 0.0, 0.0])
    t1 /= _norm(t1)
    t2 = np.cross(n, t1)
    c, s = np.cos(angle), np.sin(angle)
    ex, ey = c * t1 + s * t2, -s * t1 + c * t2
    x0, y0, x1, y1 = paper_rect_mm(card)
    centre_mm = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    pts = np.stack([p, p + scale * ex, p + scale * ey])
    x, y, _ = pose.project(pts)
    x, y = _warp_at(warp, x, y, size)
    a = np.array([[x[1] - x[0], x[2] - x[0]], [y[1] - y[0], y[2] - y[0]]])
    # if the tangent basis came out mirrored in the image, flip the card's y axis
    if np.linalg.det(a) < 0:
        a[:, 1] *= -1
    t = np.array([x[0], y[0]]) - a @ centre_mm
    return np.column_stack([a, t])


# --------------------------------------------------------------------------- the scene


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


def _paint_face(rng: np.random.Generator, alb: np.ndarray, pos: np.ndarray, part: np.ndarray,
                w: float, hair_rgb: np.ndarray) -> None:
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
    brow = (front & (np.abs(xa - 0.19 * w) < 0.12 * w)
            & (np.abs(z - brow_z) < 0.014 * w * (1.3 - (xa - 0.07 * w) / (0.3 * w))))
    alb[brow] = alb[brow] * 0.35 + hair_rgb * 0.65
    ex, ez = (xa - 0.165 * w) / (0.058 * w), (z + 0.07 * w) / (0.019 * w)
    socket = np.clip(1.0 - ((xa - 0.165 * w) / (0.1 * w)) ** 2 - ((z + 0.06 * w) / (0.055 * w)) ** 2, 0, 1)
    alb *= (1.0 - 0.22 * socket ** 1.5)[:, None]
    eye = front & (ex ** 2 + ez ** 2 < 1)
    alb[eye] = _lab_rgb([70, 0, 4])
    iris = eye & (((xa - 0.165 * w) ** 2 + (z + 0.07 * w) ** 2) < (0.019 * w) ** 2)
    alb[iris] = _lab_rgb([rng.uniform(20, 45), rng.uniform(-2, 8), rng.uniform(-15, 20)])
    lid = front & (np.abs(np.hypot(ex, (z + 0.064 * w) / (0.022 * w)) - 1.0) < 0.18) & (z > -0.07 * w)
    alb[lid] *= 0.35
    nostril = (front & (part == NOSE)
               & (((xa - 0.035 * w) / (0.022 * w)) ** 2 + ((z + 0.385 * w) / (0.012 * w)) ** 2 < 1))
    alb[nostril] *= 0.3
    lip_c = -0.59 * w - 0.008 * w * np.cos(np.pi * np.clip(xa / (0.13 * w), 0, 1))
    lips = (front & (xa < 0.13 * w * np.sqrt(np.clip(1 - ((z - lip_c) / (0.035 * w)) ** 2, 0, 1)))
            & (np.abs(z - lip_c) < 0.035 * w))
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


def single_global(rng: np.random.Generator, cfg: SynthSettings, card: CardSpec, rules: FlagSettings,
                  from_camera) -> Scene:
    """One independent global photo: a new client's whole head, one view of ``global_view.views``."""
    size = (cfg.image.width, cfg.image.height)
    w, h = size
    cam = from_camera(rng, cfg.camera, w)
    ppm = cam.px_per_mm
    kind = str(rng.choice(list(cfg.global_view.views)))
    head = draw_head(rng, rng.uniform(*cfg.global_view.head_width_mm))
    pose = draw_pose(rng, kind, cam, size)
    skin = draw_skin(rng, cfg.skin)
    hp = draw_hair(rng, cfg.hair)
    scalp = draw_scalp(rng, hp)
    scar_fn = _region_scar(rng, skin, head)

    # --- geometry: rays with a slightly irregular outline ---
    amp = 0.012 * head.width_mm * ppm
    cell = 0.45 * head.width_mm * ppm
    small = (max(h // 8, 4), max(w // 8, 4))
    warp = tuple(cv2.resize(np.float32(amp) * smooth_field(rng, small, cell / 8.0), (w, h),
                            interpolation=cv2.INTER_LINEAR) for _ in range(2))
    hits = cast_rays(head, pose, size, warp)
    hits = replace(hits, normal=smooth_seams(hits, size, 0.06 * head.width_mm * ppm))
    part_flat = hits.part.ravel()[hits.flat]

    # --- light (camera frame: x right, y down, z forward) ---
    phi = rng.uniform(-150, -30) if rng.random() < 0.8 else rng.uniform(-180, 180)
    off = rng.uniform(0.1, 0.8)
    light_c = np.array([off * np.cos(np.deg2rad(phi)), off * np.sin(np.deg2rad(phi)), -1.0])
    light_c /= _norm(light_c)
    light_h = pose.rot.T @ light_c
    view_h = pose.rot.T @ np.array([0.0, 0.0, -1.0])
    half_h = (light_h + view_h) / _norm(light_h + view_h)
    ambient = rng.uniform(0.25, 0.5)

    # --- base reflectance: backdrop, clothes, skin ---
    albedo = render_backdrop(rng, size, ppm)
    flat_alb = albedo.reshape(-1, 3)
    clothes = hits.part == CLOTHES
    if clothes.any():
        ccol = _clothes_colour(rng)
        ys_, xs_ = np.nonzero(clothes)
        y0, y1, x0, x1 = ys_.min(), ys_.max() + 1, xs_.min(), xs_.max() + 1
        box = (int(y1 - y0), int(x1 - x0))
        folds = 1.0 + np.float32(rng.uniform(0.05, 0.15)) * smooth_field(rng, box, 35.0 * ppm, octaves=2)
        folds *= 1.0 + np.float32(rng.uniform(0.01, 0.05)) * rng.standard_normal(box, dtype=np.float32)
        sub = albedo[y0:y1, x0:x1]
        cl = clothes[y0:y1, x0:x1]
        sub[cl] = folds[cl][:, None] * ccol[None, :]
    skin_idx = np.flatnonzero(np.isin(part_flat, _SKIN_PARTS))   # into the hit arrays
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
    oil = np.zeros(h * w, np.float32)
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
            rim = np.exp(-((r - 0.85) / 0.08) ** 2)
            tint[ear] *= (np.array([1.0, 0.9, 0.9], np.float32)
                          * (1.0 - 0.45 * concha - 0.12 * rim)[:, None].astype(np.float32))
        # face skin fades into scalp skin across the forehead
        blend = np.clip((el_cr - line_cr + 12.0) / 14.0, 0, 1).astype(np.float32)[:, None]
        tint[is_cr] = face_tint * (1 - blend) + blend
        sc = scar_fn(u_cr).astype(np.float32)
        scar_img[hits.flat[cr_idx]] = sc
        if sc.any():
            scar_tint = np.array([1.10, 1.02, 1.04], np.float32) if rng.random() < 0.5 else np.array(
                [1.12, 0.93, 0.95], np.float32)
            tint[is_cr] *= 1.0 + (scar_tint[None, :] - 1.0) * sc[:, None]
        vals *= tint
        _paint_face(rng, vals, hits.pos[skin_idx], skin_part, head.width_mm, _lab_rgb(HAIR_LAB[hp.colour]))
        flat_alb[skin_flat] = np.clip(vals, 0, 1)
        del vals, tint
    oil = oil.reshape(h, w)

    # --- dots ---
    plane = make_dot_plane(head, pose)
    placed, coverage = place_head_dots(rng, cfg, scalp, plane, scar_fn)
    client = ClientScalp(plane=Plane(plane.size_mm, plane.size_mm, ppm), skin=skin, hair=hp,
                         follicles=Follicles(np.zeros((0, 2)), np.zeros(0, bool)), dots=placed,
                         texture_seed=0, palette=tuple(cfg.dots.palette))
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

    # --- hair ---
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
    del acc, safe
    hair_mask = np.zeros((h, w), bool)
    hair_mask[hy0:hy1, hx0:hx1] = cov >= 0.5

    # --- shading of the base layer ---
    shade = np.ones(h * w, np.float32)
    spec = np.zeros(h * w, np.float32)
    lam = np.clip(hits.normal @ light_h.astype(np.float32), 0, None)
    sky = 0.75 + 0.25 * (hits.normal @ (-pose.rot[1]).astype(np.float32))
    shade[hits.flat] = ambient * sky + (1 - ambient) * lam
    is_skin_flat = np.isin(part_flat, _SKIN_PARTS)
    nh = np.clip(hits.normal @ half_h.astype(np.float32), 0, 1)
    ks = np.float32(0.015 + 0.2 * skin.oiliness)
    gloss_skin = np.where(part_flat == CRANIUM, 1.0, 0.5).astype(np.float32)
    spec[hits.flat] = is_skin_flat * ks * gloss_skin * nh ** np.float32(rng.uniform(15, 50)) \
        * (0.6 + oil.ravel()[hits.flat])
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
    mshift = np.float32([[1, 0, -light_c[0] * sh_dist], [0, 1, -light_c[1] * sh_dist]])
    bsm = cv2.warpAffine(bsm, mshift, (bsm.shape[1], bsm.shape[0]))
    bsm = cv2.GaussianBlur(bsm, (0, 0), max(1.0, rng.uniform(0.1, 0.4) * head.width_mm * ppm / kk))
    wall_shadow = cv2.resize(bsm, (w, h), interpolation=cv2.INTER_LINEAR)
    shade = np.where(hits.part == BG, 1.0 - np.float32(rng.uniform(0.1, 0.45)) * wall_shadow, shade)

    # hair over the base layer (shading and sheen were accumulated per sample)
    # the camera's light field (fall-off, vignetting) multiplies all radiance: folded in here
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
    del hbright, hlit, hspec, bare_cov, cov, sub

    # --- card: on the scalp (foreshortened) or held beside the head ---
    card_cover = np.zeros((h, w), np.float32)
    card_truth: dict = {"present": False}
    if rng.random() < cfg.card.probability:
        marker_id = int(rng.integers(cfg.card.marker_id[0], cfg.card.marker_id[1] + 1))
        scale = float(rng.uniform(*cfg.card.scale))
        affine, placement, card_shade = _place_card(rng, card, head, pose, hits, warp, size, scale, scalp_u,
                                                    light_h, light_c, ambient)
        if affine is not None:
            _paste_card([(clean, 1.0), (radiance, card_shade * light_map)], card_cover, card, marker_id, affine)
            corners = marker_corners_mm(card)
            card_truth = {"present": True, "marker_id": marker_id, "scale": scale, "placement": placement,
                          "marker_corners_px": corners @ affine[:, :2].T + affine[:, 2]}

    mask = np.zeros(h * w, np.uint8)
    mask[region] = 1
    mask = mask.reshape(h, w)
    mask[hair_mask] = 2
    mask[card_cover >= 0.5] = 0

    # --- truth images ---
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
    del clean, ref, bare_patch

    # --- light and camera ---
    radiance *= illuminant_rgb(cam.illuminant_kelvin).astype(np.float32)
    radiance = defocus(radiance, cam, cam.dof_blur_mm * ppm)
    radiance = cv2.GaussianBlur(radiance, (0, 0), float(rng.uniform(0.35, 0.8)))
    radiance = expose(radiance, cam, rng)
    photo = encode_srgb8(radiance)
    del radiance

    # --- dot truth table ---
    lab = linear_rgb_to_lab(np.clip(core_rgb, 1e-6, 1)) if n else np.zeros((0, 3))
    skin_lab = linear_rgb_to_lab(skin_rgb) if n else np.zeros((0, 3))
    palette = np.array(list(cfg.dots.palette))
    table = pd.DataFrame({
        "dot_id": dots.dot_id, "x": dx, "y": dy,
        "x_mm": dots.xy_mm[:, 0], "y_mm": dots.xy_mm[:, 1], "diameter_mm": dots.diameter_mm,
        "L": lab[:, 0], "a": lab[:, 1], "b": lab[:, 2],
        "skin_L": skin_lab[:, 0], "skin_a": skin_lab[:, 1], "skin_b": skin_lab[:, 2],
        "contrast_dL": skin_lab[:, 0] - lab[:, 0],
        "dE00": delta_e00(lab, skin_lab) if n else np.zeros(0),
        "blue_index": blue_index(lab, skin_lab) if n else np.zeros(0),
        "session": dots.session, "shade": palette[dots.shade] if n else np.array([], str),
        "merged_with": dots.merged_with, "hair_covered": hair_mask.ravel()[fl] if n else np.zeros(0, bool),
        "in_scar": in_scar, "fresh": dots.fresh.astype(bool), "elongation": dots.elongation,
        "angle_deg": np.rad2deg(dots.angle), "scab": dots.scab > 0,
    })
    # a dot under the card is not in the photo: drop it from the truth
    under_card = card_cover.ravel()[fl] >= 0.5 if n else np.zeros(0, bool)
    table = dot_flags_table(table[~under_card].reset_index(drop=True), rules)
    # what the photo shows: a whole-head view renders a dot over a pixel or two (a 0.5-px-sigma footprint)
    table["hair_cover"] = table["hair_covered"].to_numpy(float)
    table["contrast_seen"] = seen_contrast(table["contrast_dL"].to_numpy(float),
                                           0.5 * table["diameter_mm"].to_numpy(float) * ppm, 0.0, 0.5)
    # (the photo test of close-ups is not made on whole-head views: their dots span a pixel or two)
    table["contrast_own"], table["contrast_photo"], table["speck_dL"] = np.nan, np.nan, np.nan
    table["visible"] = dot_visible(table["hair_cover"].to_numpy(), table["contrast_seen"].to_numpy(),
                               max_hair_cover=rules.visible_max_hair_cover,
                               min_contrast_dl=rules.visible_min_contrast_dl)

    # nominal similarity: dot plane mm -> image px, exact at the plane's centre direction
    c_p, _ = head.surface(plane.centre[None, :])
    cx_, cy_, _ = pose.project(c_p)
    cx_, cy_ = _warp_at(warp, cx_, cy_, size)
    half = plane.size_mm / 2.0
    h_img = np.array([[ppm, 0.0, cx_[0] - ppm * half], [0.0, ppm, cy_[0] - ppm * half], [0.0, 0.0, 1.0]])
    params = {
        "view_kind": kind, "skin": asdict(skin), "hair": asdict(hp), "camera": asdict(cam),
        "head": {"width_mm": head.width_mm, "length_mm": head.b_front + head.b_back, "cranium_height_mm": head.c_up,
                 "camera_distance_mm": float(pose.centre_cam[2]), "focal_px": pose.focal_px},
        "scalp": {"pattern": scalp.pattern, "strength": scalp.strength,
                  "crown_spot": scalp.crown is not None, "patches": int(len(scalp.patches[1]))},
        "hair_strands": int(n_strands),
        "dots": {"coverage": coverage, "placed": int(len(placed)), "visible": int(n),
                 "dot_plane_mm": plane.size_mm},
    }
    return Scene(photo=photo, mask=mask, dots=table, clean_lstar=clean_l, skin_lstar=skin_l,
                 plane_to_image=h_img, px_per_mm=ppm, view="global", params=params, card=card_truth)


def _place_card(rng, card: CardSpec, head: Head, pose: Pose, hits: Hits, warp, size, scale: float,
                scalp_u: np.ndarray, light_h: np.ndarray, light_c: np.ndarray, ambient: float):
    """Choose where the card is: flat on a camera-facing part of the scalp, or held beside
    the head facing the camera. Returns (affine card mm -> px, placement, card shading)."""
    w, h = size
    x0, y0, x1, y1 = paper_rect_mm(card)
    paper = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    marker = marker_corners_mm(card)
    ppm = pose.focal_px / pose.centre_cam[2]
    head_px = np.isin(hits.part, (CRANIUM, FACE, NOSE, EAR)).ravel()
    want_scalp = rng.random() < 0.5
    order = ("scalp", "beside") if want_scalp else ("beside", "scalp")
    for where in order:
        for _ in range(12):
            angle = rng.uniform(-np.pi, np.pi)
            if where == "scalp":
                if len(scalp_u) == 0:
                    break
                u = scalp_u[int(rng.integers(len(scalp_u)))]
                _, n = head.surface(u[None, :])
                if n[0] @ pose.to_camera_head < 0.6:
                    continue
                aff = _card_affine_on_scalp(head, pose, warp, size, u, scale, angle, card)
                shade = ambient + (1 - ambient) * max(float(n[0] @ light_h), 0.0)
            else:
                ang = np.deg2rad(rng.uniform(-25, 25))
                c, s = np.cos(ang), np.sin(ang)
                a = ppm * scale * np.array([[c, -s], [s, c]])
                centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
                pos = np.array([rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h])
                aff = np.column_stack([a, pos - a @ centre])
                shade = ambient + (1 - ambient) * max(float(-light_c[2]), 0.0)
            mk = marker @ aff[:, :2].T + aff[:, 2]
            if not ((mk[:, 0] >= 2).all() and (mk[:, 0] <= w - 3).all() and (mk[:, 1] >= 2).all()
                    and (mk[:, 1] <= h - 3).all()):
                continue
            if where == "beside":
                pp = paper @ aff[:, :2].T + aff[:, 2]
                probe = np.clip(np.rint(pp), 0, [w - 1, h - 1]).astype(int)
                centre_px = np.clip(np.rint(pp.mean(0)), 0, [w - 1, h - 1]).astype(int)
                pts = np.vstack([probe, centre_px[None, :]])
                if head_px[pts[:, 1] * w + pts[:, 0]].any():
                    continue
            return aff, where, shade
    return None, None, 1.0
