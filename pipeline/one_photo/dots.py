"""Dot stage: from candidate centres to measured SMP dots.

Input: candidate centres (from the model's dot head or the classical detector),
the photo's L* image, its class map and a local bare-skin reference. Output, per
dot: a sub-pixel centre, a radius, an elongation, the peak darkness, and the
sample positions of its core and of its skin annulus, which the colour stage
(``pipeline.one_photo.pigment``) reads.

Everything is measured on polar samples around each centre (``cv2.remap``,
bilinear), vectorised over all dots: a 12-megapixel close-up with ~25 000 dots
costs a few hundred samples per dot, never a window per dot in Python.

Definitions (the synthetic truth uses the same geometry, see ``data/synth/dots.py``):

* darkness ``d(r) = skin_ref - L*`` at radius ``r`` (mean over angles);
* radius ``R``: where ``d(r)`` falls to half of the peak darkness (linear
  interpolation between rings): the half-maximum edge of a soft dot, which for
  the logistic profile of SMP dots is its nominal radius;
* centre: darkness-weighted centroid of the samples within ``1.2 R``
  (area-weighted, polar samples carry weight ``r``);
* core: the disc of radius ``max(R / 2, 0.75 px)``;
* skin annulus: two circles at ``1.6 R + 1 px + 0.35 w`` and ``+ 0.9 w`` with
  ``w`` = ``annulus_mm`` on the scalp, samples on hair, background, or inside
  another dot's disc left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field
from scipy.spatial import cKDTree

from data.config import Settings
from data.metrics import SCALP

__all__ = [
    "DotSettings",
    "DotGeometry",
    "RadialProfile",
    "skin_reference",
    "suppress_duplicates",
    "radial_profile",
    "sample_points",
    "footprint_mask",
    "empty_geometry",
    "nearest_index",
]


class DotSettings(Settings):
    """How dots are measured (lengths in mm on the scalp)."""

    #: Two candidates closer than this are one dot (the higher score wins).
    min_separation_mm: float = Field(0.12, gt=0)
    #: Largest radius searched for the half-maximum edge (spread dots reach ~0.45 mm).
    max_radius_mm: float = Field(0.6, gt=0)
    #: Width of the skin annulus.
    annulus_mm: float = Field(0.2, gt=0)
    #: Bare-skin reference: skin within this radius of a candidate dot is left out.
    exclude_radius_mm: float = Field(0.25, gt=0)
    #: Bare-skin reference: Gaussian sigma of the normalised convolution.
    skin_sigma_mm: float = Field(1.0, gt=0)
    #: Bare-skin reference: skin darker than the reference by this many robust sd is left out ...
    skin_clip_sd: float = Field(2.0, gt=0)
    #: ... and the reference recomputed, this many times (0 = plain normalised convolution).
    skin_iterations: int = Field(2, ge=0, le=5)
    #: Show-through's bare-skin reference: skin closer than this to hair is left out (at least one
    #: pixel). Skin between dense strands is shaded by them and mixed with their edges: taken as
    #: the reference, everything around it "shows through" (hard close-ups, with the truth's own
    #: mask: 52 pp off; with this margin 2.8 pp).
    skin_hair_margin_mm: float = Field(0.15, ge=0)
    #: Measure-and-re-centre passes (an elongated dot's centroid in a round window converges slowly).
    recentre_passes: int = Field(2, ge=1, le=8)
    #: Ring step for the radial profile, in pixels.
    ring_step_px: float = Field(0.5, gt=0)
    n_angles: int = Field(16, ge=8, le=64)


@dataclass(frozen=True)
class DotGeometry:
    """Measured dots of one photo (all arrays of length N, pixel units)."""

    xy: np.ndarray  # (N, 2) float64 sub-pixel centres
    radius_px: np.ndarray  # (N,) half-maximum radius
    peak_dl: np.ndarray  # (N,) darkness at the centre (L*)
    elongation: np.ndarray  # (N,) sqrt of the second-moment eigenvalue ratio (1 = round)
    orientation: np.ndarray  # (N,) angle of the long axis, radians in (-pi/2, pi/2]
    score: np.ndarray  # (N,) detector score

    def __len__(self) -> int:
        return len(self.xy)


def empty_geometry() -> DotGeometry:
    """No dots."""
    z = np.zeros(0)
    return DotGeometry(np.zeros((0, 2)), z, z, z, z, z)


def _downscale_factor(px_per_mm: float, sigma_mm: float) -> int:
    return max(1, int(sigma_mm * px_per_mm / 3.0))


def skin_reference(
    lstar: np.ndarray,
    bare: np.ndarray,
    px_per_mm: float,
    sigma_mm: float = 1.0,
    *,
    clip_sd: float = 2.0,
    iterations: int = 2,
) -> np.ndarray:
    """HxW float32 L* of the bare skin around each pixel.

    A normalised convolution (Gaussian, ``sigma_mm``) of L* over the ``bare``
    pixels only (scalp that is neither a candidate dot nor hair), computed on a
    block-mean copy reduced so that sigma spans ~3 pixels, then resized back.
    Lighting gradients and mottling wider than ``sigma_mm`` are followed.

    Then ``iterations`` times: bare pixels darker than the reference by more
    than ``clip_sd`` robust standard deviations of (L* - reference) over the
    bare skin are left out and the reference is computed again. What the
    detector missed (faint dots, pores, stray hair) is dark and one-sided and
    would pull the reference down; sensor noise is symmetric and mostly kept
    (a one-sided cut at 2 sd moves the mean of pure noise by ~0.05 sd). On the
    benchmark's easy close-ups this took the show-through error from ~15 to
    ~1 percentage point. Where no bare skin is near, the nearest reference is used.
    """
    ref = _normalised_mean(lstar, bare, px_per_mm, sigma_mm)
    sub = (slice(None, None, 3), slice(None, None, 3))
    for _ in range(iterations):
        resid = (lstar[sub] - ref[sub])[bare[sub]]
        if resid.size < 100:
            break
        sd = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
        keep = bare & (lstar >= ref - np.float32(max(clip_sd * sd, 1.0)))
        if not keep.any():
            break
        ref = _normalised_mean(lstar, keep, px_per_mm, sigma_mm)
    return ref


def open_skin(scalp: np.ndarray, hair: np.ndarray, occupied: np.ndarray, margin_px: float) -> np.ndarray:
    """HxW bool: scalp that is not ``occupied`` (dots and their surround) and farther than ``margin_px``
    (at least 1) from any ``hair`` pixel: skin as it looks where nothing lies on or beside it."""
    r = max(1, int(np.ceil(margin_px)))
    if not hair.any():
        return scalp & ~occupied
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    near = cv2.dilate(hair.view(np.uint8) if hair.dtype == bool else hair.astype(np.uint8), disc).view(bool)
    return scalp & ~occupied & ~near


def _normalised_mean(lstar: np.ndarray, bare: np.ndarray, px_per_mm: float, sigma_mm: float) -> np.ndarray:
    h, w = lstar.shape
    k = _downscale_factor(px_per_mm, sigma_mm)
    weight = bare.astype(np.float32)
    num = lstar * weight
    size = (max(1, w // k), max(1, h // k))
    num_s = cv2.resize(num, size, interpolation=cv2.INTER_AREA)
    den_s = cv2.resize(weight, size, interpolation=cv2.INTER_AREA)
    sig = max(0.5, sigma_mm * px_per_mm / k)
    num_s = cv2.GaussianBlur(num_s, (0, 0), sig, borderType=cv2.BORDER_REFLECT)
    den_s = cv2.GaussianBlur(den_s, (0, 0), sig, borderType=cv2.BORDER_REFLECT)
    ref = np.full(den_s.shape, np.nan, np.float32)
    ok = den_s > 1e-3
    ref[ok] = num_s[ok] / den_s[ok]
    if ok.any() and not ok.all():
        # fill holes (large hair or card areas) from the nearest valid reference
        _, (iy, ix) = nearest_index(~ok)
        ref = ref[iy, ix]
    return cv2.resize(ref, (w, h), interpolation=cv2.INTER_LINEAR)


def nearest_index(missing: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    from scipy.ndimage import distance_transform_edt

    dist, idx = distance_transform_edt(missing, return_indices=True)
    return dist, (idx[0], idx[1])


def suppress_duplicates(
    xy: np.ndarray, score: np.ndarray, min_dist_px: float, reach_px: np.ndarray | None = None
) -> np.ndarray:
    """Indices of the candidates kept: greedy by score, none closer than ``min_dist_px`` to a kept
    one of higher score, nor within that one's own ``reach_px`` (a blob's radius: two peaks inside one
    large dot are one dot)."""
    n = len(xy)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-score, kind="stable")
    far = max(min_dist_px, float(np.max(reach_px)) if reach_px is not None else 0.0)
    pairs = cKDTree(xy).query_pairs(far, output_type="ndarray")
    if len(pairs) == 0:
        return np.sort(order)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    # each pair: the lower-ranked point loses if the higher-ranked one survives
    a, b = pairs[:, 0], pairs[:, 1]
    hi = np.where(rank[a] < rank[b], a, b)
    lo = np.where(rank[a] < rank[b], b, a)
    if reach_px is not None:
        d = np.hypot(*(xy[hi] - xy[lo]).T)
        near = d < np.maximum(min_dist_px, np.asarray(reach_px, np.float64)[hi])
        hi, lo = hi[near], lo[near]
    # greedy by rank without a Python loop: a point is kept when none of its beaters is kept. Ranks
    # make the beats a DAG: settle, round by round, the points whose beaters are all settled
    state = np.zeros(n, np.int8)  # 0 open, 1 kept, 2 suppressed
    state[np.bincount(lo, minlength=n) == 0] = 1
    while True:
        open_pair = state[lo] == 0
        hi, lo = hi[open_pair], lo[open_pair]
        if len(lo) == 0:
            break
        state[lo[state[hi] == 1]] = 2  # beaten by a kept point
        open_pair = state[lo] == 0
        unsettled = np.bincount(lo[open_pair & (state[hi] == 0)], minlength=n)
        state[(state == 0) & (unsettled == 0)] = 1  # every beater settled, none kept
    state[state == 0] = 1
    return np.flatnonzero(state == 1)


def sample_points(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` (HxW or HxWxC float32) at float coordinates of any shape.

    Out-of-image samples replicate the border (callers mask them with :func:`_inside`).
    """
    shape = x.shape
    mx = np.ascontiguousarray(x, np.float32).reshape(-1)
    my = np.ascontiguousarray(y, np.float32).reshape(-1)
    n = len(mx)
    out = np.empty((n,) + image.shape[2:], image.dtype)
    # cv2.remap maps are limited to 32767 columns (and rows): the samples go as a frame of rows of
    # 32000 (in one call, which OpenCV shares between its threads), the rest as one short row, each
    # remapped straight into its place in ``out``
    step = 32000
    full = n - n % step
    spans = [(i, min(full, i + step * step), step) for i in range(0, full, step * step)]
    if full < n:
        spans.append((full, n, n - full))
    for lo, hi, cols in spans:
        frame = ((hi - lo) // cols, cols)
        cv2.remap(
            image,
            mx[lo:hi].reshape(frame),
            my[lo:hi].reshape(frame),
            cv2.INTER_LINEAR,
            dst=out[lo:hi].reshape(frame + image.shape[2:]),
            borderMode=cv2.BORDER_REPLICATE,
        )
    return out.reshape(shape + image.shape[2:])


def _inside(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    return (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)


def _half_max_radius(profile: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Radius where each row of ``profile`` (darkness vs ``radii``) first drops to half its start."""
    peak = np.maximum(profile[:, 0], 1e-6)
    half = 0.5 * peak[:, None]
    below = profile <= half
    below[:, 0] = False
    first = np.where(below.any(axis=1), below.argmax(axis=1), profile.shape[1] - 1)
    j0 = np.maximum(first - 1, 0)
    p0 = profile[np.arange(len(profile)), j0]
    p1 = profile[np.arange(len(profile)), first]
    frac = np.clip((p0 - half[:, 0]) / np.maximum(p0 - p1, 1e-6), 0.0, 1.0)
    return radii[j0] + frac * (radii[first] - radii[j0])


@dataclass(frozen=True)
class RadialProfile:
    """What the polar samples around each centre say (all N candidates, nothing dropped)."""

    xy: np.ndarray  # (N, 2) re-centred sub-pixel centres
    radius_px: np.ndarray  # (N,) half-maximum radius
    peak_dl: np.ndarray  # (N,) darkness at the centre (L*)
    elongation: np.ndarray  # (N,) sqrt of the second-moment eigenvalue ratio (1 = round)
    orientation: np.ndarray  # (N,) long-axis angle, radians


def radial_profile(
    lstar: np.ndarray, skin_ref: np.ndarray, xy: np.ndarray, px_per_mm: float, settings: DotSettings
) -> RadialProfile:
    """Measure (and twice re-centre) every candidate on polar samples; see the module docstring."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    if len(xy) == 0:
        z = np.zeros(0)
        return RadialProfile(np.zeros((0, 2)), z, z, z, z)
    ang = np.linspace(0.0, 2 * np.pi, settings.n_angles, endpoint=False)
    ca, sa = np.cos(ang), np.sin(ang)
    r_max = max(2.0, settings.max_radius_mm * px_per_mm)
    radii = np.arange(0.0, r_max + settings.ring_step_px, settings.ring_step_px)
    n_a = len(ang)
    ox = (radii[:, None] * ca[None, :]).ravel()  # (J*A,) sample offsets
    oy = (radii[:, None] * sa[None, :]).ravel()
    # moments as one matrix product: area weight r times [1, x, y, x^2, y^2, xy]
    moments = (
        np.repeat(radii, n_a)[:, None] * np.column_stack([np.ones_like(ox), ox, oy, ox * ox, oy * oy, ox * oy])
    ).astype(np.float32)
    # each candidate is measured on its own: in chunks of ~2000 (at least 1000) the samples of a chunk
    # stay in the cache, and a 12 MP close-up's ~46 000 candidates never hold their ~15 M samples
    # (and their float64 coordinates, ~0.5 GB) at once
    parts = [
        _measure(lstar, skin_ref, part, radii, ox, oy, moments, settings.recentre_passes)
        for part in np.array_split(xy, max(1, len(xy) // 2048))
    ]
    xy, radius, peak, m = (np.concatenate(a) for a in zip(*parts))
    tot = m[:, 0].astype(np.float64)
    # second moments of the darkness within 1.2 R (about the old centre) -> elongation
    sxx, syy, sxy = (m[:, 3].astype(np.float64), m[:, 4].astype(np.float64), m[:, 5].astype(np.float64))
    tr, det = sxx + syy, sxx * syy - sxy * sxy
    disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0.0))
    l1, l2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 1e-9)
    elong = np.minimum(np.sqrt(np.where(tot > 0, l1 / l2, 1.0)), 99.0)
    theta = 0.5 * np.arctan2(2 * sxy, sxx - syy)
    return RadialProfile(xy, radius, peak, elong, theta)


def _grid32(centre: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """(N, K) float32 ``centre[:, None] + offset[None, :]``, added in float64 and rounded once (what
    the float32 sample maps of :func:`sample_points` always were), without a float64 temporary."""
    out = np.empty((len(centre), len(offset)), np.float32)
    return np.add(centre[:, None], offset[None, :], out=out, casting="same_kind")


def _measure(
    lstar: np.ndarray,
    skin_ref: np.ndarray,
    xy: np.ndarray,
    radii: np.ndarray,
    ox: np.ndarray,
    oy: np.ndarray,
    moments: np.ndarray,
    passes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`radial_profile` of some candidates: their re-centred centres, half-maximum radii, centre
    darkness and the (N, 6) darkness moments of the last pass (about the centre it measured)."""
    n_r, n_a = len(radii), len(ox) // len(radii)
    for _ in range(passes):  # measure, re-centre, measure again
        lum = sample_points(lstar, _grid32(xy[:, 0], ox), _grid32(xy[:, 1], oy))  # (N, J*A) float32
        ref = sample_points(skin_ref, xy[:, 0], xy[:, 1])
        dark = np.subtract(ref[:, None], lum, out=lum)  # (N, J*A)
        d3 = dark.reshape(len(xy), n_r, n_a)
        prof = d3.mean(axis=2)
        prof[:, 0] = d3[:, :2].mean(axis=(1, 2))  # centre: average the innermost ring too
        radius = _half_max_radius(prof, radii)
        # darkness-weighted, area-weighted centroid within 1.2 R
        within = radii[None, :] <= 1.2 * radius[:, None]  # (N, J)
        wgt = np.maximum(dark, np.float32(0), out=dark)
        wgt *= np.repeat(within, n_a, axis=1)
        m = wgt @ moments  # (N, 6)
        tot = m[:, 0].astype(np.float64)
        ok = tot > 0
        shift = np.where(ok[:, None], m[:, 1:3] / np.maximum(tot, 1e-9)[:, None], 0.0)
        # never let the centroid wander beyond the dot's own radius
        norm = np.hypot(shift[:, 0], shift[:, 1])
        lim = np.maximum(radius, 0.5)
        shift *= np.minimum(1.0, lim / np.maximum(norm, 1e-9))[:, None]
        xy = xy + shift
    return xy, radius, prof[:, 0].astype(np.float64), m


def footprint_mask(shape: tuple[int, int], xy: np.ndarray, radius_px: np.ndarray | float) -> np.ndarray:
    """HxW bool: inside any disc of centre ``xy`` (N, 2) and ``radius_px`` (N or scalar, >= 0.5 px).

    Discs are rasterised together, grouped by their integer reach (a window of
    ``(2k + 1)^2`` offsets per disc): no Python loop over dots, and a pixel is
    inside when its centre is within the radius.
    """
    h, w = shape
    mask = np.zeros(h * w, bool)
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    r = np.maximum(np.broadcast_to(np.asarray(radius_px, np.float64), (len(xy),)), 0.5)
    reach = np.ceil(r).astype(np.int64)
    for k in np.unique(reach):
        sel = np.flatnonzero(reach == k)
        off = np.arange(-k, k + 1, dtype=np.int32)
        oy, ox = (a.ravel()[None, :] for a in np.meshgrid(off, off, indexing="ij"))
        for part in np.array_split(sel, max(1, len(sel) * ox.size // 4_000_000 + 1)):
            x0 = np.round(xy[part, 0]).astype(np.int32)[:, None]
            y0 = np.round(xy[part, 1]).astype(np.int32)[:, None]
            px, py = x0 + ox, y0 + oy
            dx, dy = px - xy[part, 0, None], py - xy[part, 1, None]
            inside = (dx * dx + dy * dy <= (r[part, None] ** 2)) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
            mask[py[inside].astype(np.int64) * w + px[inside]] = True
    return mask.reshape(h, w)


def core_and_annulus_points(
    geom: DotGeometry, px_per_mm_local: np.ndarray, annulus_mm: float, n_angles: int = 16
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Sample positions (x, y) of each dot's core (N, 13) and skin annulus (N, 2 * n_angles)."""
    r = geom.radius_px
    core_r = np.maximum(0.5 * r, 0.75)
    ang6 = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    # centre, 6 points at 0.45 and 6 at 0.9 of the core radius (rotated half a step)
    cr = np.concatenate([[0.0], np.full(6, 0.45), np.full(6, 0.9)])
    ca = np.concatenate([[0.0], ang6, ang6 + np.pi / 6])
    cx = geom.xy[:, 0, None] + core_r[:, None] * cr[None, :] * np.cos(ca)[None, :]
    cy = geom.xy[:, 1, None] + core_r[:, None] * cr[None, :] * np.sin(ca)[None, :]
    inner = 1.6 * r + 1.0
    wpx = annulus_mm * px_per_mm_local
    ang = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)
    ang = np.concatenate([ang, ang + np.pi / n_angles])
    rad = np.concatenate(
        [np.repeat((inner + 0.35 * wpx)[:, None], n_angles, 1), np.repeat((inner + 0.9 * wpx)[:, None], n_angles, 1)],
        axis=1,
    )
    ax = geom.xy[:, 0, None] + rad * np.cos(ang)[None, :]
    ay = geom.xy[:, 1, None] + rad * np.sin(ang)[None, :]
    return (cx, cy), (ax, ay)


def annulus_valid(ax: np.ndarray, ay: np.ndarray, labels: np.ndarray, occupied: np.ndarray) -> np.ndarray:
    """Which annulus samples lie on bare scalp (in the image, not hair, not in another dot)."""
    h, w = labels.shape
    inside = _inside(ax, ay, (h, w))
    ix = np.clip(np.floor(ax + 0.5).astype(np.int64), 0, w - 1)
    iy = np.clip(np.floor(ay + 0.5).astype(np.int64), 0, h - 1)
    return inside & (labels[iy, ix] == SCALP) & ~occupied[iy, ix]


def local_px_per_mm(xy: np.ndarray, image_to_plane: np.ndarray | None, nominal: float) -> np.ndarray:
    """Scale (px per mm) at each point: sqrt|det J| of the plane -> image map there."""
    if image_to_plane is None or len(xy) == 0:
        return np.full(len(xy), float(nominal))
    hm = np.asarray(image_to_plane, np.float64)
    x, y = xy[:, 0], xy[:, 1]
    u = hm[0, 0] * x + hm[0, 1] * y + hm[0, 2]
    v = hm[1, 0] * x + hm[1, 1] * y + hm[1, 2]
    q = hm[2, 0] * x + hm[2, 1] * y + hm[2, 2]
    # Jacobian of (u/q, v/q) w.r.t. (x, y): mm per px; its determinant's inverse root is px per mm
    j00 = (hm[0, 0] * q - u * hm[2, 0]) / q**2
    j01 = (hm[0, 1] * q - u * hm[2, 1]) / q**2
    j10 = (hm[1, 0] * q - v * hm[2, 0]) / q**2
    j11 = (hm[1, 1] * q - v * hm[2, 1]) / q**2
    det = np.abs(j00 * j11 - j01 * j10)
    return 1.0 / np.sqrt(np.maximum(det, 1e-300))
