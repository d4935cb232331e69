"""Server-rendered pages: login, clients, uploads, job progress, reports, the review queue, admin.

Every page but ``/login`` (and ``/healthz``) needs a logged-in user; every lookup by id
goes through :mod:`pipeline.web.tenancy` (another clinic's id is a 404). Forms post back
with the session's CSRF token. Handlers that touch the database or files are plain
functions (FastAPI runs them in its thread pool, off the event loop).

The authenticated pages are registered by area, in this order, on the one router of
:func:`pages_router`: :mod:`pipeline.web.client_pages`, :mod:`pipeline.web.upload_pages`,
:mod:`pipeline.web.report_pages`, :mod:`pipeline.web.review_pages`, :mod:`pipeline.web.admin_pages`
(what they share: :mod:`pipeline.web.page_common`).
"""

from __future__ import annotations

import secrets
from typing import cast

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pipeline.records.schema import User
from pipeline.web.admin_pages import add_admin_pages
from pipeline.web.auth import (
    account_key,
    authenticate_password,
    close_session,
    csrf_matches,
    login_csrf_token,
    open_session,
    throttle_attempt,
    throttle_key,
    throttle_success,
)
from pipeline.web.client_pages import add_client_pages
from pipeline.web.deps import (
    PRELOGIN_COOKIE,
    SESSION_COOKIE,
    context,
    current_principal,
    render,
    require_user,
    safe_next,
)
from pipeline.web.report_pages import add_report_pages
from pipeline.web.review_pages import add_review_pages
from pipeline.web.settings import WebSettings
from pipeline.web.upload_pages import add_upload_pages

__all__ = ["public_router", "pages_router"]

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
    def login(
        request: Request,
        username: str = Form("", max_length=200),
        password: str = Form("", max_length=1024),
        csrf_token: str = Form(""),
        next: str = Form("/"),
    ) -> Response:
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
            return _login_form(
                request, next, f"Too many failed logins. Try again in {seconds} s.", 429, {"Retry-After": str(seconds)}
            )
        with ctx.records.session(read_only=True) as s:
            found = authenticate_password(s, username, password)
            user_id = found.id if found is not None else None
        user = None
        if user_id is not None:
            with ctx.records.transaction() as s:
                user = cast(User, s.get(User, user_id))  # the user authenticate_password has just found
                throttle_success(s, throttle_key(username, address), account_key(user.username))
                user.last_login_at = now
                token = open_session(s, user.id, now, ctx.settings.session_lifetime_s)
        if user is None:
            return _login_form(request, next, "Wrong username or password.", 401)
        response = RedirectResponse(safe_next(next), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=ctx.settings.session_lifetime_s,
            httponly=True,
            samesite="lax",
            secure=ctx.settings.secure_cookies,
            path="/",
        )
        response.delete_cookie(PRELOGIN_COOKIE, path="/login")
        return response

    return router


def _login_form(
    request: Request, next: str, error: str | None = None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    ctx = context(request)
    pre = request.cookies.get(PRELOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html.j2",
        status_code=status,
        headers=headers,
        error=error,
        next=safe_next(next),
        login_csrf=login_csrf_token(ctx.secret, pre),
    )
    response.set_cookie(
        PRELOGIN_COOKIE,
        pre,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=ctx.settings.secure_cookies,
        path="/login",
    )
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

    # the areas' pages, in this order (routes match in the order they are registered)
    add_client_pages(router, settings)
    add_upload_pages(router, settings)
    add_report_pages(router, settings)
    add_review_pages(router, settings)
    add_admin_pages(router, settings)
    return router
