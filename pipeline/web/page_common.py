"""What the server-rendered pages share: who may see what, an error page, an optional form field."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response

from pipeline.records.schema import ROLES
from pipeline.web.deps import render
from pipeline.web.uploads import UploadProblem

__all__ = ["ADMINS", "READERS", "REVIEWERS", "STAFF"]

READERS = ROLES
STAFF = ("staff", "admin")
REVIEWERS = ("reviewer", "admin")
ADMINS = ("admin",)


_T = TypeVar("_T")


def _optional(parse: Callable[[str], _T], text: str, name: str) -> _T | None:
    """``parse(text)``, None for an empty field; a 422 naming the field if it does not parse."""
    if not text.strip():
        return None
    try:
        return parse(text.strip())
    except ValueError:
        raise UploadProblem(422, f"{name}: {text!r} is not valid") from None


def _error(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html.j2", status_code=status, status=status, message=message)
