"""The upload pages and what follows an upload: the form, the upload itself, a job's progress, assessing again."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from pipeline.records.schema import VISIT_KINDS, Photo, Region
from pipeline.web.auth import Principal
from pipeline.web.deps import context, render, require_roles
from pipeline.web.jobs import enqueue_job
from pipeline.web.page_common import READERS, STAFF, _error
from pipeline.web.settings import WebSettings
from pipeline.web.tenancy import get_client, get_job, get_photo
from pipeline.web.uploads import IncomingPhoto, UploadProblem, ingest_upload, read_capped, sanitise_filename

__all__ = ["add_upload_pages"]


def add_upload_pages(router: APIRouter, settings: WebSettings) -> None:
    """Register the upload and job pages on ``router`` (:func:`pipeline.web.pages.pages_router`'s)."""

    @router.get("/clients/{client_id}/upload", response_class=HTMLResponse)
    def upload_page(request: Request, client_id: int, p: Principal = require_roles(*STAFF)) -> Response:
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            client, clinic = get_client(s, p, client_id)
            regions = s.scalars(sa.select(Region.name).where(Region.client_id == client.id).order_by(Region.name)).all()
        return render(
            request,
            "upload.html.j2",
            client=client,
            clinic=clinic,
            regions=regions,
            kinds=VISIT_KINDS,
            today=ctx.now().date().isoformat(),
            max_mb=settings.max_upload_bytes // 2**20,
        )

    @router.post("/clients/{client_id}/upload")
    async def upload(request: Request, client_id: int, p: Principal = require_roles(*STAFF)) -> Response:
        ctx = context(request)
        form = await request.form(max_files=settings.max_files_per_upload, max_fields=50)
        files = [
            f
            for f in form.getlist("photos")
            if not isinstance(f, str)  # a form's value: text or a file
            and (f.filename or (f.size or 0) > 0)
        ]  # a form sent without a file has an empty part
        if len(files) > settings.max_files_per_upload:
            return _error(request, 413, f"At most {settings.max_files_per_upload} photos per upload.")
        fields = {k: form.get(k) for k in ("region", "date", "kind", "session", "view", "notes")}
        if any(v is not None and not isinstance(v, str) for v in fields.values()):
            return _error(request, 400, "Malformed form.")
        try:  # reading, checking and storing the photos blocks: off the event loop
            result = await run_in_threadpool(_upload_sync, ctx, p, client_id, files, fields)
        except UploadProblem as exc:  # another clinic's client: the same 404 as a missing one
            return _error(request, exc.status, exc.message)
        finally:
            for f in files:
                await f.close()
        ctx.jobs.wake()
        if len(result.photos) == 1:
            return RedirectResponse(f"/jobs/{result.photos[0].job_id}", status_code=303)
        return RedirectResponse(f"/clients/{result.client_id}", status_code=303)

    # ------------------------------------------------------------------ jobs, photos

    @router.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, job_id: int, p: Principal = require_roles(*READERS)) -> Response:
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            job, visit, client = get_job(s, p, job_id)
            photo = s.get(Photo, job.photo_id)
        return render(request, "job.html.j2", job=job, visit=visit, client=client, photo=photo)

    @router.post("/photos/{photo_id}/assess")
    def reassess(request: Request, photo_id: int, p: Principal = require_roles(*STAFF)) -> Response:
        ctx = context(request)
        with ctx.records.transaction() as s:
            row = get_photo(s, p, photo_id)
            job_id = enqueue_job(
                s, photo_id=row.photo.id, visit_id=row.visit.id, user_id=p.user_id, now=ctx.now(), rerun=True
            )
        ctx.jobs.wake()
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _upload_sync(ctx: Any, p: Principal, client_id: int, files: list[Any], fields: dict[str, Any]) -> Any:
    s = ctx.settings
    photos = []
    for f in files:
        name = sanitise_filename(f.filename)
        if f.size is not None and f.size > s.max_upload_bytes:
            raise UploadProblem(413, f"{name}: larger than the upload limit of {s.max_upload_bytes // 2**20} MB")
        f.file.seek(0)
        photos.append(IncomingPhoto(name, read_capped(f.file, s.max_upload_bytes, name)))
    if not photos:
        raise UploadProblem(422, "choose at least one photo file")
    return ingest_upload(
        ctx.records,
        ctx.store,
        ctx.home,
        p,
        photos=photos,
        region=fields["region"] or "",
        date=fields["date"] or "",
        kind=fields["kind"] or "",
        session=fields["session"],
        view=fields["view"],
        notes=fields["notes"],
        client_id=client_id,
        now=ctx.now(),
        limits=ctx.uploads,
    )
