"""The derived tables of a document (clinical facts, searchable text, text jobs): the
registry owns them like the metadata, and they follow their document's lifecycle."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, or_, select

from . import entry_index, schema, text_search
from .batches import chunks

OBJ = schema.registry_objects
_INSERT_FACTS = schema.clinical_facts.insert()   # built once: every CDA registration writes facts


def forget_text(conn: Connection, lid: str) -> None:
    """Remove a document's text from the search index (both engines)."""
    text_search.delete_text(conn, lid)


def forget(conn: Connection, lid: str) -> None:
    """Everything derived from a logical document: its text, facts and pending text job."""
    forget_text(conn, lid)
    conn.execute(schema.clinical_facts.delete().where(schema.clinical_facts.c.doc_lid == lid))
    conn.execute(schema.text_index_jobs.delete().where(schema.text_index_jobs.c.doc_lid == lid))


def forget_orphans(conn: Connection, lids: Iterable[str]) -> None:
    """Forget the derived data of those documents of which no version remains."""
    lids = list(dict.fromkeys(lids))
    if not lids:
        return
    still = set(conn.execute(select(OBJ.c.lid).where(OBJ.c.lid.in_(lids), OBJ.c.kind == schema.KIND_DOCUMENT,
                                                     *entry_index.route(conn, lids=lids))).scalars())
    for lid in lids:
        if lid not in still:
            forget(conn, lid)


def forget_content(conn: Connection, lids: Iterable[str]) -> None:
    """The bytes of these documents were removed (ITI-86) while their metadata stays: what was
    read from the bytes goes with them. Served on, the facts and the text's excerpts kept the
    removed content readable (docs/access.md: derived data follows its document)."""
    for lid in dict.fromkeys(lids):
        forget(conn, lid)


def orphans(conn: Connection) -> dict[str, list[str]]:
    """Derived rows whose document is gone, or whose bytes are (for `partage fsck`): table ->
    logical ids. Derived data is read from the bytes only (`clinical.index.prepare`), so it is
    kept while a version of its document holds them; those left by an ITI-86 before it forgot
    them (`forget_content`) are reported too."""
    with_bytes = select(OBJ.c.lid).where(OBJ.c.kind == schema.KIND_DOCUMENT, OBJ.c.blob_address.is_not(None))
    out: dict[str, list[str]] = {}
    for table in (schema.clinical_facts, schema.document_text, schema.text_index_jobs):
        lids = sorted(set(conn.execute(select(table.c.doc_lid).where(table.c.doc_lid.not_in(with_bytes)))
                          .scalars()))
        if lids:
            out[table.name] = lids
    return out


def delete_orphans(conn: Connection) -> int:
    found = orphans(conn)
    for lid in {lid for lids in found.values() for lid in lids}:
        forget(conn, lid)
    return sum(len(v) for v in found.values())





# --- reads (the query flow passes the logical ids of the documents the actor may see) -------
FACTS = schema.clinical_facts


def facts(conn: Connection, lids: Sequence[str], kinds: Sequence[str] = (),
          codes: Sequence[tuple[str, str]] = ()) -> list[Row[*tuple[Any, ...]]]:
    """Fact rows of these documents, of these kinds and (system or '', code) codes."""
    out: list[Row[*tuple[Any, ...]]] = []
    for chunk in chunks(lids):
        clauses: list[ColumnElement[bool]] = [FACTS.c.doc_lid.in_(chunk)]
        if kinds:
            clauses.append(FACTS.c.kind.in_(list(kinds)))
        if codes:
            clauses.append(or_(*[_coded(system, code) for system, code in codes]))
        out += conn.execute(select(FACTS).where(*clauses)).all()
    return out


def _coded(system: str, code: str) -> ColumnElement[bool]:
    """A fact's code as a FHIR token names it: system and code, the code in any system, or (no
    code) any code of the system."""
    if system and code:
        return and_(FACTS.c.code == code, FACTS.c.code_system == system)
    if system:
        return FACTS.c.code_system == system
    return FACTS.c.code == code


def fact(conn: Connection, pk: int) -> Row[*tuple[Any, ...]] | None:
    return conn.execute(select(FACTS).where(FACTS.c.pk == pk)).first()


def add_facts(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """A document's clinical facts, as `partage.clinical.index.fact_rows` shapes them."""
    if rows:
        conn.execute(_INSERT_FACTS, list(rows))


def indexable_documents(conn: Connection) -> list[Row[*tuple[Any, ...]]]:
    """(entry_uuid, lid, patient_pk, mime_type, blob_address, size) of the Approved documents
    held here with their patient: what `partage clinical reindex` reads again."""
    return list(conn.execute(select(OBJ.c.entry_uuid, OBJ.c.lid, OBJ.c.patient_pk, OBJ.c.mime_type,
                                    OBJ.c.blob_address, OBJ.c.size).where(
        OBJ.c.kind == schema.KIND_DOCUMENT, OBJ.c.status == "Approved",
        OBJ.c.blob_address.is_not(None), OBJ.c.patient_pk.is_not(None))).all())


def indexed_lids(conn: Connection) -> set[str]:
    """Logical ids of the documents that have text or facts already."""
    text, facts = schema.document_text, schema.clinical_facts
    return set(conn.execute(select(text.c.doc_lid)).scalars()) | \
        set(conn.execute(select(facts.c.doc_lid).distinct()).scalars())
