"""Step 5 of the fading model (see the package doc): trends per year on settled visits, the
region's (a trimmed mean over the dots, and the visits' own line) and a minority's (the dots that
turn blue or spread, and whether more of them turn than noise alone makes)."""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.over_time.fading.inputs import _last_pigmenting, _pigmenting_days
from pipeline.over_time.fading.settings import _YEAR, Estimate, FadingSettings, Trend
from pipeline.over_time.fading.slopes import (
    _grouped_scale,
    _percentiles,
    _size_groups,
    _trimmed_mean_rows,
    within_slopes,
)


def _trend_slopes(
    o: pd.DataFrame,
    settled: np.ndarray,
    values: np.ndarray,
    n_dots: int,
    min_span: float,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dot within-segment slope per year of ``values`` on settled visits, and its se (the noise
    pooled over all dots, or over each of ``groups``)."""
    y = np.where(settled, values, np.nan)
    sl = within_slopes(o["dot"].to_numpy(), o["segment"].to_numpy(), o["day"].to_numpy(float), y, n_dots)
    has = np.isfinite(sl["slope"]) & (sl["span"] >= max(min_span, 1e-9))
    sigma = _grouped_scale(sl["sse"], sl["dof"], has, groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = sigma / np.sqrt(sl["stt"]) * _YEAR
    return np.where(has, sl["slope"] * _YEAR, np.nan), np.where(has, se, np.nan)


class _Trends(TypedDict):
    """What :func:`_trends` returns: per-dot arrays, and the visits' own lines (:func:`visit_trend`)."""

    visit_trends: dict[str, tuple[float, float, float] | None]  # "blue_adj", "spread"
    blue_raw: np.ndarray
    blue_adj: np.ndarray
    spread: np.ndarray
    spreading: np.ndarray
    blue_turning: np.ndarray
    blue_turn_slope: np.ndarray
    any_settled: np.ndarray


def _trends(o: pd.DataFrame, v: pd.DataFrame, s: FadingSettings, n_dots: int) -> _Trends:
    """Step 5: per-dot slopes per year on settled visits."""
    day = o["day"].to_numpy(float)
    settled = ~(day - _last_pigmenting(day, _pigmenting_days(v)) < s.settle_days)  # NaN: settled
    c = o["contrast_dL"].to_numpy(float)
    bi = o["blue_index"].to_numpy(float)
    # the adjustment multiplies the measurement noise of the blue index by gain = 20 / max(c, 4):
    # a faded dot's adjusted index is several times noisier than a fresh one's
    with np.errstate(invalid="ignore"):
        gain = s.blue_reference_dl / np.maximum(c, s.blue_min_contrast_dl)
    adj = bi * gain
    blue_raw, _ = _trend_slopes(o, settled, bi, n_dots, s.min_span_days)
    blue_adj, _ = _trend_slopes(o, settled, adj, n_dots, s.min_span_days)
    # a dot's own colour is judged only where it has one: visits where it is at least
    # blue_min_contrast_dl darker than its skin and not saturated (a dot fading to nothing has a
    # blue index going to 0, which the adjustment's floor turns into a "trend")
    coloured = settled & (c >= s.blue_min_contrast_dl) & ~(o["L"].to_numpy(float) < s.saturation_lstar)
    diameter = o["diameter_mm"].to_numpy(float)
    turn_adj, turn_diameter = adj, diameter
    if s.turning_relative:
        # a dot turns when it turns against the other dots of the same photos: a visit's camera, lamp
        # and card fit shift every dot's colour (and its scale every dot's size) together, which
        # would otherwise make many dots "turn" at once; a shift of the whole region is the region
        # trend's to find
        turn_adj = adj - _visit_median(day, np.where(coloured, adj, np.nan))
        turn_diameter = diameter - _visit_median(day, np.where(settled, diameter, np.nan))
    # each dot's colour noise from the dots of its size (a small dot's colour is read from few pixels)
    sizes = _size_groups(o, n_dots, s.turning_size_groups)
    blue_turn, blue_se = _scaled_slopes(o, np.where(coloured, turn_adj, np.nan), gain, n_dots, s.min_span_days, sizes)
    spread, _ = _trend_slopes(o, settled, diameter, n_dots, s.min_span_days)
    spread_turn, spread_se = _trend_slopes(o, settled, turn_diameter, n_dots, s.min_span_days)
    with np.errstate(invalid="ignore", divide="ignore"):
        spreading = (
            np.isfinite(spread_turn) & (spread_turn >= s.spread_min_mm_per_year) & (spread_turn / spread_se > s.fast_z)
        )
        turning = np.isfinite(blue_turn) & (blue_turn >= s.blue_turning_min_per_year) & (blue_turn / blue_se > s.fast_z)
    visits = {
        "blue_adj": visit_trend(day, np.where(settled, adj, np.nan), s.trend_trim, s.interval),
        "spread": visit_trend(day, np.where(settled, diameter, np.nan), s.trend_trim, s.interval),
    }
    return {
        "visit_trends": visits,
        "blue_raw": blue_raw,
        "blue_adj": blue_adj,
        "spread": spread,
        "spreading": spreading,
        "blue_turning": turning,
        "blue_turn_slope": blue_turn,
        "any_settled": np.array(bool(settled.any())),
    }


def visit_trend(day: np.ndarray, y: np.ndarray, trim: float, level: float) -> tuple[float, float, float] | None:
    """(slope per year, low, high) of the visits' trimmed means of ``y`` against their day: an
    ordinary least-squares line with its ``level`` interval from the scatter of the visits about it
    (Student t, n - 2 degrees of freedom). What a whole region's trend must also clear: every dot of
    one photo shares its camera, lamp and card fit, so the visits, not the dots, are the independent
    measurements of a shift common to the region. None with fewer than 3 visits."""
    days, means = [], []
    for d in np.unique(day):
        vals = y[(day == d) & np.isfinite(y)]
        if len(vals):
            days.append(float(d))
            means.append(float(_trimmed_mean_rows(vals[None, :], trim)[0]))
    n = len(days)
    if n < 3:
        return None
    t, m = np.asarray(days), np.asarray(means)
    stt = float(np.sum((t - t.mean()) ** 2))
    if stt <= 0:
        return None
    slope = float(np.sum((t - t.mean()) * (m - m.mean())) / stt)
    resid = m - (m.mean() + slope * (t - t.mean()))
    se = math.sqrt(float(np.sum(resid**2)) / (n - 2) / stt)
    half = float(stats.t.ppf(0.5 + level / 2, n - 2)) * se
    return slope * _YEAR, (slope - half) * _YEAR, (slope + half) * _YEAR


def _visit_median(day: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's visit median of ``y`` (rows of one visit share a day; NaN ignored; 0 where a
    visit has no value)."""
    return pd.Series(y).groupby(day).transform("median").fillna(0.0).to_numpy(float)


def _scaled_slopes(
    o: pd.DataFrame, y: np.ndarray, gain: np.ndarray, n_dots: int, min_span: float, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dot within-segment slope per year of ``y`` whose noise is ``gain`` times a common sd,
    and its se: the common sd from the residuals divided by their gains (pooled, robust), each
    slope's variance ``sd^2 * sum(dt^2 gain^2) / stt^2`` (so each dot's slope gets the error of
    its own gains, weighted by where its visits lie in time)."""
    sl = within_slopes(o["dot"].to_numpy(), o["segment"].to_numpy(), o["day"].to_numpy(float), y, n_dots)
    dot = o["dot"].to_numpy()
    ok = np.isfinite(sl["dt"]) & np.isfinite(gain) & (gain > 0)
    scaled = np.bincount(dot[ok], (sl["resid"][ok] / gain[ok]) ** 2, n_dots)
    has = np.isfinite(sl["slope"]) & (sl["span"] >= max(min_span, 1e-9))
    sigma = _grouped_scale(scaled, sl["dof"], has, groups)
    spread = np.bincount(dot[ok], (sl["dt"][ok] * gain[ok]) ** 2, n_dots)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = sigma * np.sqrt(spread) / sl["stt"] * _YEAR
    return np.where(has, sl["slope"] * _YEAR, np.nan), np.where(has, se, np.nan)


def minority_turns(n_turning: int, n_dots: int, s: FadingSettings) -> bool:
    """More dots turn than noise alone makes, and enough of them to matter (package doc, step 5)."""
    if n_dots <= 0 or n_turning < 3 or n_turning < s.turning_min_fraction * n_dots:
        return False
    alpha = float(stats.norm.sf(s.fast_z))
    return bool(stats.binom.sf(n_turning - 1, n_dots, alpha) < s.turning_p)


def _region_trend(
    s: FadingSettings,
    point: np.ndarray,
    boot_values: np.ndarray,
    minimum: float,
    turning: np.ndarray,
    own: np.ndarray | None = None,
    visits: tuple[float, float, float] | None = None,
) -> Trend:
    """The region's :class:`Trend` of one quantity from the per-dot slopes (``point``), their
    bootstrap (``boot_values``), the visits' own line (``visits``, :func:`visit_trend`) and the
    turning dots (``turning``; their median slope from ``own`` when given): step 5 of the package doc."""
    n = int(np.isfinite(point).sum())
    est = float(_trimmed_mean_rows(point[None, :], s.trend_trim)[0])
    lo, hi = _percentiles(boot_values, s.interval)
    if s.region_visits:
        # the range holds both the dots' spread and the visits' scatter (the wider of the two);
        # without three settled visits a shift common to the region cannot be told from the
        # cameras, so no range is given and no region trend claimed
        lo, hi = (float("nan"), float("nan")) if visits is None else (min(lo, visits[1]), max(hi, visits[2]))
    k = int(turning.sum())
    by = "region" if n > 0 and lo > 0 and est >= minimum else "minority" if minority_turns(k, n, s) else None
    return Trend(
        Estimate.of(est, lo, hi),
        by is not None,
        n,
        k,
        float(np.median((point if own is None else own)[turning])) if k else None,
        by,
    )
