"""Register a submission in one transaction: the rules that need the database, then
the rows. All or nothing: any error raises XdsErrors and the caller's transaction
rolls back, so a refused submission leaves no trace.

Rules (ITI TF-3 4.2.2, ITI TF-2 3.42.4.1.3): the patient is known; references resolve
to objects of the same patient; relationship targets are Approved DocumentEntries;
uniqueIds are new (a known document uniqueId with another hash is
XDSNonIdenticalHash). Effects: RPLC and XFRM_RPLC deprecate the target and its
addenda and transforms, and the replacement joins the target's folders; folders that
gain a member get a new lastUpdateTime.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from ..metadata.datatypes import DTM
from ..metadata.errors import ErrorCode, XdsError, XdsErrors
from ..metadata.model import (
    REPLACING_TYPES,
    AnyObject,
    Association,
    AssociationType,
    AvailabilityStatus,
    DocumentEntry,
    Folder,
    SubmissionRequest,
    SubmissionSet,
)
from . import entry_index, schema
from . import lineages as lineages_held
from .batches import chunks
from .clock import utc_now
from .indexing import author_rows, code_rows, object_from_row, row_values
from .store import Registry

OBJ = schema.registry_objects

# The statements of every submission, built once (values bound at execution): building one
# per call costs its construction and cache key each time, about 0.1 ms a statement.
_UUIDS_TAKEN = select(OBJ.c.entry_uuid).where(OBJ.c.entry_uuid.in_(bindparam("uuids", expanding=True)))
_CLAIMS = select(schema.unique_ids).where(schema.unique_ids.c.unique_id.in_(bindparam("uids", expanding=True)))
_CLAIM = {"postgresql": pg_insert(schema.unique_ids).on_conflict_do_nothing(index_elements=["unique_id"]),
          "sqlite": sqlite_insert(schema.unique_ids).on_conflict_do_nothing(index_elements=["unique_id"])}
# The claims a statement inserted (a conflicting one returns no row): when all are, nothing to compare.
_CLAIM_RETURNING = {name: claim.returning(schema.unique_ids.c.unique_id) for name, claim in _CLAIM.items()}
_INSERT_OBJECTS = OBJ.insert().returning(OBJ.c.pk, sort_by_parameter_order=True)
_INSERT_CODES = schema.object_codes.insert()
_INSERT_AUTHORS = schema.object_authors.insert()
KIND_NAMES = {schema.KIND_DOCUMENT: "DocumentEntry", schema.KIND_SUBMISSION_SET: "SubmissionSet",
              schema.KIND_FOLDER: "Folder", schema.KIND_ASSOCIATION: "Association"}


def register(registry: Registry, conn: Connection, request: SubmissionRequest,
             blob_addresses: dict[str, str] | None = None, *, hidden: Collection[str] = ()) -> int:
    """Insert the request's objects (ids already assigned) after the database rules; returns
    the patient's key (what else the transaction writes for the submission is written for it).
    `hidden`: registered objects the submitter may not see, answered about as unknown ids."""
    blob_addresses = blob_addresses or {}
    ss = request.submission_set
    assert ss is not None   # metadata.validate refuses a submission without one
    errors: list[XdsError] = []
    patient_pk = registry.active_patient_pk(conn, ss.patient_id)
    if patient_pk is None:
        raise XdsErrors.one(ErrorCode.UNKNOWN_PATIENT_ID,
                            f"patient {ss.patient_id} is not known (or was merged into another) to the registry "
                            "(not sent by the patient identity feed)", ss.entry_uuid)
    in_request = request.by_id()
    external = request.external_references()
    rows = {ref: row for ref, row in registry.rows_by_uuid(conn, external, lock=True).items()
            if ref not in hidden}   # a replaced document, a folder: checked, then changed
    now = utc_now()
    for ref in external:
        if ref not in rows:
            errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                   f"association references {ref}, which is neither in the "
                                   "submission nor in the registry", ref))
    for ref, row in rows.items():
        if row.patient_pk is not None and row.patient_pk != patient_pk:
            errors.append(XdsError(ErrorCode.PATIENT_ID_DOES_NOT_MATCH,
                                   f"{KIND_NAMES[row.kind]} {ref} belongs to another patient", ref))
    taken = _uuids_taken(conn, [u for u in in_request if u not in rows])
    for obj in in_request.values():
        if obj.entry_uuid in rows or obj.entry_uuid in taken:
            errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                   f"id {obj.entry_uuid} is already used in the registry",
                                   obj.entry_uuid))
    errors += _check_associations(request, in_request, rows)
    errors += _check_unique_ids(conn, request)
    if errors:
        raise XdsErrors(errors)

    for obj in request.objects():
        obj.availability_status = AvailabilityStatus.APPROVED
        obj.lid = obj.entry_uuid   # a first version (metadata.validate refuses another lid)
        obj.version = "1"          # the registry numbers versions (a submitted VersionInfo is not one)
    for folder in request.folders:
        folder.last_update_time = DTM(now)
    extra = _effects(conn, request, rows, now)
    lineages = _lineages(request, rows)
    try:
        objects = request.objects()
        claim_unique_ids(conn, objects, new_documents=request.new_documents)
        insert_objects(conn, [*objects, *extra], patient_pk=patient_pk, registered_at=now,
                       blob_addresses=blob_addresses, lineages=lineages)
    except IntegrityError as exc:
        raise XdsErrors.one(ErrorCode.DUPLICATE_UNIQUE_ID,
                            "a uniqueId or id of this submission was registered concurrently "
                            f"by another submission ({exc.orig.__class__.__name__})") from exc
    return patient_pk


class Continued(NamedTuple):
    """The lineage a new row joins, and the patient of the version it continues."""

    lineage: str
    patient_pk: int | None


def _lineages(request: SubmissionRequest, rows: dict[str, Row[Any]]) -> dict[str, Continued]:
    """A replacement (RPLC, XFRM_RPLC) continues the lineage of the document it replaces."""
    out: dict[str, Continued] = {}
    for assoc in request.associations:
        target = rows.get(assoc.target_uuid)
        if assoc.association_type in REPLACING_TYPES and target is not None:
            out[assoc.source_uuid] = Continued(target.lineage or target.lid, target.patient_pk)
    return out


def _uuids_taken(conn: Connection, entry_uuids: list[str]) -> set[str]:
    """Which of these entryUUIDs the registry already holds (one query for a submission)."""
    if not entry_uuids:
        return set()
    if entry_index.sharded(conn):   # the global index, not every shard
        return entry_index.taken(conn, entry_uuids)
    return set(conn.execute(_UUIDS_TAKEN, {"uuids": entry_uuids}).scalars())


def _kind_of(ref: str, in_request: dict[str, AnyObject], rows: dict[str, Row[Any]]) -> str:
    if ref in in_request:
        return in_request[ref].kind
    row = rows.get(ref)
    return KIND_NAMES[row.kind] if row is not None else ""


def _check_associations(request: SubmissionRequest, in_request: dict[str, AnyObject],
                        rows: dict[str, Row[Any]]) -> list[XdsError]:
    errors = []
    ss_id = request.submission_set.entry_uuid if request.submission_set is not None else ""
    for assoc in request.associations:
        where = assoc.entry_uuid
        try:
            kind = AssociationType(assoc.association_type)
        except ValueError:
            continue   # reported by metadata.validate
        source = _kind_of(assoc.source_uuid, in_request, rows)
        target = _kind_of(assoc.target_uuid, in_request, rows)
        if not source or not target:
            continue   # unresolved, reported above
        if kind == AssociationType.HAS_MEMBER:
            if source == "SubmissionSet" and assoc.source_uuid != ss_id:
                errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                       "HasMember from a SubmissionSet other than the one submitted",
                                       where))
            elif source == "Folder" and target != "DocumentEntry":
                errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                       "a Folder may only have DocumentEntries as members", where))
            elif source not in ("SubmissionSet", "Folder"):
                errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                       f"HasMember source must be a SubmissionSet or a Folder, not a {source}",
                                       where))
            if source == "Folder" and assoc.source_uuid in rows:
                if rows[assoc.source_uuid].status != "Approved":
                    errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                           "cannot add a document to a Folder that is not Approved",
                                           where))
        elif kind.is_relationship:
            if source != "DocumentEntry" or target != "DocumentEntry":
                errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                       f"{kind.name} must link two DocumentEntries", where))
                continue
            if assoc.source_uuid not in in_request:
                errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                       f"the source of {kind.name} must be a DocumentEntry of this submission",
                                       where))
            target_row = rows.get(assoc.target_uuid)
            if target_row is not None and target_row.status != "Approved":
                errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                       f"{kind.name} target {assoc.target_uuid} is {target_row.status}, "
                                       "not Approved", where))
    return errors


def _check_unique_ids(conn: Connection, request: SubmissionRequest) -> list[XdsError]:
    wanted = {o.unique_id: o for o in [request.submission_set, *request.documents, *request.folders]
              if o is not None and o.unique_id}
    if not wanted:
        return []
    taken = {row.unique_id: row for row in conn.execute(_CLAIMS, {"uids": list(wanted)})}
    return [e for uid, row in taken.items() for e in _conflict(wanted[uid], row, request.new_documents)]


def _conflict(obj: DocumentEntry | SubmissionSet | Folder, claim: Row[Any], new_documents: bool = False
              ) -> list[XdsError]:
    """Nothing when `obj` may reuse the claimed uniqueId: a resubmission of the same document
    (unless the submission's documents must be new: `SubmissionRequest.new_documents`).

    A document uniqueId already registered with another hash is both a duplicate
    (XDSDuplicateUniqueIdInRegistry) and, more precisely, XDSNonIdenticalHash: both are
    reported, so a client checking either code understands.
    """
    duplicate = XdsError(ErrorCode.DUPLICATE_UNIQUE_ID, f"uniqueId {obj.unique_id} is already registered",
                         obj.entry_uuid)
    if isinstance(obj, DocumentEntry) and claim.kind == schema.KIND_DOCUMENT:
        if obj.hash and claim.hash and obj.hash.lower() == claim.hash.lower():
            return [duplicate] if new_documents else []
        if obj.hash and claim.hash:
            return [duplicate, XdsError(ErrorCode.NON_IDENTICAL_HASH,
                                        f"DocumentEntry uniqueId {obj.unique_id} is already registered "
                                        "with another hash", obj.entry_uuid)]
    return [duplicate]


def restore_claims(conn: Connection, values: list[dict[str, Any]]) -> None:
    """Claims (unique_id, kind, lid, hash) for objects registered without theirs (`partage
    fsck --repair`); a uniqueId claimed meanwhile keeps its claim."""
    if values:
        conn.execute(_CLAIM[conn.dialect.name], values)


def claim_unique_ids(conn: Connection, objects: list[AnyObject], *, new_documents: bool = False) -> None:
    """Insert the submission's uniqueId claims (one statement), or accept identical ones (not
    with `new_documents`); raise if another submission won the race for one of them."""
    claimed: dict[str, DocumentEntry | SubmissionSet | Folder] = {}
    conflicts = []
    for obj in objects:
        if isinstance(obj, Association) or not obj.unique_id:
            continue   # associations have no uniqueId
        if obj.unique_id in claimed:   # twice in one submission (metadata.validate says so first)
            conflicts.append(XdsError(ErrorCode.DUPLICATE_UNIQUE_ID,
                                      f"uniqueId {obj.unique_id} is used twice in this submission", obj.entry_uuid))
        claimed[obj.unique_id] = obj
    if conflicts:
        raise XdsErrors(conflicts)
    if not claimed:
        return
    values = [{"unique_id": uid, "kind": row_values(obj, patient_pk=None, registered_at="")["kind"],
               "lid": obj.logical_id, "hash": getattr(obj, "hash", None) or None}
              for uid, obj in claimed.items()]
    inserted = set(conn.execute(_CLAIM_RETURNING[conn.dialect.name], values).scalars())
    taken = [uid for uid in claimed if uid not in inserted]
    if not taken:
        return   # every claim is this submission's own
    for claim in conn.execute(_CLAIMS, {"uids": taken}):   # already there: the same document's, or a race lost
        obj = claimed[claim.unique_id]
        if claim.lid != obj.logical_id:
            conflicts += _conflict(obj, claim, new_documents)
    if conflicts:
        raise XdsErrors(conflicts)


def release_unique_ids(conn: Connection, unique_ids: Iterable[str]) -> None:
    """Drop the claims of those uniqueIds that no registry object holds any more (after a
    removal or a purge: a resubmitted document's other version keeps its claim)."""
    for chunk in chunks(list(dict.fromkeys(u for u in unique_ids if u))):
        still = set(conn.execute(select(OBJ.c.unique_id).where(
            OBJ.c.unique_id.in_(chunk), *entry_index.route(conn, unique_ids=chunk))).scalars())
        gone = [u for u in chunk if u not in still]
        if gone:
            conn.execute(schema.unique_ids.delete().where(schema.unique_ids.c.unique_id.in_(gone)))


def _effects(conn: Connection, request: SubmissionRequest, rows: dict[str, Row[Any]],
             now: str) -> list[Association]:
    """Deprecations and folder updates caused by the submission; returns new associations."""
    extra: list[Association] = []
    folders_touched: set[str] = set()
    in_request = request.by_id()
    for assoc in request.associations:
        if assoc.association_type == AssociationType.HAS_MEMBER:
            if assoc.source_uuid in rows and rows[assoc.source_uuid].kind == schema.KIND_FOLDER:
                folders_touched.add(assoc.source_uuid)
        elif assoc.association_type in REPLACING_TYPES:
            replaced = assoc.target_uuid
            set_status(conn, [replaced, *dependents(conn, replaced)], AvailabilityStatus.DEPRECATED)
            for folder_uuid in folders_of(conn, replaced):
                extra.append(Association(
                    entry_uuid=uuid.uuid4().urn, association_type=AssociationType.HAS_MEMBER,
                    source_uuid=folder_uuid, target_uuid=assoc.source_uuid,
                    availability_status=AvailabilityStatus.APPROVED))
                folders_touched.add(folder_uuid)
    for folder_uuid in folders_touched:
        if folder_uuid not in in_request:
            rewrite(conn, folder_uuid, lambda f: setattr(f, "last_update_time", DTM(now)))
    return extra


def dependents(conn: Connection, doc_uuid: str, status: str = "Approved") -> list[str]:
    """The addenda and transforms of a document in `status`: a replacement deprecates the
    Approved ones along with it (and a lost one's are set back: registry.shard_recovery)."""
    kinds = [str(AssociationType.APND), str(AssociationType.XFRM)]
    sources = conn.execute(select(OBJ.c.source_uuid).where(
        OBJ.c.kind == schema.KIND_ASSOCIATION, OBJ.c.target_uuid == doc_uuid,
        OBJ.c.assoc_type.in_(kinds), *entry_index.route_references(conn, [doc_uuid]))).scalars().all()
    if not sources:
        return []
    return list(conn.execute(select(OBJ.c.entry_uuid).where(
        OBJ.c.entry_uuid.in_(sources), OBJ.c.status == status, *entry_index.route(conn, sources))).scalars())


def folders_of(conn: Connection, doc_uuid: str) -> list[str]:
    folder_uuids = conn.execute(select(OBJ.c.source_uuid).where(
        OBJ.c.kind == schema.KIND_ASSOCIATION, OBJ.c.target_uuid == doc_uuid,
        OBJ.c.assoc_type == str(AssociationType.HAS_MEMBER), OBJ.c.status == "Approved",
        *entry_index.route_references(conn, [doc_uuid]))).scalars().all()
    if not folder_uuids:
        return []
    return list(conn.execute(select(OBJ.c.entry_uuid).where(
        OBJ.c.entry_uuid.in_(folder_uuids), OBJ.c.kind == schema.KIND_FOLDER,
        *entry_index.route(conn, folder_uuids))).scalars())


def insert_objects(conn: Connection, objects: list[AnyObject], *, patient_pk: int | None,
                   registered_at: str, blob_addresses: dict[str, str] | None = None,
                   lineages: dict[str, Continued] | None = None) -> list[int]:
    """The rows of these objects, one statement per table: the objects (their keys returned in
    order), then every code row, then every author row. A document joining another's lineage
    (`lineages`: a replacement, a new version) makes it a lineage of several versions, which
    registry.lineages records with the patients of both versions; an XFRM association makes
    its source's lineage a transform's, recorded there too (`_transform_lineages`)."""
    if not objects:
        return []
    blob_addresses, lineages = blob_addresses or {}, lineages or {}
    values = []
    for obj in objects:
        continued = lineages.get(obj.entry_uuid)
        values.append(row_values(obj, patient_pk=patient_pk, registered_at=registered_at,
                                 blob_address=blob_addresses.get(obj.entry_uuid),
                                 lineage=continued.lineage if continued else None))
        if continued and isinstance(obj, DocumentEntry):
            patients = {pk for pk in (continued.patient_pk, patient_pk) if pk is not None}
            lineages_held.record(conn, continued.lineage, patients)
    for lineage, patients in _transform_lineages(conn, objects, lineages, patient_pk).items():
        lineages_held.record(conn, lineage, patients)
    pks = [0] * len(values)
    for places in _same_columns(values).values():   # an executemany needs one set of columns
        inserted = conn.execute(_INSERT_OBJECTS, [values[i] for i in places])
        for place, pk in zip(places, inserted.scalars(), strict=True):
            pks[place] = pk
    if patient_pk is not None and entry_index.sharded(conn):   # the global index
        entry_index.add(conn, values)
    codes = [{**c, "object_pk": pk, "patient_pk": patient_pk} for obj, pk in zip(objects, pks, strict=True)
             for c in code_rows(obj)]
    if codes:
        conn.execute(_INSERT_CODES, codes)
    authors = [{**a, "object_pk": pk, "patient_pk": patient_pk} for obj, pk in zip(objects, pks, strict=True)
               for a in author_rows(obj)]
    if authors:
        conn.execute(_INSERT_AUTHORS, authors)
    return pks


def _transform_lineages(conn: Connection, objects: list[AnyObject], lineages: dict[str, Continued],
                        patient_pk: int | None) -> dict[str, set[int]]:
    """The lineages of the transforms these objects' XFRM associations name (their sources,
    submitted with them or registered), with their patients: registry.lineages names them, so
    that the view reads the documents they transform (a transform is judged with its original,
    docs/access.md "Visibility: one decision on the whole result")."""
    sources = [o.source_uuid for o in objects
               if isinstance(o, Association) and o.association_type == AssociationType.XFRM]
    if not sources:
        return {}
    here = {o.entry_uuid: o for o in objects if isinstance(o, DocumentEntry)}
    out: dict[str, set[int]] = {}
    for source in sources:
        doc = here.get(source)
        if doc is not None and patient_pk is not None:
            continued = lineages.get(source)
            out.setdefault(continued.lineage if continued else doc.logical_id, set()).add(patient_pk)
    registered = sorted(set(sources) - here.keys())
    if registered:
        for row in conn.execute(select(OBJ.c.lineage, OBJ.c.lid, OBJ.c.patient_pk).where(
                OBJ.c.kind == schema.KIND_DOCUMENT, OBJ.c.entry_uuid.in_(registered),
                *entry_index.route(conn, registered))):
            if row.patient_pk is not None:
                out.setdefault(row.lineage or row.lid, set()).add(row.patient_pk)
    return out


def _same_columns(rows: list[dict[str, Any]]) -> dict[tuple[str, ...], list[int]]:
    """The rows' places grouped by the columns they set (a SubmissionSet's differ from a document's)."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for place, row in enumerate(rows):
        groups.setdefault(tuple(sorted(row)), []).append(place)
    return groups


def insert_object(conn: Connection, obj: AnyObject, *, patient_pk: int | None,
                  registered_at: str, blob_address: str | None = None, lineage: Continued | None = None) -> int:
    """One object's rows (an update's new version, a lifecycle association)."""
    return insert_objects(conn, [obj], patient_pk=patient_pk, registered_at=registered_at,
                          blob_addresses={obj.entry_uuid: blob_address} if blob_address else None,
                          lineages={obj.entry_uuid: lineage} if lineage else None)[0]


def rewrite(conn: Connection, entry_uuid: str, mutate: Callable[[AnyObject], None]) -> AnyObject | None:
    """Load one object, change it in place, store it back (body, columns, indexes)."""
    row = conn.execute(select(OBJ).where(OBJ.c.entry_uuid == entry_uuid,
                                         *entry_index.route(conn, [entry_uuid]))).first()
    if row is None:
        return None
    obj = object_from_row(row.body)
    mutate(obj)
    values = row_values(obj, patient_pk=row.patient_pk, registered_at=row.registered_at,
                        blob_address=row.blob_address, lineage=row.lineage)
    values.update(revision=(row.revision or 1) + 1, updated_at=utc_now())   # a new FHIR version
    mine = OBJ.c.patient_pk == row.patient_pk   # its partition (its shard when sharded)
    conn.execute(update(OBJ).where(OBJ.c.pk == row.pk, mine).values(**values))
    for index in (schema.object_codes, schema.object_authors):
        conn.execute(index.delete().where(index.c.object_pk == row.pk, index.c.patient_pk == row.patient_pk))
    codes, authors = code_rows(obj), author_rows(obj)
    if codes:
        conn.execute(schema.object_codes.insert(),
                     [{**c, "object_pk": row.pk, "patient_pk": row.patient_pk} for c in codes])
    if authors:
        conn.execute(schema.object_authors.insert(),
                     [{**a, "object_pk": row.pk, "patient_pk": row.patient_pk} for a in authors])
    return obj


def set_status(conn: Connection, uuids: list[str], status: AvailabilityStatus) -> None:
    for entry_uuid in uuids:
        rewrite(conn, entry_uuid, lambda o: setattr(o, "availability_status", status))


__all__ = ["register", "insert_object", "rewrite", "set_status", "folders_of", "Folder"]
