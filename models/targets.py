"""Training targets of the dot head (CenterNet-style heat map + sub-cell offsets).

Cell convention (the one :mod:`models.network` documents and
:func:`models.inference.decode_dots` inverts): at stride ``s`` the heat map
has ``ceil(H/s) x ceil(W/s)`` cells; a point ``(x, y)`` in input pixels
(OpenCV convention, pixel centres at integers) lies in cell
``(row, col) = (floor((y + 0.5) / s), floor((x + 0.5) / s))``, whose centre is
``(s*col + (s-1)/2, s*row + (s-1)/2)``, and its offset target is
``((x - centre_x) / s, (y - centre_y) / s)`` in [-0.5, 0.5). Hence
``x = s * (col + dx) + (s - 1) / 2`` exactly.

The heat target of a point is a Gaussian over cells centred on the point's
cell (so it is exactly 1 there), ``exp(-d^2 / (2 (sigma_px / s)^2))`` with
``d`` the distance between cell centres in cells, cut at 3 sigma; overlapping
points take the maximum. Points outside the image (or NaN rows) are ignored.

Visibility (the truth a perfect detector can reach, docs/dots.md, "What a dot is"):
only *visible* points are positives. An invisible point (under hair, below the
contrast floor) writes no heat and no offset; instead the cells its Gaussian
would cover (the same 3-sigma window) are marked by :func:`dot_ignore`; the heat
loss treats them as neither positive nor negative. A visible point's own cell
is never ignored. Without a ``visible`` argument every point is visible.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["DotCells", "DotTargets", "dot_cells", "dot_ignore", "dot_targets"]


class DotTargets(NamedTuple):
    """Targets of one batch; unpacks as ``heat, offset, offset_mask``."""

    heat: Tensor
    """Bx1xhxw float in [0, 1]; 1 exactly at each point's cell."""
    offset: Tensor
    """Bx2xhxw float (dx, dy) in cell units at the points' cells, 0 elsewhere."""
    offset_mask: Tensor
    """Bx1xhxw float, 1 at the points' cells, 0 elsewhere."""


class DotCells(NamedTuple):
    """Where each point falls on the heat-map grid (all BxK)."""

    valid: Tensor
    """bool: finite and inside the image."""
    row: Tensor
    """int64 cell row (0 where not valid)."""
    col: Tensor
    """int64 cell column (0 where not valid)."""
    dx: Tensor
    """Offset from the cell centre in cell units, in [-0.5, 0.5)."""
    dy: Tensor


def dot_cells(points: Tensor, shape: tuple[int, int], stride: int) -> DotCells:
    """Cell index and sub-cell offset of every point (``points`` BxKx2, NaN rows ignored)."""
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must be BxKx2, got {tuple(points.shape)}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    height, width = shape
    x, y = points[..., 0].double(), points[..., 1].double()
    valid = torch.isfinite(x) & torch.isfinite(y)
    valid &= (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)
    x = torch.where(valid, x, 0.0)
    y = torch.where(valid, y, 0.0)
    col = torch.floor((x + 0.5) / stride)
    row = torch.floor((y + 0.5) / stride)
    centre = (stride - 1) / 2.0
    dx = (x - (stride * col + centre)) / stride
    dy = (y - (stride * row + centre)) / stride
    return DotCells(valid, row.long(), col.long(), dx.to(points.dtype), dy.to(points.dtype))


def _visible(points: Tensor, visible: Tensor | None) -> Tensor:
    """BxK bool visibility (all True when ``visible`` is None)."""
    if visible is None:
        return torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)
    if tuple(visible.shape) != tuple(points.shape[:2]):
        raise ValueError(f"visible must be BxK {tuple(points.shape[:2])}, got {tuple(visible.shape)}")
    return visible.to(device=points.device, dtype=torch.bool)


def _sigma_cells(points: Tensor, sigma_px: float | Tensor, stride: int, valid: Tensor) -> Tensor:
    batch, k = points.shape[:2]
    sigma = torch.as_tensor(sigma_px, dtype=torch.float32, device=points.device).expand(batch, k)
    if not bool((sigma[valid] > 0).all()):
        raise ValueError("sigma_px must be > 0")
    return sigma / stride


def _windows(b_idx: Tensor, row: Tensor, col: Tensor, sig: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
    """Flat cell indices and Gaussian values of every point's 3-sigma window (inside the map)."""
    radius = max(1, math.ceil(3.0 * float(sig.max())))
    span = torch.arange(-radius, radius + 1, device=row.device)
    wy, wx = torch.meshgrid(span, span, indexing="ij")
    wy, wx = wy.reshape(1, -1), wx.reshape(1, -1)
    rr, cc = row[:, None] + wy, col[:, None] + wx
    value = torch.exp(-(wx**2 + wy**2).float() / (2.0 * sig[:, None] ** 2))
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w) & (value > math.exp(-4.5))
    flat = (b_idx[:, None] * h + rr) * w + cc
    return flat[inside], value[inside]


def dot_targets(
    points: Tensor,
    shape: tuple[int, int],
    stride: int,
    sigma_px: float | Tensor = 2.0,
    visible: Tensor | None = None,
) -> DotTargets:
    """Heat, offset and offset-mask targets for dot centres ``points`` (BxKx2 x, y; NaN-padded).

    ``shape`` is the input (H, W); ``stride`` the heat-map stride; ``sigma_px``
    the Gaussian's standard deviation in input pixels, a float or a BxK
    tensor (one per point); ``visible`` (BxK bool, None: all) selects the
    points that are positives, the others write nothing (see :func:`dot_ignore`).
    Vectorised over batch and points: each point writes a ``(2r+1)^2`` window
    (``r = ceil(3 sigma / stride)``) with a scatter-max; offsets of points
    sharing a cell are averaged.
    """
    cells = dot_cells(points, shape, stride)
    valid = cells.valid & _visible(points, visible)
    batch = points.shape[0]
    h, w = -(-shape[0] // stride), -(-shape[1] // stride)
    device = points.device
    sigma = _sigma_cells(points, sigma_px, stride, valid)
    heat = torch.zeros(batch * h * w, dtype=torch.float32, device=device)
    offset = torch.zeros(batch * 2 * h * w, dtype=torch.float32, device=device)
    mask = torch.zeros(batch * h * w, dtype=torch.float32, device=device)
    b_idx, p_idx = valid.nonzero(as_tuple=True)
    if b_idx.numel() == 0:
        return DotTargets(heat.view(batch, 1, h, w), offset.view(batch, 2, h, w), mask.view(batch, 1, h, w))
    row, col = cells.row[b_idx, p_idx], cells.col[b_idx, p_idx]
    flat, value = _windows(b_idx, row, col, sigma[b_idx, p_idx], h, w)
    heat.scatter_reduce_(0, flat, value, reduce="amax")

    centre = (b_idx * h + row) * w + col
    mask[centre] = 1.0
    plane = h * w
    base = b_idx * 2 * plane + row * w + col
    offset.scatter_reduce_(0, base, cells.dx[b_idx, p_idx].float(), reduce="mean", include_self=False)
    offset.scatter_reduce_(0, base + plane, cells.dy[b_idx, p_idx].float(), reduce="mean", include_self=False)
    return DotTargets(heat.view(batch, 1, h, w), offset.view(batch, 2, h, w), mask.view(batch, 1, h, w))


def dot_ignore(
    points: Tensor, visible: Tensor | None, shape: tuple[int, int], stride: int, sigma_px: float | Tensor = 2.0
) -> Tensor:
    """Bx1xhxw bool: cells the heat loss ignores, the 3-sigma windows of the invisible points.

    The window is the one :func:`dot_targets` would write for the point; the
    cells of visible points (their positives) are never ignored. All False
    when ``visible`` is None or every point is visible.
    """
    cells = dot_cells(points, shape, stride)
    vis = _visible(points, visible)
    batch = points.shape[0]
    h, w = -(-shape[0] // stride), -(-shape[1] // stride)
    ignore = torch.zeros(batch * h * w, dtype=torch.bool, device=points.device)
    hidden = cells.valid & ~vis
    b_idx, p_idx = hidden.nonzero(as_tuple=True)
    if b_idx.numel() == 0:
        return ignore.view(batch, 1, h, w)
    sigma = _sigma_cells(points, sigma_px, stride, hidden)
    flat, _ = _windows(b_idx, cells.row[b_idx, p_idx], cells.col[b_idx, p_idx], sigma[b_idx, p_idx], h, w)
    ignore[flat] = True
    shown = cells.valid & vis
    vb, vp = shown.nonzero(as_tuple=True)
    ignore[(vb * h + cells.row[vb, vp]) * w + cells.col[vb, vp]] = False
    return ignore.view(batch, 1, h, w)
