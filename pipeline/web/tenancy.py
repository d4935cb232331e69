"""Clinics are tenants: every lookup by id goes through here and is filtered by the user's clinic.

A row of another clinic is answered exactly like a row that does not exist
(:class:`NotFound`, a 404), so ids of other clinics reveal nothing. Admins see every
clinic. Everything a clinic owns hangs off ``clients.clinic_id``: visits and regions
through their client, photos through the visit they belong to, assessments through
their photo, dots through their assessment, jobs through their visit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from pipeline.records.schema import Assessment, Client, Clinic, Dot, Job, Photo, Region, Visit, VisitPhoto
from pipeline.web.auth import Principal

__all__ = [
    "NotFound",
    "PhotoRow",
    "scoped",
    "get_client",
    "get_region",
    "get_visit",
    "get_photo",
    "get_assessment",
    "get_dot",
    "get_job",
    "clinic_filter",
    "client_summaries",
]


class NotFound(LookupError):
    """No such row for this user (whether it does not exist or belongs to another clinic)."""


def scoped(stmt: sa.Select[*tuple[Any, ...]], principal: Principal) -> sa.Select[*tuple[Any, ...]]:
    """``stmt`` (which joins ``clients``) limited to the principal's clinic unless admin."""
    return stmt if principal.is_admin else stmt.where(Client.clinic_id == principal.clinic_id)


def client_summaries(
    session: Session, principal: Principal, clinic_id: int | None = None, client_id: int | None = None
) -> list[tuple[int, str, str, int, int, Any]]:
    """(id, external id, clinic slug, visits, photos, last visit date) of the clients the principal
    sees (admins: every clinic, or ``clinic_id``), by clinic and id."""
    visits = (
        sa.select(Visit.client_id, sa.func.count(Visit.id).label("n"), sa.func.max(Visit.visit_date).label("last"))
        .group_by(Visit.client_id)
        .subquery()
    )
    photos = (
        sa.select(Visit.client_id, sa.func.count(VisitPhoto.id).label("n"))
        .join(VisitPhoto, VisitPhoto.visit_id == Visit.id)
        .group_by(Visit.client_id)
        .subquery()
    )
    stmt = (
        sa.select(
            Client.id,
            Client.external_id,
            Clinic.slug,
            sa.func.coalesce(visits.c.n, 0),
            sa.func.coalesce(photos.c.n, 0),
            visits.c.last,
        )
        .join(Clinic, Clinic.id == Client.clinic_id)
        .outerjoin(visits, visits.c.client_id == Client.id)
        .outerjoin(photos, photos.c.client_id == Client.id)
        .order_by(Clinic.slug, Client.external_id)
    )
    limit = clinic_filter(principal, clinic_id)
    if limit is not None:
        stmt = stmt.where(Client.clinic_id == limit)
    if client_id is not None:
        stmt = stmt.where(Client.id == client_id)
    return [tuple(row) for row in session.execute(stmt)]


def clinic_filter(principal: Principal, clinic_id: int | None) -> int | None:
    """The clinic a listing is limited to: the user's own, or (admins) the one asked for / all (None)."""
    if not principal.is_admin:
        return principal.clinic_id
    return clinic_id


def _one(session: Session, stmt: sa.Select[*tuple[Any, ...]], principal: Principal) -> Any:
    row = session.execute(scoped(stmt, principal)).first()
    if row is None:
        raise NotFound()
    return row


def get_client(session: Session, principal: Principal, client_id: int) -> tuple[Client, Clinic]:
    return tuple(
        _one(
            session,
            sa.select(Client, Clinic).join(Clinic, Clinic.id == Client.clinic_id).where(Client.id == client_id),
            principal,
        )
    )


def get_region(session: Session, principal: Principal, region_id: int) -> tuple[Region, Client]:
    return tuple(
        _one(
            session,
            sa.select(Region, Client).join(Client, Client.id == Region.client_id).where(Region.id == region_id),
            principal,
        )
    )


def get_visit(session: Session, principal: Principal, visit_id: int) -> tuple[Visit, Client]:
    return tuple(
        _one(
            session,
            sa.select(Visit, Client).join(Client, Client.id == Visit.client_id).where(Visit.id == visit_id),
            principal,
        )
    )


@dataclass(frozen=True)
class PhotoRow:
    photo: Photo
    visit: Visit
    client: Client


def _photo_stmt() -> sa.Select[*tuple[Any, ...]]:
    return (
        sa.select(Photo, Visit, Client)
        .join(VisitPhoto, VisitPhoto.photo_id == Photo.id)
        .join(Visit, Visit.id == VisitPhoto.visit_id)
        .join(Client, Client.id == Visit.client_id)
    )


def get_photo(session: Session, principal: Principal, photo_id: int) -> PhotoRow:
    return PhotoRow(*_one(session, _photo_stmt().where(Photo.id == photo_id), principal))


def get_assessment(session: Session, principal: Principal, assessment_id: int) -> tuple[Assessment, PhotoRow]:
    stmt = (
        _photo_stmt()
        .add_columns(Assessment)
        .join(Assessment, Assessment.photo_id == Photo.id)
        .where(Assessment.id == assessment_id)
    )
    photo, visit, client, assessment = _one(session, stmt, principal)
    return assessment, PhotoRow(photo, visit, client)


def get_dot(session: Session, principal: Principal, dot_id: int) -> tuple[Dot, Assessment, PhotoRow]:
    stmt = (
        _photo_stmt()
        .add_columns(Assessment, Dot)
        .join(Assessment, Assessment.photo_id == Photo.id)
        .join(Dot, Dot.assessment_id == Assessment.id)
        .where(Dot.id == dot_id)
    )
    photo, visit, client, assessment, dot = _one(session, stmt, principal)
    return dot, assessment, PhotoRow(photo, visit, client)


def get_job(session: Session, principal: Principal, job_id: int) -> tuple[Job, Visit, Client]:
    return tuple(
        _one(
            session,
            sa.select(Job, Visit, Client)
            .join(Visit, Visit.id == Job.visit_id)
            .join(Client, Client.id == Visit.client_id)
            .where(Job.id == job_id),
            principal,
        )
    )
