"""The fading model of one client region: :func:`fit_fading` runs the steps of the package doc in
order (segments and rates, trends, forecast inputs, bootstrap) and assembles the result."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.over_time.fading.bootstrap import _bootstrap, _visit_errors
from pipeline.over_time.fading.forecast import (
    _branch_crossings,
    _forecast,
    _latest_levels,
    _Levels,
    impute_refreshes,
)
from pipeline.over_time.fading.inputs import _log_contrast, _pigmenting_days, prepare
from pipeline.over_time.fading.model import _fit_rates, _Rates
from pipeline.over_time.fading.settings import (
    _LN2,
    DOT_COLUMNS,
    Estimate,
    FadingResult,
    FadingSettings,
    Forecast,
    Trend,
)
from pipeline.over_time.fading.slopes import _percentiles, _trimmed_mean_rows, weighted_median
from pipeline.over_time.fading.trends import _region_trend, _Trends, _trends


def _empty_dots() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series(dtype=float) for c in DOT_COLUMNS})
    out["dot_key"] = pd.Series(dtype=object)
    for c in ("fast_fading", "spreading", "blue_turning"):
        out[c] = pd.Series(dtype=bool)
    return out


def _null_result(o: pd.DataFrame, v: pd.DataFrame, s: FadingSettings, warnings: list[str]) -> FadingResult:
    none = Estimate(None)
    return FadingResult(
        n_dots=int(o["dot"].nunique()) if len(o) else 0,
        n_visits=len(v),
        n_observations=len(o),
        rate_per_day=none,
        half_life_days=none,
        fresh_contrast_dl=None,
        last_median_contrast_dl=None,
        blue_index_per_year=none,
        blue_trend=Trend(none, False, 0),
        spread=Trend(none, False, 0),
        forecast=Forecast("unknown", s.touchup_contrast_dl, None, None, None, None),
        n_refreshed=int(o["refreshed"].sum()) if "refreshed" in o else 0,
        n_refresh_imputed=0,
        visit_sd=None,
        dots=_empty_dots(),
        observations=o,
        warnings=tuple(warnings),
    )


def _dot_table(
    o: pd.DataFrame,
    n_dots: int,
    usable: np.ndarray,
    day: np.ndarray,
    c: np.ndarray,
    r: _Rates,
    region: float,
    fast: np.ndarray,
    tr: _Trends,
    lv: _Levels,
    likely: np.ndarray,
) -> pd.DataFrame:
    """The per-dot table of the result (columns :data:`DOT_COLUMNS`)."""
    dot = o["dot"].to_numpy()
    keys = o.groupby("dot", sort=True)["dot_key"].first().reindex(range(n_dots)).to_numpy()
    last_c = np.full(n_dots, np.nan)
    last_seen = np.full(n_dots, -np.inf)
    np.maximum.at(last_seen, dot[usable], day[usable])
    is_last = usable & (day == last_seen[dot])
    last_c[dot[is_last]] = c[is_last]
    with np.errstate(divide="ignore", invalid="ignore"):
        table = pd.DataFrame(
            {
                "dot_key": keys,
                "n_obs": np.bincount(dot[usable], minlength=n_dots),
                "n_segments": o.groupby("dot")["segment"].nunique().reindex(range(n_dots)).fillna(0).to_numpy(int),
                "span_days": r.slopes["span"],
                "rate_per_day": np.where(r.has, r.k, np.nan),
                "rate_se": r.se,
                "half_life_days": np.where(r.has & (r.k > 0), _LN2 / r.k, np.nan),
                "rate_ratio": np.where(r.has, r.k / region, np.nan) if region > 0 else np.nan,
                "fast_fading": fast,
                "blue_per_year": tr["blue_raw"],
                "blue_adjusted_per_year": tr["blue_adj"],
                "blue_turning": tr["blue_turning"],
                "spread_mm_per_year": tr["spread"],
                "spreading": tr["spreading"],
                "last_day": np.where(lv.tracked, lv.last_day, np.nan),
                "last_contrast_dL": last_c,
                "refresh_imputed_day": lv.imputed_day,
                "refresh_probability": np.where(np.isfinite(lv.imputed_day) & (lv.branch_p == 0), 1.0, lv.branch_p),
                "crossing_day": np.where(lv.tracked & np.isfinite(likely), likely, np.nan),
            },
            columns=list(DOT_COLUMNS),
        )
    return table


def fit_fading(
    observations: pd.DataFrame,
    visits: pd.DataFrame | Iterable[Mapping[str, Any]],
    settings: FadingSettings,
    rng: np.random.Generator,
    baseline_date: str | dt.date | None = None,
) -> FadingResult:
    """Fit the fading model of one client region (see the package doc).

    Never raises for too little data: the result then has ``None`` estimates, forecast
    status ``unknown`` and a warning saying why. Raises :class:`FadingError` for malformed
    input. ``baseline_date`` (the day-0 visit's date) turns forecast days into dates.
    """
    s = settings
    o, v = prepare(observations, visits)
    base = dt.date.fromisoformat(baseline_date) if isinstance(baseline_date, str) else baseline_date
    warnings: list[str] = []
    c = o["contrast_dL"].to_numpy(float)
    usable = np.isfinite(c) & (c > 0)
    if not usable.any():
        warnings.append("no dot has a positive contrast: no fading model")
        return _null_result(o.assign(segment=0, refreshed=False, start_day=np.nan, age_days=np.nan), v, s, warnings)
    n_days = int(o.loc[usable, "day"].nunique())
    if n_days < 2:
        warnings.append(f"dots were measured at {n_days} visit; a fading rate needs at least 2")
    n_dots = int(o["dot"].max()) + 1

    o, r, fast = _fit_rates(o, v, s, n_dots)
    region = r.region
    if not np.isfinite(region):
        if n_days >= 2:
            warnings.append(f"no dot was followed over {s.min_span_days:g} days or more: no fading rate")
        return _null_result(o, v, s, warnings)
    if region <= 0:
        warnings.append("the contrast does not fall over time: no half-life, no touch-up forecast")
    n_rated = int(r.has.sum())
    if n_rated < 10:
        warnings.append(f"only {n_rated} dot(s) followed long enough for a rate: wide intervals")

    tr = _trends(o, v, s, n_dots)
    if not bool(tr["any_settled"]):
        warnings.append(f"every visit is within {s.settle_days:g} days of a session: no colour or size trend")

    # forecast inputs: where each dot stands, refreshes of dots unseen since a pigmenting visit
    shrink = np.where(r.has, r.tau2 / (r.tau2 + r.se**2), 0.0) if r.tau2 > 0 else np.zeros(n_dots)
    k_dots = np.where(r.has, region + (np.nan_to_num(r.k) - region) * shrink, region)
    with np.errstate(divide="ignore"):
        k_sd = np.where(r.has, np.sqrt(shrink) * np.nan_to_num(r.se), math.sqrt(r.tau2))  # posterior sd
    lv = _latest_levels(o, s, n_dots)
    lv, notes = impute_refreshes(o, lv, k_dots, k_sd, _pigmenting_days(v))
    warnings += notes
    ve = _visit_errors(o, r, lv, s)
    log_thr = math.log(s.touchup_contrast_dl)
    days_b, w_b = _branch_crossings(
        lv.ybar, lv.tbar, lv.last_day, lv.branch_level, lv.branch_day, lv.branch_p, lv.tracked, k_dots, log_thr
    )
    crossing = float(weighted_median(days_b.ravel(), w_b.ravel())) if region > 0 else float("nan")
    likely = np.where(lv.branch_p >= 0.5, days_b[:, 1], days_b[:, 0])  # each dot's more likely branch
    boot = _bootstrap(rng, s, r, fast, lv, ve, tr, log_thr)

    # region figures
    lo_k, hi_k = _percentiles(boot["region"], s.interval)
    half = (
        Estimate.of(_LN2 / region, _LN2 / hi_k if hi_k > 0 else None, _LN2 / lo_k if lo_k > 0 else None)
        if region > 0
        else Estimate(None)
    )
    y = _log_contrast(o, s)
    age = o["age_days"].to_numpy(float)
    fresh_rows = np.isfinite(y) & (age >= 0)
    fresh = float(np.median(np.exp(y[fresh_rows] + region * age[fresh_rows]))) if fresh_rows.any() else None
    day = o["day"].to_numpy(float)
    last_visit_day = float(day[usable].max())
    last_median = float(np.median(c[usable & (day == last_visit_day)]))
    table = _dot_table(o, n_dots, usable, day, c, r, region, fast, tr, lv, likely)
    return FadingResult(
        n_dots=n_dots,
        n_visits=len(v),
        n_observations=len(o),
        rate_per_day=Estimate.of(region, lo_k, hi_k),
        half_life_days=half,
        fresh_contrast_dl=fresh,
        last_median_contrast_dl=last_median,
        blue_index_per_year=Estimate.of(
            float(_trimmed_mean_rows(tr["blue_raw"][None, :], s.trend_trim)[0]),
            *_percentiles(boot["blue_raw"], s.interval),
        ),
        blue_trend=_region_trend(
            s,
            tr["blue_adj"],
            boot["blue_adj"],
            s.blue_min_per_year,
            tr["blue_turning"],
            tr["blue_turn_slope"],
            tr["visit_trends"]["blue_adj"],
        ),
        spread=_region_trend(
            s,
            tr["spread"],
            boot["spread"],
            s.spread_min_mm_per_year,
            tr["spreading"],
            visits=tr["visit_trends"]["spread"],
        ),
        forecast=_forecast(s, v, region, crossing, boot["cross"], last_visit_day, last_median, base),
        n_refreshed=int(o["refreshed"].sum()),
        n_refresh_imputed=int(
            round(float(np.sum(np.where(np.isfinite(lv.imputed_day) & (lv.branch_p == 0), 1.0, lv.branch_p))))
        ),
        visit_sd=ve.sd,
        dots=table,
        observations=o,
        warnings=tuple(warnings),
    )
