"""Step 6 of the fading model (see the package doc): where each dot track stands, the refreshes of
dots unseen since a pigmenting visit, the day each dot (branch) crosses the touch-up threshold and
the touch-up forecast of the region."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import minimize

from pipeline.over_time.fading.inputs import _log_contrast, _pigmenting_days
from pipeline.over_time.fading.settings import _YEAR, FadingSettings, Forecast
from pipeline.over_time.fading.slopes import _percentiles


@dataclass(frozen=True)
class _Levels:
    """Where each dot track stands: the fit of its latest segment (forecast input)."""

    ybar: np.ndarray  # mean log contrast of the rows used
    tbar: np.ndarray  # their mean day
    last_day: np.ndarray  # the last of them (0 for an untracked dot)
    start: np.ndarray  # day the latest segment's pigment was placed
    tracked: np.ndarray  # the dot has a positive contrast somewhere
    rows: np.ndarray  # (n_obs,) rows used
    imputed_day: np.ndarray  # pigmenting day of a refresh taken as certain (NaN: none)
    branch_day: np.ndarray  # last pigmenting visit the dot may have been refreshed at unseen (NaN: none)
    branch_p: np.ndarray  # probability it was (0: none)
    branch_level: np.ndarray  # its fresh log level there


def _branch_crossings(
    ybar: np.ndarray,
    tbar: np.ndarray,
    last_day: np.ndarray,
    b_level: np.ndarray,
    b_day: np.ndarray,
    b_p: np.ndarray,
    tracked: np.ndarray,
    k: np.ndarray,
    log_thr: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Crossing days (..., 2) of each dot's not-refreshed and refreshed branch and their weights
    (all arrays of one shape: the dots, or rows of a bootstrap)."""
    keep = _crossing_days(ybar - k * (last_day - tbar), last_day, k, log_thr)
    fresh = np.where(b_p > 0, _crossing_days(b_level, np.nan_to_num(b_day), k, log_thr), np.nan)
    w = np.stack([np.where(tracked, 1.0 - b_p, 0.0), np.where(tracked, b_p, 0.0)], -1)
    return np.stack([keep, fresh], -1), w


def _latest_levels(o: pd.DataFrame, s: FadingSettings, n_dots: int) -> _Levels:
    """Unsaturated rows of each dot's latest segment; a dot with only saturated rows there keeps
    its last one (a lower bound of its level)."""
    y = _log_contrast(o, s, censor=False)
    y_fit = _log_contrast(o, s)
    day = o["day"].to_numpy(float)
    dot = o["dot"].to_numpy()
    seg = o["segment"].to_numpy()
    ok = np.isfinite(y)
    latest = np.full(n_dots, -1)
    np.maximum.at(latest, dot[ok], seg[ok])
    in_latest = ok & (seg == latest[dot])
    last_raw = np.full(n_dots, -np.inf)
    np.maximum.at(last_raw, dot[in_latest], day[in_latest])
    fit_rows = in_latest & np.isfinite(y_fit)
    has_fit = np.bincount(dot[fit_rows], minlength=n_dots) > 0
    rows = fit_rows | (in_latest & ~has_fit[dot] & (day == last_raw[dot]))
    n = np.bincount(dot[rows], minlength=n_dots)
    tracked = n > 0
    last_day = np.zeros(n_dots)
    np.maximum.at(last_day, dot[rows], day[rows])
    start = np.full(n_dots, np.nan)
    start[dot[rows]] = o["start_day"].to_numpy(float)[rows]
    return _Levels(
        ybar=np.bincount(dot[rows], y[rows], n_dots) / np.maximum(n, 1),
        tbar=np.bincount(dot[rows], day[rows], n_dots) / np.maximum(n, 1),
        last_day=np.where(tracked, last_day, 0.0),
        start=start,
        tracked=tracked,
        rows=rows,
        imputed_day=np.full(n_dots, np.nan),
        branch_day=np.full(n_dots, np.nan),
        branch_p=np.zeros(n_dots),
        branch_level=np.full(n_dots, np.nan),
    )


def _refresh_rule(mu: np.ndarray, sd: np.ndarray, refreshed: np.ndarray) -> tuple[float, float]:
    """The artist's rule from dots whose fate is known: refreshed when the log fraction of fresh
    contrast left is below ``cut``, give or take ``fuzz``.

    Probit maximum likelihood: each dot's fraction is known only as ``N(mu, sd^2)`` (its
    rate is an estimate), so ``P(refreshed) = Phi((cut - mu) / sqrt(sd^2 + fuzz^2))``.
    Returns ``(-inf, 0)`` when none was refreshed and ``(+inf, 0)`` when all were.
    """
    if not refreshed.any():
        return -np.inf, 0.0
    if refreshed.all():
        return np.inf, 0.0
    y = refreshed.astype(float)

    def nll(x: np.ndarray) -> float:
        fuzz = float(np.clip(np.exp(x[1]), 1e-3, 2.0))
        z = (x[0] - mu) / np.sqrt(sd**2 + fuzz**2)
        return -float(np.sum(y * stats.norm.logcdf(z) + (1 - y) * stats.norm.logcdf(-z)))

    start = np.array([float(np.quantile(mu, y.mean())), math.log(0.05)])
    fit = minimize(nll, start, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 400})
    return float(fit.x[0]), float(np.clip(np.exp(fit.x[1]), 1e-3, 2.0))


def impute_refreshes(
    o: pd.DataFrame, lv: _Levels, k: np.ndarray, k_sd: np.ndarray, pig_days: np.ndarray
) -> tuple[_Levels, list[str]]:
    """Refreshes of dots last seen before a pigmenting visit (package doc, step 6).

    ``k``: each dot's rate (shrunk), ``k_sd``: its posterior sd. For each pigmenting visit
    ``P``, the dots seen before and on/after ``P`` give the artist's rule on the log
    fraction of fresh contrast left at ``P`` (``-k * age``; :func:`_refresh_rule`: the
    synthetic artist refreshes dots left under 60 % of fresh, a real one those that look
    faded). A dot last seen before ``P`` was refreshed there with probability ``p`` from
    that rule. At the last such visit the dot keeps both branches, "refreshed" (restarting
    at ``P`` from its own fresh level, its latest segment's level at age 0) with weight
    ``p`` and "not refreshed" with ``1 - p``, in the weighted median of the forecast: the
    median needs the right *share* of refreshed dots, which single yes/no calls on noisy
    rates get wrong. At an earlier one a dot is taken as refreshed when ``p >= 0.5``.
    Without dots seen on both sides of ``P`` nothing is imputed and a warning says so.
    """
    day = o["day"].to_numpy(float)
    dot = o["dot"].to_numpy()
    c = o["contrast_dL"].to_numpy(float)
    ok = np.isfinite(c) & (c > 0)
    n_dots = len(k)
    first_seen = np.full(n_dots, np.inf)
    np.minimum.at(first_seen, dot[ok], day[ok])
    last_seen = np.full(n_dots, -np.inf)
    np.maximum.at(last_seen, dot[ok], day[ok])
    seg_start = o["start_day"].to_numpy(float)
    refreshed_row = o["refreshed"].to_numpy(bool)
    ybar, tbar, last_day, start = lv.ybar.copy(), lv.tbar.copy(), lv.last_day.copy(), lv.start.copy()
    imputed = np.full(n_dots, np.nan)
    b_day, b_p, b_level = lv.branch_day.copy(), lv.branch_p.copy(), lv.branch_level.copy()
    notes: list[str] = []
    kk = np.where(np.isfinite(k), k, 0.0)
    sd = np.where(np.isfinite(k_sd), k_sd, 0.0)
    relevant = [p for p in pig_days if (lv.tracked & (last_seen < p)).any()]
    for p in relevant:
        later = lv.tracked & (last_seen < p) & (last_day < p)
        across = lv.tracked & (first_seen < p) & (last_seen >= p)
        if not across.any():
            notes.append(
                f"{int(later.sum())} dot(s) not seen since the pigmenting visit on day {p:g} and none "
                "seen on both sides of it: taken as not refreshed there"
            )
            continue
        # the segment in effect just before p: the latest start among the dot's rows before p
        before = ok & (day < p)
        pre_start = np.full(n_dots, -np.inf)
        np.maximum.at(pre_start, dot[before], seg_start[before])
        was = np.zeros(n_dots, bool)
        was[dot[refreshed_row & (seg_start == p)]] = True
        age_a = p - pre_start[across]
        cut, fuzz = _refresh_rule(-kk[across] * age_a, sd[across] * age_a, was[across])
        age = p - start
        with np.errstate(invalid="ignore"):
            z = (cut - (-kk * age)) / np.sqrt((sd * age) ** 2 + fuzz**2)
        prob = np.where(later, np.nan_to_num(stats.norm.cdf(z), nan=0.0) if np.isfinite(cut) else float(cut > 0), 0.0)
        fresh = ybar + kk * (tbar - start)  # the carried segment's level at age 0
        if p == relevant[-1]:
            take = later & (prob > 0)
            b_day[take], b_p[take], b_level[take] = p, prob[take], fresh[take]
            imputed[later & (prob >= 0.5)] = p
        else:
            take = later & (prob >= 0.5)
            ybar[take], tbar[take], last_day[take], start[take] = fresh[take], p, p, p
            imputed[take] = p
    return replace(
        lv,
        ybar=ybar,
        tbar=tbar,
        last_day=last_day,
        start=start,
        imputed_day=imputed,
        branch_day=b_day,
        branch_p=b_p,
        branch_level=b_level,
    ), notes


def _crossing_days(level_log: np.ndarray, last_day: np.ndarray, k: np.ndarray, log_thr: float) -> np.ndarray:
    """Day each dot's contrast reaches the threshold (+inf when it does not fade, -inf when it is
    below and does not fade)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            k > 0,
            last_day + (level_log - log_thr) / np.where(k > 0, k, 1.0),
            np.where(level_log < log_thr, -np.inf, np.inf),
        )


def _forecast(
    s: FadingSettings,
    v: pd.DataFrame,
    region: float,
    crossing: float,
    boot_cross: np.ndarray,
    last_visit_day: float,
    last_median: float,
    base: dt.date | None,
) -> Forecast:
    pig = _pigmenting_days(v)
    ref_day = float(pig[-1]) if len(pig) else float(v["day"].min())
    horizon = ref_day + s.horizon_years * _YEAR
    if not region > 0:
        status = "already_below" if last_median < s.touchup_contrast_dl else "not_within_horizon"
        return Forecast(status, s.touchup_contrast_dl, None, None, None, horizon)
    lo, hi = _percentiles(boot_cross, s.interval)
    if crossing <= last_visit_day:
        status = "already_below"
    elif crossing > horizon:
        status = "not_within_horizon"
    else:
        status = "due"

    def bound(x: float) -> float | None:
        return float(x) if np.isfinite(x) and x <= horizon else None

    day, low, high = bound(crossing), bound(lo), bound(hi)
    return Forecast(
        status=status,
        threshold_dl=s.touchup_contrast_dl,
        day=day,
        day_low=low,
        day_high=high,
        horizon_day=horizon,
        date=_date(base, day),
        date_low=_date(base, low),
        date_high=_date(base, high),
    )


def _date(baseline: dt.date | None, day: float | None) -> str | None:
    if baseline is None or day is None:
        return None
    return (baseline + dt.timedelta(days=int(math.floor(day)))).isoformat()
