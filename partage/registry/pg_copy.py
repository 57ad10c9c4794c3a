"""PostgreSQL's COPY ... FROM STDIN for a list of rows, inside an open SQLAlchemy transaction.

The bulk paths' one way of writing many rows to PostgreSQL, and of drawing their keys (registry.bulk on the
coordinator or an unsharded database, registry.shard_copy on a shard): one statement and
one stream, where an INSERT would be a round trip per batch of rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection


def copy_rows(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """COPY `rows` (mappings; a missing column is NULL) into `table` through psycopg 3."""
    raw = conn.connection.driver_connection
    assert raw is not None   # an open connection has its driver's
    with raw.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row.get(c) for c in columns])


def draw_keys(conn: Connection, table: str, count: int) -> list[int]:
    """`count` values of `table`'s `pk` sequence, for rows COPY writes with their keys (on a
    sharded registry the coordinator's sequence, so that a key is unique over every shard)."""
    return list(conn.exec_driver_sql(
        f"SELECT nextval(pg_get_serial_sequence('{table}', 'pk')) FROM generate_series(1, %(n)s)",
        {"n": count}).scalars())
