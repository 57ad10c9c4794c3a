"""Optional, PostgreSQL only: shard the registry by patient over several PostgreSQL servers.

    python -m partage.registry.sharding --database postgresql+psycopg://coordinator/partage \\
        --shard postgresql+psycopg://postgres@shard1:5432/partage_shard \\
        --shard postgresql+psycopg://postgres@shard2:5432/partage_shard [--partitions 16]
    python -m partage.registry.sharding --database ... --move-partition 3 \\
        --shard postgresql+psycopg://postgres@shard3:5432/partage_shard      (adding a shard)

PostgreSQL's own machinery, nothing in between: `registry_objects`, `object_codes` and
`object_authors` become tables partitioned by HASH (patient_pk) on the *coordinator* (the
database the servers name in PARTAGE_DATABASE_URL) whose partitions are `postgres_fdw`
FOREIGN TABLEs; each partition's rows live in a plain table on one *shard* (partition i on
shard i mod the number of shards). Everything else stays on the coordinator: patients and
their identifiers, the global indexes of uniqueIds (`unique_ids`) and of entryUUIDs
(`entry_uuids`, registry.entry_index: which patient, hence which shard; created here), the
sequences (a partition row's `pk` is drawn on the coordinator, so it is unique over every
shard), notifications, audit. The servers keep talking to the coordinator only; a patient's query is pruned to the
one foreign partition of that patient and runs, filters included, on its shard.

What changes and why (docs/deployment.md, "Sharding the registry"):

- Foreign partitions carry no constraints on the coordinator: the primary keys, the
  entryUUID uniqueness and the query indexes are created on each shard's partition table
  (`pk` unique, `entry_uuid` unique within the partition), the foreign keys from the index
  tables to `registry_objects` and from `registry_objects` to `patients` are dropped (the
  registry writes an object and its index rows in one transaction and deletes them together).
- `postgres_fdw` has no two-phase commit: at COMMIT the coordinator commits each shard's
  transaction, then its own. A coordinator that dies between the two leaves shard rows the
  coordinator never indexed (`entry_index`): `registry.shard_recovery` finds what such a
  commit leaves, for `partage fsck` to report and `--repair` to remove. The submitter had
  its error (its connection died before the answer) and submits again.
- DDL does not reach the shards by itself: ALTER TABLE on the partitioned parent changes the
  coordinator's foreign-table definition only. A migration that changes the three tables
  calls `alter_partitions()` (it runs the statement on every shard partition, then on the
  parent), or `alter_column_type()` for a column's type (the shards' rows converted there, the
  coordinator's foreign partitions detached while the parent changes); `partage serve` on a
  sharded database at head migrates nothing.

The same shape (distribution column patient_pk, everything else on one node) is what Citus
asks for; docs/deployment.md gives the statements.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import URL, make_url

from . import entry_index
from .partitioning import DROP_OBJECT_REFERENCES, TABLES, hash_parent, is_partitioned
from .store import Registry

SERVER_PREFIX = "partage_shard_"
_T = TypeVar("_T")

# How long the coordinator waits for a shard (libpq options of each foreign server): a shard host
# that accepts TCP connections but does not answer (frozen, overloaded, half cut from the network)
# fails the connection after `connect_timeout` seconds, a 503 for its patients, instead of holding
# the request's thread and its coordinator backend for ever (libpq waits without end by default);
# an established connection whose peer vanished is given up by TCP keepalives and the time unsent
# data may wait for an acknowledgement (`tcp_user_timeout`, ms), not after the kernel's 15 minutes.
CONNECTION_OPTIONS = {"connect_timeout": "5", "keepalives": "1", "keepalives_idle": "10",
                      "keepalives_interval": "5", "keepalives_count": "3", "tcp_user_timeout": "30000"}


@dataclass(frozen=True)
class Shard:
    """One shard server as the coordinator's postgres_fdw sees it."""

    name: str          # the foreign server's name on the coordinator
    url: URL           # how to reach the shard's database (SQLAlchemy, psycopg)
    partitions: tuple[int, ...] = field(default=())


def _url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"a shard is a PostgreSQL database: {url}")
    return parsed.set(drivername="postgresql+psycopg")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _columns(conn: Connection, table: str) -> list[str]:
    """The column definitions of a coordinator table as the catalog has them (migrations included)."""
    rows = conn.exec_driver_sql(
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
        "WHERE attrelid = %(t)s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum", {"t": table})
    return [f'"{name}" {kind}{" NOT NULL" if notnull or name == "patient_pk" else ""}' for name, kind, notnull in rows]


def _indexes(conn: Connection, table: str) -> list[tuple[str, str]]:
    """(name, definition) of a coordinator table's indexes, primary key and unique ones included."""
    rows = conn.exec_driver_sql("SELECT indexname, indexdef FROM pg_indexes "
                                "WHERE schemaname = 'public' AND tablename = %(t)s ORDER BY indexname", {"t": table})
    return [(name, definition) for name, definition in rows]


def _shard_ddl(columns: dict[str, list[str]], indexes: dict[str, list[tuple[str, str]]],
               partitions: tuple[int, ...]) -> list[str]:
    out = []
    for table in TABLES:
        for i in partitions:
            part = f"{table}_p{i}"
            out.append(f"CREATE TABLE {part} ({', '.join(columns[table])})")
            for name, definition in indexes[table]:
                head, _, tail = definition.partition(f" ON public.{table} ")
                out.append(head.replace(f" {name}", f" {name}_p{i}", 1) + f" ON {part} " + tail)
    return out


def _coordinator_ddl(shards: list[Shard], partitions: int) -> list[str]:
    out = ["CREATE EXTENSION IF NOT EXISTS postgres_fdw"]
    for shard in shards:
        url = shard.url
        options = [f"host {_quote(url.host or '127.0.0.1')}", f"port {_quote(str(url.port or 5432))}",
                   f"dbname {_quote(url.database or 'postgres')}",
                   # a query by id (not by patient) reads every shard at once, not one after another
                   "async_capable 'true'", "parallel_commit 'true'", "fetch_size '1000'",
                   # multi-row INSERTs and (PostgreSQL 16) COPY reach a shard 100 rows a round trip
                   "batch_size '100'",
                   *(f"{name} {_quote(value)}" for name, value in CONNECTION_OPTIONS.items())]
        out.append(f"CREATE SERVER {shard.name} FOREIGN DATA WRAPPER postgres_fdw OPTIONS ({', '.join(options)})")
        user = [f"user {_quote(url.username or 'postgres')}"]
        if url.password:
            user.append(f"password {_quote(str(url.password))}")
        out.append(f"CREATE USER MAPPING FOR PUBLIC SERVER {shard.name} OPTIONS ({', '.join(user)})")
    out += DROP_OBJECT_REFERENCES
    for table in TABLES:
        out += hash_parent(table)
        for shard in shards:
            out += [f"CREATE FOREIGN TABLE {table}_p{i} PARTITION OF {table} "
                    f"FOR VALUES WITH (MODULUS {partitions}, REMAINDER {i}) "
                    f"SERVER {shard.name} OPTIONS (schema_name 'public', table_name '{table}_p{i}')"
                    for i in shard.partitions]
        if table == "registry_objects":   # the global index (registry.entry_index)
            out += ["CREATE TABLE entry_uuids (entry_uuid varchar(64) PRIMARY KEY, patient_pk integer NOT NULL, "
                    "unique_id varchar(128), lid varchar(64))",
                    "CREATE INDEX ix_entry_uuids_patient ON entry_uuids (patient_pk)",
                    "CREATE INDEX ix_entry_uuids_unique_id ON entry_uuids (unique_id)",
                    "CREATE INDEX ix_entry_uuids_lid ON entry_uuids (lid)",
                    "INSERT INTO entry_uuids (entry_uuid, patient_pk, unique_id, lid) "
                    "SELECT entry_uuid, patient_pk, unique_id, lid FROM registry_objects_flat"]
        out += [f"INSERT INTO {table} SELECT * FROM {table}_flat", f"DROP TABLE {table}_flat"]
    return out


def plan(shard_urls: list[str], partitions: int | None = None) -> list[Shard]:
    """Which partitions go to which shard: partition i to shard i mod len(shards)."""
    if not shard_urls:
        raise ValueError("at least one --shard")
    count = partitions or len(shard_urls)
    if not len(shard_urls) <= count <= 1024:
        raise ValueError("partitions: at least one per shard, at most 1024")
    return [Shard(f"{SERVER_PREFIX}{k}", _url(url), tuple(range(k, count, len(shard_urls))))
            for k, url in enumerate(shard_urls)]


def shard(registry: Registry, shard_urls: list[str], partitions: int | None = None) -> list[Shard]:
    """Move the three per-patient tables of a registry at migration head onto the shards.

    The shards' partition tables are created first (each shard in its own transaction; the
    shard databases must not have them yet), then the coordinator is converted in one
    transaction that also copies its rows there. Run it with the servers stopped."""
    if registry.engine.dialect.name != "postgresql":
        raise ValueError("sharding by patient is for PostgreSQL")
    shards = plan(shard_urls, partitions)
    count = sum(len(s.partitions) for s in shards)
    with registry.read() as conn:
        if is_partitioned(conn):
            raise ValueError("registry_objects is already partitioned or sharded")
        columns = {t: _columns(conn, t) for t in TABLES}
        indexes = {t: _indexes(conn, t) for t in TABLES}
    for target in shards:
        engine = create_engine(target.url)
        try:
            with engine.begin() as conn:
                for statement in _shard_ddl(columns, indexes, target.partitions):
                    conn.exec_driver_sql(statement)
        finally:
            engine.dispose()
    with registry.write() as conn:
        for statement in _coordinator_ddl(shards, count):
            conn.exec_driver_sql(statement)
    registry.engine.dispose()   # pooled connections remember the registry was not sharded (entry_index)
    return shards


def shards(conn: Connection) -> list[Shard]:
    """The shards of a sharded coordinator, from its catalog (foreign servers and user mappings)."""
    rows = conn.exec_driver_sql(
        "SELECT s.srvname, s.srvoptions, m.umoptions FROM pg_foreign_server s "
        "LEFT JOIN pg_user_mappings m ON m.srvid = s.oid AND m.usename = 'public' "
        "WHERE s.srvname LIKE %(p)s ORDER BY s.srvname", {"p": SERVER_PREFIX + "%"}).all()
    parts = conn.exec_driver_sql(
        "SELECT s.srvname, c.relname FROM pg_foreign_table f JOIN pg_class c ON c.oid = f.ftrelid "
        "JOIN pg_foreign_server s ON s.oid = f.ftserver WHERE c.relname LIKE 'registry_objects_p%%'").all()
    out = []
    for name, server_options, user_options in rows:
        opts = dict(o.split("=", 1) for o in [*(server_options or []), *(user_options or [])])
        url = URL.create("postgresql+psycopg", username=opts.get("user"), password=opts.get("password"),
                         host=opts.get("host"), port=int(opts.get("port", "5432")), database=opts.get("dbname"))
        mine = sorted(int(rel.rsplit("_p", 1)[1]) for server, rel in parts if server == name)
        out.append(Shard(name, url, tuple(mine)))
    return out


def bound_connections(conn: Connection) -> list[str]:
    """Give every shard server of a coordinator the `CONNECTION_OPTIONS` it lacks (a registry
    sharded before they existed; migration 0014); an option an operator set is kept. The names
    of the servers changed."""
    changed = []
    for name, options in conn.exec_driver_sql("SELECT srvname, srvoptions FROM pg_foreign_server "
                                              "WHERE srvname LIKE %(p)s ORDER BY srvname", {"p": SERVER_PREFIX + "%"}):
        present = {o.split("=", 1)[0] for o in options or []}
        missing = [f"ADD {key} {_quote(value)}" for key, value in CONNECTION_OPTIONS.items() if key not in present]
        if missing:
            conn.exec_driver_sql(f"ALTER SERVER {name} OPTIONS ({', '.join(missing)})")
            changed.append(str(name))
    return changed


def is_sharded(conn: Connection) -> bool:
    return entry_index.sharded(conn)


def analyze(conn: Connection) -> list[str]:
    """Planner statistics for the foreign partitions, sampled from the shards through postgres_fdw.

    A plain `ANALYZE` (autovacuum too) skips foreign tables, and without statistics the
    planner takes every patient for one row and joins a query's code filter by nested loop,
    one round trip to the shard per document. Run it after a bulk load and from time to time
    (cron), as autovacuum would for local tables. Returns the tables analyzed."""
    names = [str(name) for name in conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_foreign_table f ON f.ftrelid = c.oid "
        "WHERE i.inhparent IN ('registry_objects'::regclass, 'object_codes'::regclass, "
        "'object_authors'::regclass) ORDER BY c.relname").scalars()]
    for name in names:
        conn.exec_driver_sql(f"ANALYZE {name}")
    return names


def alter_partitions(conn: Connection, table: str, action: str) -> None:
    """For a migration: `ALTER TABLE <partition> <action>` on every shard, then on the parent.

    `action` must be idempotent (ADD COLUMN IF NOT EXISTS ...): the shards commit on their own,
    before the migration's transaction, so a migration that fails after this and is run again
    finds the shards already changed. On a database that is not sharded it alters the table."""
    if table not in TABLES:
        raise ValueError(f"{table} is not sharded")
    if is_sharded(conn):
        for target in shards(conn):
            engine = create_engine(target.url)
            try:
                with engine.begin() as remote:
                    for i in target.partitions:
                        remote.exec_driver_sql(f"ALTER TABLE {table}_p{i} {action}")
            finally:
                engine.dispose()
    conn.exec_driver_sql(f"ALTER TABLE {table} {action}")


def alter_column_type(conn: Connection, table: str, column: str, sql_type: str, using: str) -> None:
    """For a migration: change `column`'s type to `sql_type` (rows converted by the expression
    `using`, which names the column) on every shard's partitions, then on the coordinator.

    A shard partition already of that type is left alone, so that a migration run again after a
    failure (the shards commit on their own, before the migration's transaction) converts nothing
    twice. PostgreSQL converts no foreign table's rows (they are the shards') and refuses `USING`
    on a parent that has foreign partitions: the coordinator detaches them, changes their
    definition, converts the parent and attaches them again, in the migration's transaction."""
    if table not in TABLES:
        raise ValueError(f"{table} is not sharded")
    foreign: list[tuple[str, str]] = []
    if is_sharded(conn):
        each_shard(conn, partial(_convert_partitions, table=table, column=column, sql_type=sql_type, using=using))
        foreign = [(str(name), str(bound)) for name, bound in conn.exec_driver_sql(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%(t)s) AND c.relkind = 'f'",
            {"t": table})]
    if column_type(conn, table, column) == sql_type:
        return
    for name, _ in foreign:
        conn.exec_driver_sql(f"ALTER TABLE {table} DETACH PARTITION {name}")
        conn.exec_driver_sql(f"ALTER FOREIGN TABLE {name} ALTER COLUMN {column} TYPE {sql_type}")
    conn.exec_driver_sql(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {sql_type} USING {using}")
    for name, bound in foreign:
        conn.exec_driver_sql(f"ALTER TABLE {table} ATTACH PARTITION {name} {bound}")


def each_shard(conn: Connection, work: Callable[[Connection, tuple[int, ...]], object]) -> None:
    """For a migration: `work(connection, partitions)` in one transaction on each shard of a
    sharded coordinator (its own connection: the coordinator's transaction must not have read or
    written those tables through postgres_fdw, or the shard's DDL would wait on it for ever)."""
    for target in shards(conn):
        def run(remote: Connection, partitions: tuple[int, ...] = target.partitions) -> object:
            return work(remote, partitions)
        _remote(target.url, run)


def column_type(conn: Connection, table: str, column: str) -> str | None:
    """`column`'s type as PostgreSQL writes it (`bytea`, `text`), None if the table or column is not there."""
    return conn.exec_driver_sql(
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = to_regclass(%(t)s) "
        "AND a.attname = %(c)s AND NOT a.attisdropped", {"t": table, "c": column}).scalar()


def _convert_partitions(remote: Connection, partitions: tuple[int, ...], *, table: str, column: str,
                        sql_type: str, using: str) -> None:
    for i in partitions:
        name = f"{table}_p{i}"
        if column_type(remote, name, column) != sql_type:
            remote.exec_driver_sql(f"ALTER TABLE {name} ALTER COLUMN {column} TYPE {sql_type} USING {using}")


# ------------------------------------------------------------------ adding a shard
def move_partition(registry: Registry, partition: int, shard_url: str) -> Shard:
    """Move one hash partition (its three tables) to another shard server, a new one or not.

    How a shard is added: shard with more partitions than servers from the start (say 16
    over 2), then move some of them to the new server. The target's tables are created like
    the source's (same columns and indexes); then, in one coordinator transaction that holds
    off writers (EXCLUSIVE locks: reads go on), the rows are copied, and the partition's
    foreign table is swapped for one on the target. Run again after a failure: the target's
    tables are emptied before the copy. The source's tables are dropped last."""
    target_url = _url(shard_url)
    with registry.read() as conn:
        placed = shards(conn)
        count = sum(len(s.partitions) for s in placed)
        source = next((s for s in placed if partition in s.partitions), None)
    if source is None:
        raise ValueError(f"partition {partition} is not a foreign partition of this registry")
    same = [s for s in placed if (s.url.host, s.url.port or 5432, s.url.database) ==
            (target_url.host, target_url.port or 5432, target_url.database)]
    if same and same[0].name == source.name:
        raise ValueError(f"partition {partition} is already on {source.name}")
    target = same[0] if same else Shard(_next_name(placed), target_url)
    ddl = _remote(source.url, lambda conn: [
        f"CREATE TABLE IF NOT EXISTS {table}_p{partition} ({', '.join(_columns(conn, f'{table}_p{partition}'))})"
        for table in TABLES] + [definition.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1).replace(
            "CREATE UNIQUE INDEX", "CREATE UNIQUE INDEX IF NOT EXISTS", 1)
        for table in TABLES for _, definition in _indexes(conn, f"{table}_p{partition}")])
    _remote(target.url, lambda conn: [conn.exec_driver_sql(statement) for statement in ddl])
    with registry.write() as conn:
        if not same:
            for statement in _coordinator_ddl([target], count)[1:3]:   # its server and user mapping
                conn.exec_driver_sql(statement)
        conn.exec_driver_sql(f"LOCK TABLE {', '.join(TABLES)} IN EXCLUSIVE MODE")
        for table in TABLES:
            part, moving = f"{table}_p{partition}", f"{table}_p{partition}_moving"
            for statement in (
                    f"CREATE FOREIGN TABLE {moving} ({', '.join(_columns(conn, part))}) SERVER {target.name} "
                    f"OPTIONS (schema_name 'public', table_name '{part}')",
                    f"TRUNCATE {moving}",
                    f"INSERT INTO {moving} SELECT * FROM {part}",
                    f"ALTER TABLE {table} DETACH PARTITION {part}",
                    f"DROP FOREIGN TABLE {part}",
                    f"ALTER FOREIGN TABLE {moving} RENAME TO {part}",
                    f"ALTER TABLE {table} ATTACH PARTITION {part} "
                    f"FOR VALUES WITH (MODULUS {count}, REMAINDER {partition})"):
                conn.exec_driver_sql(statement)
    _remote(source.url, lambda conn: [conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}_p{partition}")
                                      for table in TABLES])
    return Shard(target.name, target.url, tuple(sorted({*target.partitions, partition})))


def _next_name(placed: list[Shard]) -> str:
    taken = {s.name for s in placed}
    return next(f"{SERVER_PREFIX}{k}" for k in range(len(placed) + 1) if f"{SERVER_PREFIX}{k}" not in taken)


def _remote(url: URL, work: Callable[[Connection], _T]) -> _T:
    """`work` in one transaction on a shard's database."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            return work(conn)
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="shard the registry's per-patient tables over PostgreSQL servers")
    parser.add_argument("--database", required=True, help="the coordinator's PostgreSQL SQLAlchemy URL")
    parser.add_argument("--shard", action="append", default=[], help="a shard's PostgreSQL URL (repeat)")
    parser.add_argument("--partitions", type=int, default=None, help="hash partitions in all (default: one a shard)")
    parser.add_argument("--move-partition", type=int, default=None, metavar="N",
                        help="instead: move partition N to the one --shard given (adding a shard)")
    args = parser.parse_args(argv)
    if not args.shard or (args.move_partition is not None and len(args.shard) != 1):
        parser.error("--shard URL (one with --move-partition)")
    registry = Registry(args.database)
    try:
        if args.move_partition is not None:
            placed = [move_partition(registry, args.move_partition, args.shard[0])]
        else:
            registry.migrate()
            placed = shard(registry, args.shard, args.partitions)
    except ValueError as exc:
        print(f"partage.registry.sharding: {exc}", file=sys.stderr)
        return 2
    finally:
        registry.dispose()
    for target in placed:
        print(f"{target.name}: {target.url.render_as_string(hide_password=True)} "
              f"partitions {', '.join(map(str, target.partitions))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
