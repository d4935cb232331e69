"""The report pages: an assessment's report, a region's timeline, a before/after comparison of two photos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pipeline.records.schema import Assessment, Clinic, Job, Region
from pipeline.subject import Subject
from pipeline.web.auth import Principal
from pipeline.web.deps import context, require_roles
from pipeline.web.jobs import assessment_folder
from pipeline.web.page_common import READERS, _error
from pipeline.web.settings import WebSettings
from pipeline.web.tenancy import get_assessment, get_photo, get_region

__all__ = ["add_report_pages"]


def add_report_pages(router: APIRouter, settings: WebSettings) -> None:
    """Register the report pages on ``router`` (:func:`pipeline.web.pages.pages_router`'s)."""

    @router.get("/reports/assessment/{assessment_id}", response_class=HTMLResponse)
    def assessment_report(request: Request, assessment_id: int, p: Principal = require_roles(*READERS)) -> Response:
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            _, row = get_assessment(s, p, assessment_id)
            subject = _subject(s, row)
        folder = assessment_folder(ctx.home, assessment_id)
        if not (folder / "assessment.json").is_file():
            return _error(
                request,
                404,
                "This assessment has no report files (it was made outside the web app). "
                "Assess the photo again from the client's page.",
            )
        return _report(request, "render_assessment", folder, row.client, subject=subject)

    @router.get("/reports/timeline/{region_id}", response_class=HTMLResponse)
    def timeline_report(request: Request, region_id: int, p: Principal = require_roles(*READERS)) -> Response:
        from pipeline.web.tracking import region_tracking

        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            region, client = get_region(s, p, region_id)
            slug = s.scalar(sa.select(Clinic.slug).where(Clinic.id == client.clinic_id))
        result = region_tracking(
            ctx.records,
            ctx.store,
            ctx.home,
            clinic=slug or "",
            client_id=client.id,
            client=client.external_id,
            region_id=region.id,
        )
        if result.folder is None:
            return _error(request, 409, f"No timeline for {region.name} yet: {result.problem}.")
        return _report(request, "render_timeline", result.folder, client)

    @router.get("/reports/compare", response_class=HTMLResponse)
    def compare_form(
        request: Request, p: Principal = require_roles(*READERS), before: str = Query(""), after: str = Query("")
    ) -> Response:
        """The client page's form (GET, two photo ids): to the comparison's own address."""
        if not (before.isdigit() and after.isdigit()):
            return _error(request, 422, "Choose a before photo and an after photo to compare.")
        return RedirectResponse(f"/reports/compare/{int(before)}/{int(after)}", status_code=303)

    @router.get("/reports/compare/{before_photo_id}/{after_photo_id}", response_class=HTMLResponse)
    def comparison_report(
        request: Request, before_photo_id: int, after_photo_id: int, p: Principal = require_roles(*READERS)
    ) -> Response:
        from pipeline.web.comparisons import ComparisonProblem, build_comparison

        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            rows = [get_photo(s, p, before_photo_id), get_photo(s, p, after_photo_id)]
            if rows[0].client.id != rows[1].client.id:
                return _error(
                    request,
                    422,
                    "The two photos belong to different clients: a before/after "
                    "comparison needs two photos of the same client.",
                )
            if rows[0].photo.id == rows[1].photo.id:
                return _error(request, 422, "Choose two different photos to compare.")
            assessed = []
            for side, row in zip(("before", "after"), rows):
                found = _latest_assessment(s, ctx.home, row.photo.id)
                if found is None:
                    job = s.scalars(sa.select(Job).where(Job.photo_id == row.photo.id)).first()
                    name = row.photo.original_name
                    if job is not None and job.status == "failed":
                        return _error(
                            request,
                            422,
                            f"The {side} photo ({name}) could not be assessed: "
                            f"{job.error or 'unknown reason'}. Assess it again, or "
                            "choose another photo.",
                        )
                    return _error(
                        request,
                        409,
                        f"The {side} photo ({name}) has no finished assessment yet: "
                        "wait for its assessment to finish, then try again.",
                    )
                assessed.append((found, row.photo.stored_path))
            subjects = tuple(_subject(s, row) for row in rows)
        try:
            calibration = _calibration_settings(settings)
            folder = build_comparison(
                ctx.home,
                ctx.store,
                assessed[0][0],
                assessed[1][0],
                assessed[0][1],
                assessed[1][1],
                calibration=calibration,
            )
        except ComparisonProblem as exc:
            return _error(request, 422, f"The photos cannot be compared: {exc}.")
        return _report(request, "render_comparison", folder, rows[0].client, subjects=subjects)


def _subject(s: Any, row: Any) -> Subject:
    """Client, region and visit of a photo, from the records (what its report is named by)."""
    region = s.scalar(sa.select(Region.name).where(Region.id == row.visit.region_id))
    return Subject(
        client=row.client.external_id,
        region=region,
        date=row.visit.visit_date,
        kind=row.visit.kind,
        session=row.visit.session_number or 0,
        photo=row.photo.original_name,
    )


def _report(request: Request, function: str, folder: Path, client: Any, **names: Any) -> Response:
    """The report of ``folder`` (``function`` of pipeline.report), named by ``names`` (subject or
    subjects), with a link back to the client's page."""
    try:
        import pipeline.report as report
    except ImportError:
        return _error(request, 503, "Reports are not available in this installation (pipeline.report is missing).")
    try:
        html = getattr(report, function)(
            folder, link=f"/clients/{int(client.id)}", link_label=f"Back to {client.external_id} in smp-assess", **names
        )
    except report.ReportError as exc:
        return _error(request, 500, f"The report could not be made: {exc}")
    # the report is a self-contained document (inline styles, embedded images): its own policy
    csp = (
        "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "font-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'; frame-ancestors 'self'"
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": csp})


def _latest_assessment(s: Any, home: Path, photo_id: int) -> int | None:
    """Id of the photo's newest assessment that has its output folder, or None."""
    for assessment_id in s.scalars(
        sa.select(Assessment.id)
        .where(Assessment.photo_id == photo_id)
        .order_by(Assessment.created_at.desc(), Assessment.id.desc())
    ):
        if (assessment_folder(home, assessment_id) / "assessment.json").is_file():
            return int(assessment_id)
    return None


def _calibration_settings(settings: WebSettings) -> Any:
    """The calibration settings the worker's assessor uses (for refitting colour corrections)."""
    from pipeline.one_photo.settings import load_assess_settings

    try:
        return load_assess_settings(settings.assess_config, list(settings.assess_overrides)).calibration
    except Exception:  # noqa: BLE001 - the defaults then
        return None
