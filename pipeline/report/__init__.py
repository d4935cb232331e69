"""Reports a clinic can hand to a client: self-contained HTML (pictures embedded, no external
files or scripts, a print stylesheet for A4 / PDF).

* :func:`render_assessment`: one ``smp assess`` folder (overlay, figures, flagged dots);
* :func:`render_comparison`: one ``smp compare`` folder (before / after, changes);
* :func:`render_timeline`: one region folder of ``smp track`` (visits, fading, forecast).

Each returns the HTML document as text and raises :class:`ReportError` (a ``ValueError``
with a one-line reason) when the folder is not what it should be. :func:`detect_kind` and
:func:`render_report` pick the kind from the folder's contents (``smp report``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pipeline.report.folders import ReportError, detect_kind
from pipeline.subject import Subject

__all__ = ["ReportError", "render_assessment", "render_comparison", "render_timeline", "render_report", "detect_kind"]


def render_assessment(
    folder: str | Path,
    *,
    title: str | None = None,
    subject: Subject | None = None,
    link: str | None = None,
    link_label: str | None = None,
) -> str:
    """HTML report of one assessment folder (``assessment.json``, ``dots.csv``, ``overlay.png``).

    ``subject``: client, region and visit (default: what the assessment recorded); ``link``: an
    address the report links back to (the app's page of the client), ``link_label`` its text."""
    from pipeline.report.assessment import build_assessment_context
    from pipeline.report.render import back_link, render

    back = back_link(link, link_label)
    return render(
        "assessment.html.j2", {**build_assessment_context(folder, title=title, subject=subject), "back": back}
    )


def render_comparison(
    folder: str | Path,
    *,
    title: str | None = None,
    subjects: tuple[Subject | None, Subject | None] | None = None,
    link: str | None = None,
    link_label: str | None = None,
) -> str:
    """HTML report of an ``smp compare`` folder (``comparison.json``, pictures, ``before/``, ``after/``);
    ``subjects``: before and after (default: what the two assessments recorded)."""
    from pipeline.report.comparison import build_comparison_context
    from pipeline.report.render import back_link, render

    back = back_link(link, link_label)
    return render(
        "comparison.html.j2", {**build_comparison_context(folder, title=title, subjects=subjects), "back": back}
    )


def render_timeline(
    folder: str | Path, *, title: str | None = None, link: str | None = None, link_label: str | None = None
) -> str:
    """HTML report of one region folder of ``smp track`` (``track.json`` and its plots)."""
    from pipeline.report.render import back_link, render
    from pipeline.report.timeline import build_timeline_context

    back = back_link(link, link_label)
    return render("timeline.html.j2", {**build_timeline_context(folder, title=title), "back": back})


class _Renderer(Protocol):
    """What :func:`render_report` calls each kind's renderer with."""

    def __call__(
        self, folder: str | Path, *, title: str | None = None, link: str | None = None, link_label: str | None = None
    ) -> str: ...


_RENDERERS: dict[str, _Renderer] = {
    "assessment": render_assessment,
    "comparison": render_comparison,
    "timeline": render_timeline,
}


def render_report(
    folder: str | Path, *, title: str | None = None, link: str | None = None, link_label: str | None = None
) -> tuple[str, str, Path]:
    """(kind, HTML, folder rendered) of any output folder (see :func:`detect_kind`)."""
    kind, path = detect_kind(folder)
    return kind, _RENDERERS[kind](path, title=title, link=link, link_label=link_label), path
