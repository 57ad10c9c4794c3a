"""every lineage of more than one version in lineage_patients, so that the view asks its newest versions of those only

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 12:00:00

`lineage_patients` (registry.lineages) held the lineages an ITI-57 had moved to another
patient; it now holds every lineage of more than one version (a replacement, a new version)
with the patients of its versions, and the view reads the newest versions of those
lineages only. Filled from the documents registered before: one scan, on a sharded registry
through the coordinator, once.
"""
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO lineage_patients (lineage, patient_pk) "
        "SELECT DISTINCT o.lineage, o.patient_pk FROM registry_objects o "
        "WHERE o.kind = 'D' AND o.patient_pk IS NOT NULL AND o.lineage IN ("
        "SELECT lineage FROM registry_objects WHERE kind = 'D' AND lineage IS NOT NULL "
        "GROUP BY lineage HAVING count(*) > 1) "
        "AND NOT EXISTS (SELECT 1 FROM lineage_patients lp "
        "WHERE lp.lineage = o.lineage AND lp.patient_pk = o.patient_pk)")


def downgrade() -> None:
    # 0011 held the lineages that span patients only: the others go.
    op.execute(
        "DELETE FROM lineage_patients WHERE lineage IN ("
        "SELECT lineage FROM lineage_patients GROUP BY lineage HAVING count(*) = 1)")
