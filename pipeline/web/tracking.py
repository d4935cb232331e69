"""A client's tracking results for the web app: what ``smp track`` computes, per region, cached.

For each region of the client, the assessed close-up of each visit is linked into dot
tracks and the fading model is fitted (:func:`pipeline.over_time.history.track_region`), exactly as
``smp track`` does; the dot links are stored in the records. The output
(``track.json``, ``tracks.csv``, ``dots_fading.csv``, plots) is written to
``<home>/tracking/<client id>/<region id>/`` and reused while the set of assessments it was
built from is unchanged (``inputs.json``). Photos not assessed yet are left out (their jobs
are still running); a region with fewer than two assessed close-up visits is reported as such.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from pipeline.records import PhotoStore, Records, store_dot_links
from pipeline.records.read import assessment_dots, client_photos
from pipeline.records.schema import Region

__all__ = ["RegionTracking", "region_tracking", "tracking_folder"]


@dataclass(frozen=True)
class RegionTracking:
    region_id: int
    region: str
    folder: Path | None
    doc: dict[str, Any] | None
    problem: str | None = None


def tracking_folder(home: Path, client_id: int, region_id: int) -> Path:
    return Path(home) / "tracking" / str(int(client_id)) / str(int(region_id))


def _visit_key(p: Any) -> str:
    return f"{p.visit_date.isoformat()}_{p.kind}" + (f"-{p.session}" if p.session else "")


def _photo_rgb(path: Path) -> Callable[[], np.ndarray]:
    """The photo at ``path`` as HxWx3 uint8, read when called (tracking holds one visit's photo at a time)."""
    from pipeline.one_photo.loading import load_photo

    return lambda: load_photo(path).rgb


def region_tracking(
    records: Records,
    store: PhotoStore,
    home: Path,
    *,
    clinic: str,
    client_id: int,
    client: str,
    region_id: int,
    seed: int = 0,
) -> RegionTracking:
    """Tracking of one region of a client (already checked to be in the caller's scope)."""
    from pipeline.over_time.fading import load_fading_settings
    from pipeline.over_time.history import track_region, write_history
    from pipeline.over_time.track import VisitInput

    with records.session(read_only=True) as s:
        region = s.scalar(sa.select(Region.name).where(Region.id == region_id, Region.client_id == client_id))
        if region is None:
            raise LookupError("no such region")
        photos = client_photos(s, client, clinic=clinic, region=region)
        chosen: dict[str, Any] = {}
        for p in photos:  # one close-up per visit: the first assessed one (as smp track)
            if p.assessment is not None and p.view == "closeup":
                chosen.setdefault(_visit_key(p), p)
        if len(chosen) < 2:
            return RegionTracking(
                region_id, region, None, None, f"{len(chosen)} assessed close-up visit(s); tracking needs at least 2"
            )
        dots = {k: assessment_dots(s, p.assessment_id) for k, p in chosen.items()}
    folder = tracking_folder(home, client_id, region_id)
    inputs = {"assessments": sorted(int(p.assessment_id) for p in chosen.values()), "seed": seed}
    stamp = folder / "inputs.json"
    if (folder / "track.json").is_file() and stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == inputs:
                return RegionTracking(region_id, region, folder, json.loads((folder / "track.json").read_text()))
        except (OSError, ValueError):
            pass
    fading = load_fading_settings(None, [])
    visits = [
        VisitInput(
            key=k,
            date=p.visit_date,
            kind=p.kind,
            session=p.session,
            dots=dots[k],
            image=_photo_rgb(store.path(p.stored_path)),
            px_per_mm=(p.assessment.get("calibration") or {}).get("px_per_mm"),
            metrics=p.assessment.get("metrics") or {},
        )
        for k, p in chosen.items()
    ]
    history = track_region(client, region, visits, fading=fading, rng=np.random.default_rng(seed))
    with records.transaction() as s:
        for ref, key, bi, ai, res in history.tracking.pairs:
            store_dot_links(
                s,
                chosen[ref].assessment_id,
                chosen[key].assessment_id,
                [
                    (int(i), int(j), None if not np.isfinite(r) else float(r))
                    for i, j, r in zip(bi, ai, res, strict=True)
                ],
                method="track",
            )
    write_history(history, folder)
    stamp.write_text(json.dumps(inputs))
    return RegionTracking(region_id, region, folder, json.loads((folder / "track.json").read_text()))
