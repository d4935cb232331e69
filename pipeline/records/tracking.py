"""A client region's visits as tracking reads them from the records, and the dot links it gives
back: the one place that chooses which photo of each visit is followed (``smp track`` and the web
app both call it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from pipeline.records.assessments import store_dot_links
from pipeline.records.read import assessment_dots, client_photos
from pipeline.records.store import PhotoStore

if TYPE_CHECKING:
    from pipeline.over_time.history import History
    from pipeline.over_time.track import VisitInput

__all__ = ["RegionVisits", "region_visits", "store_track_links", "visit_key"]


def visit_key(p: Any) -> str:
    """A visit's key in the tracks: its date, kind and session number (``2026-01-10_session-1``)."""
    return f"{p.visit_date.isoformat()}_{p.kind}" + (f"-{p.session}" if p.session else "")


def _photo_rgb(path: Path) -> Callable[[], np.ndarray]:
    """The photo at ``path`` as HxWx3 uint8, read when called (tracking holds one visit's photo at a time)."""
    from pipeline.one_photo.loading import load_photo

    return lambda: load_photo(path).rgb


@dataclass(frozen=True)
class RegionVisits:
    """The photo followed at each visit of a region (visit key -> photo row: the first assessed
    close-up of the visit, in the records' order) and its dots."""

    chosen: dict[str, Any]
    dots: dict[str, pd.DataFrame] = field(repr=False)

    def inputs(self, store: PhotoStore) -> list[VisitInput]:
        """The visits as :func:`pipeline.over_time.history.track_region` takes them."""
        from pipeline.over_time.track import VisitInput

        return [
            VisitInput(
                key=k,
                date=p.visit_date,
                kind=p.kind,
                session=p.session,
                dots=self.dots[k],
                image=_photo_rgb(store.path(p.stored_path)),
                px_per_mm=(p.assessment.get("calibration") or {}).get("px_per_mm"),
                metrics=p.assessment.get("metrics") or {},
            )
            for k, p in self.chosen.items()
        ]


def region_visits(session: Session, client: str, *, clinic: str, region: str) -> RegionVisits:
    """One assessed close-up per visit of ``client``'s ``region`` (photos not assessed yet are left out)."""
    chosen: dict[str, Any] = {}
    for p in client_photos(session, client, clinic=clinic, region=region):
        if p.assessment is not None and p.view == "closeup":
            chosen.setdefault(visit_key(p), p)
    return RegionVisits(chosen, {k: assessment_dots(session, p.assessment_id) for k, p in chosen.items()})


def store_track_links(session: Session, visits: RegionVisits, history: History) -> None:
    """Store the dot links of each visit to its reference (``method = 'track'``)."""
    for ref, key, bi, ai, res in history.tracking.pairs:
        store_dot_links(
            session,
            visits.chosen[ref].assessment_id,
            visits.chosen[key].assessment_id,
            [(int(i), int(j), None if not np.isfinite(r) else float(r)) for i, j, r in zip(bi, ai, res, strict=True)],
            method="track",
        )
