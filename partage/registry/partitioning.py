"""Optional, PostgreSQL only: partition the per-patient tables by hash of the patient.

    python -m partage.registry.partitioning --database postgresql+psycopg://.../partage --partitions 16

Turns `registry_objects`, `object_codes` and `object_authors` into tables partitioned
by HASH (patient_pk), keeping their rows, columns, sequences and query indexes. Run it
once, server stopped, on a database at migration head (`partage serve` migrates it on
start); it refuses a database already partitioned. Later alembic migrations that add
columns or indexes apply to partitioned tables as they are.

What the schema gives and what this changes (docs/deployment.md says why):

- every hot query is `WHERE patient_pk = ?` and every hot index begins with patient_pk,
  so a patient's query prunes to one partition;
- a primary key or unique constraint of a partitioned table must contain the partition
  key: the primary keys become (patient_pk, pk) and the entryUUID constraint becomes
  (patient_pk, entry_uuid). Global uniqueness of a uniqueId stays a database fact
  (`unique_ids` is not partitioned); that of an entryUUID rests on the registration
  check `register._uuids_taken` (entryUUIDs are UUIDs);
- object_codes / object_authors reference (patient_pk, object_pk) with ON UPDATE CASCADE,
  so that a patient merge (ITI-8 A40, which moves rows to the surviving patient and so
  to another partition) carries the index rows along;
- patient_pk becomes NOT NULL on the three tables (every object belongs to a patient).

The same shape is what Citus asks of a distribution column: `SELECT
create_distributed_table('registry_objects', 'patient_pk')` and the two index tables
co-located with it (see docs/deployment.md; not tested here: no Citus on this machine).
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import Connection, text

from .store import Registry

TABLES = ("registry_objects", "object_codes", "object_authors")


# The index tables' references to registry_objects: dropped before the conversion (a local
# layout adds them back on the partitioned keys; a sharded one cannot reference foreign tables).
DROP_OBJECT_REFERENCES = [
    "ALTER TABLE object_codes DROP CONSTRAINT IF EXISTS fk_object_codes_object_pk_registry_objects",
    "ALTER TABLE object_authors DROP CONSTRAINT IF EXISTS fk_object_authors_object_pk_registry_objects",
]


def hash_parent(table: str) -> list[str]:
    """`table` becomes a parent partitioned by HASH (patient_pk); its rows wait in `<table>_flat`
    until the partitions exist (local ones here, foreign ones in `sharding`)."""
    return [
        f"ALTER TABLE {table} RENAME TO {table}_flat",
        f"CREATE TABLE {table} (LIKE {table}_flat INCLUDING DEFAULTS) PARTITION BY HASH (patient_pk)",
        f"ALTER TABLE {table} ALTER COLUMN patient_pk SET NOT NULL",
        f"ALTER SEQUENCE {table}_pk_seq OWNED BY {table}.pk",
    ]


def _ddl(partitions: int) -> list[str]:
    out = list(DROP_OBJECT_REFERENCES)
    for table in TABLES:
        out += hash_parent(table)
        out += [f"CREATE TABLE {table}_p{i} PARTITION OF {table} "
                f"FOR VALUES WITH (MODULUS {partitions}, REMAINDER {i})" for i in range(partitions)]
        out += [f"INSERT INTO {table} SELECT * FROM {table}_flat", f"DROP TABLE {table}_flat"]
    out += [
        # Keys contain the partition key.
        "ALTER TABLE registry_objects ADD CONSTRAINT pk_registry_objects PRIMARY KEY (patient_pk, pk)",
        "ALTER TABLE registry_objects ADD CONSTRAINT uq_registry_objects_entry_uuid UNIQUE (patient_pk, entry_uuid)",
        "ALTER TABLE registry_objects ADD CONSTRAINT fk_registry_objects_patient_pk_patients "
        "FOREIGN KEY (patient_pk) REFERENCES patients (pk)",
        "ALTER TABLE object_codes ADD CONSTRAINT pk_object_codes PRIMARY KEY (patient_pk, pk)",
        "ALTER TABLE object_authors ADD CONSTRAINT pk_object_authors PRIMARY KEY (patient_pk, pk)",
        "ALTER TABLE object_codes ADD CONSTRAINT fk_object_codes_object_pk_registry_objects "
        "FOREIGN KEY (patient_pk, object_pk) REFERENCES registry_objects (patient_pk, pk) "
        "ON DELETE CASCADE ON UPDATE CASCADE",
        "ALTER TABLE object_authors ADD CONSTRAINT fk_object_authors_object_pk_registry_objects "
        "FOREIGN KEY (patient_pk, object_pk) REFERENCES registry_objects (patient_pk, pk) "
        "ON DELETE CASCADE ON UPDATE CASCADE",
        # The query indexes of schema.py (created on every partition).
        "CREATE INDEX ix_objects_patient_kind_status ON registry_objects (patient_pk, kind, status, creation_time)",
        "CREATE INDEX ix_objects_patient_kind_registered ON registry_objects "
        "(patient_pk, kind, registered_at, pk)",
        "CREATE INDEX ix_objects_unique_id ON registry_objects (unique_id)",
        "CREATE INDEX ix_objects_lid ON registry_objects (lid, version)",
        "CREATE INDEX ix_objects_source ON registry_objects (source_uuid)",
        "CREATE INDEX ix_objects_target ON registry_objects (target_uuid)",
        "CREATE INDEX ix_objects_blob ON registry_objects (blob_address)",
        "CREATE INDEX ix_objects_entry_uuid ON registry_objects (entry_uuid)",
        "CREATE INDEX ix_codes_patient_attr_code ON object_codes (patient_pk, attribute, code)",
        "CREATE INDEX ix_codes_object ON object_codes (object_pk)",
        "CREATE INDEX ix_codes_patient_hash_sv ON object_codes (patient_pk, hash_sys_value)",
        "CREATE INDEX ix_codes_patient_hash_v ON object_codes (patient_pk, hash_value)",
        "CREATE INDEX ix_codes_patient_hash_s ON object_codes (patient_pk, hash_sys)",
        "CREATE INDEX ix_authors_patient_person ON object_authors (patient_pk, person)",
        "CREATE INDEX ix_authors_object ON object_authors (object_pk)",
    ]
    return out


def is_partitioned(conn: Connection) -> bool:
    return bool(conn.execute(text("SELECT count(*) FROM pg_partitioned_table p JOIN pg_class c "
                                  "ON c.oid = p.partrelid WHERE c.relname = 'registry_objects'")).scalar())


def partition(registry: Registry, partitions: int = 16) -> None:
    """Convert the three per-patient tables, in one transaction (all or nothing)."""
    if registry.engine.dialect.name != "postgresql":
        raise ValueError("partitioning by patient is for PostgreSQL")
    if not 2 <= partitions <= 1024:
        raise ValueError("partitions: between 2 and 1024")
    with registry.write() as conn:
        if is_partitioned(conn):
            raise ValueError("registry_objects is already partitioned")
        for statement in _ddl(partitions):
            conn.exec_driver_sql(statement)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="partition the registry's per-patient tables by patient hash")
    parser.add_argument("--database", required=True, help="PostgreSQL SQLAlchemy URL")
    parser.add_argument("--partitions", type=int, default=16)
    args = parser.parse_args(argv)
    registry = Registry(args.database)
    registry.migrate()
    try:
        partition(registry, args.partitions)
    except ValueError as exc:
        print(f"partage.registry.partitioning: {exc}", file=sys.stderr)
        return 2
    finally:
        registry.dispose()
    print(f"registry_objects, object_codes, object_authors: {args.partitions} hash partitions by patient_pk")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
