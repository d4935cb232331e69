"""Reading a client's history back: visits, their photos, assessments and dots.

Queries only (read-only sessions: on SQLite they never wait for an ingest). What
tracking and reports need, as plain frozen rows and tables, so that nothing
outside ``pipeline.records`` touches the ORM.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from pipeline.records.schema import (
    DEFAULT_CLINIC,
    DOT_FIELDS,
    Assessment,
    Client,
    Clinic,
    Dot,
    Photo,
    Region,
    Visit,
    VisitPhoto,
)

__all__ = ["PhotoRecord", "client_photos", "assessment_dots", "client_regions"]


@dataclass(frozen=True)
class PhotoRecord:
    """One photo of a client's visit, with its latest assessment (None when not assessed yet).

    ``assessment``: the assessment chosen by :func:`client_photos` (model / config
    filters), as its stored documents (``metrics``, ``calibration``, ``view``...).
    """

    visit_id: int
    visit_date: dt.date
    kind: str
    session: int
    region: str
    photo_sha256: str
    stored_path: str
    original_name: str
    view: str | None
    assessment_id: int | None
    assessment: dict[str, Any] | None


def client_regions(session: Session, client: str, clinic: str = DEFAULT_CLINIC) -> list[str]:
    """Names of the client's regions (empty when the client is unknown)."""
    stmt = (
        sa.select(Region.name)
        .join(Client, Client.id == Region.client_id)
        .join(Clinic, Clinic.id == Client.clinic_id)
        .where(Clinic.slug == clinic, Client.external_id == client)
        .order_by(Region.name)
    )
    return list(session.scalars(stmt))


def client_photos(
    session: Session,
    client: str,
    *,
    clinic: str = DEFAULT_CLINIC,
    region: str | None = None,
    model_key: str | None = None,
    config_hash: str | None = None,
) -> list[PhotoRecord]:
    """Every photo of ``client`` (optionally one ``region``) in visit order, each with the most
    recent assessment that matches ``model_key`` / ``config_hash`` when given."""
    stmt = (
        sa.select(
            Visit.id,
            Visit.visit_date,
            Visit.kind,
            Visit.session_number,
            Region.name,
            Photo.sha256,
            Photo.stored_path,
            Photo.original_name,
            Photo.view,
            Photo.id,
        )
        .join(Client, Client.id == Visit.client_id)
        .join(Clinic, Clinic.id == Client.clinic_id)
        .join(Region, Region.id == Visit.region_id)
        .join(VisitPhoto, VisitPhoto.visit_id == Visit.id)
        .join(Photo, Photo.id == VisitPhoto.photo_id)
        .where(Clinic.slug == clinic, Client.external_id == client)
        .order_by(Visit.visit_date, Visit.id, Photo.id)
    )
    if region is not None:
        stmt = stmt.where(Region.name == region)
    rows = session.execute(stmt).all()
    out = []
    for vid, day, kind, sess, reg, sha, path, name, view, photo_id in rows:
        q = sa.select(Assessment).where(Assessment.photo_id == photo_id)
        if model_key is not None:
            q = q.where(Assessment.model_key == model_key)
        if config_hash is not None:
            q = q.where(Assessment.config_hash == config_hash)
        a = session.scalars(q.order_by(Assessment.created_at.desc(), Assessment.id.desc()).limit(1)).first()
        doc = (
            None
            if a is None
            else {
                "view": a.view,
                "metrics": a.metrics,
                "calibration": a.calibration,
                "quality": a.quality,
                "warnings": a.warnings,
                "model": {"name": a.model_name, "version": a.model_version, "sha256": a.model_sha256},
                "config_hash": a.config_hash,
                "created_at": a.created_at.isoformat(),
                "dot_count": a.dot_count,
            }
        )
        out.append(
            PhotoRecord(
                visit_id=vid,
                visit_date=day,
                kind=kind,
                session=sess,
                region=reg,
                photo_sha256=sha,
                stored_path=path,
                original_name=name,
                view=(a.view if a is not None else None) or view,
                assessment_id=None if a is None else a.id,
                assessment=doc,
            )
        )
    return out


def assessment_dots(session: Session, assessment_id: int) -> pd.DataFrame:
    """The dots of one assessment with the ``dots.csv`` column names, in ``dot_id`` order."""
    columns = {db: csv for csv, db in DOT_FIELDS.items()}
    rows = session.execute(
        sa.select(*(getattr(Dot, db) for db in columns))
        .where(Dot.assessment_id == assessment_id)
        .order_by(Dot.dot_index)
    ).all()
    return pd.DataFrame(rows, columns=list(columns.values())).astype({"x": float, "y": float})
