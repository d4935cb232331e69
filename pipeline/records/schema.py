"""The records' tables: SQLAlchemy 2 typed declarative models.

What is kept, and why it is shaped this way:

* ``clinics`` -> ``clients`` -> ``regions`` -> ``visits``: every row a clinic
  owns hangs off its clients, so the multi-tenant web app (clinics as tenants)
  filters by one column, ``clients.clinic_id``. A client's id is the clinic's own
  (``external_id``), unique per clinic, not across clinics.
* ``photos`` belong to a clinic and are identified within it by their sha256 (the
  file bytes; migration 0004): the same bytes recorded by two clinics are two photos,
  and neither clinic can learn that the other holds them. The file itself is kept
  once in the content-addressed store (:mod:`pipeline.records.store`), whoever
  recorded it. ``visit_photos`` says which visit a photo belongs to (one visit per
  photo, of the photo's clinic).
* ``assessments`` are append-only and keyed by (photo, model, config hash): the
  same photo assessed again with the same model and settings is the same row,
  so re-running is idempotent, and a new model or new settings add history
  instead of replacing it. ``dots`` are an assessment's per-dot table.
* ``dot_links`` pair dots of two assessments (visits over time), ``review_decisions``
  are reviewers' verdicts on dots, appended (the latest one not undone counts).
* A reviewer's other acts on one photo (migration 0003; the photo review page):
  ``review_added_dots`` (dots the model missed), ``review_shapes`` (scalp, hair and
  background painted with a brush or a polygon) and ``review_done_marks`` ("every
  dot of this photo has been judged or added"). Like decisions they are appended and
  never deleted; an undo stamps ``undone_at``, which takes the act out of every count.

Constraints that SQL can state portably are in the tables (uniqueness, kinds,
session numbers); the slug format of region names is checked in Python because
SQLite has no regular expressions.

Database column names are lower-case snake case (unquoted SQL works on
PostgreSQL); :data:`DOT_FIELDS` maps the ``dots.csv`` column names onto them.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from data.visits import VIEWS, VISIT_KINDS

__all__ = [
    "DECISIONS",
    "DEFAULT_CLINIC",
    "DOT_FIELDS",
    "JOB_STATUSES",
    "MASK_LABELS",
    "ROLES",
    "SHAPE_KINDS",
    "VIEWS",
    "VISIT_KINDS",
    "AddedDot",
    "ApiToken",
    "Assessment",
    "Base",
    "Client",
    "Clinic",
    "Dot",
    "DotLink",
    "DoneMark",
    "Job",
    "LoginThrottle",
    "Photo",
    "Region",
    "ReviewDecision",
    "ReviewShape",
    "User",
    "UtcDateTime",
    "Visit",
    "VisitPhoto",
    "WebSession",
    "is_slug",
    "utc_now",
]

#: What a reviewer can say about a dot (``accept``: it is a dot, ``reject``: it is not).
DECISIONS = ("accept", "reject", "relabel")
#: Classes a reviewer paints on a photo, in the order of their mask values (0, 1, 2: docs/design.md).
MASK_LABELS = ("background", "scalp", "hair")
#: How a painted shape was drawn: a brush stroke (a thick line) or a filled polygon.
SHAPE_KINDS = ("brush", "polygon")
#: Roles of web app users: ``staff`` (their clinic's clients, visits, uploads, reports),
#: ``reviewer`` (their clinic's review queue and reports), ``admin`` (everything, every clinic).
ROLES = ("staff", "reviewer", "admin")
#: States of a background assessment job.
JOB_STATUSES = ("queued", "running", "done", "failed")
#: The clinic of clients created without one (single-clinic installations).
DEFAULT_CLINIC = "default"

_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

#: ``dots.csv`` column (pipeline.one_photo.pigment.DOT_COLUMNS) -> ``dots`` table column.
DOT_FIELDS = {
    "dot_id": "dot_index",
    "x": "x",
    "y": "y",
    "diameter_mm": "diameter_mm",
    "diameter_px": "diameter_px",
    "elongation": "elongation",
    "L": "lab_l",
    "a": "lab_a",
    "b": "lab_b",
    "skin_L": "skin_l",
    "skin_a": "skin_a",
    "skin_b": "skin_b",
    "contrast_dL": "contrast_dl",
    "dE00": "de00",
    "blue_index": "blue_index",
    "blue_shift": "blue_shift",
    "faded": "faded",
    "spread": "spread",
    "score": "score",
    "skin_samples": "skin_samples",
}


def is_slug(text: str) -> bool:
    """True for lower-case words of letters and digits joined by single hyphens (``crown``, ``left-temple``)."""
    return bool(_SLUG.fullmatch(text))


def utc_now() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A point in time, stored in UTC and always read back timezone-aware.

    Why: SQLite keeps no time zone (it would hand back naive datetimes),
    PostgreSQL does; this makes both behave the same. Naive values are refused.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: JSON documents: JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JsonDoc = sa.JSON().with_variant(JSONB(), "postgresql")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JsonDoc}


class Clinic(Base):
    """A tenant of the web app; single-clinic installations use ``default``."""

    __tablename__ = "clinics"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(sa.String(64), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    clients: Mapped[list[Client]] = relationship(back_populates="clinic")

    @validates("slug")
    def _check_slug(self, _key: str, value: str) -> str:
        if not is_slug(value):
            raise ValueError(f"clinic {value!r}: use lower-case letters, digits and hyphens")
        return value


class Client(Base):
    """A person treated by a clinic, known by the clinic's own id (``external_id``)."""

    __tablename__ = "clients"
    __table_args__ = (sa.UniqueConstraint("clinic_id", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(sa.ForeignKey("clinics.id"))
    external_id: Mapped[str] = mapped_column(sa.String(100))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    clinic: Mapped[Clinic] = relationship(back_populates="clients")
    regions: Mapped[list[Region]] = relationship(back_populates="client")
    visits: Mapped[list[Visit]] = relationship(back_populates="client")


class Region(Base):
    """An area of one client's scalp that is photographed over time (``crown``, ``vertex``, ``scar``...)."""

    __tablename__ = "regions"
    __table_args__ = (sa.UniqueConstraint("client_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(sa.ForeignKey("clients.id"))
    name: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    client: Mapped[Client] = relationship(back_populates="regions")

    @validates("name")
    def _check_name(self, _key: str, value: str) -> str:
        if not is_slug(value):
            raise ValueError(f"region {value!r}: use lower-case letters, digits and hyphens")
        return value


class Visit(Base):
    """One visit of a client for one region: its date and kind.

    ``session_number``: 1, 2, ... for ``session`` visits, optional for ``touch-up``
    visits, 0 for the others and for an unnumbered touch-up. It is 0 rather than
    NULL so that the uniqueness of a visit holds on every database (SQL treats
    NULLs as distinct in unique constraints).
    """

    __tablename__ = "visits"
    __table_args__ = (
        sa.UniqueConstraint("client_id", "region_id", "visit_date", "kind", "session_number"),
        sa.CheckConstraint(_in("kind", VISIT_KINDS), name="kind"),
        sa.CheckConstraint(
            "(kind = 'session' AND session_number >= 1) OR (kind = 'touch-up' AND session_number >= 0)"
            " OR (kind IN ('baseline', 'follow-up') AND session_number = 0)",
            name="session_number",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(sa.ForeignKey("clients.id"))
    region_id: Mapped[int] = mapped_column(sa.ForeignKey("regions.id"), index=True)
    visit_date: Mapped[date]
    kind: Mapped[str] = mapped_column(sa.String(16))
    session_number: Mapped[int] = mapped_column(default=0)
    notes: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    client: Mapped[Client] = relationship(back_populates="visits")
    region: Mapped[Region] = relationship()
    photos: Mapped[list[VisitPhoto]] = relationship(back_populates="visit")


class Photo(Base):
    """A photo file of one clinic, once per clinic: its sha256, where the store keeps it and
    what it shows. Every lookup of a photo by its sha256 names the clinic too.

    ``capture_time`` is the camera's wall-clock time (naive); ``capture_utc_offset_min``
    its UTC offset in minutes when the file states one.
    """

    __tablename__ = "photos"
    __table_args__ = (sa.UniqueConstraint("clinic_id", "sha256"), sa.CheckConstraint(_in("view", VIEWS), name="view"))

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(sa.ForeignKey("clinics.id"))
    #: Indexed on its own as well: the store's upkeep asks whether any clinic still holds a file.
    sha256: Mapped[str] = mapped_column(sa.String(64), index=True)
    stored_path: Mapped[str] = mapped_column(sa.String(255))
    original_name: Mapped[str] = mapped_column(sa.String(255))
    view: Mapped[str | None] = mapped_column(sa.String(16))
    capture_time: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=False))
    capture_utc_offset_min: Mapped[int | None]
    width: Mapped[int]
    height: Mapped[int]
    bytes: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    visit_link: Mapped[VisitPhoto | None] = relationship(back_populates="photo")
    assessments: Mapped[list[Assessment]] = relationship(back_populates="photo")


class VisitPhoto(Base):
    """Which visit a photo belongs to (exactly one: ``photo_id`` is unique)."""

    __tablename__ = "visit_photos"

    id: Mapped[int] = mapped_column(primary_key=True)
    visit_id: Mapped[int] = mapped_column(sa.ForeignKey("visits.id", ondelete="CASCADE"), index=True)
    photo_id: Mapped[int] = mapped_column(sa.ForeignKey("photos.id"), unique=True)
    added_at: Mapped[datetime] = mapped_column(default=utc_now)

    visit: Mapped[Visit] = relationship(back_populates="photos")
    photo: Mapped[Photo] = relationship(back_populates="visit_link")


class Assessment(Base):
    """One assessment of one photo by one model with one configuration (append-only).

    ``model_key`` is the model's sha256, or ``name@version`` for a model without
    one (the classical segmenter); with ``config_hash`` it makes re-running the
    same assessment a no-op. The JSON columns hold the ``assessment.json`` parts
    of the same names (docs/design.md).
    """

    __tablename__ = "assessments"
    __table_args__ = (sa.UniqueConstraint("photo_id", "model_key", "config_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(sa.ForeignKey("photos.id"))
    model_name: Mapped[str] = mapped_column(sa.String(200))
    model_version: Mapped[str] = mapped_column(sa.String(100))
    model_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    model_key: Mapped[str] = mapped_column(sa.String(320))
    config_hash: Mapped[str] = mapped_column(sa.String(64))
    schema: Mapped[str] = mapped_column(sa.String(64))
    view: Mapped[str | None] = mapped_column(sa.String(16))
    dot_count: Mapped[int]
    metrics: Mapped[dict[str, Any]]
    calibration: Mapped[dict[str, Any]]
    quality: Mapped[dict[str, Any]]
    warnings: Mapped[list[str]] = mapped_column(JsonDoc)
    timings: Mapped[dict[str, Any]]
    roi_polygon_px: Mapped[list[list[float]] | None] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    photo: Mapped[Photo] = relationship(back_populates="assessments")
    dots: Mapped[list[Dot]] = relationship(back_populates="assessment", order_by="Dot.dot_index")


class Dot(Base):
    """One SMP dot of one assessment (a row of ``dots.csv``; NaN is stored as NULL)."""

    __tablename__ = "dots"
    __table_args__ = (sa.UniqueConstraint("assessment_id", "dot_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int] = mapped_column(sa.ForeignKey("assessments.id", ondelete="CASCADE"))
    dot_index: Mapped[int]
    x: Mapped[float]
    y: Mapped[float]
    diameter_mm: Mapped[float | None]
    diameter_px: Mapped[float | None]
    elongation: Mapped[float | None]
    lab_l: Mapped[float | None]
    lab_a: Mapped[float | None]
    lab_b: Mapped[float | None]
    skin_l: Mapped[float | None]
    skin_a: Mapped[float | None]
    skin_b: Mapped[float | None]
    contrast_dl: Mapped[float | None]
    de00: Mapped[float | None]
    blue_index: Mapped[float | None]
    blue_shift: Mapped[bool]
    faded: Mapped[bool]
    spread: Mapped[bool]
    score: Mapped[float | None]
    skin_samples: Mapped[int | None]

    assessment: Mapped[Assessment] = relationship(back_populates="dots")


class DotLink(Base):
    """The same physical dot seen in two assessments (``from`` earlier, ``to`` later)."""

    __tablename__ = "dot_links"
    __table_args__ = (
        sa.UniqueConstraint("from_dot_id", "to_dot_id", "method"),
        sa.CheckConstraint("from_dot_id <> to_dot_id", name="distinct_dots"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    from_dot_id: Mapped[int] = mapped_column(sa.ForeignKey("dots.id", ondelete="CASCADE"))
    to_dot_id: Mapped[int] = mapped_column(sa.ForeignKey("dots.id", ondelete="CASCADE"), index=True)
    residual_mm: Mapped[float | None]
    method: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class ReviewDecision(Base):
    """A reviewer's verdict on a dot; appended, the latest one not undone counts.

    ``reviewer`` is the name shown; ``reviewer_user_id`` the web app user who decided
    (None for decisions recorded outside the web app, or once that user is deleted).
    ``undone_at``: when the reviewer took the decision back (it then counts nowhere).
    """

    __tablename__ = "review_decisions"
    __table_args__ = (
        sa.CheckConstraint(_in("decision", DECISIONS), name="decision"),
        sa.CheckConstraint("(decision = 'relabel') = (new_label IS NOT NULL)", name="new_label"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dot_id: Mapped[int] = mapped_column(sa.ForeignKey("dots.id", ondelete="CASCADE"), index=True)
    decision: Mapped[str] = mapped_column(sa.String(16))
    new_label: Mapped[str | None] = mapped_column(sa.String(64))
    reviewer: Mapped[str] = mapped_column(sa.String(200))
    note: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    reviewer_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    undone_at: Mapped[datetime | None]


# --------------------------------------------------------------------------- a reviewer's acts on a photo (0003)


class AddedDot(Base):
    """A dot the model missed, added by a reviewer at (x, y) in photo pixels (OpenCV convention:
    pixel centres at integers, in the upright photo the assessment's dots are in)."""

    __tablename__ = "review_added_dots"

    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int] = mapped_column(sa.ForeignKey("assessments.id", ondelete="CASCADE"), index=True)
    x: Mapped[float]
    y: Mapped[float]
    reviewer: Mapped[str] = mapped_column(sa.String(200))
    reviewer_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    undone_at: Mapped[datetime | None]


class ReviewShape(Base):
    """An area a reviewer painted as background, scalp or hair.

    ``points``: [[x, y], ...] in photo pixels; a ``brush`` stroke is the line through them,
    ``radius_px`` thick on each side with round ends; a ``polygon`` is filled. Later shapes
    paint over earlier ones.
    """

    __tablename__ = "review_shapes"
    __table_args__ = (
        sa.CheckConstraint(_in("label", MASK_LABELS), name="label"),
        sa.CheckConstraint(_in("kind", SHAPE_KINDS), name="kind"),
        sa.CheckConstraint("(kind = 'brush') = (radius_px IS NOT NULL)", name="radius"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int] = mapped_column(sa.ForeignKey("assessments.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(sa.String(16))
    kind: Mapped[str] = mapped_column(sa.String(16))
    points: Mapped[list[list[float]]] = mapped_column(JsonDoc)
    radius_px: Mapped[float | None]
    reviewer: Mapped[str] = mapped_column(sa.String(200))
    reviewer_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    undone_at: Mapped[datetime | None]


class DoneMark(Base):
    """A reviewer's word that every dot of the photo has been judged or added: the photo's dots
    may then teach the dot detector (its unreviewed detections stay unknown, not dots)."""

    __tablename__ = "review_done_marks"

    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int] = mapped_column(sa.ForeignKey("assessments.id", ondelete="CASCADE"), index=True)
    reviewer: Mapped[str] = mapped_column(sa.String(200))
    reviewer_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    undone_at: Mapped[datetime | None]


# --------------------------------------------------------------------------- the web app (migration 0002)


class User(Base):
    """A person (or a clinic system, through its API tokens) using the web app.

    ``password_hash`` is a self-describing KDF string (``scrypt$n$r$p$salt$hash``,
    :mod:`pipeline.web.auth`); the password itself is never stored. Every user belongs
    to one clinic (the tenant whose data they see); admins see every clinic.
    """

    __tablename__ = "users"
    __table_args__ = (sa.CheckConstraint(_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(sa.ForeignKey("clinics.id"), index=True)
    username: Mapped[str] = mapped_column(sa.String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(16))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    last_login_at: Mapped[datetime | None]

    clinic: Mapped[Clinic] = relationship()


class ApiToken(Base):
    """A bearer token of a user for machine access. Only the token's sha256 is kept (the
    token is 256 random bits, so a fast hash suffices); ``prefix`` identifies it to people."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()


class WebSession(Base):
    """A logged-in browser: the sha256 of the cookie's random token, whose user, until when."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class LoginThrottle(Base):
    """Failed logins per key (username and client address): the delay and lockout state."""

    __tablename__ = "login_throttle"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(400), unique=True)
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]


class Job(Base):
    """The background assessment of one photo (one row per photo; re-running resets it).

    ``progress`` goes from 0 to 1 through the ``stage`` names; ``error`` says why a
    ``failed`` job failed, in one line.
    """

    __tablename__ = "jobs"
    __table_args__ = (sa.CheckConstraint(_in("status", JOB_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(sa.ForeignKey("photos.id"), unique=True)
    visit_id: Mapped[int] = mapped_column(sa.ForeignKey("visits.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(default=0.0)
    stage: Mapped[str] = mapped_column(sa.String(64), default="queued")
    error: Mapped[str | None] = mapped_column(sa.Text)
    assessment_id: Mapped[int | None] = mapped_column(sa.ForeignKey("assessments.id", ondelete="SET NULL"))
    attempts: Mapped[int] = mapped_column(default=0)
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)
