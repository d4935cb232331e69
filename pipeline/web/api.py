"""The JSON API for clinic systems, under ``/api/v1`` (OpenAPI at ``/api/openapi.json``, docs at ``/api/docs``).

Authentication: ``Authorization: Bearer smp_...`` (an API token: ``smp users token``), or a
browser session (then state-changing calls need the ``X-CSRF-Token`` header). Every id is
looked up within the caller's clinic; another clinic's id is a 404.

Submitting photos is idempotent: the same photo (same bytes) sent again for the same
visit returns the same ids with 200 instead of 201, and concurrent submissions of one
photo record it once (the records' ingest serialises on the photo).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, cast

import sqlalchemy as sa
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from pipeline.records.read import assessment_dots
from pipeline.records.schema import ROLES, Assessment, Job, Photo, Region, Visit, VisitPhoto
from pipeline.web.auth import Principal
from pipeline.web.deps import context, render, require_roles, require_user
from pipeline.web.jobs import assessment_folder
from pipeline.web.settings import WebSettings
from pipeline.web.tenancy import client_summaries, get_assessment, get_client, get_job, get_photo, get_visit
from pipeline.web.uploads import IncomingPhoto, UploadProblem, ingest_upload, read_capped, sanitise_filename

__all__ = ["api_router", "docs_router"]

READERS = ROLES
STAFF = ("staff", "admin")


# --------------------------------------------------------------------------- response models


class JobOut(BaseModel):
    id: int
    photo_id: int
    visit_id: int
    status: str = Field(description="queued, running, done or failed")
    stage: str
    progress: float = Field(description="0 to 1")
    error: str | None = None
    assessment_id: int | None = None
    report_url: str | None = None
    attempts: int
    created_at: dt.datetime
    updated_at: dt.datetime


class SubmissionOut(BaseModel):
    created: bool = Field(description="false when this photo was already recorded in this visit (idempotent re-send)")
    photo_id: int
    sha256: str
    name: str
    visit_id: int
    visit_created: bool
    client_id: int
    job: JobOut


class ClientOut(BaseModel):
    id: int
    external_id: str = Field(description="the clinic's own id of the client")
    clinic: str
    visits: int
    photos: int
    last_visit: dt.date | None


class AssessmentRef(BaseModel):
    id: int
    model: str
    config_hash: str
    dot_count: int
    created_at: dt.datetime
    report_url: str


class PhotoOut(BaseModel):
    id: int
    sha256: str
    name: str
    view: str | None
    width: int
    height: int
    visit_id: int
    client_id: int
    job: JobOut | None
    assessments: list[AssessmentRef]


class VisitOut(BaseModel):
    id: int
    client_id: int
    region_id: int
    region: str
    date: dt.date
    kind: str
    session: int
    notes: str | None
    photos: list[PhotoOut]


class ClientDetail(ClientOut):
    regions: list[dict[str, Any]]
    visit_list: list[VisitOut]


class AssessmentOut(BaseModel):
    id: int
    photo_id: int
    visit_id: int
    client_id: int
    created_at: dt.datetime
    assessment: dict[str, Any] = Field(description="assessment.json (schema smp-assessment/1)")
    dots: list[dict[str, Any]] | None = Field(description="dots.csv rows (null when dots=false)")
    report_url: str


class RegionTrackingOut(BaseModel):
    region_id: int
    region: str
    status: str = Field(description="ok, or insufficient (fewer than two assessed close-up visits)")
    problem: str | None = None
    visits: list[dict[str, Any]] = []
    fading: dict[str, Any] | None = Field(None, description="half-life, trends and the touch-up forecast")
    warnings: list[str] = []
    report_url: str | None = None


class TrackingOut(BaseModel):
    client_id: int
    regions: list[RegionTrackingOut]


# --------------------------------------------------------------------------- helpers


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities -> None (recursively)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        photo_id=job.photo_id,
        visit_id=job.visit_id,
        status=job.status,
        stage=job.stage,
        progress=job.progress,
        error=job.error,
        assessment_id=job.assessment_id,
        report_url=f"/reports/assessment/{job.assessment_id}" if job.assessment_id else None,
        attempts=job.attempts,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


def _photo_out(s: Any, photo: Photo, visit_id: int, client_id: int) -> PhotoOut:
    job = s.scalar(sa.select(Job).where(Job.photo_id == photo.id))
    refs = [
        AssessmentRef(
            id=a.id,
            model=f"{a.model_name}@{a.model_version}",
            config_hash=a.config_hash,
            dot_count=a.dot_count,
            created_at=a.created_at,
            report_url=f"/reports/assessment/{a.id}",
        )
        for a in s.scalars(
            sa.select(Assessment)
            .where(Assessment.photo_id == photo.id)
            .order_by(Assessment.created_at.desc(), Assessment.id.desc())
        )
    ]
    return PhotoOut(
        id=photo.id,
        sha256=photo.sha256,
        name=photo.original_name,
        view=photo.view,
        width=photo.width,
        height=photo.height,
        visit_id=visit_id,
        client_id=client_id,
        job=_job_out(job) if job is not None else None,
        assessments=refs,
    )


def _visit_out(s: Any, visit: Visit) -> VisitOut:
    region = s.scalar(sa.select(Region.name).where(Region.id == visit.region_id))
    photos = s.scalars(
        sa.select(Photo)
        .join(VisitPhoto, VisitPhoto.photo_id == Photo.id)
        .where(VisitPhoto.visit_id == visit.id)
        .order_by(Photo.id)
    ).all()
    return VisitOut(
        id=visit.id,
        client_id=visit.client_id,
        region_id=visit.region_id,
        region=region or "",
        date=visit.visit_date,
        kind=visit.kind,
        session=visit.session_number,
        notes=visit.notes,
        photos=[_photo_out(s, p, visit.id, visit.client_id) for p in photos],
    )


def _client_list(s: Any, p: Principal, clinic_id: int | None = None, client_id: int | None = None) -> list[ClientOut]:
    return [
        ClientOut(id=i, external_id=e, clinic=c, visits=v, photos=n, last_visit=last)
        for i, e, c, v, n, last in client_summaries(s, p, clinic_id, client_id)
    ]


def _problem(exc: UploadProblem) -> JSONResponse:
    return JSONResponse({"detail": exc.message}, status_code=exc.status)


# --------------------------------------------------------------------------- the API


def api_router(settings: WebSettings) -> APIRouter:
    router = APIRouter(
        prefix="/api/v1",
        dependencies=[Depends(require_user)],
        tags=["v1"],
        responses={401: {"description": "not authenticated"}, 404: {"description": "no such id in your clinic"}},
    )

    @router.post(
        "/photos",
        response_model=SubmissionOut,
        status_code=201,
        responses={
            200: {"model": SubmissionOut, "description": "already recorded (idempotent re-send)"},
            409: {"description": "the photo is already recorded in another visit of your clinic"},
            413: {"description": "file larger than the upload limit"},
            422: {
                "description": "not a usable photo (too many pixels, too small, too narrow, "
                "unreadable), or bad visit fields"
            },
            503: {"description": "the server is busy checking other photos: try again later"},
        },
    )
    def submit_photo(
        request: Request,
        p: Principal = require_roles(*STAFF),
        file: UploadFile = File(..., description="JPEG, PNG, TIFF or WebP (checked by content)"),
        client: str = Form(..., max_length=100, description="the clinic's id of the client (created if new)"),
        region: str = Form(..., max_length=64, description="crown, vertex, frontal, scar, ..."),
        date: str = Form(..., max_length=10, description="visit date, YYYY-MM-DD"),
        kind: str = Form(..., max_length=32, description="baseline, session, follow-up or touch-up"),
        session: str | None = Form(None, max_length=6, description="session number (session visits)"),
        view: str | None = Form(None, max_length=16, description="closeup or global (default: found)"),
        notes: str | None = Form(None, max_length=2000),
        clinic: str | None = Form(None, max_length=64, description="admins only: the client's clinic"),
    ) -> Response:
        """Submit one photo of a visit; its assessment is queued (poll the job)."""
        ctx = context(request)
        name = sanitise_filename(file.filename)
        try:
            if file.size is not None and file.size > settings.max_upload_bytes:
                raise UploadProblem(
                    413, f"{name}: larger than the upload limit of {settings.max_upload_bytes // 2**20} MB"
                )
            file.file.seek(0)
            data = read_capped(file.file, settings.max_upload_bytes, name)
            result = ingest_upload(
                ctx.records,
                ctx.store,
                ctx.home,
                p,
                photos=[IncomingPhoto(name, data)],
                region=region,
                date=date,
                kind=kind,
                session=session,
                view=view,
                notes=notes,
                client=client,
                clinic=clinic,
                now=ctx.now(),
                limits=ctx.uploads,
            )
        except UploadProblem as exc:
            return _problem(exc)
        ctx.jobs.wake()
        photo = result.photos[0]
        with ctx.records.session(read_only=True) as s:
            job = cast(Job, s.get(Job, photo.job_id))  # the job ingest_upload has just queued
        out = SubmissionOut(
            created=photo.created,
            photo_id=photo.photo_id,
            sha256=photo.sha256,
            name=photo.name,
            visit_id=result.visit_id,
            visit_created=result.visit_created,
            client_id=result.client_id,
            job=_job_out(job),
        )
        return JSONResponse(
            json.loads(out.model_dump_json()),
            status_code=201 if photo.created else 200,
            headers={"Location": f"/api/v1/photos/{photo.photo_id}"},
        )

    @router.get("/clients", response_model=list[ClientOut])
    def clients(
        request: Request,
        p: Principal = require_roles(*READERS),
        clinic_id: int | None = Query(None, description="admins: only this clinic"),
    ) -> list[ClientOut]:
        """The clients of your clinic (admins: of every clinic, or of ``clinic_id``)."""
        with context(request).records.session(read_only=True) as s:
            return _client_list(s, p, clinic_id)

    @router.get("/clients/{client_id}", response_model=ClientDetail)
    def client_detail(request: Request, client_id: int, p: Principal = require_roles(*READERS)) -> ClientDetail:
        """One client with its regions and visits (photos, jobs, assessments)."""
        with context(request).records.session(read_only=True) as s:
            client, _ = get_client(s, p, client_id)
            summary = _client_list(s, p, None, client.id)[0]
            regions = [
                {"id": i, "name": n, "timeline_url": f"/reports/timeline/{i}"}
                for i, n in s.execute(
                    sa.select(Region.id, Region.name).where(Region.client_id == client.id).order_by(Region.name)
                )
            ]
            visits = s.scalars(
                sa.select(Visit).where(Visit.client_id == client.id).order_by(Visit.visit_date, Visit.id)
            ).all()
            return ClientDetail(**summary.model_dump(), regions=regions, visit_list=[_visit_out(s, v) for v in visits])

    @router.get("/visits/{visit_id}", response_model=VisitOut)
    def visit(request: Request, visit_id: int, p: Principal = require_roles(*READERS)) -> VisitOut:
        """One visit with its photos, their jobs and assessments."""
        with context(request).records.session(read_only=True) as s:
            v, _ = get_visit(s, p, visit_id)
            return _visit_out(s, v)

    @router.get("/photos/{photo_id}", response_model=PhotoOut)
    def photo(request: Request, photo_id: int, p: Principal = require_roles(*READERS)) -> PhotoOut:
        """One photo: its job and its assessments."""
        with context(request).records.session(read_only=True) as s:
            row = get_photo(s, p, photo_id)
            return _photo_out(s, row.photo, row.visit.id, row.client.id)

    @router.get("/jobs/{job_id}", response_model=JobOut)
    def job(request: Request, job_id: int, p: Principal = require_roles(*READERS)) -> JobOut:
        """A background assessment: status, stage, progress (0-1), and the assessment once done."""
        with context(request).records.session(read_only=True) as s:
            j, _, _ = get_job(s, p, job_id)
            return _job_out(j)

    @router.get("/assessments/{assessment_id}", response_model=AssessmentOut)
    def assessment(
        request: Request,
        assessment_id: int,
        p: Principal = require_roles(*READERS),
        dots: bool = Query(True, description="include the per-dot table"),
    ) -> JSONResponse:
        """An assessment: its ``assessment.json`` and its dots."""
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            a, row = get_assessment(s, p, assessment_id)
            table = assessment_dots(s, a.id) if dots else None
        path = assessment_folder(ctx.home, a.id) / "assessment.json"
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):  # assessed outside the web app: the stored parts
            doc = {
                "schema": a.schema,
                "model": {"name": a.model_name, "version": a.model_version, "sha256": a.model_sha256},
                "photo": {
                    "sha256": row.photo.sha256,
                    "width": row.photo.width,
                    "height": row.photo.height,
                    "view": a.view,
                },
                "calibration": a.calibration,
                "quality": a.quality,
                "metrics": a.metrics,
                "warnings": a.warnings,
                "timings_s": a.timings,
                "config_hash": a.config_hash,
            }
        if isinstance(doc.get("photo"), dict):
            doc["photo"]["path"] = row.photo.original_name  # never the server's path
        out = {
            "id": a.id,
            "photo_id": row.photo.id,
            "visit_id": row.visit.id,
            "client_id": row.client.id,
            "created_at": a.created_at.isoformat(),
            "assessment": doc,
            "dots": None if table is None else table.to_dict("records"),
            "report_url": f"/reports/assessment/{a.id}",
        }
        return JSONResponse(_plain(out))

    @router.get("/clients/{client_id}/tracking", response_model=TrackingOut)
    def tracking(request: Request, client_id: int, p: Principal = require_roles(*READERS)) -> TrackingOut:
        """Per region: dot tracks across visits, the fading model (half-life, blue and spread trends) and the
        touch-up forecast, as ``smp track`` computes them (from assessed close-ups; cached until they change)."""
        from pipeline.web.tracking import region_tracking

        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            client, clinic = get_client(s, p, client_id)
            regions = s.scalars(sa.select(Region.id).where(Region.client_id == client.id).order_by(Region.name)).all()
        out = []
        for region_id in regions:
            r = region_tracking(
                ctx.records,
                ctx.store,
                ctx.home,
                clinic=clinic.slug,
                client_id=client.id,
                client=client.external_id,
                region_id=region_id,
            )
            if r.doc is None:
                out.append(
                    RegionTrackingOut(region_id=r.region_id, region=r.region, status="insufficient", problem=r.problem)
                )
            else:
                out.append(
                    RegionTrackingOut(
                        region_id=r.region_id,
                        region=r.region,
                        status="ok",
                        visits=_plain(r.doc.get("visits") or []),
                        fading=_plain(r.doc.get("fading")),
                        warnings=list(r.doc.get("warnings") or []),
                        report_url=f"/reports/timeline/{r.region_id}",
                    )
                )
        return TrackingOut(client_id=client.id, regions=out)

    return router


def docs_router() -> APIRouter:
    """The OpenAPI document and a server-rendered reference of it (no external assets), both authenticated."""
    router = APIRouter(prefix="/api", include_in_schema=False, dependencies=[Depends(require_user)])

    @router.get("/openapi.json")
    def openapi(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @router.get("/docs", response_class=HTMLResponse)
    def docs(request: Request) -> Response:
        spec = request.app.openapi()
        operations = []
        for path, methods in spec.get("paths", {}).items():
            for method, op in methods.items():
                body: dict[str, dict[str, Any]] = (op.get("requestBody") or {}).get("content") or {}
                body_schema = next(iter(body.values()), {}).get("schema") if body else None
                fields = _schema_fields(spec, body_schema) if body_schema else []
                operations.append(
                    {
                        "method": method.upper(),
                        "path": path,
                        "summary": op.get("summary", ""),
                        "description": op.get("description", ""),
                        "parameters": op.get("parameters", []),
                        "body": fields,
                        "body_type": next(iter(body), "") if body else "",
                        "responses": op.get("responses", {}),
                    }
                )
        return render(request, "api_docs.html.j2", spec=spec, operations=operations)

    return router


def _schema_fields(spec: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec.get("components", {}).get("schemas", {}).get(name, {})
    required = set(schema.get("required", []))
    return [
        {
            "name": k,
            "required": k in required,
            "description": v.get("description", ""),
            "type": v.get("type") or v.get("format") or ", ".join(x.get("type", "?") for x in v.get("anyOf", [])),
        }
        for k, v in (schema.get("properties") or {}).items()
    ]
