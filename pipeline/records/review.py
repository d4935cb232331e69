"""A reviewer's acts on one assessed photo: decisions on its dots, dots added, areas painted, "done".

What the photo review page (``/review/photo/<assessment>``) records, and what the label
export reads back. Every act names its reviewer (the name shown and the web app user) and
its time; acts are appended and never deleted. Undo stamps ``undone_at`` on the reviewer's
latest act of the photo, which then counts nowhere (:func:`photo_acts` returns the
active acts only).

The acts of one photo are strictly ordered by their time: an act recorded in the same
microsecond as the photo's previous act (or earlier, if a clock went back) is stamped one
microsecond after it (:func:`act_time`), so "the last act" is always one act.

Coordinates are photo pixels of the upright photo the assessment's dots are in (OpenCV
convention: pixel centres at integers, so the photo covers ``[-0.5, W - 0.5)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from pipeline.records.assessments import record_review
from pipeline.records.schema import MASK_LABELS, SHAPE_KINDS, AddedDot, DoneMark, Dot, ReviewDecision, ReviewShape

__all__ = [
    "ACT_KINDS",
    "MAX_BRUSH_RADIUS_PX",
    "MAX_SHAPE_POINTS",
    "MIN_BRUSH_RADIUS_PX",
    "PHOTO_DECISIONS",
    "Act",
    "PhotoActs",
    "ReviewInputError",
    "Reviewer",
    "act_time",
    "add_dot",
    "add_shape",
    "check_point",
    "check_shape",
    "decide_dot",
    "mark_done",
    "photo_acts",
    "undo_last",
]

#: The kinds of act, as :class:`Act` names them.
ACT_KINDS = ("decision", "added_dot", "shape", "done")
#: Decisions the photo page makes: ``accept`` (confirmed: a dot) and ``reject`` (not a dot).
PHOTO_DECISIONS = ("accept", "reject")
#: Most vertices of one shape (a long brush stroke is sent as several).
MAX_SHAPE_POINTS = 2000
MIN_BRUSH_RADIUS_PX = 0.5
MAX_BRUSH_RADIUS_PX = 500.0
_TICK = timedelta(microseconds=1)


class ReviewInputError(ValueError):
    """An act that cannot be recorded as asked (one line, shown to the reviewer as is)."""


@dataclass(frozen=True)
class Reviewer:
    """Who acts: the name shown in the records and the web app user (None outside the app)."""

    name: str
    user_id: int | None = None


@dataclass(frozen=True)
class Act:
    """One active act on a photo. ``detail``: ``dot_id``, ``decision`` and ``new_label`` of a
    decision; ``x``, ``y`` of an added dot; ``label``, ``kind``, ``points``, ``radius_px`` of
    a shape; nothing for a done mark."""

    kind: str
    id: int
    reviewer: str
    reviewer_user_id: int | None
    at: datetime
    detail: dict[str, Any]

    def describe(self) -> str:
        """A few words for the reviewer ("confirm dot 12", "hair brush stroke", ...)."""
        d = self.detail
        if self.kind == "decision":
            verb = {"accept": "confirm", "reject": "reject"}.get(d["decision"], f"relabel ({d.get('new_label')})")
            return f"{verb} dot {d.get('dot_index', d['dot_id'])}"
        if self.kind == "added_dot":
            return f"add a dot at {d['x']:.0f}, {d['y']:.0f}"
        if self.kind == "shape":
            return f"{d['label']} {'brush stroke' if d['kind'] == 'brush' else 'polygon'}"
        return "mark the dots done"


@dataclass(frozen=True)
class PhotoActs:
    """The active acts on one assessment's photo, each kind in the order they were made."""

    assessment_id: int
    decisions: tuple[Act, ...]
    added: tuple[Act, ...]
    shapes: tuple[Act, ...]
    done: tuple[Act, ...]

    @property
    def latest_decisions(self) -> dict[int, Act]:
        """dot id -> the latest active decision on it."""
        return {a.detail["dot_id"]: a for a in self.decisions}

    @property
    def is_done(self) -> bool:
        return bool(self.done)

    @property
    def any(self) -> bool:
        return bool(self.decisions or self.added or self.shapes or self.done)

    def all(self) -> list[Act]:
        """Every active act, oldest first."""
        return sorted((*self.decisions, *self.added, *self.shapes, *self.done), key=_order)


def _order(act: Act) -> tuple[datetime, int, int]:
    return act.at, ACT_KINDS.index(act.kind), act.id


# --------------------------------------------------------------------------- input checks (pure)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReviewInputError(f"{what} must be a number, got {value!r}"[:200])
    number = float(value)
    if not math.isfinite(number):
        raise ReviewInputError(f"{what} must be a finite number")
    return number


def check_point(x: Any, y: Any, width: int, height: int) -> tuple[float, float]:
    """(x, y) as numbers inside a ``width`` x ``height`` photo (``[-0.5, W - 0.5) x [-0.5, H - 0.5)``)."""
    fx, fy = _number(x, "x"), _number(y, "y")
    if not (-0.5 <= fx < width - 0.5 and -0.5 <= fy < height - 0.5):
        raise ReviewInputError(f"({fx:g}, {fy:g}) is outside the photo ({width} x {height} pixels)")
    return fx, fy


def check_shape(
    label: Any, kind: Any, points: Any, radius_px: Any, width: int, height: int
) -> tuple[str, str, list[list[float]], float | None]:
    """A painted shape's label, kind, vertices and brush radius, checked against the photo.

    Vertices may lie on the photo's border (``[-0.5, W - 0.5]``); a brush needs one vertex
    or more and a radius, a polygon three or more and no radius.
    """
    if label not in MASK_LABELS:
        raise ReviewInputError(f"label must be one of {', '.join(MASK_LABELS)}, got {label!r}"[:200])
    if kind not in SHAPE_KINDS:
        raise ReviewInputError(f"kind must be one of {', '.join(SHAPE_KINDS)}, got {kind!r}"[:200])
    if not isinstance(points, Sequence) or isinstance(points, (str, bytes)):
        raise ReviewInputError("points must be a list of [x, y] pairs")
    least = 1 if kind == "brush" else 3
    if not least <= len(points) <= MAX_SHAPE_POINTS:
        raise ReviewInputError(f"a {kind} needs {least} to {MAX_SHAPE_POINTS} points, got {len(points)}")
    out = []
    for i, p in enumerate(points):
        if not isinstance(p, Sequence) or isinstance(p, (str, bytes)) or len(p) != 2:
            raise ReviewInputError(f"point {i} must be an [x, y] pair")
        x, y = _number(p[0], f"point {i} x"), _number(p[1], f"point {i} y")
        if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
            raise ReviewInputError(f"point {i} ({x:g}, {y:g}) is outside the photo ({width} x {height} pixels)")
        out.append([x, y])
    radius = None
    if kind == "brush":
        radius = _number(radius_px, "radius_px") if radius_px is not None else math.nan
        if not MIN_BRUSH_RADIUS_PX <= radius <= MAX_BRUSH_RADIUS_PX:
            raise ReviewInputError(
                f"a brush needs radius_px from {MIN_BRUSH_RADIUS_PX:g} to {MAX_BRUSH_RADIUS_PX:g} pixels"
            )
    elif radius_px is not None:
        raise ReviewInputError("a polygon has no radius_px")
    return label, kind, out, radius


# --------------------------------------------------------------------------- recording acts


def _latest_time(session: Session, assessment_id: int) -> datetime | None:
    times = [
        session.scalar(
            sa.select(sa.func.max(ReviewDecision.created_at))
            .join(Dot, Dot.id == ReviewDecision.dot_id)
            .where(Dot.assessment_id == assessment_id)
        )
    ]
    for table in (AddedDot, ReviewShape, DoneMark):
        times.append(
            session.scalar(sa.select(sa.func.max(table.created_at)).where(table.assessment_id == assessment_id))
        )
    known = [t for t in times if t is not None]
    return max(known) if known else None


def act_time(session: Session, assessment_id: int, now: datetime) -> datetime:
    """``now``, or one microsecond after the photo's latest act when that is not earlier."""
    latest = _latest_time(session, assessment_id)
    return now if latest is None or now > latest else latest + _TICK


def decide_dot(
    session: Session, assessment_id: int, dot_id: int, decision: str | None, who: Reviewer, now: datetime
) -> int:
    """Record ``accept`` or ``reject`` on a dot of the assessment (``decision`` as sent: checked here);
    returns the decision's id."""
    if decision is None or decision not in PHOTO_DECISIONS:
        raise ReviewInputError(f"decision must be one of {', '.join(PHOTO_DECISIONS)}, got {decision!r}"[:200])
    found = session.scalar(sa.select(Dot.id).where(Dot.id == dot_id, Dot.assessment_id == assessment_id))
    if found is None:
        raise LookupError(f"no dot {dot_id} on this photo")
    return record_review(
        session, dot_id, decision, who.name, reviewer_user_id=who.user_id, at=act_time(session, assessment_id, now)
    )


def add_dot(session: Session, assessment_id: int, x: float, y: float, who: Reviewer, now: datetime) -> int:
    """Record a dot the model missed (coordinates already checked: :func:`check_point`)."""
    row = AddedDot(
        assessment_id=assessment_id,
        x=x,
        y=y,
        reviewer=who.name,
        reviewer_user_id=who.user_id,
        created_at=act_time(session, assessment_id, now),
    )
    session.add(row)
    session.flush()
    return row.id


def add_shape(
    session: Session,
    assessment_id: int,
    label: str,
    kind: str,
    points: list[list[float]],
    radius_px: float | None,
    who: Reviewer,
    now: datetime,
) -> int:
    """Record a painted area (checked already: :func:`check_shape`)."""
    row = ReviewShape(
        assessment_id=assessment_id,
        label=label,
        kind=kind,
        points=points,
        radius_px=radius_px,
        reviewer=who.name,
        reviewer_user_id=who.user_id,
        created_at=act_time(session, assessment_id, now),
    )
    session.add(row)
    session.flush()
    return row.id


def mark_done(session: Session, assessment_id: int, who: Reviewer, now: datetime) -> int | None:
    """Mark the photo's dots done; None (nothing recorded) when they are marked done already."""
    if photo_acts(session, assessment_id).is_done:
        return None
    row = DoneMark(
        assessment_id=assessment_id,
        reviewer=who.name,
        reviewer_user_id=who.user_id,
        created_at=act_time(session, assessment_id, now),
    )
    session.add(row)
    session.flush()
    return row.id


_TABLES: dict[str, type[ReviewDecision] | type[AddedDot] | type[ReviewShape] | type[DoneMark]] = {
    "decision": ReviewDecision,
    "added_dot": AddedDot,
    "shape": ReviewShape,
    "done": DoneMark,
}


def undo_last(session: Session, assessment_id: int, user_id: int, now: datetime) -> Act | None:
    """Take back the latest active act of web app user ``user_id`` on this photo; returns it (None: none left)."""
    mine = [a for a in photo_acts(session, assessment_id).all() if a.reviewer_user_id == user_id]
    if not mine:
        return None
    last = mine[-1]
    session.execute(sa.update(_TABLES[last.kind]).where(_TABLES[last.kind].id == last.id).values(undone_at=now))
    return last


# --------------------------------------------------------------------------- reading acts back


def photo_acts(session: Session, assessment_id: int) -> PhotoActs:
    """The active (not undone) acts on the assessment's photo."""
    decisions = session.execute(
        sa.select(ReviewDecision, Dot.dot_index)
        .join(Dot, Dot.id == ReviewDecision.dot_id)
        .where(Dot.assessment_id == assessment_id, ReviewDecision.undone_at.is_(None))
        .order_by(ReviewDecision.created_at, ReviewDecision.id)
    ).all()

    def rows(table: Any) -> list[Any]:
        return list(
            session.scalars(
                sa.select(table)
                .where(table.assessment_id == assessment_id, table.undone_at.is_(None))
                .order_by(table.created_at, table.id)
            )
        )

    def act(act_kind: str, row: Any, **detail: Any) -> Act:
        return Act(
            kind=act_kind,
            id=row.id,
            reviewer=row.reviewer,
            reviewer_user_id=row.reviewer_user_id,
            at=row.created_at,
            detail=detail,
        )

    return PhotoActs(
        assessment_id=assessment_id,
        decisions=tuple(
            act("decision", d, dot_id=d.dot_id, dot_index=index, decision=d.decision, new_label=d.new_label)
            for d, index in decisions
        ),
        added=tuple(act("added_dot", a, x=a.x, y=a.y) for a in rows(AddedDot)),
        shapes=tuple(
            act(
                "shape",
                s,
                label=s.label,
                kind=s.kind,
                points=[list(map(float, p)) for p in s.points],
                radius_px=s.radius_px,
            )
            for s in rows(ReviewShape)
        ),
        done=tuple(act("done", m) for m in rows(DoneMark)),
    )
