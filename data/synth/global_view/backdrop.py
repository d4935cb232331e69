"""The background of a global scene: the wall or backdrop and the colour of the clothes."""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

from data.colour import lab_to_linear_rgb
from data.synth.fields import smooth_field
from data.synth.global_view.head import CLOTHES, Hits


def _lab_rgb(lab) -> np.ndarray:
    return np.clip(lab_to_linear_rgb(np.asarray(lab, float)), 0.002, 1.0).astype(np.float32)


def render_backdrop(rng: np.random.Generator, size: tuple[int, int], ppm: float) -> np.ndarray:
    """A wall or photo backdrop: colour, gradient, blotches, fine texture, maybe an edge.

    The smooth parts are built on a quarter-resolution grid and upsampled once.
    """
    w, h = size
    kinds = [
        ((86, 93), (-1, 1), (0, 6)),
        ((62, 80), (-1, 1), (-2, 3)),
        ((40, 58), (-1, 1), (-3, 2)),
        ((12, 28), (-1, 1), (-2, 2)),
        ((70, 85), (1, 5), (8, 18)),
        ((68, 84), (-5, -1), (-14, -5)),
        ((50, 72), (-14, -5), (-2, 6)),
    ]
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
    grain = cast(NDArray[np.float32], cv2.GaussianBlur(grain, (0, 0), 0.8))  # keeps float32
    gain *= 1.0 + np.float32(rng.uniform(0.01, 0.04)) * grain
    out = gain[..., None] * base[None, None, :]
    return np.minimum(out, np.float32(1.0), out=out)


def _clothes_colour(rng: np.random.Generator) -> np.ndarray:
    r = rng.random()
    if r < 0.3:
        lab = [rng.uniform(8, 20), rng.uniform(-1, 1), rng.uniform(-3, 1)]  # black cape / top
    elif r < 0.5:
        lab = [rng.uniform(20, 40), rng.uniform(-2, 4), rng.uniform(-25, -8)]  # navy
    elif r < 0.65:
        lab = [rng.uniform(35, 70), rng.uniform(-1, 1), rng.uniform(-2, 2)]  # grey
    elif r < 0.8:
        lab = [rng.uniform(80, 92), rng.uniform(-1, 1), rng.uniform(-2, 4)]  # white
    else:
        hue = rng.uniform(0, 2 * np.pi)
        ch = rng.uniform(20, 50)
        lab = [rng.uniform(30, 62), ch * np.cos(hue), ch * np.sin(hue)]
    return _lab_rgb(lab)


def paint_clothes(rng: np.random.Generator, albedo: np.ndarray, hits: Hits, ppm: float) -> None:
    """Clothes' colour with soft folds and fine texture on the clothes' pixels of ``albedo`` (in place)."""
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
