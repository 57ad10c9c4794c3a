"""The global index of a sharded registry (registry.sharding): entryUUID -> patient, with the
object's uniqueId and logical id.

On a sharded registry the objects live on the shard of their patient, so a look-up by
entryUUID, uniqueId or logical id alone would ask every shard. This small table on the
coordinator, written in the same transaction as the object, answers "which patients" (hence
which shards) and "is this entryUUID taken anywhere"; the look-ups then name the patients and
are pruned to their shards. Every version of a document has its row (its lid is the
document's), so a logical id names every patient a version of it was filed for. It exists only
on a sharded registry (`sharding.shard` creates and fills it; migration 0009 added the two
ids): an unsharded registry has the columns' own indexes and needs none of this.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

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
from .batches import chunks

metadata = MetaData()
entry_uuids = Table(
    "entry_uuids", metadata,
    Column("entry_uuid", String(64), primary_key=True),
    Column("patient_pk", Integer, nullable=False),
    Column("unique_id", String(128), nullable=True),
    Column("lid", String(64), nullable=True),
)
Index("ix_entry_uuids_patient", entry_uuids.c.patient_pk)
Index("ix_entry_uuids_unique_id", entry_uuids.c.unique_id)
Index("ix_entry_uuids_lid", entry_uuids.c.lid)
COLUMNS = ["entry_uuid", "patient_pk", "unique_id", "lid"]

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


def index_row(values: Mapping[str, Any]) -> dict[str, Any]:
    """The index row of a registry_objects row (`indexing.row_values`)."""
    return {column: values.get(column) for column in COLUMNS}


def add(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Index these objects (their registry_objects rows, or `index_row`s)."""
    if rows:
        conn.execute(entry_uuids.insert(), [index_row(r) for r in rows])


def _indexed(conn: Connection, column: ColumnElement[str], ids: Iterable[str]) -> Iterator[tuple[str, int]]:
    """(entryUUID, patient) of the objects whose `column` is one of `ids`."""
    for chunk in chunks(list(dict.fromkeys(ids))):
        yield from conn.execute(select(entry_uuids.c.entry_uuid, entry_uuids.c.patient_pk).where(column.in_(chunk)))


def taken(conn: Connection, uuids: Sequence[str]) -> set[str]:
    """Which of these entryUUIDs any shard holds."""
    return {entry_uuid for entry_uuid, _pk in _indexed(conn, entry_uuids.c.entry_uuid, uuids)}


def patients_of(conn: Connection, uuids: Iterable[str] = (), *, unique_ids: Iterable[str] = (),
                lids: Iterable[str] = ()) -> list[int]:
    """The patients holding objects of these entryUUIDs, uniqueIds or logical ids."""
    return sorted({pk for column, ids in ((entry_uuids.c.entry_uuid, uuids), (entry_uuids.c.unique_id, unique_ids),
                                          (entry_uuids.c.lid, lids))
                   for _uuid, pk in _indexed(conn, column, ids)})


def route(conn: Connection, uuids: Iterable[str] = (), *, unique_ids: Iterable[str] = (),
          lids: Iterable[str] = ()) -> list[ColumnElement[bool]]:
    """The clause that prunes a look-up by these entryUUIDs, uniqueIds or logical ids to their
    patients' shards: nothing on an unsharded registry; `patient_pk IN (...)` on a sharded one
    (`IN ()` when none is known: no shard holds them)."""
    if not sharded(conn):
        return []
    return [schema.registry_objects.c.patient_pk.in_(patients_of(conn, uuids, unique_ids=unique_ids, lids=lids))]


def route_references(conn: Connection, uuids: Iterable[str]) -> list[ColumnElement[bool]]:
    """The clause that prunes a look-up of associations by their source or target to the shards
    of those objects' patients: an association links objects of its own patient (the registry
    refuses one across patients, and a merge moves all three together), so it lives on their
    shard. Only when every one of them is indexed: an association left dangling by a removal
    names an object no shard holds, and is then looked for everywhere, as before."""
    if not sharded(conn):
        return []
    wanted = list(dict.fromkeys(uuids))
    found = dict(_indexed(conn, entry_uuids.c.entry_uuid, wanted))
    if len(found) < len(wanted):
        return []
    return [schema.registry_objects.c.patient_pk.in_(sorted(set(found.values())))]


def server_of(conn: Connection, patient_pk: int) -> str | None:
    """The foreign server (shard) that holds this patient's partition of registry_objects, ""
    for a partition on the coordinator itself; None where the registry is not sharded. The
    partition is the one PostgreSQL's hash routing names: `satisfies_hash_partition` with each
    partition's own bound (modulus, remainder), whatever the partitions are called."""
    if not sharded(conn):
        return None
    name = conn.exec_driver_sql(
        "WITH parts AS (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound, f.ftserver FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid LEFT JOIN pg_foreign_table f ON f.ftrelid = c.oid "
        "WHERE i.inhparent = 'registry_objects'::regclass) "
        "SELECT coalesce(s.srvname, '') FROM parts LEFT JOIN pg_foreign_server s ON s.oid = parts.ftserver "
        "WHERE satisfies_hash_partition('registry_objects'::regclass, "
        "substring(parts.bound FROM 'modulus ([0-9]+)')::integer, "
        "substring(parts.bound FROM 'remainder ([0-9]+)')::integer, %(pk)s::integer)", {"pk": patient_pk}).scalar()
    return str(name) if name is not None else None


def same_server(conn: Connection, patient_pk: int, other_pk: int) -> bool:
    """Are these two patients' rows on one database (always, unsharded)? A write to both is
    then one transaction; across shards it is not (no two-phase commit)."""
    return patient_pk == other_pk or server_of(conn, patient_pk) == server_of(conn, other_pk)


def moved(conn: Connection, gone: int, keep: int) -> None:
    """A patient merge: the merged patient's entryUUIDs now belong to the survivor."""
    if sharded(conn):
        conn.execute(entry_uuids.update().where(entry_uuids.c.patient_pk == gone).values(patient_pk=keep))


def removed(conn: Connection, uuids: Iterable[str]) -> None:
    wanted = list(uuids)
    if wanted and sharded(conn):
        conn.execute(entry_uuids.delete().where(entry_uuids.c.entry_uuid.in_(wanted)))
