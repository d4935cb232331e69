"""Jinja2 environment of the reports: templates shipped in ``templates/``, the CSS inlined.

Autoescaping is on for every template: photo names, warnings and any other text read
from the output folders are escaped. Only two things go in unescaped: the shipped CSS
(a trusted file of this package) and ``data:`` URIs made here from pixels.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from pipeline import __version__
from pipeline.report.folders import ReportError
from pipeline.report.wording import fmt_date, kind_label
from pipeline.subject import Subject

__all__ = ["render", "css", "back_link", "subject_rows", "subject_heading", "subject_who", "subject_visit"]

_HERE = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("pipeline.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env


@lru_cache(maxsize=1)
def css() -> str:
    text = (_HERE / "report.css").read_text(encoding="utf-8")
    if "</" in text:  # would end the <style> element early
        raise ValueError("report.css must not contain '</'")
    return text


def back_link(url: str | None, label: str | None = None) -> dict[str, str] | None:
    """The link back into the app a report carries (None without ``url``): an address on the same
    site (``/clients/7``) or an http(s) address; anything else (``javascript:``, ``//host``) is a
    :class:`ReportError`."""
    if url is None:
        return None
    u = str(url).strip()
    ok = (u.startswith("/") and not u.startswith("//")) or u.lower().startswith(("https://", "http://"))
    if not ok or any(ch.isspace() or ord(ch) < 32 for ch in u) or len(u) > 2000:
        raise ReportError(f"link {url!r}: give an address on the app's site (/clients/7) or an http(s) address")
    return {"url": u, "label": (label or "").strip() or "Back to smp-assess"}


def subject_who(subject: Subject | None) -> str | None:
    """``client_000 / crown``; None when neither is known."""
    if not subject:
        return None
    return " / ".join(p for p in (subject.client, subject.region) if p) or None


def subject_visit(subject: Subject | None) -> str | None:
    """``16 Jun 2027, follow-up``, ``13 Dec 2024, session 1``; None when neither is known."""
    if not subject:
        return None
    parts = [
        fmt_date(subject.date) if subject.date else None,
        kind_label(subject.kind, subject.session) if subject.kind else None,
    ]
    return ", ".join(p for p in parts if p) or None


def subject_heading(subject: Subject | None) -> str | None:
    """``client_000 / crown, 16 Jun 2027, follow-up`` (what is known of it); None when nothing is."""
    return ", ".join(p for p in (subject_who(subject), subject_visit(subject)) if p) or None


def subject_rows(subject: Subject | None) -> list[tuple[str, str]]:
    """The header rows of what is known: client, region, visit."""
    if not subject:
        return []
    rows = [("Client", subject.client), ("Region", subject.region), ("Visit", subject_visit(subject))]
    return [(k, v) for k, v in rows if v]


def render(template: str, context: dict[str, Any]) -> str:
    """The complete HTML document of ``template`` (``<kind>.html.j2``) with ``context``."""
    ctx = dict(context)
    ctx.setdefault("back", None)
    ctx.setdefault("made", fmt_date(dt.date.today()))
    ctx["version"] = __version__
    ctx["css"] = Markup(css())
    return _env().get_template(template).render(**ctx)
