"""A client's visits over time: baseline, sessions, follow-ups, touch-ups.

The truth of a series is a small physical model per dot:

* contrast ``c_i(t) = c0_i * exp(-k_i * (t - t_i))`` where ``t_i`` is the last
  session that placed or refreshed the dot, ``k_i = ln 2 / half_life`` of the
  client times a log-normal per-dot factor (a few dots fade 2.5-4x faster);
* blue shift: for a client with the problem, a fraction of dots gains blue
  optical density linearly with time since placement;
* spread: a few dots grow (diameter rate in mm/year) and soften;
* hair length, post-session redness, camera pose and light change every visit.

Dots keep their ``dot_id`` for the whole series.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
import pandas as pd

from data.card import CardSpec
from data.flags import FlagSettings
from data.synth.camera import CameraParams, draw_camera
from data.synth.closeup import ClientScalp, Plane, VisitState, draw_card_pose, footprint_mm, new_client, render_closeup
from data.synth.dots import DotSet
from data.synth.scene import Scene
from data.synth.settings import SynthSettings
from data.visits import PIGMENTING_KINDS


@dataclass(frozen=True)
class Visit:
    index: int
    kind: str  # baseline | session | follow-up | touch-up
    session: int  # session number for sessions/touch-ups, else 0
    day: float  # days since the baseline
    date: str  # ISO date

    @property
    def label(self) -> str:
        return f"{self.kind}-{self.session}" if self.session else self.kind


@dataclass(frozen=True)
class ClientTruth:
    half_life_days: float
    rate_per_day: np.ndarray  # (N,) per dot
    c0: np.ndarray  # (N,) fresh contrast per dot
    blue_rate: np.ndarray  # (N,) blue OD per year (0 for unaffected dots)
    spread_rate: np.ndarray  # (N,) diameter growth mm per year
    fast: np.ndarray  # (N,) bool, fades >= 2x faster than the client
    blue_client: bool


def plan_visits(rng: np.random.Generator, cfg: SynthSettings) -> list[Visit]:
    s = cfg.series
    start = dt.date(2024, 1, 8) + dt.timedelta(days=int(rng.integers(0, 540)))
    n_sessions = int(rng.integers(s.sessions[0], s.sessions[1] + 1))
    n_follow = int(rng.integers(s.followups[0], s.followups[1] + 1))
    day = 0.0
    visits = [Visit(0, "baseline", 0, 0.0, start.isoformat())]
    for k in range(1, n_sessions + 1):
        day += float(np.round(rng.uniform(*s.session_gap_days) if k > 1 else rng.uniform(0, 3)))
        visits.append(Visit(len(visits), "session", k, day, (start + dt.timedelta(days=day)).isoformat()))
    touch_at = int(rng.integers(2, n_follow)) if (n_follow >= 3 and rng.random() < s.touchup_probability) else -1
    for j in range(n_follow):
        day += float(np.round(rng.uniform(*s.followup_gap_days)))
        kind, sess = ("touch-up", n_sessions + 1) if j == touch_at else ("follow-up", 0)
        visits.append(Visit(len(visits), kind, sess, day, (start + dt.timedelta(days=day)).isoformat()))
    return visits


def draw_client_truth(rng: np.random.Generator, cfg: SynthSettings, dots: DotSet) -> ClientTruth:
    s = cfg.series
    n = len(dots)
    half_life = float(rng.uniform(*s.half_life_days))
    factor = np.exp(rng.normal(0, rng.uniform(*s.dot_rate_sigma), n))
    fast = rng.random(n) < rng.uniform(*s.fast_fading_fraction)
    factor[fast] = rng.uniform(2.5, 4.0, fast.sum())
    blue_client = bool(rng.random() < s.blue_client_probability)
    blue_rate = np.zeros(n)
    if blue_client:
        aff = rng.random(n) < rng.uniform(*s.blue_dot_fraction)
        blue_rate[aff] = rng.uniform(*s.blue_od_per_year) * rng.uniform(0.7, 1.3, aff.sum())
    spread_rate = np.zeros(n)
    # no draw at probability 1, so the default series keep their bytes
    if s.spread_client_probability >= 1 or rng.random() < s.spread_client_probability:
        spr = rng.random(n) < rng.uniform(*s.spread_dot_fraction)
        spread_rate[spr] = rng.uniform(*s.spread_rate_mm_per_year, spr.sum())
    return ClientTruth(
        half_life_days=half_life,
        rate_per_day=np.log(2) / half_life * factor,
        c0=rng.uniform(*cfg.dots.contrast_dl, n),
        blue_rate=blue_rate,
        spread_rate=spread_rate,
        fast=fast,
        blue_client=blue_client,
    )


def dot_state(
    client: ClientScalp, truth: ClientTruth, visits: list[Visit], upto: int, refreshed: dict[int, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Which dots exist at visit ``upto`` and the day each was last (re)pigmented."""
    dots = client.dots
    exists = np.zeros(len(dots), bool)
    last_day = np.full(len(dots), np.nan)
    for v in visits[: upto + 1]:
        if v.kind in PIGMENTING_KINDS:
            new = dots.session == v.session
            exists |= new
            last_day[new] = v.day
            if v.index in refreshed:
                last_day[refreshed[v.index]] = v.day
    return exists, last_day


def visit_state(
    rng: np.random.Generator,
    cfg: SynthSettings,
    client: ClientScalp,
    truth: ClientTruth,
    visit: Visit,
    exists: np.ndarray,
    last_day: np.ndarray,
    first_day: np.ndarray,
    last_session_day: float,
) -> VisitState:
    dots = client.dots
    age = np.maximum(visit.day - last_day, 0.0)  # since last (re)pigmentation
    total_age = np.maximum(visit.day - first_day, 0.0)  # since first placement
    contrast = truth.c0 * np.exp(-truth.rate_per_day * age)
    blue = truth.blue_rate * total_age / 365.25 * np.exp(-truth.rate_per_day * age) ** 0.25
    grow = truth.spread_rate * total_age / 365.25
    radius = dots.radius_mm + grow / 2.0
    soft = np.clip(dots.softness * (1.0 + 2.0 * grow / np.maximum(2 * dots.radius_mm, 1e-6)), 0.05, 0.6)
    idx = np.flatnonzero(exists)
    s = cfg.series
    redness = (
        float(rng.uniform(*s.fresh_redness))
        * float(np.exp(-(visit.day - last_session_day) / rng.uniform(*s.redness_days)))
        if np.isfinite(last_session_day)
        else 0.0
    )
    return VisitState(
        dots=dots.with_(blue=blue, radius_mm=radius, softness=soft).take(idx),
        contrast_dl=contrast[idx],
        hair_length_scale=float(rng.uniform(*s.hair_length_scale)),
        extra_redness=redness,
    )


def median_crossing_day(
    truth: ClientTruth,
    last_day: np.ndarray,
    exists: np.ndarray,
    threshold: float,
    after_day: float,
    horizon_days: float = 365.25 * 15,
    rendered_ratio: np.ndarray | None = None,
) -> float | None:
    """First day after ``after_day`` when the median contrast of the dots falls below ``threshold``.

    ``rendered_ratio`` (N,): each dot's contrast as rendered over the contrast asked for
    (dots of a few pixels render lighter than asked, scars take up less pigment); the
    crossing is of the contrast a photo shows, so the fresh contrasts are scaled by it.
    """
    days = np.arange(after_day, after_day + horizon_days, 1.0)
    c0 = truth.c0 if rendered_ratio is None else truth.c0 * rendered_ratio
    c = c0[exists][None, :] * np.exp(
        -truth.rate_per_day[exists][None, :] * np.maximum(days[:, None] - last_day[exists][None, :], 0)
    )
    med = np.median(c, axis=1)
    below = np.flatnonzero(med < threshold)
    return float(days[below[0]]) if len(below) else None


def render_series(
    rng: np.random.Generator,
    cfg: SynthSettings,
    card: CardSpec,
    rules: FlagSettings,
) -> tuple[list[tuple[Visit, Scene]], dict]:
    """Render every visit of one synthetic client; return the scenes and series truth."""
    size = (cfg.image.width, cfg.image.height)
    base_cam = draw_camera(rng, cfg.camera, cfg.image.width)
    nominal = base_cam.px_per_mm
    s = cfg.series
    # the plane covers any pose of the series: diagonal of the widest view plus shifts
    span = np.hypot(*size) / (nominal * (1 - s.px_per_mm_jitter[1])) * 1.15 + 2 * s.view_shift_mm[1] + 4
    plane = Plane(float(span), float(span), nominal * (1 + s.px_per_mm_jitter[1]))
    visits = plan_visits(rng, cfg)
    n_sessions = max(v.session for v in visits)
    client = new_client(rng, cfg, plane, n_sessions=n_sessions)
    truth = draw_client_truth(rng, cfg, client.dots)

    refreshed: dict[int, np.ndarray] = {}
    first_day = np.full(len(client.dots), np.nan)
    out: list[tuple[Visit, Scene]] = []
    last_session_day = np.nan
    ratios: dict[int, list[float]] = {}  # dot_id -> rendered / asked contrast, per visit it shows in
    for v in visits:
        if v.kind == "touch-up":
            # the artist re-pigments the faded dots (contrast under 60 % of fresh) and adds new ones
            exists, last_day = dot_state(client, truth, visits, v.index - 1, refreshed)
            cur = truth.c0 * np.exp(-truth.rate_per_day * np.maximum(v.day - last_day, 0))
            refreshed[v.index] = np.flatnonzero(exists & (cur < 0.6 * truth.c0))
        exists, last_day = dot_state(client, truth, visits, v.index, refreshed)
        first_day = np.where(np.isnan(first_day) & exists, last_day, first_day)
        if v.kind in PIGMENTING_KINDS:
            last_session_day = v.day
        state = visit_state(rng, cfg, client, truth, v, exists, last_day, first_day, last_session_day)
        cam = draw_camera(rng, cfg.camera, cfg.image.width)
        cam = CameraParams(
            **{**asdict(cam), "px_per_mm": nominal * (1 + rng.uniform(-1, 1) * rng.uniform(*s.px_per_mm_jitter))}
        )
        shift = rng.normal(0, 1, 2)
        # max gives a float or an np.float64 (a float subclass)
        shift = shift / cast(float, max(np.linalg.norm(shift), 1e-9)) * rng.uniform(*s.view_shift_mm)
        centre = (plane.width_mm / 2 + shift[0], plane.height_mm / 2 + shift[1])
        corners, _ = footprint_mm(cam, size)
        pose = draw_card_pose(rng, cfg, plane, corners + np.array(centre))
        scene = render_closeup(client, state, cam, size, card, pose, rng, rules, view_centre_mm=centre)
        out.append((v, scene))
        if len(scene.dots):
            asked = pd.Series(state.contrast_dl, index=client.dots.dot_id[exists])
            shown = scene.dots.set_index("dot_id")["contrast_dL"]
            for dot_id, r in (shown / asked.reindex(shown.index)).dropna().items():
                ratios.setdefault(int(dot_id), []).append(float(r))

    exists, last_day = dot_state(client, truth, visits, len(visits) - 1, refreshed)
    last_sess = max(v.day for v in visits if v.kind in PIGMENTING_KINDS)
    seen = {k: float(np.median(v)) for k, v in ratios.items()}
    typical = float(np.median(list(seen.values()))) if seen else 1.0
    ratio = np.array([seen.get(int(i), typical) for i in client.dots.dot_id])
    crossing = median_crossing_day(truth, last_day, exists, s.touchup_contrast_dl, last_sess, rendered_ratio=ratio)
    start = dt.date.fromisoformat(visits[0].date)
    series_truth = {
        "half_life_days": truth.half_life_days,
        "blue_client": truth.blue_client,
        "blue_dot_ids": client.dots.dot_id[truth.blue_rate > 0],
        "spread_dot_ids": client.dots.dot_id[truth.spread_rate > 0],
        "spread_client": bool((truth.spread_rate > 0).any()),
        "fast_fading_dot_ids": client.dots.dot_id[truth.fast],
        "touchup_contrast_dl": s.touchup_contrast_dl,
        "touchup_due_date": (start + dt.timedelta(days=crossing)).isoformat() if crossing is not None else None,
        "refreshed_at_touchup": {visits[k].date: client.dots.dot_id[ix] for k, ix in refreshed.items()},
        "px_per_mm_nominal": nominal,
    }
    return out, series_truth
