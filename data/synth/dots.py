"""SMP dots: where an artist places them, their shape, and their pigment.

A dot is a soft, slightly irregular disc of pigment in the upper dermis. Seen
through the epidermis it attenuates the skin's reflectance; pigment from
overlapping dots adds up as optical density (Beer-Lambert), so the rendered
reflectance is ``skin * exp(-sum_i profile_i * od_i)`` per linear RGB channel.

Each dot is described by a row of a :class:`DotSet` (plane millimetres), which
is both what the renderer draws and the ground truth the benchmark scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import cv2
import numpy as np

from data.colour import linear_rgb_to_lab
from data.synth.fields import blue_noise_points
from data.synth.settings import DotSettings

N_HARMONICS = 3  # radius modulation by cos(2θ), cos(3θ), cos(4θ)
# Optical-density direction of a blue (Tyndall) shift: deep black pigment
# scatters blue back and absorbs more red, so red OD rises and blue OD falls.
BLUE_SHIFT_DIR = np.array([0.55, 0.05, -0.6])


@dataclass(frozen=True)
class DotSet:
    """Dots on the scalp plane; every array has one row per dot."""

    dot_id: np.ndarray  # (N,) int64, stable across visits of a client
    xy_mm: np.ndarray  # (N, 2) centre on the scalp plane
    radius_mm: np.ndarray  # (N,) mean radius of the half-density contour
    harmonics: np.ndarray  # (N, N_HARMONICS, 2) relative cos/sin amplitudes
    softness: np.ndarray  # (N,) edge width / radius
    od_shape: np.ndarray  # (N, 3) pigment optical density direction (unit luminance)
    strength: np.ndarray  # (N,) multiplies od_shape; set from the wanted contrast
    blue: np.ndarray  # (N,) amount of blue shift along BLUE_SHIFT_DIR
    shade: np.ndarray  # (N,) index into the palette's names
    session: np.ndarray  # (N,) session number that placed the dot
    merged_with: np.ndarray  # (N,) dot_id of the dot it touches, or -1
    elongation: np.ndarray  # (N,) long / short axis of the (area-preserving) ellipse, >= 1
    angle: np.ndarray  # (N,) direction of the long axis, radians on the plane
    fresh: np.ndarray  # (N,) bool: days old (sharp, dark, reddened skin around it)
    halo_mm: np.ndarray  # (N,) reach of the redness beyond the dot's edge (0 = none)
    halo_redness: np.ndarray  # (N,) redness of that halo (skin redness scale, 0 = none)
    scab: np.ndarray  # (N,) optical density of a scab over the dot (0 = none)

    def __len__(self) -> int:
        return len(self.dot_id)

    def take(self, idx: np.ndarray) -> DotSet:
        return DotSet(**{k: v[idx] for k, v in self.__dict__.items()})

    def with_(self, **changes: np.ndarray) -> DotSet:
        return replace(self, **changes)

    @staticmethod
    def concat(a: DotSet, b: DotSet) -> DotSet:
        return DotSet(**{k: np.concatenate([v, getattr(b, k)]) for k, v in a.__dict__.items()})

    @property
    def diameter_mm(self) -> np.ndarray:
        """Equivalent-circle diameter of the half-density contour (elongation keeps the area)."""
        a2 = (self.harmonics**2).sum(axis=(1, 2))
        return 2.0 * self.radius_mm * np.sqrt(1.0 + 0.5 * a2)

    def od(self) -> np.ndarray:
        """(N, 3) optical density at the dot centre per linear RGB channel."""
        return self.strength[:, None] * self.od_shape + self.blue[:, None] * BLUE_SHIFT_DIR[None, :]


def place_dots(
    rng: np.random.Generator,
    s: DotSettings,
    width_mm: float,
    height_mm: float,
    treated: np.ndarray,
    session: int,
    palette_names: list[str],
    first_id: int = 0,
    spacing_mm: float | None = None,
    diameter_mm: float | None = None,
) -> DotSet:
    """Place one session's dots over the treated part of a frame.

    ``treated`` is a coarse HxW boolean map over the frame (True where the artist
    works). Spacing is blue-noise (hexagonal lattice, jittered, thinned), so the
    pattern is irregular but even, like a practised hand.
    """
    spacing = spacing_mm if spacing_mm is not None else rng.uniform(*s.spacing_mm)
    jitter = rng.uniform(*s.spacing_jitter)
    pts = blue_noise_points(rng, width_mm, height_mm, spacing, jitter)
    gh, gw = treated.shape
    iy = np.minimum((pts[:, 1] / height_mm * gh).astype(int), gh - 1)
    ix = np.minimum((pts[:, 0] / width_mm * gw).astype(int), gw - 1)
    pts = pts[treated[iy, ix]]
    n = len(pts)
    mean_d = diameter_mm if diameter_mm is not None else rng.uniform(*s.diameter_mm)
    cv = rng.uniform(*s.diameter_cv)
    d = np.clip(rng.normal(mean_d, cv * mean_d, n), s.diameter_mm[0] * 0.8, s.diameter_mm[1] * 1.1)

    names = list(s.palette)
    weights = np.array([s.palette[k].weight for k in names], float)
    session_shade = int(rng.choice(len(names), p=weights / weights.sum()))  # shade per session
    shape = np.array(s.palette[names[session_shade]].od_shape, float)
    shape = shape / (shape @ np.array([0.2126, 0.7152, 0.0722]))
    jit = rng.uniform(*s.shade_jitter)
    od_shape = shape[None, :] * (1.0 + rng.normal(0, jit, (n, 3)))

    irr = rng.uniform(*s.irregularity)
    harm = rng.normal(0, irr / np.sqrt(2), (n, N_HARMONICS, 2))
    soft = np.clip(rng.normal(rng.uniform(*s.edge_softness), 0.03, n), 0.05, 0.5)
    dots = DotSet(
        dot_id=np.arange(first_id, first_id + n, dtype=np.int64),
        xy_mm=pts,
        radius_mm=d / 2.0 / np.sqrt(1.0 + 0.5 * (harm**2).sum(axis=(1, 2))),
        harmonics=harm,
        softness=soft,
        od_shape=od_shape,
        strength=np.ones(n),
        blue=np.zeros(n),
        shade=np.full(n, palette_names.index(names[session_shade]), np.int64),
        session=np.full(n, session, np.int64),
        merged_with=np.full(n, -1, np.int64),
        elongation=rng.uniform(*s.elongation, n),
        angle=rng.uniform(0.0, np.pi, n),
        fresh=np.zeros(n, bool),
        halo_mm=np.zeros(n),
        halo_redness=np.zeros(n),
        scab=np.zeros(n),
    )
    return _add_merged_pairs(rng, dots, rng.uniform(*s.merged_fraction), width_mm, height_mm)


def _add_merged_pairs(
    rng: np.random.Generator, dots: DotSet, fraction: float, width_mm: float, height_mm: float
) -> DotSet:
    """Give a fraction of dots a partner that touches or overlaps them."""
    n = len(dots)
    k = rng.binomial(n, fraction) if n else 0
    if k == 0:
        return dots
    src = rng.choice(n, k, replace=False)
    partner = dots.take(src)
    ang = rng.uniform(0, 2 * np.pi, k)
    gap = rng.uniform(0.75, 1.05, k) * 2 * partner.radius_mm
    xy = partner.xy_mm + gap[:, None] * np.stack([np.cos(ang), np.sin(ang)], -1)
    ok = (xy[:, 0] >= 0) & (xy[:, 0] < width_mm) & (xy[:, 1] >= 0) & (xy[:, 1] < height_mm)
    first = int(dots.dot_id.max()) + 1
    partner = partner.with_(
        xy_mm=xy,
        harmonics=rng.permutation(partner.harmonics, axis=0),
        angle=rng.uniform(0.0, np.pi, k),
        dot_id=np.arange(first, first + k, dtype=np.int64),
        merged_with=dots.dot_id[src],
    ).take(np.flatnonzero(ok))
    merged = dots.merged_with.copy()
    merged[src[ok]] = partner.dot_id
    return DotSet.concat(dots.with_(merged_with=merged), partner)


@dataclass(frozen=True)
class DotSprites:
    """Each dot's pigment profile sampled on its own window of plane pixels."""

    flat_index: np.ndarray  # (N, P) int64 index into the raveled frame, -1 outside
    profile: np.ndarray  # (N, P) float32 pigment profile in [0, 1]
    core: np.ndarray  # (N, P) bool: the dot's core (inner half radius)


def dot_sprites(
    dots: DotSet,
    shape: tuple[int, int],
    px_per_mm: float,
) -> list[tuple[np.ndarray, DotSprites]]:
    """Sample the profiles in groups of similar window size (bounded memory).

    Profile: ``1 / (1 + exp((r - R(θ)) / w))`` with ``R(θ) = R (1 + Σ a_k cos kθ
    + b_k sin kθ)``. The edge width ``w`` is at least half a pixel, which stands in
    for area sampling of dots smaller than a pixel. cos kθ and sin kθ come from
    powers of the unit complex number (x + iy)/r, avoiding trigonometry per pixel.
    An elongated dot measures ``r`` and ``θ`` in its own frame, the long axis
    stretched by sqrt(e) and the short one shrunk by it (the area stays pi R^2).
    """
    h, w = shape
    n = len(dots)
    if n == 0:
        return []
    r_px = dots.radius_mm * px_per_mm
    edge_px = np.maximum(dots.softness * r_px, 0.5)
    root_e = np.sqrt(np.maximum(dots.elongation, 1.0))
    reach = r_px * (1 + 2 * np.abs(dots.harmonics).sum(axis=(1, 2))) + 5 * edge_px
    # rotation into each dot's frame, folded with the stretch: (u, v) = M (dx, dy)
    ca, sa = np.cos(dots.angle), np.sin(dots.angle)
    frame = np.stack([ca / root_e, sa / root_e, -sa * root_e, ca * root_e], -1).astype(np.float32)
    # window: the bounding box of the rotated ellipse of semi-axes reach x sqrt(e), reach / sqrt(e)
    major, minor = reach * root_e, reach / root_e
    half_x = np.ceil(np.hypot(major * ca, minor * sa) + 1).astype(np.int64)
    half_y = np.ceil(np.hypot(major * sa, minor * ca) + 1).astype(np.int64)
    half = half_x * 100000 + half_y
    cx = dots.xy_mm[:, 0] * px_per_mm - 0.5  # pixel centres are at integer + 0.5 mm*ppm
    cy = dots.xy_mm[:, 1] * px_per_mm - 0.5
    out = []
    cx32, cy32 = np.round(cx).astype(np.int32), np.round(cy).astype(np.int32)
    fx, fy = (cx32 - cx).astype(np.float32), (cy32 - cy).astype(np.float32)  # pixel - centre, sub-pixel part
    harm = dots.harmonics.astype(np.float32)
    r32, e32 = r_px.astype(np.float32), edge_px.astype(np.float32)
    core_r = np.maximum(0.5 * r_px, 0.75).astype(np.float32)
    for key in np.unique(half):
        group = np.flatnonzero(half == key)
        kx, ky = divmod(int(key), 100000)
        oy, ox = np.meshgrid(
            np.arange(-ky, ky + 1, dtype=np.int32), np.arange(-kx, kx + 1, dtype=np.int32), indexing="ij"
        )
        ox, oy = ox.ravel()[None, :], oy.ravel()[None, :]
        oxf, oyf = ox.astype(np.float32), oy.astype(np.float32)
        n_px = ox.shape[1]
        flat_all = np.empty((len(group), n_px), np.int32)
        prof_all = np.empty((len(group), n_px), np.float32)
        core_all = np.empty((len(group), n_px), bool)
        # chunks of ~256k samples: the float temporaries stay in cache
        step = max(1, 262144 // n_px)
        for c0 in range(0, len(group), step):
            idx = group[c0 : c0 + step]
            rows = slice(c0, c0 + len(idx))
            # int32 indices: a frame below 2**31 pixels, and half the memory of int64
            px = cx32[idx, None] + ox
            py = cy32[idx, None] + oy
            ex = oxf + fx[idx, None]
            ey = oyf + fy[idx, None]
            f = frame[idx]
            dx = f[:, 0:1] * ex
            dx += f[:, 1:2] * ey
            dy = f[:, 2:3] * ex
            dy += f[:, 3:4] * ey
            r = np.hypot(dx, dy)
            inv = np.float32(1.0) / np.maximum(r, np.float32(1e-6))
            c1, s1 = dx * inv, dy * inv
            ck, sk = c1 * c1 - s1 * s1, 2 * c1 * s1  # k = 2
            mod = np.ones_like(r)
            for j in range(N_HARMONICS):
                mod += harm[idx, j, 0][:, None] * ck + harm[idx, j, 1][:, None] * sk
                ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
            mod *= r32[idx, None]  # R(θ)
            z = r - mod
            z /= e32[idx, None]
            np.clip(z, -30, 30, out=z)
            np.exp(z, out=z)
            z += np.float32(1.0)
            np.reciprocal(z, out=prof_all[rows])  # 1 / (1 + exp((r - R(θ)) / w))
            inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
            flat_all[rows] = np.where(inside, py * np.int32(w) + px, np.int32(-1))
            np.logical_and(r <= core_r[idx, None], inside, out=core_all[rows])
        out.append((group, DotSprites(flat_all, prof_all, core_all)))
    return out


def ring_samples(
    dots: DotSet, shape: tuple[int, int], px_per_mm: float, annulus_mm: float = 0.2, n_angles: int = 16
) -> np.ndarray:
    """(N, 2 * n_angles) flat pixel indices on the skin ring around each dot, -1 outside.

    The ring starts 1.6 radii (of the long axis) + 1 px from the centre (clear of the soft edge) and is
    ``annulus_mm`` wide; it is sampled on two circles rather than filled, which is
    enough for a mean colour and keeps the cost independent of the ring's area.
    """
    h, w = shape
    r_px = dots.radius_mm * px_per_mm
    inner = 1.6 * r_px * np.sqrt(np.maximum(dots.elongation, 1.0)) + 1.0
    radii = np.stack([inner + 0.35 * annulus_mm * px_per_mm, inner + 0.9 * annulus_mm * px_per_mm], -1)
    ang = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)
    ang = np.concatenate([ang, ang + np.pi / n_angles])
    rad = np.repeat(radii, n_angles, axis=1)
    x = np.round(dots.xy_mm[:, :1] * px_per_mm - 0.5 + rad * np.cos(ang)).astype(np.int64)
    y = np.round(dots.xy_mm[:, 1:] * px_per_mm - 0.5 + rad * np.sin(ang)).astype(np.int64)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    return np.where(inside, y * w + x, -1)


def density_planes(
    dots: DotSet, sprites: list[tuple[np.ndarray, DotSprites]], shape: tuple[int, int], uptake: np.ndarray | None = None
) -> list[np.ndarray]:
    """Optical density of all dots as three flat float32 planes (R, G, B) of ``H * W``.

    Sprite samples are accumulated per channel with ``np.add.at`` (overlapping
    dots add, as optical densities do); samples whose profile is below 1e-3 (the
    square window's corners and far tail) are skipped.
    """
    h, w = shape
    planes = [np.zeros(h * w, np.float32) for _ in range(3)]
    for flat, density in _sprite_samples(dots, sprites, uptake):
        for c in range(3):
            np.add.at(planes[c], flat, density[c])
    return planes


def _sprite_samples(
    dots: DotSet,
    sprites: list[tuple[np.ndarray, DotSprites]],
    uptake: np.ndarray | None,
) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Per sprite group: flat pixel indices of the samples that matter (inside the frame,
    profile above 1e-3) and their optical density per channel (three float32 arrays)."""
    if not sprites:
        return
    od = dots.od()
    if uptake is not None:
        od = od * uptake[:, None]
    od = od.astype(np.float32)
    for idx, sp in sprites:
        rows, cols = np.nonzero((sp.flat_index >= 0) & (sp.profile > 1e-3))
        prof = sp.profile[rows, cols]
        owner = idx[rows]
        yield sp.flat_index[rows, cols], [prof * od[owner, c] for c in range(3)]


def render_density(
    dots: DotSet, sprites: list[tuple[np.ndarray, DotSprites]], shape: tuple[int, int], uptake: np.ndarray | None = None
) -> np.ndarray:
    """HxWx3 float32 optical density of all dots (``uptake`` scales each dot)."""
    h, w = shape
    return cv2.merge([p.reshape(h, w) for p in density_planes(dots, sprites, shape, uptake)])


def darken_by_dots(
    albedo: np.ndarray, dots: DotSet, sprites: list[tuple[np.ndarray, DotSprites]], uptake: np.ndarray | None = None
) -> None:
    """``albedo *= exp(-optical density of all dots)``, in place, touching only sprite pixels.

    Optical densities of overlapping dots add, so their transmittances multiply:
    each sprite sample multiplies its pixel by ``exp(-profile * od)`` with
    ``np.multiply.at`` (order-independent). Unlike :func:`render_density` this
    needs no full-frame density planes, whose fresh memory and full-frame
    ``exp`` cost more than the sprites themselves on large photos.
    """
    flat_albedo = albedo.reshape(-1, 3)
    for flat, density in _sprite_samples(dots, sprites, uptake):
        for c, trans in enumerate(density):
            np.negative(trans, out=trans)
            np.exp(trans, out=trans)
            np.multiply.at(flat_albedo[:, c], flat, trans)


def core_pixels(sprites: list[tuple[np.ndarray, DotSprites]]) -> tuple[np.ndarray, np.ndarray]:
    """Each dot's core pixels: (flat index into the raveled frame, the dot's index), one row per pixel."""
    flat, owner = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for idx, sp in sprites:
        rows, cols = np.nonzero(sp.core)
        flat.append(sp.flat_index[rows, cols])
        owner.append(idx[rows])
    return np.concatenate(flat), np.concatenate(owner)


def core_means(image: np.ndarray, sprites: list[tuple[np.ndarray, DotSprites]], n: int) -> np.ndarray:
    """(n, C) mean of ``image`` (HxWxC) over each dot's core pixels (zeros for dots without any)."""
    flat_img = image.reshape(-1, image.shape[-1])
    flat, owner = core_pixels(sprites)
    vals = flat_img[flat]
    counts = np.bincount(owner, minlength=n)
    sums = np.stack([np.bincount(owner, weights=vals[:, c], minlength=n) for c in range(flat_img.shape[1])], axis=1)
    return sums / np.maximum(counts, 1)[:, None]


def solve_strength(
    skin_rgb: np.ndarray, od_shape: np.ndarray, blue: np.ndarray, contrast_dl: np.ndarray, core_fill: float = 0.92
) -> np.ndarray:
    """Strength per dot so that its core reads ``contrast_dl`` L* darker than its skin.

    Solved by bisection on luminance (monotone in strength), vectorised over dots.
    ``core_fill`` is the mean profile over the core (the edge softens it a little).
    """
    m = np.array([0.2126, 0.7152, 0.0722])
    skin_l = linear_rgb_to_lab(skin_rgb)[:, 0]
    target_l = np.clip(skin_l - contrast_dl, 1.0, None)
    lo, hi = np.zeros(len(skin_l)), np.full(len(skin_l), 8.0)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        od = (mid[:, None] * od_shape + blue[:, None] * BLUE_SHIFT_DIR) * core_fill
        y = (skin_rgb * np.exp(-od)) @ m
        l_now = np.where(y > 0.008856, 116 * np.cbrt(y) - 16, 903.3 * y)
        darker = l_now < target_l
        hi = np.where(darker, mid, hi)
        lo = np.where(darker, lo, mid)
    return 0.5 * (lo + hi)


# Scab (dried blood and serum over a fresh puncture): optical density per linear R, G, B,
# haemoglobin-like (green and blue absorbed most), normalised to unit luminance density.
SCAB_OD_SHAPE = np.array([0.45, 1.05, 1.15]) / (np.array([0.45, 1.05, 1.15]) @ np.array([0.2126, 0.7152, 0.0722]))


def pick_fresh(rng: np.random.Generator, dots: DotSet, fraction: float) -> np.ndarray:
    """(N,) bool: ``fraction`` of the dots, the latest session's first (a photo days after it)."""
    n = len(dots)
    k = int(round(fraction * n))
    fresh = np.zeros(n, bool)
    if k:
        rank = np.argsort(-(dots.session + rng.random(n)), kind="stable")
        fresh[rank[:k]] = True
    return fresh


def restyle_fresh(
    rng: np.random.Generator,
    s: DotSettings,
    dots: DotSet,
    fresh: np.ndarray,
) -> DotSet:
    """Dots days after the session: larger, sharp, elongated 1.5-2 : 1 at random angles,
    with reddened skin around them and, on some, a scab. Other dots are left as they are."""
    k = int(fresh.sum())
    if k == 0:
        return dots
    lo, hi = s.fresh_diameter_mm
    mean_d = rng.uniform(lo, hi)
    d = np.clip(rng.normal(mean_d, 0.15 * mean_d, k), lo, hi)
    harm = dots.harmonics[fresh] * 0.5  # needle punctures: smooth outlines
    radius = d / 2.0 / np.sqrt(1.0 + 0.5 * (harm**2).sum(axis=(1, 2)))
    soft = np.clip(rng.normal(rng.uniform(*s.fresh_edge_softness), 0.01, k), 0.02, 0.2)
    red = rng.uniform(*s.fresh_redness)
    scab = rng.random(k) < rng.uniform(*s.scab_fraction)

    def put(field: np.ndarray, values) -> np.ndarray:
        out = field.astype(np.result_type(field, np.asarray(values)), copy=True)
        out[fresh] = values
        return out

    return dots.with_(
        radius_mm=put(dots.radius_mm, radius),
        harmonics=put(dots.harmonics, harm),
        softness=put(dots.softness, soft),
        elongation=put(dots.elongation, rng.uniform(*s.fresh_elongation, k)),
        angle=put(dots.angle, rng.uniform(0.0, np.pi, k)),
        fresh=put(dots.fresh, True),
        halo_mm=put(dots.halo_mm, rng.uniform(*s.fresh_redness_mm, k)),
        halo_redness=put(dots.halo_redness, red * rng.uniform(0.7, 1.3, k)),
        scab=put(dots.scab, np.where(scab, rng.uniform(0.8, 1.6, k), 0.0)),
    )


def scab_dots(rng: np.random.Generator, dots: DotSet) -> DotSet:
    """The scabs of ``dots`` as pigment blobs to darken the skin with: a crust a little
    larger than its dot, off-centre and rough-edged, dark red-brown."""
    crust = dots.take(np.flatnonzero(dots.scab > 0))
    k = len(crust)
    if k == 0:
        return crust
    shift = rng.uniform(0.0, 0.4, k) * crust.radius_mm
    a = rng.uniform(0, 2 * np.pi, k)
    return crust.with_(
        xy_mm=crust.xy_mm + shift[:, None] * np.stack([np.cos(a), np.sin(a)], -1),
        radius_mm=crust.radius_mm * rng.uniform(0.9, 1.4, k),
        harmonics=rng.normal(0, 0.12, crust.harmonics.shape),
        softness=rng.uniform(0.1, 0.25, k),
        elongation=np.sqrt(crust.elongation),
        od_shape=np.tile(SCAB_OD_SHAPE, (k, 1)),
        strength=crust.scab,
        blue=np.zeros(k),
    )
