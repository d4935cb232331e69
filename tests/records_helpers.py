"""Shared by the records tests (tests/test_records_*.py): photos, row counts, visit arguments, fake assessments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import sqlalchemy as sa
from PIL import Image

from pipeline.records.schema import Assessment, Base, Client, Dot, Photo, Region, Visit, VisitPhoto


def make_photos(folder: Path, n: int, seed: int = 0, prefix: str = "p") -> list[Path]:
    """``n`` distinct small PNG photos."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{prefix}{i}.png"
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def counts(records) -> dict[str, int]:
    with records.session() as s:
        return {
            m.__tablename__: s.scalar(sa.select(sa.func.count()).select_from(m))
            for m in (Client, Region, Visit, Photo, VisitPhoto, Assessment, Dot)
        }


def store_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "photos").glob("*/*/*")) if (root / "photos").exists() else []


def visit_args(**kw):
    base = dict(client="C1", region="crown", date="2026-03-01", kind="follow-up", create_client=True)
    return {**base, **kw}


# --------------------------------------------------------------------------- schema and migrations


def _migration_diff(engine) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


# --------------------------------------------------------------------------- assessments


def fake_doc(sha: str, *, config: str = "cfg1", model_sha: str | None = "ab" * 32, n_dots: int = 3) -> dict:
    return {
        "schema": "smp-assessment/1",
        "photo": {"path": "x.png", "sha256": sha, "view": "closeup"},
        "calibration": {"px_per_mm": 20.0, "scale_source": "card"},
        "quality": {"ok": True},
        "model": {"name": "smp-segmenter", "version": "3", "sha256": model_sha},
        "metrics": {"dot_count": n_dots, "show_through": 0.25, "dot_density_per_cm2": float("nan")},
        "warnings": ["no scale"],
        "timings_s": {"total": 0.5},
        "config_hash": config,
        "roi_polygon_px": None,
    }


def fake_dots(n: int = 3):
    import pandas as pd

    from pipeline.one_photo.pigment import DOT_COLUMNS

    rng = np.random.default_rng(n)
    frame = pd.DataFrame({c: rng.uniform(0, 50, n) for c in DOT_COLUMNS})
    frame["dot_id"] = np.arange(n)
    frame["skin_samples"] = np.arange(n) + 10
    for flag in ("blue_shift", "faded", "spread"):
        frame[flag] = rng.uniform(size=n) > 0.5
    frame.loc[0, "diameter_mm"] = np.nan
    return frame[DOT_COLUMNS]


class FakeAssessment:
    def __init__(self, sha: str, n: int = 3) -> None:
        self.sha, self.dots = sha, fake_dots(n)

    def to_json(self) -> dict:
        return fake_doc(self.sha, n_dots=len(self.dots))


def fake_assessor():
    import hashlib

    return lambda path: FakeAssessment(hashlib.sha256(Path(path).read_bytes()).hexdigest())
