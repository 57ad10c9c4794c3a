"""The lifecycle flow: ITI-57 metadata update, ITI-62 metadata removal, ITI-86 removal of
bytes, and the PDSm PATCH and HL7 feed updates that are ITI-57 underneath.

Like ingest, each request is one transaction, all or nothing. Who may ask is decided here,
inside that transaction, with the pure rules of `partage.access.decisions` (docs/access.md,
"Changing documents"): authors alone change documents (a professional by the credential's
id against authorPerson / legalAuthenticator, a connector for its structure's documents),
the patient or a legal representative changes the masking of documents they can see and
nothing else. A refusal is XDSPolicyViolation, noted on the audit record, and changes
nothing. What the registry checks and writes is `partage.registry.updates`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection

from .access import audit
from .access.actor import Actor
from .access.decisions import (
    PATIENT_KINDS,
    TRUSTED_KINDS,
    Decision,
    deny,
    masking_problem,
    modify_decision,
    update_decision,
)
from .access.gate import Graph
from .metadata.errors import ErrorCode, XdsError, XdsErrors
from .metadata.ids import assign_uuids
from .metadata.model import (
    RELATIONSHIP_TYPES,
    Association,
    AssociationType,
    DocumentEntry,
    SubmissionRequest,
)
from .metadata.validate import ITI_57, validate_submission
from .query.view import Reader, graph_of
from .registry import updates
from .registry.indexing import object_from_row
from .services import Services

log = logging.getLogger(__name__)

# Relations that change the document they point to (docs/access.md, "Changing documents").
CHANGING_TYPES = frozenset({AssociationType.RPLC, AssociationType.XFRM_RPLC, AssociationType.XFRM})


def _refuse(decision: Decision) -> XdsErrors:
    audit.note_denied(decision.reason)
    return XdsErrors.one(ErrorCode.POLICY_VIOLATION, decision.reason)


def _may_change_record(reader: Reader, conn: Connection, patient_pk: int | None) -> None:
    view = reader.view(conn, Graph(), [patient_pk] if patient_pk is not None else [])
    decision = update_decision(reader.actor, view.record(patient_pk), view.table,
                               own_patient=view.own(patient_pk))
    audit.note_patient("", patient_pk)
    if not decision:
        raise _refuse(decision)


# ------------------------------------------------------------------ ITI-57 (and PDSm PATCH)
def update_document_set(services: Services, actor: Actor, request: SubmissionRequest, *,
                        in_transaction: Callable[[Connection], None] | None = None) -> None:
    """ITI-57 in one transaction; `in_transaction`: what the door writes with the update, first
    in its transaction (the HL7 feed's answer to the message): both commit, or neither."""
    ss = request.submission_set
    if ss is None:
        raise XdsErrors.one(ErrorCode.REGISTRY_METADATA, "the update has no SubmissionSet")
    # New versions are checked like submissions, except membership by PreviousVersion.
    errors = [e for e in validate_submission(request, services.domain, ITI_57)
              if "is not linked to the SubmissionSet" not in e.context]
    if errors:
        raise XdsErrors(errors)
    assign_uuids(request)
    registry = services.registry

    def update(conn: Connection) -> list[str]:
        if in_transaction is not None:
            in_transaction(conn)
        patient_pk = registry.patient_pk(conn, ss.patient_id)
        if ss.patient_id is not None:
            audit.note_patient(ss.patient_id.format(), patient_pk)
        # what the update names and does not submit: the targets of its status changes, the
        # registered ends of its relations and memberships
        external = request.external_references()
        changed = updates.rows(conn, external)
        _note_documents([*request.documents, *_documents_touched(conn, changed.values())])
        reader = Reader(services, actor)
        _check_update(reader, conn, patient_pk, request)
        # a relation or membership naming a document hidden from the actor answers as one
        # naming an unknown id: nothing about the hidden document (its existence, its status)
        return updates.apply_update(registry, conn, request, hidden=reader.hidden(conn, external))

    unsettled = registry.writing(update)   # run again after a shard's serialization conflict
    if unsettled:
        _settle_versions(services, unsettled)


def _settle_versions(services: Services, lids: list[str]) -> None:
    """The second step of an update that moved documents to a patient on another shard: the
    versions it succeeds, deprecated once it has committed (registry.updates.apply_update).
    The update is done whatever happens here: a failure leaves the older version Approved
    too, which `partage fsck` reports (UNSETTLED) and `--repair` settles."""
    try:
        with services.registry.write() as conn:
            updates.settle_versions(conn, lids)
    except Exception:   # committed; the older versions are fsck's
        log.warning("ITI-57: the versions succeeded in %s are not deprecated yet (partage fsck --repair)",
                    ", ".join(lids), exc_info=True)


def _check_update(reader: Reader, conn: Connection, patient_pk: int | None, request: SubmissionRequest) -> None:
    actor = reader.actor
    if actor.kind in TRUSTED_KINDS:
        return
    _may_change_record(reader, conn, patient_pk)
    status_changes = [a for a in request.associations
                      if a.association_type == AssociationType.UPDATE_AVAILABILITY_STATUS]
    if actor.kind in PATIENT_KINDS and (request.folders or not all(
            _new_version_membership(a, request) for a in request.associations)):
        # status changes, folder memberships, relations: anything but the new versions' own HasMember
        raise _refuse(deny("a patient may only change the masking of documents"))
    previous = updates.latest_versions(conn, [d.lid for d in request.documents if d.lid])
    for doc in request.documents:
        row = previous.get(doc.lid) if doc.lid else None
        if row is None:
            continue   # no version to update: the registry's rules answer (XDSMetadataVersionError)
        prior = object_from_row(row.body)
        if not isinstance(prior, DocumentEntry):
            continue   # another kind's logical id: the registry's rules answer (XDSMetadataUpdateError)
        if row.patient_pk != patient_pk:
            # a new version naming another patient moves the document: the record it leaves
            # must be open to the actor too (a blocked author may not carry it elsewhere)
            _may_change_record(reader, conn, row.patient_pk)
        if actor.kind in PATIENT_KINDS:
            # the one gate, on the version with its lineage (a newer replacement may hide it)
            seen = reader.visible(conn, graph_of([row]), audited=False).objects
            problem = masking_problem(doc, prior) if seen else "a patient may not change a document they cannot see"
            if problem:
                raise _refuse(deny(problem))
            continue
        for version in (prior, doc):
            _require(modify_decision(actor, version, "update"))
    changed = [a.target_uuid for a in status_changes]
    for target in _documents_touched(conn, updates.rows(conn, changed).values()):
        _require(modify_decision(actor, target, "change the status of"))
    # Relations an update submits between registered documents (ITI-57 SubmitAssociation)
    # change what those documents say: the source is declared an addendum, a transform, a
    # replacement or a signature of the target (and a replacement of the target deprecates its
    # addenda and transforms with it), so it is for the source's authors; a replacement or a
    # transform changes the target too, so it is for the target's authors as well.
    submitted = {o.entry_uuid for o in request.objects()}
    linked = [end for a in request.associations if a.association_type in RELATIONSHIP_TYPES
              for end in ((a.source_uuid, a.target_uuid) if a.association_type in CHANGING_TYPES
                          else (a.source_uuid,)) if end not in submitted]
    for target in _documents_touched(conn, updates.rows(conn, linked).values()):
        _require(modify_decision(actor, target, "relate"))


def _new_version_membership(assoc: Association, request: SubmissionRequest) -> bool:
    """The update's own HasMember of one of the new versions it submits."""
    ss = request.submission_set
    return (assoc.association_type == AssociationType.HAS_MEMBER and ss is not None
            and assoc.source_uuid == ss.entry_uuid
            and any(d.entry_uuid == assoc.target_uuid for d in request.documents))


def _note_documents(documents: Iterable[DocumentEntry]) -> None:
    """The documents a change or removal is about, on its audit record: the trail says what was
    changed, and shows a patient only the changes of documents they may see (docs/access.md,
    "The audit trail": an event naming only documents hidden from them is not shown)."""
    audit.note_objects([d.unique_id for d in documents])


def _require(decision: Decision) -> None:
    if not decision:
        raise _refuse(decision)


def _documents_touched(conn: Connection, rows: Iterable[updates.Row]) -> list[DocumentEntry]:
    """The documents a change of these objects changes: a DocumentEntry itself; for an
    association (a membership, a relation), the DocumentEntries at its ends, through an
    association it points to (a SubmissionSet's HasMember of a folder membership)."""
    out: list[DocumentEntry] = []
    pending = list(rows)
    for _ in range(3):   # association -> association -> document: nested HasMember is two deep
        ends: list[str] = []
        for row in pending:
            obj = object_from_row(row.body)
            if isinstance(obj, DocumentEntry):
                out.append(obj)
            elif isinstance(obj, Association):
                ends += [obj.source_uuid, obj.target_uuid]
        if not ends:
            break
        pending = list(updates.rows(conn, ends).values())
    return out


# ------------------------------------------------------------------ ITI-62 Remove Metadata
def remove_metadata(services: Services, actor: Actor, refs: Sequence[str]) -> None:
    if not refs:
        raise XdsErrors.one(ErrorCode.REGISTRY_ERROR, "RemoveObjectsRequest lists no ObjectRef")
    reader = Reader(services, actor)
    with services.registry.write() as conn:
        rows, errors = updates.removal_rows(conn, refs)
        _note_documents(_documents_touched(conn, rows.values()))
        for row in rows.values():
            _may_remove(reader, conn, row)
        try:
            updates.remove_objects(conn, rows, removed_by=actor.id, errors=errors)
        except XdsErrors as exc:
            raise XdsErrors([_unnamed_if_hidden(reader, conn, e) for e in exc.errors]) from None


def _unnamed_if_hidden(reader: Reader, conn: Connection, error: XdsError) -> XdsError:
    """An association that keeps an object from being removed (XDSReferencesExist, as ITI-62
    says) is named only if the actor may see it: one to a document hidden from them (an
    addendum masked by another author) is said to exist, as the standard asks, not which."""
    if error.code != ErrorCode.REFERENCES_EXIST or reader.actor.kind in TRUSTED_KINDS:
        return error
    row = updates.rows(conn, [error.location]).get(error.location)
    if row is not None and reader.visible(conn, graph_of([row]), audited=False).objects:
        return error
    return XdsError(error.code, "an association the actor may not see still references an object to remove", "")


def _may_remove(reader: Reader, conn: Connection, row: updates.Row) -> None:
    """Removing metadata or bytes: the record open to the actor, and the author of every
    document the removed object is or links (an association: the documents at its ends)."""
    actor = reader.actor
    if actor.kind in TRUSTED_KINDS:
        return
    patient_pk = row.patient_pk
    if actor.kind in PATIENT_KINDS:
        raise _refuse(deny("a patient masks documents; removing them is for their author"))
    _may_change_record(reader, conn, patient_pk)
    for doc in _documents_touched(conn, [row]):
        _require(modify_decision(actor, doc, "remove"))


# ------------------------------------------------------------------ ITI-86 Remove Documents
@dataclass
class RemovalResult:
    removed: int = 0
    errors: list[XdsError] = field(default_factory=list)


def remove_documents(services: Services, actor: Actor, items: Sequence[tuple[str, str]]) -> RemovalResult:
    """`items`: (repositoryUniqueId, documentUniqueId) pairs. Unknown documents are errors of
    the answer (PartialSuccess); a refused one refuses the whole request; none at all is an
    error (the RemoveDocumentsRequest schema has one DocumentRequest at least)."""
    if not items:
        raise XdsErrors.one(ErrorCode.REPOSITORY_ERROR, "RemoveDocumentsRequest lists no DocumentRequest")
    out = RemovalResult()
    reader = Reader(services, actor)
    with services.registry.write() as conn:
        for repository_id, unique_id in items:
            if repository_id != services.settings.repository_unique_id:
                out.errors.append(XdsError(ErrorCode.UNKNOWN_REPOSITORY_ID,
                                           f"repository {repository_id!r} is not this repository", unique_id))
                continue
            rows = updates.document_rows(conn, unique_id)
            audit.note_objects([unique_id] if rows else [])
            if not rows:
                out.errors.append(XdsError(ErrorCode.DOCUMENT_UNIQUE_ID_ERROR,
                                           f"no document {unique_id!r} in this repository", unique_id))
                continue
            for row in rows:
                _may_remove(reader, conn, row)
            updates.remove_bytes(conn, unique_id, rows, removed_by=actor.id)
            out.removed += 1
    return out


