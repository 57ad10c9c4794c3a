"""lineages that span patients: the table the view reads a moved document's newest versions by

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 00:00:00

`lineage_patients` (registry.schema): an ITI-57 new version naming another patient leaves the
older versions with the first one; the view narrows its reads of a lineage's newest versions
to the documents' patients, and finds the others here. Filled from the documents registered
before: every lineage whose versions are held by more than one patient (one scan, on a
sharded registry through the coordinator, once).
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lineage_patients",
        sa.Column("lineage", sa.String(length=64), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("lineage", "patient_pk", name=op.f("pk_lineage_patients")),
    )
    op.execute(
        "INSERT INTO lineage_patients (lineage, patient_pk) "
        "SELECT DISTINCT lineage, patient_pk FROM registry_objects WHERE kind = 'D' AND lineage IN ("
        "SELECT lineage FROM registry_objects WHERE kind = 'D' AND lineage IS NOT NULL AND patient_pk IS NOT NULL "
        "GROUP BY lineage HAVING count(DISTINCT patient_pk) > 1) AND patient_pk IS NOT NULL")


def downgrade() -> None:
    op.drop_table("lineage_patients")
