"""Shared by the web security tests (tests/test_web_security_*.py): the records' row counts."""

from __future__ import annotations

import sqlalchemy as sa

from pipeline.records.schema import Assessment, Client, Job, Photo, Region, ReviewDecision, User, Visit, VisitPhoto


def counts(world) -> dict[str, int]:
    with world.ctx.records.session() as s:
        return {
            m.__tablename__: s.scalar(sa.select(sa.func.count()).select_from(m))
            for m in (Client, Region, Visit, Photo, VisitPhoto, Assessment, Job, ReviewDecision, User)
        }
