"""access redesign: document lineage, opaque patient ids, tombstones of removed objects

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:00:00

- registry_objects.lineage: the logical document across ITI-57 versions and RPLC /
  XFRM_RPLC replacements (backfilled: the lid, then each replacement takes its target's);
- patients.public_id: a random id for URLs and FHIR (backfilled);
- removed_objects: what ITI-62 / ITI-86 removed, for the audit trail and recovery.
"""
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
REPLACING = ("urn:ihe:iti:2007:AssociationType:RPLC", "urn:ihe:iti:2007:AssociationType:XFRM_RPLC")


def upgrade() -> None:
    with op.batch_alter_table("registry_objects") as batch:
        batch.add_column(sa.Column("lineage", sa.String(length=64), nullable=True))
    op.create_index("ix_objects_lineage", "registry_objects", ["lineage", "status"])
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("public_id", sa.String(length=64), nullable=True))
    op.create_table(
        "removed_objects",
        sa.Column("pk", BIG, nullable=False),
        sa.Column("entry_uuid", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=1), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=True),
        sa.Column("removed_at", sa.String(length=20), nullable=False),
        sa.Column("removed_by", sa.String(length=128), nullable=False),
        sa.Column("transaction", sa.String(length=16), nullable=False),
        sa.Column("blob_address", sa.String(length=64), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_removed_objects")),
    )
    op.create_index("ix_removed_patient", "removed_objects", ["patient_pk"])
    conn = op.get_bind()
    objects = sa.table("registry_objects", sa.column("pk"), sa.column("kind"), sa.column("entry_uuid"),
                       sa.column("lid"), sa.column("lineage"), sa.column("assoc_type"),
                       sa.column("source_uuid"), sa.column("target_uuid"))
    conn.execute(objects.update().where(objects.c.kind == "D").values(lineage=objects.c.lid))
    lineage = dict(conn.execute(sa.select(objects.c.entry_uuid, objects.c.lid)
                                .where(objects.c.kind == "D")).all())
    replacements = conn.execute(sa.select(objects.c.source_uuid, objects.c.target_uuid)
                                .where(objects.c.kind == "A", objects.c.assoc_type.in_(REPLACING))
                                .order_by(objects.c.pk)).all()
    members: dict[str, set[str]] = {}
    for uid, lin in lineage.items():
        members.setdefault(lin, set()).add(uid)
    changed: set[str] = set()
    for source, target in replacements:
        if source in lineage and target in lineage and lineage[source] != lineage[target]:
            old, new = lineage[source], lineage[target]
            for uid in members.pop(old, set()):
                lineage[uid] = new
                members[new].add(uid)
                changed.add(uid)
    for uid in changed:
        conn.execute(objects.update().where(objects.c.entry_uuid == uid).values(lineage=lineage[uid]))
    patients = sa.table("patients", sa.column("pk"), sa.column("public_id"))
    for (pk,) in conn.execute(sa.select(patients.c.pk)).all():
        conn.execute(patients.update().where(patients.c.pk == pk).values(public_id=secrets.token_hex(16)))
    op.create_index("ix_patients_public_id", "patients", ["public_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_removed_patient", table_name="removed_objects")
    op.drop_table("removed_objects")
    op.drop_index("ix_patients_public_id", table_name="patients")
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("public_id")
    op.drop_index("ix_objects_lineage", table_name="registry_objects")
    with op.batch_alter_table("registry_objects") as batch:
        batch.drop_column("lineage")
