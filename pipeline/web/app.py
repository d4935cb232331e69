"""The web app (``smp serve``): FastAPI with server-rendered pages, on the same records as the CLI.

:func:`create_app` opens the records (migrating them), the photo store and the secret key,
builds the background assessment worker, and mounts the routers: public (login, health),
pages, the JSON API and its docs. Cross-cutting rules live here:

* security headers on every response: a strict Content-Security-Policy (scripts only with
  the page's nonce, no external sources at all), ``nosniff``, no framing, no caching of
  pages that show clients' photos and data;
* request bodies are limited (forms: ``max_form_bytes``; uploads: their own limits, per
  route), refused with 413 before anything is stored;
* errors: pages get an HTML page, ``/api`` gets JSON; "not found" reads the same for an id
  that does not exist and for one of another clinic.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline import __version__
from pipeline.records import PhotoStore, open_records
from pipeline.web.api import api_router, docs_router
from pipeline.web.crops import CropMaker
from pipeline.web.deps import AppContext, Forbidden, NotAuthenticated, StoredFileMissing, render
from pipeline.web.jobs import JobRunner, PipelineAssessor
from pipeline.web.pages import pages_router, public_router
from pipeline.web.photo_review import photo_review_api, photo_review_pages
from pipeline.web.settings import WebSettings, load_or_create_secret
from pipeline.web.tenancy import NotFound
from pipeline.web.uploads import UploadProblem

__all__ = ["create_app"]

log = logging.getLogger("smp.web")
TEMPLATES = Path(__file__).with_name("templates")


class BodyTooLarge(StarletteHTTPException):
    """A request body over its limit (raised while the body is read: FastAPI and the error handlers
    treat it as the 413 it is)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request too large: the limit for this request is {_size(limit)}")


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n // 1024} kB"


class BodyLimit:
    """Caps request bodies: ``limits`` (path pattern, bytes) for upload routes, ``default`` for the rest.

    A declared ``Content-Length`` over the limit is refused before anything is read; a body
    that grows past it while being read stops with :class:`BodyTooLarge`. Either way nothing
    was stored (uploads are only stored after they were read whole and checked).
    """

    def __init__(self, app: ASGIApp, default: int, limits: list[tuple[re.Pattern[str], int]]) -> None:
        self.app = app
        self.default = default
        self.limits = limits

    def limit_for(self, path: str) -> int:
        return next((n for pattern, n in self.limits if pattern.fullmatch(path)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            message = str(BodyTooLarge(limit).detail)
            response: Response = (
                JSONResponse({"detail": message}, status_code=413)
                if scope["path"].startswith("/api/")
                else HTMLResponse(f"<!doctype html><title>413</title><p>{message}</p>", 413)
            )
            await response(scope, receive, send)
            return
        total = 0

        async def limited() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


def security_headers(nonce: str | None = None) -> dict[str, str]:
    """The headers every response carries (scripts only with the page's ``nonce``; none without one)."""
    scripts = f"'nonce-{nonce}'" if nonce else "'none'"
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
    }


#: The largest id the records can hold (a signed 64-bit integer); a path segment of digits beyond it names
#: nothing, whatever the route.
MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]+")


class IdsInRange:
    """A path with a number beyond any record id (``/clients/99999999999999999999``) is a 404 page before it
    reaches a route: the database would refuse the number with an overflow, not a "not found"."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(
            _DIGITS.fullmatch(part) and (len(part) > 19 or int(part) > MAX_ID)
            for part in scope.get("path", "").split("/")
        ):
            request = Request(scope, receive)
            await _error(request, 404, "not found")(scope, receive, send)
            return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Adds the security headers; makes the page's CSP nonce (``request.state.csp_nonce``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                framed = "frame-ancestors 'self'" in headers.get("content-security-policy", "")
                for name, value in security_headers(nonce).items():
                    if not (name == "X-Frame-Options" and framed):
                        headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if _is_api(request):
        return JSONResponse({"detail": message}, status_code=status, headers=headers)
    return render(request, "error.html.j2", status_code=status, headers=headers, status=status, message=message)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if _is_api(request) or request.method not in ("GET", "HEAD") or "authorization" in request.headers:
            return _error(
                request,
                401,
                "authentication required: log in, or send 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": "Bearer"},
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return _error(request, 403, exc.message)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return _error(request, 404, "not found")

    @app.exception_handler(UploadProblem)
    async def upload_problem(request: Request, exc: UploadProblem) -> Response:
        return _error(request, exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404:
            message = "not found"
        return _error(request, exc.status_code, message, dict(exc.headers or {}))

    @app.exception_handler(StoredFileMissing)
    async def missing_file(request: Request, exc: StoredFileMissing) -> Response:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _error(
            request,
            404,
            f"The stored {exc.what} of this record is missing from the photo store. "
            "Nothing else was changed; an administrator can restore it from a backup.",
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # outside the security-headers middleware (Starlette answers 500s from its outermost layer): the
        # headers are added here, and the page says no more than that it failed
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        response = _error(request, 500, "The server could not complete this request; it was logged.")
        for name, value in security_headers().items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": _plain_errors(exc.errors())}, status_code=422)
        parts = [
            f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        ]
        return _error(request, 422, "; ".join(parts) or "invalid request")


def _plain_errors(errors: Any) -> list[dict[str, Any]]:
    # the inputs are echoed only as their location and message (uploads would be echoed whole)
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in errors
    ]


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
    return Jinja2Templates(env=env)


def keep_private(home: Path) -> None:
    """Clinic data is for this server's user only: the data home is 0700 (so nothing under it is readable by
    another user, whatever older files' modes are) and everything the server writes from now on is created
    0600 / 0700 (the process's umask: records, photos, assessments, crops, exports)."""
    os.umask(0o077)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.chmod(0o700)
    for path in home.iterdir():  # what the command line made before (records.db, its -wal and -shm, ...)
        if path.is_file():
            path.chmod(0o600)


def create_app(settings: WebSettings | None = None) -> FastAPI:
    """The web app on the records and store of ``settings`` (defaults: the data home's)."""
    settings = settings or WebSettings()
    home = Path(settings.home)
    keep_private(home)
    records = open_records(settings.database_url())
    store = PhotoStore(settings.store_root())
    secret = settings.secret_key or load_or_create_secret(home)
    factory = settings.assessor_factory or (
        lambda: PipelineAssessor(settings.assess_config, tuple(settings.assess_overrides))
    )
    jobs = JobRunner(records, store, home, factory, clock=settings.clock, poll_s=settings.worker_poll_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        requeued = jobs.recover()
        if requeued:
            log.info("queued again %d job(s) left running by a previous process", requeued)
        if settings.start_worker:
            jobs.start()
        try:
            yield
        finally:
            jobs.stop()

    app = FastAPI(
        title="smp-assess",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        description="Scalp micropigmentation assessment: submit photos of clients' visits, fetch "
        "assessments and tracking results. Authenticate with 'Authorization: Bearer <token>' "
        "(tokens: 'smp users token' or the admin page).",
    )
    app.state.ctx = AppContext(
        settings=settings,
        records=records,
        store=store,
        home=home,
        secret=secret,
        jobs=jobs,
        templates=_templates(),
        crops=CropMaker(home),
    )
    app.include_router(public_router(settings))
    app.include_router(docs_router())
    app.include_router(api_router(settings))
    app.include_router(photo_review_api())
    app.include_router(photo_review_pages())
    app.include_router(pages_router(settings))
    _install_error_handlers(app)
    per_file = settings.max_upload_bytes + 64 * 1024  # a photo and the form fields around it
    app.add_middleware(
        BodyLimit,
        default=settings.max_form_bytes,
        limits=[
            (re.compile(r"/api/v1/photos"), per_file),
            (re.compile(r"/clients/[^/]+/upload"), settings.max_files_per_upload * per_file),
        ],
    )
    app.add_middleware(IdsInRange)
    app.add_middleware(SecurityHeaders)
    return app
