"""objects' bodies stored as bytes, deflated against a fixed dictionary (registry.bodies)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 00:30:00

`registry_objects.body` and `removed_objects.body` become binary (bytea; BLOB values on SQLite). The
rows stored before keep their JSON, as UTF-8 bytes, which `bodies.unpack` reads as such; every
row written from now on is packed, and an older row when it is rewritten (a status change). No
row is repacked here: a registry of millions of rows migrates in the time of a type change. On a
sharded registry the shards' partitions are converted first (`sharding.alter_column_type`).
"""
import sqlalchemy as sa
from alembic import op

from partage.registry.bodies import unpack
from partage.registry.sharding import alter_column_type, column_type, each_shard, is_sharded

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BATCH = 1000


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        alter_column_type(conn, "registry_objects", "body", "bytea", "convert_to(body, 'UTF8')")
        if column_type(conn, "removed_objects", "body") != "bytea":   # run again after a failure: already done
            conn.exec_driver_sql("ALTER TABLE removed_objects ALTER COLUMN body TYPE bytea "
                                 "USING convert_to(body, 'UTF8')")
        return
    # SQLite: the declared type stays TEXT (recreating a table others reference would trip its
    # foreign keys, as 0006 says); a column of TEXT affinity keeps a BLOB as it is given.
    for table in ("registry_objects", "removed_objects"):
        conn.exec_driver_sql(f"UPDATE {table} SET body = CAST(body AS BLOB) WHERE typeof(body) = 'text'")


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql" and is_sharded(conn):
        # On the shards' own connections, as alter_column_type changes them (the coordinator's
        # transaction must not hold their rows meanwhile).
        each_shard(conn, _unpack_partitions)
    else:
        _unpack_rows(conn, "registry_objects")
    _unpack_rows(conn, "removed_objects")
    if conn.dialect.name == "postgresql":
        alter_column_type(conn, "registry_objects", "body", "text", "convert_from(body, 'UTF8')")
        if column_type(conn, "removed_objects", "body") != "text":
            conn.exec_driver_sql("ALTER TABLE removed_objects ALTER COLUMN body TYPE text "
                                 "USING convert_from(body, 'UTF8')")
        return
    for table in ("registry_objects", "removed_objects"):
        conn.exec_driver_sql(f"UPDATE {table} SET body = CAST(body AS TEXT) WHERE typeof(body) = 'blob'")


def _unpack_partitions(remote: sa.Connection, partitions: tuple[int, ...]) -> None:
    for i in partitions:
        if column_type(remote, f"registry_objects_p{i}", "body") == "bytea":
            _unpack_rows(remote, f"registry_objects_p{i}")


def _unpack_rows(conn: sa.Connection, table: str) -> None:
    """Every packed body back to its JSON (UTF-8 bytes), in batches, for the older code."""
    rows_of = sa.table(table, sa.column("pk"), sa.column("body", sa.LargeBinary()))
    last = 0
    while True:
        rows = conn.execute(sa.select(rows_of.c.pk, rows_of.c.body).where(rows_of.c.pk > last)
                            .order_by(rows_of.c.pk).limit(BATCH)).all()
        if not rows:
            return
        last = rows[-1].pk
        for pk, body in rows:
            if not isinstance(body, str) and bytes(body)[:1] != b"{":
                conn.execute(rows_of.update().where(rows_of.c.pk == pk).values(body=unpack(body).encode()))
