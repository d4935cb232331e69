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

from .. import __version__
from .wording import fmt_date

__all__ = ["render", "css"]

_HERE = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(loader=PackageLoader("pipeline.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env


@lru_cache(maxsize=1)
def css() -> str:
    text = (_HERE / "report.css").read_text(encoding="utf-8")
    if "</" in text:  # would end the <style> element early
        raise ValueError("report.css must not contain '</'")
    return text


def render(template: str, context: dict[str, Any]) -> str:
    """The complete HTML document of ``template`` (``<kind>.html.j2``) with ``context``."""
    ctx = dict(context)
    ctx.setdefault("made", fmt_date(dt.date.today()))
    ctx["version"] = __version__
    ctx["css"] = Markup(css())
    return _env().get_template(template).render(**ctx)
