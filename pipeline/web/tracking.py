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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from pipeline.records import PhotoStore, Records
from pipeline.records.schema import Region
from pipeline.records.tracking import region_visits, store_track_links

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

    with records.session(read_only=True) as s:
        region = s.scalar(sa.select(Region.name).where(Region.id == region_id, Region.client_id == client_id))
        if region is None:
            raise LookupError("no such region")
        visits = region_visits(s, client, clinic=clinic, region=region)
    chosen = visits.chosen
    if len(chosen) < 2:
        return RegionTracking(
            region_id, region, None, None, f"{len(chosen)} assessed close-up visit(s); tracking needs at least 2"
        )
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
    history = track_region(client, region, visits.inputs(store), fading=fading, rng=np.random.default_rng(seed))
    with records.transaction() as s:
        store_track_links(s, visits, history)
    write_history(history, folder)
    stamp.write_text(json.dumps(inputs))
    return RegionTracking(region_id, region, folder, json.loads((folder / "track.json").read_text()))
