"""Server-rendered pages: login, clients, uploads, job progress, reports, the review queue, admin.

Every page but ``/login`` (and ``/healthz``) needs a logged-in user; every lookup by id
goes through :mod:`pipeline.web.tenancy` (another clinic's id is a 404). Forms post back
with the session's CSRF token. Handlers that touch the database or files are plain
functions (FastAPI runs them in its thread pool, off the event loop).
"""
from __future__ import annotations

import datetime as dt
import secrets
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import IntegrityError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from pipeline.records.review import act_time
from pipeline.records.schema import (
    ROLES,
    VISIT_KINDS,
    ApiToken,
    Assessment,
    Client,
    Clinic,
    Dot,
    Job,
    Photo,
    Region,
    ReviewDecision,
    User,
    Visit,
    VisitPhoto,
)
from pipeline.subject import Subject
from pipeline.web.auth import (
    AuthError,
    Principal,
    account_key,
    authenticate_password,
    close_session,
    create_user,
    csrf_matches,
    issue_token,
    login_csrf_token,
    open_session,
    revoke_token,
    throttle_attempt,
    throttle_key,
    throttle_success,
)
from pipeline.web.deps import (
    PRELOGIN_COOKIE,
    SESSION_COOKIE,
    context,
    current_principal,
    render,
    require_roles,
    require_user,
    safe_next,
    stored_path,
)
from pipeline.web.export import (
    FLAGS,
    RELABELS,
    export_reviews,
    latest_decisions,
    remove_old_exports,
    reviewed_assessment_ids,
    zip_folder,
)
from pipeline.web.jobs import assessment_folder, enqueue_job, insert_ignore
from pipeline.web.settings import WebSettings
from pipeline.web.tenancy import (
    NotFound,
    client_summaries,
    clinic_filter,
    get_assessment,
    get_client,
    get_dot,
    get_job,
    get_photo,
    get_region,
    scoped,
)
from pipeline.web.uploads import IncomingPhoto, UploadProblem, ingest_upload, read_capped, sanitise_filename

__all__ = ["public_router", "pages_router"]

READERS = ROLES
STAFF = ("staff", "admin")
REVIEWERS = ("reviewer", "admin")
ADMINS = ("admin",)
PAGE_SIZE = 40

# --------------------------------------------------------------------------- public: login, health


def public_router(settings: WebSettings) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/favicon.ico")
    def favicon() -> Response:
        # browsers ask for it on every page that names no icon (the reports): nothing, not a 404
        return Response(status_code=204)

    @router.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/") -> Response:
        if current_principal(request) is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        return _login_form(request, next)

    @router.post("/login", response_class=HTMLResponse)
    def login(request: Request, username: str = Form("", max_length=200), password: str = Form("", max_length=1024),
              csrf_token: str = Form(""), next: str = Form("/")) -> Response:
        ctx = context(request)
        pre = request.cookies.get(PRELOGIN_COOKIE, "")
        if not pre or not csrf_matches(login_csrf_token(ctx.secret, pre), csrf_token):
            return _login_form(request, next, "The login form expired: please try again.", 403)
        now = ctx.now()
        address = request.client.host if request.client else "unknown"
        # the attempt is counted (as a failure until the password proves right) in the transaction that
        # read the counts: 40 posts at once cannot all pass one reading of them
        with ctx.records.transaction() as s:
            wait = throttle_attempt(s, username, address, now, ctx.settings.throttle)
        if wait > 0:
            seconds = int(wait) + 1
            return _login_form(request, next, f"Too many failed logins. Try again in {seconds} s.", 429,
                               {"Retry-After": str(seconds)})
        with ctx.records.session(read_only=True) as s:
            found = authenticate_password(s, username, password)
            user_id = found.id if found is not None else None
        user = None
        if user_id is not None:
            with ctx.records.transaction() as s:
                user = s.get(User, user_id)
                throttle_success(s, throttle_key(username, address), account_key(user.username))
                user.last_login_at = now
                token = open_session(s, user.id, now, ctx.settings.session_lifetime_s)
        if user is None:
            return _login_form(request, next, "Wrong username or password.", 401)
        response = RedirectResponse(safe_next(next), status_code=303)
        response.set_cookie(SESSION_COOKIE, token, max_age=ctx.settings.session_lifetime_s, httponly=True,
                            samesite="lax", secure=ctx.settings.secure_cookies, path="/")
        response.delete_cookie(PRELOGIN_COOKIE, path="/login")
        return response

    return router


def _login_form(request: Request, next: str, error: str | None = None, status: int = 200,
                headers: dict[str, str] | None = None) -> Response:
    ctx = context(request)
    pre = request.cookies.get(PRELOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, "login.html.j2", status_code=status, headers=headers, error=error,
                      next=safe_next(next), login_csrf=login_csrf_token(ctx.secret, pre))
    response.set_cookie(PRELOGIN_COOKIE, pre, max_age=3600, httponly=True, samesite="strict",
                        secure=ctx.settings.secure_cookies, path="/login")
    return response


# --------------------------------------------------------------------------- pages (authenticated)


def pages_router(settings: WebSettings) -> APIRouter:
    router = APIRouter(include_in_schema=False, dependencies=[Depends(require_user)])

    @router.get("/logout", response_class=HTMLResponse)
    def logout_page(request: Request) -> Response:
        return render(request, "logout.html.j2")

    @router.post("/logout")
    def logout(request: Request) -> Response:
        ctx = context(request)
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            with ctx.records.transaction() as s:
                close_session(s, cookie)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # ------------------------------------------------------------------ clients

    @router.get("/", response_class=HTMLResponse)
    def clients_page(request: Request, p: Principal = require_roles(*READERS),
                     clinic: str = Query("", max_length=12)) -> Response:
        ctx = context(request)
        clinic = _optional(int, clinic, "clinic")
        with ctx.records.session(read_only=True) as s:
            rows = client_summaries(s, p, clinic)
            clinics = s.execute(sa.select(Clinic.id, Clinic.slug).order_by(Clinic.slug)).all() if p.is_admin else []
        return render(request, "clients.html.j2", clients=rows, clinics=clinics, clinic=clinic, staff=p.role in STAFF)

    @router.post("/clients")
    def create_client(request: Request, p: Principal = require_roles(*STAFF),
                      external_id: str = Form(..., max_length=200), clinic: int | None = Form(None)) -> Response:
        ctx = context(request)
        external = external_id.strip()
        if not external or len(external) > 100:
            return _error(request, 422, "A client id needs 1 to 100 characters.")
        clinic_id = clinic if (p.is_admin and clinic is not None) else p.clinic_id
        with ctx.records.transaction() as s:
            if s.get(Clinic, clinic_id) is None:
                raise NotFound()
            # idempotent: an existing client (or one another request adds meanwhile) is simply opened
            insert_ignore(s, Client, {"clinic_id": clinic_id, "external_id": external, "created_at": ctx.now()})
            client_id = s.scalar(sa.select(Client.id).where(Client.clinic_id == clinic_id,
                                                             Client.external_id == external))
        return RedirectResponse(f"/clients/{client_id}", status_code=303)

    @router.get("/clients/{client_id}", response_class=HTMLResponse)
    def client_page(request: Request, client_id: int, p: Principal = require_roles(*READERS)) -> Response:
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            client, clinic = get_client(s, p, client_id)
            visits = _client_visits(s, client.id)
            regions = s.execute(sa.select(Region.id, Region.name).where(Region.client_id == client.id)
                                .order_by(Region.name)).all()
        # photos with an assessment, oldest first: the choices of the before/after form
        comparable = [(ph["photo"].id,
                       f'{v["visit"].visit_date} · {v["region"]} · {ph["photo"].original_name}')
                      for v in reversed(visits) for ph in v["photos"] if ph["assessments"]]
        return render(request, "client.html.j2", client=client, clinic=clinic, visits=visits, regions=regions,
                      comparable=comparable, kinds=VISIT_KINDS, staff=p.role in STAFF, reviewer=p.role in REVIEWERS,
                      today=ctx.now().date().isoformat(), max_mb=settings.max_upload_bytes // 2**20)

    @router.get("/clients/{client_id}/upload", response_class=HTMLResponse)
    def upload_page(request: Request, client_id: int, p: Principal = require_roles(*STAFF)) -> Response:
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            client, clinic = get_client(s, p, client_id)
            regions = s.scalars(sa.select(Region.name).where(Region.client_id == client.id).order_by(Region.name)).all()
        return render(request, "upload.html.j2", client=client, clinic=clinic, regions=regions, kinds=VISIT_KINDS,
                      today=ctx.now().date().isoformat(), max_mb=settings.max_upload_bytes // 2**20)

    @router.post("/clients/{client_id}/upload")
    async def upload(request: Request, client_id: int, p: Principal = require_roles(*STAFF)) -> Response:
        ctx = context(request)
        form = await request.form(max_files=settings.max_files_per_upload, max_fields=50)
        files = [f for f in form.getlist("photos") if hasattr(f, "read")
                 and (f.filename or (f.size or 0) > 0)]  # a form sent without a file has an empty part
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

    # ------------------------------------------------------------------ jobs, photos, reports

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
            job_id = enqueue_job(s, photo_id=row.photo.id, visit_id=row.visit.id, user_id=p.user_id, now=ctx.now(),
                                 rerun=True)
        ctx.jobs.wake()
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    @router.get("/reports/assessment/{assessment_id}", response_class=HTMLResponse)
    def assessment_report(request: Request, assessment_id: int, p: Principal = require_roles(*READERS)) -> Response:
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            _, row = get_assessment(s, p, assessment_id)
            subject = _subject(s, row)
        folder = assessment_folder(ctx.home, assessment_id)
        if not (folder / "assessment.json").is_file():
            return _error(request, 404, "This assessment has no report files (it was made outside the web app). "
                                        "Assess the photo again from the client's page.")
        return _report(request, "render_assessment", folder, row.client, subject=subject)

    @router.get("/reports/timeline/{region_id}", response_class=HTMLResponse)
    def timeline_report(request: Request, region_id: int, p: Principal = require_roles(*READERS)) -> Response:
        from pipeline.web.tracking import region_tracking

        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            region, client = get_region(s, p, region_id)
            slug = s.scalar(sa.select(Clinic.slug).where(Clinic.id == client.clinic_id))
        result = region_tracking(ctx.records, ctx.store, ctx.home, clinic=slug or "", client_id=client.id,
                                 client=client.external_id, region_id=region.id)
        if result.folder is None:
            return _error(request, 409, f"No timeline for {region.name} yet: {result.problem}.")
        return _report(request, "render_timeline", result.folder, client)

    @router.get("/reports/compare", response_class=HTMLResponse)
    def compare_form(request: Request, p: Principal = require_roles(*READERS), before: str = Query(""),
                     after: str = Query("")) -> Response:
        """The client page's form (GET, two photo ids): to the comparison's own address."""
        if not (before.isdigit() and after.isdigit()):
            return _error(request, 422, "Choose a before photo and an after photo to compare.")
        return RedirectResponse(f"/reports/compare/{int(before)}/{int(after)}", status_code=303)

    @router.get("/reports/compare/{before_photo_id}/{after_photo_id}", response_class=HTMLResponse)
    def comparison_report(request: Request, before_photo_id: int, after_photo_id: int,
                          p: Principal = require_roles(*READERS)) -> Response:
        from pipeline.web.comparisons import ComparisonProblem, build_comparison

        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            rows = [get_photo(s, p, before_photo_id), get_photo(s, p, after_photo_id)]
            if rows[0].client.id != rows[1].client.id:
                return _error(request, 422, "The two photos belong to different clients: a before/after "
                                            "comparison needs two photos of the same client.")
            if rows[0].photo.id == rows[1].photo.id:
                return _error(request, 422, "Choose two different photos to compare.")
            assessed = []
            for side, row in zip(("before", "after"), rows):
                found = _latest_assessment(s, ctx.home, row.photo.id)
                if found is None:
                    job = s.scalars(sa.select(Job).where(Job.photo_id == row.photo.id)).first()
                    name = row.photo.original_name
                    if job is not None and job.status == "failed":
                        return _error(request, 422, f"The {side} photo ({name}) could not be assessed: "
                                                    f"{job.error or 'unknown reason'}. Assess it again, or "
                                                    "choose another photo.")
                    return _error(request, 409, f"The {side} photo ({name}) has no finished assessment yet: "
                                                "wait for its assessment to finish, then try again.")
                assessed.append((found, row.photo.stored_path))
            subjects = tuple(_subject(s, row) for row in rows)
        try:
            calibration = _calibration_settings(settings)
            folder = build_comparison(ctx.home, ctx.store, assessed[0][0], assessed[1][0], assessed[0][1],
                                      assessed[1][1], calibration=calibration)
        except ComparisonProblem as exc:
            return _error(request, 422, f"The photos cannot be compared: {exc}.")
        return _report(request, "render_comparison", folder, rows[0].client, subjects=subjects)

    # ------------------------------------------------------------------ review queue

    @router.get("/review", response_class=HTMLResponse)
    def review_page(request: Request, p: Principal = require_roles(*REVIEWERS),
                    flag: str = Query("any", pattern="^(any|blue_shift|faded|spread)$"),
                    status: str = Query("unreviewed", pattern="^(unreviewed|reviewed|all)$"),
                    date_from: str = Query("", max_length=10), date_to: str = Query("", max_length=10),
                    clinic: str = Query("", max_length=12), page: int = Query(1, ge=1, le=100_000)) -> Response:
        ctx = context(request)
        # the filter form sends empty fields: they mean "any"
        date_from, date_to = _optional(dt.date.fromisoformat, date_from, "date_from"), \
            _optional(dt.date.fromisoformat, date_to, "date_to")
        clinic = _optional(int, clinic, "clinic")
        with ctx.records.session(read_only=True) as s:
            rows, more = _review_rows(s, p, flag=flag, status=status, date_from=date_from, date_to=date_to,
                                      clinic=clinic, page=page)
            decisions = latest_decisions(s, [r["dot"].id for r in rows]) if rows else {}
            clinics = s.execute(sa.select(Clinic.id, Clinic.slug).order_by(Clinic.slug)).all() if p.is_admin else []
        query = {k: v for k, v in {"flag": flag, "status": status, "date_from": date_from, "date_to": date_to,
                                   "clinic": clinic}.items() if v not in (None, "")}
        here = "/review?" + urlencode({**query, "page": page})
        return render(request, "review.html.j2", rows=rows, decisions=decisions, flag=flag, status=status,
                      date_from=date_from, date_to=date_to, clinic=clinic, clinics=clinics, page=page, more=more,
                      here=here, query=urlencode(query), flags=FLAGS, relabels=RELABELS)

    @router.get("/review/crops/{dot_id}")
    def dot_crop(request: Request, dot_id: int, p: Principal = require_roles(*REVIEWERS)) -> Response:
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            dot, assessment, row = get_dot(s, p, dot_id)
        data = ctx.crops.crop(stored_path(ctx, row.photo.stored_path), assessment.id, dot.dot_index, dot.x, dot.y,
                              dot.diameter_px)
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    # (before /review/{dot_id}: routes match in order)
    @router.get("/review/export", response_class=HTMLResponse)
    def export_page(request: Request, p: Principal = require_roles(*REVIEWERS)) -> Response:
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            stmt = scoped(sa.select(sa.func.count(sa.distinct(Assessment.photo_id)))
                          .join(VisitPhoto, VisitPhoto.photo_id == Assessment.photo_id)
                          .join(Visit, Visit.id == VisitPhoto.visit_id).join(Client, Client.id == Visit.client_id)
                          .where(Assessment.id.in_(reviewed_assessment_ids())), p)
            n = s.scalar(stmt)
            clinics = s.execute(sa.select(Clinic.id, Clinic.slug).order_by(Clinic.slug)).all() if p.is_admin else []
        return render(request, "review_export.html.j2", photos=n, clinics=clinics)

    @router.post("/review/export")
    def export(request: Request, p: Principal = require_roles(*REVIEWERS), clinic: int | None = Form(None)) -> Response:
        ctx = context(request)
        clinic_id = clinic_filter(p, clinic)
        with ctx.records.session(read_only=True) as s:
            slug = s.scalar(sa.select(Clinic.slug).where(Clinic.id == clinic_id)) if clinic_id is not None else "all"
        if slug is None:
            raise NotFound()
        stamp = ctx.now().strftime("%Y%m%dT%H%M%SZ")
        name = f"review-{slug}-{stamp}-{secrets.token_hex(3)}"
        folder = ctx.home / "exports" / name
        folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        remove_old_exports(folder.parent, time.time(), ctx.settings.export_retention_s)  # file times are real
        result = export_reviews(ctx.records, ctx.store, folder, clinic_id=clinic_id)
        archive = zip_folder(result.folder, folder.with_suffix(".zip"))
        shutil.rmtree(result.folder, ignore_errors=True)  # the zip holds it
        headers = {"X-Export-Photos": str(result.photos), "X-Export-Dots": str(result.dots)}
        if result.missing:
            headers["X-Export-Missing"] = ",".join(result.missing)
        # the labels (clinic photos) stay on the server only until they are downloaded
        return FileResponse(archive, media_type="application/zip", filename=f"{name}.zip", headers=headers,
                            background=BackgroundTask(archive.unlink, missing_ok=True))

    @router.post("/review/{dot_id}")
    def review_dot(request: Request, dot_id: int, p: Principal = require_roles(*REVIEWERS),
                   decision: str = Form(..., pattern="^(accept|reject|relabel)$"),
                   new_label: str = Form(""), note: str = Form("", max_length=2000),
                   next: str = Form("/review")) -> Response:
        from pipeline.records import record_review

        ctx = context(request)
        label = new_label.strip() or None
        if decision == "relabel" and label not in RELABELS:
            return _decision_error(request, f"relabel needs a new label: one of {', '.join(RELABELS)}")
        if decision != "relabel":
            label = None
        with ctx.records.transaction() as s:
            dot, assessment, _ = get_dot(s, p, dot_id)
            decision_id = record_review(s, dot.id, decision, p.username, new_label=label, note=note.strip() or None,
                                        reviewer_user_id=p.user_id, at=act_time(s, assessment.id, ctx.now()))
        if _wants_json(request):
            return _json({"dot_id": dot_id, "decision": decision, "new_label": label, "id": decision_id})
        return RedirectResponse(safe_next(next, "/review"), status_code=303)

    # ------------------------------------------------------------------ admin

    @router.get("/admin/users", response_class=HTMLResponse)
    def users_page(request: Request, p: Principal = require_roles(*ADMINS)) -> Response:
        return _users_page(request)

    @router.post("/admin/users")
    def add_user(request: Request, p: Principal = require_roles(*ADMINS), username: str = Form(..., max_length=200),
                 clinic: str = Form(..., max_length=64), role: str = Form(...),
                 password: str = Form(..., max_length=1024)) -> Response:
        ctx = context(request)
        try:
            with ctx.records.transaction() as s:
                create_user(s, username, clinic=clinic, role=role, password=password)
        except (AuthError, IntegrityError) as exc:
            return _users_page(request, error=str(exc) if isinstance(exc, AuthError) else "user exists already",
                               status=422)
        return RedirectResponse("/admin/users", status_code=303)

    @router.post("/admin/users/{user_id}/active")
    def set_active(request: Request, user_id: int, p: Principal = require_roles(*ADMINS),
                   active: bool = Form(...)) -> Response:
        ctx = context(request)
        if user_id == p.user_id and not active:
            return _users_page(request, error="you cannot deactivate yourself", status=422)
        with ctx.records.transaction() as s:
            user = s.get(User, user_id)
            if user is None:
                raise NotFound()
            user.active = active
        return RedirectResponse("/admin/users", status_code=303)

    @router.post("/admin/users/{user_id}/tokens", response_class=HTMLResponse)
    def new_token(request: Request, user_id: int, p: Principal = require_roles(*ADMINS),
                  name: str = Form(..., max_length=100)) -> Response:
        ctx = context(request)
        try:
            with ctx.records.transaction() as s:
                if s.get(User, user_id) is None:
                    raise NotFound()
                token_id, token = issue_token(s, user_id, name)
        except AuthError as exc:
            return _users_page(request, error=str(exc), status=422)
        return render(request, "token_created.html.j2", token=token, token_id=token_id, token_name=name)

    @router.post("/admin/tokens/{token_id}/revoke")
    def revoke(request: Request, token_id: int, p: Principal = require_roles(*ADMINS)) -> Response:
        ctx = context(request)
        with ctx.records.transaction() as s:
            if not revoke_token(s, token_id, ctx.now()):
                raise NotFound()
        return RedirectResponse("/admin/users", status_code=303)

    return router


# --------------------------------------------------------------------------- helpers


def _optional(parse: Any, text: str, name: str) -> Any:
    """``parse(text)``, None for an empty field; a 422 naming the field if it does not parse."""
    if not text.strip():
        return None
    try:
        return parse(text.strip())
    except ValueError:
        raise UploadProblem(422, f"{name}: {text!r} is not valid") from None


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
    return ingest_upload(ctx.records, ctx.store, ctx.home, p, photos=photos, region=fields["region"] or "",
                         date=fields["date"] or "", kind=fields["kind"] or "", session=fields["session"],
                         view=fields["view"], notes=fields["notes"], client_id=client_id, now=ctx.now(),
                         limits=ctx.uploads)


def _subject(s: Any, row: Any) -> Subject:
    """Client, region and visit of a photo, from the records (what its report is named by)."""
    region = s.scalar(sa.select(Region.name).where(Region.id == row.visit.region_id))
    return Subject(client=row.client.external_id, region=region, date=row.visit.visit_date, kind=row.visit.kind,
                   session=row.visit.session_number or 0)


def _report(request: Request, function: str, folder: Path, client: Any, **names: Any) -> Response:
    """The report of ``folder`` (``function`` of pipeline.report), named by ``names`` (subject or
    subjects), with a link back to the client's page."""
    try:
        import pipeline.report as report
    except ImportError:
        return _error(request, 503, "Reports are not available in this installation (pipeline.report is missing).")
    try:
        html = getattr(report, function)(folder, link=f"/clients/{int(client.id)}",
                                         link_label=f"Back to {client.external_id} in smp-assess", **names)
    except report.ReportError as exc:
        return _error(request, 500, f"The report could not be made: {exc}")
    # the report is a self-contained document (inline styles, embedded images): its own policy
    csp = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
           "font-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'; frame-ancestors 'self'")
    return HTMLResponse(html, headers={"Content-Security-Policy": csp})


def _latest_assessment(s: Any, home: Path, photo_id: int) -> int | None:
    """Id of the photo's newest assessment that has its output folder, or None."""
    for assessment_id in s.scalars(sa.select(Assessment.id).where(Assessment.photo_id == photo_id)
                                   .order_by(Assessment.created_at.desc(), Assessment.id.desc())):
        if (assessment_folder(home, assessment_id) / "assessment.json").is_file():
            return int(assessment_id)
    return None


def _calibration_settings(settings: WebSettings) -> Any:
    """The calibration settings the worker's assessor uses (for refitting colour corrections)."""
    from pipeline.one_photo.assess import load_assess_settings

    try:
        return load_assess_settings(settings.assess_config, list(settings.assess_overrides)).calibration
    except Exception:  # noqa: BLE001 - the defaults then
        return None


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _json(doc: dict[str, Any], status: int = 200) -> Response:
    from fastapi.responses import JSONResponse

    return JSONResponse(doc, status_code=status)


def _decision_error(request: Request, message: str) -> Response:
    if _wants_json(request):
        return _json({"detail": message}, 422)
    return _error(request, 422, message)


def _error(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html.j2", status_code=status, status=status, message=message)


def _users_page(request: Request, error: str | None = None, status: int = 200) -> Response:
    ctx = context(request)
    with ctx.records.session(read_only=True) as s:
        users = s.execute(sa.select(User, Clinic.slug).join(Clinic, Clinic.id == User.clinic_id)
                          .order_by(Clinic.slug, User.username)).all()
        tokens = s.scalars(sa.select(ApiToken).order_by(ApiToken.user_id, ApiToken.id)).all()
        clinics = s.scalars(sa.select(Clinic.slug).order_by(Clinic.slug)).all()
    by_user: dict[int, list[ApiToken]] = {}
    for t in tokens:
        by_user.setdefault(t.user_id, []).append(t)
    return render(request, "admin_users.html.j2", status_code=status, users=users, tokens=by_user, roles=ROLES,
                  clinics=clinics, error=error)


def _client_visits(s: Any, client_id: int) -> list[dict[str, Any]]:
    """The client's visits, newest first, with their photos, jobs and assessments."""
    rows = s.execute(sa.select(Visit, Region.name, Photo, Job)
                     .join(Region, Region.id == Visit.region_id)
                     .outerjoin(VisitPhoto, VisitPhoto.visit_id == Visit.id)
                     .outerjoin(Photo, Photo.id == VisitPhoto.photo_id)
                     .outerjoin(Job, Job.photo_id == Photo.id)
                     .where(Visit.client_id == client_id)
                     .order_by(Visit.visit_date.desc(), Visit.id.desc(), Photo.id)).all()
    photo_ids = [r[2].id for r in rows if r[2] is not None]
    assessments: dict[int, list[Any]] = {}
    if photo_ids:
        flagged = sa.func.sum(sa.case((sa.or_(Dot.blue_shift, Dot.faded, Dot.spread), 1), else_=0))
        for a, n_flagged in s.execute(sa.select(Assessment, flagged).outerjoin(Dot, Dot.assessment_id == Assessment.id)
                                      .where(Assessment.photo_id.in_(photo_ids)).group_by(Assessment.id)
                                      .order_by(Assessment.created_at.desc(), Assessment.id.desc())):
            assessments.setdefault(a.photo_id, []).append((a, int(n_flagged or 0)))
    visits: dict[int, dict[str, Any]] = {}
    for visit, region, photo, job in rows:
        entry = visits.setdefault(visit.id, {"visit": visit, "region": region, "photos": []})
        if photo is not None:
            entry["photos"].append({"photo": photo, "job": job, "assessments": assessments.get(photo.id, [])})
    return list(visits.values())


def _review_rows(s: Any, p: Principal, *, flag: str, status: str, date_from: dt.date | None,
                 date_to: dt.date | None, clinic: int | None, page: int) -> tuple[list[dict[str, Any]], bool]:
    stmt = (sa.select(Dot, Assessment.id, Photo.id, Photo.original_name, Visit.visit_date, Visit.kind, Client.id,
                      Client.external_id, Clinic.slug)
            .join(Assessment, Assessment.id == Dot.assessment_id).join(Photo, Photo.id == Assessment.photo_id)
            .join(VisitPhoto, VisitPhoto.photo_id == Photo.id).join(Visit, Visit.id == VisitPhoto.visit_id)
            .join(Client, Client.id == Visit.client_id).join(Clinic, Clinic.id == Client.clinic_id))
    stmt = stmt.where(getattr(Dot, flag).is_(True)) if flag in FLAGS else stmt.where(
        sa.or_(Dot.blue_shift.is_(True), Dot.faded.is_(True), Dot.spread.is_(True)))
    limit = clinic_filter(p, clinic)
    if limit is not None:
        stmt = stmt.where(Client.clinic_id == limit)
    if date_from is not None:
        stmt = stmt.where(Visit.visit_date >= date_from)
    if date_to is not None:
        stmt = stmt.where(Visit.visit_date <= date_to)
    reviewed = sa.exists().where(ReviewDecision.dot_id == Dot.id, ReviewDecision.undone_at.is_(None))
    if status == "unreviewed":
        stmt = stmt.where(~reviewed)
    elif status == "reviewed":
        stmt = stmt.where(reviewed)
    stmt = stmt.order_by(Visit.visit_date.desc(), Assessment.id.desc(), Dot.dot_index)
    found = s.execute(stmt.limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE)).all()
    rows = [{"dot": d, "assessment_id": aid, "photo_id": pid, "photo_name": name, "visit_date": day, "kind": kind,
             "client_id": cid, "client": ext, "clinic": slug}
            for d, aid, pid, name, day, kind, cid, ext, slug in found[:PAGE_SIZE]]
    return rows, len(found) > PAGE_SIZE

