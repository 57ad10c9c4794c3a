"""Bulk loading: many submissions in a few big transactions, without HTTP.

For building large registries (benchmarks, migrations from another registry) from
submissions that are already trusted: ids assigned, metadata valid, uniqueIds new. It
writes exactly the rows `register.insert_object` writes (the values come from the same
`indexing.row_values` / `code_rows` / `author_rows`), but in batches: one multi-row
INSERT per table and batch on SQLite, COPY on PostgreSQL, and on a sharded registry COPY
straight into each shard's partition tables (registry.shard_copy). It does not run the
registration rules of `register.register` (references, relationships, RPLC
deprecations): a submission that needs them goes through the ingest flow.

    loader = BulkLoader(registry)
    for request, blob_addresses in submissions:
        loader.add(request, blob_addresses)      # flushes every `batch_size` objects
    loader.close()                               # the rest, and the shard connections
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, select

from ..metadata.datatypes import CX
from ..metadata.model import AnyObject, AvailabilityStatus, SubmissionRequest
from . import entry_index, schema
from .batches import chunks
from .clock import utc_now
from .indexing import author_rows, code_rows, row_values
from .pg_copy import copy_rows, draw_keys
from .shard_copy import ShardCopier
from .store import Registry

OBJECT_COLUMNS = [c.name for c in schema.registry_objects.columns if c.name != "pk"]
CODE_COLUMNS = [c.name for c in schema.object_codes.columns if c.name != "pk"]
AUTHOR_COLUMNS = [c.name for c in schema.object_authors.columns if c.name != "pk"]
UNIQUE_ID_COLUMNS = ["unique_id", "kind", "lid", "hash"]


@dataclass
class BulkStats:
    patients: int = 0
    objects: int = 0
    documents: int = 0
    codes: int = 0
    authors: int = 0
    batches: int = 0


@dataclass
class _Pending:
    objects: list[tuple[AnyObject, CX, str | None]] = field(default_factory=list)  # obj, patient, blob

    def __len__(self) -> int:
        return len(self.objects)


class BulkLoader:
    """Accumulates submissions and writes them in batches of about `batch_size` objects."""

    def __init__(self, registry: Registry, *, batch_size: int = 5000) -> None:
        self.registry = registry
        self.batch_size = batch_size
        self.stats = BulkStats()
        self._pending = _Pending()
        self._patients: dict[tuple[str, str], int] = {}   # (authority, value) -> patient pk
        self.is_postgres = registry.engine.dialect.name == "postgresql"
        self._copier: ShardCopier | None = None

    def add(self, request: SubmissionRequest, blob_addresses: dict[str, str] | None = None) -> None:
        """Queue one submission (the same object states `register` gives: Approved, lid, version 1)."""
        blob_addresses = blob_addresses or {}
        ss = request.submission_set
        if ss is None or ss.patient_id is None:
            raise ValueError("a bulk submission needs a SubmissionSet with its patientId")
        patient = ss.patient_id
        for obj in request.objects():
            obj.availability_status = AvailabilityStatus.APPROVED
            obj.lid = obj.entry_uuid
            obj.version = "1"
            self._pending.objects.append((obj, patient, blob_addresses.get(obj.entry_uuid)))
        if len(self._pending) >= self.batch_size:
            self.flush()

    def add_all(self, requests: Iterable[SubmissionRequest]) -> BulkStats:
        """Load these submissions, the last batch included, and let go of the shard connections."""
        for request in requests:
            self.add(request)
        self.close()
        return self.stats

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, _Pending()
        learned: list[tuple[str, str]] = []   # patients remembered in this batch's transaction
        try:
            self._write_batch(pending, learned)
        except BaseException:
            # The batch rolled back, the patients it created with it: a later batch must not
            # use their keys (nothing on a shard would refuse rows of a patient that is not).
            for key in learned:
                self._patients.pop(key, None)
            raise

    def _write_batch(self, pending: _Pending, learned: list[tuple[str, str]]) -> None:
        now = utc_now()
        # Exits in reverse: the shards' transactions (if any) commit, then the coordinator's.
        with self.registry.write(unbounded=True) as conn, ExitStack() as shard_transactions:
            patient_pks, created = self._ensure_patients(conn, [cx for _o, cx, _b in pending.objects], learned)
            objects, claims = [], []
            for obj, cx, blob in pending.objects:
                values = row_values(obj, patient_pk=patient_pks[cx], registered_at=now, blob_address=blob)
                objects.append(values)
                uid = getattr(obj, "unique_id", "")
                if uid:
                    claims.append({"unique_id": uid, "kind": values["kind"], "lid": obj.logical_id,
                                   "hash": getattr(obj, "hash", None) or None})
            if claims:
                self._insert(conn, schema.unique_ids, UNIQUE_ID_COLUMNS, claims)
            copier = self._shards(conn)
            if copier is None:
                codes, authors = self._write_here(conn, pending, objects)
            else:
                codes, authors = self._write_to_shards(conn, copier, pending, objects, shard_transactions)
        self.stats.patients += created
        self.stats.objects += len(objects)
        self.stats.documents += sum(1 for v in objects if v["kind"] == schema.KIND_DOCUMENT)
        self.stats.codes += len(codes)
        self.stats.authors += len(authors)
        self.stats.batches += 1

    def _write_here(self, conn: Connection, pending: _Pending,
                    objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The objects and their index rows in this database (unsharded)."""
        codes, authors = _index_rows(pending, self._insert_objects(conn, objects), objects)
        if codes:
            self._insert(conn, schema.object_codes, CODE_COLUMNS, codes)
        if authors:
            self._insert(conn, schema.object_authors, AUTHOR_COLUMNS, authors)
        return codes, authors

    def _write_to_shards(self, conn: Connection, copier: ShardCopier, pending: _Pending, objects: list[dict[str, Any]],
                         shard_transactions: ExitStack) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The global entryUUID index here, the rows on their shards, every key from here."""
        self._insert(conn, entry_index.entry_uuids, entry_index.COLUMNS, [entry_index.index_row(v) for v in objects])
        pks = draw_keys(conn, "registry_objects", len(objects))
        codes, authors = _index_rows(pending, pks, objects)
        for table, rows in (("object_codes", codes), ("object_authors", authors)):
            for row, key in zip(rows, draw_keys(conn, table, len(rows)), strict=True):
                row["pk"] = key
        copier.write(conn, [
            ("registry_objects", ["pk", *OBJECT_COLUMNS],
             [{"pk": pk, **values} for pk, values in zip(pks, objects, strict=True)]),
            ("object_codes", ["pk", *CODE_COLUMNS], codes),
            ("object_authors", ["pk", *AUTHOR_COLUMNS], authors)], shard_transactions)
        return codes, authors

    def close(self) -> None:
        """Write what is pending and let go of the shard connections."""
        self.flush()
        if self._copier is not None:
            self._copier.close()
            self._copier = None

    def _shards(self, conn: Connection) -> ShardCopier | None:
        """On a sharded registry, the direct way to its shards (registry.shard_copy)."""
        if self._copier is None and entry_index.sharded(conn):
            self._copier = ShardCopier(conn)
        return self._copier

    # --- patients ------------------------------------------------------------------------
    def _ensure_patients(self, conn: Connection, cxs: Iterable[CX],
                         learned: list[tuple[str, str]]) -> tuple[dict[CX, int], int]:
        """CX -> patient pk, creating the patients the registry does not know (no merge chains),
        and how many were created; `learned` receives the keys remembered meanwhile."""
        keys: dict[CX, tuple[str, str]] = {}
        id_types: dict[tuple[str, str], str] = {}
        for cx in dict.fromkeys(cxs):
            keys[cx] = cx.key
            id_types[keys[cx]] = cx.id_type
        missing = [k for k in dict.fromkeys(keys.values()) if k not in self._patients]
        learned += missing
        created = 0
        if missing:
            t = schema.patient_identifiers
            for chunk in chunks(missing):
                by_authority: dict[str, list[str]] = {}
                for authority, value in chunk:
                    by_authority.setdefault(authority, []).append(value)
                for authority, values in by_authority.items():
                    for row in conn.execute(select(t.c.authority, t.c.value, t.c.patient_pk)
                                            .where(t.c.authority == authority, t.c.value.in_(values))):
                        self._patients[(row.authority, row.value)] = row.patient_pk
            new = [k for k in missing if k not in self._patients]
            if new:
                now = utc_now()
                p = schema.patients
                rows = [{"merged_into": None, "demographics": json.dumps({}), "created_at": now,
                         "updated_at": now} for _ in new]
                pks = conn.execute(p.insert().returning(p.c.pk, sort_by_parameter_order=True),
                                   rows).scalars().all()
                conn.execute(t.insert(), [{"patient_pk": pk, "authority": a, "value": v,
                                           "id_type": id_types[(a, v)]}
                                          for pk, (a, v) in zip(pks, new, strict=True)])
                self._patients.update(zip(new, pks, strict=True))
                created = len(new)
        return {cx: self._patients[key] for cx, key in keys.items()}, created

    # --- writes --------------------------------------------------------------------------
    def _insert_objects(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        t = schema.registry_objects
        if self.is_postgres:
            pks = draw_keys(conn, "registry_objects", len(rows))
            copy_rows(conn, "registry_objects", ["pk", *OBJECT_COLUMNS],
                      [{"pk": pk, **row} for pk, row in zip(pks, rows, strict=True)])
            return pks
        return list(conn.execute(t.insert().returning(t.c.pk, sort_by_parameter_order=True),
                                 [_complete(row) for row in rows]).scalars().all())

    def _insert(self, conn: Connection, table: Table, columns: list[str], rows: list[dict[str, Any]]) -> None:
        if self.is_postgres:
            copy_rows(conn, table.name, columns, rows)
        else:
            conn.execute(table.insert(), rows)


def _index_rows(pending: _Pending, pks: list[int],
                objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The code and author rows of the pending objects, given their keys and rows."""
    codes, authors = [], []
    for (obj, _cx, _b), pk, values in zip(pending.objects, pks, objects, strict=True):
        codes += [{**c, "object_pk": pk, "patient_pk": values["patient_pk"]} for c in code_rows(obj)]
        authors += [{**a, "object_pk": pk, "patient_pk": values["patient_pk"]} for a in author_rows(obj)]
    return codes, authors


def _complete(row: dict[str, Any]) -> dict[str, Any]:
    """executemany needs every row to name the same columns."""
    return {c: row.get(c) for c in OBJECT_COLUMNS}


__all__ = ["BulkLoader", "BulkStats"]
