"""Fading model (pipeline/over_time/fading/) on clients simulated from the synthetic truth's model.

The simulation is the physics of ``data/synth/series.py`` without rendering: contrast
``c0 * exp(-k_i * age)`` with a per-dot log-normal rate factor and a few 2.5-4x fast
faders, a touch-up that refreshes the dots left under 60 % of fresh, blue optical
density growing with time since placement for a fraction of a blue client's dots, and
spread dots growing in diameter. Noise: a few percent per measurement and per visit;
each dot is in view at a visit with probability ``seen``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from data.config import ConfigError, config_dir
from pipeline.over_time.fading import (
    DOT_COLUMNS,
    FadingError,
    FadingSettings,
    fit_fading,
    load_fading_settings,
    weighted_median,
)

THRESHOLD = 12.0


@dataclass
class Client:
    obs: pd.DataFrame
    visits: pd.DataFrame
    half_life: float
    fast: set
    refreshed: set  # dots the touch-up refreshed
    blue: set
    spread: set
    crossing: float | None  # first day after the last session with median contrast < THRESHOLD
    blue_clear: set = frozenset()  # blue dots whose fade-adjusted index rises >= 1.3 a year even when fresh


def simulate(
    rng: np.random.Generator,
    *,
    n_dots: int = 300,
    half_life: float = 800.0,
    follow_days=(170, 340, 520, 700),
    touchup_day: float | None = None,
    after_touchup=(),
    fast_fraction: float = 0.03,
    blue: bool = False,
    spread_fraction: float = 0.0,
    noise: float = 0.02,
    visit_noise: float = 0.01,
    seen: float = 0.85,
    rate_sigma: float = 0.15,
    skin_l: float = 55.0,
    shade_sd: float = 1.0,
    blue_fraction: float = 0.4,
) -> Client:
    sessions = [1.0, 15.0]
    visits = [("baseline", 0, 0.0)] + [("session", i + 1, d) for i, d in enumerate(sessions)]
    visits += [("follow-up", 0, float(d)) for d in follow_days]
    if touchup_day is not None:
        visits += [("touch-up", 3, float(touchup_day))] + [("follow-up", 0, float(d)) for d in after_touchup]
    visits = pd.DataFrame(visits, columns=["kind", "session", "day"]).sort_values("day").reset_index(drop=True)

    placed = np.where(rng.random(n_dots) < 0.5, sessions[0], sessions[1])
    c0 = rng.uniform(16, 36, n_dots)
    factor = np.exp(rng.normal(0, rate_sigma, n_dots))
    fast = rng.random(n_dots) < fast_fraction
    factor[fast] = rng.uniform(2.5, 4.0, fast.sum())
    k = math.log(2) / half_life * factor
    blue_dots = (rng.random(n_dots) < blue_fraction) if blue else np.zeros(n_dots, bool)
    blue_rate = np.where(blue_dots, rng.uniform(0.8, 2.5, n_dots), 0.0)  # blue index per year
    shade = rng.normal(0, shade_sd, n_dots)  # hue offset at 20 L*
    spread_dots = rng.random(n_dots) < spread_fraction
    spread_rate = np.where(spread_dots, rng.uniform(0.08, 0.25, n_dots), 0.0)
    d0 = rng.uniform(0.15, 0.3, n_dots)

    last = placed.copy()
    refreshed = np.zeros(n_dots, bool)
    rows = []
    for _, v in visits.iterrows():
        if v.kind == "touch-up":
            cur = c0 * np.exp(-k * np.maximum(v.day - last, 0))
            refreshed = (placed <= v.day) & (cur < 0.6 * c0)
            last = np.where(refreshed, v.day, last)
        exists = placed <= v.day
        vis = exists & (rng.random(n_dots) < seen)
        if not vis.any():
            continue
        c = c0 * np.exp(-k * (v.day - last)) * np.exp(rng.normal(0, noise, n_dots) + rng.normal(0, visit_noise))
        total_age = np.maximum(v.day - placed, 0) / 365.25
        bi = shade * c / 20 + blue_rate * total_age + rng.normal(0, 0.2, n_dots)
        diam = d0 + spread_rate * total_age + rng.normal(0, 0.005, n_dots)
        rows.append(
            pd.DataFrame(
                {
                    "dot_key": np.flatnonzero(vis),
                    "day": v.day,
                    "contrast_dL": c[vis],
                    "blue_index": bi[vis],
                    "diameter_mm": diam[vis],
                    "L": skin_l - c[vis],
                }
            )
        )
    obs = pd.concat(rows, ignore_index=True)

    last_sess = float(visits.loc[visits.kind.isin(["session", "touch-up"]), "day"].max())
    days = np.arange(last_sess, last_sess + 15 * 365.25)
    med = np.median(c0[None, :] * np.exp(-k[None, :] * np.maximum(days[:, None] - last[None, :], 0)), axis=1)
    below = np.flatnonzero(med < THRESHOLD)
    return Client(
        obs,
        visits[["day", "kind", "session"]],
        half_life,
        set(np.flatnonzero(fast)),
        set(np.flatnonzero(refreshed)),
        set(np.flatnonzero(blue_dots)),
        set(np.flatnonzero(spread_dots)),
        float(days[below[0]]) if len(below) else None,
        set(np.flatnonzero(blue_dots & (blue_rate * 20.0 / c0 >= 1.3))),
    )


def settings(**kw) -> FadingSettings:
    return load_fading_settings(overrides={"touchup_contrast_dl": THRESHOLD, **kw})


def covered(res, truth_day: float | None) -> bool:
    fc = res.forecast
    if truth_day is None:
        return fc.day_high is None
    lo_ok = fc.day_low is not None and fc.day_low <= truth_day + 0.5
    hi_ok = fc.day_high is None or truth_day - 0.5 <= fc.day_high
    return lo_ok and hi_ok


# --- accuracy ------------------------------------------------------------------------------


def test_half_life_within_15_percent_with_four_followups() -> None:
    for seed, hl in ((1, 400.0), (2, 900.0), (3, 1500.0)):
        cl = simulate(np.random.default_rng(seed), half_life=hl)
        res = fit_fading(cl.obs, cl.visits, settings(), np.random.default_rng(seed))
        h = res.half_life_days
        assert abs(h.value - hl) / hl < 0.15, (hl, h)
        assert h.low <= h.value <= h.high
        assert res.forecast.status in ("due", "already_below")
        assert res.warnings == ()


def test_intervals_cover_the_truth_on_repeated_clients() -> None:
    hl_hits, fc_hits, errs = 0, 0, []
    n = 30
    rng = np.random.default_rng(2024)
    for i in range(n):
        hl = float(rng.uniform(300, 1500))
        cl = simulate(rng, n_dots=150, half_life=hl)
        res = fit_fading(cl.obs, cl.visits, settings(n_bootstrap=100), np.random.default_rng(i))
        h = res.half_life_days
        hl_hits += h.low <= hl <= h.high
        fc_hits += covered(res, cl.crossing)
        errs.append((h.value - hl) / hl)
    assert hl_hits >= 0.8 * n
    assert fc_hits >= 0.8 * n
    assert abs(np.median(errs)) < 0.03  # no bias on data from the model itself


def test_forecast_dates_and_interval_order() -> None:
    cl = simulate(np.random.default_rng(5), half_life=1200.0)
    res = fit_fading(cl.obs, cl.visits, settings(), np.random.default_rng(0), baseline_date="2025-03-01")
    fc = res.forecast
    assert fc.status == "due" and fc.day_low <= fc.day <= fc.day_high
    assert fc.date == (pd.Timestamp("2025-03-01") + pd.Timedelta(days=int(fc.day))).date().isoformat()
    assert fc.date_low <= fc.date <= fc.date_high
    assert covered(res, cl.crossing)
    assert res.summary()["forecast"]["status"] == "due"


def test_forecast_already_below_and_not_within_horizon() -> None:
    quick = simulate(np.random.default_rng(6), half_life=250.0)
    res = fit_fading(quick.obs, quick.visits, settings(), np.random.default_rng(0))
    assert res.forecast.status == "already_below"
    assert res.forecast.day < quick.visits["day"].max()
    slow = simulate(np.random.default_rng(7), half_life=1e6, fast_fraction=0.0)
    res = fit_fading(slow.obs, slow.visits, settings(), np.random.default_rng(0))
    assert res.forecast.status == "not_within_horizon"
    assert res.forecast.day is None and res.forecast.day_high is None


# --- touch-ups -----------------------------------------------------------------------------


def test_touchup_resets_the_clock_of_refreshed_dots_only() -> None:
    cl = simulate(
        np.random.default_rng(8),
        half_life=1000.0,
        follow_days=(170, 340, 520),
        touchup_day=640,
        after_touchup=(800, 960),
        seen=1.0,
    )
    assert 20 < len(cl.refreshed) < 280  # the touch-up refreshed some dots, not all
    res = fit_fading(cl.obs, cl.visits, settings(), np.random.default_rng(0))
    o = res.observations
    found = set(o.loc[o["refreshed"], "dot_key"])
    assert found == cl.refreshed
    at_touchup = o[o["day"] == 640].set_index("dot_key")
    ref = sorted(cl.refreshed)
    other = sorted(set(at_touchup.index) - cl.refreshed)
    assert (at_touchup.loc[ref, "age_days"] == 0).all()
    assert (at_touchup.loc[other, "age_days"] > 600).all()
    assert (at_touchup.loc[ref, "start_day"] == 640).all()
    assert abs(res.half_life_days.value - 1000) / 1000 < 0.1
    assert covered(res, cl.crossing)


def test_refresh_of_dots_unseen_since_the_touchup_is_imputed() -> None:
    # half the dots are out of view at each visit: some refreshed ones are never seen after the touch-up
    cl = simulate(
        np.random.default_rng(9),
        n_dots=600,
        half_life=1000.0,
        follow_days=(170, 340, 520),
        touchup_day=640,
        after_touchup=(760,),
        seen=0.5,
    )
    res = fit_fading(cl.obs, cl.visits, settings(), np.random.default_rng(0))
    d = res.dots.set_index("dot_key")
    last_seen = res.observations.groupby("dot_key")["day"].max()
    unseen = last_seen[last_seen < 640].index
    truth = cl.refreshed & set(unseen)
    assert len(truth) >= 20
    # rates are noisy, so single dots can be wrong; the expected count (what the median needs) is right
    expected = d.loc[unseen, "refresh_probability"].sum()
    assert abs(expected - len(truth)) <= 0.3 * len(truth)
    assert res.n_refresh_imputed == round(d["refresh_probability"].sum())
    kept = sorted(set(unseen) - truth)
    assert d.loc[sorted(truth), "refresh_probability"].mean() > 2 * d.loc[kept, "refresh_probability"].mean()
    assert covered(res, cl.crossing)
    # the forecast agrees with one from the dots seen after the touch-up only (an unbiased sample)
    seen_only = cl.obs[cl.obs["dot_key"].isin(last_seen[last_seen >= 640].index)]
    ref = fit_fading(seen_only, cl.visits, settings(), np.random.default_rng(0))
    assert abs(res.forecast.day - ref.forecast.day) < 0.05 * ref.forecast.day


# --- flags and trends ----------------------------------------------------------------------


def test_fast_faders_are_flagged_and_noise_alone_rarely_is() -> None:
    cl = simulate(np.random.default_rng(10), n_dots=400, half_life=900.0, fast_fraction=0.05)
    res = fit_fading(cl.obs, cl.visits, settings(), np.random.default_rng(0))
    flagged = set(res.fast_fading_keys)
    rated = set(res.dots.loc[res.dots["rate_per_day"].notna(), "dot_key"])
    true_fast = cl.fast & rated
    assert len(true_fast) >= 10
    assert len(flagged & true_fast) >= 0.7 * len(true_fast)
    assert len(flagged - true_fast) <= 0.2 * max(len(flagged), 1)
    assert (res.dots.loc[res.dots["fast_fading"], "rate_ratio"] >= 2).all()

    calm = simulate(np.random.default_rng(11), n_dots=400, half_life=900.0, fast_fraction=0.0)
    res = fit_fading(calm.obs, calm.visits, settings(), np.random.default_rng(0))
    assert res.dots["fast_fading"].sum() <= 0.01 * len(res.dots)


def test_blue_trend_found_only_where_there_is_one() -> None:
    found, false = 0, 0
    for seed in range(5):
        blue = simulate(np.random.default_rng(100 + seed), n_dots=200, blue=True)
        res = fit_fading(blue.obs, blue.visits, settings(n_bootstrap=100), np.random.default_rng(seed))
        found += res.blue_trend.detected
        assert res.blue_trend.per_year.low > 0
        # fading shades move the raw index; the adjusted trend of a client without blue shift stays ~0
        plain = simulate(np.random.default_rng(200 + seed), n_dots=200, blue=False, shade_sd=3.0)
        res = fit_fading(plain.obs, plain.visits, settings(n_bootstrap=100), np.random.default_rng(seed))
        false += res.blue_trend.detected
        assert abs(res.blue_trend.per_year.value) < 0.1
    assert found == 5 and false == 0


def test_a_minority_of_dots_turning_is_found_with_its_count_and_noise_alone_is_not() -> None:
    for seed in range(4):
        few = simulate(
            np.random.default_rng(300 + seed),
            n_dots=300,
            blue=True,
            blue_fraction=0.1,
            shade_sd=3.0,
            spread_fraction=0.1,
        )
        res = fit_fading(few.obs, few.visits, settings(n_bootstrap=100), np.random.default_rng(seed))
        for trend, column in ((res.blue_trend, "blue_turning"), (res.spread, "spreading")):
            assert trend.detected and trend.n_turning == int(res.dots[column].sum())
            assert 0.05 <= trend.turning_fraction <= 0.15 and trend.turning_per_year > 0
        # the dots it lists are the ones that turn, and it lists those that clearly pass the per-dot
        # minimum (1.0 a year of the fade-adjusted index: a blue dot drawn at 0.8 a year and fresh at
        # 36 L* rises by 0.44 a year and is not expected)
        listed = set(res.dots.loc[res.dots["blue_turning"], "dot_key"])
        assert len(listed - few.blue) <= 0.2 * len(listed) and len(listed & few.blue_clear) >= 0.8 * len(few.blue_clear)
        # the same client without either: no dot list long enough to claim a trend
        plain = simulate(np.random.default_rng(300 + seed), n_dots=300, blue=False, shade_sd=3.0)
        res = fit_fading(plain.obs, plain.visits, settings(n_bootstrap=100), np.random.default_rng(seed))
        assert not res.blue_trend.detected and not res.spread.detected
        assert res.blue_trend.n_turning <= 6 and res.spread.n_turning <= 6


def test_spreading_dots_and_spread_trend() -> None:
    cl = simulate(np.random.default_rng(12), n_dots=300, spread_fraction=0.08)
    res = fit_fading(cl.obs, cl.visits, settings(), np.random.default_rng(0))
    flagged = set(res.dots.loc[res.dots["spreading"], "dot_key"])
    sloped = set(res.dots.loc[res.dots["spread_mm_per_year"].notna(), "dot_key"])
    assert len(flagged & cl.spread) >= 0.8 * len(cl.spread & sloped)
    assert len(flagged - cl.spread) <= 2
    assert res.spread.per_year.value > 0


# --- robustness ----------------------------------------------------------------------------


def test_saturated_dots_do_not_slow_the_rate() -> None:
    # dark skin: fresh dots would be darker than black, so their contrast is capped until they fade
    cl = simulate(np.random.default_rng(13), half_life=700.0)
    obs = cl.obs.copy()
    cap = 25.0
    sat = obs["contrast_dL"] > cap
    obs.loc[sat, "contrast_dL"] = cap + np.random.default_rng(0).normal(0, 0.2, sat.sum())
    obs["L"] = np.where(sat, 1.2, 26.0 - obs["contrast_dL"])
    assert sat.mean() > 0.15
    res = fit_fading(obs, cl.visits, settings(), np.random.default_rng(0))
    assert abs(res.half_life_days.value - 700) / 700 < 0.1
    naive = fit_fading(obs.drop(columns="L"), cl.visits, settings(), np.random.default_rng(0))
    assert naive.half_life_days.value > res.half_life_days.value  # what the censoring avoids


def test_same_seed_same_result() -> None:
    cl = simulate(np.random.default_rng(14))
    a = fit_fading(cl.obs, cl.visits, settings(), np.random.default_rng(3))
    b = fit_fading(cl.obs.sample(frac=1.0, random_state=1), cl.visits, settings(), np.random.default_rng(3))
    assert a.summary() == b.summary()
    pd.testing.assert_frame_equal(
        a.dots.sort_values("dot_key").reset_index(drop=True), b.dots.sort_values("dot_key").reset_index(drop=True)
    )


def test_string_keys_and_visit_dicts_are_accepted() -> None:
    cl = simulate(np.random.default_rng(15), n_dots=120)
    obs = cl.obs.assign(dot_key="t" + cl.obs["dot_key"].astype(str))
    res = fit_fading(obs, cl.visits.to_dict("records"), settings(), np.random.default_rng(0))
    assert res.half_life_days.value is not None
    assert list(res.dots.columns) == list(DOT_COLUMNS)
    assert res.dots["dot_key"].str.startswith("t").all()


def test_one_visit_gives_null_results_with_a_warning() -> None:
    cl = simulate(np.random.default_rng(16), n_dots=50)
    one = cl.obs[cl.obs["day"] == 15.0]
    res = fit_fading(one, cl.visits, settings(), np.random.default_rng(0))
    assert res.half_life_days.value is None and res.rate_per_day.value is None
    assert res.forecast.status == "unknown" and res.forecast.day is None
    assert not res.blue_trend.detected
    assert any("at least 2" in w for w in res.warnings)
    assert res.summary()["half_life_days"]["value"] is None


def test_short_follow_up_gives_null_results() -> None:
    cl = simulate(np.random.default_rng(17), n_dots=50, follow_days=(30,))
    res = fit_fading(cl.obs, cl.visits, settings(), np.random.default_rng(0))
    assert res.half_life_days.value is None
    assert any("followed over" in w for w in res.warnings)


def test_all_nan_and_no_dots_never_crash() -> None:
    cl = simulate(np.random.default_rng(18), n_dots=30)
    nan = cl.obs.assign(contrast_dL=np.nan)
    res = fit_fading(nan, cl.visits, settings(), np.random.default_rng(0))
    assert res.half_life_days.value is None and res.forecast.status == "unknown"
    assert res.warnings
    empty = cl.obs.iloc[:0]
    res = fit_fading(empty, cl.visits, settings(), np.random.default_rng(0))
    assert res.n_dots == 0 and res.half_life_days.value is None and len(res.dots) == 0
    res = fit_fading(
        pd.DataFrame(columns=["dot_key", "day", "contrast_dL", "blue_index", "diameter_mm"]),
        cl.visits,
        settings(),
        np.random.default_rng(0),
    )
    assert res.forecast.status == "unknown"


def test_contrast_that_does_not_fall_gives_no_half_life() -> None:
    cl = simulate(np.random.default_rng(19), n_dots=100, half_life=1e9, fast_fraction=0.0)
    obs = cl.obs.assign(contrast_dL=cl.obs["contrast_dL"] * (1 + cl.obs["day"] / 3000))  # darkening
    res = fit_fading(obs, cl.visits, settings(), np.random.default_rng(0))
    assert res.half_life_days.value is None
    assert res.forecast.status == "not_within_horizon"
    assert any("does not fall" in w for w in res.warnings)


def test_malformed_input_raises_one_clear_error() -> None:
    cl = simulate(np.random.default_rng(20), n_dots=20)
    with pytest.raises(FadingError, match="diameter_mm"):
        fit_fading(cl.obs.drop(columns="diameter_mm"), cl.visits, settings(), np.random.default_rng(0))
    with pytest.raises(FadingError, match="unknown visit kind"):
        fit_fading(cl.obs, cl.visits.assign(kind="party"), settings(), np.random.default_rng(0))
    with pytest.raises(FadingError, match="day"):
        fit_fading(cl.obs, cl.visits.drop(columns="day"), settings(), np.random.default_rng(0))
    with pytest.raises(FadingError, match="DataFrame"):
        fit_fading(cl.obs.to_dict("records"), cl.visits, settings(), np.random.default_rng(0))


# --- pieces and settings -------------------------------------------------------------------


def test_weighted_median_matches_brute_force() -> None:
    rng = np.random.default_rng(21)
    for _ in range(50):
        v = rng.normal(size=11)
        w = rng.integers(0, 4, 11).astype(float)
        if w.sum() == 0:
            continue
        expanded = np.sort(np.repeat(v, w.astype(int)))
        want = expanded[(len(expanded) - 1) // 2]  # the lower median
        assert weighted_median(v, w) == pytest.approx(want)
    rows = weighted_median(np.array([[1.0, 2, 3], [np.nan, 5, 4]]), np.ones((2, 3)))
    np.testing.assert_allclose(rows, [2.0, 4.0])
    assert np.isnan(weighted_median(np.array([1.0, 2.0]), np.zeros(2)))


def test_settings_yaml_matches_the_class_and_validates() -> None:
    import yaml

    doc = yaml.safe_load((config_dir() / "fading" / "default.yaml").read_text())
    assert set(doc) == set(FadingSettings.model_fields)
    assert load_fading_settings() == FadingSettings()  # YAML and class defaults agree
    with pytest.raises(ConfigError, match="interval"):
        load_fading_settings(overrides=["interval=1.5"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_fading_settings(overrides=["nope=1"])
    with pytest.raises(ConfigError, match="blue_min_contrast_dl"):
        load_fading_settings(overrides=["blue_min_contrast_dl=30"])


def test_a_shift_every_dot_of_a_visit_shares_is_no_trend() -> None:
    """Each photo's camera, lamp and card fit move every dot's colour together: a drift of the
    visits' calibration is neither a region trend (the visits' scatter is in its range) nor a minority
    of dots turning (each dot is judged against its own photo's other dots)."""
    from pipeline.over_time.fading import visit_trend

    cl = simulate(np.random.default_rng(21), n_dots=300, blue=False, shade_sd=3.0)
    obs = cl.obs.copy()
    offsets = {d: o for d, o in zip(sorted(obs["day"].unique()), (0.0, 0.3, -0.4, 1.2, 0.2, 1.6, 0.4))}
    obs["blue_index"] += obs["day"].map(offsets) * obs["contrast_dL"] / 20  # every dot of a visit, together
    plain = fit_fading(obs, cl.visits, settings(), np.random.default_rng(0))
    assert not plain.blue_trend.detected and plain.blue_trend.n_turning <= 6
    assert plain.blue_trend.per_year.low < 0 < plain.blue_trend.per_year.high
    # what the dots' bootstrap alone says about the same photos
    naive = fit_fading(obs, cl.visits, settings(region_visits=False, turning_relative=False), np.random.default_rng(0))
    assert naive.blue_trend.detected
    # the visits' own line: a steady rise is found, scatter about it widens the range, two visits give none
    day = np.repeat(np.arange(5) * 100.0, 50)
    rise = visit_trend(day, day / 365.25 + np.random.default_rng(0).normal(0, 0.01, len(day)), 0.05, 0.9)
    assert rise is not None and rise[1] > 0.9 and rise[2] < 1.1
    assert visit_trend(day[day < 200], day[day < 200], 0.05, 0.9) is None
