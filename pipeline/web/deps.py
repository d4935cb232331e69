"""What every request handler shares: the app context, the authenticated user, CSRF, roles, templates.

Authentication order: an ``Authorization: Bearer`` header (API token; a bad one is a 401,
never a fallback to the cookie), else the session cookie. Pages answer an unauthenticated
request with a redirect to ``/login``; the API with 401. A state-changing request
(anything but GET/HEAD/OPTIONS) authenticated by the session cookie must carry the
session's CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``), else 403.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from pipeline.records import PhotoStore, Records
from pipeline.web.auth import Principal, csrf_matches, csrf_token, session_principal, token_principal, touch_token
from pipeline.web.crops import CropMaker
from pipeline.web.jobs import JobLimits, JobRunner
from pipeline.web.settings import WebSettings
from pipeline.web.uploads import UploadLimits

__all__ = [
    "AppContext",
    "Forbidden",
    "NotAuthenticated",
    "PRELOGIN_COOKIE",
    "SAFE_METHODS",
    "SESSION_COOKIE",
    "StoredFileMissing",
    "context",
    "current_principal",
    "render",
    "require_roles",
    "require_user",
    "safe_next",
    "stored_path",
]

SESSION_COOKIE = "smp_session"
PRELOGIN_COOKIE = "smp_login"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"


class NotAuthenticated(Exception):
    """No valid session or token: pages redirect to the login, the API answers 401."""


class StoredFileMissing(Exception):
    """A record names a file the photo store no longer has (deleted or lost on disk): a clear 404 page,
    never a traceback."""

    def __init__(self, relpath: str, what: str = "photo") -> None:
        super().__init__(f"{what} {relpath} is missing from the photo store")
        self.relpath, self.what = relpath, what


def stored_path(ctx: AppContext, relpath: str, what: str = "photo") -> Path:
    """The store's file of a record, or :class:`StoredFileMissing` when it is not on disk."""
    path = ctx.store.path(relpath)
    if not path.is_file():
        raise StoredFileMissing(relpath, what)
    return path


class Forbidden(Exception):
    """Authenticated, but not allowed (a role, or a bad CSRF token): 403."""

    def __init__(self, message: str = "forbidden") -> None:
        super().__init__(message)
        self.message = message


@dataclass
class AppContext:
    settings: WebSettings
    records: Records
    store: PhotoStore
    home: Path
    secret: bytes
    jobs: JobRunner
    templates: Jinja2Templates
    crops: CropMaker
    #: The upload limits and the server's decode slots, from ``settings`` (:mod:`pipeline.web.uploads`).
    uploads: UploadLimits = field(init=False)

    def __post_init__(self) -> None:
        # every upload route shares one set of decode slots; the worker bounds each job
        self.uploads = UploadLimits.of(self.settings)
        self.jobs.limits = JobLimits.of(self.settings)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.settings.clock(), UTC)


def context(request: Request) -> AppContext:
    return request.app.state.ctx


def current_principal(request: Request) -> Principal | None:
    """The request's user, or None. A plain function: FastAPI runs it in its thread pool, so the
    database lookup (and a token's last-used write) never blocks the event loop."""
    if hasattr(request.state, "principal"):
        return request.state.principal
    ctx = context(request)
    principal = None
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            with ctx.records.session(read_only=True) as s:
                principal, touch = token_principal(s, token.strip(), ctx.now())
            if touch is not None:
                with ctx.records.transaction() as s:
                    touch_token(s, touch, ctx.now())
        request.state.principal = principal
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        with ctx.records.session(read_only=True) as s:
            principal = session_principal(s, cookie, ctx.now())
    request.state.principal = principal
    return principal


async def require_user(request: Request, principal: Principal | None = Depends(current_principal)) -> Principal:
    if principal is None:
        raise NotAuthenticated()
    if request.method not in SAFE_METHODS and principal.via == "session":
        expected = csrf_token(context(request).secret, principal.session_token or "")
        given = request.headers.get(CSRF_HEADER)
        if given is None:
            content_type = request.headers.get("content-type", "")
            if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
                given = (await request.form()).get("csrf_token")  # type: ignore[assignment]
        if not csrf_matches(expected, given if isinstance(given, str) else None):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again")
    return principal


def require_roles(*roles: str) -> Any:
    """A dependency: the user, if their role is one of ``roles`` (403 otherwise)."""

    async def check(principal: Principal = Depends(require_user)) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"your role ({principal.role}) cannot do this")
        return principal

    return Depends(check)


def safe_next(target: str | None, default: str = "/") -> str:
    """A redirect target from user input: a local absolute path only (no scheme, host or ``//``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(c) < 32 for c in target):
        return default
    return target


def render(
    request: Request, name: str, status_code: int = 200, headers: dict[str, str] | None = None, **values: Any
) -> Any:
    """A server-rendered page, with the user, their CSRF token and the page's script nonce."""
    ctx = context(request)
    principal = getattr(request.state, "principal", None)
    token = csrf_token(ctx.secret, principal.session_token) if principal and principal.session_token else ""
    nonce = getattr(request.state, "csp_nonce", None) or secrets.token_urlsafe(16)
    request.state.csp_nonce = nonce
    return ctx.templates.TemplateResponse(
        request,
        name,
        {"user": principal, "csrf_token": token, "nonce": nonce, **values},
        status_code=status_code,
        headers=headers,
    )
