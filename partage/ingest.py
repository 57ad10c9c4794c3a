"""The ingest flow: ITI-41, ITI-42, ITI-65 and the HL7 feed are doors to this pipeline.

parse (door) -> metadata rules -> documents (hash, size, CDA profile) -> policy
-> ids -> repository.put -> registry.register (one transaction, with the notifications it
causes written to the outbox) -> audit.
Nothing is registered unless everything passes; blobs written for a refused
submission are unreferenced and removed by `partage fsck --repair`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection

from .access import audit, signatures
from .access.actor import Actor
from .access.decisions import (
    PATIENT_MASK,
    TRUSTED_KINDS,
    Decision,
    modify_decision,
    replacement_codes,
    submit_decision,
)
from .access.gate import Graph
from .clinical import index as clinical_index
from .metadata import kinds
from .metadata.errors import ErrorCode, XdsError, XdsErrors
from .metadata.ids import assign_uuids
from .metadata.model import REPLACING_TYPES, AssociationType, DocumentEntry, SubmissionRequest
from .metadata.validate import ITI_41, ITI_42, Transaction, unpaired_contents, validate_submission
from .query.view import Reader
from .registry import outbox
from .registry import queries as Q
from .registry.indexing import object_from_row
from .registry.register import register
from .services import Services

log = logging.getLogger("partage.ingest")

# A per-document check run after the metadata rules (the CDA profile plugs in here):
# (entry, content or None, the transaction's metadata error code) -> errors and warnings.
DocumentCheck = Callable[[DocumentEntry, object, str], list[XdsError]]


@dataclass
class IngestResult:
    assigned_ids: dict[str, str] = field(default_factory=dict)   # symbolic -> urn:uuid
    warnings: list[XdsError] = field(default_factory=list)


class IngestService:
    def __init__(self, services: Services, actor: Actor,
                 document_checks: list[DocumentCheck] | None = None) -> None:
        self.services = services
        self.actor = actor
        self.document_checks = document_checks if document_checks is not None else services.document_checks

    def provide_and_register(self, request: SubmissionRequest, *,
                             in_transaction: Callable[[Connection], None] | None = None,
                             replacement_keeps: frozenset[str] = PATIENT_MASK) -> IngestResult:
        """ITI-41 (and ITI-65): documents with their bytes, stored here. `in_transaction`: what
        the door writes with the registration, first in its transaction (the HL7 feed's answer
        to the message, `partage.hl7.retransmissions`): both commit, or neither.
        `replacement_keeps`: the confidentiality codes a replacement keeps from the document it
        replaces (`decisions.replacement_codes`): the patient's mask, none when the submission says
        its replacements' confidentiality anew (the HL7 feed's MODIF_CONF_CODE=Y), every
        MetaDMPMSS flag when it says it changes none (MODIF_CONF_CODE=N or absent)."""
        return self._submit(request, ITI_41, with_contents=True, in_transaction=in_transaction,
                            replacement_keeps=replacement_keeps)

    def register(self, request: SubmissionRequest) -> IngestResult:
        """ITI-42: metadata of documents held by a repository (maybe another one)."""
        return self._submit(request, ITI_42, with_contents=False)

    def _submit(self, request: SubmissionRequest, tx: Transaction, *, with_contents: bool,
                in_transaction: Callable[[Connection], None] | None = None,
                replacement_keeps: frozenset[str] = PATIENT_MASK) -> IngestResult:
        settings = self.services.settings
        if len(request.documents) > settings.max_documents_per_submission:
            raise XdsErrors.one(ErrorCode.REGISTRY_ERROR,
                                f"{len(request.documents)} documents in one submission; the limit is "
                                f"{settings.max_documents_per_submission}")
        errors = validate_submission(request, self.services.domain, tx)
        if with_contents:
            errors += self._attach_contents(request)
        if errors:
            raise XdsErrors(errors)
        warnings: list[XdsError] = []
        for doc in request.documents:
            content = request.contents.get(doc.entry_uuid)
            for check in self.document_checks:
                for found in check(doc, content, tx.metadata_error):
                    (warnings if found.warning else errors).append(found)
        if with_contents:
            errors += signatures.check_submission(settings, self.actor, request)
        if errors:
            raise XdsErrors(errors)
        self._check_access(request)
        assigned = assign_uuids(request)
        addresses = {}
        for entry_uuid, content in request.contents.items():
            content.file.seek(0)
            stored = self.services.blobs.put(content.file)
            addresses[entry_uuid] = stored.address
        indexed = clinical_index.prepare(request)   # facts and text, read outside the write lock

        def write(conn: Connection) -> None:
            if in_transaction is not None:
                in_transaction(conn)
            # What subscribers and the patient are owed, in this transaction: written here, or
            # rolled back with the registration (partage.notify delivers it after the commit).
            if replacement_keeps:
                _keep_masking(conn, request, replacement_keeps)
            # a relation or membership naming a registered object hidden from the actor
            # answers as one naming an unknown id (its existence, its status untold)
            hidden = Reader(self.services, self.actor).hidden(conn, request.external_references())
            patient_pk = register(self.services.registry, conn, request, addresses, hidden=hidden)
            outbox.enqueue_registration(conn, request, patient_documents=settings.notify_patient_documents,
                                        patient_pk=patient_pk)
            indexed.store(conn, patient_pk)

        self.services.registry.writing(write)   # run again after a shard's serialization conflict
        ss = request.submission_set
        assert ss is not None   # validate_submission refuses a submission without one
        log.info("registered submission set %s (%d documents) for %s",
                 ss.unique_id, len(request.documents), ss.patient_id)
        return IngestResult(assigned_ids=assigned, warnings=warnings)

    def _check_access(self, request: SubmissionRequest) -> None:
        """May the actor file these documents, and change the documents they replace or
        transform (authors alone change documents: the target's authorship is checked)?"""
        ss = request.submission_set
        assert ss is not None
        reader = Reader(self.services, self.actor)
        with self.services.registry.read() as conn:
            pk = self.services.registry.patient_pk(conn, ss.patient_id)
            if ss.patient_id is not None:
                audit.note_patient(ss.patient_id.format(), pk)
            audit.note_objects([d.unique_id for d in request.documents])
            if self.actor.kind in TRUSTED_KINDS:
                return
            view = reader.view(conn, Graph(), [pk] if pk is not None else [])
            _require(submit_decision(self.actor, view.record(pk), request.documents, view.table,
                                     own_patient=view.own(pk)))
            for doc, action in _targets(conn, request):
                _require(modify_decision(self.actor, doc, action))

    def _attach_contents(self, request: SubmissionRequest) -> list[XdsError]:
        """ITI-41 repository rules: every entry has its bytes and the digests agree."""
        errors = unpaired_contents(request)
        repository_id = self.services.settings.repository_unique_id
        for doc in request.documents:
            content = request.contents.get(doc.entry_uuid)
            if content is None:
                continue
            # ITI TF-2b 3.41.4.1.3: hash or size in the metadata that do not match the
            # document are a repository metadata error (XDSNonIdenticalHash/Size are the
            # registry's, for a re-registered uniqueId).
            if doc.hash and doc.hash.lower() != content.sha1:
                errors.append(XdsError(ErrorCode.REPOSITORY_METADATA,
                                       f"DocumentEntry {doc.entry_uuid} hash {doc.hash} differs from the "
                                       f"document's SHA-1 {content.sha1}", doc.entry_uuid))
            if doc.size is not None and doc.size != content.size:
                errors.append(XdsError(ErrorCode.REPOSITORY_METADATA,
                                       f"DocumentEntry {doc.entry_uuid} size {doc.size} differs from the "
                                       f"document's size {content.size}", doc.entry_uuid))
            if doc.repository_unique_id and doc.repository_unique_id != repository_id:
                errors.append(XdsError(ErrorCode.REPOSITORY_METADATA,
                                       f"repositoryUniqueId {doc.repository_unique_id} is not this "
                                       f"repository ({repository_id})", doc.entry_uuid))
            doc.hash, doc.size, doc.repository_unique_id = content.sha1, content.size, repository_id
        return errors


CHANGING = {AssociationType.RPLC: "replace", AssociationType.XFRM_RPLC: "replace",
            AssociationType.XFRM: "transform"}


def _targets(conn: Connection, request: SubmissionRequest) -> list[tuple[DocumentEntry, str]]:
    """Registered documents the submission replaces or transforms, with the action's name."""
    in_request = request.by_id()
    wanted = {a.target_uuid: CHANGING[AssociationType(a.association_type)] for a in request.associations
              if a.association_type in CHANGING and a.target_uuid not in in_request}
    if not wanted:
        return []
    out = []
    for row in Q.by_ids(conn, kinds.KIND_DOCUMENT, entry_uuids=sorted(wanted)):
        doc = object_from_row(row.body)
        if isinstance(doc, DocumentEntry):
            out.append((doc, wanted[row.entry_uuid]))
    return out


def _keep_masking(conn: Connection, request: SubmissionRequest, kept: frozenset[str]) -> None:
    """A replacement (RPLC, XFRM_RPLC) keeps the `kept` confidentiality codes (the patient's mask)
    of the document it replaces (`decisions.replacement_codes`), read in the registration's
    transaction."""
    replaced = {a.source_uuid: a.target_uuid for a in request.associations
                if a.association_type in REPLACING_TYPES}
    if not replaced:
        return
    targets = {row.entry_uuid: object_from_row(row.body)
               for row in Q.by_ids(conn, kinds.KIND_DOCUMENT, entry_uuids=sorted(set(replaced.values())))}
    for doc in request.documents:
        target = targets.get(replaced.get(doc.entry_uuid, ""))
        if isinstance(target, DocumentEntry):
            doc.confidentiality_codes = replacement_codes(doc, target, kept)


def _require(decision: Decision) -> None:
    if not decision:
        audit.note_denied(decision.reason)
        raise XdsErrors.one(ErrorCode.POLICY_VIOLATION, decision.reason)
