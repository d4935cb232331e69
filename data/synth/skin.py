"""Scalp skin albedo: tone, mottling, redness, pores, follicle openings, scars,
and the skin's look-alikes of SMP dots: creases, wrinkles, crease junctions,
freckles and naevi, redness around fresh dots.

Everything here is *reflectance* (linear RGB in [0, 1]) on the scalp plane,
before light and camera. Modulations are multiplicative in linear RGB, which
is how absorbers (melanin, haemoglobin, shadowed pits) combine. Look-alike
contrasts are given in L* on skin of L* 60 and turned into the fraction of
light they absorb (:func:`absorbed_fraction`), so that on darker or lighter
skin they keep their physical strength rather than their L* difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

from data.colour import lab_to_linear_rgb
from data.synth.fields import poisson_points, smooth_field
from data.synth.settings import SkinSettings

# Direction in linear RGB along which haemoglobin (redness) changes reflectance:
# green and blue are absorbed, red much less.
_REDNESS_DIR = np.array([-0.05, -0.55, -0.45], np.float32)
# Melanin optical density per linear R, G, B (absorption falls with wavelength,
# about lambda^-3.5 at 610 / 550 / 465 nm), normalised to unit luminance density.
_MELANIN_OD = np.array([0.70, 1.0, 1.8]) / (np.array([0.70, 1.0, 1.8]) @ np.array([0.2126, 0.7152, 0.0722]))
REFERENCE_L = 60.0
"""Skin L* at which look-alike contrasts are specified."""


def _y_of_l(lstar: np.ndarray | float) -> np.ndarray:
    lstar = np.asarray(lstar, float)
    f = (lstar + 16.0) / 116.0
    return np.where(lstar > 8.0, f**3, lstar / 903.3)


def absorbed_fraction(contrast_dl: np.ndarray | float) -> np.ndarray:
    """Fraction of the light a feature absorbs so that skin of L* 60 reads ``contrast_dl`` darker."""
    return 1.0 - _y_of_l(REFERENCE_L - np.asarray(contrast_dl, float)) / _y_of_l(REFERENCE_L)


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
    # look-alikes: per-client values, and per-feature ranges drawn while rendering
    crease_coverage: float = 0.0
    crease_cell_mm: float = 1.0
    crease_width_mm: float = 0.05
    crease_contrast_dl: float = 0.0
    junction_contrast_dl: tuple[float, float] = (0.0, 0.0)
    junctions_per_cm2: float = 0.0
    wrinkles_per_cm2: float = 0.0
    wrinkle_width_mm: tuple[float, float] = (0.1, 0.1)
    wrinkle_contrast_dl: tuple[float, float] = (0.0, 0.0)
    freckles_per_cm2: float = 0.0
    freckle_diameter_mm: tuple[float, float] = (1.0, 1.0)
    freckle_contrast_dl: tuple[float, float] = (0.0, 0.0)
    naevi_per_cm2: float = 0.0
    naevus_diameter_mm: tuple[float, float] = (1.0, 1.0)
    naevus_contrast_dl: tuple[float, float] = (0.0, 0.0)
    lookalikes: dict[str, int] = field(default_factory=dict)
    """How many of each look-alike a rendered photo shows (filled per photo, see closeup)."""


def draw_skin(rng: np.random.Generator, s: SkinSettings) -> SkinParams:
    ftype = int(rng.integers(s.fitzpatrick[0], s.fitzpatrick[1] + 1))
    base = np.array(s.tone_lab[ftype], float) + rng.normal(0, 1, 3) * np.array(s.tone_jitter_lab)
    looks = _draw_lookalikes(rng, s)
    return SkinParams(
        fitzpatrick=ftype,
        tone_lab=cast(tuple[float, float, float], tuple(float(v) for v in base)),  # base has 3 values
        mottling=float(rng.uniform(*s.mottling)),
        pore_density_per_cm2=float(rng.uniform(*s.pore_density_per_cm2)),
        pore_diameter_mm=float(rng.uniform(*s.pore_diameter_mm)),
        pore_depth=float(rng.uniform(*s.pore_depth)),
        redness=float(rng.uniform(*s.redness)),
        oiliness=float(rng.uniform(*s.oiliness)),
        scar=bool(rng.random() < s.scar_probability),
        scar_width_mm=float(rng.uniform(*s.scar_width_mm)),
        scar_pigment_uptake=float(rng.uniform(*s.scar_pigment_uptake)),
        **looks,
    )


def _draw_lookalikes(rng: np.random.Generator, s: SkinSettings) -> dict:
    """Per-client look-alike parameters (drawn in a fixed order)."""
    return dict(
        crease_coverage=float(rng.uniform(*s.crease_coverage)),
        crease_cell_mm=float(rng.uniform(*s.crease_cell_mm)),
        crease_width_mm=float(rng.uniform(*s.crease_width_mm)),
        crease_contrast_dl=float(rng.uniform(*s.crease_contrast_dl)),
        junction_contrast_dl=tuple(s.junction_contrast_dl),
        junctions_per_cm2=float(rng.uniform(*s.junctions_per_cm2)),
        wrinkles_per_cm2=float(rng.uniform(*s.wrinkles_per_cm2)),
        wrinkle_width_mm=tuple(s.wrinkle_width_mm),
        wrinkle_contrast_dl=tuple(s.wrinkle_contrast_dl),
        freckles_per_cm2=float(rng.uniform(*s.freckles_per_cm2)),
        freckle_diameter_mm=tuple(s.freckle_diameter_mm),
        freckle_contrast_dl=tuple(s.freckle_contrast_dl),
        naevi_per_cm2=float(rng.uniform(*s.naevi_per_cm2)),
        naevus_diameter_mm=tuple(s.naevus_diameter_mm),
        naevus_contrast_dl=tuple(s.naevus_contrast_dl),
    )


@dataclass(frozen=True)
class SkinLayer:
    albedo: np.ndarray
    """HxWx3 float32 linear RGB reflectance of bare skin (pores and scars included)."""
    scar: np.ndarray
    """HxW float32 in [0, 1]: how much of each pixel is scar tissue."""
    oil: np.ndarray
    """HxW float32 >= 0: specular strength (oily sheen), used by the camera."""
    marks: dict[str, np.ndarray] = field(default_factory=dict)
    """Plane pixel positions (K, 2) of each look-alike kind drawn (pores, creases, ...)."""


def scar_band(rng: np.random.Generator, shape: tuple[int, int], px_per_mm: float, width_mm: float) -> np.ndarray:
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
    small = cast(NDArray[np.float32], cv2.GaussianBlur(small, (0, 0), max(0.5, 0.15 * thick)))  # keeps float32
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def splat(
    shape: tuple[int, int],
    xy_px: np.ndarray,
    weights: np.ndarray,
    sigma_px: float,
) -> np.ndarray:
    """Sum of Gaussian blobs: impulses at ``xy_px`` with ``weights``, blurred once.

    Blurring one impulse image costs the same whatever the number of blobs,
    which is why pores and follicle openings are drawn this way.
    """
    h, w = shape
    img: NDArray[np.float32] = np.zeros(h * w, np.float32)
    if len(xy_px):
        ix = np.clip(np.round(xy_px[:, 0]).astype(np.int64), 0, w - 1)
        iy = np.clip(np.round(xy_px[:, 1]).astype(np.int64), 0, h - 1)
        np.add.at(img, iy * w + ix, np.asarray(weights, np.float32))
    img = img.reshape(h, w)
    if sigma_px > 0.3:
        # a unit impulse blurred keeps its sum; rescale so the peak equals the weight
        cv2.GaussianBlur(img, (0, 0), sigma_px, dst=img)  # in place: no second frame
        img *= np.float32(2 * np.pi * sigma_px**2)
    return img


def _low_res_factor(px_per_mm: float) -> int:
    """Raster reduction for the smooth parts of the skin (features >= 1 mm).

    At the reduced raster 1 mm still spans at least 2.5 pixels, so bilinear
    upsampling leaves no visible steps.
    """
    return int(np.clip(px_per_mm // 2.5, 1, 8))


def render_skin(
    rng: np.random.Generator,
    p: SkinParams,
    shape: tuple[int, int],
    px_per_mm: float,
    follicles_px: np.ndarray,
    follicle_open: np.ndarray,
    extra_redness: float = 0.0,
    redness_spots: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> SkinLayer:
    """Render bare scalp skin at ``px_per_mm`` over ``shape`` (H, W).

    ``follicles_px`` are hair follicle positions (pixels); ``follicle_open`` (0-1)
    says how visible each opening is (empty, miniaturised follicles show most).
    ``redness_spots`` = (positions px (K, 2), reach px (K,), redness (K,)): reddened
    skin around fresh dots (erythema), added to the skin's redness.

    Tone, mottling, redness, freckles, naevi, scars and oil vary over millimetres:
    they are combined on a raster reduced by ``_low_res_factor`` and upsampled once;
    only pores, follicle openings, creases and crease junctions are drawn at full
    resolution.
    """
    h, w = shape
    q = _low_res_factor(px_per_mm)
    low = (-(-h // q), -(-w // q))
    base = lab_to_linear_rgb(np.array(p.tone_lab, float)).astype(np.float32)
    base = np.clip(base, 0.005, 1.0)

    # low-frequency mottling of brightness (melanin) and of redness (vessels)
    mot = smooth_field(rng, low, 4.0 * px_per_mm / q, octaves=3, persistence=0.55)
    red = smooth_field(rng, low, 6.0 * px_per_mm / q, octaves=2, persistence=0.5)
    red = p.redness + extra_redness + 0.15 * red
    if redness_spots is not None and len(redness_spots[0]):
        xy, reach, amount = redness_spots
        red += splat(low, np.asarray(xy, float) / q, amount, float(np.median(reach)) / q / 1.5)
    red = np.clip(red, 0.0, 1.5)

    scar_low = scar_band(rng, low, px_per_mm / q, p.scar_width_mm) if p.scar else np.zeros(low, np.float32)

    gain = 1.0 + p.mottling * mot * (1.0 - 0.8 * scar_low)
    # pores: many small pits; fewer on scars (smooth tissue)
    area_cm2 = h * w / px_per_mm**2 / 100.0
    step = max(1, 16 // q)
    pores = poisson_points(rng, (1.0 - 0.85 * scar_low[::step, ::step]), p.pore_density_per_cm2 * area_cm2)
    pores_px = pores * np.array([w, h])
    depth = p.pore_depth * rng.uniform(0.5, 1.2, len(pores_px))
    creases = crease_network(rng, p, shape, px_per_mm)
    junctions = creases["junctions"]
    jdepth = absorbed_fraction(rng.uniform(*p.junction_contrast_dl, len(junctions)))
    # pores, crease junctions and follicle openings are all pits about 0.1 mm across: one
    # impulse image, one blur (the blur costs the same whatever the number of pits)
    sigma = 0.5 * (0.5 * p.pore_diameter_mm + 0.05) * px_per_mm
    pit = splat(
        shape,
        np.concatenate([pores_px, junctions, np.asarray(follicles_px, float).reshape(-1, 2)]),
        np.concatenate([depth, jdepth, 0.35 * np.asarray(follicle_open, float)]),
        sigma,
    )
    # pit -> transmitted fraction, clip(1 - pit, 0.3, 1), in place
    np.subtract(np.float32(1.0), pit, out=pit)
    np.clip(pit, 0.3, 1.0, out=pit)
    if creases["canvas"] is not None:
        # crease shadows: the canvas holds depth in 1/255 steps of the deepest line
        lut = (1.0 - np.arange(256) * (creases["depth_max"] / 255.0)).astype(np.float32)
        cv2.multiply(pit, cv2.LUT(creases["canvas"], lut), dst=pit)

    albedo_low = np.empty((*low, 3), np.float32)
    scar_tint = (
        np.array([1.10, 1.02, 1.04], np.float32) if rng.random() < 0.5 else np.array([1.12, 0.93, 0.95], np.float32)
    )  # lighter, or pinker
    for c in range(3):
        ch = base[c] * gain * (1.0 + _REDNESS_DIR[c] * 0.35 * red)
        ch *= 1.0 + (scar_tint[c] - 1.0) * scar_low
        albedo_low[..., c] = ch
    spots_od, spots = pigmented_spots(rng, p, low, px_per_mm / q)
    if spots_od is not None:
        for c in range(3):
            albedo_low[..., c] *= np.exp(-_MELANIN_OD[c] * spots_od)
    np.clip(albedo_low, 0.0, 1.0, out=albedo_low)
    albedo = _upsample(albedo_low, shape)
    albedo *= pit[..., None]

    oil_low = np.clip(smooth_field(rng, low, 8.0 * px_per_mm / q, octaves=2) - 0.3, 0, None)
    oil = _upsample((p.oiliness * oil_low).astype(np.float32), shape)
    scar = _upsample(scar_low, shape) if p.scar else np.zeros(shape, np.float32)
    marks = {
        "pores": pores_px,
        "creases": creases["segments"],
        "crease_junctions": junctions,
        "wrinkles": creases["wrinkles"],
        "freckles": spots["freckles"] * q,
        "naevi": spots["naevi"] * q,
    }
    return SkinLayer(albedo=albedo, scar=scar, oil=oil, marks=marks)


def _lattice_edges(ni: int, nj: int) -> np.ndarray:
    """(E, 2) flat node indices of a triangular lattice of ``nj`` rows x ``ni`` columns."""
    idx = np.arange(ni * nj).reshape(nj, ni)
    pairs = [
        np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], -1),  # along a row
        np.stack([idx[:-1, :].ravel(), idx[1:, :].ravel()], -1),  # to the next row
        np.stack([idx[:-1, 1:].ravel(), idx[1:, :-1].ravel()], -1),
    ]  # diagonal
    return np.concatenate(pairs)


def crease_network(
    rng: np.random.Generator,
    p: SkinParams,
    shape: tuple[int, int],
    px_per_mm: float,
) -> dict:
    """Skin lines, their junctions and long wrinkles, drawn as shadows into one canvas.

    Creased skin covers ``crease_coverage`` of the frame in patches (one side of a
    smooth field's level). There, skin lines form a jittered, stretched triangular
    mesh of ``crease_cell_mm`` whose edges are kept at random (about 60 %), which
    leaves the irregular polygons of the skin's microrelief; an edge is a slightly
    bent three-point line. Where three or more kept lines meet, a few crossings per
    cm^2 (``junctions_per_cm2``) are deep pits (returned, drawn with the pores).
    Wrinkles are long, gently curved folds at a common direction. Returns the
    canvas (uint8, depth in 1/255 of ``depth_max``; None when nothing was drawn),
    segment midpoints, junction positions and wrinkle midpoints (plane pixels).
    """
    h, w = shape
    empty = np.zeros((0, 2))
    out: dict[str, np.ndarray | float | None] = {
        "canvas": None,
        "depth_max": 0.0,
        "segments": empty,
        "junctions": empty,
        "wrinkles": empty,
    }
    area_cm2 = h * w / px_per_mm**2 / 100.0
    strokes: list[tuple[np.ndarray, float, float]] = []  # (polylines px, width px, depth)
    if p.crease_coverage > 0 and p.crease_contrast_dl >= 0:
        gh, gw = max(2, int(np.ceil(h / px_per_mm / 2.0))), max(2, int(np.ceil(w / px_per_mm / 2.0)))
        field_ = smooth_field(rng, (gh, gw), 6.0, octaves=2)  # 2 mm cells: patches ~ 12 mm
        creased = (
            field_ >= np.quantile(field_, 1.0 - p.crease_coverage)
            if p.crease_coverage < 0.999
            else np.ones((gh, gw), bool)
        )
        c = p.crease_cell_mm * px_per_mm
        stretch, phi = rng.uniform(1.0, 1.5), rng.uniform(0.0, np.pi)
        rot = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
        basis = rot @ np.diag([stretch, 1.0 / stretch]) @ np.array([[c, c / 2.0], [0.0, c * np.sqrt(3) / 2.0]])
        centre = np.array([w / 2.0, h / 2.0])
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float) - centre
        ij = corners @ np.linalg.inv(basis).T
        (i0, j0), (i1, j1) = np.floor(ij.min(0)).astype(int) - 1, np.ceil(ij.max(0)).astype(int) + 2
        jj, ii = np.mgrid[j0:j1, i0:i1]
        nodes = np.stack([ii.ravel(), jj.ravel()], -1) @ basis.T + centre
        nodes += rng.normal(0.0, 0.2 * c, nodes.shape)
        gx = np.clip((nodes[:, 0] / w * gw).astype(int), 0, gw - 1)
        gy = np.clip((nodes[:, 1] / h * gh).astype(int), 0, gh - 1)
        active = (
            creased[gy, gx] & (nodes[:, 0] > -c) & (nodes[:, 0] < w + c) & (nodes[:, 1] > -c) & (nodes[:, 1] < h + c)
        )
        edges = _lattice_edges(i1 - i0, j1 - j0)
        edges = edges[active[edges[:, 0]] & active[edges[:, 1]]]
        edges = edges[rng.random(len(edges)) < 0.6]
        a, b = nodes[edges[:, 0]], nodes[edges[:, 1]]
        d = b - a
        bend = rng.normal(0.0, 0.08, len(edges))[:, None] * np.stack([-d[:, 1], d[:, 0]], -1)
        mid = 0.5 * (a + b) + bend
        strokes.append(
            (np.stack([a, mid, b], 1), p.crease_width_mm * px_per_mm, float(absorbed_fraction(p.crease_contrast_dl)))
        )
        inside = (mid[:, 0] >= 0) & (mid[:, 0] < w) & (mid[:, 1] >= 0) & (mid[:, 1] < h)
        out["segments"] = mid[inside]
        degree = np.bincount(edges.ravel(), minlength=len(nodes))
        cand = np.flatnonzero((degree >= 3) & active)
        cand = cand[(nodes[cand, 0] >= 0) & (nodes[cand, 0] < w) & (nodes[cand, 1] >= 0) & (nodes[cand, 1] < h)]
        k = min(len(cand), int(rng.poisson(p.junctions_per_cm2 * area_cm2 * creased.mean())))
        out["junctions"] = nodes[rng.choice(cand, k, replace=False)] if k else empty
    n_wr = int(rng.poisson(p.wrinkles_per_cm2 * area_cm2))
    if n_wr:
        direction = rng.uniform(0.0, np.pi) + rng.normal(0.0, 0.2, n_wr)
        length = rng.uniform(5.0, 30.0, n_wr) * px_per_mm
        bend = rng.normal(0.0, 0.04, n_wr) / px_per_mm  # radians per pixel
        t = np.linspace(-0.5, 0.5, 10)[None, :] * length[:, None]
        theta = direction[:, None] + bend[:, None] * t
        start = rng.uniform(0.0, 1.0, (n_wr, 2)) * np.array([w, h])
        step = np.diff(t, axis=1, prepend=t[:, :1])
        path = np.stack(
            [start[:, :1] + np.cumsum(np.cos(theta) * step, 1), start[:, 1:] + np.cumsum(np.sin(theta) * step, 1)], -1
        )
        widths = rng.uniform(*p.wrinkle_width_mm, n_wr) * px_per_mm
        depths = absorbed_fraction(rng.uniform(*p.wrinkle_contrast_dl, n_wr))
        for k in range(n_wr):  # a handful of folds per photo
            strokes.append((path[k : k + 1], float(widths[k]), float(depths[k])))
        out["wrinkles"] = path[:, 5]
    strokes = [s for s in strokes if len(s[0]) and s[2] > 0]
    if not strokes:
        return out
    depth_max = max(s[2] for s in strokes)
    canvas = np.zeros((h, w), np.uint8)
    widest = 0.0
    for lines, width_px, depth in strokes:
        thick = max(1, int(round(width_px)))
        # a line narrower than a pixel is drawn fainter (its coverage), as hair is
        value = int(round(255 * depth / depth_max * min(1.0, width_px / thick)))
        pts = np.round(lines * 16.0).astype(np.int32)
        cv2.polylines(canvas, list(pts), False, value, thick, cv2.LINE_AA, shift=4)
        widest = max(widest, width_px)
    if widest > 2.5:  # at macro scales the shadow of a fold has soft flanks
        cv2.GaussianBlur(canvas, (0, 0), 0.3 * widest, dst=canvas)
    out.update(canvas=canvas, depth_max=depth_max)
    return out


def pigmented_spots(
    rng: np.random.Generator,
    p: SkinParams,
    shape: tuple[int, int],
    px_per_mm: float,
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Freckles (irregular, light brown) and naevi (round, darker) as melanin optical
    density on a raster of ``shape`` at ``px_per_mm`` (the skin's low-resolution raster).

    Diameters are log-uniform (small spots are the commoner). Returns the density
    (None when there are no spots) and the centres of each kind (raster pixels).
    """
    h, w = shape
    area_cm2 = h * w / px_per_mm**2 / 100.0
    kinds = (
        ("freckles", p.freckles_per_cm2, p.freckle_diameter_mm, p.freckle_contrast_dl, 0.09),
        ("naevi", p.naevi_per_cm2, p.naevus_diameter_mm, p.naevus_contrast_dl, 0.03),
    )
    polys, ods, centres = [], [], {}
    n_vert = 24
    theta = np.linspace(0.0, 2 * np.pi, n_vert, endpoint=False)[None, :]
    for name, density, diam, contrast, rough in kinds:
        n = int(rng.poisson(density * area_cm2))
        xy = rng.uniform(0.0, 1.0, (n, 2)) * np.array([w, h])
        centres[name] = xy
        if n == 0:
            continue
        d = np.exp(rng.uniform(np.log(diam[0]), np.log(diam[1]), n)) * px_per_mm
        elong = rng.uniform(1.0, 1.4, n)[:, None]
        ang = rng.uniform(0.0, np.pi, n)[:, None]
        r = (
            0.5
            * d[:, None]
            * (
                1.0
                + sum(
                    rng.normal(0.0, rough, (n, 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi, (n, 1)))
                    for k in (2, 3, 4)
                )
            )
        )
        u, v = r * np.cos(theta) * np.sqrt(elong), r * np.sin(theta) / np.sqrt(elong)
        pts = np.stack(
            [xy[:, :1] + u * np.cos(ang) - v * np.sin(ang), xy[:, 1:] + u * np.sin(ang) + v * np.cos(ang)], -1
        )
        polys.append(pts)
        ods.append(-np.log(1.0 - absorbed_fraction(rng.uniform(*contrast, n))))
    if not polys:
        return None, centres
    pts_all, od = np.concatenate(polys), np.concatenate(ods)
    od_max = float(od.max())
    if od_max <= 0:
        return None, centres
    canvas = np.zeros((h, w), np.uint8)
    value = np.clip(np.round(255 * od / od_max), 1, 255).astype(int)
    fixed = np.round(pts_all * 16.0).astype(np.int32)
    for v in np.unique(value):  # one call per density level
        cv2.fillPoly(canvas, list(fixed[value == v]), int(v), cv2.LINE_AA, shift=4)
    dens = canvas.astype(np.float32) * np.float32(od_max / 255.0)
    soft = 0.08 * px_per_mm  # soft border of a macule, ~0.1 mm
    if soft >= 0.4:
        cv2.GaussianBlur(dens, (0, 0), soft, dst=dens)
    return dens, centres


def _upsample(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    if img.shape[:2] == (h, w):
        return np.ascontiguousarray(img)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
