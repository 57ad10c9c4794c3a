"""The document feed's processing: a read message -> XDS metadata (`partage.cda.to_xds`) ->
the ingest flow, or the lifecycle flow for a deletion.

  initial      -> a SubmissionRequest through the ingest flow (the ITI-41 pipeline: metadata
                  rules, CDA profile, policy, all-or-nothing);
  replacement  -> the same, with an RPLC association to the replaced (current) document;
                  for both, a document already indexed as the current version with the same
                  bytes is not indexed again (a retransmission after a lost ACK), and a uniqueId
                  the registry holds otherwise (replaced, deleted, other bytes) is refused;
  deletion     -> the current entry takes the CI-SIS status Deleted (ITI-57 UpdateAvailabilityStatus).
Refusals are `Refused` (AE / AR and the failed rules) or the flows' `XdsErrors`, which
`problems_of` turns into the acknowledgement's problems.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy import Connection

from ..access.actor import CONNECTOR, SYSTEM, Actor
from ..access.decisions import SUBMITTER_FLAGS, modify_decision
from ..cda.gate import entry_in_context, rule_in_context
from ..cda.header import read_header
from ..cda.to_xds import MappingError, XdsMetadata, membership, to_xds
from ..ingest import IngestService
from ..lifecycle import update_document_set
from ..metadata import kinds
from ..metadata.errors import ErrorCode, XdsError, XdsErrors
from ..metadata.model import (
    Association,
    AssociationType,
    AvailabilityStatus,
    DocumentContent,
    DocumentEntry,
    SubmissionRequest,
    SubmissionSet,
)
from ..query import QueryService
from ..services import Services
from .document_message import DELETE, REPLACE, DocumentObx, FeedMessage
from .outcome import (
    ACCEPTED,
    APPLICATION_ERROR,
    ERROR,
    NO_INS,
    REJECTED,
    REQUIRED_FIELD_MISSING,
    UNAUTHORISED,
    UNKNOWN_PATIENT,
    WRONG_VERSION,
    DocumentOutcome,
    Problem,
    Refused,
    refused,
)
from .retransmissions import Memory

DOCUMENT_FEED_ACTOR = Actor(id="hl7-document-feed", name="HL7 v2 document feed (MDM/ORU)", kind=SYSTEM,
                            auth_method="internal")



def process(services: Services, message: FeedMessage, memory: Memory | None = None) -> DocumentOutcome:
    """Index, replace or delete the message's documents; the outcome says which uniqueIds. The
    answer is kept by `memory` in the registering or updating transaction (a message that
    writes nothing has it kept by the router)."""
    outcome = DocumentOutcome(ACCEPTED, "", message.control_id, processing=message.processing)
    actor = _actor(message)
    mapped = [_map(services, message, doc, n) for n, doc in enumerate(message.documents, start=1)]
    outcome.unique_ids = [meta.entry.unique_id for meta in mapped]

    def answered(conn: Connection) -> None:   # the outcome's text is final when the transaction runs
        if memory is not None:
            memory.keep(conn, outcome)

    if message.flags.get("DESTDMP") is False:
        outcome.text = "DESTDMP=N: the document is not for the shared record; nothing indexed"
    elif message.processing == DELETE:
        outcome.text = f"deleted {', '.join(outcome.unique_ids)}"
        _delete(services, actor, mapped[0].submission_set, mapped, answered)
    else:
        fresh, again = _not_yet_indexed(services, actor, mapped, message.documents)
        outcome.text = _indexed(fresh, again)
        if fresh:
            try:
                _ingest(services, actor, message, _request(services, actor, message, fresh), answered)
            except XdsErrors:   # the same message on another connection may have just indexed them
                if memory is not None:
                    memory.kept = False   # with the registration, rolled back
                fresh, again = _not_yet_indexed(services, actor, mapped, message.documents)
                if fresh:
                    raise
                outcome.text = _indexed(fresh, again)
    return outcome


def _indexed(fresh: list[tuple[XdsMetadata, DocumentObx]], again: list[str]) -> str:
    """MSA-3 of an initial transmission or replacement: what was indexed, what already was."""
    return "; ".join(filter(None, [
        f"indexed {', '.join(meta.entry.unique_id for meta, _doc in fresh)}" if fresh else "",
        f"{', '.join(again)} already indexed (retransmission)" if again else ""]))


def document_erls(documents: Sequence[DocumentObx]) -> dict[str, str]:
    """Each document's entry id in the submission (`_map` names them) -> the ERL of its OBX-5."""
    return {_entry_id(n): _where(doc) for n, doc in enumerate(documents, start=1)} | \
        {f"OBX-{doc.set_id}": _where(doc) for doc in documents}


def problems_of(errors: list[XdsError], documents: Mapping[str, str] | None = None) -> tuple[str, list[Problem]]:
    """XdsErrors of the flows -> the acknowledgement code and its problems: a CDA profile rule
    by its id (table CISIS-CDA) and the OBX of its document, an unknown patient (AR, IG 902), a
    policy refusal (AR, IG 901), any other XDS error by its code (table XDS)."""
    code, problems = ERROR, []
    for e in errors:
        if e.warning:
            continue
        cda_rule = rule_in_context(e.context)   # how the CDA gate names a failed profile rule
        if cda_rule:
            problems.append(Problem(APPLICATION_ERROR, cda_rule[0], cda_rule[1], e.location, "CISIS-CDA",
                                    (documents or {}).get(entry_in_context(e.context), "")))
        elif e.code == ErrorCode.UNKNOWN_PATIENT_ID:
            code = REJECTED
            problems.append(Problem(APPLICATION_ERROR, UNKNOWN_PATIENT, e.context, "PID^1^3"))
        elif e.code == ErrorCode.POLICY_VIOLATION:
            code = REJECTED
            problems.append(Problem(APPLICATION_ERROR, UNAUTHORISED, e.context))
        else:
            problems.append(Problem(APPLICATION_ERROR, str(e.code), e.context, e.location, "XDS"))
    return code, problems


def _content(data: bytes) -> DocumentContent:
    return DocumentContent(file=io.BytesIO(data), size=len(data), sha1=hashlib.sha1(data).hexdigest(),
                           sha256=hashlib.sha256(data).hexdigest(), content_type="text/xml")


def _actor(message: FeedMessage) -> Actor:
    """The feed's system actor, with the PRT-8.10 structure and the sending application."""
    return Actor(id=DOCUMENT_FEED_ACTOR.id, name=DOCUMENT_FEED_ACTOR.name, kind=SYSTEM,
                 structure=message.sender_structure, software=message.context.source_id,
                 auth_method="internal", reason=f"sender {message.sender_id}" if message.sender_id else "")


def _current_entry(services: Services, actor: Actor, unique_id: str) -> DocumentEntry | None:
    """The Approved entry with this uniqueId, if any."""
    found = QueryService(services, actor).get_objects(kinds.KIND_DOCUMENT, unique_ids=[unique_id]).objects
    current = [o for o in found if isinstance(o, DocumentEntry)
               and o.availability_status in (None, AvailabilityStatus.APPROVED)]
    return current[0] if current else None


def _map(services: Services, message: FeedMessage, doc: DocumentObx, n: int) -> XdsMetadata:
    """The document's XDS metadata (CDA header + message); AE naming the rule when impossible."""
    where = _where(doc)
    try:
        meta = to_xds(read_header(doc.data), message.context, entry_id=_entry_id(n),
                      submission_id="SubmissionSet01")
    except MappingError as exc:
        code = NO_INS if exc.rule == "hl7-ins-missing" else exc.rule
        raise _with_findings(services, doc, Problem(APPLICATION_ERROR, code, exc.message, where)) from exc
    except Exception as exc:   # not XML, not a CDA, refused by the hardened parser
        raise _with_findings(services, doc, Problem(
            APPLICATION_ERROR, "hl7-document-not-cda",
            f"OBX-5 does not hold a readable CDA R2 document: {exc}", where)) from exc
    if message.txa_unique_id and message.txa_unique_id != meta.entry.unique_id:
        raise refused(ERROR, APPLICATION_ERROR, "hl7-txa12-mismatch", f"TXA-12 {message.txa_unique_id} is not "
                      f"the CDA ClinicalDocument/id {meta.entry.unique_id}", "TXA^1^12")
    return meta


def _where(doc: DocumentObx) -> str:
    return f"OBX^{doc.set_id}^5"


def _entry_id(n: int) -> str:
    """The submission's id of the message's n-th document."""
    return f"Document{n:02d}"


def _profile_errors(services: Services, doc: DocumentObx) -> list[XdsError]:
    """The ingest flow's per-document checks (the CDA profile) on a document alone."""
    entry = DocumentEntry(entry_uuid=f"OBX-{doc.set_id}")
    errors: list[XdsError] = []
    for check in services.document_checks:
        errors += check(entry, _content(doc.data), ErrorCode.REPOSITORY_METADATA)
    return errors


def _with_findings(services: Services, doc: DocumentObx, problem: Problem) -> Refused:
    """A document whose metadata cannot be derived: the CDA profile's findings say why."""
    _code, found = problems_of(_profile_errors(services, doc), document_erls([doc]))
    return Refused(ERROR, *found, problem)


def _not_yet_indexed(services: Services, actor: Actor, mapped: list[XdsMetadata], documents: list[DocumentObx]
                     ) -> tuple[list[tuple[XdsMetadata, DocumentObx]], list[str]]:
    """The documents to index, and the uniqueIds of those already indexed as the current version
    with the same bytes (the sender did not get its ACK and sent the message again, HL7 v2.5
    2.9.2: each document is indexed once). The registry refuses the others whose uniqueId it
    holds (`SubmissionRequest.new_documents`: a version since replaced or deleted never comes back)."""
    fresh: list[tuple[XdsMetadata, DocumentObx]] = []
    again: list[str] = []
    for meta, doc in zip(mapped, documents, strict=True):
        found = [o for o in QueryService(services, actor).get_objects(
            kinds.KIND_DOCUMENT, unique_ids=[meta.entry.unique_id]).objects if isinstance(o, DocumentEntry)]
        if found and all(o.availability_status in (None, AvailabilityStatus.APPROVED)
                         and o.hash == hashlib.sha1(doc.data).hexdigest() for o in found):
            again.append(meta.entry.unique_id)
        else:
            fresh.append((meta, doc))
    return fresh, again


def _request(services: Services, actor: Actor, message: FeedMessage,
             documents: list[tuple[XdsMetadata, DocumentObx]]) -> SubmissionRequest:
    """One submission set holding the documents (and their replacements)."""
    ss = documents[0][0].submission_set
    request = SubmissionRequest(submission_set=ss, new_documents=True)
    for n, (meta, doc) in enumerate(documents, start=1):
        entry = meta.entry
        entry.patient_id = ss.patient_id
        request.documents.append(entry)
        request.contents[entry.entry_uuid] = _content(doc.data)
        request.associations.append(membership(ss, entry, f"Association{n:02d}"))
        if message.processing == REPLACE:
            request.associations.append(_replacement(services, actor, message, meta, doc, n))
    return request


def _replacement(services: Services, actor: Actor, message: FeedMessage, meta: XdsMetadata, doc: DocumentObx,
                 n: int) -> Association:
    """RPLC to the replaced document: the CDA's relatedDocument (IG rule), else TXA-13; it must
    be the current version (else AE 900)."""
    parents = meta.replaces or ([message.txa_parent_id] if message.txa_parent_id else [])
    if not parents:
        raise refused(ERROR, REQUIRED_FIELD_MISSING, "hl7-replaced-document-missing",
                      "a replacement names the replaced document in the CDA relatedDocument[@typeCode='RPLC'] "
                      "(or TXA-13)", _where(doc))
    prior = _current_entry(services, actor, parents[0])
    if prior is None:
        raise refused(ERROR, APPLICATION_ERROR, WRONG_VERSION, f"the replaced document {parents[0]} is not a "
                      "current document of the registry", _where(doc))
    _require_author(meta.entry, prior, "replace", _where(doc))
    return Association(entry_uuid=f"Replacement{n:02d}", association_type=AssociationType.RPLC,
                       source_uuid=meta.entry.entry_uuid, target_uuid=prior.entry_uuid)


def _require_author(document: DocumentEntry, target: DocumentEntry, action: str, where: str) -> None:
    """Authors alone change documents (the access policy's rule, `modify_decision`): the structure
    that authored the message's document (its author institutions, XON.10) must be one that
    authored the document it replaces or deletes; else AR 901 (the IG's "not authorised")."""
    structures = dict.fromkeys(xon.organization_identifier or xon.id_number
                               for author in document.authors for xon in author.institutions)
    decisions = [modify_decision(Actor(id=DOCUMENT_FEED_ACTOR.id, kind=CONNECTOR, structure=structure), target,
                                 action) for structure in structures if structure]
    if not any(decisions):
        raise refused(REJECTED, APPLICATION_ERROR, UNAUTHORISED, f"document {target.unique_id}: only a structure "
                      f"that authored it may {action} it, and the message's document names none of them", where)


def _ingest(services: Services, actor: Actor, message: FeedMessage, request: SubmissionRequest,
            answered: Callable[[Connection], None]) -> None:
    """The ingest flow (`answered` runs in its registering transaction); when its metadata rules
    refuse, the CDA profile's findings are named too (the metadata came from the header, and the
    rules run before the profile)."""
    try:
        # MODIF_CONF_CODE=Y: the message's MetaDMPMSS flags restate a replacement's confidentiality;
        # otherwise (N, absent) the replaced document's flags stay (docs/hl7-feed.md)
        IngestService(services, actor).provide_and_register(
            request, in_transaction=answered,
            replacement_keeps=frozenset() if message.flags.get("MODIF_CONF_CODE") else SUBMITTER_FLAGS)
    except XdsErrors as exc:
        if any(rule_in_context(e.context) for e in exc.errors) or not any(
                e.code in (ErrorCode.REPOSITORY_METADATA, ErrorCode.REGISTRY_METADATA) for e in exc.errors):
            raise
        extra = [e for doc in message.documents for e in _profile_errors(services, doc)]
        raise XdsErrors([*extra, *exc.errors]) from exc


def _delete(services: Services, actor: Actor, ss: SubmissionSet, mapped: list[XdsMetadata],
            answered: Callable[[Connection], None]) -> None:
    """CI-SIS deletion: the current entry takes the Deleted status (the update flow checks
    that it belongs to the PID-3 patient; `answered` runs in its transaction)."""
    request = SubmissionRequest(submission_set=ss)
    for n, meta in enumerate(mapped, start=1):
        prior = _current_entry(services, actor, meta.entry.unique_id)
        if prior is None:
            raise refused(ERROR, APPLICATION_ERROR, WRONG_VERSION, f"document {meta.entry.unique_id} is not a "
                          "current document of the registry; nothing to delete", "OBX^1^5")
        _require_author(meta.entry, prior, "delete", "OBX^1^5")
        request.associations.append(Association(
            entry_uuid=f"Deletion{n:02d}", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS,
            source_uuid=ss.entry_uuid, target_uuid=prior.entry_uuid,
            original_status=AvailabilityStatus.APPROVED.value, new_status=AvailabilityStatus.DELETED.value))
    update_document_set(services, actor, request, in_transaction=answered)
