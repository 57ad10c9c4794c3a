"""Indexing at ingest: a submission's facts and text, written in the registration's transaction.

`prepare(request)` reads the documents before the registry transaction; its `store(conn,
registry)` runs right after `registry.register` on the same connection, so the facts and text of a document appear exactly when the document
does, and a refused or rolled-back submission leaves none. Reading a document that
cannot be understood (an unknown model, broken XML that the profile let through, an
unreadable PDF) is not an error: the document is then indexed as a document only.
Database errors do propagate, and roll the submission back.

The text of PDFs (a PDF body, PDFs embedded in a CDA) is not read here: pypdf costs
100 ms to seconds per document. `store` enqueues a job instead (`text_index_jobs`, in
the same transaction), and the background indexer of `partage.clinical.queue` reads the
whole text later and replaces the cheap text written here.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from lxml import etree
from sqlalchemy import Connection

from ..cda.gate import is_cda
from ..cda.parser import XmlRejected, parse_cda
from ..metadata.model import DocumentContent, DocumentEntry, SubmissionRequest
from ..registry import derived, text_jobs, text_search
from ..registry.store import Registry
from .extract import Fact, extract
from .text import document_text, has_pdf

log = logging.getLogger("partage.clinical")
MAX_INDEXED_BYTES = 20 * 1024 * 1024   # beyond this a document is not read for facts or text


class Stream(Protocol):
    """A blob opened for reading (partage.repository.store.BlobStream)."""

    def read(self) -> bytes: ...

    def close(self) -> None: ...


class Blobs(Protocol):
    """What the indexers read of the blob store (clinical sits beside partage.repository)."""

    def exists(self, address: str) -> bool: ...

    def open(self, address: str) -> Stream: ...


class Holder(Protocol):
    """What the indexers read of the process's Services (clinical sits below services.py)."""

    @property
    def registry(self) -> Registry: ...

    @property
    def blobs(self) -> Blobs: ...


def _read(content: DocumentContent | None) -> bytes | None:
    if content is None or content.size > MAX_INDEXED_BYTES:
        return None
    content.file.seek(0)
    data: bytes = content.file.read()
    content.file.seek(0)
    return data


def read_document(mime_type: str, data: bytes) -> tuple[list[Fact], str]:
    """(facts, searchable text) of a document's bytes, PDF text included; never raises on bad content."""
    facts, body, _pending = read_parts(mime_type, data, pdfs=True)
    return facts, body


def read_stored_document(blobs: Blobs, address: str, mime_type: str) -> tuple[list[Fact], str]:
    """(facts, searchable text) of a document held in the blob store at `address`."""
    stream = blobs.open(address)
    try:
        data = stream.read()
    finally:
        stream.close()
    return read_document(mime_type, data)


def read_parts(mime_type: str, data: bytes, *, pdfs: bool,
               cda: etree._Element | None = None) -> tuple[list[Fact], str, bool]:
    """(facts, searchable text, whether PDF text was left out); with `pdfs` False the text
    of PDFs is not read (the cheap part, for the registration's transaction). `cda` is the
    document's tree when the ingest flow already parsed it (the CDA gate)."""
    if cda is None and is_cda(data):
        try:
            cda = parse_cda(data).clinical_document
        except XmlRejected:
            cda = None
    try:
        facts = extract(cda) if cda is not None else []
    except Exception:   # a reader bug must not refuse a valid document
        log.exception("fact extraction failed; the document is indexed without facts")
        facts = []
    try:
        body = document_text(mime_type, data, cda, pdfs=pdfs)
    except Exception:
        log.exception("text extraction failed; the document is not searchable")
        body = ""
    try:
        pending = not pdfs and has_pdf(mime_type, data, cda)
    except Exception:
        log.exception("PDF detection failed; the document's PDF text is not indexed")
        pending = False
    return facts, body, pending


def fact_rows(facts: list[Fact], *, patient_pk: int, lid: str, entry_uuid: str) -> list[dict[str, Any]]:
    rows = []
    for seq, f in enumerate(facts):
        row = f.as_dict()
        row["detail"] = json.dumps(row["detail"], ensure_ascii=False)
        row.update(patient_pk=patient_pk, doc_lid=lid, doc_entry_uuid=entry_uuid, seq=seq,
                   code=f.code[:64], code_system=f.code_system[:64], unit=f.unit[:32],
                   ref_low=f.ref_low[:64], ref_high=f.ref_high[:64], interpretation=f.interpretation[:16],
                   status=f.status[:32], effective=f.effective[:14], effective_end=f.effective_end[:14])
        rows.append(row)
    return rows


def store(conn: Connection, *, patient_pk: int, lid: str, entry_uuid: str,
          facts: list[Fact], body: str) -> None:
    derived.add_facts(conn, fact_rows(facts, patient_pk=patient_pk, lid=lid, entry_uuid=entry_uuid))
    text_search.put_text(conn, patient_pk=patient_pk, lid=lid, entry_uuid=entry_uuid, body=body)


class Prepared:
    """A submission's facts and text, read before the registry transaction starts (so the
    write lock is not held while documents are parsed), stored inside it."""

    def __init__(self, request: SubmissionRequest,
                 documents: list[tuple[DocumentEntry, list[Fact], str, bool]]) -> None:
        self.request = request
        self.documents = documents   # (entry, facts, cheap text, PDF text to read later)

    @property
    def pending(self) -> int:
        """Documents whose PDF text is left to the background indexer."""
        return sum(1 for *_rest, pending in self.documents if pending)

    def store(self, conn: Connection, patient_pk: int) -> int:
        """Write them on the registration's connection, for the patient it registered them
        for; returns the number of facts."""
        if not self.documents:
            return 0
        count = 0
        for doc, facts, body, pending in self.documents:
            lid = doc.lid or doc.entry_uuid
            store(conn, patient_pk=patient_pk, lid=lid, entry_uuid=doc.entry_uuid, facts=facts, body=body)
            if pending:   # the whole text later, by the background indexer (queue.py)
                text_jobs.enqueue(conn, lid=lid, entry_uuid=doc.entry_uuid)
            count += len(facts)
        return count


def prepare(request: SubmissionRequest) -> Prepared:
    """Read the facts and cheap text of a submission's documents (those whose bytes are
    here); PDF text is left to the background indexer."""
    documents: list[tuple[DocumentEntry, list[Fact], str, bool]] = []
    for doc in request.documents:
        content = request.contents.get(doc.entry_uuid)
        data = _read(content)
        if content is None or not data:
            continue
        cda = content.cda if isinstance(content.cda, etree._Element) else None   # set by the CDA gate
        facts, body, pending = read_parts(doc.mime_type, data, pdfs=False, cda=cda)
        if facts or body or pending:
            documents.append((doc, facts, body, pending))
    return Prepared(request, documents)


# --- re-indexing (documents registered before migration 0003, or after the readers improved) ---
def reindex(services: Holder, *, force: bool = False) -> dict[str, int]:
    """Read the facts and text of the Approved documents held here that have none (every one
    with `force`, replacing what was read before). One short transaction per document."""
    with services.registry.read() as conn:
        rows = derived.indexable_documents(conn)
        done = derived.indexed_lids(conn)
    counts = {"documents": 0, "facts": 0, "skipped": 0}
    for row in rows:
        if (row.lid in done and not force) or (row.size or 0) > MAX_INDEXED_BYTES:
            counts["skipped"] += 1
            continue
        facts, body = read_stored_document(services.blobs, row.blob_address, row.mime_type or "")
        with services.registry.write() as conn:
            derived.forget(conn, row.lid)
            store(conn, patient_pk=row.patient_pk, lid=row.lid, entry_uuid=row.entry_uuid, facts=facts, body=body)
        counts["documents"] += 1
        counts["facts"] += len(facts)
    return counts
