"""Adding visits, photos and assessments to the records.

Rules (issue "Visits over time"):

* Everything asked is validated before anything is written, and every problem is
  reported at once (with the manifest row it comes from): unknown client, bad
  date, unknown kind, missing or unreadable photo, the same photo twice, a photo
  that already belongs to another visit of the same clinic.
* A photo is a clinic's: the same bytes recorded by another clinic are another
  photo (its file is shared in the store), and nothing here tells one clinic
  that another holds them. Every lookup by sha256 names the clinic.
* One visit is written in one transaction: client, region, visit, its photos
  (file into the store, row into the database) and, optionally, their
  assessments. An error or a crash half-way leaves no visit, no photo rows and
  no photo files this attempt added.
* Re-running is a no-op: a photo already in the same visit is reported as
  "already present"; an assessment already stored for the same photo, model and
  configuration is not stored again.
* Several processes may ingest into one database at once: rows are created with
  ``INSERT ... ON CONFLICT DO NOTHING`` then read back, so a row another process
  created first is simply found. Photos are handled under a per-photo lock
  (SQLite: the database write lock every transaction takes; PostgreSQL: an
  advisory lock on the sha256), so the "is this photo in a visit already" check
  and the insert cannot interleave, and a failed ingest never deletes a file
  another process has just recorded.

Only SQLite and PostgreSQL are supported (the dialects with ``ON CONFLICT``).

What is asked is read in :mod:`pipeline.records.parse` (fields, photo files, manifests) into the values
of :mod:`pipeline.records.entries`; assessments, dot links and review decisions are stored by
:mod:`pipeline.records.assessments`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from pipeline.records.assessments import _store_assessment
from pipeline.records.db import Records
from pipeline.records.entries import (
    Assess,
    ClientSummary,
    ImportResult,
    IngestError,
    IngestResult,
    PhotoEntry,
    PhotoFile,
    Problem,
    VisitKey,
    _Assessed,
)
from pipeline.records.parse import _parse_view, _photo_entry, _visit_key, read_manifest
from pipeline.records.rows import _ensure, _insert
from pipeline.records.schema import (
    DEFAULT_CLINIC,
    Client,
    Clinic,
    Photo,
    Region,
    Visit,
    VisitPhoto,
)
from pipeline.records.store import PhotoStore

__all__ = ["add_visit", "import_manifest", "list_clients", "sweep_store"]

#: Attempts at a visit's transaction when it loses a race (unique key taken, deadlock).
_ATTEMPTS = 3


# --------------------------------------------------------------------------- checks against the batch and the records


def _check_batch(entries: Sequence[PhotoEntry]) -> list[Problem]:
    """The same photo twice, or one visit given two different notes."""
    problems = []
    first: dict[str, PhotoEntry] = {}
    notes: dict[VisitKey, PhotoEntry] = {}
    for e in entries:
        other = first.setdefault(e.photo.sha256, e)
        if other is not e:
            where = f"row {other.row} ({other.name})" if other.row is not None else other.name
            problems.append(Problem(f"duplicate photo: {e.name} is the same photo as {where}", e.row))
        if e.notes:
            prev = notes.setdefault(e.key, e)
            if prev.notes != e.notes:
                problems.append(Problem(f"visit {e.key} has different notes on row {prev.row}", e.row))
    return problems


def _check_records(session: Session, entries: Sequence[PhotoEntry], create_client: bool) -> list[Problem]:
    """Unknown clinics and clients (unless they are to be created), photos in another visit of their clinic."""
    problems = []
    known: dict[tuple[str, str], bool] = {}
    for e in entries:
        who = (e.key.clinic, e.key.client)
        if who not in known:
            known[who] = _client_id(session, *who) is not None
            if not known[who] and not create_client:
                in_clinic = "" if who[0] == DEFAULT_CLINIC else f" in clinic {who[0]!r}"
                problems.append(Problem(f"unknown client {who[1]!r}{in_clinic} (use --create-client to add it)", e.row))
    placed = {}
    for clinic in sorted({e.key.clinic for e in entries}):
        shas = sorted({e.photo.sha256 for e in entries if e.key.clinic == clinic})
        placed.update({(clinic, sha): key for sha, key in _visits_of_photos(session, clinic, shas)})
    for e in entries:
        key = placed.get((e.key.clinic, e.photo.sha256))
        if key is not None and key != e.key:
            problems.append(Problem(f"{e.name} is already in visit {key}", e.row))
    return problems


def _client_id(session: Session, clinic: str, client: str) -> int | None:
    return session.scalar(sa.select(Client.id).join(Clinic).where(Clinic.slug == clinic, Client.external_id == client))


def _visits_of_photos(session: Session, clinic: str, shas: Sequence[str]) -> Iterable[tuple[str, VisitKey]]:
    """(sha256, visit) of those of ``shas`` that ``clinic`` has recorded in a visit."""
    stmt = (
        sa.select(
            Photo.sha256,
            Clinic.slug,
            Client.external_id,
            Region.name,
            Visit.visit_date,
            Visit.kind,
            Visit.session_number,
        )
        .join(VisitPhoto, VisitPhoto.photo_id == Photo.id)
        .join(Visit, Visit.id == VisitPhoto.visit_id)
        .join(Region, Region.id == Visit.region_id)
        .join(Client, Client.id == Visit.client_id)
        .join(Clinic, Clinic.id == Client.clinic_id)
        .where(Clinic.slug == clinic, Photo.clinic_id == Clinic.id)
    )
    for i in range(0, len(shas), 500):  # bounded IN lists
        for sha, slug, client, region, day, kind, number in session.execute(
            stmt.where(Photo.sha256.in_(shas[i : i + 500]))
        ):
            yield sha, VisitKey(slug, client, region, day, kind, number)


def _validate(records: Records, entries: Sequence[PhotoEntry], create_client: bool) -> list[Problem]:
    with records.session(read_only=True) as session:
        return _check_batch(entries) + _check_records(session, entries, create_client)


# --------------------------------------------------------------------------- writing


def _lock_photo(session: Session, sha256: str) -> None:
    """Serialise work on one photo across processes until the transaction ends. SQLite
    needs nothing: every transaction holds the database's write lock (pipeline.records.db)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(sha256[:15], 16)})


def _split_capture_time(t: datetime | None) -> tuple[datetime | None, int | None]:
    if t is None or t.tzinfo is None:
        return t, None
    offset = t.utcoffset()
    return t.replace(tzinfo=None), None if offset is None else round(offset.total_seconds() / 60)


def _write_visit(
    session: Session,
    store: PhotoStore,
    key: VisitKey,
    notes: str | None,
    entries: Sequence[PhotoEntry],
    create_client: bool,
    assessed: _Assessed,
    created_files: list[str],
) -> IngestResult:
    """The body of one visit's transaction; appends to ``created_files`` each store file it creates."""
    client_id: int | None
    if create_client:
        clinic_id, _ = _ensure(session, Clinic, {"slug": key.clinic}, {"name": key.clinic})
        client_id, _ = _ensure(session, Client, {"clinic_id": clinic_id, "external_id": key.client})
    else:
        client_id = _client_id(session, key.clinic, key.client)
        if client_id is None:  # removed since it was validated
            raise IngestError([Problem(f"unknown client {key.client!r}")])
        clinic_id = session.scalars(sa.select(Client.clinic_id).where(Client.id == client_id)).one()
    region_id, _ = _ensure(session, Region, {"client_id": client_id, "name": key.region})
    visit_id, visit_created = _ensure(
        session,
        Visit,
        {
            "client_id": client_id,
            "region_id": region_id,
            "visit_date": key.date,
            "kind": key.kind,
            "session_number": key.session_number,
        },
        {"notes": notes},
    )
    added, skipped, n_assessed = [], [], 0
    # a fixed order of photo locks: two processes never wait on each other in a cycle
    for e in sorted(entries, key=lambda e: e.photo.sha256):
        p = e.photo
        _lock_photo(session, p.sha256)
        stored = store.put(p.path, p.sha256)
        if stored.created:
            created_files.append(stored.relpath)
        capture_time, offset = _split_capture_time(p.capture_time)
        photo_id, _ = _ensure(
            session,
            Photo,
            {"clinic_id": clinic_id, "sha256": p.sha256},
            {
                "stored_path": stored.relpath,
                "original_name": p.path.name[:255],
                "view": e.view,
                "capture_time": capture_time,
                "capture_utc_offset_min": offset,
                "width": p.width,
                "height": p.height,
                "bytes": p.size,
            },
        )
        in_visit = session.scalar(sa.select(VisitPhoto.visit_id).where(VisitPhoto.photo_id == photo_id))
        if in_visit is None:
            _insert(session, VisitPhoto, {"visit_id": visit_id, "photo_id": photo_id})
            added.append(e.name)
        elif in_visit == visit_id:
            skipped.append(e.name)
        else:
            raise IngestError([Problem(f"{e.name} is already in another visit", e.row)])
        if p.sha256 in assessed:
            doc, dots = assessed[p.sha256]
            n_assessed += _store_assessment(session, photo_id, p.sha256, doc, dots).created
    order = {e.name: i for i, e in enumerate(entries)}
    return IngestResult(
        key,
        visit_id,
        visit_created,
        tuple(sorted(added, key=order.__getitem__)),
        tuple(sorted(skipped, key=order.__getitem__)),
        n_assessed,
    )


def _forget_files(records: Records, store: PhotoStore, relpaths: Sequence[str]) -> None:
    """After a failed transaction: delete the files it stored unless a record now points to them
    (another process may have recorded the same photo meanwhile). Any clinic's record keeps
    the file: the store holds the bytes once for every clinic."""
    try:
        with records.transaction() as session:
            for rel in relpaths:
                sha = Path(rel).name[:64]
                _lock_photo(session, sha)
                if session.scalar(sa.select(Photo.id).where(Photo.sha256 == sha)) is None:
                    store.remove(rel)
    except (SQLAlchemyError, OSError):
        pass  # the original error matters more; PhotoStore.sweep removes what is left


def _transient(exc: Exception) -> bool:
    """A lost race worth retrying: a unique key taken meanwhile, a deadlock, a serialisation failure."""
    if isinstance(exc, IntegrityError):
        return True
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in ("40001", "40P01")


def _ingest_visit(
    records: Records,
    store: PhotoStore,
    key: VisitKey,
    notes: str | None,
    entries: Sequence[PhotoEntry],
    create_client: bool,
    assess: Assess | None,
) -> IngestResult:
    """Write one visit in one transaction (retried when it loses a race with another process);
    on failure, remove the photo files it stored."""
    assessed = _assess_new(records, entries, assess) if assess else {}
    for attempt in range(1, _ATTEMPTS + 1):
        created: list[str] = []
        try:
            with records.transaction() as session:
                return _write_visit(session, store, key, notes, entries, create_client, assessed, created)
        except BaseException as exc:
            if created:
                _forget_files(records, store, created)
            if attempt < _ATTEMPTS and isinstance(exc, (IntegrityError, OperationalError)) and _transient(exc):
                continue
            raise
    raise AssertionError("unreachable")


def _assess_new(records: Records, entries: Sequence[PhotoEntry], assess: Assess) -> _Assessed:
    """Assess the photos not yet in any visit, before the transaction (it takes seconds a photo,
    and the write lock must not be held that long). Only the JSON and the dots are kept."""
    with records.session(read_only=True) as session:
        placed = {
            sha
            for clinic in {e.key.clinic for e in entries}
            for sha, _ in _visits_of_photos(
                session, clinic, [e.photo.sha256 for e in entries if e.key.clinic == clinic]
            )
        }
    out = {}
    for e in entries:
        if e.photo.sha256 not in placed and e.photo.sha256 not in out:
            a = assess(e.photo.path)
            if a is not None:
                out[e.photo.sha256] = (a.to_json(), a.dots)
    return out


def _group(entries: Sequence[PhotoEntry]) -> list[tuple[VisitKey, list[PhotoEntry]]]:
    groups: dict[VisitKey, list[PhotoEntry]] = {}
    for e in entries:
        groups.setdefault(e.key, []).append(e)
    return list(groups.items())


def add_visit(
    records: Records,
    store: PhotoStore,
    *,
    client: str,
    region: str,
    date: str | date,
    kind: str,
    photos: Sequence[str | Path | PhotoFile] = (),
    session: int | None = None,
    clinic: str = DEFAULT_CLINIC,
    view: str | None = None,
    notes: str | None = None,
    create_client: bool = False,
    assess: Assess | None = None,
) -> IngestResult:
    """Add one visit of ``client`` for ``region`` with its ``photos``, in one transaction.

    The client must exist unless ``create_client``. ``assess``, if given, is called
    for each photo new to the records and its result stored with the visit. A photo
    given as a :class:`PhotoFile` was inspected by the caller (:func:`inspect_photo`, or
    the same checks) and is not decoded again; its name is its path.
    Raises :class:`IngestError` (nothing written) listing every problem found.
    """
    key, problems = _visit_key(clinic, client, region, date, kind, session, None)
    try:
        view = _parse_view(view)
    except ValueError as exc:
        problems.append(Problem(str(exc)))
    entries = []
    for path in photos:
        given = path if isinstance(path, PhotoFile) else Path(path)
        name = str(path.path) if isinstance(path, PhotoFile) else str(path)
        entry, found = _photo_entry(given, name, key, view, notes or None, None)
        problems += found
        if entry is not None:
            entries.append(entry)
    if not problems:
        problems = _validate(records, entries, create_client)
    if problems:
        raise IngestError(problems)
    assert key is not None
    return _ingest_visit(records, store, key, notes or None, entries, create_client, assess)


def import_manifest(
    records: Records,
    store: PhotoStore,
    csv_path: str | Path,
    *,
    clinic: str = DEFAULT_CLINIC,
    create_client: bool = False,
    assess: Assess | None = None,
) -> ImportResult:
    """Import a manifest CSV (columns :data:`MANIFEST_COLUMNS`): every row is checked first and,
    if any has a problem, nothing is written and the problems come back with their row
    numbers. Otherwise each visit is ingested in its own transaction (a crash leaves whole
    visits only, and importing again completes the rest)."""
    entries, problems = read_manifest(csv_path, clinic=clinic)
    problems += _validate(records, entries, create_client)
    if problems:
        return ImportResult(problems=tuple(sorted(problems, key=lambda p: p.row or 0)))
    return ImportResult(
        visits=tuple(
            _ingest_visit(
                records, store, key, next((e.notes for e in group if e.notes), None), group, create_client, assess
            )
            for key, group in _group(entries)
        )
    )


# --------------------------------------------------------------------------- queries and upkeep


def list_clients(session: Session, clinic: str | None = None) -> list[ClientSummary]:
    """Every client (of ``clinic``, or all), with counts of regions, visits and photos."""
    regions = sa.select(Region.client_id, sa.func.count().label("n")).group_by(Region.client_id).subquery()
    visits = (
        sa.select(Visit.client_id, sa.func.count().label("n"), sa.func.max(Visit.visit_date).label("last"))
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
            Clinic.slug,
            Client.external_id,
            sa.func.coalesce(regions.c.n, 0),
            sa.func.coalesce(visits.c.n, 0),
            sa.func.coalesce(photos.c.n, 0),
            visits.c.last,
        )
        .join(Clinic, Clinic.id == Client.clinic_id)
        .outerjoin(regions, regions.c.client_id == Client.id)
        .outerjoin(visits, visits.c.client_id == Client.id)
        .outerjoin(photos, photos.c.client_id == Client.id)
        .order_by(Clinic.slug, Client.external_id)
    )
    if clinic is not None:
        stmt = stmt.where(Clinic.slug == clinic)
    return [ClientSummary(*row) for row in session.execute(stmt)]


def sweep_store(records: Records, store: PhotoStore, *, min_age_s: float = 3600.0) -> tuple[str, ...]:
    """Delete store files no photo record points to (left by a killed process), older than ``min_age_s``."""
    with records.session(read_only=True) as session:
        referenced = set(session.scalars(sa.select(Photo.stored_path)))
    return store.sweep(referenced, min_age_s=min_age_s)
