"""Steps 1-4 of the fading model (see the package doc): segments of each dot track, per-dot
decay rates and their standard errors, the region's rate (half-life ``ln 2 / k``) and the fast faders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.over_time.fading.inputs import _last_pigmenting, _log_contrast, _pigmenting_days
from pipeline.over_time.fading.settings import FadingSettings
from pipeline.over_time.fading.slopes import _mad, _robust_scale, weighted_median, within_slopes

# ---------------------------------------------------------------------------------------------
# segments
# ---------------------------------------------------------------------------------------------


def segment_tracks(o: pd.DataFrame, v: pd.DataFrame, rate_per_day: float, refresh_jump: float) -> pd.DataFrame:
    """Split each dot's track where a pigmenting visit refreshed it (package doc, step 1).

    ``o`` from :func:`prepare`. Returns a copy with ``segment`` (integer code),
    ``refreshed``, ``start_day`` (the refreshing visit; for a dot's first segment the last
    pigmenting visit on or before its first observation, or that observation when none)
    and ``age_days``. All positive contrasts count here, saturated ones too (a saturated
    value is a lower bound: a jump above it is a refresh all the more).
    """
    o = o.copy()
    n = len(o)
    day = o["day"].to_numpy(float)
    dot = o["dot"].to_numpy()
    c = o["contrast_dL"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(np.where(c > 0, c, np.nan))
    last_pig = _last_pigmenting(day, _pigmenting_days(v))
    first = np.ones(n, bool)
    first[1:] = dot[1:] != dot[:-1]
    # previous valid contrast of the same dot and its day (NaN before a dot's first valid value)
    finite = np.isfinite(y)
    prev_y = pd.Series(np.where(finite, y, np.nan)).groupby(dot).shift(1).groupby(dot).ffill().to_numpy(float)
    prev_day = pd.Series(np.where(finite, day, np.nan)).groupby(dot).shift(1).groupby(dot).ffill().to_numpy(float)
    with np.errstate(invalid="ignore"):
        jump = y - (prev_y - rate_per_day * (day - prev_day))
        refreshed = np.isfinite(prev_y) & (last_pig > prev_day) & (jump > refresh_jump)
    o["refreshed"] = refreshed
    o["segment"] = np.cumsum(first | refreshed) - 1
    seg = o["segment"].to_numpy()
    seg_first_day = pd.Series(day).groupby(seg).transform("min").to_numpy(float)
    seg_pig = pd.Series(np.where(first | refreshed, last_pig, np.nan)).groupby(seg).transform("max").to_numpy(float)
    o["start_day"] = np.where(np.isfinite(seg_pig), seg_pig, seg_first_day)
    o["age_days"] = day - o["start_day"].to_numpy(float)
    return o


# ---------------------------------------------------------------------------------------------
# rates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rates:
    k: np.ndarray  # per-dot rate per day (NaN without enough data)
    se: np.ndarray
    has: np.ndarray  # the dot has a usable rate
    region: float  # weighted median rate (NaN when no dot has one)
    tau2: float  # variance of the true rates between dots
    slopes: dict  # within_slopes() output of the fit


def _dot_rates(o: pd.DataFrame, n_dots: int, s: FadingSettings, exclude: np.ndarray | None = None) -> _Rates:
    sl = within_slopes(
        o["dot"].to_numpy(), o["segment"].to_numpy(), o["day"].to_numpy(float), _log_contrast(o, s), n_dots
    )
    k = -sl["slope"]
    has = np.isfinite(k) & (sl["stt"] > 0) & (sl["span"] >= max(s.min_span_days, 1e-9))
    sigma = _robust_scale(sl["sse"][has], sl["dof"][has])
    if not np.isfinite(sigma) or sigma <= 0:
        sigma = 0.03  # no dot with spare degrees of freedom: ~3 % per observation
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.where(has, sigma / np.sqrt(np.where(sl["stt"] > 0, sl["stt"], np.nan)), np.nan)
    use = has if exclude is None else has & ~exclude
    tau2 = _between_variance(k[use], se[use]) if use.any() else 0.0
    w = np.where(use, 1.0 / (np.nan_to_num(se, nan=np.inf) ** 2 + tau2), 0.0)
    region = float(weighted_median(k, w)) if use.any() else float("nan")
    return _Rates(k=k, se=se, has=has, region=region, tau2=tau2, slopes=sl)


def _between_variance(k: np.ndarray, se: np.ndarray) -> float:
    """Variance of the true rates between dots: the squared MAD of the better-measured half of
    the rates less their mean squared error (a few dots followed for a few weeks must not
    swamp it with their noise)."""
    precise = se <= np.median(se)
    return max(_mad(k[precise]) ** 2 - float(np.mean(se[precise] ** 2)), 0.0)


def _fast(r: _Rates, region: float, s: FadingSettings) -> np.ndarray:
    if not (np.isfinite(region) and region > 0):
        return np.zeros(len(r.k), bool)
    with np.errstate(invalid="ignore"):
        return r.has & (r.k >= s.fast_ratio * region) & ((r.k - s.fast_ratio * region) / r.se > s.fast_z)


def _fit_rates(
    o: pd.DataFrame, v: pd.DataFrame, s: FadingSettings, n_dots: int
) -> tuple[pd.DataFrame, _Rates, np.ndarray]:
    """Steps 1-4: segments (two passes), per-dot and region rates, fast faders."""
    seg = segment_tracks(o, v, 0.0, s.refresh_jump)
    r = _dot_rates(seg, n_dots, s)
    if np.isfinite(r.region):
        seg = segment_tracks(o, v, max(r.region, 0.0), s.refresh_jump)
        r = _dot_rates(seg, n_dots, s)
    fast = _fast(r, r.region, s)
    if fast.any():
        r = _dot_rates(seg, n_dots, s, exclude=fast)
        fast = _fast(r, r.region, s)
    return seg, r, fast
