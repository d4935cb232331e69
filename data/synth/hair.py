"""Hair: thinning patterns, follicles, and strands drawn as tapered curves.

Strands are polylines drawn with OpenCV's anti-aliased line rasteriser, which
handles tens of thousands of curves per call in C; this module only decides
where the curves go and how wide and dark they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy.special import expit

from data.colour import lab_to_linear_rgb
from data.synth.fields import poisson_points, smooth_field
from data.synth.settings import HairSettings

# CIELAB of hair shades (fibre colour as seen lying on skin, diffuse)
HAIR_LAB = {
    "black": (14.0, 1.0, 1.5),
    "brown": (27.0, 6.0, 12.0),
    "blond": (58.0, 5.0, 24.0),
    "grey": (55.0, 0.0, 3.0),  # a mix of pigmented and white fibres, see _strand_tones
    "red": (38.0, 20.0, 28.0),  # copper to auburn (not among the defaults: asked for with hair.colours)
}


@dataclass(frozen=True)
class HairParams:
    density_per_cm2: float
    pattern: str
    thinning_strength: float
    colour: str
    width_mm: float
    stubble_length_mm: tuple[float, float]
    long_fraction: float
    long_length_mm: float
    curl: float
    flow_angle: float
    # look-alikes: per-client fractions and densities, per-item ranges drawn while rendering
    cut_end_fraction: float = 0.0
    cut_end_length_mm: tuple[float, float] = (0.03, 0.15)
    cut_end_width_mm: tuple[float, float] = (0.06, 0.12)
    fragments_per_cm2: float = 0.0
    fragment_length_mm: tuple[float, float] = (0.1, 0.35)
    vellus_fraction: float = 0.0
    vellus_length_mm: tuple[float, float] = (0.3, 2.0)
    vellus_width_mm: tuple[float, float] = (0.015, 0.04)


def draw_hair(rng: np.random.Generator, s: HairSettings) -> HairParams:
    lo, hi = s.stubble_length_mm
    a = rng.uniform(lo, hi)
    looks: dict[str, Any] = dict(
        cut_end_fraction=float(rng.uniform(*s.cut_end_fraction)),
        cut_end_length_mm=tuple(s.cut_end_length_mm),
        cut_end_width_mm=tuple(s.cut_end_width_mm),
        fragments_per_cm2=float(rng.uniform(*s.fragments_per_cm2)),
        fragment_length_mm=tuple(s.fragment_length_mm),
        vellus_fraction=float(rng.uniform(*s.vellus_fraction)),
        vellus_length_mm=tuple(s.vellus_length_mm),
        vellus_width_mm=tuple(s.vellus_width_mm),
    )
    return HairParams(
        density_per_cm2=float(rng.uniform(*s.follicle_density_per_cm2)),
        pattern=str(rng.choice(s.patterns)),
        thinning_strength=float(rng.uniform(*s.thinning_strength)),
        colour=str(rng.choice(s.colours)),
        width_mm=float(rng.uniform(*s.width_mm)),
        stubble_length_mm=(float(max(lo, a * 0.6)), float(min(hi, a * 1.4))),
        long_fraction=float(rng.uniform(*s.long_fraction)),
        long_length_mm=float(rng.uniform(*s.long_length_mm)),
        curl=float(rng.uniform(*s.curl)),
        flow_angle=float(rng.uniform(0, 2 * np.pi)),
        **looks,
    )


def thinning_map(rng: np.random.Generator, pattern: str, strength: float, shape: tuple[int, int]) -> np.ndarray:
    """Relative hair density (0-1) over a frame, on a coarse grid of ``shape``.

    A close-up sees a few centimetres of a head-scale pattern: a crown whorl's
    edge, a receding hairline crossing the frame, round alopecia patches, or
    diffuse thinning with patchy variation.
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = xx / max(w - 1, 1), yy / max(h - 1, 1)
    noise = smooth_field(rng, shape, max(h, w) / 3.0, octaves=2)
    dens: np.ndarray  # float32 or float64 by pattern; float32 on return
    if pattern == "none":
        dens = np.ones(shape, np.float32)
    elif pattern == "diffuse":
        dens = np.full(shape, 1.0 - 0.8 * strength, np.float32) + 0.12 * noise
    elif pattern == "crown":
        cx, cy = rng.uniform(-0.2, 1.2), rng.uniform(-0.2, 1.2)
        rad = rng.uniform(0.3, 0.9)
        d = np.hypot(u - cx, v - cy) / rad
        dens = 1.0 - strength * np.clip(1.3 - d, 0.0, 1.0) + 0.08 * noise
    elif pattern == "receding":
        ang = rng.uniform(0, 2 * np.pi)
        off = rng.uniform(-0.25, 0.25)
        t = (u - 0.5) * np.cos(ang) + (v - 0.5) * np.sin(ang) - off + 0.06 * noise
        dens = 1.0 - strength / (1.0 + np.exp(-t / 0.05))
    elif pattern == "patches":
        dens = np.ones(shape, np.float32)
        for _ in range(int(rng.integers(1, 4))):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.12, 0.35)
            d = np.hypot(u - cx, v - cy) / r
            dens *= 1.0 - strength * expit(-(d - 1.0) / 0.08)
    else:  # pragma: no cover - settings validation restricts the names
        raise ValueError(f"unknown thinning pattern {pattern!r}")
    return np.clip(dens, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Follicles:
    xy_mm: np.ndarray
    """(N, 2) follicle positions on the scalp plane."""
    has_hair: np.ndarray
    """(N,) bool: False for empty (miniaturised or lost) follicles."""


def draw_follicles(
    rng: np.random.Generator, p: HairParams, width_mm: float, height_mm: float, density: np.ndarray
) -> Follicles:
    """Follicles at the healthy density; each keeps its hair with the local density."""
    area_cm2 = width_mm * height_mm / 100.0
    uv = poisson_points(rng, np.ones((2, 2), np.float32), p.density_per_cm2 * area_cm2)
    gh, gw = density.shape
    keep_p = density[np.minimum((uv[:, 1] * gh).astype(int), gh - 1), np.minimum((uv[:, 0] * gw).astype(int), gw - 1)]
    has_hair = rng.random(len(uv)) < keep_p
    return Follicles(xy_mm=uv * np.array([width_mm, height_mm]), has_hair=has_hair)


def strand_paths(
    rng: np.random.Generator,
    roots_mm: np.ndarray,
    lengths_mm: np.ndarray,
    angles: np.ndarray,
    curl: np.ndarray,
    n_points: int,
) -> np.ndarray:
    """(N, n_points, 2) polylines from each root along a gently curving path."""
    n = len(roots_mm)
    s = np.linspace(0.0, 1.0, n_points)[None, :] * lengths_mm[:, None]  # arc length
    wobble = rng.normal(0.0, 0.15, (n, 1)) * np.sin(
        s / np.maximum(lengths_mm[:, None], 1e-6) * np.pi * rng.uniform(0.5, 2.0, (n, 1))
    )
    theta = angles[:, None] + curl[:, None] * s / 10.0 + wobble
    step = np.diff(s, axis=1, prepend=0.0)
    dx = np.cumsum(np.cos(theta) * step, axis=1)
    dy = np.cumsum(np.sin(theta) * step, axis=1)
    return np.stack([roots_mm[:, 0:1] + dx, roots_mm[:, 1:2] + dy], axis=-1)


@dataclass(frozen=True)
class HairLayer:
    tones: np.ndarray
    """(K, 3) float32 linear RGB of the K strand tones."""
    tone_coverage: np.ndarray
    """(K, H, W) uint8: coverage (0-255) of each pixel by strands of each tone."""
    n_strands: int
    n_long: int
    marks: dict[str, np.ndarray] | None = None
    """Plane mm positions (K, 2) of the hair look-alikes drawn: cut_ends, fragments, vellus_hairs."""
    footprint: np.ndarray | None = None
    """HxW uint8 (0-255): every strand drawn at full level, its line at least one pixel wide. A strand
    narrower than a pixel, or faint (vellus hairs, at a third of their opacity), is drawn fainter in
    the photo (:attr:`tone_coverage`) but still passes through the pixels of its line: the truth
    labels it there (:meth:`label_coverage`), and the photo test decides whether it is seen
    (data.synth.visibility.unseen_hair)."""

    def label_coverage(self) -> np.ndarray:
        """HxW float32 in [0, 1]: the strands' footprint, for the class truth (cut at one half)."""
        if self.footprint is None:
            return self.coverage()
        return self.footprint.astype(np.float32) * np.float32(1 / 255)

    def _total(self) -> np.ndarray:
        """HxW float32 sum of the tone coverages (0-255 per tone)."""
        total = self.tone_coverage[0].astype(np.float32)
        for k in range(1, len(self.tones)):
            cv2.add(total, self.tone_coverage[k], dst=total, dtype=cv2.CV_32F)
        return total

    def coverage(self) -> np.ndarray:
        """HxW float32 in [0, 1]: fraction of each pixel covered by hair."""
        total = self._total()
        return np.minimum(total, np.float32(255.0)) * np.float32(1.0 / 255.0)

    def composite(self, albedo: np.ndarray, strip_rows: int = 256) -> np.ndarray:
        """Lay the hair over ``albedo`` (HxWx3 float32), in place; returns the coverage.

        Where strands of several tones overlap, the colour is their coverage-weighted
        mean and the coverage saturates at 1. Done in strips of ``strip_rows`` rows so
        that the float temporaries stay small (first-touching hundreds of megabytes
        costs more than the arithmetic); OpenCV's mixed-type arithmetic does the
        uint8 -> float work in single passes.
        """
        h = albedo.shape[0]
        cov = np.empty(albedo.shape[:2], np.float32)
        mix = self.tones.T.astype(np.float32)
        for y0 in range(0, h, strip_rows):
            rows = slice(y0, min(h, y0 + strip_rows))
            parts = [self.tone_coverage[k, rows] for k in range(len(self.tones))]
            total = parts[0].astype(np.float32)
            for part in parts[1:]:
                cv2.add(total, part, dst=total, dtype=cv2.CV_32F)
            inv = np.maximum(total, np.float32(255.0))
            np.reciprocal(inv, out=inv)
            weights = cv2.merge([cv2.multiply(part, inv, dtype=cv2.CV_32F) for part in parts])
            # per pixel: hair RGB = sum_k tone_k * weight_k, a 3xK matrix applied to every pixel
            hair = cv2.transform(weights.reshape(*weights.shape[:2], -1), mix)
            c = cov[rows]
            cv2.multiply(total, inv, dst=c)
            keep = np.subtract(np.float32(1.0), c)
            strip = albedo[rows]
            cv2.multiply(strip, cv2.merge([keep, keep, keep]), dst=strip)
            cv2.add(strip, hair, dst=strip)
        return cov


def _strand_tones(rng: np.random.Generator, colour: str, n: int) -> np.ndarray:
    """(n, 3) linear RGB per strand with natural variation (grey = mixed fibres)."""
    if colour == "grey":
        white = rng.random(n) < 0.55
        lab = np.where(white[:, None], np.array([[78.0, 0.0, 6.0]]), np.array([[18.0, 1.0, 2.0]]))
    else:
        lab = np.tile(np.array(HAIR_LAB[colour]), (n, 1))
    lab = lab + rng.normal(0, 1, (n, 3)) * np.array([4.0, 1.0, 2.0])
    return np.clip(lab_to_linear_rgb(lab), 0.001, 1.0).astype(np.float32)


def render_hair(
    rng: np.random.Generator,
    p: HairParams,
    follicles: Follicles,
    shape: tuple[int, int],
    px_per_mm: float,
    n_tones: int = 3,
    loose_rng: np.random.Generator | None = None,
) -> HairLayer:
    """Draw stubble and long strands over a frame of ``shape`` at ``px_per_mm``.

    Each strand gets one of ``n_tones`` tones and is rasterised once, anti-aliased,
    into the coverage canvas of its tone; a strand narrower than its whole-pixel
    line width is drawn fainter (its coverage level), which stands in for
    sub-pixel width.

    Look-alikes drawn as hair: stubble shaved at the skin shows only its cut end
    (a short, dark, elongated point at the follicle); empty follicles may grow a
    fine pale vellus hair; loose cut fragments lie anywhere at any angle. Fragments
    come from ``loose_rng`` (they move between visits; default ``rng``).
    """
    h, w = shape
    roots = follicles.xy_mm[follicles.has_hair]
    n = len(roots)
    is_long = rng.random(n) < p.long_fraction
    lengths = np.where(is_long, p.long_length_mm * rng.uniform(0.5, 1.3, n), rng.uniform(*p.stubble_length_mm, n))
    # hairs of a region share a flow direction; long hair lies flatter and freer
    angles = p.flow_angle + rng.normal(0, np.where(is_long, 0.35, 0.25), n)
    curl = p.curl * rng.normal(1.0, 0.5, n) * np.where(is_long, 1.0, 0.3)
    widths = p.width_mm * rng.uniform(0.8, 1.2, n)
    tones = _strand_tones(rng, p.colour, n_tones)
    tone_of = rng.integers(0, n_tones, n)
    # stubble shaved at the skin: the cut end, a little longer than wide (cut obliquely)
    cut = ~is_long & (rng.random(n) < p.cut_end_fraction)
    lengths[cut] = rng.uniform(*p.cut_end_length_mm, int(cut.sum()))
    widths[cut] = rng.uniform(*p.cut_end_width_mm, int(cut.sum()))

    layers: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for long_flag, npts in ((False, 4), (True, 16)):
        sel = is_long == long_flag
        if not sel.any():
            continue
        paths = strand_paths(rng, roots[sel], lengths[sel], angles[sel], curl[sel], npts)
        # long hair tapers over its last 30 %: drawn as a body and a thinner tip
        cut_at = npts if not long_flag else int(round(0.7 * (npts - 1))) + 1
        ones = np.ones(int(sel.sum()))
        layers.append((paths[:, :cut_at], widths[sel], tone_of[sel], ones))
        if long_flag:
            layers.append((paths[:, cut_at - 1 :], widths[sel] * 0.55, tone_of[sel], ones))

    # vellus hairs on empty follicles: fine, short and pale (drawn at a third of the opacity)
    empty = follicles.xy_mm[~follicles.has_hair]
    vel = empty[rng.random(len(empty)) < p.vellus_fraction]
    k = len(vel)
    if k:
        ang = p.flow_angle + rng.normal(0, 0.5, k)
        layers.append(
            (
                _straight(vel, rng.uniform(*p.vellus_length_mm, k), ang),
                rng.uniform(*p.vellus_width_mm, k),
                rng.integers(0, n_tones, k),
                np.full(k, 0.35),
            )
        )
    # loose fragments of cut hair
    lr = loose_rng if loose_rng is not None else rng
    area_cm2 = h * w / px_per_mm**2 / 100.0
    m = int(lr.poisson(p.fragments_per_cm2 * area_cm2))
    frag = lr.uniform(0.0, 1.0, (m, 2)) * np.array([w, h]) / px_per_mm
    if m:
        flen = lr.uniform(*p.fragment_length_mm, m)
        ang = lr.uniform(0.0, 2 * np.pi, m)
        layers.append(
            (
                _straight(frag - 0.5 * flen[:, None] * np.stack([np.cos(ang), np.sin(ang)], -1), flen, ang),
                p.width_mm * lr.uniform(0.8, 1.2, m),
                lr.integers(0, n_tones, m),
                np.ones(m),
            )
        )

    canvases = np.zeros((n_tones, h, w), np.uint8)
    scale = 16.0 * px_per_mm  # OpenCV fixed point with shift=4
    footprint = np.zeros((h, w), np.uint8)
    for paths, wmm, tone_idx, opacity in layers:
        wpx = wmm * px_per_mm
        thick = np.maximum(1, np.round(wpx)).astype(int)
        level = np.clip(np.round(np.clip(wpx / thick, 0.0, 1.0) * opacity * 7), 1, 7).astype(int)
        pts_all = np.round(paths * scale).astype(np.int32)
        # fainter levels first: an anti-aliased stroke only raises what is already drawn
        for lv in np.unique(level):
            for t in np.unique(thick[level == lv]):
                for tone in np.unique(tone_idx):
                    idx = np.flatnonzero((thick == t) & (level == lv) & (tone_idx == tone))
                    if len(idx):
                        cv2.polylines(
                            canvases[tone],
                            list(pts_all[idx]),
                            False,
                            int(round(255 * lv / 7)),
                            int(t),
                            cv2.LINE_AA,
                            shift=4,
                        )
        for t in np.unique(thick):  # the footprint: every line at full level
            cv2.polylines(footprint, list(pts_all[thick == t]), False, 255, int(t), cv2.LINE_AA, shift=4)
    marks = {"cut_ends": roots[cut], "fragments": frag, "vellus_hairs": vel}
    return HairLayer(
        tones=tones,
        tone_coverage=canvases,
        n_strands=int(n),
        n_long=int(is_long.sum()),
        marks=marks,
        footprint=footprint,
    )


def _straight(start_mm: np.ndarray, length_mm: np.ndarray, angle: np.ndarray, n_points: int = 2) -> np.ndarray:
    """(N, n_points, 2) straight polylines from ``start_mm`` along ``angle``."""
    s = np.linspace(0.0, 1.0, n_points)[None, :] * length_mm[:, None]
    return np.stack([start_mm[:, :1] + np.cos(angle)[:, None] * s, start_mm[:, 1:] + np.sin(angle)[:, None] * s], -1)
