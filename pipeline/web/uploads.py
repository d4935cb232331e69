"""Uploaded photos into the records: checked first, then one visit's ingest, then queued jobs.

Order, so that a refused upload leaves nothing behind:

1. each file is read with a hard cap (over ``max_upload_bytes``: 413);
2. its content is decoded as the assessment will (:func:`pipeline.loading.read_photo_bytes`:
   format by content, pixel limit, truncation); anything else is a 422 naming the reason;
3. the visit's fields are parsed (422 with every problem);
4. only then :func:`pipeline.records.add_visit` writes the visit and its photos in one
   transaction (content-addressed store; idempotent: a photo already in the same visit
   is "skipped"; concurrent uploads of the same photo serialise on the photo's lock);
5. a job per photo is queued (idempotent: one job per photo).

The client's file name is reduced to a plain name (letters, digits, ``._-``) with the
extension of the format found by content; it is kept as the photo's original name and
never used as a path: the bytes go to a fresh temporary folder under the data home,
then into the store under their sha256.
"""
from __future__ import annotations

import hashlib
import io
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO

import sqlalchemy as sa

from ..loading import LoadSettings, PhotoError, read_photo_bytes
from ..records import IngestError, PhotoStore, Records, add_visit, parse_date, parse_kind, parse_region
from ..records.schema import VIEWS, Client, Clinic, Photo, Visit, VisitPhoto
from .auth import Principal
from .jobs import enqueue_job

__all__ = ["IncomingPhoto", "UploadProblem", "UploadResult", "ingest_upload", "read_capped", "sanitise_filename"]

_FORMAT_EXT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "TIFF": ".tiff", "WEBP": ".webp"}
_CHUNK = 1 << 20


class UploadProblem(Exception):
    """An upload refused: ``status`` (400, 404, 409, 413, 422) and a one-line message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class IncomingPhoto:
    """One uploaded file: its sanitised name and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class UploadedPhoto:
    name: str
    photo_id: int
    sha256: str
    job_id: int
    created: bool


@dataclass(frozen=True)
class UploadResult:
    client_id: int
    visit_id: int
    visit_created: bool
    photos: tuple[UploadedPhoto, ...]

    @property
    def created(self) -> bool:
        return any(p.created for p in self.photos)


def sanitise_filename(name: str | None, fallback: str = "photo") -> str:
    """A plain file name from whatever a client sent: last path part, ``[A-Za-z0-9._-]`` only,
    no leading dots, at most 100 characters. Never a path."""
    base = PurePosixPath((name or "").replace("\\", "/").replace("\x00", "")).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".")[:100].strip("_") or fallback
    return base


def read_capped(fh: IO[bytes], limit: int, name: str) -> bytes:
    """All of ``fh``, refusing (413) as soon as it is longer than ``limit`` bytes."""
    buf = io.BytesIO()
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            return buf.getvalue()
        if buf.tell() + len(chunk) > limit:
            raise UploadProblem(413, f"{name}: larger than the upload limit of {_mb(limit)}")
        buf.write(chunk)


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n} bytes"


def check_photo(photo: IncomingPhoto, max_pixels: int) -> IncomingPhoto:
    """Decode the photo as the assessment will (422 with the reason if it is not a usable photo);
    returns it named with the extension of its real format."""
    try:
        read_photo_bytes(photo.data, photo.name, LoadSettings(max_pixels=max_pixels))
    except PhotoError as exc:
        raise UploadProblem(422, f"{photo.name}: {exc.reason}") from None
    from PIL import Image

    with Image.open(io.BytesIO(photo.data)) as im:
        ext = _FORMAT_EXT.get(im.format or "", "")
    stem = PurePosixPath(photo.name).stem if PurePosixPath(photo.name).suffix else photo.name
    return IncomingPhoto(name=f"{stem[:90] or 'photo'}{ext}", data=photo.data)


def _visit_fields(region: str, date: str, kind: str, session: str | int | None, view: str | None) -> list[str]:
    problems = []
    for parse in (lambda: parse_region(region), lambda: parse_date(date), lambda: parse_kind(kind, session)):
        try:
            parse()
        except ValueError as exc:
            problems.append(str(exc))
    if view and view.strip().lower() not in VIEWS:
        problems.append(f"unknown view {view!r}: use {' or '.join(VIEWS)}")
    return problems


def _client_external(records: Records, principal: Principal, *, client_id: int | None,
                     client: str | None, clinic: str | None) -> tuple[str, str, bool]:
    """(clinic slug, client external id, create) of the upload's client, in the principal's scope."""
    with records.session(read_only=True) as s:
        if client_id is not None:
            stmt = sa.select(Clinic.slug, Client.external_id).join(Clinic, Clinic.id == Client.clinic_id) \
                .where(Client.id == client_id)
            if not principal.is_admin:
                stmt = stmt.where(Client.clinic_id == principal.clinic_id)
            row = s.execute(stmt).first()
            if row is None:
                raise UploadProblem(404, "not found")
            return row[0], row[1], False
        external = (client or "").strip()
        if not external or len(external) > 100:
            raise UploadProblem(422, "client: give the clinic's client id (1 to 100 characters)")
        slug = principal.clinic_slug
        if clinic and clinic.strip().lower() != slug:
            if not principal.is_admin:
                raise UploadProblem(403, "you can only add photos to your own clinic")
            slug = clinic.strip().lower()
            if s.scalar(sa.select(Clinic.id).where(Clinic.slug == slug)) is None:
                raise UploadProblem(404, f"unknown clinic {slug!r}")
        return slug, external, True


def _conflict_message(records: Records, principal: Principal, names_by_sha: dict[str, str]) -> str | None:
    """Which photos are already in another visit, told without naming another clinic's visit."""
    with records.session(read_only=True) as s:
        rows = s.execute(sa.select(Photo.sha256, Visit.id, Client.clinic_id)
                         .join(VisitPhoto, VisitPhoto.photo_id == Photo.id).join(Visit, Visit.id == VisitPhoto.visit_id)
                         .join(Client, Client.id == Visit.client_id)
                         .where(Photo.sha256.in_(list(names_by_sha)))).all()
    parts = []
    for sha, visit_id, clinic_id in rows:
        where = f"visit {visit_id}" if principal.sees_clinic(clinic_id) else "another visit"
        parts.append(f"{names_by_sha[sha]}: this photo is already recorded in {where}")
    return "; ".join(parts) or None


def ingest_upload(records: Records, store: PhotoStore, home: Path, principal: Principal, *,
                  photos: Sequence[IncomingPhoto], region: str, date: str, kind: str,
                  session: str | int | None = None, view: str | None = None, notes: str | None = None,
                  client_id: int | None = None, client: str | None = None, clinic: str | None = None,
                  max_pixels: int, now: datetime) -> UploadResult:
    """Check and record one visit's uploaded photos and queue their assessment (see the module doc).

    The client is ``client_id`` (an existing client in the principal's scope) or ``client``
    (the clinic's own id, created in the principal's clinic if new; admins may name ``clinic``).
    Raises :class:`UploadProblem`; nothing is written unless everything is accepted.
    """
    # the client first: another clinic's client is a 404 whatever else is wrong with the upload
    slug, external, create = _client_external(records, principal, client_id=client_id, client=client, clinic=clinic)
    session_value = None if session is None or str(session).strip() == "" else str(session).strip()
    problems = _visit_fields(region, date, kind, session_value, view)
    if problems:
        raise UploadProblem(422, "; ".join(problems))
    if not photos:
        raise UploadProblem(422, "no photo file in the upload")
    checked = [check_photo(p, max_pixels) for p in photos]

    tmp = Path(home) / "tmp" / f"upload-{secrets.token_hex(8)}"
    try:
        paths: dict[str, IncomingPhoto] = {}
        for i, p in enumerate(checked):
            folder = tmp / str(i)
            folder.mkdir(parents=True)
            path = folder / p.name
            path.write_bytes(p.data)
            paths[str(path)] = p
        try:
            result = add_visit(records, store, client=external, region=region, date=date, kind=kind,
                               session=session_value,  # type: ignore[arg-type]  # parse_kind reads text too
                               photos=list(paths), clinic=slug, view=(view or "").strip().lower() or None,
                               notes=(notes or "").strip()[:2000] or None, create_client=create)
        except IngestError as exc:
            raise _upload_problem(records, principal, exc, paths) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    shas = {path: hashlib.sha256(p.data).hexdigest() for path, p in paths.items()}
    added = set(result.added)
    out = []
    with records.transaction() as s:
        ids = dict(s.execute(sa.select(Photo.sha256, Photo.id).where(Photo.sha256.in_(list(shas.values())))).all())
        visit_client = s.scalar(sa.select(Visit.client_id).where(Visit.id == result.visit_id))
        for path, p in paths.items():
            sha = shas[path]
            job_id = enqueue_job(s, photo_id=ids[sha], visit_id=result.visit_id, user_id=principal.user_id, now=now)
            out.append(UploadedPhoto(name=p.name, photo_id=ids[sha], sha256=sha, job_id=job_id, created=path in added))
    return UploadResult(client_id=int(visit_client), visit_id=result.visit_id, visit_created=result.visit_created,
                        photos=tuple(out))


def _upload_problem(records: Records, principal: Principal, exc: IngestError,
                    paths: dict[str, IncomingPhoto]) -> UploadProblem:
    text = " ".join(p.message for p in exc.problems)
    if "already in" in text or "duplicate photo" in text:
        if "duplicate photo" in text:
            return UploadProblem(409, "the same photo was sent twice in one upload")
        names = {hashlib.sha256(p.data).hexdigest(): p.name for p in paths.values()}
        return UploadProblem(409, _conflict_message(records, principal, names) or "a photo is already recorded")
    if "unknown client" in text:
        return UploadProblem(404, "not found")
    message = "; ".join(p.message for p in exc.problems)
    for path, p in paths.items():  # never show the server's temporary paths
        message = message.replace(path, p.name)
    return UploadProblem(422, message)
