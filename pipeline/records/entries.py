"""What an ingest is asked (visit keys, photo files and entries) and what it answers (results, problems).

The plain values :mod:`pipeline.records.ingest` and its helpers pass around; no database here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from pipeline.errors import UserError
from pipeline.records.schema import DEFAULT_CLINIC

if TYPE_CHECKING:  # pandas is only handed in (dots tables); importing it here would slow every CLI start
    import pandas as pd

__all__ = [
    "Assess",
    "AssessmentLike",
    "ClientSummary",
    "ImportResult",
    "IngestError",
    "IngestResult",
    "PhotoEntry",
    "PhotoFile",
    "Problem",
    "StoredAssessment",
    "VisitKey",
]


@dataclass(frozen=True)
class Problem:
    """One reason why nothing was ingested; ``row``: the manifest line (1 = header), None outside a manifest."""

    message: str
    row: int | None = None

    def __str__(self) -> str:
        return self.message if self.row is None else f"row {self.row}: {self.message}"


class IngestError(UserError):
    """Nothing was ingested, for the reasons in ``problems`` (joined on one line in the message)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class VisitKey:
    """What identifies a visit (``session_number`` 0 = none)."""

    clinic: str
    client: str
    region: str
    date: date
    kind: str
    session_number: int = 0

    def __str__(self) -> str:
        who = self.client if self.clinic == DEFAULT_CLINIC else f"{self.clinic}/{self.client}"
        number = f" {self.session_number}" if self.session_number else ""
        return f"{who}/{self.region} {self.date.isoformat()} {self.kind}{number}"


@dataclass(frozen=True)
class PhotoFile:
    """A photo file checked to be a usable photo, with what the records keep of it."""

    path: Path
    sha256: str
    width: int
    height: int
    size: int
    capture_time: datetime | None


@dataclass(frozen=True)
class IngestResult:
    """One visit ingested: ``added`` and ``skipped`` (already present) are photo names as given."""

    visit: VisitKey
    visit_id: int
    visit_created: bool
    added: tuple[str, ...]
    skipped: tuple[str, ...]
    assessments_added: int = 0


@dataclass(frozen=True)
class ImportResult:
    """A manifest import: the visits ingested, or the problems that stopped it (then nothing was written)."""

    visits: tuple[IngestResult, ...] = ()
    problems: tuple[Problem, ...] = ()

    @property
    def added(self) -> int:
        return sum(len(v.added) for v in self.visits)

    @property
    def skipped(self) -> int:
        return sum(len(v.skipped) for v in self.visits)


@dataclass(frozen=True)
class StoredAssessment:
    id: int
    created: bool


@dataclass(frozen=True)
class ClientSummary:
    clinic: str
    client: str
    regions: int
    visits: int
    photos: int
    last_visit: date | None


class AssessmentLike(Protocol):
    """What :func:`add_visit` needs of an assessment (``pipeline.one_photo.assessment.Assessment`` is one)."""

    dots: pd.DataFrame

    def to_json(self) -> dict[str, Any]: ...


#: Assesses one photo file; None when it cannot (the photo is still ingested).
Assess = Callable[[Path], AssessmentLike | None]
#: Assessments made before a visit's transaction: photo sha256 -> (assessment.json, dots table).
_Assessed: TypeAlias = "dict[str, tuple[dict[str, Any], pd.DataFrame | None]]"


@dataclass(frozen=True)
class PhotoEntry:
    """One photo of one visit as asked for: a manifest row or one photo of :func:`add_visit`."""

    row: int | None
    name: str
    key: VisitKey
    photo: PhotoFile
    view: str | None
    notes: str | None
