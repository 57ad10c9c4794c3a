"""Metadata lifecycle in the registry's tables: ITI-57 updates, ITI-62 removal, ITI-86
removal of bytes. The rules that need the database (ITI TF-2b 3.57.4.1.3, 3.62.4.1.3) and
the writes, in the caller's transaction; who may ask for them is `partage.lifecycle`'s
question, answered before these run.

Removal leaves a tombstone (`removed_objects`): the body of what was removed, who removed
it and when, and for bytes their address (kept until an administrator purges them), so
that a removal is traceable and recoverable. Derived data (clinical facts, document text,
text jobs) of a document no version of which remains goes in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable, Sequence

from sqlalchemy import Connection, delete, func, select, update

from ..metadata.datatypes import DTM
from ..metadata.errors import ErrorCode, XdsError, XdsErrors
from ..metadata.model import (
    AnyObject,
    Association,
    AssociationType,
    AvailabilityStatus,
    DocumentEntry,
    Folder,
    SubmissionRequest,
)
from . import consistency, derived, entry_index, schema
from .clock import utc_now
from .indexing import object_from_row, status_short
from .queries import ObjectRow
from .register import Continued, claim_unique_ids, insert_object, release_unique_ids, rewrite
from .store import Registry

OBJ = schema.registry_objects
STATUS_BY_SHORT = {s.short: s for s in AvailabilityStatus}
# Transitions an UpdateAvailabilityStatus may ask for (IHE + CI-SIS).
ALLOWED_TRANSITIONS = {
    ("Approved", "Deprecated"), ("Deprecated", "Approved"),
    ("Approved", "Archived"), ("Archived", "Approved"),
    ("Approved", "Deleted"), ("Deprecated", "Deleted"), ("Archived", "Deleted"),
}
UPDATE_ERROR = ErrorCode.METADATA_UPDATE
KIND_OF_VERSIONED = {DocumentEntry: schema.KIND_DOCUMENT, Folder: schema.KIND_FOLDER}
Row = ObjectRow


def _set_status(status: AvailabilityStatus) -> Callable[[AnyObject], None]:
    """The change `rewrite` makes to give an object `status`."""
    def change(obj: AnyObject) -> None:
        obj.availability_status = status
    return change


def apply_update(registry: Registry, conn: Connection, request: SubmissionRequest, *,
                 hidden: Collection[str] = ()) -> list[str]:
    """Check an ITI-57 request against the registry and write it (ids already assigned).
    `hidden`: registered objects the submitter may not see, which the associations it submits
    name: answered about as ids the registry does not hold.

    Returns the logical ids whose version it succeeds is on another shard (a new version that
    moves a document or folder to a patient of another shard): their deprecation is the
    caller's second step, `settle_versions` in its own transaction once this one committed.
    postgres_fdw has no two-phase commit: written in one transaction, the old shard could
    commit the deprecation while the new version was lost with the other shard, leaving a
    document with no Approved version. In two steps, a failure between them leaves two
    Approved versions, which `partage fsck` names (UNSETTLED) and `--repair` settles."""
    ss = request.submission_set
    if ss is None:   # validate_submission asks for one first
        raise XdsErrors.one(ErrorCode.REGISTRY_METADATA, "the update has no SubmissionSet")
    now = utc_now()
    patient_pk = registry.active_patient_pk(conn, ss.patient_id)
    if patient_pk is None:
        raise XdsErrors.one(ErrorCode.UNKNOWN_PATIENT_ID, f"patient {ss.patient_id} is not known (or was merged into another)")
    errors: list[XdsError] = []
    previous_version = {a.target_uuid: a.previous_version for a in request.associations
                        if a.association_type == AssociationType.HAS_MEMBER
                        and a.source_uuid == ss.entry_uuid and a.previous_version}
    status_of_member = {a.target_uuid: a.submission_set_status for a in request.associations
                        if a.association_type == AssociationType.HAS_MEMBER and a.source_uuid == ss.entry_uuid}
    # AssociationPropagation (default yes) on the HasMember naming the new version.
    propagate = {a.target_uuid: [v.strip().lower() for v in a.extra_slots.get("AssociationPropagation", ["yes"])]
                 != ["no"] for a in request.associations
                 if a.association_type == AssociationType.HAS_MEMBER and a.source_uuid == ss.entry_uuid}
    new_versions: list[DocumentEntry | Folder] = []
    members: list[DocumentEntry | Folder] = [*request.documents, *request.folders]
    for obj in members:
        if obj.entry_uuid not in previous_version:
            if isinstance(obj, DocumentEntry):
                # ITI TF-2b 3.57.4.1.3.1: the first version of a DocumentEntry is registered
                # by ITI-41/42, never by an update.
                errors.append(XdsError(UPDATE_ERROR, f"DocumentEntry {obj.entry_uuid} has no PreviousVersion: "
                                       "an update cannot submit a new DocumentEntry", obj.entry_uuid))
            continue   # a new Folder, or associations only (SubmitAssociation case)
        errors += _check_new_version(conn, obj, previous_version[obj.entry_uuid], patient_pk)
        if isinstance(obj, DocumentEntry) and status_of_member.get(obj.entry_uuid) != "Original":
            # ITI TF-2b 3.57.4.1.3.3.1: the new version's HasMember says SubmissionSetStatus Original.
            errors.append(XdsError(UPDATE_ERROR, f"the HasMember to the new version {obj.entry_uuid} needs "
                                   "SubmissionSetStatus Original", obj.entry_uuid))
        new_versions.append(obj)
    status_changes = [a for a in request.associations
                      if a.association_type == AssociationType.UPDATE_AVAILABILITY_STATUS]
    for change in status_changes:
        errors += _check_status_change(conn, change, patient_pk)
    errors += _check_submitted_associations(conn, request, ss.entry_uuid, patient_pk, hidden)
    if errors:
        raise XdsErrors(errors)

    ss.availability_status = AvailabilityStatus.APPROVED
    ss.lid, ss.version = ss.entry_uuid, "1"
    for obj in members:
        if obj.entry_uuid not in previous_version:   # a new Folder: its own logical id
            obj.lid = obj.entry_uuid
    # The update's uniqueIds are claimed like a submission's: the SubmissionSet's and a new
    # Folder's must be new; a new version's is its lineage's (the same logical id). `partage
    # fsck` reports an object whose uniqueId is not claimed (consistency.unclaimed_unique_ids).
    claim_unique_ids(conn, [ss, *members])
    insert_object(conn, ss, patient_pk=patient_pk, registered_at=now)
    unsettled: list[str] = []
    for obj in new_versions:
        prior = conn.execute(select(OBJ).where(OBJ.c.lid == obj.lid, OBJ.c.status != "Deprecated",
                                               *entry_index.route(conn, lids=[obj.lid]))
                             .order_by(OBJ.c.version.desc())).first()
        if prior is not None and entry_index.same_server(conn, prior.patient_pk, patient_pk):
            rewrite(conn, prior.entry_uuid, _set_status(AvailabilityStatus.DEPRECATED))
        elif prior is not None:
            unsettled.append(obj.lid)
        obj.version = str(int(previous_version[obj.entry_uuid]) + 1)
        obj.availability_status = AvailabilityStatus.APPROVED
        if isinstance(obj, Folder):
            obj.last_update_time = DTM(now)
        insert_object(conn, obj, patient_pk=patient_pk, registered_at=now,
                      blob_address=prior.blob_address if prior is not None else None,
                      lineage=Continued(prior.lineage or prior.lid, prior.patient_pk) if prior is not None else None)
        if isinstance(obj, Folder) and prior is not None and propagate.get(obj.entry_uuid, True):
            _propagate_folder_members(conn, prior.entry_uuid, obj.entry_uuid, patient_pk, now)
    new_ids = {o.entry_uuid for o in new_versions}
    for obj in members:
        if obj.entry_uuid not in new_ids:
            obj.availability_status = AvailabilityStatus.APPROVED
            obj.lid, obj.version = obj.entry_uuid, "1"
            insert_object(conn, obj, patient_pk=patient_pk, registered_at=now)
    for assoc in request.associations:
        assoc.availability_status = AvailabilityStatus.APPROVED
        assoc.lid, assoc.version = assoc.entry_uuid, "1"
        insert_object(conn, assoc, patient_pk=patient_pk, registered_at=now)
    for change in status_changes:
        new = STATUS_BY_SHORT[status_short(change.new_status)]
        rewrite(conn, change.target_uuid, _set_status(new))
    return unsettled


def settle_versions(conn: Connection, lids: Iterable[str]) -> list[str]:
    """The second step of an update across shards (`apply_update`), and fsck's repair of one
    that did not run: in these lineages, every DocumentEntry or Folder version older than the
    latest that is not Deprecated is deprecated, as the update would have in one database.
    Idempotent. Returns the entryUUIDs it deprecated."""
    settled: list[str] = []
    for lid in dict.fromkeys(lids):
        rows = conn.execute(select(OBJ.c.entry_uuid, OBJ.c.lid, OBJ.c.version, OBJ.c.status).where(
            OBJ.c.lid == lid, OBJ.c.kind.in_([schema.KIND_DOCUMENT, schema.KIND_FOLDER]),
            *entry_index.route(conn, lids=[lid]))).all()
        for row in consistency.older_current(rows):
            rewrite(conn, row.entry_uuid, _set_status(AvailabilityStatus.DEPRECATED))
            settled.append(row.entry_uuid)
    return settled


def _check_new_version(conn: Connection, obj: DocumentEntry | Folder, previous: str, patient_pk: int) -> list[XdsError]:
    where = obj.entry_uuid
    if not obj.lid or obj.lid == obj.entry_uuid:
        return [XdsError(UPDATE_ERROR, f"{obj.kind} {where} updates a previous version but has no lid", where)]
    # Locked (PostgreSQL; SQLite has one writer): a concurrent update of the same version waits
    # for this one and then finds it Deprecated, instead of registering a second version 2.
    rows = conn.execute(select(OBJ).where(OBJ.c.lid == obj.lid, *entry_index.route(conn, lids=[obj.lid]))
                        .order_by(OBJ.c.version.desc()).with_for_update()).all()
    if not rows:
        # PreviousVersion names a version that does not exist (NIST 15800b).
        return [XdsError(ErrorCode.METADATA_VERSION, f"no {obj.kind} with logical id {obj.lid}: "
                         f"PreviousVersion {previous} does not exist", where)]
    latest = rows[0]
    if latest.kind != KIND_OF_VERSIONED[type(obj)]:
        # A logical id names one object through its versions: a Folder cannot succeed a
        # DocumentEntry (its author's rule would not be asked), nor a DocumentEntry a Folder.
        return [XdsError(UPDATE_ERROR, f"{obj.lid} is not a {obj.kind}: a new version keeps its object's kind",
                         where)]
    errors = []
    if str(latest.version) != previous:
        errors.append(XdsError(ErrorCode.METADATA_VERSION,
                               f"PreviousVersion {previous} is not the latest version "
                               f"({latest.version}) of {obj.lid}", where))
    if latest.patient_pk != patient_pk:
        # ITI TF-2b 3.57.4.1.3.3.1.7 / 3.3.3.7: a new version may move an entry to another
        # patient only while no Folder membership or document relationship ties it to
        # other objects of its current patient (NIST 21002, 21003).
        linked = _linked_objects(conn, [r.entry_uuid for r in rows])
        if linked:
            errors.append(XdsError(ErrorCode.PATIENT_ID_RECONCILIATION,
                                   f"{obj.kind} {obj.lid} belongs to another patient and is linked to "
                                   f"{', '.join(sorted(linked)[:3])}: its patient cannot change", where))
    prior = object_from_row(latest.body)
    prior_unique_id = "" if isinstance(prior, Association) else prior.unique_id
    if prior_unique_id != obj.unique_id:
        errors.append(XdsError(UPDATE_ERROR, f"a new version must keep uniqueId {prior_unique_id}", where))
    if isinstance(obj, DocumentEntry) and latest.blob_address is not None:
        # Bytes held here: their digests and place are facts, not metadata to edit. For a
        # document held by another repository (ITI-42) they are the source's to correct.
        for attr in ("hash", "size", "repository_unique_id"):
            if getattr(obj, attr) and getattr(prior, attr) and getattr(obj, attr) != getattr(prior, attr):
                errors.append(XdsError(UPDATE_ERROR, f"a new version must keep {attr} of the document",
                                       where))
    if latest.status not in ("Approved", "Archived"):
        errors.append(XdsError(UPDATE_ERROR, f"{obj.lid} is {latest.status}; only an Approved "
                               "version can be updated", where))
    return errors


def _propagate_folder_members(conn: Connection, prior_uuid: str, new_uuid: str, patient_pk: int,
                              now: str) -> None:
    """ITI TF-2b 3.57.4.1.3.3.3 association propagation: the new version of a Folder has the
    members of the version it replaces (new HasMember associations; the old ones stay)."""
    rows = conn.execute(select(OBJ.c.body).where(
        OBJ.c.kind == schema.KIND_ASSOCIATION, OBJ.c.source_uuid == prior_uuid,
        OBJ.c.assoc_type == str(AssociationType.HAS_MEMBER), OBJ.c.status == "Approved",
        *entry_index.route_references(conn, [prior_uuid]))).all()
    for row in rows:
        member = object_from_row(row.body)
        if not isinstance(member, Association):   # the rows are associations
            continue
        member.entry_uuid = member.lid = f"urn:uuid:{uuid.uuid4()}"
        member.source_uuid, member.version = new_uuid, "1"
        member.availability_status = AvailabilityStatus.APPROVED
        insert_object(conn, member, patient_pk=patient_pk, registered_at=now)


def _linked_objects(conn: Connection, versions: list[str]) -> set[str]:
    """DocumentEntries and Folders associated with any of `versions` (SubmissionSets aside)."""
    assocs = conn.execute(select(OBJ.c.source_uuid, OBJ.c.target_uuid).where(
        OBJ.c.kind == schema.KIND_ASSOCIATION,
        OBJ.c.source_uuid.in_(versions) | OBJ.c.target_uuid.in_(versions),
        *entry_index.route_references(conn, versions))).all()
    others = {a.target_uuid if a.source_uuid in versions else a.source_uuid for a in assocs} - set(versions)
    if not others:
        return set()
    return set(conn.execute(select(OBJ.c.entry_uuid).where(
        OBJ.c.entry_uuid.in_(list(others)), *entry_index.route(conn, others),
        OBJ.c.kind.in_([schema.KIND_DOCUMENT, schema.KIND_FOLDER]))).scalars())


def _check_submitted_associations(conn: Connection, request: SubmissionRequest, ss_uuid: str,
                                  patient_pk: int, hidden: Collection[str] = ()) -> list[XdsError]:
    """ITI-57 rules on the associations an update carries (ITI TF-2b 3.57.4.1.3).

    AssociationPropagation is "yes" or "no". Every association links objects of the update's
    patient (XDSPatientIDReconciliationError otherwise), the update's own HasMember from its
    SubmissionSet and a status change's source included. An association between objects
    already registered (Submit Association) links objects that are not Deprecated, and does
    not repeat an association that exists.
    """
    errors: list[XdsError] = []
    submitted = {o.entry_uuid for o in [*request.documents, *request.folders, *request.associations]}
    submitted.add(ss_uuid)
    for assoc in request.associations:
        propagation = assoc.extra_slots.get("AssociationPropagation")
        if propagation is not None and [v.strip().lower() for v in propagation] not in (["yes"], ["no"]):
            errors.append(XdsError(UPDATE_ERROR, f"AssociationPropagation {propagation} is neither yes nor no",
                                   assoc.entry_uuid))
        # The update's own membership (from its SubmissionSet) and status changes have their own
        # rules (_check_status_change checks a change's target); their ends, like every other
        # association's, are the update's patient's objects: the registry keeps an association
        # with its patient's (entry_index.route_references reads it there).
        status_change = assoc.association_type == AssociationType.UPDATE_AVAILABILITY_STATUS
        own = status_change or assoc.source_uuid == ss_uuid
        named = [assoc.source_uuid] if status_change else [assoc.source_uuid, assoc.target_uuid]
        ends = [u for u in named if u not in submitted]
        if not ends:
            continue
        rows = {ref: row for ref, row in Registry.rows_by_uuid(conn, ends).items() if ref not in hidden}
        for end in ends:
            row = rows.get(end)
            if row is None:
                if own:
                    continue
                errors.append(XdsError(ErrorCode.UNRESOLVED_REFERENCE,
                                       f"association {assoc.entry_uuid} references {end}, which is not registered",
                                       assoc.entry_uuid))
            elif row.patient_pk is not None and row.patient_pk != patient_pk:
                errors.append(XdsError(ErrorCode.PATIENT_ID_RECONCILIATION,
                                       f"association {assoc.entry_uuid} links {end}, which belongs to another "
                                       "patient than the update's SubmissionSet", assoc.entry_uuid))
            elif own:
                continue
            elif row.status == "Deprecated":
                errors.append(XdsError(UPDATE_ERROR, f"association {assoc.entry_uuid} links {end}, which is "
                                       "Deprecated", assoc.entry_uuid))
        if len(ends) == 2 and not errors and not own:
            existing = conn.execute(select(OBJ.c.entry_uuid).where(
                OBJ.c.kind == schema.KIND_ASSOCIATION, OBJ.c.source_uuid == assoc.source_uuid,
                OBJ.c.target_uuid == assoc.target_uuid,
                OBJ.c.assoc_type == str(assoc.association_type),
                *entry_index.route_references(conn, [assoc.source_uuid, assoc.target_uuid]))).first()
            if existing is not None:
                errors.append(XdsError(UPDATE_ERROR, f"association {existing.entry_uuid} already links "
                                       f"{assoc.source_uuid} to {assoc.target_uuid}", assoc.entry_uuid))
    return errors


def _check_status_change(conn: Connection, change: Association, patient_pk: int) -> list[XdsError]:
    where = change.entry_uuid
    row = Registry.rows_by_uuid(conn, [change.target_uuid], lock=True).get(change.target_uuid)
    if row is None:
        return [XdsError(ErrorCode.UNRESOLVED_REFERENCE, f"no object {change.target_uuid}", where)]
    original, new = status_short(change.original_status), status_short(change.new_status)
    if row.patient_pk != patient_pk:
        return [XdsError(ErrorCode.PATIENT_ID_RECONCILIATION, "the object belongs to another patient", where)]
    if row.kind == schema.KIND_SUBMISSION_SET:
        # ITI TF-2b 3.57.4.1.3.1: a SubmissionSet's status is not updatable (NIST 21001).
        return [XdsError(UPDATE_ERROR, f"{change.target_uuid} is a SubmissionSet; its availabilityStatus "
                         "cannot be updated", where)]
    if row.kind in (schema.KIND_DOCUMENT, schema.KIND_FOLDER):
        latest = conn.execute(select(OBJ.c.version).where(OBJ.c.lid == row.lid,
                                                          *entry_index.route(conn, lids=[row.lid]))
                              .order_by(OBJ.c.version.desc())).first()
        if latest is not None and latest.version != row.version:
            # ITI TF-2b 3.57.4.1.3.3.2: only the most recent version's status may change.
            return [XdsError(ErrorCode.METADATA_VERSION,
                             f"{change.target_uuid} is version {row.version} of {row.lid}, not the latest "
                             f"({latest.version}); only the latest version's status can be updated", where)]
    if row.status != original:
        return [XdsError(UPDATE_ERROR, f"OriginalStatus {original} is not the current status "
                         f"{row.status} of {change.target_uuid}", where)]
    if (original, new) not in ALLOWED_TRANSITIONS or new not in STATUS_BY_SHORT:
        return [XdsError(UPDATE_ERROR, f"status change {original} -> {new} is not allowed", where)]
    return []


def _emptied_submission_sets(conn: Connection, rows: Iterable[Row], removing: set[str]) -> list[XdsError]:
    """ITI TF-2b 3.62.4.1.3: a SubmissionSet that stays must keep at least one member.

    Removing every HasMember of a SubmissionSet but not the SubmissionSet itself would
    leave an unreferenced object (XDSUnreferencedObjectException).
    """
    has_member = str(AssociationType.HAS_MEMBER)
    sources = {r.source_uuid for r in rows if r.kind == schema.KIND_ASSOCIATION
               and r.assoc_type == has_member and r.source_uuid not in removing}
    errors = []
    for source in sorted(sources):
        owner = conn.execute(select(OBJ.c.kind).where(OBJ.c.entry_uuid == source,
                                                      *entry_index.route(conn, [source]))).first()
        if owner is None or owner.kind != schema.KIND_SUBMISSION_SET:
            continue
        left = conn.execute(select(OBJ.c.pk).where(
            OBJ.c.kind == schema.KIND_ASSOCIATION, OBJ.c.source_uuid == source, OBJ.c.assoc_type == has_member,
            OBJ.c.entry_uuid.not_in(list(removing)), *entry_index.route_references(conn, [source])).limit(1)).first()
        if left is None:
            errors.append(XdsError(ErrorCode.UNREFERENCED_OBJECT,
                                   f"SubmissionSet {source} would be left without any member; "
                                   "remove it in the same request", source))
    return errors




def latest_versions(conn: Connection, lids: Iterable[str]) -> dict[str, Row]:
    """The newest version of each logical id, whatever its status: what an ITI-57 new version
    replaces (the registry refuses it later if that version is not Approved), and so whose
    authors are asked first."""
    out: dict[str, Row] = {}
    wanted = [lid for lid in dict.fromkeys(lids) if lid]
    if not wanted:
        return out
    for row in conn.execute(select(OBJ).where(OBJ.c.lid.in_(wanted), *entry_index.route(conn, lids=wanted))
                            .order_by(OBJ.c.version, OBJ.c.pk)):
        out[row.lid] = row
    return out


def rows(conn: Connection, entry_uuids: Iterable[str]) -> dict[str, Row]:
    """Registry objects by entryUUID (what a change names)."""
    return Registry.rows_by_uuid(conn, [u for u in entry_uuids if u])


# ------------------------------------------------------------------ ITI-62 Remove Metadata
def removal_rows(conn: Connection, refs: Sequence[str]) -> tuple[dict[str, Row], list[XdsError]]:
    """The rows an ITI-62 names, and an error for each id the registry does not hold.
    Locked (PostgreSQL; SQLite has one writer): a concurrent write that links one of them (a
    status change, a replacement, a new version) waits for the removal and then finds it gone,
    or the removal waits for it and then finds the link (XDSReferenceExistsException)."""
    rows = Registry.rows_by_uuid(conn, refs, lock=True)
    errors = [XdsError(ErrorCode.UNRESOLVED_REFERENCE, f"no object {ref} in the registry", ref)
              for ref in refs if ref not in rows]
    return rows, errors


def remove_objects(conn: Connection, rows: dict[str, Row], *, removed_by: str,
                   errors: list[XdsError] | None = None) -> None:
    """ITI TF-2b 3.62.4.1.3: remove the objects, if nothing that stays references them.
    Raises XdsErrors (with `errors` found before) and writes nothing when it cannot."""
    errors = list(errors or [])
    removing = set(rows)
    referencing = conn.execute(select(OBJ.c.entry_uuid, OBJ.c.source_uuid, OBJ.c.target_uuid).where(
        OBJ.c.kind == schema.KIND_ASSOCIATION,
        (OBJ.c.source_uuid.in_(list(removing))) | (OBJ.c.target_uuid.in_(list(removing))),
        *entry_index.route_references(conn, sorted(removing)))).all()
    for assoc in referencing:
        if assoc.entry_uuid not in removing:
            errors.append(XdsError(ErrorCode.REFERENCES_EXIST,
                                   f"association {assoc.entry_uuid} still references "
                                   f"{assoc.source_uuid if assoc.source_uuid in removing else assoc.target_uuid}",
                                   assoc.entry_uuid))
    errors += _emptied_submission_sets(conn, rows.values(), removing)
    if errors:
        raise XdsErrors(errors)
    now = utc_now()
    _tombstones(conn, rows.values(), removed_by=removed_by, transaction="ITI-62", at=now, keep_bytes=True)
    lids = {r.lid for r in rows.values() if r.kind == schema.KIND_DOCUMENT}
    for row in rows.values():
        # The index rows explicitly: on a sharded registry no foreign key cascades (registry.sharding).
        for index in (schema.object_codes, schema.object_authors):
            conn.execute(index.delete().where(index.c.patient_pk == row.patient_pk, index.c.object_pk == row.pk))
        conn.execute(OBJ.delete().where(OBJ.c.pk == row.pk, OBJ.c.patient_pk == row.patient_pk))
    release_unique_ids(conn, [row.unique_id for row in rows.values()])
    entry_index.removed(conn, [row.entry_uuid for row in rows.values()])
    derived.forget_orphans(conn, lids)


def _tombstones(conn: Connection, rows: Iterable[Row], *, removed_by: str, transaction: str, at: str,
                keep_bytes: bool) -> None:
    values = [{"entry_uuid": r.entry_uuid, "kind": r.kind, "patient_pk": r.patient_pk, "removed_at": at,
               "removed_by": removed_by[:128], "transaction": transaction,
               "blob_address": r.blob_address if keep_bytes else None, "body": r.body} for r in rows]
    if values:
        conn.execute(schema.removed_objects.insert(), values)


# ------------------------------------------------------------------ ITI-86 Remove Documents
def document_rows(conn: Connection, unique_id: str) -> list[Row]:
    """Every version of a document whose bytes this repository holds. Locked (PostgreSQL): an
    ITI-57 new version, which locks the versions it continues and copies their bytes' address,
    waits for the removal, or the removal waits for it and its UPDATE then reaches the new version."""
    return list(conn.execute(select(OBJ).where(OBJ.c.unique_id == unique_id,
                                               OBJ.c.kind == schema.KIND_DOCUMENT,
                                               OBJ.c.blob_address.is_not(None),
                                               *entry_index.route(conn, unique_ids=[unique_id]))
                             .with_for_update()).all())


def remove_bytes(conn: Connection, unique_id: str, rows: Sequence[Row], *, removed_by: str) -> None:
    """The document's bytes leave the repository's answers; the tombstone keeps their address
    until an administrator purges them. What was read from them (clinical facts, searchable text,
    a pending text job) leaves with them, in the same transaction (`derived.forget_content`)."""
    _tombstones(conn, rows, removed_by=removed_by, transaction="ITI-86", at=utc_now(), keep_bytes=True)
    conn.execute(update(OBJ).where(OBJ.c.unique_id == unique_id, OBJ.c.kind == schema.KIND_DOCUMENT,
                                   *entry_index.route(conn, unique_ids=[unique_id]))
                 .values(blob_address=None))
    derived.forget_content(conn, [r.lid or r.entry_uuid for r in rows])


def removed_count(conn: Connection, *, before: str = "") -> int:
    """How many tombstones a purge (of those removed before `before`, YYYYMMDD...) would take."""
    t = schema.removed_objects
    clauses = [t.c.removed_at < before] if before else []
    return conn.execute(select(func.count()).select_from(t).where(*clauses)).scalar() or 0


def purge_removed(conn: Connection, *, before: str = "") -> set[str]:
    """An administrator's purge: tombstones go for good; returns the blob addresses nothing
    references any more (the caller deletes those bytes)."""
    t = schema.removed_objects
    clauses = [t.c.removed_at < before] if before else []
    addresses = set(conn.execute(select(t.c.blob_address).where(t.c.blob_address.is_not(None), *clauses))
                    .scalars())
    conn.execute(delete(t).where(*clauses))
    if not addresses:
        return set()
    used = set(conn.execute(select(OBJ.c.blob_address).where(OBJ.c.blob_address.in_(list(addresses))))
               .scalars())
    kept = set(conn.execute(select(t.c.blob_address).where(t.c.blob_address.in_(list(addresses)))).scalars())
    return addresses - used - kept
