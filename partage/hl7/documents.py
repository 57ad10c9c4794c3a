"""Hospital document feed: CDA R2 documents in HL7 v2 MDM / ORU messages (ANS IG
"transmission de documents CDA-R2 en HL7v2", CISIS_CDA_HL7_V2).

What arrives (the IG's profiles):
  MDM^T02 (v2.6)  initial transmission   ORC-1 NW, OBX-11 F
  MDM^T10         replacement            ORC-1 RO, OBX-11 C, TXA-13 = the replaced document
  MDM^T04         deletion               ORC-1 CA, OBX-11 D
  ORU^R01 (v2.5)  the same three, told apart by ORC-1 / OBX-11 only
The document is the base64 CDA in an OBX of type ED (OBX-5 ^TEXT^XML^Base64^...); the
OBX groups that follow carry the MetaDMPMSS flags (MASQUE_PS, INVISIBLE_PATIENT,
INVISIBLE_REP_LEGAUX, DESTDMP, ...); PRT "SB^Send by" names the sender; PID/PV1 the
patient and the encounter.

What happens: the XDS metadata are derived from the CDA header and the message
(`partage.cda.to_xds`), then
  F -> the ingest flow (same pipeline as ITI-41: CDA profile, policy, all-or-nothing);
  C -> the same, with an RPLC association to the replaced document (which is deprecated);
  D -> the document's entry takes the CI-SIS status Deleted (ITI-57 UpdateAvailabilityStatus).
The answer is the IG's acknowledgement (ACK^<trigger>^ACK, version of the message): MSA-1
AA when done; AE when the message or its document is wrong (one ERR per failed rule:
ERR-3 207 Application error, ERR-5 the rule id, ERR-8 its message); AR when it is refused
for a circumstance that a later retransmission may clear (unknown patient: IG code 902).

The ER7 text is split here rather than by hl7apy: the profiles pre-adopt the v2.9 PRT
segment, which hl7apy's 2.5 / 2.6 structures do not know, and OBX-5 holds megabytes
of base64 that a generic parser would copy field by field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..access.actor import SYSTEM, Actor
from ..cda.gate import rule_in_context
from ..cda.header import read_header
from ..cda.to_xds import (
    MappingError,
    MessageContext,
    XdsMetadata,
    membership,
    source_id_for,
    to_xds,
)
from ..ingest import IngestService
from ..metadata.datatypes import CX, HD, XCN, XON, unescape_hl7
from ..metadata.errors import ErrorCode, XdsError, XdsErrors
from ..metadata.model import (
    Association,
    AssociationType,
    AvailabilityStatus,
    DocumentContent,
    DocumentEntry,
    SubmissionRequest,
)
from ..services import Services
from .pif import FeedOutcome

log = logging.getLogger("partage.hl7.documents")

META_SYSTEM = "MetaDMPMSS"
PROFILE_ID = "CISIS_CDA_HL7_V2"

# (message type, trigger) -> the processing it may carry; MDM says it in the trigger too.
INITIAL, REPLACE, DELETE = "initial", "replace", "delete"
MDM_TRIGGERS = {"T02": INITIAL, "T10": REPLACE, "T04": DELETE}
ORDER_CONTROL = {"NW": INITIAL, "RO": REPLACE, "CA": DELETE}
RESULT_STATUS = {"F": INITIAL, "C": REPLACE, "D": DELETE}

# HL7 table 0357 (messageErrorCondition) codes the acknowledgement uses.
REQUIRED_FIELD_MISSING, UNSUPPORTED_MESSAGE, UNSUPPORTED_EVENT, APPLICATION_ERROR = "101", "200", "201", "207"
SEGMENT_SEQUENCE, UNSUPPORTED_VERSION = "100", "203"
ERROR_TEXT = {"100": "Segment sequence error", "101": "Required field missing", "102": "Data type error",
              "200": "Unsupported message type", "201": "Unsupported event code", "203": "Unsupported version",
              "207": "Application error"}
# The IG's applicationErrorCode table (error-codes.md).
WRONG_VERSION, UNAUTHORISED, UNKNOWN_PATIENT, NO_INS, OTHER = "900", "901", "902", "903", "906"

DOCUMENT_FEED_ACTOR = Actor(id="hl7-document-feed", name="HL7 v2 document feed (MDM/ORU)", kind=SYSTEM,
                            auth_method="internal")


@dataclass
class Problem:
    """One ERR segment: HL7 error condition, application error (rule id), message, where."""

    condition: str
    rule: str
    message: str
    location: str = ""      # ERL, e.g. OBX^1^5
    table: str = "PARTAGE"  # name of the coding system of the application error code


@dataclass
class DocumentOutcome(FeedOutcome):
    problems: list[Problem] = field(default_factory=list)
    processing: str = ""
    unique_ids: list[str] = field(default_factory=list)


# --- ER7 -------------------------------------------------------------------------------------

@dataclass
class Segment:
    name: str
    fields: list[str]        # fields[n] is SEG-n (MSH: MSH-1 is the field separator)

    def get(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""


@dataclass
class Er7:
    segments: list[Segment]
    component: str = "^"
    repetition: str = "~"
    subcomponent: str = "&"

    def first(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def comps(self, value: str) -> list[str]:
        return value.split(self.component)

    def comp(self, value: str, n: int) -> str:
        parts = value.split(self.component)
        return parts[n - 1] if n - 1 < len(parts) else ""

    def reps(self, value: str) -> list[str]:
        return [r for r in value.split(self.repetition) if r]


def parse_er7(text: str) -> Er7:
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    if not text.startswith("MSH") or len(text) < 8:
        raise ValueError("the message does not start with an MSH segment")
    sep = text[3]
    encoding = text[4:8]
    segments = []
    for raw in text.split("\r"):
        if not raw.strip():
            continue
        parts = raw.split(sep)
        name = parts[0].strip()
        if name == "MSH":
            fields = ["MSH", sep, *parts[1:]]
        else:
            fields = [name, *parts[1:]]
        segments.append(Segment(name, fields))
    return Er7(segments, component=encoding[0], repetition=encoding[1], subcomponent=encoding[3])


def _text(value: str) -> str:
    return unescape_hl7(value, strict=False).strip()


# --- the message, read ------------------------------------------------------------------------

@dataclass
class DocumentObx:
    set_id: str
    type_code: str
    status: str                 # OBX-11
    data: bytes
    segment_index: int


@dataclass
class FeedMessage:
    message_type: str
    trigger: str
    control_id: str
    processing: str
    context: MessageContext
    documents: list[DocumentObx]
    flags: dict[str, bool]
    txa_unique_id: str = ""
    txa_parent_id: str = ""
    sender_id: str = ""
    sender_structure: str = ""


class Refused(Exception):
    def __init__(self, code: str, *problems: Problem) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.code = code
        self.problems = list(problems)


def _ae(condition: str, rule: str, message: str, location: str = "") -> Refused:
    return Refused("AE", Problem(condition, rule, message, location))


def _hd_oid(er7: Er7, hd: str) -> str:
    parts = hd.split(er7.subcomponent)
    return parts[1].strip() if len(parts) > 1 else ""


def _patient_ids(er7: Er7, pid: Segment) -> list[CX]:
    out = []
    for rep in er7.reps(pid.get(3)):
        comps = er7.comps(rep)
        number = _text(comps[0]) if comps else ""
        oid = _hd_oid(er7, comps[3]) if len(comps) > 3 else ""
        if number and oid:
            out.append(CX(number, HD.iso(oid)))
    return out


def _sender(er7: Er7, prt: Segment) -> tuple[XCN | None, XON | None, str, str]:
    """(XCN, XON, person id, structure id) of a PRT "SB^Send by" segment, in XDS form."""
    person = er7.comps(prt.get(5))
    xcn: XCN | None = None
    person_id = ""
    if any(p.strip() for p in person):
        def c(n: int) -> str:
            return _text(person[n - 1]) if n - 1 < len(person) else ""
        person_id = c(1)
        oid = _hd_oid(er7, person[8]) if len(person) > 8 else ""
        typed = bool(c(13) and oid)
        xcn = XCN(id_number=person_id, family_name=c(2), given_name=c(3),
                  assigning_authority=HD.iso(oid) if oid else HD(),
                  name_type_code=(c(10) or "D") if typed else "",
                  identifier_type_code=c(13) if typed else "")
    org = er7.comps(prt.get(8))
    xon: XON | None = None
    structure = ""
    if any(o.strip() for o in org):
        def o(n: int) -> str:
            return _text(org[n - 1]) if n - 1 < len(org) else ""
        oid = _hd_oid(er7, org[5]) if len(org) > 5 else ""
        structure = o(10)
        if o(1):
            xon = XON(o(1)) if not (oid and structure) else XON(
                o(1), assigning_authority=HD.iso(oid), id_type=o(7), organization_identifier=structure)
    return xcn, xon, person_id, structure


def _ei(er7: Er7, value: str) -> str:
    """TXA-12 / TXA-13 (EI) -> XDS uniqueId: root^extension, or the OID alone (IG rule)."""
    comps = [_text(c) for c in er7.comps(value)]
    if len(comps) > 2 and comps[2]:
        return f"{comps[2]}^{comps[0]}"
    return comps[0] if comps else ""


def read_message(text: str) -> FeedMessage:
    try:
        er7 = parse_er7(text)
    except ValueError as exc:
        raise Refused("AR", Problem(SEGMENT_SEQUENCE, "hl7-not-parsable", str(exc), "MSH")) from exc
    msh = er7.first("MSH")
    message_type = er7.comp(msh.get(9), 1)
    trigger = er7.comp(msh.get(9), 2)
    control_id = msh.get(10)
    if message_type not in ("MDM", "ORU"):
        raise Refused("AR", Problem(UNSUPPORTED_MESSAGE, "hl7-message-type",
                                    f"message type {message_type} is not a document feed message", "MSH^1^9"))
    if (message_type == "MDM" and trigger not in MDM_TRIGGERS) or (message_type == "ORU" and trigger != "R01"):
        raise Refused("AR", Problem(UNSUPPORTED_EVENT, "hl7-trigger",
                                    f"{message_type}^{trigger} is not a trigger of the CISIS_CDA_HL7_V2 profile "
                                    "(MDM^T02/T10/T04, ORU^R01)", "MSH^1^9"))
    version = er7.comp(msh.get(12), 1).strip()
    try:
        too_old = tuple(int(x) for x in version.split(".")[:2]) < (2, 5)
    except ValueError:
        too_old = True
    if too_old:
        raise _ae(UNSUPPORTED_VERSION, "hl7-version", f"HL7 version {version or '(empty)'} is not supported: the "
                  "profile is v2.6 for MDM and v2.5 for ORU", "MSH^1^12")
    pid = er7.first("PID")
    if pid is None:
        raise _ae(SEGMENT_SEQUENCE, "hl7-pid-missing", "the PID segment is missing", "PID")
    patient_ids = _patient_ids(er7, pid)
    if not patient_ids:
        raise _ae(REQUIRED_FIELD_MISSING, "hl7-pid3-missing",
                  "PID-3 has no identifier with an ISO assigning authority", "PID^1^3")
    pv1 = er7.first("PV1")
    orc = er7.first("ORC")
    if orc is None:
        raise _ae(SEGMENT_SEQUENCE, "hl7-orc-missing", "the ORC segment (processing request) is missing", "ORC")
    order_control = er7.comp(orc.get(1), 1).strip()
    if order_control not in ORDER_CONTROL:
        raise _ae(APPLICATION_ERROR, "hl7-orc1", f"ORC-1 {order_control or '(empty)'} is none of NW, RO, CA",
                  "ORC^1^1")
    processing = ORDER_CONTROL[order_control]

    documents: list[DocumentObx] = []
    flags: dict[str, bool] = {}
    sender: tuple[XCN | None, XON | None, str, str] = (None, None, "", "")
    in_document_group = False
    for index, seg in enumerate(er7.segments):
        if seg.name == "OBX":
            ident = er7.comps(seg.get(3))
            code = _text(ident[0]) if ident else ""
            system = _text(ident[2]) if len(ident) > 2 else ""
            value_type = seg.get(2).strip()
            if system == META_SYSTEM or code in _META_CODES:
                in_document_group = False
                if value_type in ("CE", "CWE"):
                    flags[code] = er7.comp(seg.get(5), 1).strip().upper() == "Y"
                continue
            if value_type != "ED":
                in_document_group = False
                continue
            in_document_group = True
            value = er7.comps(seg.get(5))
            encoding = value[3].strip().lower() if len(value) > 3 else ""
            where = f"OBX^{seg.get(1) or len(documents) + 1}^5"
            if encoding != "base64":
                raise _ae(APPLICATION_ERROR, "hl7-obx5-encoding",
                          f"OBX-5.4 is {encoding or '(empty)'}; the document must be Base64", where)
            payload = "".join(value[4].split()) if len(value) > 4 else ""
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _ae(APPLICATION_ERROR, "hl7-obx5-base64", f"OBX-5.5 is not valid base64: {exc}", where) from exc
            if not data:
                raise _ae(REQUIRED_FIELD_MISSING, "hl7-obx5-empty", "OBX-5.5 holds no document", where)
            documents.append(DocumentObx(seg.get(1), code, seg.get(11).strip(), data, index))
        elif seg.name == "PRT" and in_document_group and er7.comp(seg.get(4), 1).strip() == "SB":
            sender = _sender(er7, seg)
    if not documents:
        raise _ae(REQUIRED_FIELD_MISSING, "hl7-document-missing",
                  "no OBX of type ED carries a document (OBX-5 ^TEXT^XML^Base64^...)", "OBX")
    if message_type == "MDM" and len(documents) > 1:
        raise _ae(SEGMENT_SEQUENCE, "hl7-mdm-one-document", "an MDM message carries exactly one document", "OBX")
    for doc in documents:
        status = RESULT_STATUS.get(doc.status)
        if status != processing:
            raise _ae(APPLICATION_ERROR, "hl7-processing-inconsistent",
                      f"OBX-11 {doc.status or '(empty)'} does not agree with ORC-1 {order_control}",
                      f"OBX^{doc.set_id}^11")
    if message_type == "MDM" and MDM_TRIGGERS[trigger] != processing:
        raise _ae(APPLICATION_ERROR, "hl7-processing-inconsistent",
                  f"ORC-1 {order_control} does not agree with the trigger {trigger}", "ORC^1^1")
    txa = er7.first("TXA")
    if message_type == "MDM" and txa is None:
        raise _ae(SEGMENT_SEQUENCE, "hl7-txa-missing", "an MDM message needs its TXA segment", "TXA")
    msh3, msh4 = er7.comp(msh.get(3), 1), er7.comp(msh.get(4), 1)
    ctx = MessageContext(patient_ids=patient_ids, patient_class=pv1.get(2).strip() if pv1 else "",
                         sender_person=sender[0], sender_institution=sender[1], flags=flags,
                         source_id=source_id_for(f"{msh3}|{msh4}"))
    return FeedMessage(message_type, trigger, control_id, processing, ctx, documents, flags,
                       txa_unique_id=_ei(er7, txa.get(12)) if txa else "",
                       txa_parent_id=_ei(er7, txa.get(13)) if txa else "",
                       sender_id=sender[2], sender_structure=sender[3])


_META_CODES = frozenset({"MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REP_LEGAUX", "CONNEXION_SECRETE",
                         "MODIF_CONF_CODE", "DESTDMP", "DESTMSSANTEPS", "DESTMSSANTEPAT", "ACK_RECEPTION",
                         "ACK_LECTURE", "ACK_LECTURE_MSS", "CORPSMAIL_PS", "CORPSMAIL_PATIENT", "REPLY_TO"})


# --- processing -----------------------------------------------------------------------------

def _content(data: bytes) -> DocumentContent:
    return DocumentContent(file=io.BytesIO(data), size=len(data), sha1=hashlib.sha1(data).hexdigest(),
                           sha256=hashlib.sha256(data).hexdigest(), content_type="text/xml")


def _actor(message: FeedMessage) -> Actor:
    return Actor(id=DOCUMENT_FEED_ACTOR.id, name=DOCUMENT_FEED_ACTOR.name, kind=SYSTEM,
                 structure=message.sender_structure, software=message.context.source_id,
                 auth_method="internal", reason=f"sender {message.sender_id}" if message.sender_id else "")


def _current_entry(services: Services, actor: Actor, unique_id: str) -> DocumentEntry | None:
    from ..query import QueryService
    from ..registry import schema

    found = QueryService(services, actor).get_objects(schema.KIND_DOCUMENT, unique_ids=[unique_id]).objects
    current = [o for o in found if isinstance(o, DocumentEntry)
               and o.availability_status in (None, AvailabilityStatus.APPROVED)]
    return current[0] if current else None


def _map(services: Services, message: FeedMessage, doc: DocumentObx, n: int) -> tuple[XdsMetadata, str]:
    where = f"OBX^{doc.set_id}^5"
    try:
        header = read_header(doc.data)
        meta = to_xds(header, message.context, entry_id=f"Document{n:02d}", submission_id="SubmissionSet01")
    except MappingError as exc:
        code = NO_INS if exc.rule == "hl7-ins-missing" else exc.rule
        raise _with_findings(services, doc, Problem(APPLICATION_ERROR, code, exc.message, where)) from exc
    except Exception as exc:   # not XML, not a CDA, refused by the hardened parser
        raise _with_findings(services, doc, Problem(
            APPLICATION_ERROR, "hl7-document-not-cda",
            f"OBX-5 does not hold a readable CDA R2 document: {exc}", where)) from exc
    if message.txa_unique_id and message.txa_unique_id != meta.entry.unique_id:
        raise _ae(APPLICATION_ERROR, "hl7-txa12-mismatch", f"TXA-12 {message.txa_unique_id} is not the CDA "
                  f"ClinicalDocument/id {meta.entry.unique_id}", "TXA^1^12")
    return meta, where


def _profile_errors(services: Services, doc: DocumentObx) -> list[XdsError]:
    """The ingest flow's per-document checks (the CDA profile) on a document alone."""
    entry = DocumentEntry(entry_uuid=f"OBX-{doc.set_id}")
    errors: list[XdsError] = []
    for check in services.document_checks:
        errors += check(entry, _content(doc.data), ErrorCode.REPOSITORY_METADATA)
    return errors


def _with_findings(services: Services, doc: DocumentObx, problem: Problem) -> Refused:
    """A document whose metadata cannot be derived: the CDA profile's findings say why."""
    _code, found = problems_of(_profile_errors(services, doc))
    return Refused("AE", *found, problem)


def process(services: Services, message: FeedMessage) -> DocumentOutcome:
    outcome = DocumentOutcome("AA", "", message.control_id, processing=message.processing)
    actor = _actor(message)
    mapped = [_map(services, message, doc, n) for n, doc in enumerate(message.documents, start=1)]
    outcome.unique_ids = [m.entry.unique_id for m, _ in mapped]
    if message.flags.get("DESTDMP") is False:
        outcome.text = "DESTDMP=N: the document is not for the shared record; nothing indexed"
        return outcome
    ss = mapped[0][0].submission_set
    if message.processing == DELETE:
        _delete(services, actor, message, ss, [m for m, _ in mapped])
        outcome.text = f"deleted {', '.join(outcome.unique_ids)}"
        return outcome
    request = SubmissionRequest(submission_set=ss)
    for n, ((meta, where), doc) in enumerate(zip(mapped, message.documents, strict=True), start=1):
        entry = meta.entry
        entry.patient_id = ss.patient_id
        request.documents.append(entry)
        request.contents[entry.entry_uuid] = _content(doc.data)
        request.associations.append(membership(ss, entry, f"Association{n:02d}"))
        if message.processing == REPLACE:
            parents = meta.replaces or ([message.txa_parent_id] if message.txa_parent_id else [])
            if not parents:
                raise _ae(REQUIRED_FIELD_MISSING, "hl7-replaced-document-missing",
                          "a replacement names the replaced document in the CDA relatedDocument[@typeCode='RPLC'] "
                          "(or TXA-13)", where)
            prior = _current_entry(services, actor, parents[0])
            if prior is None:
                raise _ae(APPLICATION_ERROR, WRONG_VERSION, f"the replaced document {parents[0]} is not a current "
                          "document of the registry", where)
            request.associations.append(Association(
                entry_uuid=f"Replacement{n:02d}", association_type=AssociationType.RPLC,
                source_uuid=entry.entry_uuid, target_uuid=prior.entry_uuid))
        elif message.processing == INITIAL:
            existing = _current_entry(services, actor, entry.unique_id)
            if existing is not None and existing.hash == request.contents[entry.entry_uuid].sha1:
                outcome.text = f"{entry.unique_id} is already indexed (retransmission)"
                return outcome
    try:
        IngestService(services, actor).provide_and_register(request)
    except XdsErrors as exc:
        # The metadata rules run before the CDA profile: when they refuse, name the CDA
        # rules too, since the metadata came from the header.
        if any(rule_in_context(e.context) for e in exc.errors) or not any(
                e.code in (ErrorCode.REPOSITORY_METADATA, ErrorCode.REGISTRY_METADATA) for e in exc.errors):
            raise
        extra = [e for doc in message.documents for e in _profile_errors(services, doc)]
        raise XdsErrors([*extra, *exc.errors]) from exc
    outcome.text = f"indexed {', '.join(outcome.unique_ids)}"
    return outcome


def _delete(services: Services, actor: Actor, message: FeedMessage, ss, mapped: list[XdsMetadata]) -> None:
    """CI-SIS deletion: the current entry takes the Deleted status (the update flow checks
    that it belongs to the PID-3 patient)."""
    from ..lifecycle import update_document_set

    request = SubmissionRequest(submission_set=ss)
    for n, meta in enumerate(mapped, start=1):
        prior = _current_entry(services, actor, meta.entry.unique_id)
        if prior is None:
            raise _ae(APPLICATION_ERROR, WRONG_VERSION, f"document {meta.entry.unique_id} is not a current "
                      "document of the registry; nothing to delete", "OBX^1^5")
        request.associations.append(Association(
            entry_uuid=f"Deletion{n:02d}", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS,
            source_uuid=ss.entry_uuid, target_uuid=prior.entry_uuid,
            original_status=AvailabilityStatus.APPROVED.value, new_status=AvailabilityStatus.DELETED.value))
    update_document_set(services, actor, request)


def problems_of(errors: list[XdsError]) -> tuple[str, list[Problem]]:
    """XdsErrors of the ingest flow -> the acknowledgement code and its ERR segments."""
    code, problems = "AE", []
    for e in errors:
        if e.warning:
            continue
        cda_rule = rule_in_context(e.context)
        if cda_rule:
            problems.append(Problem(APPLICATION_ERROR, cda_rule[0], cda_rule[1], e.location, "CISIS-CDA"))
        elif e.code == ErrorCode.UNKNOWN_PATIENT_ID:
            code = "AR"
            problems.append(Problem(APPLICATION_ERROR, UNKNOWN_PATIENT, e.context, "PID^1^3"))
        elif e.code == ErrorCode.POLICY_VIOLATION:
            code = "AR"
            problems.append(Problem(APPLICATION_ERROR, UNAUTHORISED, e.context))
        else:
            problems.append(Problem(APPLICATION_ERROR, str(e.code), e.context, e.location, "XDS"))
    return code, problems


def handle_message(services: Services, text: str) -> DocumentOutcome:
    control_id = ""
    message: FeedMessage | None = None
    try:
        message = read_message(text)
        control_id = message.control_id
        outcome = process(services, message)
    except Refused as exc:
        outcome = DocumentOutcome(exc.code, exc.problems[0].message if exc.problems else "", control_id,
                                  problems=exc.problems)
    except XdsErrors as exc:
        code, problems = problems_of(exc.errors)
        outcome = DocumentOutcome(code, f"{len(problems)} error(s): "
                                  f"{', '.join(dict.fromkeys(p.rule for p in problems))}", control_id,
                                  problems=problems)
    except Exception:   # storage down, a bug: the sender may retransmit, and the message is kept
        log.exception("HL7 document feed: message %s failed", control_id or _control_id(text))
        outcome = DocumentOutcome("AR", "internal error; the message is kept for replay (see the server log)",
                                  control_id, problems=[Problem(APPLICATION_ERROR, OTHER, "internal error")])
    if not outcome.control_id:
        outcome.control_id = _control_id(text)
    log.info("HL7 document feed %s: %s %s", outcome.control_id, outcome.code, outcome.text)
    if message is not None and message.flags.get("ACK_RECEPTION"):
        send_business_ack(services, outcome, text)
    try:
        journal = Journal.of(services)
        if outcome.code == "AA":
            journal.forget(text)
        else:
            journal.keep(text, outcome)
    except OSError:
        log.exception("HL7 document feed: the journal of refused messages cannot be written")
    return outcome


# --- the journal of messages not processed -------------------------------------------------

class Journal:
    """Messages the feed did not process, kept with their reason until a replay succeeds.

    One pair of files per distinct message (named by the SHA-256 of its text): `<hash>.hl7`
    (the message, as received) and `<hash>.json` (reason, ERR rules, attempts, times). A
    message that is later accepted, by `partage hl7 replay` or by the sender retransmitting
    it, is removed.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def of(cls, services: Services) -> Journal:
        return cls.in_data_dir(services.settings.data_dir)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> Journal:
        return cls(Path(data_dir) / "hl7" / "not-processed")

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def keep(self, text: str, outcome: FeedOutcome) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.key(text)
        meta_path = self.directory / f"{key}.json"
        attempts = 1
        if meta_path.exists():
            try:
                attempts = int(json.loads(meta_path.read_text(encoding="utf-8")).get("attempts", 0)) + 1
            except (ValueError, OSError):
                attempts = 1
        now = datetime.now(UTC).isoformat(timespec="seconds")
        message_path = self.directory / f"{key}.hl7"
        if not message_path.exists():
            _write_atomically(message_path, text.encode("utf-8"))
        reason = {"control_id": outcome.control_id, "ack": outcome.code, "reason": outcome.text,
                  "rules": [p.rule for p in getattr(outcome, "problems", [])], "attempts": attempts,
                  "last_attempt": now}
        _write_atomically(meta_path, json.dumps(reason, ensure_ascii=False, indent=1).encode("utf-8"))
        return message_path

    def forget(self, text: str) -> None:
        key = self.key(text)
        for suffix in (".json", ".hl7"):
            (self.directory / f"{key}{suffix}").unlink(missing_ok=True)

    def entries(self) -> list[tuple[Path, dict]]:
        if not self.directory.is_dir():
            return []
        out = []
        for message_path in sorted(self.directory.glob("*.hl7"), key=lambda p: p.stat().st_mtime):
            try:
                meta = json.loads(message_path.with_suffix(".json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
            out.append((message_path, meta))
        return out


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _control_id(text: str) -> str:
    first = text.split("\r", 1)[0].split("\n", 1)[0]
    fields = first.split(first[3]) if first.startswith("MSH") and len(first) > 3 else []
    return fields[9] if len(fields) > 9 else ""


# --- acknowledgement ----------------------------------------------------------------------------

def _clean(text: str) -> str:
    return " ".join((text or "").replace("|", "/").replace("^", " ").replace("&", " ")
                    .replace("~", " ").replace("\\", "/").split())


def ack(outcome: FeedOutcome, received_text: str) -> str:
    """ACK^<trigger>^ACK in the message's version: MSH mirrored as the IG says, MSA, ERR*."""
    first = received_text.replace("\n", "\r").split("\r", 1)[0]
    fields = first.split(first[3]) if first.startswith("MSH") and len(first) > 3 else []

    def f(i: int) -> str:   # MSH-i
        return fields[i - 1] if len(fields) > i - 1 else ""

    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    message_type = f(9).split("^")
    trigger = message_type[1] if len(message_type) > 1 else ""
    version = f(12) or ("2.6" if message_type[0] == "MDM" else "2.5")
    control = f"ACK{now}{(outcome.control_id or '')[-8:]}"
    msh = (f"MSH|^~\\&|{f(5) or 'PARTAGE'}|{f(6) or 'PARTAGE'}|{f(3)}|{f(4)}|{now}||ACK^{trigger}^ACK|"
           f"{control}|{f(11) or 'P'}|{version}|||||FRA|{f(18) or 'UNICODE UTF-8'}")
    segments = [msh, f"MSA|{outcome.code}|{outcome.control_id}" + (f"|{_clean(outcome.text)}" if outcome.text else "")]
    problems = getattr(outcome, "problems", None)
    if outcome.code != "AA" and not problems:
        problems = [Problem(APPLICATION_ERROR, OTHER, outcome.text)]
    for p in problems or []:
        condition = f"{p.condition}^{ERROR_TEXT.get(p.condition, 'Application error')}^HL70357"
        location = p.location if re.fullmatch(r"[A-Z0-9]{3}(\^\d+)*", p.location or "") else ""
        diagnostic = "" if location else _clean(p.location)
        segments.append(f"ERR||{location}|{condition}|E|{_clean(p.rule)}^^{p.table}||{diagnostic}|"
                        f"{_clean(p.message)[:2000]}")
    return "\r".join(segments) + "\r"


# --- business acknowledgement (ZAM^Z01^ZAM_Z01, "accusé de réception DMP") ------------------------

def business_ack(outcome: FeedOutcome, received_text: str) -> str:
    """The IG's ZAM^Z01: MSH, EVN, OBX ACK_RECEPTION_DMP (Y/N, OBX-4 = the message's MSH-10),
    and when refused one ERR: ERR-3 207, ERR-5 the first failed rule, ERR-6 every rule id,
    ERR-8 the reasons."""
    first = received_text.replace("\n", "\r").split("\r", 1)[0]
    fields = first.split(first[3]) if first.startswith("MSH") and len(first) > 3 else []

    def f(i: int) -> str:
        return fields[i - 1] if len(fields) > i - 1 else ""

    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    accepted = outcome.code == "AA"
    segments = [
        f"MSH|^~\\&|{f(5) or 'PARTAGE'}|{f(6) or 'PARTAGE'}|{f(3)}|{f(4)}|{now}||ZAM^Z01^ZAM_Z01|"
        f"ZAM{now}{(outcome.control_id or '')[-8:]}|{f(11) or 'P'}|2.6|||||FRA|UNICODE UTF-8|||2.1^{PROFILE_ID}",
        f"EVN||{now}",
        f"OBX|1|CWE|ACK_RECEPTION_DMP^Accusé de réception DMP^AckMetierZAM|{_clean(outcome.control_id)}|"
        f"{'Y' if accepted else 'N'}^^expandedYes-NoIndicator||||||F",
    ]
    problems = list(getattr(outcome, "problems", None) or [])
    if not accepted:
        if not problems:
            problems = [Problem(APPLICATION_ERROR, OTHER, outcome.text)]
        first_problem = problems[0]
        rules = "~".join(dict.fromkeys(_clean(p.rule) for p in problems))
        reasons = "; ".join(f"{p.rule}: {p.message}" for p in problems)
        segments.append(f"ERR|||207^Application error^messageErrorCondition|E|{_clean(first_problem.rule)}^"
                        f"{_clean(first_problem.message)[:200]}^{first_problem.table}|{rules}||{_clean(reasons)[:4000]}")
    return "\r".join(segments) + "\r"


def send_business_ack(services: Services, outcome: FeedOutcome, received_text: str) -> None:
    """Deliver the ZAM^Z01 to `hl7_business_ack_to` (HOST:PORT) in the background, when the
    message asked for it (ACK_RECEPTION = Y); kept in the data dir when it cannot be delivered."""
    target = getattr(services.settings, "hl7_business_ack_to", "")
    if not target:
        return
    text = business_ack(outcome, received_text)
    outbox = Path(services.settings.data_dir) / "hl7" / "business-acks-not-delivered"

    def deliver() -> None:
        from .mllp import MllpClient, MllpError

        host, _, port = target.rpartition(":")
        try:
            with MllpClient(host or "127.0.0.1", int(port), timeout=30) as client:
                client.send(text)
        except (MllpError, OSError, ValueError) as exc:
            log.warning("ZAM^Z01 for %s not delivered to %s: %s", outcome.control_id, target, exc)
            try:
                outbox.mkdir(parents=True, exist_ok=True)
                _write_atomically(outbox / f"{hashlib.sha256(text.encode()).hexdigest()}.hl7", text.encode("utf-8"))
            except OSError:
                log.exception("ZAM^Z01 for %s lost", outcome.control_id)

    threading.Thread(target=deliver, name="zam", daemon=True).start()
