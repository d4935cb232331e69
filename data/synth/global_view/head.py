"""The body model of a global scene: head and body ellipsoids, the camera's pose, ray casting.

The head is a union of ellipsoids in a head frame (mm, origin at eyebrow level in the middle
of the head; x = the subject's right, y = forward, z = up); rays are cast analytically per
pixel, through a smooth small warp that makes the outline slightly irregular (see
:mod:`data.synth.global_view`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data.synth.camera import CameraParams

VIEW_KINDS = ("top", "crown", "front", "back", "left", "right")

# parts of the body model (material of a ray-cast pixel)
BG, CRANIUM, FACE, NOSE, EAR, NECK, CLOTHES = range(7)
_SKIN_PARTS = (CRANIUM, FACE, NOSE, EAR, NECK)


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
    cranium = tuple(
        Ellipsoid((0, 0, 0), (a, b, c), CRANIUM, ((1, sy), (2, sz)))
        for b, sy in ((bf, 1), (bb, -1))
        for c, sz in ((cu, 1), (cl, -1))
    )
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
    rot: np.ndarray  # 3x3, rows = camera x (right), y (down), z (forward) in head frame
    centre_cam: np.ndarray  # head origin in camera coordinates (mm)
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


def draw_pose(
    rng: np.random.Generator,
    kind: str,
    cam: CameraParams,
    size: tuple[int, int],
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

    part: np.ndarray  # HxW uint8 part id (BG where nothing)
    depth: np.ndarray  # HxW float32 camera depth (mm), inf where nothing
    pos: np.ndarray  # (K, 3) float32 head-frame points of the hit pixels
    normal: np.ndarray  # (K, 3) float32 head-frame unit normals of the hit pixels
    flat: np.ndarray  # (K,) flat pixel index of the hit pixels


def _ray_grid(pose: Pose, size: tuple[int, int], warp: tuple[np.ndarray, np.ndarray]):
    w, h = size
    cx, cy = pose.principal
    xs = (np.arange(w, dtype=np.float32)[None, :] + warp[0] - np.float32(cx)) / np.float32(pose.focal_px)
    ys = (np.arange(h, dtype=np.float32)[:, None] + warp[1] - np.float32(cy)) / np.float32(pose.focal_px)
    return xs, ys


def cast_rays(head: Head, pose: Pose, size: tuple[int, int], warp: tuple[np.ndarray, np.ndarray]) -> Hits:
    """Nearest intersection of every pixel's ray with the body's ellipsoids.

    A ray is ``o + t d`` with ``d = (x', y', 1)`` in camera coordinates, so ``t`` is the
    camera depth. For an ellipsoid, ``|G (x', y', 1) t + o'|^2 = 1`` is a quadratic in
    ``t`` whose coefficients are a quadratic form and an affine function of ``(x', y')``;
    it is evaluated only inside the ellipsoid's projected bounding box.
    """
    w, h = size
    xs, ys = _ray_grid(pose, size, warp)
    margin = int(np.ceil(float(max(np.abs(warp[0]).max(), np.abs(warp[1]).max())))) + 2
    rt = pose.rot.T  # columns: camera axes in head frame
    o_h = -rt @ pose.centre_cam  # camera centre in head frame
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
        g = rt / s[:, None]  # local direction = g @ (x', y', 1)
        q = g.T @ g
        ol = (o_h - m) / s
        bv = ol @ g
        cc = float(ol @ ol - 1.0)
        xb, yb = xs[y0:y1, x0:x1], ys[y0:y1, x0:x1]
        f32 = np.float32
        a_ = (
            (f32(q[0, 0]) * xb + f32(2 * q[0, 1]) * yb + f32(2 * q[0, 2])) * xb
            + (f32(q[1, 1]) * yb + f32(2 * q[1, 2])) * yb
            + f32(q[2, 2])
        )
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


def _norm(v: np.ndarray, axis: int = -1, keepdims: bool = False) -> np.ndarray | float:
    """Euclidean norm along ``axis`` (cheaper than ``np.linalg.norm`` for many short vectors);
    a Python float for one vector."""
    if v.ndim == 1 and axis in (0, -1) and not keepdims:
        return float(np.sqrt(v @ v))
    return np.sqrt((v * v).sum(axis=axis, keepdims=keepdims))


def xs_at(grid: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Values of a broadcastable 2-D grid at pixels (iy, ix)."""
    gy = iy if grid.shape[0] > 1 else 0
    gx = ix if grid.shape[1] > 1 else 0
    return grid[gy, gx]


def _warp_at(
    warp: tuple[np.ndarray, np.ndarray], x: np.ndarray, y: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Image position of projected points: the rays are warped by +D, points move by -D."""
    w, h = size
    ix = np.clip(np.rint(x), 0, w - 1).astype(np.intp)
    iy = np.clip(np.rint(y), 0, h - 1).astype(np.intp)
    return x - xs_at(warp[0], iy, ix), y - xs_at(warp[1], iy, ix)


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
