"""The global entryUUID index of a sharded registry (registry.sharding): entryUUID -> patient.

On a sharded registry the objects live on the shard of their patient, so a look-up by
entryUUID alone would ask every shard. This small table on the coordinator, written in the
same transaction as the object, answers "which patient" (hence which shard) and "is this
entryUUID taken anywhere"; the look-ups by entryUUID then name the patient and are pruned
to one shard. It exists only on a sharded registry (`sharding.shard` creates and fills it):
an unsharded registry has the entryUUID's unique index and needs none of this.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    select,
)

from . import schema

metadata = MetaData()
entry_uuids = Table(
    "entry_uuids", metadata,
    Column("entry_uuid", String(64), primary_key=True),
    Column("patient_pk", Integer, nullable=False),
)
Index("ix_entry_uuids_patient", entry_uuids.c.patient_pk)

_FLAG = "partage_sharded"


def sharded(conn: Connection) -> bool:
    """Is this a sharded registry: does registry_objects have postgres_fdw partitions?
    Asked once per pooled database connection (`sharding.shard` disposes of the pool)."""
    if conn.dialect.name != "postgresql":
        return False
    cached = conn.info.get(_FLAG)
    if cached is None:
        cached = conn.info[_FLAG] = bool(conn.exec_driver_sql(
            "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_foreign_table f ON f.ftrelid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('registry_objects'))").scalar())
    return bool(cached)


def add(conn: Connection, rows: Sequence[tuple[str, int]]) -> None:
    if rows:
        conn.execute(entry_uuids.insert(), [{"entry_uuid": e, "patient_pk": p} for e, p in rows])


def taken(conn: Connection, uuids: Sequence[str]) -> set[str]:
    """Which of these entryUUIDs any shard holds."""
    found: set[str] = set()
    for start in range(0, len(uuids), 500):
        found.update(conn.execute(select(entry_uuids.c.entry_uuid)
                                  .where(entry_uuids.c.entry_uuid.in_(uuids[start:start + 500]))).scalars())
    return found


def patients_of(conn: Connection, uuids: Iterable[str]) -> list[int]:
    wanted = list(dict.fromkeys(uuids))
    found: set[int] = set()
    for start in range(0, len(wanted), 500):
        found.update(conn.execute(select(entry_uuids.c.patient_pk).distinct()
                                  .where(entry_uuids.c.entry_uuid.in_(wanted[start:start + 500]))).scalars())
    return sorted(found)


def route(conn: Connection, uuids: Iterable[str]) -> list[ColumnElement[bool]]:
    """The clause that prunes a look-up by these entryUUIDs to their patients' shards: nothing
    on an unsharded registry; `patient_pk IN (...)` on a sharded one (`IN ()` when none is known)."""
    if not sharded(conn):
        return []
    return [schema.registry_objects.c.patient_pk.in_(patients_of(conn, uuids))]


def moved(conn: Connection, gone: int, keep: int) -> None:
    """A patient merge: the merged patient's entryUUIDs now belong to the survivor."""
    if sharded(conn):
        conn.execute(entry_uuids.update().where(entry_uuids.c.patient_pk == gone).values(patient_pk=keep))


def removed(conn: Connection, uuids: Iterable[str]) -> None:
    wanted = list(uuids)
    if wanted and sharded(conn):
        conn.execute(entry_uuids.delete().where(entry_uuids.c.entry_uuid.in_(wanted)))
