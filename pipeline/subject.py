"""Whose photo it is and from which visit: what reports are named by.

A photo on its own is a file name; a clinic knows it as "client 0042, crown, the follow-up
of 16 June 2027". :class:`Subject` carries that. It is written into ``assessment.json``
(``subject``) by ``smp assess`` and ``smp compare`` when given, and passed to the reports
by the web app from its records (which stay the source of truth there).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

__all__ = ["Subject", "subject_from_options"]


@dataclass(frozen=True)
class Subject:
    """Client, region and visit of one photo; every field optional."""

    client: str | None = None
    region: str | None = None
    date: dt.date | None = None
    kind: str | None = None  # one of pipeline.records.schema.VISIT_KINDS
    session: int = 0  # the session or touch-up number (0: none)
    #: The photo's file name as the clinic sent it (the web app's records know it; a stored file is
    #: named by its content hash): what reports call the photo. Not written into ``assessment.json``.
    photo: str | None = None

    def __bool__(self) -> bool:
        return any((self.client, self.region, self.date, self.kind))

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "region": self.region,
            "date": self.date.isoformat() if self.date else None,
            "kind": self.kind,
            "session": self.session,
        }

    @classmethod
    def from_json(cls, doc: Any) -> Subject | None:
        """The subject an output folder recorded; None when it recorded none or something unreadable
        (a report is still made, named by the photo)."""
        if not isinstance(doc, dict):
            return None
        try:
            return subject_from_options(
                client=doc.get("client"),
                region=doc.get("region"),
                date=doc.get("date"),
                kind=doc.get("kind"),
                session=doc.get("session"),
            )
        except ValueError:
            return None


def _text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) > 200 or any(ord(ch) < 32 for ch in text):
        raise ValueError(f"bad {what} {value!r}: at most 200 printable characters")
    return text


def subject_from_options(
    *, client: Any = None, region: Any = None, date: Any = None, kind: Any = None, session: Any = None
) -> Subject:
    """A :class:`Subject` from command-line or JSON values, checked the way the records check
    them (a region slug, a ``YYYY-MM-DD`` date, a visit kind with its session number).
    Raises ValueError with a one-line reason."""
    from pipeline.records.parse import parse_date, parse_kind, parse_region

    reg = _text(region, "region")
    day = None if date is None or (isinstance(date, str) and not date.strip()) else parse_date(date)
    k, number = (None, 0)
    if _text(kind, "kind") is not None:
        k, number = parse_kind(str(kind), session if session not in (0, "0") else None)
    elif session not in (None, 0, "0", ""):
        raise ValueError("a session number needs its kind (--kind session or touch-up)")
    return Subject(
        client=_text(client, "client"), region=parse_region(reg) if reg else None, date=day, kind=k, session=number
    )
