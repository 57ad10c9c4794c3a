"""FHIR search in SQL: token hashes, normalized names, date ranges, the patients' index, versions

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 09:00:00

- object_codes: hash_sys_value / hash_value / hash_sys (HAPI's token hashes, search_index);
- object_authors: family_norm / given_norm (accents and case folded);
- registry_objects: creation_high, service_start_high, service_stop_high (the end of the range
  each DTM covers), revision and updated_at (FHIR meta.versionId / meta.lastUpdated), an index
  for FHIR search's default order (newest registration first);
- patients: revision; patient_identifiers: an index on the value alone;
- patient_index: the patients' names and birth dates as Patient search compares them.

Existing rows are re-indexed from what they hold, with the functions new rows are indexed
with (`partage.registry.indexing`, `partage.registry.patient_index`).
"""
import json

import sqlalchemy as sa
from alembic import op

from partage.registry.indexing import author_rows, code_rows, object_from_row, row_values
from partage.registry.patient_index import index_rows

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CHUNK = 1000
HIGHS = ("creation_high", "service_start_high", "service_stop_high")


def upgrade() -> None:
    with op.batch_alter_table("object_codes") as batch:
        for name in ("hash_sys_value", "hash_value", "hash_sys"):
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=True))
    for suffix, column in (("sv", "hash_sys_value"), ("v", "hash_value"), ("s", "hash_sys")):
        op.create_index(f"ix_codes_patient_hash_{suffix}", "object_codes", ["patient_pk", column])
    with op.batch_alter_table("object_authors") as batch:
        batch.add_column(sa.Column("family_norm", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("given_norm", sa.String(length=200), nullable=True))
    with op.batch_alter_table("registry_objects") as batch:
        for name in HIGHS:
            batch.add_column(sa.Column(name, sa.String(length=14), nullable=True))
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("updated_at", sa.String(length=20), nullable=True))
    op.create_index("ix_objects_patient_kind_registered", "registry_objects",
                    ["patient_pk", "kind", "registered_at", "pk"])
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="1"))
    op.create_index("ix_patient_identifiers_value", "patient_identifiers", ["value"])
    op.create_table(
        "patient_index",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("attribute", sa.String(length=16), nullable=False),
        sa.Column("value_norm", sa.String(length=200), nullable=True),
        sa.Column("value_exact", sa.String(length=200), nullable=True),
        sa.Column("low", sa.String(length=14), nullable=True),
        sa.Column("high", sa.String(length=14), nullable=True),
        sa.ForeignKeyConstraint(["patient_pk"], ["patients.pk"], name=op.f("fk_patient_index_patient_pk_patients")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_patient_index")),
    )
    op.create_index("ix_patient_index_value", "patient_index", ["attribute", "value_norm"])
    op.create_index("ix_patient_index_date", "patient_index", ["attribute", "low"])
    op.create_index("ix_patient_index_patient", "patient_index", ["patient_pk"])
    _reindex(op.get_bind())


def _reindex(conn: sa.Connection) -> None:
    objects = sa.table("registry_objects", sa.column("pk"), sa.column("patient_pk"), sa.column("body"),
                       sa.column("registered_at"), sa.column("updated_at"), *(sa.column(h) for h in HIGHS))
    codes = sa.table("object_codes", *(sa.column(c) for c in (
        "object_pk", "patient_pk", "attribute", "code", "scheme", "hash_sys_value", "hash_value", "hash_sys")))
    authors = sa.table("object_authors", *(sa.column(c) for c in (
        "object_pk", "patient_pk", "person", "family_norm", "given_norm")))
    conn.execute(objects.update().values(updated_at=objects.c.registered_at))
    last = 0
    while True:
        rows = conn.execute(sa.select(objects.c.pk, objects.c.patient_pk, objects.c.body)
                            .where(objects.c.pk > last).order_by(objects.c.pk).limit(CHUNK)).all()
        if not rows:
            break
        last = rows[-1].pk
        pks = [r.pk for r in rows]
        conn.execute(codes.delete().where(codes.c.object_pk.in_(pks)))
        conn.execute(authors.delete().where(authors.c.object_pk.in_(pks)))
        new_codes, new_authors = [], []
        for row in rows:
            obj = object_from_row(row.body)
            highs = {h: v for h, v in row_values(obj, patient_pk=row.patient_pk, registered_at="").items()
                     if h in HIGHS}
            if any(highs.values()):
                conn.execute(objects.update().where(objects.c.pk == row.pk).values(**highs))
            new_codes += [{**c, "object_pk": row.pk, "patient_pk": row.patient_pk} for c in code_rows(obj)]
            new_authors += [{**a, "object_pk": row.pk, "patient_pk": row.patient_pk} for a in author_rows(obj)]
        if new_codes:
            conn.execute(codes.insert(), new_codes)
        if new_authors:
            conn.execute(authors.insert(), new_authors)
    patients = sa.table("patients", sa.column("pk"), sa.column("demographics"))
    index = sa.table("patient_index", *(sa.column(c) for c in (
        "patient_pk", "attribute", "value_norm", "value_exact", "low", "high")))
    for pk, demographics in conn.execute(sa.select(patients.c.pk, patients.c.demographics)).all():
        entries = index_rows(json.loads(demographics or "{}"))
        if entries:
            conn.execute(index.insert(), [{"patient_pk": pk, "value_norm": None, "value_exact": None,
                                           "low": None, "high": None, **r} for r in entries])


def downgrade() -> None:
    op.drop_index("ix_objects_patient_kind_registered", table_name="registry_objects")
    op.drop_index("ix_patient_index_patient", table_name="patient_index")
    op.drop_index("ix_patient_index_date", table_name="patient_index")
    op.drop_index("ix_patient_index_value", table_name="patient_index")
    op.drop_table("patient_index")
    op.drop_index("ix_patient_identifiers_value", table_name="patient_identifiers")
    # Dropped in place (ALTER TABLE DROP COLUMN, SQLite >= 3.35): recreating a table that others
    # reference would trip SQLite's foreign keys.
    with op.batch_alter_table("patients", recreate="never") as batch:
        batch.drop_column("revision")
    with op.batch_alter_table("registry_objects", recreate="never") as batch:
        for name in (*HIGHS, "revision", "updated_at"):
            batch.drop_column(name)
    with op.batch_alter_table("object_authors", recreate="never") as batch:
        batch.drop_column("given_norm")
        batch.drop_column("family_norm")
    for suffix in ("sv", "v", "s"):
        op.drop_index(f"ix_codes_patient_hash_{suffix}", table_name="object_codes")
    with op.batch_alter_table("object_codes", recreate="never") as batch:
        for name in ("hash_sys", "hash_value", "hash_sys_value"):
            batch.drop_column(name)
