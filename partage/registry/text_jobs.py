"""The durable queue of documents whose whole text (PDF) is still to be indexed.

The rows are written by the registration's transaction (`enqueue`), so a refused or
rolled-back submission leaves no job and a registered one always has its job. Workers
take jobs with a lease (`claim`) and hand the result back in one transaction that
succeeds only if the job is still theirs (`finish`). What the worker does with a job is
`partage.clinical.queue`'s business; the table and its SQL are here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, func, or_, select

from . import schema
from .store import Registry


@dataclass(frozen=True)
class Job:
    pk: int
    doc_entry_uuid: str
    doc_lid: str
    token: str


def enqueue(conn: Connection, *, lid: str, entry_uuid: str) -> None:
    """Add a job, on the registration's connection (so it commits or rolls back with it)."""
    conn.execute(schema.text_index_jobs.insert(), dict(
        doc_entry_uuid=entry_uuid, doc_lid=lid, attempts=0,
        created_at=datetime.now(UTC).isoformat(timespec="seconds")))


def claim(registry: Registry, *, token: str, lease_s: float, now: float, max_attempts: int) -> Job | None:
    """Take the oldest free job (never claimed, or its lease expired, tried fewer than
    `max_attempts` times) for `lease_s` seconds under `token`; None when there is none.
    PostgreSQL: concurrent workers skip each other's rows (FOR UPDATE SKIP LOCKED);
    SQLite: the write transaction is BEGIN IMMEDIATE, so writers are serialised."""
    t = schema.text_index_jobs
    free = (t.c.attempts < max_attempts, or_(t.c.claimed_until.is_(None), t.c.claimed_until < now))
    with registry.read() as conn:   # an idle poll takes no write lock
        if conn.execute(select(t.c.pk).where(*free).limit(1)).first() is None:
            return None
    with registry.write() as conn:
        row = conn.execute(
            select(t.c.pk, t.c.doc_entry_uuid, t.c.doc_lid).where(*free)
            .order_by(t.c.pk).limit(1)
            .with_for_update(skip_locked=True)).first()   # not rendered on SQLite
        if row is None:
            return None
        conn.execute(t.update().where(t.c.pk == row.pk).values(
            claimed_by=token, claimed_until=now + lease_s, attempts=t.c.attempts + 1))
    return Job(pk=row.pk, doc_entry_uuid=row.doc_entry_uuid, doc_lid=row.doc_lid, token=token)


def document_of(registry: Registry, entry_uuid: str) -> Row[*tuple[Any, ...]] | None:
    """(patient_pk, mime_type, blob_address, size) of a registered document, or None."""
    objs = schema.registry_objects
    with registry.read() as conn:
        return conn.execute(select(objs.c.patient_pk, objs.c.mime_type, objs.c.blob_address, objs.c.size)
                            .where(objs.c.entry_uuid == entry_uuid)).first()


def finish(conn: Connection, job: Job) -> bool:
    """Delete the job if it is still ours (same token); False if another worker took it."""
    t = schema.text_index_jobs
    return bool(conn.execute(t.delete().where(t.c.pk == job.pk, t.c.claimed_by == job.token)).rowcount == 1)


def backlog(registry: Registry, *, max_attempts: int) -> dict[str, int]:
    """Jobs waiting (or in progress) and jobs given up after `max_attempts`."""
    t = schema.text_index_jobs
    with registry.read() as conn:
        waiting = conn.execute(select(func.count()).select_from(t).where(t.c.attempts < max_attempts)).scalar()
        failed = conn.execute(select(func.count()).select_from(t).where(t.c.attempts >= max_attempts)).scalar()
    return {"waiting": int(waiting or 0), "failed": int(failed or 0)}
