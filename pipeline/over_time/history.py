"""A client region's history: dot tracks, the fading model, the forecast, and their plots.

:func:`track_region` is the only place that knows the order of the stages: the visits' close-ups are linked into dot
tracks (:mod:`pipeline.over_time.track`), the tracks go into the fading model
(:mod:`pipeline.over_time.fading`), and each visit's photo metrics (density, show-through,
flag fractions) are gathered for the timeline. ``write_history`` writes what
``smp track`` promises: ``track.json`` (schema ``smp-track/1``), ``tracks.csv``
(one row per dot per visit with its track), ``dots_fading.csv`` (one row per
track: rate, half-life, flags), and the plots, which the report issue embeds.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data.visits import PIGMENTING_KINDS
from pipeline.over_time.fading import FadingResult, FadingSettings, fit_fading
from pipeline.over_time.track import Tracking, VisitInput, link_visits
from pipeline.two_photos.settings import RegisterSettings

__all__ = ["SCHEMA", "VisitSummary", "History", "track_region", "write_history", "plot_history"]

SCHEMA = "smp-track/1"
#: Photo metrics followed over the visits (docs/metrics.md names).
TIMELINE_METRICS = (
    "dot_count",
    "dot_density_per_cm2",
    "show_through",
    "scalp_fraction",
    "dot_diameter_mm_median",
    "nn_distance_mm_median",
    "blue_shift_fraction",
    "faded_fraction",
    "spread_fraction",
)


@dataclass(frozen=True)
class VisitSummary:
    """One visit on the timeline: when, what kind, and its close-up's photo metrics."""

    key: str
    date: str
    day: float
    kind: str
    session: int
    metrics: dict[str, Any]
    median_contrast_dL: float | None
    median_blue_index: float | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True, eq=False)
class History:
    client: str
    region: str
    visits: tuple[VisitSummary, ...]
    tracking: Tracking
    fading: FadingResult
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        tr = self.tracking
        return {
            "schema": SCHEMA,
            "client": self.client,
            "region": self.region,
            "visits": [v.to_json() for v in self.visits],
            "links": [lk.to_json() for lk in tr.links],
            "tracks": {"n_tracks": tr.n_tracks, "n_observations": int(len(tr.observations))},
            "fading": self.fading.summary(),
            "warnings": list(self.warnings),
        }


def _median(v: pd.Series) -> float | None:
    v = pd.to_numeric(v, errors="coerce").dropna()
    return float(v.median()) if len(v) else None


def track_region(
    client: str,
    region: str,
    visits: Sequence[VisitInput],
    *,
    fading: FadingSettings,
    rng: np.random.Generator,
    register: RegisterSettings | None = None,
) -> History:
    """A region over its visits: link the dots over ``visits`` (any order), fit the fading model
    (``rng`` draws its bootstrap), gather the timeline. ``smp track`` and the web app call it."""
    ordered = sorted(visits, key=lambda v: v.date)
    if not ordered:
        raise ValueError(f"client {client!r} region {region!r}: no close-up visits to follow")
    tracking = link_visits(ordered, register)
    base = ordered[0].date
    obs = tracking.observations.rename(columns={"track_id": "dot_key"})
    visit_rows = [{"day": float((v.date - base).days), "kind": v.kind} for v in ordered]
    result = fit_fading(obs, visit_rows, fading, rng, baseline_date=base)
    summaries = []
    tracked = tracking.observations.groupby("visit")
    unregistered = {lk.visit for lk in tracking.links if not lk.ok}
    for v in ordered:
        # medians of the dots that were tracked (not of dots ignored before any session); a visit that
        # could not be registered keeps the medians of its own dots (they need no alignment)
        d = (
            tracked.get_group(v.key)
            if v.key in tracked.groups
            else v.dots
            if v.key in unregistered and {"contrast_dL", "blue_index"} <= set(v.dots.columns)
            else tracking.observations.iloc[:0]
        )
        summaries.append(
            VisitSummary(
                key=v.key,
                date=v.date.isoformat(),
                day=float((v.date - base).days),
                kind=v.kind,
                session=v.session,
                metrics={k: v.metrics.get(k) for k in TIMELINE_METRICS},
                median_contrast_dL=_median(d["contrast_dL"]) if len(d) else None,
                median_blue_index=_median(d["blue_index"]) if len(d) else None,
            )
        )
    return History(
        client=client,
        region=region,
        visits=tuple(summaries),
        tracking=tracking,
        fading=result,
        warnings=tuple(tracking.warnings) + tuple(result.warnings),
    )


# --------------------------------------------------------------------------- plots


def _dates(base: dt.date, days: Iterable[float]) -> list[dt.date]:
    return [base + dt.timedelta(days=float(d)) for d in days]


def plot_history(h: History, out: Path) -> dict[str, Path]:
    """Write the timeline plots (PNG) into ``out``; returns {name: path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    base = dt.date.fromisoformat(h.visits[0].date)
    days = np.array([v.day for v in h.visits])
    pig = [v for v in h.visits if v.kind in PIGMENTING_KINDS]
    paths: dict[str, Path] = {}

    def finish(fig, ax, name: str, ylabel: str) -> None:
        for v in pig:
            ax.axvline(dt.date.fromisoformat(v.date), color="0.85", lw=1, zorder=0)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        p = out / f"{name}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths[name] = p

    # contrast: every dot (faint), the visit medians, the fitted decay and the forecast
    f = h.fading
    fig, ax = plt.subplots(figsize=(7.5, 4))
    obs = h.tracking.observations
    if len(obs):
        sample = obs.sample(min(len(obs), 4000), random_state=0)
        ax.scatter(
            _dates(base, sample["day"]),  # type: ignore[arg-type]  # matplotlib stubs: dates via units
            sample["contrast_dL"],
            s=3,
            alpha=0.12,
            color="tab:blue",
            label="dots",
            rasterized=True,
        )
    med = [(v.day, v.median_contrast_dL) for v in h.visits if v.median_contrast_dL is not None]
    if med:
        ax.plot(
            _dates(base, [m[0] for m in med]),  # type: ignore[arg-type]  # matplotlib stubs: dates via units
            [m[1] for m in med],
            "o-",
            color="tab:blue",
            label="median",
        )
    fc = f.forecast
    ax.axhline(fc.threshold_dl, color="tab:red", ls="--", lw=1, label=f"touch-up threshold ({fc.threshold_dl:g})")
    rate = f.rate_per_day
    if rate.value and rate.value > 0 and f.last_median_contrast_dl and med:
        t0 = med[-1][0]
        t_end = max(t0 + 365.0, (fc.day_high or fc.day or t0) + 120.0)
        t = np.linspace(t0, t_end, 120)
        ax.plot(
            _dates(base, t),  # type: ignore[arg-type]  # matplotlib stubs: dates via units
            f.last_median_contrast_dl * np.exp(-rate.value * (t - t0)),
            color="tab:orange",
            label=f"fit: half-life {f.half_life_days.value:.0f} d" if f.half_life_days.value else "fit",
        )
        if rate.low is not None and rate.high is not None:
            ax.fill_between(
                _dates(base, t),  # type: ignore[arg-type]  # matplotlib stubs: dates via units
                f.last_median_contrast_dl * np.exp(-rate.high * (t - t0)),
                f.last_median_contrast_dl * np.exp(-max(rate.low, 0.0) * (t - t0)),
                color="tab:orange",
                alpha=0.2,
                lw=0,
                label="90% band",
            )
    if fc.day is not None:
        lo = fc.day_low if fc.day_low is not None else fc.day
        hi = fc.day_high if fc.day_high is not None else fc.day
        ax.axvspan(
            base + dt.timedelta(days=lo),  # type: ignore[arg-type]  # matplotlib stubs: dates via units
            base + dt.timedelta(days=hi),  # type: ignore[arg-type]  # matplotlib stubs: dates via units
            color="tab:red",
            alpha=0.1,
        )
        ax.axvline(
            base + dt.timedelta(days=fc.day),  # type: ignore[arg-type]  # matplotlib stubs: dates via units
            color="tab:red",
            lw=1.5,
            label=f"touch-up due {fc.date}",
        )
    ax.set_title(f"{h.client} / {h.region}: dot contrast over time")
    ax.legend(fontsize=7, loc="upper right")
    finish(fig, ax, "contrast", "contrast dL* (skin - dot)")

    for name, values, ylabel in (
        ("blue_index", [v.median_blue_index for v in h.visits], "median blue index"),
        ("density", [v.metrics.get("dot_density_per_cm2") for v in h.visits], "dots per cm2"),
        (
            "show_through",
            [None if v.metrics.get("show_through") is None else 100 * v.metrics["show_through"] for v in h.visits],
            "show-through %",
        ),
    ):
        fig, ax = plt.subplots(figsize=(7.5, 3))
        ok = [(d, y) for d, y in zip(days, values) if y is not None]
        if ok:
            ax.plot(
                _dates(base, [o[0] for o in ok]),  # type: ignore[arg-type]  # matplotlib stubs: dates via units
                [o[1] for o in ok],
                "o-",
                color="tab:purple",
            )
        if name == "blue_index" and f.blue_trend.per_year.value is not None:
            ax.set_title(
                f"blue trend {f.blue_trend.per_year.value:+.2f}/year"
                + (" (found)" if f.blue_trend.detected else " (not found)")
            )
        finish(fig, ax, name, ylabel)
    return paths


def write_history(h: History, out: str | Path) -> Path:
    """Write track.json, tracks.csv, dots_fading.csv and the plots into ``out`` (created)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def put(name: str, data: bytes) -> None:
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(out / name)

    put("tracks.csv", h.tracking.observations.to_csv(index=False, float_format="%.4f").encode())
    put("dots_fading.csv", h.fading.dots.to_csv(index=False, float_format="%.6g").encode())
    plots = plot_history(h, out)
    doc = h.to_json()
    doc["plots"] = {k: p.name for k, p in plots.items()}
    put("track.json", json.dumps(doc, indent=1, default=_json_default).encode())
    return out


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")
