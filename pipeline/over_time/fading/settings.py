"""Settings, input constants and the result dataclasses of the fading model (see the package doc)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from data.config import Settings, load_settings

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
    interval. ``n_turning``: dots whose own slope is significant (package doc, step 5);
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
        return {
            "per_year": self.per_year.as_dict(),
            "detected": self.detected,
            "n_dots": self.n_dots,
            "n_turning": self.n_turning,
            "turning_fraction": self.turning_fraction,
            "turning_per_year": self.turning_per_year,
            "found_by": self.found_by,
        }


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
        return {
            k: getattr(self, k)
            for k in (
                "status",
                "threshold_dl",
                "day",
                "day_low",
                "day_high",
                "horizon_day",
                "date",
                "date_low",
                "date_high",
            )
        }


#: Columns of :attr:`FadingResult.dots`.
DOT_COLUMNS = (
    "dot_key",
    "n_obs",
    "n_segments",
    "span_days",
    "rate_per_day",
    "rate_se",
    "half_life_days",
    "rate_ratio",
    "fast_fading",
    "blue_per_year",
    "blue_adjusted_per_year",
    "blue_turning",
    "spread_mm_per_year",
    "spreading",
    "last_day",
    "last_contrast_dL",
    "refresh_imputed_day",
    "refresh_probability",
    "crossing_day",
)


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
            "n_dots": self.n_dots,
            "n_visits": self.n_visits,
            "n_observations": self.n_observations,
            "rate_per_day": self.rate_per_day.as_dict(),
            "half_life_days": self.half_life_days.as_dict(),
            "fresh_contrast_dl": self.fresh_contrast_dl,
            "last_median_contrast_dl": self.last_median_contrast_dl,
            "blue_index_per_year": self.blue_index_per_year.as_dict(),
            "blue_trend": self.blue_trend.as_dict(),
            "spread": self.spread.as_dict(),
            "forecast": self.forecast.as_dict(),
            "n_fast_fading": int(self.dots["fast_fading"].sum()) if len(self.dots) else 0,
            "n_spreading": int(self.dots["spreading"].sum()) if len(self.dots) else 0,
            "n_blue_turning": int(self.dots["blue_turning"].sum()) if len(self.dots) else 0,
            "n_refreshed": self.n_refreshed,
            "n_refresh_imputed": self.n_refresh_imputed,
            "visit_sd": self.visit_sd,
            "warnings": list(self.warnings),
        }
