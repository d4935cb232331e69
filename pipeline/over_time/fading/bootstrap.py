"""Uncertainty of the fading model (see the package doc): the linear effect of one offset per visit
on every dot's rate and level, and the bootstrap over dot tracks that repeats steps 3, 5 and 6."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.over_time.fading.forecast import _branch_crossings, _Levels
from pipeline.over_time.fading.model import _Rates
from pipeline.over_time.fading.settings import FadingSettings
from pipeline.over_time.fading.slopes import _trimmed_mean_rows, weighted_median
from pipeline.over_time.fading.trends import _Trends


@dataclass(frozen=True)
class _VisitErrors:
    """Linear effect of one log-contrast offset per observation day on rates and levels."""

    rate: np.ndarray  # (n_dots, n_days): d k_i / d offset_d
    level: np.ndarray  # (n_dots, n_days): d ybar_i / d offset_d
    sd: float  # sd of the offsets drawn


def _visit_errors(o: pd.DataFrame, r: _Rates, lv: _Levels, s: FadingSettings) -> _VisitErrors:
    day = o["day"].to_numpy(float)
    days, d_idx = np.unique(day, return_inverse=True)
    n_dots, n_days = len(r.k), len(days)
    dot = o["dot"].to_numpy()
    dt_ = r.slopes["dt"]
    used = np.isfinite(dt_) & r.has[dot]
    rate = np.zeros((n_dots, n_days))
    with np.errstate(divide="ignore", invalid="ignore"):
        coef = -dt_[used] / r.slopes["stt"][dot[used]]  # k = -slope; slope = sum(dt * y) / stt
    np.add.at(rate, (dot[used], d_idx[used]), coef)
    level = np.zeros((n_dots, n_days))
    rows = lv.rows
    n_rows = np.bincount(dot[rows], minlength=n_dots)
    np.add.at(level, (dot[rows], d_idx[rows]), 1.0 / np.maximum(n_rows[dot[rows]], 1))
    # observed visit effects: median residual of the dots' own fits at each day
    resid = r.slopes["resid"]
    ok = np.isfinite(resid) & r.has[dot] & (r.slopes["dof"][dot] > 0)
    med = np.array(
        [np.median(resid[ok & (d_idx == j)]) if (ok & (d_idx == j)).sum() >= 5 else np.nan for j in range(n_days)]
    )
    med = med[np.isfinite(med)]
    # each dot's own slope absorbs part of a visit effect: scale up by n/(n-2)
    sd = float(np.sqrt(np.mean(med**2) * len(med) / (len(med) - 2))) if len(med) > 2 else 0.0
    return _VisitErrors(rate=rate, level=level, sd=max(sd, s.visit_sd_floor))


def _bootstrap(
    rng: np.random.Generator,
    s: FadingSettings,
    r: _Rates,
    fast: np.ndarray,
    lv: _Levels,
    ve: _VisitErrors,
    tr: _Trends,
    log_thr: float,
) -> dict[str, np.ndarray]:
    """Resample dot tracks and draw visit offsets; region rate, crossing day and trends per replicate."""
    n_dots = len(r.k)
    shrink = np.where(r.has, r.tau2 / (r.tau2 + r.se**2), 0.0) if r.tau2 > 0 else np.zeros(n_dots)
    w = np.where(r.has & ~fast, 1.0 / (np.nan_to_num(r.se, nan=np.inf) ** 2 + r.tau2), 0.0)
    k0 = np.where(r.has, r.k, np.nan)
    out: dict[str, list] = {name: [] for name in ("region", "cross", "blue_raw", "blue_adj", "spread")}
    chunk = max(1, min(s.n_bootstrap, 1_000_000 // max(n_dots, 1)))
    done = 0
    while done < s.n_bootstrap:
        b = min(chunk, s.n_bootstrap - done)
        done += b
        idx = rng.integers(0, n_dots, (b, n_dots))
        offsets = rng.normal(0.0, ve.sd, (b, ve.rate.shape[1]))
        k_b = k0[None, :] + offsets @ ve.rate.T  # (b, n_dots) every dot's rate
        reg_b = weighted_median(np.take_along_axis(k_b, idx, 1), w[idx])
        rows = np.arange(b)[:, None]
        kd = reg_b[:, None] + (np.nan_to_num(k_b) - reg_b[:, None]) * shrink[None, :]
        kd = np.where(r.has[None, :], kd, reg_b[:, None])[rows, idx]
        shift = (offsets @ ve.level.T)[rows, idx]
        days, wts = _branch_crossings(
            lv.ybar[idx] + shift,
            lv.tbar[idx],
            lv.last_day[idx],
            lv.branch_level[idx] + shift,
            lv.branch_day[idx],
            lv.branch_p[idx],
            lv.tracked[idx],
            kd,
            log_thr,
        )
        cross = weighted_median(days.reshape(b, -1), wts.reshape(b, -1))
        out["cross"].append(np.where(np.isfinite(reg_b) & (reg_b > 0), cross, np.nan))
        out["region"].append(reg_b)
        for name in ("blue_raw", "blue_adj", "spread"):
            out[name].append(_trimmed_mean_rows(tr[name][idx], s.trend_trim))
    return {name: np.concatenate(parts) for name, parts in out.items()}
