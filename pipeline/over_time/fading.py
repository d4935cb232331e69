"""Fading model of a client's dots over visits: rates, half-life, trends, touch-up forecast.

Input: a long table of dot observations, one row per (linked dot, visit) with the
columns ``dot_key`` (the id of a dot track linked across visits), ``day`` (days since
the client's baseline), ``contrast_dL``, ``blue_index``, ``diameter_mm`` and optionally
``L`` (the dot core's L*); and the visits (``day``, ``kind``: baseline | session |
follow-up | touch-up). Output: a :class:`FadingResult`.

Model (the physics of the synthetic truth, ``data/synth/series.py``): a dot's contrast
decays exponentially from its last (re)pigmentation, ``c(t) = c0 * exp(-k * (t - t0))``.
In logs, ``log c = (log c0 + k t0) - k t``: with one free intercept per *segment* of a
track (a segment starts when a dot is placed or refreshed) the rate ``k`` comes from
within-segment slopes alone, so neither a dot's unknown fresh contrast ``c0`` nor the
exact day it was placed biases it (a dot may enter the view long after it was placed).

Steps (:func:`fit_fading`):

1. **Segments** (:func:`segment_tracks`). A touch-up (or a later session) resets the
   clock only of the dots it refreshes. A dot is *refreshed* by the last pigmenting
   visit since its previous observation when its log contrast jumps above that previous
   value carried forward at the region's rate by more than ``refresh_jump`` (a fading
   dot only gets lighter; measurement noise is a few percent, a refresh restores 1.5-3x
   the contrast; the jump may be seen only at a later follow-up when the dot was out of
   view at the touch-up). Two passes: first with rate 0, then with the rate of the first
   fit. A new dot starts at the last pigmenting visit on or before its first observation
   (a dot first seen at a touch-up starts there). ``age_days``: days since the segment's
   (re)pigmenting visit.
2. **Per-dot rates.** Least-squares slope of ``log contrast`` on ``day`` pooled over the
   dot's segments (one intercept each), with a standard error from the pooled robust
   residual scale of all dots (a dot has a handful of visits, too few for its own scale).
   Rows whose dot core is within ``saturation_lstar`` of black are left out: such a dot
   cannot read darker, so its contrast is capped by the skin, not set by its pigment.
3. **Region rate.** Weighted median of the per-dot rates, weights ``1 / (se^2 + tau^2)``
   (``tau^2``: the variance of true rates between dots, the squared MAD of the better
   measured half of the rates less their mean noise). A median: the region's half-life
   is that of a typical dot, and a few fast-fading or mis-linked dots must not move it.
   ``fast_fading`` dots are left out of the final median. Half-life ``ln 2 / k``.
4. **Fast faders.** ``k_i >= fast_ratio * k_region`` *and* significantly so:
   ``(k_i - fast_ratio * k_region) / se_i > fast_z`` (one-sided), so noise alone rarely flags.
5. **Trends per year** on *settled* visits only (a visit within ``settle_days`` of a
   pigmenting visit shows healing redness and fresh, swollen dots): per-dot
   within-segment slopes, summarised over dots by a trimmed mean (the affected dots may
   be a minority, which a median would miss; the trim keeps wild slopes out).

   * ``blue_index_per_year``: of the raw blue index.
   * ``blue_trend``: of the *fade-adjusted* blue index ``blue_index * blue_reference_dl /
     max(contrast_dL, blue_min_contrast_dl)``. The hue offset of a non-neutral shade (a
     warm brown reads below neutral in b*) scales with its pigment density, so a fading
     brown dot's raw blue index creeps towards 0: a "trend" that is no blue shift.
     Dividing by the contrast removes it, while pigment migrating deeper (Tyndall blue)
     raises the adjusted index ever faster as the dot fades. Found when the interval's
     lower bound is above 0 and the estimate is at least ``blue_min_per_year``. With
     ``region_visits`` the interval is the wider of the dots' bootstrap and the visits' own
     (:func:`visit_trend`: every dot of one photo shares its camera, lamp and card fit, so a
     shift of the whole region is measured once per visit, not once per dot); under 3 settled
     visits there is no interval and no region trend.
   * ``spread``: diameter in mm/year; a dot is ``spreading`` when its slope is at least
     ``spread_min_mm_per_year`` and significant (``fast_z``).
   * **A minority that turns.** A blue shift or spreading that affects 10 % of the dots
     barely moves a mean over all of them. So each dot's own slope is tested too (a dot
     is ``blue_turning`` when its fade-adjusted blue slope is at least
     ``blue_turning_min_per_year``, a change a reviewer would come to see, and significant at
     ``fast_z``, both on the visits where the dot has a colour to judge: at least
     ``blue_min_contrast_dl`` darker than its skin and not saturated; ``spreading`` as above), and a
     trend is also found when the turning dots are at least ``turning_min_fraction`` of
     the dots with a slope and more than noise alone makes: under no trend each dot passes
     with probability ``alpha = P(z > fast_z)``, and the count must be beyond what a
     binomial(n, alpha) reaches with probability ``turning_p``. The trend then reports
     how many dots turn (``n_turning``, listed in the per-dot table) and their median
     slope, not the region's mean. With ``turning_relative`` a dot's values are taken relative to
     its visit's median first: a dot turns against the other dots of the same photos.
6. **Forecast.** Each dot track is carried forward from the fitted level of its latest
   segment at its rate shrunk towards the region's (empirical Bayes, ``k_region + (k_i -
   k_region) * tau^2 / (tau^2 + se_i^2)``; the region rate without a rate of its own).
   A dot last seen *before* a later pigmenting visit may have been refreshed there
   unseen: the dots seen on both sides of that visit show the artist's rule (a probit
   cut on the fraction of fresh contrast left, fitted to them), which gives each unseen
   dot a probability of having restarted there from its own fresh level
   (:func:`impute_refreshes`). Each dot (branch) falls below the threshold on one day;
   the region's median contrast does on the weighted median of those days (the median of
   decreasing curves crosses a level when half of them have).
   Status: ``due`` (within the horizon), ``already_below`` (on or before the last
   visit), ``not_within_horizon`` or ``unknown`` (no rate).

Uncertainty: a bootstrap over dot tracks (``n_bootstrap`` resamples, all draws from the
passed ``numpy.random.Generator``) repeats steps 3, 5 and 6 with segments, flags and
imputed refreshes as fitted. Errors shared by all dots of a visit (lighting and colour
correction residuals, healing) move every dot at once, which resampling dots cannot see:
each replicate also adds one offset per visit, normal with the sd of the observed
per-visit median residuals but at least ``visit_sd_floor``, to the log contrasts (as
the fits are linear in them, their effect on every dot's rate and level is a fixed
matrix, so no refit). Intervals are percentile intervals at level ``interval``.

Why hand-written: the per-segment fixed-effect slopes, refresh detection and imputation
and the vectorised two-level bootstrap are specific to dot tracks; NumPy/SciPy supply
the pieces (``bincount`` group sums, ``stats.chi2``/``norm``, ``optimize.minimize``).
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, model_validator
from scipy import stats
from scipy.optimize import minimize

from data.config import Settings, load_settings

__all__ = ["FadingSettings", "FadingError", "Estimate", "Trend", "Forecast", "FadingResult",
           "load_fading_settings", "prepare", "segment_tracks", "within_slopes", "weighted_median",
           "impute_refreshes", "minority_turns", "visit_trend", "fit_fading", "PIGMENTING_KINDS",
           "OBSERVATION_COLUMNS", "OPTIONAL_COLUMNS", "DOT_COLUMNS"]

#: Visit kinds at which pigment is placed (the clock of the dots they place or refresh restarts).
PIGMENTING_KINDS = ("session", "touch-up")
#: Columns the observation table must have.
OBSERVATION_COLUMNS = ("dot_key", "day", "contrast_dL", "blue_index", "diameter_mm")
#: Optional column: the dot core's L* (saturation, see ``FadingSettings.saturation_lstar``).
OPTIONAL_COLUMNS = ("L",)
_LN2 = math.log(2.0)
_YEAR = 365.25


class FadingError(ValueError):
    """The input cannot be read as dot observations and visits (one line, names the problem)."""


class FadingSettings(Settings):
    """Fading model settings (rationale of each default in ``configs/fading/default.yaml``)."""

    touchup_contrast_dl: float = Field(12.0, gt=0)
    horizon_years: float = Field(15.0, gt=0)
    n_bootstrap: int = Field(200, ge=20, le=10000)
    interval: float = Field(0.9, gt=0.5, lt=1.0)
    visit_sd_floor: float = Field(0.04, ge=0)
    refresh_jump: float = Field(0.25, gt=0)
    min_span_days: float = Field(60.0, ge=0)
    saturation_lstar: float = Field(2.5, ge=0)
    settle_days: float = Field(28.0, ge=0)
    fast_ratio: float = Field(2.0, gt=1)
    fast_z: float = Field(2.33, ge=0)
    trend_trim: float = Field(0.05, ge=0, lt=0.5)
    blue_reference_dl: float = Field(20.0, gt=0)
    blue_min_contrast_dl: float = Field(4.0, gt=0)
    blue_min_per_year: float = Field(0.1, ge=0)
    spread_min_mm_per_year: float = Field(0.04, ge=0)
    blue_turning_min_per_year: float = Field(1.0, ge=0)
    turning_min_fraction: float = Field(0.05, ge=0, lt=1)
    turning_p: float = Field(0.001, gt=0, lt=0.5)
    turning_relative: bool = True
    region_visits: bool = True
    turning_size_groups: int = Field(4, ge=1, le=10)

    @model_validator(mode="after")
    def _consistent(self) -> FadingSettings:
        if self.blue_min_contrast_dl >= self.blue_reference_dl:
            raise ValueError("blue_min_contrast_dl must be below blue_reference_dl")
        return self


def load_fading_settings(path=None, overrides: Iterable[str] | Mapping[str, Any] = ()) -> FadingSettings:
    return load_settings(FadingSettings, path, overrides, default="fading/default.yaml")


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------

def _clean(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


@dataclass(frozen=True)
class Estimate:
    """A value with its interval; ``None`` where there is no estimate (or no bound)."""

    value: float | None
    low: float | None = None
    high: float | None = None

    @staticmethod
    def of(value: Any, low: Any = None, high: Any = None) -> Estimate:
        return Estimate(_clean(value), _clean(low), _clean(high))

    def as_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Trend:
    """A per-year trend of the region and whether it counts as found.

    ``per_year``: the trimmed mean over the dots with a slope (``n_dots``) and its
    interval. ``n_turning``: dots whose own slope is significant (module doc, step 5);
    ``turning_per_year``: their median slope. ``found_by``: ``region`` (the interval of
    the mean is above zero), ``minority`` (more dots turn than noise makes) or None.
    """

    per_year: Estimate
    detected: bool
    n_dots: int
    n_turning: int = 0
    turning_per_year: float | None = None
    found_by: str | None = None

    @property
    def turning_fraction(self) -> float | None:
        return self.n_turning / self.n_dots if self.n_dots else None

    def as_dict(self) -> dict:
        return {"per_year": self.per_year.as_dict(), "detected": self.detected, "n_dots": self.n_dots,
                "n_turning": self.n_turning, "turning_fraction": self.turning_fraction,
                "turning_per_year": self.turning_per_year, "found_by": self.found_by}


@dataclass(frozen=True)
class Forecast:
    """When the region's median contrast falls below the touch-up threshold.

    ``status``: ``due`` (``day`` within the horizon), ``already_below`` (on or before
    the last visit), ``not_within_horizon`` or ``unknown`` (no fading rate). Days count
    from the baseline; the horizon from the last pigmenting visit. A bound past the
    horizon is ``None`` (``day_high`` None: the interval reaches past it). Dates are
    set when the baseline date is known.
    """

    status: str
    threshold_dl: float
    day: float | None
    day_low: float | None
    day_high: float | None
    horizon_day: float | None
    date: str | None = None
    date_low: str | None = None
    date_high: str | None = None

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("status", "threshold_dl", "day", "day_low", "day_high",
                                              "horizon_day", "date", "date_low", "date_high")}


#: Columns of :attr:`FadingResult.dots`.
DOT_COLUMNS = ("dot_key", "n_obs", "n_segments", "span_days", "rate_per_day", "rate_se", "half_life_days",
               "rate_ratio", "fast_fading", "blue_per_year", "blue_adjusted_per_year", "blue_turning",
               "spread_mm_per_year", "spreading", "last_day", "last_contrast_dL", "refresh_imputed_day",
               "refresh_probability", "crossing_day")


@dataclass(frozen=True, eq=False)
class FadingResult:
    """The fading model of one client region.

    ``dots``: one row per dot track, columns :data:`DOT_COLUMNS` (``rate_ratio``: to the
    region's rate; ``refresh_imputed_day``: a pigmenting visit at which the dot, unseen
    since, was more likely refreshed than not, ``refresh_probability`` how likely;
    ``crossing_day``: when the dot's own contrast reaches the threshold, on its more likely
    branch). ``n_refresh_imputed``: the expected number of such unseen refreshes.
    ``observations``: the input rows with ``segment``, ``refreshed`` (this row starts a
    segment at a refresh), ``start_day`` and ``age_days``. ``visit_sd``: the sd of the
    per-visit offsets drawn in the bootstrap.
    """

    n_dots: int
    n_visits: int
    n_observations: int
    rate_per_day: Estimate
    half_life_days: Estimate
    fresh_contrast_dl: float | None
    last_median_contrast_dl: float | None
    blue_index_per_year: Estimate
    blue_trend: Trend
    spread: Trend
    forecast: Forecast
    n_refreshed: int
    n_refresh_imputed: int
    visit_sd: float | None
    dots: pd.DataFrame = field(repr=False)
    observations: pd.DataFrame = field(repr=False)
    warnings: tuple[str, ...] = ()

    @property
    def fast_fading_keys(self) -> np.ndarray:
        return self.dots.loc[self.dots["fast_fading"].astype(bool), "dot_key"].to_numpy()

    def summary(self) -> dict:
        """JSON-ready figures of the region (the per-dot table is separate)."""
        return {
            "n_dots": self.n_dots, "n_visits": self.n_visits, "n_observations": self.n_observations,
            "rate_per_day": self.rate_per_day.as_dict(), "half_life_days": self.half_life_days.as_dict(),
            "fresh_contrast_dl": self.fresh_contrast_dl, "last_median_contrast_dl": self.last_median_contrast_dl,
            "blue_index_per_year": self.blue_index_per_year.as_dict(), "blue_trend": self.blue_trend.as_dict(),
            "spread": self.spread.as_dict(), "forecast": self.forecast.as_dict(),
            "n_fast_fading": int(self.dots["fast_fading"].sum()) if len(self.dots) else 0,
            "n_spreading": int(self.dots["spreading"].sum()) if len(self.dots) else 0,
            "n_blue_turning": int(self.dots["blue_turning"].sum()) if len(self.dots) else 0,
            "n_refreshed": self.n_refreshed, "n_refresh_imputed": self.n_refresh_imputed,
            "visit_sd": self.visit_sd, "warnings": list(self.warnings),
        }


# ---------------------------------------------------------------------------------------------
# input
# ---------------------------------------------------------------------------------------------

def prepare(observations: pd.DataFrame, visits: pd.DataFrame | Iterable[Mapping[str, Any]],
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate and normalise the inputs.

    Returns the observations sorted by (dot, day) with float columns (``L`` NaN when not
    given), rows without a key or day dropped, repeated (dot, day) rows averaged and
    ``dot`` (an integer code per track); and the visits sorted by day with ``pigmenting``.
    Raises :class:`FadingError` on a missing column, a visit without a day or an unknown kind.
    """
    if not isinstance(observations, pd.DataFrame):
        raise FadingError(f"observations must be a pandas DataFrame, not {type(observations).__name__}")
    missing = [c for c in OBSERVATION_COLUMNS if c not in observations.columns]
    if missing:
        raise FadingError(f"observations lack column(s) {', '.join(missing)}")
    v = visits.copy() if isinstance(visits, pd.DataFrame) else pd.DataFrame(list(visits))
    for col in ("day", "kind"):
        if col not in v.columns:
            raise FadingError(f"visits lack column {col!r}")
    v["day"] = pd.to_numeric(v["day"], errors="coerce")
    if v["day"].isna().any():
        raise FadingError("every visit needs a numeric day")
    known = {"baseline", "follow-up", *PIGMENTING_KINDS}
    bad = sorted(set(v["kind"].astype(str)) - known)
    if bad:
        raise FadingError(f"unknown visit kind(s) {bad}; expected one of {sorted(known)}")
    v = v.sort_values("day", kind="stable").reset_index(drop=True)
    v["pigmenting"] = v["kind"].isin(PIGMENTING_KINDS)

    cols = list(OBSERVATION_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in observations.columns]
    o = observations[cols].copy()
    for col in OPTIONAL_COLUMNS:
        if col not in o.columns:
            o[col] = np.nan
    values = [*OBSERVATION_COLUMNS[2:], *OPTIONAL_COLUMNS]
    for col in ["day", *values]:
        o[col] = pd.to_numeric(o[col], errors="coerce").astype(float)
    o = o[o["dot_key"].notna() & o["day"].notna()]
    if len(o) and o.duplicated(["dot_key", "day"]).any():
        o = o.groupby(["dot_key", "day"], as_index=False, sort=False)[values].mean()
    o = o.sort_values(["dot_key", "day"], kind="stable").reset_index(drop=True)
    o["dot"] = pd.factorize(o["dot_key"], sort=False)[0] if len(o) else np.zeros(0, int)
    return o, v


def _pigmenting_days(v: pd.DataFrame) -> np.ndarray:
    return np.sort(v.loc[v["pigmenting"], "day"].to_numpy(float))


def _last_pigmenting(days: np.ndarray, pig_days: np.ndarray) -> np.ndarray:
    """The last pigmenting visit on or before each day (NaN when none)."""
    if not len(pig_days):
        return np.full(len(days), np.nan)
    i = np.searchsorted(pig_days, days, side="right") - 1
    return np.where(i >= 0, pig_days[np.maximum(i, 0)], np.nan)


def _log_contrast(o: pd.DataFrame, s: FadingSettings, censor: bool = True) -> np.ndarray:
    """log contrast per row; NaN where not positive or (``censor``) where the dot core is saturated."""
    c = o["contrast_dL"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(np.where(c > 0, c, np.nan))
    if censor:
        y = np.where(o["L"].to_numpy(float) < s.saturation_lstar, np.nan, y)
    return y


# ---------------------------------------------------------------------------------------------
# segments and slopes
# ---------------------------------------------------------------------------------------------

def segment_tracks(o: pd.DataFrame, v: pd.DataFrame, rate_per_day: float, refresh_jump: float) -> pd.DataFrame:
    """Split each dot's track where a pigmenting visit refreshed it (module doc, step 1).

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


def within_slopes(group: np.ndarray, seg: np.ndarray, t: np.ndarray, y: np.ndarray, n_groups: int
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
    return {"slope": slope, "stt": stt, "sse": sse, "dof": n - n_seg - 1, "n": n, "span": span,
            "dt": row_dt, "resid": row_resid}


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


def _grouped_scale(sse: np.ndarray, dof: np.ndarray, has: np.ndarray, groups: np.ndarray | None,
                   min_dots: int = 20) -> np.ndarray | float:
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
    xs = np.sort(x, axis=-1)                      # NaN sort last
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


# ---------------------------------------------------------------------------------------------
# model pieces
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Rates:
    k: np.ndarray          # per-dot rate per day (NaN without enough data)
    se: np.ndarray
    has: np.ndarray        # the dot has a usable rate
    region: float          # weighted median rate (NaN when no dot has one)
    tau2: float            # variance of the true rates between dots
    slopes: dict           # within_slopes() output of the fit


def _dot_rates(o: pd.DataFrame, n_dots: int, s: FadingSettings, exclude: np.ndarray | None = None) -> _Rates:
    sl = within_slopes(o["dot"].to_numpy(), o["segment"].to_numpy(), o["day"].to_numpy(float),
                       _log_contrast(o, s), n_dots)
    k = -sl["slope"]
    has = np.isfinite(k) & (sl["stt"] > 0) & (sl["span"] >= max(s.min_span_days, 1e-9))
    sigma = _robust_scale(sl["sse"][has], sl["dof"][has])
    if not np.isfinite(sigma) or sigma <= 0:
        sigma = 0.03        # no dot with spare degrees of freedom: ~3 % per observation
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


def _trend_slopes(o: pd.DataFrame, settled: np.ndarray, values: np.ndarray, n_dots: int, min_span: float,
                  groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-dot within-segment slope per year of ``values`` on settled visits, and its se (the noise
    pooled over all dots, or over each of ``groups``)."""
    y = np.where(settled, values, np.nan)
    sl = within_slopes(o["dot"].to_numpy(), o["segment"].to_numpy(), o["day"].to_numpy(float), y, n_dots)
    has = np.isfinite(sl["slope"]) & (sl["span"] >= max(min_span, 1e-9))
    sigma = _grouped_scale(sl["sse"], sl["dof"], has, groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = sigma / np.sqrt(sl["stt"]) * _YEAR
    return np.where(has, sl["slope"] * _YEAR, np.nan), np.where(has, se, np.nan)


@dataclass(frozen=True)
class _Levels:
    """Where each dot track stands: the fit of its latest segment (forecast input)."""

    ybar: np.ndarray       # mean log contrast of the rows used
    tbar: np.ndarray       # their mean day
    last_day: np.ndarray   # the last of them (0 for an untracked dot)
    start: np.ndarray      # day the latest segment's pigment was placed
    tracked: np.ndarray    # the dot has a positive contrast somewhere
    rows: np.ndarray       # (n_obs,) rows used
    imputed_day: np.ndarray  # pigmenting day of a refresh taken as certain (NaN: none)
    branch_day: np.ndarray   # last pigmenting visit the dot may have been refreshed at unseen (NaN: none)
    branch_p: np.ndarray     # probability it was (0: none)
    branch_level: np.ndarray  # its fresh log level there


def _branch_crossings(ybar: np.ndarray, tbar: np.ndarray, last_day: np.ndarray, b_level: np.ndarray,
                      b_day: np.ndarray, b_p: np.ndarray, tracked: np.ndarray, k: np.ndarray, log_thr: float
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
    return _Levels(ybar=np.bincount(dot[rows], y[rows], n_dots) / np.maximum(n, 1),
                   tbar=np.bincount(dot[rows], day[rows], n_dots) / np.maximum(n, 1),
                   last_day=np.where(tracked, last_day, 0.0), start=start, tracked=tracked, rows=rows,
                   imputed_day=np.full(n_dots, np.nan), branch_day=np.full(n_dots, np.nan),
                   branch_p=np.zeros(n_dots), branch_level=np.full(n_dots, np.nan))


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
        z = (x[0] - mu) / np.sqrt(sd ** 2 + fuzz ** 2)
        return -float(np.sum(y * stats.norm.logcdf(z) + (1 - y) * stats.norm.logcdf(-z)))

    start = np.array([float(np.quantile(mu, y.mean())), math.log(0.05)])
    fit = minimize(nll, start, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 400})
    return float(fit.x[0]), float(np.clip(np.exp(fit.x[1]), 1e-3, 2.0))


def impute_refreshes(o: pd.DataFrame, lv: _Levels, k: np.ndarray, k_sd: np.ndarray, pig_days: np.ndarray
                     ) -> tuple[_Levels, list[str]]:
    """Refreshes of dots last seen before a pigmenting visit (module doc, step 6).

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
            notes.append(f"{int(later.sum())} dot(s) not seen since the pigmenting visit on day {p:g} and none "
                         "seen on both sides of it: taken as not refreshed there")
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
            z = (cut - (-kk * age)) / np.sqrt((sd * age) ** 2 + fuzz ** 2)
        prob = np.where(later, np.nan_to_num(stats.norm.cdf(z), nan=0.0) if np.isfinite(cut) else float(cut > 0), 0.0)
        fresh = ybar + kk * (tbar - start)           # the carried segment's level at age 0
        if p == relevant[-1]:
            take = later & (prob > 0)
            b_day[take], b_p[take], b_level[take] = p, prob[take], fresh[take]
            imputed[later & (prob >= 0.5)] = p
        else:
            take = later & (prob >= 0.5)
            ybar[take], tbar[take], last_day[take], start[take] = fresh[take], p, p, p
            imputed[take] = p
    return replace(lv, ybar=ybar, tbar=tbar, last_day=last_day, start=start, imputed_day=imputed,
                   branch_day=b_day, branch_p=b_p, branch_level=b_level), notes


def _crossing_days(level_log: np.ndarray, last_day: np.ndarray, k: np.ndarray, log_thr: float) -> np.ndarray:
    """Day each dot's contrast reaches the threshold (+inf when it does not fade, -inf when it is
    below and does not fade)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(k > 0, last_day + (level_log - log_thr) / np.where(k > 0, k, 1.0),
                        np.where(level_log < log_thr, -np.inf, np.inf))


@dataclass(frozen=True)
class _VisitErrors:
    """Linear effect of one log-contrast offset per observation day on rates and levels."""

    rate: np.ndarray       # (n_dots, n_days): d k_i / d offset_d
    level: np.ndarray      # (n_dots, n_days): d ybar_i / d offset_d
    sd: float              # sd of the offsets drawn


def _visit_errors(o: pd.DataFrame, r: _Rates, lv: _Levels, s: FadingSettings) -> _VisitErrors:
    day = o["day"].to_numpy(float)
    days, d_idx = np.unique(day, return_inverse=True)
    n_dots, n_days = len(r.k), len(days)
    dot = o["dot"].to_numpy()
    dt_ = r.slopes["dt"]
    used = np.isfinite(dt_) & r.has[dot]
    rate = np.zeros((n_dots, n_days))
    with np.errstate(divide="ignore", invalid="ignore"):
        coef = -dt_[used] / r.slopes["stt"][dot[used]]      # k = -slope; slope = sum(dt * y) / stt
    np.add.at(rate, (dot[used], d_idx[used]), coef)
    level = np.zeros((n_dots, n_days))
    rows = lv.rows
    n_rows = np.bincount(dot[rows], minlength=n_dots)
    np.add.at(level, (dot[rows], d_idx[rows]), 1.0 / np.maximum(n_rows[dot[rows]], 1))
    # observed visit effects: median residual of the dots' own fits at each day
    resid = r.slopes["resid"]
    ok = np.isfinite(resid) & r.has[dot] & (r.slopes["dof"][dot] > 0)
    med = np.array([np.median(resid[ok & (d_idx == j)]) if (ok & (d_idx == j)).sum() >= 5 else np.nan
                    for j in range(n_days)])
    med = med[np.isfinite(med)]
    # each dot's own slope absorbs part of a visit effect: scale up by n/(n-2)
    sd = float(np.sqrt(np.mean(med ** 2) * len(med) / (len(med) - 2))) if len(med) > 2 else 0.0
    return _VisitErrors(rate=rate, level=level, sd=max(sd, s.visit_sd_floor))


def _date(baseline: dt.date | None, day: float | None) -> str | None:
    if baseline is None or day is None:
        return None
    return (baseline + dt.timedelta(days=int(math.floor(day)))).isoformat()


def _empty_dots() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series(dtype=float) for c in DOT_COLUMNS})
    out["dot_key"] = pd.Series(dtype=object)
    for c in ("fast_fading", "spreading", "blue_turning"):
        out[c] = pd.Series(dtype=bool)
    return out


def _null_result(o: pd.DataFrame, v: pd.DataFrame, s: FadingSettings, warnings: list[str]) -> FadingResult:
    none = Estimate(None)
    return FadingResult(
        n_dots=int(o["dot"].nunique()) if len(o) else 0, n_visits=len(v), n_observations=len(o),
        rate_per_day=none, half_life_days=none, fresh_contrast_dl=None, last_median_contrast_dl=None,
        blue_index_per_year=none, blue_trend=Trend(none, False, 0), spread=Trend(none, False, 0),
        forecast=Forecast("unknown", s.touchup_contrast_dl, None, None, None, None),
        n_refreshed=int(o["refreshed"].sum()) if "refreshed" in o else 0, n_refresh_imputed=0, visit_sd=None,
        dots=_empty_dots(), observations=o, warnings=tuple(warnings))


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------

def _fit_rates(o: pd.DataFrame, v: pd.DataFrame, s: FadingSettings, n_dots: int
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


def _trends(o: pd.DataFrame, v: pd.DataFrame, s: FadingSettings, n_dots: int) -> dict[str, np.ndarray]:
    """Step 5: per-dot slopes per year on settled visits."""
    day = o["day"].to_numpy(float)
    settled = ~(day - _last_pigmenting(day, _pigmenting_days(v)) < s.settle_days)   # NaN: settled
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
    blue_turn, blue_se = _scaled_slopes(o, np.where(coloured, turn_adj, np.nan), gain, n_dots, s.min_span_days,
                                        sizes)
    spread, _ = _trend_slopes(o, settled, diameter, n_dots, s.min_span_days)
    spread_turn, spread_se = _trend_slopes(o, settled, turn_diameter, n_dots, s.min_span_days)
    with np.errstate(invalid="ignore", divide="ignore"):
        spreading = (np.isfinite(spread_turn) & (spread_turn >= s.spread_min_mm_per_year)
                     & (spread_turn / spread_se > s.fast_z))
        turning = (np.isfinite(blue_turn) & (blue_turn >= s.blue_turning_min_per_year)
                   & (blue_turn / blue_se > s.fast_z))
    visits = {"blue_adj": visit_trend(day, np.where(settled, adj, np.nan), s.trend_trim, s.interval),
              "spread": visit_trend(day, np.where(settled, diameter, np.nan), s.trend_trim, s.interval)}
    return {"visit_trends": visits, "blue_raw": blue_raw, "blue_adj": blue_adj, "spread": spread,
            "spreading": spreading, "blue_turning": turning, "blue_turn_slope": blue_turn,
            "any_settled": np.array(bool(settled.any()))}


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
    se = math.sqrt(float(np.sum(resid ** 2)) / (n - 2) / stt)
    half = float(stats.t.ppf(0.5 + level / 2, n - 2)) * se
    return slope * _YEAR, (slope - half) * _YEAR, (slope + half) * _YEAR


def _visit_median(day: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's visit median of ``y`` (rows of one visit share a day; NaN ignored; 0 where a
    visit has no value)."""
    return pd.Series(y).groupby(day).transform("median").fillna(0.0).to_numpy(float)


def _scaled_slopes(o: pd.DataFrame, y: np.ndarray, gain: np.ndarray, n_dots: int, min_span: float,
                   groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
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
    """More dots turn than noise alone makes, and enough of them to matter (module doc, step 5)."""
    if n_dots <= 0 or n_turning < 3 or n_turning < s.turning_min_fraction * n_dots:
        return False
    alpha = float(stats.norm.sf(s.fast_z))
    return bool(stats.binom.sf(n_turning - 1, n_dots, alpha) < s.turning_p)


def _bootstrap(rng: np.random.Generator, s: FadingSettings, r: _Rates, fast: np.ndarray, lv: _Levels,
               ve: _VisitErrors, tr: dict[str, np.ndarray], log_thr: float) -> dict[str, np.ndarray]:
    """Resample dot tracks and draw visit offsets; region rate, crossing day and trends per replicate."""
    n_dots = len(r.k)
    shrink = np.where(r.has, r.tau2 / (r.tau2 + r.se ** 2), 0.0) if r.tau2 > 0 else np.zeros(n_dots)
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
        k_b = k0[None, :] + offsets @ ve.rate.T                       # (b, n_dots) every dot's rate
        reg_b = weighted_median(np.take_along_axis(k_b, idx, 1), w[idx])
        rows = np.arange(b)[:, None]
        kd = reg_b[:, None] + (np.nan_to_num(k_b) - reg_b[:, None]) * shrink[None, :]
        kd = np.where(r.has[None, :], kd, reg_b[:, None])[rows, idx]
        shift = (offsets @ ve.level.T)[rows, idx]
        days, wts = _branch_crossings(lv.ybar[idx] + shift, lv.tbar[idx], lv.last_day[idx],
                                      lv.branch_level[idx] + shift, lv.branch_day[idx], lv.branch_p[idx],
                                      lv.tracked[idx], kd, log_thr)
        cross = weighted_median(days.reshape(b, -1), wts.reshape(b, -1))
        out["cross"].append(np.where(np.isfinite(reg_b) & (reg_b > 0), cross, np.nan))
        out["region"].append(reg_b)
        for name in ("blue_raw", "blue_adj", "spread"):
            out[name].append(_trimmed_mean_rows(tr[name][idx], s.trend_trim))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def _forecast(s: FadingSettings, v: pd.DataFrame, region: float, crossing: float, boot_cross: np.ndarray,
              last_visit_day: float, last_median: float, base: dt.date | None) -> Forecast:
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
    return Forecast(status=status, threshold_dl=s.touchup_contrast_dl, day=day, day_low=low, day_high=high,
                    horizon_day=horizon, date=_date(base, day), date_low=_date(base, low),
                    date_high=_date(base, high))


def fit_fading(observations: pd.DataFrame, visits: pd.DataFrame | Iterable[Mapping[str, Any]],
               settings: FadingSettings, rng: np.random.Generator,
               baseline_date: str | dt.date | None = None) -> FadingResult:
    """Fit the fading model of one client region (see the module doc).

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
    shrink = np.where(r.has, r.tau2 / (r.tau2 + r.se ** 2), 0.0) if r.tau2 > 0 else np.zeros(n_dots)
    k_dots = np.where(r.has, region + (np.nan_to_num(r.k) - region) * shrink, region)
    with np.errstate(divide="ignore"):
        k_sd = np.where(r.has, np.sqrt(shrink) * np.nan_to_num(r.se), math.sqrt(r.tau2))   # posterior sd
    lv = _latest_levels(o, s, n_dots)
    lv, notes = impute_refreshes(o, lv, k_dots, k_sd, _pigmenting_days(v))
    warnings += notes
    ve = _visit_errors(o, r, lv, s)
    log_thr = math.log(s.touchup_contrast_dl)
    days_b, w_b = _branch_crossings(lv.ybar, lv.tbar, lv.last_day, lv.branch_level, lv.branch_day, lv.branch_p,
                                    lv.tracked, k_dots, log_thr)
    crossing = float(weighted_median(days_b.ravel(), w_b.ravel())) if region > 0 else float("nan")
    likely = np.where(lv.branch_p >= 0.5, days_b[:, 1], days_b[:, 0])       # each dot's more likely branch
    boot = _bootstrap(rng, s, r, fast, lv, ve, tr, log_thr)

    # region figures
    lo_k, hi_k = _percentiles(boot["region"], s.interval)
    half = (Estimate.of(_LN2 / region, _LN2 / hi_k if hi_k > 0 else None, _LN2 / lo_k if lo_k > 0 else None)
            if region > 0 else Estimate(None))
    y = _log_contrast(o, s)
    age = o["age_days"].to_numpy(float)
    fresh_rows = np.isfinite(y) & (age >= 0)
    fresh = float(np.median(np.exp(y[fresh_rows] + region * age[fresh_rows]))) if fresh_rows.any() else None
    day = o["day"].to_numpy(float)
    last_visit_day = float(day[usable].max())
    last_median = float(np.median(c[usable & (day == last_visit_day)]))

    def trend(point: np.ndarray, boot_values: np.ndarray, minimum: float, turning: np.ndarray,
              own: np.ndarray | None = None, visits: tuple[float, float, float] | None = None) -> Trend:
        n = int(np.isfinite(point).sum())
        est = float(_trimmed_mean_rows(point[None, :], s.trend_trim)[0])
        lo, hi = _percentiles(boot_values, s.interval)
        if s.region_visits:
            # the range holds both the dots' spread and the visits' scatter (the wider of the two);
            # without three settled visits a shift common to the region cannot be told from the
            # cameras, so no range is given and no region trend claimed
            lo, hi = (float("nan"), float("nan")) if visits is None else (min(lo, visits[1]), max(hi, visits[2]))
        k = int(turning.sum())
        by = ("region" if n > 0 and lo > 0 and est >= minimum else
              "minority" if minority_turns(k, n, s) else None)
        return Trend(Estimate.of(est, lo, hi), by is not None, n, k,
                     float(np.median((point if own is None else own)[turning])) if k else None, by)

    dot = o["dot"].to_numpy()
    keys = o.groupby("dot", sort=True)["dot_key"].first().reindex(range(n_dots)).to_numpy()
    last_c = np.full(n_dots, np.nan)
    last_seen = np.full(n_dots, -np.inf)
    np.maximum.at(last_seen, dot[usable], day[usable])
    is_last = usable & (day == last_seen[dot])
    last_c[dot[is_last]] = c[is_last]
    with np.errstate(divide="ignore", invalid="ignore"):
        table = pd.DataFrame({
            "dot_key": keys, "n_obs": np.bincount(dot[usable], minlength=n_dots),
            "n_segments": o.groupby("dot")["segment"].nunique().reindex(range(n_dots)).fillna(0).to_numpy(int),
            "span_days": r.slopes["span"], "rate_per_day": np.where(r.has, r.k, np.nan), "rate_se": r.se,
            "half_life_days": np.where(r.has & (r.k > 0), _LN2 / r.k, np.nan),
            "rate_ratio": np.where(r.has, r.k / region, np.nan) if region > 0 else np.nan,
            "fast_fading": fast, "blue_per_year": tr["blue_raw"], "blue_adjusted_per_year": tr["blue_adj"],
            "blue_turning": tr["blue_turning"],
            "spread_mm_per_year": tr["spread"], "spreading": tr["spreading"],
            "last_day": np.where(lv.tracked, lv.last_day, np.nan), "last_contrast_dL": last_c,
            "refresh_imputed_day": lv.imputed_day,
            "refresh_probability": np.where(np.isfinite(lv.imputed_day) & (lv.branch_p == 0), 1.0, lv.branch_p),
            "crossing_day": np.where(lv.tracked & np.isfinite(likely), likely, np.nan),
        }, columns=list(DOT_COLUMNS))
    return FadingResult(
        n_dots=n_dots, n_visits=len(v), n_observations=len(o),
        rate_per_day=Estimate.of(region, lo_k, hi_k), half_life_days=half,
        fresh_contrast_dl=fresh, last_median_contrast_dl=last_median,
        blue_index_per_year=Estimate.of(float(_trimmed_mean_rows(tr["blue_raw"][None, :], s.trend_trim)[0]),
                                        *_percentiles(boot["blue_raw"], s.interval)),
        blue_trend=trend(tr["blue_adj"], boot["blue_adj"], s.blue_min_per_year, tr["blue_turning"],
                         tr["blue_turn_slope"], tr["visit_trends"]["blue_adj"]),
        spread=trend(tr["spread"], boot["spread"], s.spread_min_mm_per_year, tr["spreading"],
                     visits=tr["visit_trends"]["spread"]),
        forecast=_forecast(s, v, region, crossing, boot["cross"], last_visit_day, last_median, base),
        n_refreshed=int(o["refreshed"].sum()),
        n_refresh_imputed=int(round(float(np.sum(np.where(np.isfinite(lv.imputed_day) & (lv.branch_p == 0), 1.0,
                                                          lv.branch_p))))),
        visit_sd=ve.sd, dots=table, observations=o, warnings=tuple(warnings))
