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
"""
from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from data.metrics import FLAG_NAMES
from pipeline.errors import UserError
from pipeline.records.db import Records
from pipeline.records.schema import (
    DECISIONS,
    DEFAULT_CLINIC,
    DOT_FIELDS,
    VIEWS,
    VISIT_KINDS,
    Assessment,
    Client,
    Clinic,
    Dot,
    DotLink,
    Photo,
    Region,
    ReviewDecision,
    Visit,
    VisitPhoto,
    is_slug,
)
from pipeline.records.store import PhotoStore

if TYPE_CHECKING:  # pandas is only handed in (dots tables); importing it here would slow every CLI start
    import pandas as pd

__all__ = [
    "MANIFEST_COLUMNS", "AssessmentLike", "ClientSummary", "ImportResult", "IngestError", "IngestResult",
    "PhotoEntry", "PhotoFile", "Problem", "StoredAssessment", "VisitKey", "add_visit", "import_manifest",
    "inspect_photo", "list_clients", "parse_date", "parse_kind", "parse_region", "read_manifest", "record_review",
    "store_assessment", "store_dot_links", "store_photo_assessment", "sweep_store",
]

#: Manifest columns: required first, then optional (``session``: the session number;
#: ``view``: closeup|global; ``clinic``: defaults to the importer's; ``notes``: of the visit).
MANIFEST_COLUMNS = ("client", "region", "date", "kind", "photo", "session", "view", "clinic", "notes")
_REQUIRED_COLUMNS = MANIFEST_COLUMNS[:5]
#: Attempts at a visit's transaction when it loses a race (unique key taken, deadlock).
_ATTEMPTS = 3
_T = TypeVar("_T")


# --------------------------------------------------------------------------- results and errors

@dataclass(frozen=True)
class Problem:
    """One reason why nothing was ingested; ``row``: the manifest line (1 = header), None outside a manifest."""

    message: str
    row: int | None = None

    def __str__(self) -> str:
        return self.message if self.row is None else f"row {self.row}: {self.message}"


class IngestError(UserError):
    """Nothing was ingested, for the reasons in ``problems`` (joined on one line in the message)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class VisitKey:
    """What identifies a visit (``session_number`` 0 = none)."""

    clinic: str
    client: str
    region: str
    date: date
    kind: str
    session_number: int = 0

    def __str__(self) -> str:
        who = self.client if self.clinic == DEFAULT_CLINIC else f"{self.clinic}/{self.client}"
        number = f" {self.session_number}" if self.session_number else ""
        return f"{who}/{self.region} {self.date.isoformat()} {self.kind}{number}"


@dataclass(frozen=True)
class PhotoFile:
    """A photo file checked to be a usable photo, with what the records keep of it."""

    path: Path
    sha256: str
    width: int
    height: int
    size: int
    capture_time: datetime | None


@dataclass(frozen=True)
class IngestResult:
    """One visit ingested: ``added`` and ``skipped`` (already present) are photo names as given."""

    visit: VisitKey
    visit_id: int
    visit_created: bool
    added: tuple[str, ...]
    skipped: tuple[str, ...]
    assessments_added: int = 0


@dataclass(frozen=True)
class ImportResult:
    """A manifest import: the visits ingested, or the problems that stopped it (then nothing was written)."""

    visits: tuple[IngestResult, ...] = ()
    problems: tuple[Problem, ...] = ()

    @property
    def added(self) -> int:
        return sum(len(v.added) for v in self.visits)

    @property
    def skipped(self) -> int:
        return sum(len(v.skipped) for v in self.visits)


@dataclass(frozen=True)
class StoredAssessment:
    id: int
    created: bool


@dataclass(frozen=True)
class ClientSummary:
    clinic: str
    client: str
    regions: int
    visits: int
    photos: int
    last_visit: date | None


class AssessmentLike(Protocol):
    """What :func:`add_visit` needs of an assessment (``pipeline.one_photo.assess.Assessment`` is one)."""

    dots: pd.DataFrame

    def to_json(self) -> dict[str, Any]: ...


#: Assesses one photo file; None when it cannot (the photo is still ingested).
Assess = Callable[[Path], AssessmentLike | None]
#: Assessments made before a visit's transaction: photo sha256 -> (assessment.json, dots table).
_Assessed: TypeAlias = "dict[str, tuple[dict[str, Any], pd.DataFrame | None]]"


@dataclass(frozen=True)
class PhotoEntry:
    """One photo of one visit as asked for: a manifest row or one photo of :func:`add_visit`."""

    row: int | None
    name: str
    key: VisitKey
    photo: PhotoFile
    view: str | None
    notes: str | None


# --------------------------------------------------------------------------- parsing (pure)

def parse_date(value: str | date) -> date:
    """A visit date: a ``date`` or ``YYYY-MM-DD`` text."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = value.strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"bad date {value!r}: use YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"bad date {value!r}: no such day") from None


def parse_kind(kind: str, session: int | str | None = None) -> tuple[str, int]:
    """``(kind, session number)`` from a kind (``follow-up``, ``Session 2``, ``touch_up``...) and an
    optional separate session number. Sessions need a number >= 1, touch-ups may have one,
    baselines and follow-ups have none (0)."""
    text = re.sub(r"[\s_]+", "-", kind.strip().lower())
    text = {"followup": "follow-up", "touchup": "touch-up"}.get(text, text)
    m = re.fullmatch(r"(session|touch-?up)-?(\d+)", text)
    embedded = None
    if m:
        text, embedded = ("session" if m[1] == "session" else "touch-up"), int(m[2])
    if text not in VISIT_KINDS:
        raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(VISIT_KINDS)}")
    number = None
    if session is not None and str(session).strip() != "":
        try:
            number = int(str(session).strip())
        except ValueError:
            raise ValueError(f"bad session number {session!r}: use a whole number") from None
        if embedded is not None and number != embedded:
            raise ValueError(f"kind {kind!r} and session number {number} disagree")
    number = embedded if number is None else number
    if text == "session" and (number is None or number < 1):
        raise ValueError("a 'session' visit needs its session number (1, 2, ...)")
    if text == "touch-up" and number is not None and number < 0:
        raise ValueError(f"bad session number {number}")
    if text in ("baseline", "follow-up") and number:
        raise ValueError(f"a {text!r} visit has no session number")
    return text, number or 0


def parse_region(text: str) -> str:
    """A region name as a slug: ``Crown`` -> ``crown``, ``left temple`` -> ``left-temple``."""
    slug = re.sub(r"[\s_]+", "-", text.strip().lower())
    if not is_slug(slug) or len(slug) > 64:
        raise ValueError(f"bad region {text!r}: use letters, digits and hyphens (crown, vertex, left-temple...)")
    return slug


def _parse_clinic(text: str) -> str:
    slug = text.strip().lower()
    if not is_slug(slug) or len(slug) > 64:
        raise ValueError(f"bad clinic {text!r}: use lower-case letters, digits and hyphens")
    return slug


def _parse_client(text: str) -> str:
    client = text.strip()
    if not client or len(client) > 100:
        raise ValueError(f"bad client id {text!r}: 1 to 100 characters")
    return client


def _parse_view(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    view = text.strip().lower()
    if view not in VIEWS:
        raise ValueError(f"unknown view {text!r}: use {' or '.join(VIEWS)}")
    return view


def _visit_key(clinic: str, client: str, region: str, day: str | date, kind: str,
               session: int | str | None, row: int | None) -> tuple[VisitKey | None, list[Problem]]:
    """Parse a visit's fields, collecting every problem rather than stopping at the first."""
    problems: list[Problem] = []

    def attempt(parse: Callable[[], _T]) -> _T | None:
        try:
            return parse()
        except ValueError as exc:
            problems.append(Problem(str(exc), row))
            return None

    parts = (attempt(lambda: _parse_clinic(clinic)), attempt(lambda: _parse_client(client)),
             attempt(lambda: parse_region(region)), attempt(lambda: parse_date(day)),
             attempt(lambda: parse_kind(kind, session)))
    if problems:
        return None, problems
    clinic_, client_, region_, day_, (kind_, number) = parts  # type: ignore[misc]
    return VisitKey(clinic_, client_, region_, day_, kind_, number), []


def inspect_photo(path: str | Path) -> PhotoFile:
    """Load ``path`` as the assessment would (refusing what is not a usable photo:
    :class:`pipeline.one_photo.loading.PhotoError`) and keep what the records need of it."""
    from pipeline.one_photo.loading import load_photo

    photo = load_photo(path)
    return PhotoFile(path=Path(path), sha256=photo.sha256, width=photo.width, height=photo.height,
                     size=Path(path).stat().st_size, capture_time=photo.capture_time)


def _photo_entry(path: Path | PhotoFile, name: str, key: VisitKey | None, view: str | None, notes: str | None,
                 row: int | None) -> tuple[PhotoEntry | None, list[Problem]]:
    from pipeline.one_photo.loading import PhotoError

    if isinstance(path, PhotoFile):  # inspected by the caller already (the web app's upload check)
        if not path.path.is_file():
            return None, [Problem(f"no such photo file: {name}", row)]
        return (None if key is None else PhotoEntry(row, name, key, path, view, notes)), []
    if not path.is_file():
        return None, [Problem(f"no such photo file: {name}", row)]
    try:
        photo = inspect_photo(path)
    except PhotoError as exc:
        return None, [Problem(f"{name}: {exc.reason}", row)]
    if key is None:
        return None, []
    return PhotoEntry(row, name, key, photo, view, notes), []


def read_csv_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """A manifest CSV's lower-cased header and its rows with their line numbers; one clear
    :class:`UserError` when the file is missing or not readable CSV."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            return header, [(reader.line_num, raw) for raw in reader]
    except FileNotFoundError:
        raise UserError(f"{csv_path}: no such manifest file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{csv_path}: not a readable CSV manifest ({exc})") from None


def read_manifest(csv_path: str | Path, *, clinic: str = DEFAULT_CLINIC) -> tuple[list[PhotoEntry], list[Problem]]:
    """Parse and check a manifest CSV on its own (no database): one entry per valid row, and
    every problem with its row number. Photo paths are relative to the manifest's folder."""
    csv_path = Path(csv_path)
    header, rows = read_csv_rows(csv_path)
    missing = [c for c in _REQUIRED_COLUMNS if c not in header]
    if missing:
        return [], [Problem(f"missing column(s) {', '.join(missing)} (columns: {', '.join(MANIFEST_COLUMNS)})", 1)]
    problems = [Problem(f"unknown column {c!r} (columns: {', '.join(MANIFEST_COLUMNS)})", 1)
                for c in header if c not in MANIFEST_COLUMNS]
    entries = []
    for line, raw in rows:
        cells = {k: (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(cells.values()) and None not in raw:
            continue  # blank line
        if None in raw:
            problems.append(Problem("more cells than columns", line))
            continue
        key, found = _visit_key(cells.get("clinic") or clinic, cells["client"], cells["region"], cells["date"],
                                cells["kind"], cells.get("session"), line)
        view = None
        try:
            view = _parse_view(cells.get("view"))
        except ValueError as exc:
            found.append(Problem(str(exc), line))
        if not cells["photo"]:
            found.append(Problem("no photo given", line))
        else:
            entry, photo_problems = _photo_entry(csv_path.parent / cells["photo"], cells["photo"],
                                                 None if found else key, view, cells.get("notes") or None, line)
            found += photo_problems
            if entry is not None:
                entries.append(entry)
        problems += found
    return entries, problems


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
                problems.append(Problem(f"unknown client {who[1]!r}{in_clinic} (use --create-client to add it)",
                                        e.row))
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
    stmt = (sa.select(Photo.sha256, Clinic.slug, Client.external_id, Region.name, Visit.visit_date, Visit.kind,
                      Visit.session_number)
            .join(VisitPhoto, VisitPhoto.photo_id == Photo.id).join(Visit, Visit.id == VisitPhoto.visit_id)
            .join(Region, Region.id == Visit.region_id).join(Client, Client.id == Visit.client_id)
            .join(Clinic, Clinic.id == Client.clinic_id).where(Clinic.slug == clinic, Photo.clinic_id == Clinic.id))
    for i in range(0, len(shas), 500):  # bounded IN lists
        for sha, *key in session.execute(stmt.where(Photo.sha256.in_(shas[i:i + 500]))):
            yield sha, VisitKey(*key)


def _validate(records: Records, entries: Sequence[PhotoEntry], create_client: bool) -> list[Problem]:
    with records.session(read_only=True) as session:
        return _check_batch(entries) + _check_records(session, entries, create_client)


# --------------------------------------------------------------------------- writing

def _insert(session: Session, model: type, values: Mapping[str, Any]) -> int | None:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING id``: the new row's id, None if a row with
    the same unique key exists. (RETURNING, not the row count: drivers report -1 for some.)"""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        stmt = sqlite.insert(model).values(**values).on_conflict_do_nothing()
    elif dialect == "postgresql":
        stmt = postgresql.insert(model).values(**values).on_conflict_do_nothing()
    else:
        raise ValueError(f"records on {dialect!r} are not supported (use SQLite or PostgreSQL)")
    return session.execute(stmt.returning(model.id)).scalar()  # type: ignore[attr-defined]


def _ensure(session: Session, model: type, keys: Mapping[str, Any],
            values: Mapping[str, Any] = {}) -> tuple[int, bool]:
    """The id of the row of ``model`` with ``keys``, inserted (with ``values``) if missing; and
    whether this call inserted it. A row another process inserts meanwhile is found, not duplicated."""
    find = sa.select(model.id).filter_by(**keys)  # type: ignore[attr-defined]
    found = session.scalar(find)
    if found is not None:
        return found, False
    new_id = _insert(session, model, {**keys, **values})
    return (new_id, True) if new_id is not None else (session.scalars(find).one(), False)


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


def _write_visit(session: Session, store: PhotoStore, key: VisitKey, notes: str | None, entries: Sequence[PhotoEntry],
                 create_client: bool, assessed: _Assessed, created_files: list[str]) -> IngestResult:
    """The body of one visit's transaction; appends to ``created_files`` each store file it creates."""
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
        session, Visit, {"client_id": client_id, "region_id": region_id, "visit_date": key.date, "kind": key.kind,
                         "session_number": key.session_number}, {"notes": notes})
    added, skipped, n_assessed = [], [], 0
    # a fixed order of photo locks: two processes never wait on each other in a cycle
    for e in sorted(entries, key=lambda e: e.photo.sha256):
        p = e.photo
        _lock_photo(session, p.sha256)
        stored = store.put(p.path, p.sha256)
        if stored.created:
            created_files.append(stored.relpath)
        capture_time, offset = _split_capture_time(p.capture_time)
        photo_id, _ = _ensure(session, Photo, {"clinic_id": clinic_id, "sha256": p.sha256}, {
            "stored_path": stored.relpath, "original_name": p.path.name[:255], "view": e.view,
            "capture_time": capture_time, "capture_utc_offset_min": offset, "width": p.width, "height": p.height,
            "bytes": p.size})
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
    return IngestResult(key, visit_id, visit_created, tuple(sorted(added, key=order.__getitem__)),
                        tuple(sorted(skipped, key=order.__getitem__)), n_assessed)


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


def _ingest_visit(records: Records, store: PhotoStore, key: VisitKey, notes: str | None,
                  entries: Sequence[PhotoEntry], create_client: bool, assess: Assess | None) -> IngestResult:
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
        placed = {sha for clinic in {e.key.clinic for e in entries}
                  for sha, _ in _visits_of_photos(session, clinic, [e.photo.sha256 for e in entries
                                                                    if e.key.clinic == clinic])}
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


def add_visit(records: Records, store: PhotoStore, *, client: str, region: str, date: str | date, kind: str,
              photos: Sequence[str | Path | PhotoFile] = (), session: int | None = None, clinic: str = DEFAULT_CLINIC,
              view: str | None = None, notes: str | None = None, create_client: bool = False,
              assess: Assess | None = None) -> IngestResult:
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


def import_manifest(records: Records, store: PhotoStore, csv_path: str | Path, *, clinic: str = DEFAULT_CLINIC,
                    create_client: bool = False, assess: Assess | None = None) -> ImportResult:
    """Import a manifest CSV (columns :data:`MANIFEST_COLUMNS`): every row is checked first and,
    if any has a problem, nothing is written and the problems come back with their row
    numbers. Otherwise each visit is ingested in its own transaction (a crash leaves whole
    visits only, and importing again completes the rest)."""
    entries, problems = read_manifest(csv_path, clinic=clinic)
    problems += _validate(records, entries, create_client)
    if problems:
        return ImportResult(problems=tuple(sorted(problems, key=lambda p: (p.row or 0))))
    return ImportResult(visits=tuple(
        _ingest_visit(records, store, key, next((e.notes for e in group if e.notes), None), group, create_client,
                      assess)
        for key, group in _group(entries)))


# --------------------------------------------------------------------------- assessments, links, reviews

def _plain(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null (PostgreSQL's JSON has no NaN), numpy scalars Python."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_BOOL_DOT_FIELDS = set(FLAG_NAMES)
_INT_DOT_FIELDS = {"dot_index", "skin_samples"}


def _dot_rows(assessment_id: int, dots: pd.DataFrame) -> list[dict[str, Any]]:
    """``dots.csv``-shaped table -> rows of the ``dots`` table (NaN -> NULL)."""
    frame = dots.rename(columns=DOT_FIELDS)
    frame = frame[[c for c in DOT_FIELDS.values() if c in frame.columns]]
    missing = {"x", "y"} - set(frame.columns)
    if missing:
        raise ValueError(f"dots table without column(s) {', '.join(sorted(missing))}")
    if "dot_index" not in frame.columns:
        frame = frame.assign(dot_index=range(len(frame)))
    rows = []
    for rec in frame.astype(object).where(frame.notna(), None).to_dict("records"):
        row: dict[str, Any] = {"assessment_id": assessment_id}
        for k, v in rec.items():
            if k in _BOOL_DOT_FIELDS:
                row[k] = bool(v)
            elif v is None:
                row[k] = None
            else:
                row[k] = int(v) if k in _INT_DOT_FIELDS else float(v)
        for flag in _BOOL_DOT_FIELDS:
            row.setdefault(flag, False)
        rows.append(row)
    return rows


def store_assessment(session: Session, photo_sha: str, doc: Mapping[str, Any],
                     dots: pd.DataFrame | None = None, *, clinic: str = DEFAULT_CLINIC) -> StoredAssessment:
    """Store one ``assessment.json`` document (and its dots) for the photo ``photo_sha`` of ``clinic``.

    Idempotent by (photo, model, config hash): an assessment already stored is
    left as is and its id returned with ``created=False``; a new model or
    configuration adds a row (history is kept). A photo whose view was not given
    gets the assessment's. Runs in the caller's transaction.
    """
    clinic = clinic.strip().lower()
    photo_id = session.scalar(sa.select(Photo.id).join(Clinic, Clinic.id == Photo.clinic_id)
                              .where(Photo.sha256 == photo_sha, Clinic.slug == clinic))
    if photo_id is None:
        raise LookupError(f"photo {photo_sha[:12]}... is not in the records of clinic {clinic!r}")
    return _store_assessment(session, photo_id, photo_sha, doc, dots)


def store_photo_assessment(session: Session, photo_id: int, doc: Mapping[str, Any],
                           dots: pd.DataFrame | None = None) -> StoredAssessment:
    """:func:`store_assessment` for the photo row ``photo_id`` (a caller that has the row, not only the hash)."""
    sha = session.scalar(sa.select(Photo.sha256).where(Photo.id == photo_id))
    if sha is None:
        raise LookupError(f"photo {photo_id} is not in the records")
    return _store_assessment(session, photo_id, sha, doc, dots)


def _store_assessment(session: Session, photo_id: int, photo_sha: str, doc: Mapping[str, Any],
                      dots: pd.DataFrame | None) -> StoredAssessment:
    doc_sha = (doc.get("photo") or {}).get("sha256")
    if doc_sha and doc_sha != photo_sha:
        raise ValueError(f"the assessment is of photo {doc_sha[:12]}..., not {photo_sha[:12]}...")
    if not doc.get("config_hash"):
        raise ValueError("the assessment has no config_hash")
    model = doc.get("model") or {}
    name, version = str(model.get("name") or "unknown"), str(model.get("version") or "")
    model_sha = model.get("sha256") or None
    keys = {"photo_id": photo_id, "model_key": model_sha or f"{name}@{version}", "config_hash": doc["config_hash"]}
    metrics = _plain(doc.get("metrics") or {})
    assessment_id, created = _ensure(session, Assessment, keys, {
        "model_name": name, "model_version": version, "model_sha256": model_sha, "schema": doc.get("schema", ""),
        "view": (doc.get("photo") or {}).get("view"),
        "dot_count": len(dots) if dots is not None else int(metrics.get("dot_count") or 0),
        "metrics": metrics, "calibration": _plain(doc.get("calibration") or {}),
        "quality": _plain(doc.get("quality") or {}), "warnings": _plain(list(doc.get("warnings") or [])),
        "timings": _plain(doc.get("timings_s") or {}), "roi_polygon_px": _plain(doc.get("roi_polygon_px"))})
    if created and dots is not None and len(dots):
        session.execute(sa.insert(Dot), _dot_rows(assessment_id, dots))
    view = (doc.get("photo") or {}).get("view")
    if created and view in VIEWS:  # a photo's unknown view is what its assessment found
        session.execute(sa.update(Photo).where(Photo.id == photo_id, Photo.view.is_(None)).values(view=view))
    return StoredAssessment(assessment_id, created)


def store_dot_links(session: Session, from_assessment_id: int, to_assessment_id: int,
                    pairs: Iterable[tuple[int, int, float | None]], method: str) -> int:
    """Record that dot ``i`` of one assessment is dot ``j`` of another (``pairs``:
    ``(i, j, residual_mm)`` by ``dot_index``). Idempotent; returns the number of new links."""
    def ids(assessment_id: int) -> dict[int, int]:
        return dict(session.execute(sa.select(Dot.dot_index, Dot.id).where(Dot.assessment_id == assessment_id)).all())

    a, b = ids(from_assessment_id), ids(to_assessment_id)
    added = 0
    for i, j, residual in pairs:
        if int(i) not in a or int(j) not in b:
            raise ValueError(f"no dot {i} in assessment {from_assessment_id} or no dot {j} in {to_assessment_id}")
        added += _insert(session, DotLink, {"from_dot_id": a[int(i)], "to_dot_id": b[int(j)], "method": method,
                                            "residual_mm": _plain(None if residual is None else float(residual))
                                            }) is not None
    return added


def record_review(session: Session, dot_id: int, decision: str, reviewer: str, *, new_label: str | None = None,
                  note: str | None = None, reviewer_user_id: int | None = None, at: datetime | None = None) -> int:
    """Append a reviewer's decision on a dot (``accept``, ``reject`` or ``relabel`` with ``new_label``);
    ``reviewer_user_id``: the web app user who decided; ``at``: when (default: now)."""
    if decision not in DECISIONS:
        raise ValueError(f"unknown decision {decision!r}: use {', '.join(DECISIONS)}")
    if (decision == "relabel") != bool(new_label):
        raise ValueError("a 'relabel' decision needs new_label, and only it")
    row = ReviewDecision(dot_id=dot_id, decision=decision, new_label=new_label or None, reviewer=reviewer, note=note,
                         reviewer_user_id=reviewer_user_id)
    if at is not None:
        row.created_at = at
    session.add(row)
    session.flush()
    return row.id


# --------------------------------------------------------------------------- queries and upkeep

def list_clients(session: Session, clinic: str | None = None) -> list[ClientSummary]:
    """Every client (of ``clinic``, or all), with counts of regions, visits and photos."""
    regions = (sa.select(Region.client_id, sa.func.count().label("n")).group_by(Region.client_id).subquery())
    visits = (sa.select(Visit.client_id, sa.func.count().label("n"), sa.func.max(Visit.visit_date).label("last"))
              .group_by(Visit.client_id).subquery())
    photos = (sa.select(Visit.client_id, sa.func.count(VisitPhoto.id).label("n"))
              .join(VisitPhoto, VisitPhoto.visit_id == Visit.id).group_by(Visit.client_id).subquery())
    stmt = (sa.select(Clinic.slug, Client.external_id, sa.func.coalesce(regions.c.n, 0),
                      sa.func.coalesce(visits.c.n, 0), sa.func.coalesce(photos.c.n, 0), visits.c.last)
            .join(Clinic, Clinic.id == Client.clinic_id)
            .outerjoin(regions, regions.c.client_id == Client.id)
            .outerjoin(visits, visits.c.client_id == Client.id)
            .outerjoin(photos, photos.c.client_id == Client.id)
            .order_by(Clinic.slug, Client.external_id))
    if clinic is not None:
        stmt = stmt.where(Clinic.slug == clinic)
    return [ClientSummary(*row) for row in session.execute(stmt)]


def sweep_store(records: Records, store: PhotoStore, *, min_age_s: float = 3600.0) -> tuple[str, ...]:
    """Delete store files no photo record points to (left by a killed process), older than ``min_age_s``."""
    with records.session(read_only=True) as session:
        referenced = set(session.scalars(sa.select(Photo.stored_path)))
    return store.sweep(referenced, min_age_s=min_age_s)
