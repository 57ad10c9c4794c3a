"""every transform's lineage in lineage_patients, so that the view judges it with its original

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 10:00:00

A transform (XFRM) is visible only when the document it transforms is (partage.access.gate;
docs/access.md, "Visibility: one decision on the whole result"). The view reads the documents
transformed for the lineages `lineage_patients` (registry.lineages) names only, and the
registration now names a transform's lineage there (`register.insert_objects`). Filled from
the XFRM associations registered before: without it, their transforms would still be judged
on their own codes.
"""
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO lineage_patients (lineage, patient_pk) "
        "SELECT DISTINCT COALESCE(d.lineage, d.lid), d.patient_pk FROM registry_objects a "
        "JOIN registry_objects d ON d.entry_uuid = a.source_uuid "
        "WHERE a.kind = 'A' AND a.assoc_type = 'urn:ihe:iti:2007:AssociationType:XFRM' "
        "AND d.kind = 'D' AND d.patient_pk IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM lineage_patients lp "
        "WHERE lp.lineage = COALESCE(d.lineage, d.lid) AND lp.patient_pk = d.patient_pk)")


def downgrade() -> None:
    # A transform's lineage of one version goes (those of several versions stay, 0012's).
    op.execute(
        "DELETE FROM lineage_patients WHERE lineage IN ("
        "SELECT lineage FROM registry_objects WHERE kind = 'D' AND lineage IS NOT NULL "
        "GROUP BY lineage HAVING count(*) = 1)")
