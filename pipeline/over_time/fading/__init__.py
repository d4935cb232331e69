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

from data.visits import PIGMENTING_KINDS
from pipeline.over_time.fading.fit import fit_fading
from pipeline.over_time.fading.forecast import impute_refreshes
from pipeline.over_time.fading.inputs import prepare
from pipeline.over_time.fading.model import segment_tracks
from pipeline.over_time.fading.settings import (
    DOT_COLUMNS,
    OBSERVATION_COLUMNS,
    OPTIONAL_COLUMNS,
    Estimate,
    FadingError,
    FadingResult,
    FadingSettings,
    Forecast,
    Trend,
    load_fading_settings,
)
from pipeline.over_time.fading.slopes import weighted_median, within_slopes
from pipeline.over_time.fading.trends import minority_turns, visit_trend

__all__ = [
    "FadingSettings",
    "FadingError",
    "Estimate",
    "Trend",
    "Forecast",
    "FadingResult",
    "load_fading_settings",
    "prepare",
    "segment_tracks",
    "within_slopes",
    "weighted_median",
    "impute_refreshes",
    "minority_turns",
    "visit_trend",
    "fit_fading",
    "PIGMENTING_KINDS",
    "OBSERVATION_COLUMNS",
    "OPTIONAL_COLUMNS",
    "DOT_COLUMNS",
]
