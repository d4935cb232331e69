"""Rows that several processes may create at once: ``INSERT ... ON CONFLICT DO NOTHING``, then read back.

A row another process created first is simply found (see :mod:`pipeline.records.ingest`).
Only SQLite and PostgreSQL are supported (the dialects with ``ON CONFLICT``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def _insert(session: Session, model: type, values: Mapping[str, Any]) -> int | None:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING id``: the new row's id, None if a row with
    the same unique key exists. (RETURNING, not the row count: drivers report -1 for some.)"""
    dialect = session.get_bind().dialect.name
    stmt: sqlite.Insert | postgresql.Insert
    if dialect == "sqlite":
        stmt = sqlite.insert(model).values(**values).on_conflict_do_nothing()
    elif dialect == "postgresql":
        stmt = postgresql.insert(model).values(**values).on_conflict_do_nothing()
    else:
        raise ValueError(f"records on {dialect!r} are not supported (use SQLite or PostgreSQL)")
    return session.execute(stmt.returning(model.id)).scalar()  # type: ignore[attr-defined]


def _ensure(session: Session, model: type, keys: Mapping[str, Any], values: Mapping[str, Any] = {}) -> tuple[int, bool]:
    """The id of the row of ``model`` with ``keys``, inserted (with ``values``) if missing; and
    whether this call inserted it. A row another process inserts meanwhile is found, not duplicated."""
    find = sa.select(model.id).filter_by(**keys)  # type: ignore[attr-defined]
    found = session.scalar(find)
    if found is not None:
        return found, False
    new_id = _insert(session, model, {**keys, **values})
    return (new_id, True) if new_id is not None else (session.scalars(find).one(), False)
