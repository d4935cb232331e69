"""Photos belong to a clinic: a photo's sha256 is unique per clinic, not across the records,
so two clinics may record the same bytes without either learning of the other.

Each existing photo gets the clinic of the visit it belongs to; a photo in no visit (left
by an interrupted import of an old version) gets the ``default`` clinic. Going back is
refused while some bytes are recorded by more than one clinic.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CLINIC_OF_PHOTO = sa.text(
    "UPDATE photos SET clinic_id = (SELECT clients.clinic_id FROM visit_photos"
    " JOIN visits ON visits.id = visit_photos.visit_id JOIN clients ON clients.id = visits.client_id"
    " WHERE visit_photos.photo_id = photos.id)")


def _default_clinic(conn: sa.Connection) -> int:
    """The id of the ``default`` clinic, created if it was removed."""
    found = conn.scalar(sa.text("SELECT id FROM clinics WHERE slug = 'default'"))
    if found is not None:
        return int(found)
    clinics = sa.table("clinics", sa.column("slug"), sa.column("name"), sa.column("created_at"))
    conn.execute(clinics.insert().values(slug="default", name="Default clinic", created_at=sa.func.now()))
    return int(conn.scalar(sa.text("SELECT id FROM clinics WHERE slug = 'default'")))


def upgrade() -> None:
    with op.batch_alter_table("photos") as batch:
        batch.add_column(sa.Column("clinic_id", sa.Integer(), nullable=True))
    conn = op.get_bind()
    conn.execute(_CLINIC_OF_PHOTO)
    if conn.scalar(sa.text("SELECT count(*) FROM photos WHERE clinic_id IS NULL")):
        conn.execute(sa.text("UPDATE photos SET clinic_id = :c WHERE clinic_id IS NULL"),
                     {"c": _default_clinic(conn)})
    with op.batch_alter_table("photos") as batch:
        batch.alter_column("clinic_id", existing_type=sa.Integer(), nullable=False)
        batch.drop_constraint(op.f("uq_photos_sha256"), type_="unique")
        batch.create_unique_constraint(op.f("uq_photos_clinic_id_sha256"), ["clinic_id", "sha256"])
        batch.create_foreign_key(op.f("fk_photos_clinic_id_clinics"), "clinics", ["clinic_id"], ["id"])
        batch.create_index(op.f("ix_photos_sha256"), ["sha256"])


def downgrade() -> None:
    conn = op.get_bind()
    shared = conn.scalar(sa.text("SELECT count(*) FROM (SELECT sha256 FROM photos GROUP BY sha256"
                                 " HAVING count(*) > 1) AS shared"))
    if shared:
        raise RuntimeError(f"cannot go back before revision 0004: {shared} photo(s) are recorded by more than "
                           "one clinic")
    with op.batch_alter_table("photos") as batch:
        batch.drop_index(op.f("ix_photos_sha256"))
        batch.drop_constraint(op.f("fk_photos_clinic_id_clinics"), type_="foreignkey")
        batch.drop_constraint(op.f("uq_photos_clinic_id_sha256"), type_="unique")
        batch.create_unique_constraint(op.f("uq_photos_sha256"), ["sha256"])
        batch.drop_column("clinic_id")
