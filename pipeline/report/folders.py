"""Reading the output folders a report is made from, and telling their kinds apart.

Every problem is a :class:`ReportError` with a one-line reason that names the folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import pandas as pd

from pipeline.subject import Subject

__all__ = ["ReportError", "Kind", "MARKERS", "read_doc", "AssessmentFolder", "read_assessment_folder", "detect_kind"]

Kind = Literal["assessment", "comparison", "timeline"]
#: The file that marks each kind of folder, and the schema it must carry.
MARKERS: dict[str, tuple[str, str]] = {
    "comparison": ("comparison.json", "smp-comparison/"),
    "timeline": ("track.json", "smp-track/"),
    "assessment": ("assessment.json", "smp-assessment/"),
}
_MAKERS = {"assessment": "smp assess", "comparison": "smp compare", "timeline": "smp track"}


class ReportError(ValueError):
    """A folder is not what a report needs (one line, names the folder and the problem)."""


def _folder(folder: str | Path) -> Path:
    p = Path(folder)
    if not p.exists():
        raise ReportError(f"{p}: no such folder")
    if not p.is_dir():
        raise ReportError(f"{p}: not a folder")
    return p


def read_doc(folder: str | Path, kind: str) -> dict[str, Any]:
    """The marker JSON of a ``kind`` folder, checked for its schema."""
    p = _folder(folder)
    name, schema = MARKERS[kind]
    f = p / name
    if not f.is_file():
        raise ReportError(f"{p}: no {name} (not an '{_MAKERS[kind]}' output folder)")
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{f}: cannot read it ({exc})") from None
    except ValueError as exc:
        raise ReportError(f"{f}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ReportError(f"{f}: expected a JSON object")
    got = doc.get("schema")
    if not isinstance(got, str) or not got.startswith(schema):
        raise ReportError(f"{f}: schema is {got!r}, expected {schema}1")
    return doc


def _dict(doc: dict, key: str) -> dict:
    v = doc.get(key)
    return v if isinstance(v, dict) else {}


@dataclass(frozen=True)
class AssessmentFolder:
    """One ``smp assess`` folder: its JSON, its dots (None without ``dots.csv``) and what is
    missing or unreadable (``notes``)."""

    path: Path
    doc: dict[str, Any]
    dots: pd.DataFrame | None
    notes: tuple[str, ...] = field(default=())

    @property
    def photo(self) -> dict[str, Any]:
        return _dict(self.doc, "photo")

    @property
    def calibration(self) -> dict[str, Any]:
        return _dict(self.doc, "calibration")

    @property
    def quality(self) -> dict[str, Any]:
        return _dict(self.doc, "quality")

    @property
    def model(self) -> dict[str, Any]:
        return _dict(self.doc, "model")

    @property
    def metrics(self) -> dict[str, Any]:
        return _dict(self.doc, "metrics")

    @property
    def subject(self) -> Subject | None:
        """Whose photo and which visit, as the assessment recorded it (None: not recorded)."""
        return Subject.from_json(self.doc.get("subject"))

    @property
    def overlay_path(self) -> Path:
        return self.path / "overlay.png"


def read_assessment_folder(folder: str | Path) -> AssessmentFolder:
    doc = read_doc(folder, "assessment")
    path = Path(folder)
    if not isinstance(doc.get("metrics"), dict):
        raise ReportError(f"{path / 'assessment.json'}: no metrics")
    notes: list[str] = []
    dots = None
    f = path / "dots.csv"
    if f.is_file():
        try:
            dots = pd.read_csv(f)
        except (OSError, ValueError) as exc:
            notes.append(f"dots.csv could not be read ({str(exc).splitlines()[0] if str(exc) else exc})")
        else:
            if not {"x", "y"} <= set(dots.columns):
                notes.append("dots.csv has no x and y columns")
                dots = None
    else:
        notes.append("dots.csv is missing: no per-dot figures or crops")
    return AssessmentFolder(path=path, doc=doc, dots=dots, notes=tuple(notes))


def _kind_here(p: Path) -> str | None:
    for kind, (name, _) in MARKERS.items():
        if (p / name).is_file():
            return kind
    return None


def detect_kind(folder: str | Path) -> tuple[str, Path]:
    """(kind, folder to render) of an output folder.

    ``comparison.json`` -> comparison, ``track.json`` -> timeline, ``assessment.json`` ->
    assessment; a path to one of those files means its folder. A folder holding one such
    folder (an ``smp track`` root with one region, an ``smp assess`` root with one photo) means
    that folder; several is an error that lists them."""
    p = Path(folder)
    if p.is_file() and p.name in {name for name, _ in MARKERS.values()}:
        p = p.parent
    p = _folder(p)
    kind = _kind_here(p)
    if kind is not None:
        return kind, p
    found = sorted((c for c in p.iterdir() if c.is_dir() and _kind_here(c) is not None), key=lambda c: c.name)
    if len(found) == 1:
        return cast(str, _kind_here(found[0])), found[0]  # found: only folders with a kind
    if not found:
        raise ReportError(
            f"{p}: no assessment.json, comparison.json or track.json here "
            "(not an 'smp assess', 'smp compare' or 'smp track' output folder)"
        )
    kinds = {cast(str, _kind_here(c)) for c in found}  # found: only folders with a kind
    what = (
        {"timeline": "regions", "assessment": "assessments", "comparison": "comparisons"}.get(
            next(iter(kinds)), "output folders"
        )
        if len(kinds) == 1
        else "output folders"
    )
    names = ", ".join(c.name for c in found[:12]) + (f" and {len(found) - 12} more" if len(found) > 12 else "")
    raise ReportError(f"{p}: holds several {what} ({names}); pass one of them, e.g. {found[0]}")
