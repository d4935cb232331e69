"""Input of the fading model: the observations and visits validated and normalised, the
pigmenting visits and the log contrast of each row (see the package doc)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from data.visits import PIGMENTING_KINDS, VISIT_KINDS
from pipeline.over_time.fading.settings import (
    OBSERVATION_COLUMNS,
    OPTIONAL_COLUMNS,
    FadingError,
    FadingSettings,
)


def prepare(
    observations: pd.DataFrame,
    visits: pd.DataFrame | Iterable[Mapping[str, Any]],
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
    known = set(VISIT_KINDS)
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
