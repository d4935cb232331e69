"""Reading what is asked of the records, before any database: visit fields, photo files, manifests.

Pure checks: a date, a visit kind and session number, a region, a clinic, a client id, a
view; a photo file loaded as the assessment would; a manifest CSV read row by row with
every problem and its row number.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import TypeVar, cast

from pipeline.errors import UserError
from pipeline.records.entries import PhotoEntry, PhotoFile, Problem, VisitKey
from pipeline.records.schema import DEFAULT_CLINIC, VIEWS, VISIT_KINDS, is_slug

__all__ = [
    "MANIFEST_COLUMNS",
    "inspect_photo",
    "parse_date",
    "parse_kind",
    "parse_region",
    "read_csv_rows",
    "read_manifest",
]

#: Manifest columns: required first, then optional (``session``: the session number;
#: ``view``: closeup|global; ``clinic``: defaults to the importer's; ``notes``: of the visit).
MANIFEST_COLUMNS = ("client", "region", "date", "kind", "photo", "session", "view", "clinic", "notes")
_REQUIRED_COLUMNS = MANIFEST_COLUMNS[:5]
_T = TypeVar("_T")


def parse_date(value: str | date) -> date:
    """A visit date: a ``date`` or ``YYYY-MM-DD`` text."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = value.strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"bad date {value!r}: use YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"bad date {value!r}: no such day") from None


def parse_kind(kind: str, session: int | str | None = None) -> tuple[str, int]:
    """``(kind, session number)`` from a kind (``follow-up``, ``Session 2``, ``touch_up``...) and an
    optional separate session number. Sessions need a number >= 1, touch-ups may have one,
    baselines and follow-ups have none (0)."""
    text = re.sub(r"[\s_]+", "-", kind.strip().lower())
    text = {"followup": "follow-up", "touchup": "touch-up"}.get(text, text)
    m = re.fullmatch(r"(session|touch-?up)-?(\d+)", text)
    embedded = None
    if m:
        text, embedded = ("session" if m[1] == "session" else "touch-up"), int(m[2])
    if text not in VISIT_KINDS:
        raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(VISIT_KINDS)}")
    number = None
    if session is not None and str(session).strip() != "":
        try:
            number = int(str(session).strip())
        except ValueError:
            raise ValueError(f"bad session number {session!r}: use a whole number") from None
        if embedded is not None and number != embedded:
            raise ValueError(f"kind {kind!r} and session number {number} disagree")
    number = embedded if number is None else number
    if text == "session" and (number is None or number < 1):
        raise ValueError("a 'session' visit needs its session number (1, 2, ...)")
    if text == "touch-up" and number is not None and number < 0:
        raise ValueError(f"bad session number {number}")
    if text in ("baseline", "follow-up") and number:
        raise ValueError(f"a {text!r} visit has no session number")
    return text, number or 0


def parse_region(text: str) -> str:
    """A region name as a slug: ``Crown`` -> ``crown``, ``left temple`` -> ``left-temple``."""
    slug = re.sub(r"[\s_]+", "-", text.strip().lower())
    if not is_slug(slug) or len(slug) > 64:
        raise ValueError(f"bad region {text!r}: use letters, digits and hyphens (crown, vertex, left-temple...)")
    return slug


def _parse_clinic(text: str) -> str:
    slug = text.strip().lower()
    if not is_slug(slug) or len(slug) > 64:
        raise ValueError(f"bad clinic {text!r}: use lower-case letters, digits and hyphens")
    return slug


def _parse_client(text: str) -> str:
    client = text.strip()
    if not client or len(client) > 100:
        raise ValueError(f"bad client id {text!r}: 1 to 100 characters")
    return client


def _parse_view(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    view = text.strip().lower()
    if view not in VIEWS:
        raise ValueError(f"unknown view {text!r}: use {' or '.join(VIEWS)}")
    return view


def _visit_key(
    clinic: str, client: str, region: str, day: str | date, kind: str, session: int | str | None, row: int | None
) -> tuple[VisitKey | None, list[Problem]]:
    """Parse a visit's fields, collecting every problem rather than stopping at the first."""
    problems: list[Problem] = []

    def attempt(parse: Callable[[], _T]) -> _T | None:
        try:
            return parse()
        except ValueError as exc:
            problems.append(Problem(str(exc), row))
            return None

    parts = (
        attempt(lambda: _parse_clinic(clinic)),
        attempt(lambda: _parse_client(client)),
        attempt(lambda: parse_region(region)),
        attempt(lambda: parse_date(day)),
        attempt(lambda: parse_kind(kind, session)),
    )
    if problems:
        return None, problems
    # no problem, so no attempt gave None: each part is its parser's value
    clinic_, client_, region_, day_, (kind_, number) = cast(tuple[str, str, str, date, tuple[str, int]], parts)
    return VisitKey(clinic_, client_, region_, day_, kind_, number), []


def inspect_photo(path: str | Path) -> PhotoFile:
    """Load ``path`` as the assessment would (refusing what is not a usable photo:
    :class:`pipeline.one_photo.loading.PhotoError`) and keep what the records need of it."""
    from pipeline.one_photo.loading import load_photo

    photo = load_photo(path)
    return PhotoFile(
        path=Path(path),
        sha256=photo.sha256,
        width=photo.width,
        height=photo.height,
        size=Path(path).stat().st_size,
        capture_time=photo.capture_time,
    )


def _photo_entry(
    path: Path | PhotoFile, name: str, key: VisitKey | None, view: str | None, notes: str | None, row: int | None
) -> tuple[PhotoEntry | None, list[Problem]]:
    from pipeline.one_photo.loading import PhotoError

    if isinstance(path, PhotoFile):  # inspected by the caller already (the web app's upload check)
        if not path.path.is_file():
            return None, [Problem(f"no such photo file: {name}", row)]
        return (None if key is None else PhotoEntry(row, name, key, path, view, notes)), []
    if not path.is_file():
        return None, [Problem(f"no such photo file: {name}", row)]
    try:
        photo = inspect_photo(path)
    except PhotoError as exc:
        return None, [Problem(f"{name}: {exc.reason}", row)]
    if key is None:
        return None, []
    return PhotoEntry(row, name, key, photo, view, notes), []


def read_csv_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """A manifest CSV's lower-cased header and its rows with their line numbers; one clear
    :class:`UserError` when the file is missing or not readable CSV."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            return header, [(reader.line_num, raw) for raw in reader]
    except FileNotFoundError:
        raise UserError(f"{csv_path}: no such manifest file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{csv_path}: not a readable CSV manifest ({exc})") from None


def read_manifest(csv_path: str | Path, *, clinic: str = DEFAULT_CLINIC) -> tuple[list[PhotoEntry], list[Problem]]:
    """Parse and check a manifest CSV on its own (no database): one entry per valid row, and
    every problem with its row number. Photo paths are relative to the manifest's folder."""
    csv_path = Path(csv_path)
    header, rows = read_csv_rows(csv_path)
    missing = [c for c in _REQUIRED_COLUMNS if c not in header]
    if missing:
        return [], [Problem(f"missing column(s) {', '.join(missing)} (columns: {', '.join(MANIFEST_COLUMNS)})", 1)]
    problems = [
        Problem(f"unknown column {c!r} (columns: {', '.join(MANIFEST_COLUMNS)})", 1)
        for c in header
        if c not in MANIFEST_COLUMNS
    ]
    entries = []
    for line, raw in rows:
        cells = {k: (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(cells.values()) and None not in raw:
            continue  # blank line
        if None in raw:
            problems.append(Problem("more cells than columns", line))
            continue
        key, found = _visit_key(
            cells.get("clinic") or clinic,
            cells["client"],
            cells["region"],
            cells["date"],
            cells["kind"],
            cells.get("session"),
            line,
        )
        view = None
        try:
            view = _parse_view(cells.get("view"))
        except ValueError as exc:
            found.append(Problem(str(exc), line))
        if not cells["photo"]:
            found.append(Problem("no photo given", line))
        else:
            entry, photo_problems = _photo_entry(
                csv_path.parent / cells["photo"],
                cells["photo"],
                None if found else key,
                view,
                cells.get("notes") or None,
                line,
            )
            found += photo_problems
            if entry is not None:
                entries.append(entry)
        problems += found
    return entries, problems
