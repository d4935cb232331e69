"""Losses of the segmentation + dot network.

* segmentation: cross-entropy (pixels labelled 255 ignored, optional class
  weights) plus an optional soft Dice over the three classes;
* dot heat map: CenterNet's penalty-reduced focal loss (Law & Deng 2018,
  Zhou et al. 2019) with ``alpha`` 2 and ``beta`` 4, normalised by the number
  of dot cells and finite when there are none; only visible dots are
  positives and the neighbourhood of an invisible dot (under hair, below the
  contrast floor) is ignored, neither positive nor negative;
* dot offsets: L1 at the dots' cells only.

:func:`total_loss` builds the dot targets from the batch's points
(:func:`models.targets.dot_targets`) and weights the parts.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from data.config import Settings
from models.targets import dot_ignore, dot_targets

__all__ = [
    "IGNORE_INDEX",
    "LossSettings",
    "cross_entropy_loss",
    "soft_dice_loss",
    "heat_focal_loss",
    "offset_l1_loss",
    "total_loss",
]

IGNORE_INDEX = 255
"""Mask value of pixels without a label (the datasets' padding / unlabelled value)."""


class LossSettings(Settings):
    """Weights and shapes of the training losses (frozen, validated)."""

    ce_weight: float = Field(1.0, ge=0.0)
    dice_weight: float = Field(0.5, ge=0.0)
    """Weight of the soft Dice term (0 disables it)."""
    class_weights: tuple[float, float, float] | None = None
    """Cross-entropy weights of background, scalp, hair (None: equal)."""
    heat_weight: float = Field(1.0, ge=0.0)
    offset_weight: float = Field(1.0, ge=0.0)
    sigma_px: float = Field(2.0, gt=0.0)
    """Standard deviation of the heat-map Gaussian around each dot, input pixels."""
    focal_alpha: float = Field(2.0, ge=0.0)
    focal_beta: float = Field(4.0, ge=0.0)


def cross_entropy_loss(logits: Tensor, mask: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """Mean (class-weighted) cross-entropy over labelled pixels; 0 when no pixel is labelled.

    ``logits`` BxCxHxW, ``mask`` BxHxW int64 with ``IGNORE_INDEX`` for unlabelled pixels.
    """
    per_pixel = F.cross_entropy(logits.float(), mask, weight=class_weights, ignore_index=IGNORE_INDEX, reduction="none")
    valid = mask != IGNORE_INDEX
    if class_weights is None:
        denom = valid.sum().float()
    else:
        denom = class_weights[mask.clamp(max=logits.shape[1] - 1)][valid].sum()
    return per_pixel.sum() / denom.clamp(min=1e-6)


def soft_dice_loss(logits: Tensor, mask: Tensor, smooth: float = 1.0) -> Tensor:
    """``1 - mean over classes`` of the soft Dice of softmax probabilities, over labelled pixels of the batch."""
    n_classes = logits.shape[1]
    valid = (mask != IGNORE_INDEX).unsqueeze(1)
    probs = torch.softmax(logits.float(), dim=1) * valid
    onehot = F.one_hot(mask.clamp(max=n_classes - 1), n_classes).permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    dice = (2.0 * inter + smooth) / (total + smooth)
    return 1.0 - dice.mean()


def heat_focal_loss(
    heat_logits: Tensor,
    target: Tensor,
    alpha: float = 2.0,
    beta: float = 4.0,
    item_mask: Tensor | None = None,
    ignore: Tensor | None = None,
) -> Tensor:
    """CenterNet penalty-reduced focal loss on heat logits, divided by the number of dot cells (at least 1).

    Positives are cells with ``target == 1``; negatives near a dot are
    down-weighted by ``(1 - target) ** beta``. ``item_mask`` (B,) bool drops
    images whose dots are unknown; ``ignore`` (like ``target``, bool) drops
    cells from the negatives (the neighbourhood of invisible dots,
    :func:`models.targets.dot_ignore`). Computed from log-sigmoids, so finite
    for any logits, and 0-dot batches give the (finite) negative term only.
    """
    z = heat_logits.float()
    if item_mask is not None:
        keep = item_mask.to(torch.bool)
        z, target = z[keep], target[keep]
        if ignore is not None:
            ignore = ignore[keep]
    pos = target >= 1.0 - 1e-6
    neg = ~pos if ignore is None else ~pos & ~ignore.to(torch.bool)
    p = torch.sigmoid(z)
    log_p = F.logsigmoid(z)
    log_not_p = F.logsigmoid(-z)
    pos_term = ((1.0 - p) ** alpha * log_p)[pos].sum()
    neg_term = ((1.0 - target) ** beta * p**alpha * log_not_p)[neg].sum()
    n_pos = pos.sum().clamp(min=1).float()
    return -(pos_term + neg_term) / n_pos


def offset_l1_loss(pred: Tensor, target: Tensor, mask: Tensor, item_mask: Tensor | None = None) -> Tensor:
    """L1 distance of the (dx, dy) offsets at masked cells, summed over x and y, mean over cells (0 if none)."""
    weight = mask.float()
    if item_mask is not None:
        weight = weight * item_mask.to(weight.dtype).view(-1, 1, 1, 1)
    err = ((pred.float() - target).abs() * weight).sum()
    return err / weight.sum().clamp(min=1.0)


def _infer_stride(shape: tuple[int, int], heat_shape: tuple[int, int]) -> int:
    for stride in (1, 2, 4, 8):
        if (-(-shape[0] // stride), -(-shape[1] // stride)) == heat_shape:
            return stride
    raise ValueError(f"cannot infer the dot stride of a {heat_shape} heat map for a {shape} input")


def total_loss(
    outputs: Mapping[str, Tensor],
    batch: Mapping[str, Tensor],
    settings: LossSettings,
    *,
    dot_stride: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the segmentation and dot losses of one batch.

    ``outputs``: the model's ``seg``, ``heat``, ``offset``. ``batch``: ``mask``
    (BxHxW int64, 255 ignored), ``points`` (BxKx2, NaN padded), ``n_points``
    (B,) and optionally ``has_points`` (B,) bool: images without dot labels
    contribute no dot loss, and ``visible`` (BxK bool, absent: all visible):
    invisible dots are no positives and their neighbourhood is ignored.
    ``dot_stride`` defaults to the one implied by the heat map's shape. Returns the loss and its
    detached parts (``seg_ce``, ``seg_dice``, ``heat``, ``offset``, ``total``).
    """
    seg, heat, offset = outputs["seg"], outputs["heat"], outputs["offset"]
    mask = batch["mask"].to(seg.device).long()
    shape = (int(mask.shape[-2]), int(mask.shape[-1]))
    stride = dot_stride or _infer_stride(shape, (int(heat.shape[-2]), int(heat.shape[-1])))

    points = batch["points"].to(heat.device).float()
    n_points = batch["n_points"].to(heat.device).long()
    rows = torch.arange(points.shape[1], device=heat.device)
    points = torch.where((rows[None, :] < n_points[:, None])[..., None], points, torch.nan)
    visible = batch.get("visible")
    if visible is not None:
        visible = visible.to(heat.device).bool()
    targets = dot_targets(points, shape, stride, settings.sigma_px, visible)
    ignore = None if visible is None else dot_ignore(points, visible, shape, stride, settings.sigma_px)
    has_points = batch.get("has_points")
    item_mask = None if has_points is None else has_points.to(heat.device).bool()

    weights = None
    if settings.class_weights is not None:
        weights = torch.tensor(settings.class_weights, dtype=torch.float32, device=seg.device)
    zero = seg.sum() * 0.0
    ce = cross_entropy_loss(seg, mask, weights) if settings.ce_weight > 0 else zero
    dice = soft_dice_loss(seg, mask) if settings.dice_weight > 0 else zero
    focal = heat_focal_loss(heat, targets.heat, settings.focal_alpha, settings.focal_beta, item_mask, ignore)
    off = offset_l1_loss(offset, targets.offset, targets.offset_mask, item_mask)
    loss = (
        settings.ce_weight * ce
        + settings.dice_weight * dice
        + settings.heat_weight * focal
        + settings.offset_weight * off
    )
    parts = {
        "seg_ce": ce.detach(),
        "seg_dice": dice.detach(),
        "heat": focal.detach(),
        "offset": off.detach(),
        "total": loss.detach(),
    }
    return loss, parts
