"""Bulk rows straight into the shards: COPY into each shard's partition tables.

Through the coordinator, a bulk load's rows for the per-patient tables reach a shard one
`postgres_fdw` INSERT batch at a time (PostgreSQL 15 does not batch COPY into foreign
tables): a few hundred documents a second. The loader (registry.bulk) instead asks the
coordinator which hash partition each patient falls in (`satisfies_hash_partition`, the
function the partition bounds use, so the answer is the coordinator's own routing) and COPYs
each partition's rows into that partition's table on its shard, over one connection per shard.

What the coordinator still does, in the batch's transaction: the patients, the uniqueId
claims, the global entryUUID index and the `pk` values (drawn from its sequences, as the
foreign partitions' defaults would). The shards' transactions commit just before the
coordinator's, the order `postgres_fdw` itself commits in: a coordinator lost between the two
leaves shard rows the coordinator never indexed, which `shard_recovery.lost_submissions` finds and
`partage fsck --repair` removes, as for any submission.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import Any

from sqlalchemy import Connection, Engine, create_engine

from . import sharding
from .batches import chunks
from .pg_copy import copy_rows


class ShardCopier:
    """The shards of a sharded coordinator, and which partition each patient's rows go to."""

    def __init__(self, conn: Connection) -> None:
        placed = sharding.shards(conn)
        self.modulus = sum(len(s.partitions) for s in placed)
        engines = {s.name: create_engine(s.url, pool_size=1, max_overflow=0) for s in placed}
        self._engine_of: dict[int, Engine] = {i: engines[s.name] for s in placed for i in s.partitions}
        self._engines = list(engines.values())
        self._partition_of: dict[int, int] = {}

    def close(self) -> None:
        for engine in self._engines:
            engine.dispose()

    def partitions(self, conn: Connection, patient_pks: Sequence[int]) -> dict[int, int]:
        """patient pk -> hash partition, asked of the coordinator once per patient."""
        missing = [pk for pk in dict.fromkeys(patient_pks) if pk not in self._partition_of]
        for chunk in chunks(missing):
            self._partition_of.update((pk, r) for pk, r in conn.exec_driver_sql(
                "SELECT pk, r FROM unnest(%(pks)s::integer[]) AS pk "
                "CROSS JOIN generate_series(0, %(n)s - 1) AS r "
                "WHERE satisfies_hash_partition('registry_objects'::regclass, %(n)s, r, pk)",
                {"pks": chunk, "n": self.modulus}))
        return {pk: self._partition_of[pk] for pk in patient_pks}

    def write(self, conn: Connection, tables: Sequence[tuple[str, list[str], list[dict[str, Any]]]],
              stack: ExitStack) -> None:
        """COPY each (table, columns, rows) into its partition tables, in one transaction per
        shard that `stack` commits when it closes (before the coordinator's, see above)."""
        partition = self.partitions(conn, [row["patient_pk"] for _t, _c, rows in tables for row in rows])
        shard_conns: dict[int, Connection] = {}
        for table, columns, rows in tables:
            for part, part_rows in _by_partition(rows, partition):
                engine = self._engine_of[part]
                remote = shard_conns.get(id(engine))
                if remote is None:
                    remote = shard_conns[id(engine)] = stack.enter_context(engine.begin())
                copy_rows(remote, f"{table}_p{part}", columns, part_rows)


def _by_partition(rows: list[dict[str, Any]], partition: dict[int, int]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(partition[row["patient_pk"]], []).append(row)
    yield from sorted(grouped.items())


__all__ = ["ShardCopier"]
