"""Whole-photo inference: overlapping tiles, bounded memory, dot decoding.

:func:`predict_image` cuts the photo into tiles whose origins are multiples of
the network's total stride, runs them in batches, and keeps from every tile
only its *core*: the tiles overlap by ``overlap`` pixels and the cores (each
tile minus half the overlap on every side that borders another tile)
partition the photo. Every segmentation pixel and every dot heat-map cell is
therefore produced by exactly one tile and no dot can be reported twice. The
max-pool NMS runs per tile; a second, cross-tile NMS then removes the weaker
of two peaks from different tiles that fall within one NMS window across a
seam (possible only when the overlap is smaller than the receptive field).

Because tile origins are stride-aligned and the network pads edge tiles the
same way it pads the whole photo, a core pixel sees exactly what it would see
in whole-photo inference when ``overlap // 2`` is at least the network's
receptive-field reach (:func:`models.network.receptive_field`); the result
then equals whole-photo inference up to float rounding. With a smaller
overlap (the defaults, chosen for speed) the far context of a pixel near a
seam is cut; the effective receptive field of a trained network is much
smaller than the theoretical one, so differences are small and local.

Memory: the class map (and the optional probabilities) are preallocated for
the whole photo; only one batch of tiles is converted to float and run at a
time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import Tensor

from data.geometry import resize_points
from data.photometry import PERCENTILE, normalise_input
from models.network import SegDotNet

__all__ = [
    "PRECISIONS",
    "Precision",
    "Prediction",
    "TileGrid",
    "decode_dots",
    "native_bfloat16",
    "predict_image",
    "predict_view",
    "resolve_precision",
]

Precision = Literal["auto", "float32", "bfloat16", "float16"]
"""What :func:`predict_image` can compute in (``auto``: see :func:`resolve_precision`)."""
PRECISIONS: tuple[str, ...] = get_args(Precision)


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX).

    Without it oneDNN emulates bfloat16 and is slower than float32.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    found = [getattr(torch.cpu, name) for name in probes if hasattr(torch.cpu, name)]
    if found:
        return any(bool(probe()) for probe in found)
    try:  # an older torch without the probes: the kernel's CPU flags
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """The arithmetic ``precision`` means on ``device``.

    ``auto`` is float16 autocast on CUDA, bfloat16 autocast on a CPU with
    native bfloat16 (about 2.5x faster than float32 for this network; the
    benchmark records its accuracy next to float32's), float32 elsewhere.
    float16 is refused on CPU (no fast kernels); anything else is an error.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    kind = torch.device(device).type
    if precision == "auto":
        if kind == "cuda":
            return "float16"
        return "bfloat16" if kind == "cpu" and native_bfloat16() else "float32"
    if precision == "float16" and kind == "cpu":
        raise ValueError("float16 inference needs a GPU; use bfloat16 or float32 on CPU")
    return precision


@dataclass(frozen=True)
class Prediction:
    """What the network says about one photo."""

    labels: np.ndarray
    """HxW uint8 class map (0 background, 1 scalp, 2 hair)."""
    dots: np.ndarray
    """(N, 3) float32 rows ``x, y, score`` (input pixels, OpenCV convention; score in [0, 1]),
    ordered row-major by heat-map cell."""
    probs: np.ndarray | None = None
    """3xHxW float16 class probabilities, when asked for."""


@dataclass(frozen=True)
class _Peaks:
    cells: np.ndarray  # (N, 2) int64 (row, col) of the heat cell
    xy: np.ndarray  # (N, 2) float64 decoded position in input pixels
    score: np.ndarray  # (N,) float64


def _find_peaks(heat_logits: Tensor, offset: Tensor, stride: int, threshold: float, nms_kernel: int) -> list[_Peaks]:
    if heat_logits.dim() != 4 or heat_logits.shape[1] != 1:
        raise ValueError(f"heat must be Bx1xhxw, got {tuple(heat_logits.shape)}")
    if offset.shape[0] != heat_logits.shape[0] or offset.shape[1] != 2 or offset.shape[-2:] != heat_logits.shape[-2:]:
        raise ValueError(f"offset must be Bx2xhxw matching heat, got {tuple(offset.shape)}")
    if nms_kernel < 1 or nms_kernel % 2 != 1:
        raise ValueError(f"nms_kernel must be odd and >= 1, got {nms_kernel}")
    # NMS and the threshold on logits (sigmoid is monotonic); probabilities only at the peaks
    logits = heat_logits.float().contiguous()
    if threshold <= 0.0:
        limit = -math.inf
    elif threshold >= 1.0:
        limit = math.inf
    else:
        limit = math.log(threshold / (1.0 - threshold))
    keep = logits >= limit
    if nms_kernel > 1:
        keep = _local_maxima(logits, keep, nms_kernel // 2)
    out: list[_Peaks] = []
    centre = (stride - 1) / 2.0
    for b in range(logits.shape[0]):
        rows, cols = keep[b, 0].nonzero(as_tuple=True)
        off = offset[b][:, rows, cols].double()
        x = stride * (cols.double() + off[0]) + centre
        y = stride * (rows.double() + off[1]) + centre
        out.append(
            _Peaks(
                cells=torch.stack([rows, cols], dim=1).cpu().numpy().astype(np.int64),
                xy=torch.stack([x, y], dim=1).cpu().numpy(),
                score=torch.sigmoid(logits[b, 0, rows, cols].double()).cpu().numpy(),
            )
        )
    return out


def _local_maxima(logits: Tensor, candidates: Tensor, reach: int) -> Tensor:
    """``candidates`` that are the maximum of their ``(2 reach + 1)``-square window (ties kept).

    The same as ``logits == max_pool2d(logits, 2 reach + 1, 1, reach)`` on the candidate
    cells, but only candidates are compared with their neighbours: above a threshold they
    are a few per cent of the heat map, so this is several times cheaper than pooling it.
    """
    if 4 * int(candidates.count_nonzero()) > candidates.numel():  # most cells compete: pooling the whole map is cheaper
        return candidates & (logits == F.max_pool2d(logits, 2 * reach + 1, stride=1, padding=reach))
    b, _, r, c = candidates.nonzero(as_tuple=True)
    padded = F.pad(logits, (reach, reach, reach, reach), value=-math.inf)
    value = logits[b, 0, r, c]
    is_max = torch.ones_like(value, dtype=torch.bool)
    for dy in range(2 * reach + 1):
        for dx in range(2 * reach + 1):
            if dy != reach or dx != reach:
                is_max &= value >= padded[b, 0, r + dy, c + dx]
    keep = torch.zeros_like(candidates)
    keep[b[is_max], 0, r[is_max], c[is_max]] = True
    return keep


def decode_dots(
    heat_logits: Tensor, offset: Tensor, stride: int, threshold: float = 0.3, nms_kernel: int = 3
) -> list[np.ndarray]:
    """Dot centres from the dot head: max-pool NMS on the heat, then sub-cell offsets.

    ``heat_logits`` Bx1xhxw (logits), ``offset`` Bx2xhxw (cell units, see
    :mod:`models.network`). A cell is a dot when its probability is at least
    ``threshold`` and the largest in its ``nms_kernel`` x ``nms_kernel``
    neighbourhood. Returns one ``(N, 3)`` float64 array per image with rows
    ``x, y, score`` in input pixels (``x = stride * (col + dx) + (stride - 1) / 2``),
    ordered row-major by cell.
    """
    return [np.column_stack([p.xy, p.score]) for p in _find_peaks(heat_logits, offset, stride, threshold, nms_kernel)]


@dataclass(frozen=True)
class TileGrid:
    """Stride-aligned overlapping tiles along one axis and the core each tile owns."""

    length: int
    tile: int
    step: int

    @classmethod
    def make(cls, length: int, tile: int, overlap: int, align: int) -> TileGrid:
        """Tiles of at most ``tile`` px (rounded down to ``align``) overlapping by at least ``overlap`` px.

        The axis is split into as few tiles as that allows, all of (nearly) the same
        size: a 3000 px axis with ``tile`` 1536 gets three tiles of ~1088 px, not two of
        1536 and a sliver of 184 (slivers cost as much per-layer overhead as a whole tile).
        """
        if tile < 1 or overlap < 0:
            raise ValueError(f"tile must be >= 1 and overlap >= 0, got tile={tile}, overlap={overlap}")
        size = max(align, tile // align * align)
        step = (size - overlap) // align * align
        if step < align:
            raise ValueError(f"tile {tile} leaves no room for an overlap of {overlap} px (tiles align to {align} px)")
        lap = size - step  # >= overlap, what neighbouring tiles share
        count = 1 + max(0, math.ceil((length - size) / step))
        if count > 1:  # the smallest aligned step that still covers the axis with ``count`` tiles
            step = -(-math.ceil((length - lap) / count) // align) * align
            size = step + lap
        return cls(length, size, step)

    @property
    def count(self) -> int:
        return 1 + max(0, math.ceil((self.length - self.tile) / self.step))

    def spans(self) -> Iterator[tuple[int, int, int, int]]:
        """``(start, stop, core_start, core_stop)`` of every tile, clipped to the axis."""
        lead = (self.tile - self.step) // 2
        n = self.count
        for k in range(n):
            start = k * self.step
            stop = min(start + self.tile, self.length)
            core_start = 0 if k == 0 else start + lead
            core_stop = self.length if k == n - 1 else start + self.step + lead
            yield start, stop, core_start, core_stop


@dataclass(frozen=True)
class _Tile:
    y: tuple[int, int, int, int]
    x: tuple[int, int, int, int]

    @property
    def shape(self) -> tuple[int, int]:
        return self.y[1] - self.y[0], self.x[1] - self.x[0]


def _suppress_across_seams(cells: np.ndarray, scores: np.ndarray, tile_ids: np.ndarray, radius: int) -> np.ndarray:
    """Keep-mask of dots after NMS between dots of *different* tiles.

    Within a tile the max-pool NMS already ran. Two tiles can still both
    report a peak in neighbouring cells across the seam between their cores
    when the overlap is smaller than the receptive field (each tile sees the
    other's cell slightly differently). Greedily, by descending score (ties:
    row-major cell order), a dot removes the dots of other tiles within the
    NMS window (Chebyshev distance ``radius`` cells). Dots of the same tile
    are never compared, so with a large enough overlap nothing changes.
    """
    keep = np.ones(len(cells), dtype=bool)
    if radius < 1 or len(cells) < 2:
        return keep
    pairs = cKDTree(cells).query_pairs(radius, p=np.inf, output_type="ndarray")
    pairs = pairs[tile_ids[pairs[:, 0]] != tile_ids[pairs[:, 1]]]
    if len(pairs) == 0:
        return keep
    rank = np.empty(len(cells), dtype=np.int64)
    rank[np.lexsort((cells[:, 1], cells[:, 0], -scores))] = np.arange(len(cells))  # 0 = strongest
    winner = np.where(rank[pairs[:, 0]] < rank[pairs[:, 1]], pairs[:, 0], pairs[:, 1])
    loser = np.where(winner == pairs[:, 0], pairs[:, 1], pairs[:, 0])
    for win, lose in sorted(zip(winner.tolist(), loser.tolist()), key=lambda pair: rank[pair[0]]):
        if keep[win]:
            keep[lose] = False
    return keep


class _Accumulator:
    """Preallocated whole-photo outputs that tile cores are written into."""

    def __init__(self, height: int, width: int, dot_stride: int, nms_kernel: int, return_probs: bool) -> None:
        self.labels = np.zeros((height, width), dtype=np.uint8)
        self.probs = np.zeros((3, height, width), dtype=np.float16) if return_probs else None
        self.dot_stride = dot_stride
        self.nms_radius = nms_kernel // 2
        self.cells: list[np.ndarray] = []
        self.dots: list[np.ndarray] = []
        self.tile_ids: list[np.ndarray] = []

    def add(self, tile: _Tile, seg: Tensor, peaks: _Peaks) -> None:
        (y0, _, cy0, cy1), (x0, _, cx0, cx1) = tile.y, tile.x
        core = seg[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        self.labels[cy0:cy1, cx0:cx1] = core.argmax(dim=0).to(torch.uint8).cpu().numpy()
        if self.probs is not None:
            self.probs[:, cy0:cy1, cx0:cx1] = torch.softmax(core.float(), dim=0).half().cpu().numpy()
        s = self.dot_stride
        cells = peaks.cells + np.array([y0 // s, x0 // s])
        centre = s * cells + (s - 1) / 2.0  # (row, col) -> input px, decides which core owns a cell
        own = (centre[:, 0] >= cy0) & (centre[:, 0] < cy1) & (centre[:, 1] >= cx0) & (centre[:, 1] < cx1)
        xy = peaks.xy[own] + np.array([x0, y0], dtype=np.float64)
        self.cells.append(cells[own])
        self.dots.append(np.column_stack([xy, peaks.score[own]]))
        self.tile_ids.append(np.full(int(own.sum()), len(self.tile_ids)))

    def result(self) -> Prediction:
        cells = np.concatenate(self.cells) if self.cells else np.zeros((0, 2), np.int64)
        dots = np.concatenate(self.dots) if self.dots else np.zeros((0, 3))
        tile_ids = np.concatenate(self.tile_ids) if self.tile_ids else np.zeros(0, np.int64)
        keep = _suppress_across_seams(cells, dots[:, 2], tile_ids, self.nms_radius)
        cells, dots = cells[keep], dots[keep]
        order = np.lexsort((cells[:, 1], cells[:, 0]))
        return Prediction(labels=self.labels, dots=dots[order].astype(np.float32), probs=self.probs)


def _batches(tiles: list[_Tile], batch_size: int) -> Iterator[list[_Tile]]:
    """Consecutive groups of up to ``batch_size`` tiles of one shape (edge tiles are smaller)."""
    pending: dict[tuple[int, int], list[_Tile]] = {}
    for tile in tiles:
        group = pending.setdefault(tile.shape, [])
        group.append(tile)
        if len(group) == batch_size:
            yield pending.pop(tile.shape)
    yield from pending.values()


def predict_image(
    model: SegDotNet,
    image: np.ndarray,
    *,
    tile: int = 1024,
    overlap: int = 128,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    threshold: float = 0.3,
    nms_kernel: int = 3,
    return_probs: bool = False,
    precision: str | None = None,
) -> Prediction:
    """Classes and dot centres of one HxWx3 uint8 RGB photo, tile by tile.

    ``tile`` is rounded down and the step ``tile - overlap`` rounded down to
    multiples of ``model.total_stride``; a photo smaller than a tile is one
    tile. ``device`` defaults to the model's; the model is moved there and
    run in eval mode (its previous mode is restored), under
    ``torch.inference_mode``. ``precision`` (see :func:`resolve_precision`)
    selects autocast; ``None`` keeps the historical behaviour: float16
    autocast on CUDA, float32 on CPU. For speed on CPU pass a model from
    :func:`models.network.prepare_for_inference`. The same photo gives the
    same result on the same machine with the same precision.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    # the whole photo as the model was trained to see it (exposure and white balance out, if it asks)
    settings = getattr(model, "settings", None)
    image = normalise_input(
        image, getattr(settings, "input_norm", "none"), getattr(settings, "input_norm_percentile", PERCENTILE)
    )
    height, width = image.shape[:2]
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev)
    align = model.total_stride
    grid_y = TileGrid.make(height, tile, overlap, align)
    grid_x = TileGrid.make(width, tile, overlap, align)
    tiles = [_Tile(ys, xs) for ys in grid_y.spans() for xs in grid_x.spans()]
    acc = _Accumulator(height, width, model.dot_stride, nms_kernel, return_probs)
    chosen = resolve_precision(precision or ("float16" if dev.type == "cuda" else "float32"), dev)
    autocast = torch.autocast(dev.type, dtype=getattr(torch, chosen), enabled=chosen != "float32")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast:
            for group in _batches(tiles, batch_size):
                crops = [image[t.y[0] : t.y[1], t.x[0] : t.x[1]] for t in group]
                batch = torch.from_numpy(np.stack(crops)).to(dev).permute(0, 3, 1, 2)
                batch = (batch.float() / 255.0).contiguous(memory_format=torch.channels_last)
                out = model(batch)
                seg = out["seg"]  # argmax in the network's precision: the same values, no full-size copy
                peaks = _find_peaks(out["heat"], out["offset"], model.dot_stride, threshold, nms_kernel)
                for i, t in enumerate(group):
                    acc.add(t, seg[i], peaks[i])
    finally:
        model.train(was_training)
    return acc.result()


def predict_view(
    model: SegDotNet, image: np.ndarray, view: str, px_per_mm: float | None = None, **kwargs
) -> Prediction:
    """:func:`predict_image` of a photo of ``view`` (``closeup``/``global``) as the model was trained to see it.

    A model with ``global_long_side`` sees a whole-head view shrunk to that long side (its whole head
    in one field of view); a model with ``closeup_px_per_mm`` sees a close-up of known scale
    (``px_per_mm``) resampled to that scale. The labels are brought back to the photo's size
    (nearest), dot centres and probabilities with them. Other photos go to :func:`predict_image` as
    they are.
    """
    import cv2

    settings = getattr(model, "settings", None)
    side = getattr(settings, "global_long_side", None)
    target = getattr(settings, "closeup_px_per_mm", None)
    h, w = image.shape[:2]
    if view == "global" and side and max(h, w) > side:
        f = side / max(h, w)
    elif view != "global" and target and px_per_mm and abs(target / px_per_mm - 1.0) > 0.01:
        f = target / px_per_mm
    else:
        return predict_image(model, image, **kwargs)
    small = cv2.resize(
        image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    )
    pred = predict_image(model, small, **kwargs)
    fx, fy = w / small.shape[1], h / small.shape[0]
    labels = cv2.resize(pred.labels, (w, h), interpolation=cv2.INTER_NEAREST)
    dots = resize_points(pred.dots, fx, fy)
    probs = None
    if pred.probs is not None:
        probs = np.stack(
            [cv2.resize(p.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for p in pred.probs]
        ).astype(pred.probs.dtype)
    return Prediction(labels=labels, dots=dots, probs=probs)
