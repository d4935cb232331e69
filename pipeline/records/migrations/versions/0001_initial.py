"""Initial records schema: clinics, clients, regions, visits, photos, assessments, dots,
dot links, review decisions; and the ``default`` clinic.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str = "created_at") -> sa.Column:
    # pipeline.records.schema.UtcDateTime stores UTC in this column type
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def _json(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                     nullable=nullable)


def _float(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.Double(), nullable=nullable)


def upgrade() -> None:
    clinics = op.create_table(
        "clinics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        _timestamp(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinics")),
        sa.UniqueConstraint("slug", name=op.f("uq_clinics_slug")),
    )
    op.create_table(
        "clients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=100), nullable=False),
        _timestamp(),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"], name=op.f("fk_clients_clinic_id_clinics")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clients")),
        sa.UniqueConstraint("clinic_id", "external_id", name=op.f("uq_clients_clinic_id_external_id")),
    )
    op.create_table(
        "regions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        _timestamp(),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"], name=op.f("fk_regions_client_id_clients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regions")),
        sa.UniqueConstraint("client_id", "name", name=op.f("uq_regions_client_id_name")),
    )
    op.create_table(
        "visits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("region_id", sa.Integer(), nullable=False),
        sa.Column("visit_date", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("session_number", sa.Integer(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        _timestamp(),
        sa.CheckConstraint(
            "(kind = 'session' AND session_number >= 1) OR (kind = 'touch-up' AND session_number >= 0)"
            " OR (kind IN ('baseline', 'follow-up') AND session_number = 0)",
            name=op.f("ck_visits_session_number")),
        sa.CheckConstraint("kind IN ('baseline', 'session', 'follow-up', 'touch-up')", name=op.f("ck_visits_kind")),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"], name=op.f("fk_visits_client_id_clients")),
        sa.ForeignKeyConstraint(["region_id"], ["regions.id"], name=op.f("fk_visits_region_id_regions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visits")),
        sa.UniqueConstraint("client_id", "region_id", "visit_date", "kind", "session_number",
                            name=op.f("uq_visits_client_id_region_id_visit_date_kind_session_number")),
    )
    op.create_index(op.f("ix_visits_region_id"), "visits", ["region_id"])
    op.create_table(
        "photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("stored_path", sa.String(length=255), nullable=False),
        sa.Column("original_name", sa.String(length=255), nullable=False),
        sa.Column("view", sa.String(length=16), nullable=True),
        sa.Column("capture_time", sa.DateTime(), nullable=True),
        sa.Column("capture_utc_offset_min", sa.Integer(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        _timestamp(),
        sa.CheckConstraint("view IN ('closeup', 'global')", name=op.f("ck_photos_view")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_photos")),
        sa.UniqueConstraint("sha256", name=op.f("uq_photos_sha256")),
    )
    op.create_table(
        "visit_photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("visit_id", sa.Integer(), nullable=False),
        sa.Column("photo_id", sa.Integer(), nullable=False),
        _timestamp("added_at"),
        sa.ForeignKeyConstraint(["photo_id"], ["photos.id"], name=op.f("fk_visit_photos_photo_id_photos")),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name=op.f("fk_visit_photos_visit_id_visits"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visit_photos")),
        sa.UniqueConstraint("photo_id", name=op.f("uq_visit_photos_photo_id")),
    )
    op.create_index(op.f("ix_visit_photos_visit_id"), "visit_photos", ["visit_id"])
    op.create_table(
        "assessments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("photo_id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=False),
        sa.Column("model_sha256", sa.String(length=64), nullable=True),
        sa.Column("model_key", sa.String(length=320), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("schema", sa.String(length=64), nullable=False),
        sa.Column("view", sa.String(length=16), nullable=True),
        sa.Column("dot_count", sa.Integer(), nullable=False),
        _json("metrics"),
        _json("calibration"),
        _json("quality"),
        _json("warnings"),
        _json("timings"),
        _json("roi_polygon_px", nullable=True),
        _timestamp(),
        sa.ForeignKeyConstraint(["photo_id"], ["photos.id"], name=op.f("fk_assessments_photo_id_photos")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assessments")),
        sa.UniqueConstraint("photo_id", "model_key", "config_hash",
                            name=op.f("uq_assessments_photo_id_model_key_config_hash")),
    )
    op.create_table(
        "dots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assessment_id", sa.Integer(), nullable=False),
        sa.Column("dot_index", sa.Integer(), nullable=False),
        _float("x", nullable=False),
        _float("y", nullable=False),
        *(_float(name) for name in ("diameter_mm", "diameter_px", "elongation", "lab_l", "lab_a", "lab_b",
                                    "skin_l", "skin_a", "skin_b", "contrast_dl", "de00", "blue_index")),
        sa.Column("blue_shift", sa.Boolean(), nullable=False),
        sa.Column("faded", sa.Boolean(), nullable=False),
        sa.Column("spread", sa.Boolean(), nullable=False),
        _float("score"),
        sa.Column("skin_samples", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["assessment_id"], ["assessments.id"], name=op.f("fk_dots_assessment_id_assessments"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dots")),
        sa.UniqueConstraint("assessment_id", "dot_index", name=op.f("uq_dots_assessment_id_dot_index")),
    )
    op.create_table(
        "dot_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("from_dot_id", sa.Integer(), nullable=False),
        sa.Column("to_dot_id", sa.Integer(), nullable=False),
        _float("residual_mm"),
        sa.Column("method", sa.String(length=64), nullable=False),
        _timestamp(),
        sa.CheckConstraint("from_dot_id <> to_dot_id", name=op.f("ck_dot_links_distinct_dots")),
        sa.ForeignKeyConstraint(["from_dot_id"], ["dots.id"], name=op.f("fk_dot_links_from_dot_id_dots"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["to_dot_id"], ["dots.id"], name=op.f("fk_dot_links_to_dot_id_dots"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dot_links")),
        sa.UniqueConstraint("from_dot_id", "to_dot_id", "method",
                            name=op.f("uq_dot_links_from_dot_id_to_dot_id_method")),
    )
    op.create_index(op.f("ix_dot_links_to_dot_id"), "dot_links", ["to_dot_id"])
    op.create_table(
        "review_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dot_id", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("new_label", sa.String(length=64), nullable=True),
        sa.Column("reviewer", sa.String(length=200), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        _timestamp(),
        sa.CheckConstraint("(decision = 'relabel') = (new_label IS NOT NULL)",
                           name=op.f("ck_review_decisions_new_label")),
        sa.CheckConstraint("decision IN ('accept', 'reject', 'relabel')", name=op.f("ck_review_decisions_decision")),
        sa.ForeignKeyConstraint(["dot_id"], ["dots.id"], name=op.f("fk_review_decisions_dot_id_dots"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_decisions")),
    )
    op.create_index(op.f("ix_review_decisions_dot_id"), "review_decisions", ["dot_id"])

    # the clinic of single-clinic installations (pipeline.records.schema.DEFAULT_CLINIC)
    op.execute(clinics.insert().values(slug="default", name="Default clinic", created_at=sa.func.now()))


def downgrade() -> None:
    for table in ("review_decisions", "dot_links", "dots", "assessments", "visit_photos", "photos", "visits",
                  "regions", "clients", "clinics"):
        op.drop_table(table)
