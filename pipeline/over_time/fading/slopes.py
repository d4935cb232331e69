"""Within-segment least-squares slopes and the robust summaries the model is built of: weighted
median, pooled residual scales, size groups, trimmed means and percentile intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def within_slopes(
    group: np.ndarray, seg: np.ndarray, t: np.ndarray, y: np.ndarray, n_groups: int
) -> dict[str, np.ndarray]:
    """Least-squares slope of ``y`` on ``t`` per group, pooled over its segments (one intercept each).

    Rows with a non-finite ``y`` are ignored. Returns per group ``slope``, ``stt`` (sum of
    squared segment-centred times), ``sse`` (residual sum of squares), ``dof``
    (observations - segments - 1), ``n`` and ``span`` (the longest segment's day span);
    per row ``dt`` (segment-centred time, NaN where ignored) and ``resid``.
    """
    ok = np.isfinite(y) & np.isfinite(t)
    g, sg, tt, yy = group[ok], seg[ok], t[ok], y[ok]
    _, s = np.unique(sg, return_inverse=True)
    ns = np.bincount(s)
    tbar = np.bincount(s, tt) / np.maximum(ns, 1)
    ybar = np.bincount(s, yy) / np.maximum(ns, 1)
    dt_, dy = tt - tbar[s], yy - ybar[s]
    stt = np.bincount(g, dt_ * dt_, n_groups)
    sty = np.bincount(g, dt_ * dy, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(stt > 0, sty / np.where(stt > 0, stt, 1.0), np.nan)
    resid = dy - np.nan_to_num(slope[g]) * dt_
    sse = np.bincount(g, resid * resid, n_groups)
    n = np.bincount(g, minlength=n_groups)
    seg_group = np.zeros(len(ns), int)
    seg_group[s] = g
    n_seg = np.bincount(seg_group, minlength=n_groups)
    span = np.zeros(n_groups)
    if len(tt):
        tmax = np.full(len(ns), -np.inf)
        tmin = np.full(len(ns), np.inf)
        np.maximum.at(tmax, s, tt)
        np.minimum.at(tmin, s, tt)
        np.maximum.at(span, seg_group, tmax - tmin)
    row_dt = np.full(len(y), np.nan)
    row_dt[ok] = dt_
    row_resid = np.full(len(y), np.nan)
    row_resid[ok] = resid
    return {
        "slope": slope,
        "stt": stt,
        "sse": sse,
        "dof": n - n_seg - 1,
        "n": n,
        "span": span,
        "dt": row_dt,
        "resid": row_resid,
    }


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted median along the last axis (the lower one); NaN where no weight is left.

    Entries with a NaN value or a weight <= 0 do not count; infinite values do (a dot that
    never fades has an infinite crossing day).
    """
    v = np.asarray(values, float)
    w = np.where(~np.isnan(v) & (np.asarray(weights, float) > 0), weights, 0.0)
    v = np.where(w > 0, v, np.inf)
    order = np.argsort(v, axis=-1, kind="stable")
    vs = np.take_along_axis(v, order, -1)
    cw = np.cumsum(np.take_along_axis(w, order, -1), axis=-1)
    total = cw[..., -1:]
    i = np.argmax(cw >= 0.5 * total, axis=-1)
    out = np.take_along_axis(vs, i[..., None], -1)[..., 0]
    return np.where(total[..., 0] > 0, out, np.nan)


def _robust_scale(sse: np.ndarray, dof: np.ndarray) -> float:
    """Pooled residual sd from per-dot ``sse / dof``: their median, unbiased for chi^2 noise."""
    ok = (dof > 0) & np.isfinite(sse)
    if not ok.any():
        return float("nan")
    s2 = sse[ok] / dof[ok]
    return float(np.sqrt(np.median(s2 / (stats.chi2.ppf(0.5, dof[ok]) / dof[ok]))))


def _grouped_scale(
    sse: np.ndarray, dof: np.ndarray, has: np.ndarray, groups: np.ndarray | None, min_dots: int = 20
) -> np.ndarray | float:
    """:func:`_robust_scale` over the dots with a slope (``has``), per group of dots when ``groups``
    is given (each group with at least ``min_dots`` dots; the others take the pooled value):
    one (n_dots,) sd per dot, or one pooled sd."""
    pooled = _robust_scale(sse[has], dof[has])
    if groups is None:
        return pooled
    out = np.full(len(sse), pooled)
    for g in np.unique(groups[has]):
        members = has & (groups == g)
        if np.count_nonzero(members & (dof > 0)) >= min_dots:
            out[groups == g] = _robust_scale(sse[members], dof[members])
    return out


def _size_groups(o: pd.DataFrame, n_dots: int, n_groups: int) -> np.ndarray | None:
    """Each dot's size class: the quantile group of its median diameter (small dots' colour is read
    from fewer pixels, so its measurement noise is larger); None without sizes."""
    if n_groups <= 1 or "diameter_mm" not in o:
        return None
    med = o.groupby("dot")["diameter_mm"].median().reindex(range(n_dots)).to_numpy(float)
    ok = np.isfinite(med)
    if ok.sum() < 2 * n_groups:
        return None
    edges = np.quantile(med[ok], np.linspace(0, 1, n_groups + 1)[1:-1])
    return np.where(ok, np.searchsorted(edges, np.nan_to_num(med, nan=0.0)), -1)


def _mad(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if len(x) else float("nan")


def _trimmed_mean_rows(x: np.ndarray, trim: float) -> np.ndarray:
    """Trimmed mean along the last axis ignoring NaN (rows of a bootstrap)."""
    xs = np.sort(x, axis=-1)  # NaN sort last
    n = np.isfinite(xs).sum(-1)
    lo = np.floor(trim * n).astype(int)
    hi = n - lo
    idx = np.arange(xs.shape[-1])
    keep = (idx >= lo[..., None]) & (idx < hi[..., None])
    total = np.where(keep, np.nan_to_num(xs), 0.0).sum(-1)
    return np.where(n > 0, total / np.maximum(hi - lo, 1), np.nan)


def _percentiles(boot: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval; NaN when half of the replicates or more have no value."""
    b = boot[~np.isnan(boot)]
    if not len(b) or len(b) < 0.5 * len(boot):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(b, a)), float(np.quantile(b, 1 - a))
