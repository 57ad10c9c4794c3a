"""The SQL behind every query: one function per shape, always keyed by patient or id.

Returns rows `(pk, entry_uuid, patient_pk, kind, status, lineage, versioned, body)`; turning
them into model objects (and deciding which ones an actor may see) is the query flow's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, exists, false, func, or_, select

from ..metadata.model import AssociationType
from ..metadata.query import (
    CodeFilter,
    DocumentFilter,
    FolderFilter,
    SubmissionSetFilter,
    TimeRange,
)
from . import entry_index, schema
from .batches import chunks
from .indexing import REFERENCE_ID_ATTRIBUTE, pad_time
from .search_index import hash_sys_value, hash_value

OBJ = schema.registry_objects
CODES = schema.object_codes
AUTHORS = schema.object_authors
# Whether the row's lineage has other versions (registry.lineages names it): read with the row,
# a probe of the coordinator's lineage_patients, so that the policy asks the newest versions
# of those lineages only, and of none for a page of lone documents (query.view).
VERSIONED = exists().where(schema.lineage_patients.c.lineage == OBJ.c.lineage).label("versioned")
COLUMNS = (OBJ.c.pk, OBJ.c.entry_uuid, OBJ.c.patient_pk, OBJ.c.kind, OBJ.c.status, OBJ.c.lineage,
           VERSIONED, OBJ.c.body)
ObjectRow = Row[*tuple[Any, ...]]   # a registry_objects row (COLUMNS, or all of them)
Rows = Sequence[ObjectRow]
Clauses = list[ColumnElement[bool]]


def _code_filter(attribute: str, groups: CodeFilter, patient_pk: int | None = None) -> Clauses:
    """Each group: one of its codes (code and scheme; code alone without a scheme), through
    the token hashes FHIR search uses too (search_index.token_hashes). `patient_pk`: the
    subquery names the patient too (a sharded registry: its shard only, see `_sharded_pk`)."""
    mine = [CODES.c.patient_pk == patient_pk] if patient_pk is not None else []
    clauses: Clauses = []
    for group in groups:
        with_scheme = [hash_sys_value(attribute, c.scheme, c.code) for c in group if c.scheme]
        code_only = [hash_value(attribute, c.code) for c in group if not c.scheme]
        tests: Clauses = []
        if with_scheme:
            tests.append(CODES.c.hash_sys_value.in_(with_scheme))
        if code_only:
            tests.append(CODES.c.hash_value.in_(code_only))
        clauses.append(exists().where(CODES.c.object_pk == OBJ.c.pk, *mine, or_(*tests)) if tests else false())
    return clauses


def _reference_filter(groups: Sequence[Sequence[str]], patient_pk: int | None = None) -> Clauses:
    """$XDSDocumentEntryReferenceIdList: each group (AND), one of its referenceIdList values (OR),
    each as the whole CX text."""
    mine = [CODES.c.patient_pk == patient_pk] if patient_pk is not None else []
    return [exists().where(CODES.c.object_pk == OBJ.c.pk, *mine, CODES.c.attribute == REFERENCE_ID_ATTRIBUTE,
                           CODES.c.code.in_(list(group))) for group in groups]


def _time_filter(column: ColumnElement[Any], window: TimeRange) -> Clauses:
    clauses: Clauses = []
    if window.low:
        clauses.append(column >= pad_time(window.low))
    if window.high:
        clauses.append(column < pad_time(window.high))
    return clauses


def _author_filter(patterns: Sequence[str], patient_pk: int | None = None) -> Clauses:
    if not patterns:
        return []
    mine = [AUTHORS.c.patient_pk == patient_pk] if patient_pk is not None else []
    return [exists().where(AUTHORS.c.object_pk == OBJ.c.pk, *mine,
                           or_(*[AUTHORS.c.person.like(p, escape="\\") for p in patterns]))]


def _sharded_pk(conn: Connection, patient_pk: int) -> int | None:
    """The patient for the code and author subqueries on a sharded registry, where naming it
    prunes them to the patient's shard (without it they would read every shard's index rows
    with those codes). Not elsewhere: SQLite without statistics would then prefer the
    (patient_pk, code) index for every outer row (docs/deployment.md, "Citus")."""
    return patient_pk if entry_index.sharded(conn) else None


def document_clauses(f: DocumentFilter, patient_pk: int | None = None) -> Clauses:
    clauses: Clauses = [OBJ.c.kind == schema.KIND_DOCUMENT,
                        *_in_any((OBJ.c.status, f.statuses), (OBJ.c.object_type, f.object_types))]
    for attribute, groups in f.codes.items():
        clauses += _code_filter(attribute, groups, patient_pk)
    clauses += _time_filter(OBJ.c.creation_time, f.creation_time)
    clauses += _time_filter(OBJ.c.service_start, f.service_start)
    clauses += _time_filter(OBJ.c.service_stop, f.service_stop)
    clauses += _author_filter(f.author_persons, patient_pk)
    if f.reference_ids:
        clauses += _reference_filter(f.reference_ids, patient_pk)
    clauses += _in_any((OBJ.c.unique_id, f.unique_ids), (OBJ.c.entry_uuid, f.entry_uuids))
    return clauses


def find_documents(conn: Connection, patient_pk: int, f: DocumentFilter, limit: int | None = None) -> Rows:
    query = select(*COLUMNS).where(OBJ.c.patient_pk == patient_pk, *document_clauses(f, _sharded_pk(conn, patient_pk)))
    query = query.order_by(OBJ.c.creation_time.desc(), OBJ.c.pk.desc())
    if limit is not None:
        query = query.limit(limit)
    return conn.execute(query).all()


def find_submission_sets(conn: Connection, patient_pk: int, f: SubmissionSetFilter,
                         limit: int | None = None) -> Rows:
    clauses: Clauses = [OBJ.c.patient_pk == patient_pk, OBJ.c.kind == schema.KIND_SUBMISSION_SET,
                        *_in_any((OBJ.c.status, f.statuses), (OBJ.c.source_id, f.source_ids))]
    clauses += _time_filter(OBJ.c.submission_time, f.submission_time)
    clauses += _author_filter(f.author_persons, _sharded_pk(conn, patient_pk))
    clauses += _code_filter("ctype", f.content_types, _sharded_pk(conn, patient_pk))
    return _newest_first(conn, clauses, limit)


def find_folders(conn: Connection, patient_pk: int, f: FolderFilter, limit: int | None = None) -> Rows:
    clauses: Clauses = [OBJ.c.patient_pk == patient_pk, OBJ.c.kind == schema.KIND_FOLDER,
                        *_in_any((OBJ.c.status, f.statuses))]
    clauses += _time_filter(OBJ.c.last_update_time, f.last_update_time)
    clauses += _code_filter("folder", f.codes, _sharded_pk(conn, patient_pk))
    return _newest_first(conn, clauses, limit)


def _newest_first(conn: Connection, clauses: Clauses, limit: int | None) -> Rows:
    """The objects matching every clause, newest first, at most `limit` (0 or None: all)."""
    query = select(*COLUMNS).where(*clauses).order_by(OBJ.c.pk.desc())
    return conn.execute(query.limit(limit) if limit else query).all()


def _in_any(*columns_values: tuple[ColumnElement[Any], Sequence[str]]) -> Clauses:
    """`column IN values` for each pair whose values are not empty (no clause for an empty one)."""
    return [column.in_(values) for column, values in columns_values if values]


def stored_versions(conn: Connection, unique_id: str) -> Rows:
    """The versions of a document whose bytes are held here (blob_address among the columns),
    newest first: what a retrieve chooses from."""
    return conn.execute(
        select(*COLUMNS, OBJ.c.blob_address)
        .where(OBJ.c.unique_id == unique_id, OBJ.c.kind == schema.KIND_DOCUMENT,
               OBJ.c.blob_address.is_not(None), *entry_index.route(conn, unique_ids=[unique_id]))
        .order_by(OBJ.c.version.desc())).all()


def by_ids(conn: Connection, kind: str | None, *, entry_uuids: Iterable[str] = (),
           unique_ids: Iterable[str] = (), logical_ids: Iterable[str] = (),
           extra: Sequence[ColumnElement[bool]] = ()) -> Rows:
    """Objects by entryUUID, uniqueId or logical id (every version of the last two: callers filter)."""
    entry_uuids, unique_ids, logical_ids = list(entry_uuids), list(unique_ids), list(logical_ids)
    match = _in_any((OBJ.c.entry_uuid, entry_uuids), (OBJ.c.unique_id, unique_ids), (OBJ.c.lid, logical_ids))
    if not match:
        return []
    clauses = [or_(*match), *extra]
    clauses += entry_index.route(conn, entry_uuids, unique_ids=unique_ids, lids=logical_ids)   # sharded: their shards
    if kind:
        clauses.append(OBJ.c.kind == kind)
    return conn.execute(select(*COLUMNS).where(*clauses).order_by(OBJ.c.pk)).all()


def associations(conn: Connection, *, sources: Iterable[str] = (), targets: Iterable[str] = (),
                 either: Iterable[str] = (), types: Sequence[str] = (), statuses: Sequence[str] = ()) -> Rows:
    """Associations touching the given objects, optionally of given types/statuses."""
    sources, targets, either = list(sources), list(targets), list(either)
    match = _in_any((OBJ.c.source_uuid, sources), (OBJ.c.target_uuid, targets),
                    (OBJ.c.source_uuid, either), (OBJ.c.target_uuid, either))
    if not match:
        return []
    clauses = [OBJ.c.kind == schema.KIND_ASSOCIATION, or_(*match),
               *_in_any((OBJ.c.assoc_type, list(types)), (OBJ.c.status, list(statuses))),
               *entry_index.route_references(conn, [*sources, *targets, *either])]   # sharded: their shards
    return conn.execute(select(*COLUMNS).where(*clauses).order_by(OBJ.c.pk)).all()


def lineage_heads(conn: Connection, lineages: Iterable[str], patient_pks: Iterable[int] = ()) -> list[ObjectRow]:
    """The newest versions of documents' lineages, as rows `(pk, entry_uuid, lineage)`: every
    version not Deprecated, and for a lineage whose every version is Deprecated (its newest
    one deprecated by a status update), the last registered one.

    Only lineages of more than one version are answered: a document alone in its lineage is
    its own newest version, which is what nearly every document is (one aggregate query,
    returning nothing, for a whole page of them). Keys only: the caller usually holds these
    versions already and loads the others' bodies with `by_ids`.

    `patient_pks`: the patients these documents belong to (a lineage never leaves its
    patient), so that the queries are pruned to their partitions, their shards on a sharded
    registry (registry.sharding), instead of reading every one."""
    mine = [OBJ.c.patient_pk.in_(sorted(set(patient_pks)))] if patient_pks else []
    wanted = [lineage for lineage in dict.fromkeys(lineages) if lineage]
    keys = (OBJ.c.pk, OBJ.c.entry_uuid, OBJ.c.lineage)
    out: list[ObjectRow] = []
    for chunk in chunks(wanted):
        several = list(conn.execute(select(OBJ.c.lineage).where(
            OBJ.c.kind == schema.KIND_DOCUMENT, OBJ.c.lineage.in_(chunk), *mine)
            .group_by(OBJ.c.lineage).having(func.count() > 1)).scalars())
        if not several:
            continue
        live = conn.execute(select(*keys).where(
            OBJ.c.kind == schema.KIND_DOCUMENT, OBJ.c.lineage.in_(several),
            OBJ.c.status != "Deprecated", *mine)).all()
        out += live
        dead = sorted(set(several) - {row.lineage for row in live})
        if dead:
            last = (select(func.max(OBJ.c.pk)).where(OBJ.c.kind == schema.KIND_DOCUMENT,
                                                     OBJ.c.lineage.in_(dead), *mine)
                    .group_by(OBJ.c.lineage).scalar_subquery())
            out += conn.execute(select(*keys).where(OBJ.c.pk.in_(last), *mine)).all()
    return out


def transformed(conn: Connection, lineages: Iterable[str], patient_pks: Iterable[int] = ()) -> list[ObjectRow]:
    """The documents the versions of these lineages transform (their XFRM associations, whatever
    their status), as rows `(lineage, target_uuid)`: a transform is judged with the document it
    transforms (partage.access.gate). Asked for the lineages registry.lineages names only (a
    transform's is, `register.insert_objects`). `patient_pks` as in `lineage_heads`."""
    pks = sorted(set(patient_pks))
    source = OBJ.alias("transform")
    mine = [OBJ.c.patient_pk.in_(pks), source.c.patient_pk.in_(pks)] if pks else []
    wanted = [lineage for lineage in dict.fromkeys(lineages) if lineage]
    out: list[ObjectRow] = []
    for chunk in chunks(wanted):
        out += conn.execute(select(source.c.lineage, OBJ.c.target_uuid).distinct()
                            .select_from(OBJ.join(source, source.c.entry_uuid == OBJ.c.source_uuid))
                            .where(OBJ.c.kind == schema.KIND_ASSOCIATION,
                                   OBJ.c.assoc_type == str(AssociationType.XFRM),
                                   source.c.kind == schema.KIND_DOCUMENT, source.c.lineage.in_(chunk), *mine)
                            .order_by(source.c.lineage, OBJ.c.target_uuid)).all()
    return out
