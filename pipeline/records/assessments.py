"""Storing assessments (with their dots), links between dots of two assessments, and review decisions.

Each runs in the caller's transaction. Assessments are append-only and keyed by
(photo, model, config hash): storing one again is a no-op, a new model or configuration
adds a row (history is kept).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from data.metrics import FLAG_NAMES
from pipeline.records.entries import StoredAssessment
from pipeline.records.rows import _ensure, _insert
from pipeline.records.schema import (
    DECISIONS,
    DEFAULT_CLINIC,
    DOT_FIELDS,
    VIEWS,
    Assessment,
    Clinic,
    Dot,
    DotLink,
    Photo,
    ReviewDecision,
)

if TYPE_CHECKING:  # pandas is only handed in (dots tables); importing it here would slow every CLI start
    import pandas as pd

__all__ = ["record_review", "store_assessment", "store_dot_links", "store_photo_assessment"]


def _plain(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null (PostgreSQL's JSON has no NaN), numpy scalars Python."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_BOOL_DOT_FIELDS = set(FLAG_NAMES)
_INT_DOT_FIELDS = {"dot_index", "skin_samples"}


def _dot_rows(assessment_id: int, dots: pd.DataFrame) -> list[dict[str, Any]]:
    """``dots.csv``-shaped table -> rows of the ``dots`` table (NaN -> NULL)."""
    frame = dots.rename(columns=DOT_FIELDS)
    frame = frame[[c for c in DOT_FIELDS.values() if c in frame.columns]]
    missing = {"x", "y"} - set(frame.columns)
    if missing:
        raise ValueError(f"dots table without column(s) {', '.join(sorted(missing))}")
    if "dot_index" not in frame.columns:
        frame = frame.assign(dot_index=range(len(frame)))
    rows = []
    for rec in frame.astype(object).where(frame.notna(), None).to_dict("records"):
        row: dict[str, Any] = {"assessment_id": assessment_id}
        for k, v in rec.items():
            if k in _BOOL_DOT_FIELDS:
                row[k] = bool(v)
            elif v is None:
                row[k] = None
            else:
                row[k] = int(v) if k in _INT_DOT_FIELDS else float(v)
        for flag in _BOOL_DOT_FIELDS:
            row.setdefault(flag, False)
        rows.append(row)
    return rows


def store_assessment(
    session: Session,
    photo_sha: str,
    doc: Mapping[str, Any],
    dots: pd.DataFrame | None = None,
    *,
    clinic: str = DEFAULT_CLINIC,
) -> StoredAssessment:
    """Store one ``assessment.json`` document (and its dots) for the photo ``photo_sha`` of ``clinic``.

    Idempotent by (photo, model, config hash): an assessment already stored is
    left as is and its id returned with ``created=False``; a new model or
    configuration adds a row (history is kept). A photo whose view was not given
    gets the assessment's. Runs in the caller's transaction.
    """
    clinic = clinic.strip().lower()
    photo_id = session.scalar(
        sa.select(Photo.id)
        .join(Clinic, Clinic.id == Photo.clinic_id)
        .where(Photo.sha256 == photo_sha, Clinic.slug == clinic)
    )
    if photo_id is None:
        raise LookupError(f"photo {photo_sha[:12]}... is not in the records of clinic {clinic!r}")
    return _store_assessment(session, photo_id, photo_sha, doc, dots)


def store_photo_assessment(
    session: Session, photo_id: int, doc: Mapping[str, Any], dots: pd.DataFrame | None = None
) -> StoredAssessment:
    """:func:`store_assessment` for the photo row ``photo_id`` (a caller that has the row, not only the hash)."""
    sha = session.scalar(sa.select(Photo.sha256).where(Photo.id == photo_id))
    if sha is None:
        raise LookupError(f"photo {photo_id} is not in the records")
    return _store_assessment(session, photo_id, sha, doc, dots)


def _store_assessment(
    session: Session, photo_id: int, photo_sha: str, doc: Mapping[str, Any], dots: pd.DataFrame | None
) -> StoredAssessment:
    doc_sha = (doc.get("photo") or {}).get("sha256")
    if doc_sha and doc_sha != photo_sha:
        raise ValueError(f"the assessment is of photo {doc_sha[:12]}..., not {photo_sha[:12]}...")
    if not doc.get("config_hash"):
        raise ValueError("the assessment has no config_hash")
    model = doc.get("model") or {}
    name, version = str(model.get("name") or "unknown"), str(model.get("version") or "")
    model_sha = model.get("sha256") or None
    keys = {"photo_id": photo_id, "model_key": model_sha or f"{name}@{version}", "config_hash": doc["config_hash"]}
    metrics = _plain(doc.get("metrics") or {})
    assessment_id, created = _ensure(
        session,
        Assessment,
        keys,
        {
            "model_name": name,
            "model_version": version,
            "model_sha256": model_sha,
            "schema": doc.get("schema", ""),
            "view": (doc.get("photo") or {}).get("view"),
            "dot_count": len(dots) if dots is not None else int(metrics.get("dot_count") or 0),
            "metrics": metrics,
            "calibration": _plain(doc.get("calibration") or {}),
            "quality": _plain(doc.get("quality") or {}),
            "warnings": _plain(list(doc.get("warnings") or [])),
            "timings": _plain(doc.get("timings_s") or {}),
            "roi_polygon_px": _plain(doc.get("roi_polygon_px")),
        },
    )
    if created and dots is not None and len(dots):
        session.execute(sa.insert(Dot), _dot_rows(assessment_id, dots))
    view = (doc.get("photo") or {}).get("view")
    if created and view in VIEWS:  # a photo's unknown view is what its assessment found
        session.execute(sa.update(Photo).where(Photo.id == photo_id, Photo.view.is_(None)).values(view=view))
    return StoredAssessment(assessment_id, created)


def store_dot_links(
    session: Session,
    from_assessment_id: int,
    to_assessment_id: int,
    pairs: Iterable[tuple[int, int, float | None]],
    method: str,
) -> int:
    """Record that dot ``i`` of one assessment is dot ``j`` of another (``pairs``:
    ``(i, j, residual_mm)`` by ``dot_index``). Idempotent; returns the number of new links."""

    def ids(assessment_id: int) -> dict[int, int]:
        return dict(session.execute(sa.select(Dot.dot_index, Dot.id).where(Dot.assessment_id == assessment_id)).all())

    a, b = ids(from_assessment_id), ids(to_assessment_id)
    added = 0
    for i, j, residual in pairs:
        if int(i) not in a or int(j) not in b:
            raise ValueError(f"no dot {i} in assessment {from_assessment_id} or no dot {j} in {to_assessment_id}")
        added += (
            _insert(
                session,
                DotLink,
                {
                    "from_dot_id": a[int(i)],
                    "to_dot_id": b[int(j)],
                    "method": method,
                    "residual_mm": _plain(None if residual is None else float(residual)),
                },
            )
            is not None
        )
    return added


def record_review(
    session: Session,
    dot_id: int,
    decision: str,
    reviewer: str,
    *,
    new_label: str | None = None,
    note: str | None = None,
    reviewer_user_id: int | None = None,
    at: datetime | None = None,
) -> int:
    """Append a reviewer's decision on a dot (``accept``, ``reject`` or ``relabel`` with ``new_label``);
    ``reviewer_user_id``: the web app user who decided; ``at``: when (default: now)."""
    if decision not in DECISIONS:
        raise ValueError(f"unknown decision {decision!r}: use {', '.join(DECISIONS)}")
    if (decision == "relabel") != bool(new_label):
        raise ValueError("a 'relabel' decision needs new_label, and only it")
    row = ReviewDecision(
        dot_id=dot_id,
        decision=decision,
        new_label=new_label or None,
        reviewer=reviewer,
        note=note,
        reviewer_user_id=reviewer_user_id,
    )
    if at is not None:
        row.created_at = at
    session.add(row)
    session.flush()
    return row.id
