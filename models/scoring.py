"""Scores of a segmenter against labels: region overlap and dot matching.

Pure functions on arrays, shared by ``smp evaluate``, the validation pass of
``smp train`` and the benchmark. Classes follow docs/design.md (0 background,
1 scalp, 2 hair); label 255 is "not labelled" and never counts.

Dot matching is a one-to-one assignment (minimum total distance, SciPy's
``linear_sum_assignment``) between predicted and true centres closer than the
match radius; the radius is given in millimetres and turned into pixels with
the photo's scale, so that a close-up at 10 px/mm and one at 30 px/mm are held
to the same physical tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

CLASS_NAMES = ("background", "scalp", "hair")
IGNORE = 255


def confusion(labels: np.ndarray, truth: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """(n, n) int64 counts, rows = true class, columns = predicted class; 255 ignored."""
    if labels.shape != truth.shape:
        raise ValueError(f"prediction {labels.shape} and label {truth.shape} differ in size")
    keep = truth != IGNORE
    t = truth[keep].astype(np.int64)
    p = labels[keep].astype(np.int64)
    if t.size and (t.max() >= n_classes or p.max() >= n_classes):
        raise ValueError(f"class index above {n_classes - 1} in labels")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass(frozen=True)
class RegionScores:
    iou: tuple[float, ...]
    dice: tuple[float, ...]
    pixel_accuracy: float

    @property
    def miou_scalp_hair(self) -> float:
        """Mean IoU over scalp and hair, the acceptance figure (NaN classes skipped)."""
        vals = [v for v in self.iou[1:3] if not np.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")

    def to_dict(self) -> dict[str, float]:
        out = {"pixel_accuracy": self.pixel_accuracy, "miou_scalp_hair": self.miou_scalp_hair}
        for name, i, d in zip(CLASS_NAMES, self.iou, self.dice):
            out[f"iou_{name}"] = i
            out[f"dice_{name}"] = d
        return out


def region_scores(cm: np.ndarray) -> RegionScores:
    """IoU and Dice per class from a confusion matrix (NaN for a class absent from both)."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        dice = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    total = cm.sum()
    return RegionScores(
        tuple(float(v) for v in iou), tuple(float(v) for v in dice), float(tp.sum() / total) if total else float("nan")
    )


@dataclass(frozen=True)
class DotMatch:
    """The one-to-one matching of predicted and true dot centres in one photo.

    True dots the photo does not show (``visible`` False: under hair, or below
    the contrast floor) take part in the matching but count neither way: a
    prediction on one is neither a hit nor a false dot, and missing one is not
    a miss. Only pairs on visible dots are listed in ``pred_index`` /
    ``true_index``.
    """

    pred_index: np.ndarray
    """(M,) indices into the predictions of matched pairs (visible true dots)."""
    true_index: np.ndarray
    """(M,) indices into the truth of matched pairs (visible true dots)."""
    distance_px: np.ndarray
    """(M,) distance of each matched pair, pixels."""
    n_pred: int
    n_true: int
    """Visible true dots."""
    ignored_pred_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Predictions matched to a dot the photo does not show (neither hit nor false)."""

    @property
    def tp(self) -> int:
        return int(len(self.pred_index))

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp - int(len(self.ignored_pred_index))

    @property
    def fn(self) -> int:
        return self.n_true - self.tp


def match_radius_px(
    diameter_mm: np.ndarray, px_per_mm: float, *, radius_mm: float = 0.1, diameter_fraction: float = 0.15
) -> np.ndarray:
    """(N,) match radius of each true dot: ``radius_mm`` or ``diameter_fraction`` x its diameter, the larger."""
    d = np.nan_to_num(np.asarray(diameter_mm, np.float64), nan=0.0)
    return np.maximum(radius_mm, diameter_fraction * d) * float(px_per_mm)


def match_dots(
    pred_xy: np.ndarray, true_xy: np.ndarray, radius_px: float | np.ndarray, *, visible: np.ndarray | None = None
) -> DotMatch:
    """Optimal one-to-one matching of centres closer than ``radius_px``.

    ``radius_px``: one radius, or one per true dot (:func:`match_radius_px`).
    ``visible``: (N_true,) bool; invisible true dots are matched but not scored
    (see :class:`DotMatch`). Candidate pairs come from a KD-tree; the assignment
    minimises the total distance among pairs within the radius (a sparse
    bipartite matching, so it stays fast with tens of thousands of dots).
    """
    pred_xy = np.asarray(pred_xy, np.float64).reshape(-1, 2)
    true_xy = np.asarray(true_xy, np.float64).reshape(-1, 2)
    n_p, n_t = len(pred_xy), len(true_xy)
    vis = np.ones(n_t, bool) if visible is None else np.asarray(visible, bool).reshape(-1)
    if len(vis) != n_t:
        raise ValueError(f"visible has {len(vis)} entries for {n_t} true dots")
    radii = np.broadcast_to(np.asarray(radius_px, np.float64), (n_t,))
    n_vis = int(vis.sum())
    empty = np.zeros(0, np.int64)
    r_max = float(radii.max()) if n_t else 0.0
    if n_p == 0 or n_t == 0 or r_max <= 0:
        return DotMatch(empty, empty, np.zeros(0), n_p, n_vis)
    pairs = cKDTree(pred_xy).sparse_distance_matrix(cKDTree(true_xy), r_max, output_type="coo_matrix")
    keep = pairs.data <= radii[pairs.col]
    rows, cols, dist = pairs.row[keep], pairs.col[keep], pairs.data[keep]
    if len(rows) == 0:
        return DotMatch(empty, empty, np.zeros(0), n_p, n_vis)
    # match within the rows/columns that have edges, with a dummy edge per row to a private
    # column of large cost (unmatched = allowed), so that a full matching always exists
    ur, ri = np.unique(rows, return_inverse=True)
    uc, ci = np.unique(cols, return_inverse=True)
    n_r, n_c = len(ur), len(uc)
    big = 2.0 * r_max + 1.0
    # weights must be > 0 for the sparse matcher: shift distances by a constant
    w = np.concatenate([dist + 1e-9, np.full(n_r, big)])
    r = np.concatenate([ri, np.arange(n_r)])
    c = np.concatenate([ci, n_c + np.arange(n_r)])
    graph = coo_matrix((w, (r, c)), shape=(n_r, n_c + n_r)).tocsr()
    try:
        match = min_weight_full_bipartite_matching(graph)[1]
    except ValueError:  # pragma: no cover - the dummy columns make a full matching exist
        d = np.full((n_r, n_c), big)
        d[ri, ci] = dist
        a, b = linear_sum_assignment(d)
        match = np.full(n_r, n_c + 1)
        match[a] = np.where(d[a, b] < big, b, n_c + 1)
    real = match < n_c
    pr = ur[np.flatnonzero(real)]
    tr = uc[match[real]]
    seen = vis[tr]
    dd = np.hypot(*(pred_xy[pr[seen]] - true_xy[tr[seen]]).T)
    return DotMatch(pr[seen].astype(np.int64), tr[seen].astype(np.int64), dd, n_p, n_vis, pr[~seen].astype(np.int64))


@dataclass(frozen=True)
class DotScores:
    tp: int
    fp: int
    fn: int
    localisation_mm: np.ndarray

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else float("nan")

    def to_dict(self) -> dict[str, float]:
        loc = self.localisation_mm
        return {
            "dot_precision": self.precision,
            "dot_recall": self.recall,
            "dot_f1": self.f1,
            "dot_tp": float(self.tp),
            "dot_fp": float(self.fp),
            "dot_fn": float(self.fn),
            "dot_loc_error_mm_median": float(np.median(loc)) if len(loc) else float("nan"),
        }


def dot_scores(matches: list[tuple[DotMatch, float]]) -> DotScores:
    """Pool matches of many photos; each with its px/mm for the localisation error."""
    tp = sum(m.tp for m, _ in matches)
    fp = sum(m.fp for m, _ in matches)
    fn = sum(m.fn for m, _ in matches)
    loc = np.concatenate([m.distance_px / ppm for m, ppm in matches]) if matches else np.zeros(0)
    return DotScores(tp, fp, fn, loc)


def false_dot_causes(
    false_xy: np.ndarray, lookalike_xy: np.ndarray, lookalike_kind: np.ndarray, labels: np.ndarray, radius_px: float
) -> np.ndarray:
    """(N,) what each false dot sits on: the kind of the nearest look-alike within ``radius_px``
    (``pores``, ``cut_ends``, ``crease_junctions``, ... from the synthetic truth), else ``hair``
    where the true class under it is hair, else ``background`` outside the scalp, else ``skin``
    (the skin's own texture: mottling, noise, JPEG).
    """
    xy = np.asarray(false_xy, np.float64).reshape(-1, 2)
    out = np.full(len(xy), "skin", dtype=object)
    if len(xy) == 0:
        return out
    h, w = labels.shape
    xi = np.clip(np.round(xy[:, 0]).astype(np.int64), 0, w - 1)
    yi = np.clip(np.round(xy[:, 1]).astype(np.int64), 0, h - 1)
    cls = labels[yi, xi]
    out[cls == 2] = "hair"
    out[cls == 0] = "background"
    la = np.asarray(lookalike_xy, np.float64).reshape(-1, 2)
    if len(la):
        dist, j = cKDTree(la).query(xy)
        near = dist <= radius_px
        out[near] = np.asarray(lookalike_kind, dtype=object)[j[near]]
    return out


@dataclass(frozen=True)
class BoundaryScores:
    """Agreement of two binary masks with a tolerance in pixels (thin structures: hair).

    ``precision``: share of predicted pixels within ``tolerance_px`` of a true
    pixel; ``recall``: share of true pixels within ``tolerance_px`` of a
    predicted one; ``f1`` their harmonic mean. A 1-px strand drawn one pixel to
    the side scores 0 in pixel IoU and 1 here; the pixel counts are kept so that
    photos can be pooled (:func:`pool_boundary`).
    """

    pred_near: int
    pred_total: int
    true_near: int
    true_total: int
    tolerance_px: int

    @property
    def precision(self) -> float:
        return self.pred_near / self.pred_total if self.pred_total else float("nan")

    @property
    def recall(self) -> float:
        return self.true_near / self.true_total if self.true_total else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        if not (p == p and r == r) or p + r == 0:
            return float("nan") if not (p == p and r == r) else 0.0
        return 2 * p * r / (p + r)


def boundary_scores(
    pred: np.ndarray, truth: np.ndarray, tolerance_px: int = 1, valid: np.ndarray | None = None
) -> BoundaryScores:
    """Tolerant agreement of bool masks ``pred`` and ``truth`` (see :class:`BoundaryScores`).

    ``valid``: pixels that count (e.g. truth != 255); the tolerance is a square
    of side ``2 tolerance_px + 1`` (8-connected neighbours for 1 px).
    """
    import cv2

    p = np.asarray(pred, bool)
    t = np.asarray(truth, bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and label {t.shape} differ in size")
    if valid is not None:
        p = p & valid
        t = t & valid
    k = np.ones((2 * tolerance_px + 1, 2 * tolerance_px + 1), np.uint8)
    t_near = cv2.dilate(t.view(np.uint8), k).view(bool)
    p_near = cv2.dilate(p.view(np.uint8), k).view(bool)
    return BoundaryScores(int((p & t_near).sum()), int(p.sum()), int((t & p_near).sum()), int(t.sum()), tolerance_px)


def class_counts(name: str, k: int, cm: np.ndarray, tolerant: BoundaryScores) -> dict[str, int]:
    """The pixel counts behind class ``k``'s IoU (from the confusion matrix ``cm``) and its tolerant
    scores, keyed ``{name}_inter``, ``{name}_union``, ``{name}_pred_near`` ...: photos can be pooled
    by adding them up."""
    return {
        f"{name}_inter": int(cm[k, k]),
        f"{name}_union": int(cm[k, :].sum() + cm[:, k].sum() - cm[k, k]),
        f"{name}_pred_near": tolerant.pred_near,
        f"{name}_pred_total": tolerant.pred_total,
        f"{name}_true_near": tolerant.true_near,
        f"{name}_true_total": tolerant.true_total,
    }


def pool_boundary(scores: list[BoundaryScores]) -> BoundaryScores:
    """Pixel counts of many photos added up (same tolerance)."""
    tol = scores[0].tolerance_px if scores else 1
    return BoundaryScores(
        sum(s.pred_near for s in scores),
        sum(s.pred_total for s in scores),
        sum(s.true_near for s in scores),
        sum(s.true_total for s in scores),
        tol,
    )
