"""Uploaded photos into the records: checked first, then one visit's ingest, then queued jobs.

Order, so that a refused upload leaves nothing behind and costs little:

1. each file is read with a hard cap (over ``max_upload_bytes``: 413);
2. the client and the visit's fields are checked (404 for another clinic's client; 422
   with every problem);
3. each photo's sha256 is compared with what the upload's clinic has recorded: the same
   bytes twice in one upload, or bytes already in another visit of this clinic, are a 409
   before anything is decoded; bytes already in this very visit are an idempotent re-send
   and are not decoded again. Another clinic's photos are never looked at: the same bytes
   recorded by another clinic are simply a new photo of this one, and nothing in the
   answer tells that another clinic holds them;
4. every new photo's header is read (format by content, width and height, no pixel
   decoded) and refused with a 422 naming the limit when it has more pixels than the web
   cap, a shorter side under the minimum, or an aspect ratio beyond the maximum
   (:class:`UploadLimits`);
5. then each new photo is decoded as the assessment will
   (:func:`pipeline.one_photo.loading.read_photo_bytes`: truncation, pixel formats), holding one of
   the server's few decode slots (at most ``max_concurrent_decodes`` photos decoded at
   once across the server, whichever route and clinic; an upload that waits longer than
   ``decode_wait_s`` for a slot is a 503); anything unusable is a 422 naming the reason.
   Handlers call this from FastAPI's thread pool, never on the event loop;
6. only then :func:`pipeline.records.add_visit` writes the visit and its photos in one
   transaction (content-addressed store; idempotent: a photo already in the same visit
   is "skipped"; concurrent uploads of the same photo serialise on the photo's lock),
   without decoding them again;
7. a job per photo is queued (idempotent: one job per photo).

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
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import IO, cast

import sqlalchemy as sa

from pipeline.one_photo.loading import (
    LoadSettings,
    PhotoError,
    PhotoHeader,
    PhotoTooLarge,
    read_photo_bytes,
    read_photo_header,
)
from pipeline.records import (
    IngestError,
    PhotoFile,
    PhotoStore,
    Records,
    add_visit,
    parse_date,
    parse_kind,
    parse_region,
)
from pipeline.records.schema import VIEWS, Client, Clinic, Photo, Region, Visit, VisitPhoto
from pipeline.runtime import release_free_heap
from pipeline.web.auth import Principal
from pipeline.web.jobs import enqueue_job
from pipeline.web.settings import WebSettings

__all__ = [
    "IncomingPhoto",
    "UploadLimits",
    "UploadProblem",
    "UploadResult",
    "ingest_upload",
    "read_capped",
    "sanitise_filename",
    "size_problem",
]

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

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class UploadLimits:
    """What a photo may be for this server (:class:`pipeline.web.settings.WebSettings`), and the
    server's decode slots: one semaphore shared by every upload route of one app."""

    max_pixels: int
    min_side: int
    max_aspect: float
    decode_wait_s: float
    decode_slots: threading.Semaphore = field(compare=False, repr=False)

    @classmethod
    def of(cls, settings: WebSettings) -> UploadLimits:
        return cls(
            max_pixels=settings.max_pixels,
            min_side=settings.min_photo_side,
            max_aspect=settings.max_aspect_ratio,
            decode_wait_s=settings.decode_wait_s,
            decode_slots=threading.BoundedSemaphore(settings.max_concurrent_decodes),
        )

    @contextmanager
    def decode_slot(self) -> Iterator[None]:
        """Hold one of the server's decode slots (503 after ``decode_wait_s`` without one)."""
        if not self.decode_slots.acquire(timeout=self.decode_wait_s):
            raise UploadProblem(503, "the server is busy checking other photos: try again in a minute")
        try:
            yield
        finally:
            self.decode_slots.release()


def size_problem(width: int, height: int, limits: UploadLimits) -> str | None:
    """Why a photo of ``width`` x ``height`` pixels is refused (one line naming the limit), or None."""
    short, long = sorted((width, height))
    if width * height > limits.max_pixels:
        return (
            f"{width} x {height} pixels ({width * height / 1e6:.1f} megapixels) is over this server's limit of "
            f"{limits.max_pixels / 1e6:g} megapixels: send a smaller photo"
        )
    if short < limits.min_side:
        return f"{width} x {height} pixels is too small: the shorter side must be at least {limits.min_side} pixels"
    if long > limits.max_aspect * short:
        return (
            f"{width} x {height} pixels is too narrow: the longer side may be at most {limits.max_aspect:g} "
            "times the shorter"
        )
    return None


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


def check_header(photo: IncomingPhoto, limits: UploadLimits) -> PhotoHeader:
    """The photo's header, if its format and size are acceptable (422 naming the reason or the limit
    otherwise). Nothing is decoded."""
    try:
        header = read_photo_header(photo.data, photo.name)
    except PhotoTooLarge as exc:  # beyond even Pillow's own guard, so beyond ours
        count = f"{exc.pixels / 1e6:.0f} megapixels" if exc.pixels else "too many pixels"
        raise UploadProblem(
            422,
            f"{photo.name}: {count} is over this server's limit of "
            f"{limits.max_pixels / 1e6:g} megapixels: send a smaller photo",
        ) from None
    except PhotoError as exc:
        raise UploadProblem(422, f"{photo.name}: {exc.reason}") from None
    problem = size_problem(header.width, header.height, limits)
    if problem:
        raise UploadProblem(422, f"{photo.name}: {problem}")
    return header


def decode_checked(photo: IncomingPhoto, limits: UploadLimits) -> tuple[int, int, datetime | None]:
    """Decode the photo as the assessment will, in one of the server's decode slots (422 with the
    reason if it is not a usable photo); its upright width, height and capture time. The pixels
    are let go before the slot is."""
    with limits.decode_slot():
        try:
            decoded = read_photo_bytes(photo.data, photo.name, LoadSettings(max_pixels=limits.max_pixels))
        except PhotoError as exc:
            raise UploadProblem(422, f"{photo.name}: {exc.reason}") from None
        facts = (decoded.width, decoded.height, decoded.capture_time)
        del decoded
        release_free_heap()  # what the decode's threads left in their heaps goes back too
    return facts


def _named_by_format(photo: IncomingPhoto, fmt: str) -> IncomingPhoto:
    """The photo named with the extension of its real format."""
    stem = PurePosixPath(photo.name).stem if PurePosixPath(photo.name).suffix else photo.name
    return IncomingPhoto(name=f"{stem[:90] or 'photo'}{_FORMAT_EXT.get(fmt, '')}", data=photo.data)


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


def _client_external(
    records: Records, principal: Principal, *, client_id: int | None, client: str | None, clinic: str | None
) -> tuple[str, str, bool]:
    """(clinic slug, client external id, create) of the upload's client, in the principal's scope."""
    with records.session(read_only=True) as s:
        if client_id is not None:
            stmt = (
                sa.select(Clinic.slug, Client.external_id)
                .join(Clinic, Clinic.id == Client.clinic_id)
                .where(Client.id == client_id)
            )
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


@dataclass(frozen=True)
class _Recorded:
    """A photo the upload's clinic has already recorded in a visit (found by its sha256)."""

    visit_id: int
    visit: tuple[str, str, date, str, int]  # client, region, date, kind, session number
    width: int
    height: int
    size: int


def _recorded_in_clinic(records: Records, clinic: str, shas: Sequence[str]) -> dict[str, _Recorded]:
    """Those of ``shas`` that ``clinic`` has recorded, with their visit. Only this clinic's photos
    are looked at: whether another clinic holds the same bytes is never asked."""
    with records.session(read_only=True) as s:
        rows = s.execute(
            sa.select(
                Photo.sha256,
                Visit.id,
                Client.external_id,
                Region.name,
                Visit.visit_date,
                Visit.kind,
                Visit.session_number,
                Photo.width,
                Photo.height,
                Photo.bytes,
            )
            .join(Clinic, Clinic.id == Photo.clinic_id)
            .join(VisitPhoto, VisitPhoto.photo_id == Photo.id)
            .join(Visit, Visit.id == VisitPhoto.visit_id)
            .join(Client, Client.id == Visit.client_id)
            .join(Region, Region.id == Visit.region_id)
            .where(Clinic.slug == clinic, Photo.sha256.in_(list(shas)))
        ).all()
    return {
        sha: _Recorded(visit_id, (client, region, day, kind, number), w, h, n)
        for sha, visit_id, client, region, day, kind, number, w, h, n in rows
    }


def _conflict_message(records: Records, clinic: str, names_by_sha: dict[str, str]) -> str | None:
    """Which photos are already in another visit of ``clinic`` (another clinic's photos are not looked at)."""
    found = _recorded_in_clinic(records, clinic, list(names_by_sha))
    parts = [f"{names_by_sha[sha]}: this photo is already recorded in visit {r.visit_id}" for sha, r in found.items()]
    return "; ".join(parts) or None


def _triage(
    records: Records, clinic: str, visit: tuple[str, str, date, str, int], photos: Sequence[IncomingPhoto]
) -> dict[str, _Recorded]:
    """Before anything is decoded: 409 for bytes sent twice or already in another visit of the clinic;
    the photos already in this very visit (a re-send), by sha256."""
    shas = [p.sha256 for p in photos]
    if len(set(shas)) < len(shas):
        raise UploadProblem(409, "the same photo was sent twice in one upload")
    recorded = _recorded_in_clinic(records, clinic, shas)
    names = {sha: p.name for sha, p in zip(shas, photos)}
    elsewhere = [
        f"{names[sha]}: this photo is already recorded in visit {r.visit_id}"
        for sha, r in recorded.items()
        if r.visit != visit
    ]
    if elsewhere:
        raise UploadProblem(409, "; ".join(elsewhere))
    return recorded


def ingest_upload(
    records: Records,
    store: PhotoStore,
    home: Path,
    principal: Principal,
    *,
    photos: Sequence[IncomingPhoto],
    region: str,
    date: str,
    kind: str,
    session: str | int | None = None,
    view: str | None = None,
    notes: str | None = None,
    client_id: int | None = None,
    client: str | None = None,
    clinic: str | None = None,
    now: datetime,
    limits: UploadLimits,
) -> UploadResult:
    """Check and record one visit's uploaded photos and queue their assessment (see the module doc).

    The client is ``client_id`` (an existing client in the principal's scope) or ``client``
    (the clinic's own id, created in the principal's clinic if new; admins may name ``clinic``).
    ``limits``: the app's (:attr:`pipeline.web.deps.AppContext.uploads`: its caps and its decode slots).
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
    visit = (external, parse_region(region), parse_date(date), *parse_kind(kind, session_value))
    recorded = _triage(records, slug, visit, photos)
    fresh = [p for p in photos if p.sha256 not in recorded]
    headers = {p.sha256: check_header(p, limits) for p in fresh}  # every header before any decode
    facts = {p.sha256: decode_checked(p, limits) for p in fresh}
    named = [_named_by_format(p, headers[p.sha256].format) if p.sha256 in headers else p for p in photos]

    tmp = Path(home) / "tmp" / f"upload-{secrets.token_hex(8)}"
    try:
        paths: dict[str, IncomingPhoto] = {}
        files: list[PhotoFile] = []
        for i, p in enumerate(named):
            folder = tmp / str(i)
            folder.mkdir(parents=True)
            path = folder / p.name
            path.write_bytes(p.data)
            paths[str(path)] = p
            sha = p.sha256
            if sha in facts:
                width, height, taken = facts[sha]
            else:  # a re-send of a photo of this visit: what the records know of it
                width, height, taken = recorded[sha].width, recorded[sha].height, None
            files.append(
                PhotoFile(path=path, sha256=sha, width=width, height=height, size=len(p.data), capture_time=taken)
            )
        try:
            result = add_visit(
                records,
                store,
                client=external,
                region=region,
                date=date,
                kind=kind,
                session=session_value,  # type: ignore[arg-type]  # parse_kind reads text too
                photos=files,
                clinic=slug,
                view=(view or "").strip().lower() or None,
                notes=(notes or "").strip()[:2000] or None,
                create_client=create,
            )
        except IngestError as exc:
            raise _upload_problem(records, slug, exc, paths) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    shas = {path: p.sha256 for path, p in paths.items()}
    added = set(result.added)
    out = []
    with records.transaction() as s:
        ids = dict(
            s.execute(
                sa.select(Photo.sha256, Photo.id)
                .join(Clinic, Clinic.id == Photo.clinic_id)
                .where(Clinic.slug == slug, Photo.sha256.in_(list(shas.values())))
            ).all()
        )
        # the visit add_visit has just written
        visit_client = cast(int, s.scalar(sa.select(Visit.client_id).where(Visit.id == result.visit_id)))
        for tmp_path, p in paths.items():
            sha = shas[tmp_path]
            job_id = enqueue_job(s, photo_id=ids[sha], visit_id=result.visit_id, user_id=principal.user_id, now=now)
            out.append(
                UploadedPhoto(name=p.name, photo_id=ids[sha], sha256=sha, job_id=job_id, created=tmp_path in added)
            )
    return UploadResult(
        client_id=int(visit_client), visit_id=result.visit_id, visit_created=result.visit_created, photos=tuple(out)
    )


def _upload_problem(records: Records, clinic: str, exc: IngestError, paths: dict[str, IncomingPhoto]) -> UploadProblem:
    """An ingest's refusal as the user's problem (the races the checks before it could not see)."""
    text = " ".join(p.message for p in exc.problems)
    if "already in" in text or "duplicate photo" in text:
        if "duplicate photo" in text:
            return UploadProblem(409, "the same photo was sent twice in one upload")
        names = {p.sha256: p.name for p in paths.values()}
        return UploadProblem(409, _conflict_message(records, clinic, names) or "a photo is already recorded")
    if "unknown client" in text:
        return UploadProblem(404, "not found")
    message = "; ".join(p.message for p in exc.problems)
    for path, p in paths.items():  # never show the server's temporary paths
        message = message.replace(path, p.name)
    return UploadProblem(422, message)
