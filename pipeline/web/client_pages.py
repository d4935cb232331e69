"""The clients pages: the list of clients, adding one, a client's page with its visits."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pipeline.records.schema import VISIT_KINDS, Assessment, Client, Clinic, Dot, Job, Photo, Region, Visit, VisitPhoto
from pipeline.web.auth import Principal
from pipeline.web.deps import context, render, require_roles
from pipeline.web.jobs import insert_ignore
from pipeline.web.page_common import READERS, REVIEWERS, STAFF, _error, _optional
from pipeline.web.settings import WebSettings
from pipeline.web.tenancy import NotFound, client_summaries, get_client

__all__ = ["add_client_pages"]


def add_client_pages(router: APIRouter, settings: WebSettings) -> None:
    """Register the clients pages on ``router`` (:func:`pipeline.web.pages.pages_router`'s)."""

    @router.get("/", response_class=HTMLResponse)
    def clients_page(
        request: Request, p: Principal = require_roles(*READERS), clinic: str = Query("", max_length=12)
    ) -> Response:
        ctx = context(request)
        clinic_id = _optional(int, clinic, "clinic")
        with ctx.records.session(read_only=True) as s:
            rows = client_summaries(s, p, clinic_id)
            clinics = s.execute(sa.select(Clinic.id, Clinic.slug).order_by(Clinic.slug)).all() if p.is_admin else []
        return render(
            request, "clients.html.j2", clients=rows, clinics=clinics, clinic=clinic_id, staff=p.role in STAFF
        )

    @router.post("/clients")
    def create_client(
        request: Request,
        p: Principal = require_roles(*STAFF),
        external_id: str = Form(..., max_length=200),
        clinic: int | None = Form(None),
    ) -> Response:
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
            client_id = s.scalar(
                sa.select(Client.id).where(Client.clinic_id == clinic_id, Client.external_id == external)
            )
        return RedirectResponse(f"/clients/{client_id}", status_code=303)

    @router.get("/clients/{client_id}", response_class=HTMLResponse)
    def client_page(request: Request, client_id: int, p: Principal = require_roles(*READERS)) -> Response:
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            client, clinic = get_client(s, p, client_id)
            visits = _client_visits(s, client.id)
            regions = s.execute(
                sa.select(Region.id, Region.name).where(Region.client_id == client.id).order_by(Region.name)
            ).all()
        # photos with an assessment, oldest first: the choices of the before/after form
        comparable = [
            (ph["photo"].id, f"{v['visit'].visit_date} · {v['region']} · {ph['photo'].original_name}")
            for v in reversed(visits)
            for ph in v["photos"]
            if ph["assessments"]
        ]
        return render(
            request,
            "client.html.j2",
            client=client,
            clinic=clinic,
            visits=visits,
            regions=regions,
            comparable=comparable,
            kinds=VISIT_KINDS,
            staff=p.role in STAFF,
            reviewer=p.role in REVIEWERS,
            today=ctx.now().date().isoformat(),
            max_mb=settings.max_upload_bytes // 2**20,
        )


def _client_visits(s: Any, client_id: int) -> list[dict[str, Any]]:
    """The client's visits, newest first, with their photos, jobs and assessments."""
    rows = s.execute(
        sa.select(Visit, Region.name, Photo, Job)
        .join(Region, Region.id == Visit.region_id)
        .outerjoin(VisitPhoto, VisitPhoto.visit_id == Visit.id)
        .outerjoin(Photo, Photo.id == VisitPhoto.photo_id)
        .outerjoin(Job, Job.photo_id == Photo.id)
        .where(Visit.client_id == client_id)
        .order_by(Visit.visit_date.desc(), Visit.id.desc(), Photo.id)
    ).all()
    photo_ids = [r[2].id for r in rows if r[2] is not None]
    assessments: dict[int, list[Any]] = {}
    if photo_ids:
        flagged = sa.func.sum(sa.case((sa.or_(Dot.blue_shift, Dot.faded, Dot.spread), 1), else_=0))
        for a, n_flagged in s.execute(
            sa.select(Assessment, flagged)
            .outerjoin(Dot, Dot.assessment_id == Assessment.id)
            .where(Assessment.photo_id.in_(photo_ids))
            .group_by(Assessment.id)
            .order_by(Assessment.created_at.desc(), Assessment.id.desc())
        ):
            assessments.setdefault(a.photo_id, []).append((a, int(n_flagged or 0)))
    visits: dict[int, dict[str, Any]] = {}
    for visit, region, photo, job in rows:
        entry = visits.setdefault(visit.id, {"visit": visit, "region": region, "photos": []})
        if photo is not None:
            entry["photos"].append({"photo": photo, "job": job, "assessments": assessments.get(photo.id, [])})
    return list(visits.values())
