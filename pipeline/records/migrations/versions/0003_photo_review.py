"""The photo review page: decisions can be undone; dots a reviewer added, areas they painted,
and their marks that a photo's dots are all judged.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("review_added_dots", "review_shapes", "review_done_marks")


def _timestamp(name: str = "created_at", nullable: bool = False) -> sa.Column:
    # pipeline.records.schema.UtcDateTime stores UTC in this column type
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _act_columns(table: str) -> list[sa.Column | sa.Constraint]:
    """Who did an act on which assessment, when, and when it was undone (every act table has them)."""
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assessment_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(length=200), nullable=False),
        sa.Column("reviewer_user_id", sa.Integer(), nullable=True),
        _timestamp(),
        _timestamp("undone_at", nullable=True),
        sa.ForeignKeyConstraint(["assessment_id"], ["assessments.id"],
                                name=op.f(f"fk_{table}_assessment_id_assessments"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["reviewer_user_id"], ["users.id"], name=op.f(f"fk_{table}_reviewer_user_id_users"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
    ]


def upgrade() -> None:
    with op.batch_alter_table("review_decisions") as batch:
        batch.add_column(_timestamp("undone_at", nullable=True))
    op.create_table(
        "review_added_dots",
        *_act_columns("review_added_dots"),
        sa.Column("x", sa.Double(), nullable=False),
        sa.Column("y", sa.Double(), nullable=False),
    )
    op.create_table(
        "review_shapes",
        *_act_columns("review_shapes"),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("points", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                  nullable=False),
        sa.Column("radius_px", sa.Double(), nullable=True),
        sa.CheckConstraint("label IN ('background', 'scalp', 'hair')", name=op.f("ck_review_shapes_label")),
        sa.CheckConstraint("kind IN ('brush', 'polygon')", name=op.f("ck_review_shapes_kind")),
        sa.CheckConstraint("(kind = 'brush') = (radius_px IS NOT NULL)", name=op.f("ck_review_shapes_radius")),
    )
    op.create_table("review_done_marks", *_act_columns("review_done_marks"))
    for table in TABLES:
        op.create_index(op.f(f"ix_{table}_assessment_id"), table, ["assessment_id"])


def downgrade() -> None:
    for table in TABLES:
        op.drop_table(table)
    with op.batch_alter_table("review_decisions") as batch:
        batch.drop_column("undone_at")
