"""The review queue pages: flagged dots to decide on, their crops, a decision, the export of the labels."""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
import time
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.background import BackgroundTask

from pipeline.records.review import act_time
from pipeline.records.schema import Assessment, Client, Clinic, Dot, Photo, ReviewDecision, Visit, VisitPhoto
from pipeline.web.auth import Principal
from pipeline.web.deps import context, render, require_roles, safe_next, stored_path
from pipeline.web.export import (
    FLAGS,
    RELABELS,
    export_reviews,
    latest_decisions,
    remove_old_exports,
    reviewed_assessment_ids,
    zip_folder,
)
from pipeline.web.page_common import REVIEWERS, _error, _optional
from pipeline.web.settings import WebSettings
from pipeline.web.tenancy import NotFound, clinic_filter, get_dot, scoped

__all__ = ["add_review_pages"]

PAGE_SIZE = 40


def add_review_pages(router: APIRouter, settings: WebSettings) -> None:
    """Register the review queue pages on ``router`` (:func:`pipeline.web.pages.pages_router`'s)."""

    @router.get("/review", response_class=HTMLResponse)
    def review_page(
        request: Request,
        p: Principal = require_roles(*REVIEWERS),
        flag: str = Query("any", pattern="^(any|blue_shift|faded|spread)$"),
        status: str = Query("unreviewed", pattern="^(unreviewed|reviewed|all)$"),
        date_from: str = Query("", max_length=10),
        date_to: str = Query("", max_length=10),
        clinic: str = Query("", max_length=12),
        page: int = Query(1, ge=1, le=100_000),
    ) -> Response:
        ctx = context(request)
        # the filter form sends empty fields: they mean "any"
        day_from, day_to = (
            _optional(dt.date.fromisoformat, date_from, "date_from"),
            _optional(dt.date.fromisoformat, date_to, "date_to"),
        )
        clinic_id = _optional(int, clinic, "clinic")
        with ctx.records.session(read_only=True) as s:
            rows, more = _review_rows(
                s, p, flag=flag, status=status, date_from=day_from, date_to=day_to, clinic=clinic_id, page=page
            )
            decisions = latest_decisions(s, [r["dot"].id for r in rows]) if rows else {}
            clinics = s.execute(sa.select(Clinic.id, Clinic.slug).order_by(Clinic.slug)).all() if p.is_admin else []
        query = {
            k: v
            for k, v in {
                "flag": flag,
                "status": status,
                "date_from": day_from,
                "date_to": day_to,
                "clinic": clinic_id,
            }.items()
            if v not in (None, "")
        }
        here = "/review?" + urlencode({**query, "page": page})
        return render(
            request,
            "review.html.j2",
            rows=rows,
            decisions=decisions,
            flag=flag,
            status=status,
            date_from=day_from,
            date_to=day_to,
            clinic=clinic_id,
            clinics=clinics,
            page=page,
            more=more,
            here=here,
            query=urlencode(query),
            flags=FLAGS,
            relabels=RELABELS,
        )

    @router.get("/review/crops/{dot_id}")
    def dot_crop(request: Request, dot_id: int, p: Principal = require_roles(*REVIEWERS)) -> Response:
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            dot, assessment, row = get_dot(s, p, dot_id)
        data = ctx.crops.crop(
            stored_path(ctx, row.photo.stored_path), assessment.id, dot.dot_index, dot.x, dot.y, dot.diameter_px
        )
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    # (before /review/{dot_id}: routes match in order)
    @router.get("/review/export", response_class=HTMLResponse)
    def export_page(request: Request, p: Principal = require_roles(*REVIEWERS)) -> Response:
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            stmt = scoped(
                sa.select(sa.func.count(sa.distinct(Assessment.photo_id)))
                .join(VisitPhoto, VisitPhoto.photo_id == Assessment.photo_id)
                .join(Visit, Visit.id == VisitPhoto.visit_id)
                .join(Client, Client.id == Visit.client_id)
                .where(Assessment.id.in_(reviewed_assessment_ids())),
                p,
            )
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
        return FileResponse(
            archive,
            media_type="application/zip",
            filename=f"{name}.zip",
            headers=headers,
            background=BackgroundTask(archive.unlink, missing_ok=True),
        )

    @router.post("/review/{dot_id}")
    def review_dot(
        request: Request,
        dot_id: int,
        p: Principal = require_roles(*REVIEWERS),
        decision: str = Form(..., pattern="^(accept|reject|relabel)$"),
        new_label: str = Form(""),
        note: str = Form("", max_length=2000),
        next: str = Form("/review"),
    ) -> Response:
        from pipeline.records import record_review

        ctx = context(request)
        label = new_label.strip() or None
        if decision == "relabel" and label not in RELABELS:
            return _decision_error(request, f"relabel needs a new label: one of {', '.join(RELABELS)}")
        if decision != "relabel":
            label = None
        with ctx.records.transaction() as s:
            dot, assessment, _ = get_dot(s, p, dot_id)
            decision_id = record_review(
                s,
                dot.id,
                decision,
                p.username,
                new_label=label,
                note=note.strip() or None,
                reviewer_user_id=p.user_id,
                at=act_time(s, assessment.id, ctx.now()),
            )
        if _wants_json(request):
            return _json({"dot_id": dot_id, "decision": decision, "new_label": label, "id": decision_id})
        return RedirectResponse(safe_next(next, "/review"), status_code=303)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _json(doc: dict[str, Any], status: int = 200) -> Response:
    from fastapi.responses import JSONResponse

    return JSONResponse(doc, status_code=status)


def _decision_error(request: Request, message: str) -> Response:
    if _wants_json(request):
        return _json({"detail": message}, 422)
    return _error(request, 422, message)


def _review_rows(
    s: Any,
    p: Principal,
    *,
    flag: str,
    status: str,
    date_from: dt.date | None,
    date_to: dt.date | None,
    clinic: int | None,
    page: int,
) -> tuple[list[dict[str, Any]], bool]:
    stmt = (
        sa.select(
            Dot,
            Assessment.id,
            Photo.id,
            Photo.original_name,
            Visit.visit_date,
            Visit.kind,
            Client.id,
            Client.external_id,
            Clinic.slug,
        )
        .join(Assessment, Assessment.id == Dot.assessment_id)
        .join(Photo, Photo.id == Assessment.photo_id)
        .join(VisitPhoto, VisitPhoto.photo_id == Photo.id)
        .join(Visit, Visit.id == VisitPhoto.visit_id)
        .join(Client, Client.id == Visit.client_id)
        .join(Clinic, Clinic.id == Client.clinic_id)
    )
    stmt = (
        stmt.where(getattr(Dot, flag).is_(True))
        if flag in FLAGS
        else stmt.where(sa.or_(Dot.blue_shift.is_(True), Dot.faded.is_(True), Dot.spread.is_(True)))
    )
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
    rows = [
        {
            "dot": d,
            "assessment_id": aid,
            "photo_id": pid,
            "photo_name": name,
            "visit_date": day,
            "kind": kind,
            "client_id": cid,
            "client": ext,
            "clinic": slug,
        }
        for d, aid, pid, name, day, kind, cid, ext, slug in found[:PAGE_SIZE]
    ]
    return rows, len(found) > PAGE_SIZE
