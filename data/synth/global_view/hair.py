"""The hair of a global scene: 3-D strands grown on the cranium, accumulated per pixel as optical depth.

See :mod:`data.synth.global_view` for the model (strands far thinner than a pixel, merged
beyond ``MAX_STRANDS``, sampled more sparsely beyond a sample budget).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data.synth.global_view.backdrop import _lab_rgb
from data.synth.global_view.head import CRANIUM, Head, Hits, Pose, _norm, _warp_at
from data.synth.global_view.scalp import ScalpPattern
from data.synth.hair import HAIR_LAB, HairParams, _strand_tones

MAX_STRANDS = 25000
"""Above this many visible hairs, strands are merged (while they stay thinner than half a pixel)."""

_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)


@dataclass
class HairAccum:
    """Per-pixel sums over hair samples, each weighted by its covered area (px^2)."""

    box: tuple[int, int, int, int]  # (y0, y1, x0, x1): the image region the sums cover
    tau: np.ndarray  # covered area: optical depth of the hair layer
    bright: np.ndarray  # x fibre brightness (relative to the client's hair colour)
    lit: np.ndarray  # x brightness x diffuse shading
    spec: np.ndarray  # x specular sheen


def _strand_points(
    rng: np.random.Generator,
    head: Head,
    p0: np.ndarray,
    n0: np.ndarray,
    t0: np.ndarray,
    lengths: np.ndarray,
    curl: np.ndarray,
    lift_mm: float,
    n_points: int,
) -> np.ndarray:
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
        ax = head.axes_of(q)  # q and its radial surface point share the quadrant
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


def _splat_strands(
    pts: np.ndarray,
    width_mm: np.ndarray,
    bright: np.ndarray,
    shadow: np.ndarray,
    pose: Pose,
    hits: Hits,
    warp,
    size: tuple[int, int],
    light: dict,
    head: Head,
    acc: HairAccum,
    budget: int,
    rng: np.random.Generator,
) -> int:
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
    wseg = (
        (width_mm[sel] * bundle)[:, None]
        * pose.focal_px
        / np.maximum(0.5 * (z[:, 1:] + z[:, :-1]), 1.0)
        * seg_len
        / n_sub
    ).ravel()

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
    sums: list[np.ndarray] = [np.bincount(flat, wv[:, c], size_) for c in range(4)]
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


def render_head_hair(
    rng: np.random.Generator,
    hp: HairParams,
    scalp: ScalpPattern,
    head: Head,
    pose: Pose,
    hits: Hits,
    warp,
    size: tuple[int, int],
    light: dict,
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
    lengths = np.where(is_long, hp.long_length_mm * rng.uniform(0.5, 1.3, n), rng.uniform(*hp.stubble_length_mm, n))
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
    reach = int(
        np.ceil(
            (1.3 * max(hp.long_length_mm, hp.stubble_length_mm[1]) + 10.0)
            * pose.focal_px
            / max(pose.centre_cam[2] - head.width_mm, 1.0)
        )
    )
    cy, cx = np.divmod(hits.flat[hits.part.ravel()[hits.flat] == CRANIUM], w)
    if len(cy):
        box = (
            max(int(cy.min()) - reach, 0),
            min(int(cy.max()) + reach + 1, h),
            max(int(cx.min()) - reach, 0),
            min(int(cx.max()) + reach + 1, w),
        )
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
        drawn += _splat_strands(
            pts, widths[st], bright[st], shadow[st], pose, hits, warp, size, light, head, acc, budget // 3, rng
        )
    if is_long.any():
        lift = float(rng.uniform(1.0, 7.0))
        # enough points for the curvature, fewer when strands are short in pixels
        len_px = hp.long_length_mm * pose.focal_px / pose.centre_cam[2]
        n_pts = int(np.clip(round(len_px / 12.0) + 2, 4, 8))
        pts = _strand_points(
            rng, head, p0[is_long], n0[is_long], t0[is_long], lengths[is_long], curl[is_long], lift, n_pts
        )
        drawn += _splat_strands(
            pts,
            widths[is_long],
            bright[is_long],
            shadow[is_long],
            pose,
            hits,
            warp,
            size,
            light,
            head,
            acc,
            budget,
            rng,
        )
    return acc, drawn
