"""Background indexing of PDF text: a durable queue in the registry database.

Reading the text of a PDF (pypdf) costs 100 ms to seconds per document, so the ingest
flow does not do it: the registration's transaction writes the facts and the cheap text
(title, CDA narrative, plain text) and adds a row to `text_index_jobs` (`enqueue`). A
refused or rolled-back submission therefore leaves no job; a registered one always has
its job, whatever happens to the process afterwards.

A job is done by `claim` + `process`, each one short transaction:

- `claim` takes the oldest free job — free: never claimed, or its lease expired —
  with `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL (concurrent indexers skip each
  other's rows instead of waiting) and inside `BEGIN IMMEDIATE` on SQLite (writers are
  serialised), and marks it with a fresh token and a lease (`LEASE_S`);
- `process` reads the document's bytes from the blob store and its whole text (PDFs
  included, pypdf's time budget applies), outside any transaction; then, in one
  transaction, deletes the job *if it still carries this token* and replaces the
  document's row in the search index. A process that dies after `claim` leaves the job
  to be taken again once the lease has expired; one that lost its lease (too slow)
  writes nothing. So the text is written exactly once per job.

A job is tried `MAX_ATTEMPTS` times (each claim counts); after that it stays in the
table, is no longer claimed, and `partage clinical reindex` reports it as failed.

`TextIndexer` is a thread of the server's background process (`partage.server.background`,
one per server, at a lower CPU priority than the HTTP workers, which never read a PDF): it
drains the queue, then looks again every `POLL_S`. `drain()` empties the queue synchronously
(`partage clinical reindex`, tests).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from ..registry import derived, text_jobs
from ..registry.store import Registry
from .index import MAX_INDEXED_BYTES, Holder, read_stored_document, store

log = logging.getLogger("partage.clinical")

LEASE_S = 300.0     # a claimed job is taken again after this long (pypdf stops after 3 s per PDF)
MAX_ATTEMPTS = 5
POLL_S = 0.5        # an idle indexer looks for jobs this often (the workers register them)
_wake = threading.Event()


Job = text_jobs.Job


def _token() -> str:
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def claim(registry: Registry, *, lease_s: float = LEASE_S, now: float | None = None) -> Job | None:
    """Take the oldest free job (None when there is none), for `lease_s` seconds."""
    return text_jobs.claim(registry, token=_token(), lease_s=lease_s,
                           now=time.time() if now is None else now, max_attempts=MAX_ATTEMPTS)


def _whole_text(services: Holder, entry_uuid: str) -> tuple[int, str] | None:
    """(patient_pk, whole text) of a registered document, or None when its bytes are not
    here any more (removed) or too large to read."""
    row = text_jobs.document_of(services.registry, entry_uuid)
    if (row is None or not row.blob_address or row.patient_pk is None or (row.size or 0) > MAX_INDEXED_BYTES
            or not services.blobs.exists(row.blob_address)):
        return None
    _facts, body = read_stored_document(services.blobs, row.blob_address, row.mime_type or "")
    return row.patient_pk, body


def process(services: Holder, job: Job) -> bool:
    """Index a claimed job's document; False if the job was no longer ours (nothing written)."""
    found = _whole_text(services, job.doc_entry_uuid)
    with services.registry.write() as conn:
        if not text_jobs.finish(conn, job):
            log.info("text index job %s was taken by another indexer; result dropped", job.pk)
            return False
        if found is not None:
            patient_pk, body = found
            derived.forget_text(conn, job.doc_lid)   # the cheap text written at registration
            store(conn, patient_pk=patient_pk, lid=job.doc_lid, entry_uuid=job.doc_entry_uuid,
                  facts=[], body=body)
    return True


def drain(services: Holder, *, lease_s: float = LEASE_S, stop: threading.Event | None = None) -> dict[str, int]:
    """Do every free job now; returns counts. A job that fails is left to its lease."""
    counts = {"indexed": 0, "dropped": 0, "errors": 0}
    while stop is None or not stop.is_set():
        job = claim(services.registry, lease_s=lease_s)
        if job is None:
            break
        try:
            counts["indexed" if process(services, job) else "dropped"] += 1
        except Exception:
            log.exception("text index job %s (document %s) failed; it is retried after its lease",
                          job.pk, job.doc_entry_uuid)
            counts["errors"] += 1
    return counts


def backlog(registry: Registry) -> dict[str, int]:
    """Jobs waiting (or in progress) and jobs given up after MAX_ATTEMPTS."""
    return text_jobs.backlog(registry, max_attempts=MAX_ATTEMPTS)


class TextIndexer:
    """The background thread of one server process."""

    def __init__(self, services: Holder, *, poll_s: float = POLL_S) -> None:
        self.services = services
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> TextIndexer:
        self._thread = threading.Thread(target=self._run, name="partage-text-indexer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop after the job in progress; a job cut short by the
        process exiting is taken again after its lease."""
        self._stop.set()
        _wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            _wake.clear()
            try:
                drain(self.services, stop=self._stop)
            except Exception:   # the database is away: try again later
                log.exception("text indexer: claiming jobs failed")
            _wake.wait(self.poll_s)
