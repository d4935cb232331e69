"""The admin pages: users (adding, deactivating), their API tokens (issuing, revoking)."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import IntegrityError

from pipeline.records.schema import ROLES, ApiToken, Clinic, User
from pipeline.web.auth import AuthError, Principal, create_user, issue_token, revoke_token
from pipeline.web.deps import context, render, require_roles
from pipeline.web.page_common import ADMINS
from pipeline.web.settings import WebSettings
from pipeline.web.tenancy import NotFound

__all__ = ["add_admin_pages"]


def add_admin_pages(router: APIRouter, settings: WebSettings) -> None:
    """Register the admin pages on ``router`` (:func:`pipeline.web.pages.pages_router`'s)."""

    @router.get("/admin/users", response_class=HTMLResponse)
    def users_page(request: Request, p: Principal = require_roles(*ADMINS)) -> Response:
        return _users_page(request)

    @router.post("/admin/users")
    def add_user(
        request: Request,
        p: Principal = require_roles(*ADMINS),
        username: str = Form(..., max_length=200),
        clinic: str = Form(..., max_length=64),
        role: str = Form(...),
        password: str = Form(..., max_length=1024),
    ) -> Response:
        ctx = context(request)
        try:
            with ctx.records.transaction() as s:
                create_user(s, username, clinic=clinic, role=role, password=password)
        except (AuthError, IntegrityError) as exc:
            return _users_page(
                request, error=str(exc) if isinstance(exc, AuthError) else "user exists already", status=422
            )
        return RedirectResponse("/admin/users", status_code=303)

    @router.post("/admin/users/{user_id}/active")
    def set_active(
        request: Request, user_id: int, p: Principal = require_roles(*ADMINS), active: bool = Form(...)
    ) -> Response:
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
    def new_token(
        request: Request, user_id: int, p: Principal = require_roles(*ADMINS), name: str = Form(..., max_length=100)
    ) -> Response:
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


def _users_page(request: Request, error: str | None = None, status: int = 200) -> Response:
    ctx = context(request)
    with ctx.records.session(read_only=True) as s:
        users = s.execute(
            sa.select(User, Clinic.slug).join(Clinic, Clinic.id == User.clinic_id).order_by(Clinic.slug, User.username)
        ).all()
        tokens = s.scalars(sa.select(ApiToken).order_by(ApiToken.user_id, ApiToken.id)).all()
        clinics = s.scalars(sa.select(Clinic.slug).order_by(Clinic.slug)).all()
    by_user: dict[int, list[ApiToken]] = {}
    for t in tokens:
        by_user.setdefault(t.user_id, []).append(t)
    return render(
        request,
        "admin_users.html.j2",
        status_code=status,
        users=users,
        tokens=by_user,
        roles=ROLES,
        clinics=clinics,
        error=error,
    )
