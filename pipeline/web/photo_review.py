"""The photo review page: a reviewer judges every detected dot of one photo, adds the dots the
model missed, paints scalp, hair and background, and marks the photo's dots done.

Routes (reviewers and admins; another clinic's assessment is a 404 like everywhere):

* ``GET /review/photo/{assessment_id}``: the page (a canvas over the photo, keyboard first);
* ``GET /review/photo/{assessment_id}/image``: the upright photo the dot coordinates refer to;
* ``GET /api/v1/review/photos/{assessment_id}``: the photo's review state (JSON);
* ``POST /api/v1/review/photos/{assessment_id}/decisions`` ``{"dot_id", "decision": "accept"|"reject"}``,
  ``.../dots`` ``{"x", "y"}``, ``.../shapes`` ``{"label", "kind", "points", "radius_px"}``,
  ``.../done`` ``{}`` and ``.../undo`` ``{}``: record an act (or take back the caller's last one)
  and answer the new state.

The POSTs follow the API's rules (:mod:`pipeline.web.deps`): a bearer token, or the browser
session with its CSRF token in the ``X-CSRF-Token`` header. The body is read only after the
caller is authenticated and the token checked, and judged only once the photo is found (another
clinic's photo is a 404 whatever the body). Bad input is a 400 (not a JSON object) or a
422 with a one-line ``detail`` (409: nothing left to undo). What the acts are and how they are kept:
:mod:`pipeline.records.review`; what the label export makes of them: :mod:`pipeline.web.export`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from pipeline.records.review import (
    MAX_BRUSH_RADIUS_PX,
    MAX_SHAPE_POINTS,
    PhotoActs,
    Reviewer,
    ReviewInputError,
    add_dot,
    add_shape,
    check_point,
    check_shape,
    decide_dot,
    mark_done,
    photo_acts,
    undo_last,
)
from pipeline.records.schema import MASK_LABELS, Dot, Region
from pipeline.web.auth import Principal
from pipeline.web.deps import context, render, require_roles, require_user, stored_path
from pipeline.web.export import FLAGS
from pipeline.web.tenancy import get_assessment

__all__ = ["photo_review_api", "photo_review_pages", "review_state"]

REVIEWERS = ("reviewer", "admin")
_STATES = {"accept": "confirmed", "reject": "rejected", "relabel": "relabelled"}
#: Drawn radius of a dot whose size the model did not measure.
_DEFAULT_RADIUS_PX = 3.0


class BadRequest(Exception):
    """A request the review API refuses: ``status`` and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- the state (pure)


def review_state(
    assessment_id: int, width: int, height: int, dots: list[Any], acts: PhotoActs, user_id: int | None
) -> dict[str, Any]:
    """What the page draws: every detected dot with its state, the added dots, the painted shapes,
    the done mark, and what an undo by ``user_id`` would take back."""
    verdicts = acts.latest_decisions
    out_dots = []
    for d in dots:
        verdict = verdicts.get(d.id)
        radius = (
            d.diameter_px / 2
            if d.diameter_px is not None and math.isfinite(d.diameter_px) and d.diameter_px > 0
            else _DEFAULT_RADIUS_PX
        )
        out_dots.append(
            {
                "id": d.id,
                "index": d.dot_index,
                "x": d.x,
                "y": d.y,
                "radius_px": radius,
                "flags": [f for f in FLAGS if getattr(d, f)],
                "state": _STATES[verdict.detail["decision"]] if verdict else "unreviewed",
                "label": verdict.detail["new_label"] if verdict else None,
                "by": verdict.reviewer if verdict else None,
            }
        )
    mine = [a for a in acts.all() if user_id is not None and a.reviewer_user_id == user_id]
    counts = {
        s: sum(1 for d in out_dots if d["state"] == s) for s in ("unreviewed", "confirmed", "relabelled", "rejected")
    }
    done = acts.done[0] if acts.done else None
    return {
        "assessment_id": assessment_id,
        "width": width,
        "height": height,
        "dots": out_dots,
        "added": [{"id": a.id, "x": a.detail["x"], "y": a.detail["y"], "by": a.reviewer} for a in acts.added],
        "shapes": [
            {
                "id": s.id,
                "label": s.detail["label"],
                "kind": s.detail["kind"],
                "points": s.detail["points"],
                "radius_px": s.detail["radius_px"],
            }
            for s in acts.shapes
        ],
        "done": {"by": done.reviewer, "at": done.at.isoformat()} if done else None,
        "undo": mine[-1].describe() if mine else None,
        "counts": {**counts, "added": len(acts.added), "shapes": len(acts.shapes)},
    }


def _state(s: Any, assessment: Any, photo: Any, p: Principal) -> dict[str, Any]:
    dots = list(s.scalars(sa.select(Dot).where(Dot.assessment_id == assessment.id).order_by(Dot.dot_index)))
    return review_state(assessment.id, photo.width, photo.height, dots, photo_acts(s, assessment.id), p.user_id)


def _body(doc: Any, *names: str) -> dict[str, Any]:
    """The JSON object ``doc`` with only the fields ``names`` (others are refused, so typos are seen)."""
    if not isinstance(doc, dict):
        raise BadRequest(400, "the body must be a JSON object")
    unknown = sorted(set(doc) - set(names))
    if unknown:
        raise BadRequest(422, f"unknown field {unknown[0]!r}: this call takes {', '.join(names) or 'no fields'}"[:200])
    return doc


def _parse(raw: bytes | None) -> Any:
    """The JSON document of a request body (an empty body is an empty object; None: a form was sent)."""
    if raw is None:
        raise BadRequest(400, "the body must be a JSON object (Content-Type: application/json), not a form")
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise BadRequest(400, "the body must be a JSON object") from None


# --------------------------------------------------------------------------- routes


def photo_review_pages() -> APIRouter:
    """The page and its photo (server-rendered; errors as HTML pages)."""
    router = APIRouter(include_in_schema=False, dependencies=[Depends(require_user)])

    @router.get("/review/photo/{assessment_id}", response_class=HTMLResponse)
    def photo_page(request: Request, assessment_id: int, p: Principal = require_roles(*REVIEWERS)) -> Response:
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            assessment, row = get_assessment(s, p, assessment_id)
            state = _state(s, assessment, row.photo, p)
            region = s.scalar(sa.select(Region.name).where(Region.id == row.visit.region_id))
        return render(
            request,
            "review_photo.html.j2",
            state=state,
            assessment=assessment,
            photo=row.photo,
            visit=row.visit,
            client=row.client,
            region=region,
            labels=MASK_LABELS,
            max_points=MAX_SHAPE_POINTS,
            max_radius=MAX_BRUSH_RADIUS_PX,
        )

    @router.get("/review/photo/{assessment_id}/image")
    def photo_image(request: Request, assessment_id: int, p: Principal = require_roles(*REVIEWERS)) -> Response:
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            assessment, row = get_assessment(s, p, assessment_id)
        data = ctx.crops.upright(stored_path(ctx, row.photo.stored_path), assessment.id)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    return router


def photo_review_api() -> APIRouter:
    """The JSON API of the page (also open to reviewers' API tokens)."""
    router = APIRouter(
        prefix="/api/v1/review/photos",
        dependencies=[Depends(require_user)],
        tags=["review"],
        responses={
            401: {"description": "not authenticated"},
            404: {"description": "no such assessment (or dot) in your clinic"},
            422: {"description": "bad input: the detail says what"},
        },
    )

    def run(
        request: Request, assessment_id: int, p: Principal, raw: bytes | None, names: tuple[str, ...], make: Any
    ) -> dict[str, Any]:
        """In one transaction: find the photo (404 first), read the body, record the act that
        ``make(body)`` returns (``act(session, assessment, photo, reviewer, now)``); the new state."""
        ctx = context(request)
        with ctx.records.transaction() as s:
            assessment, row = get_assessment(s, p, assessment_id)
            act = make(_body(_parse(raw), *names))
            try:
                act(s, assessment, row.photo, Reviewer(p.username, p.user_id), ctx.now())
            except ReviewInputError as exc:
                raise BadRequest(422, str(exc)) from None
            except LookupError as exc:
                raise BadRequest(404, str(exc)) from None
            return _state(s, assessment, row.photo, p)

    async def answer(request: Request, assessment_id: int, p: Principal, names: tuple[str, ...], make: Any) -> Response:
        # after the dependencies (authenticated, CSRF checked); a form post's body was read there already
        form = request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        )
        raw = None if form else await request.body()
        try:
            state = await run_in_threadpool(run, request, assessment_id, p, raw, names, make)
        except BadRequest as exc:
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        return JSONResponse(state)

    @router.get("/{assessment_id}")
    def state(request: Request, assessment_id: int, p: Principal = require_roles(*REVIEWERS)) -> JSONResponse:
        """The photo's review state: dots with their states, added dots, painted shapes, the done mark."""
        ctx = context(request)
        with ctx.records.session(read_only=True) as s:
            assessment, row = get_assessment(s, p, assessment_id)
            return JSONResponse(_state(s, assessment, row.photo, p))

    @router.post("/{assessment_id}/decisions")
    async def decide(request: Request, assessment_id: int, p: Principal = require_roles(*REVIEWERS)) -> Response:
        """Confirm (``accept``) or reject (``reject``) a detected dot: ``{"dot_id": 12, "decision": "accept"}``."""

        def make(body: dict[str, Any]) -> Any:
            dot_id = body.get("dot_id")
            if isinstance(dot_id, bool) or not isinstance(dot_id, int) or not 0 < dot_id < 2**63:
                raise BadRequest(422, "dot_id must be the id of a dot of this photo")
            return lambda s, a, photo, who, now: decide_dot(s, a.id, dot_id, body.get("decision"), who, now)

        return await answer(request, assessment_id, p, ("dot_id", "decision"), make)

    @router.post("/{assessment_id}/dots")
    async def add(request: Request, assessment_id: int, p: Principal = require_roles(*REVIEWERS)) -> Response:
        """Add a dot the model missed at ``{"x": ..., "y": ...}`` (photo pixels, pixel centres at integers)."""

        def make(body: dict[str, Any]) -> Any:
            def act(s: Any, a: Any, photo: Any, who: Reviewer, now: Any) -> None:
                x, y = check_point(body.get("x"), body.get("y"), photo.width, photo.height)
                add_dot(s, a.id, x, y, who, now)

            return act

        return await answer(request, assessment_id, p, ("x", "y"), make)

    @router.post("/{assessment_id}/shapes")
    async def paint(request: Request, assessment_id: int, p: Principal = require_roles(*REVIEWERS)) -> Response:
        """Paint an area: ``{"label": "hair", "kind": "brush", "points": [[x, y], ...], "radius_px": 8}``
        or a filled ``polygon`` (3 or more points, no radius); labels background, scalp, hair."""

        def make(body: dict[str, Any]) -> Any:
            def act(s: Any, a: Any, photo: Any, who: Reviewer, now: Any) -> None:
                shape = check_shape(
                    body.get("label"),
                    body.get("kind"),
                    body.get("points"),
                    body.get("radius_px"),
                    photo.width,
                    photo.height,
                )
                add_shape(s, a.id, *shape, who, now)

            return act

        return await answer(request, assessment_id, p, ("label", "kind", "points", "radius_px"), make)

    @router.post("/{assessment_id}/done")
    async def done(request: Request, assessment_id: int, p: Principal = require_roles(*REVIEWERS)) -> Response:
        """Mark the photo's dots done: every dot has been judged or added; unreviewed detections are unknown."""
        return await answer(
            request, assessment_id, p, (), lambda body: lambda s, a, photo, who, now: mark_done(s, a.id, who, now)
        )

    @router.post("/{assessment_id}/undo")
    async def undo(request: Request, assessment_id: int, p: Principal = require_roles(*REVIEWERS)) -> Response:
        """Take back your last act on this photo (a decision, an added dot, a shape or the done mark)."""

        def make(body: dict[str, Any]) -> Any:
            def act(s: Any, a: Any, photo: Any, who: Reviewer, now: Any) -> None:
                if undo_last(s, a.id, p.user_id, now) is None:
                    raise BadRequest(409, "nothing of yours to undo on this photo")

            return act

        return await answer(request, assessment_id, p, (), make)

    return router
