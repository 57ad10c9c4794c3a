"""The document feed's messages read into a typed form (ANS IG "transmission de documents
CDA-R2 en HL7v2", profile CISIS_CDA_HL7_V2).

What arrives:
  MDM^T02 (v2.6)  initial transmission   ORC-1 NW, OBX-11 F
  MDM^T10         replacement            ORC-1 RO, OBX-11 C, TXA-13 = the replaced document
  MDM^T04         deletion               ORC-1 CA, OBX-11 D
  ORU^R01 (v2.5)  the same three, told apart by ORC-1 / OBX-11 only
The document is the base64 CDA in an OBX of type ED (OBX-5 ^TEXT^XML^Base64^...); the OBX
groups that follow carry the MetaDMPMSS flags (MASQUE_PS, INVISIBLE_PATIENT, DESTDMP, ...);
PRT "SB^Send by" in the document's group names the sender; PID / PV1 the patient and the
encounter. `read_message` checks what the profile requires and raises `Refused` (AE / AR with
the failed rule) otherwise; it reads fields with the one ER7 reader and the composite types.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from ..cda.to_xds import MessageContext, source_id_for
from ..metadata.datatypes import CE, CX, ED, EI, HD, XCN, XON, DatatypeError
from ..metadata.er7 import Er7Message, MessageHeader, Segment
from .fields import patient_identifiers
from .outcome import (
    APPLICATION_ERROR,
    DATA_TYPE_ERROR,
    ERROR,
    REJECTED,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE,
    UNSUPPORTED_EVENT,
    UNSUPPORTED_MESSAGE,
    UNSUPPORTED_VERSION,
    Refused,
    refused,
)

META_SYSTEM = "MetaDMPMSS"
META_CODES = frozenset({"MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REP_LEGAUX", "CONNEXION_SECRETE",
                        "MODIF_CONF_CODE", "DESTDMP", "DESTMSSANTEPS", "DESTMSSANTEPAT", "ACK_RECEPTION",
                        "ACK_LECTURE", "ACK_LECTURE_MSS", "CORPSMAIL_PS", "CORPSMAIL_PATIENT", "REPLY_TO"})

# The processing a message asks for; MDM says it in the trigger too.
INITIAL, REPLACE, DELETE = "initial", "replace", "delete"
MDM_TRIGGERS = {"T02": INITIAL, "T10": REPLACE, "T04": DELETE}
ORDER_CONTROL = {"NW": INITIAL, "RO": REPLACE, "CA": DELETE}   # ORC-1
RESULT_STATUS = {"F": INITIAL, "C": REPLACE, "D": DELETE}      # OBX-11


@dataclass
class DocumentObx:
    set_id: str                 # OBX-1
    type_code: str              # OBX-3.1
    status: str                 # OBX-11
    data: bytes                 # OBX-5.5, decoded
    segment_index: int


@dataclass
class Sender:
    """PRT "SB^Send by": the person (PRT-5) and organisation (PRT-8), in XDS form."""

    person: XCN | None = None
    institution: XON | None = None
    person_id: str = ""
    structure: str = ""         # PRT-8.10


@dataclass
class Observations:
    """What the OBX / PRT segments carry: the documents, the MetaDMPMSS flags, the sender."""

    documents: list[DocumentObx] = field(default_factory=list)
    flags: dict[str, bool] = field(default_factory=dict)
    sender: Sender = field(default_factory=Sender)


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


def read_message(message: Er7Message) -> FeedMessage:
    """The typed form of an MDM / ORU message; `Refused` naming the first failed rule."""
    header = message.header
    _check_message_type(header)
    patient_ids = _patient_ids(_required(message, "PID", "the PID segment is missing"))
    orc = _required(message, "ORC", "the ORC segment (processing request) is missing")
    order_control = CE.parse(orc.first(1)).identifier.strip()
    if order_control not in ORDER_CONTROL:
        raise _ae(APPLICATION_ERROR, "hl7-orc1", f"ORC-1 {order_control or '(empty)'} is none of NW, RO, CA",
                  "ORC^1^1")
    processing = ORDER_CONTROL[order_control]
    found = _observations(message)
    _check_documents(header.message_type.message_code, header.message_type.trigger_event, order_control,
                     found.documents)
    txa = message.first("TXA")
    if header.message_type.message_code == "MDM" and txa is None:
        raise _ae(SEGMENT_SEQUENCE, "hl7-txa-missing", "an MDM message needs its TXA segment", "TXA")
    pv1 = message.first("PV1")
    context = MessageContext(patient_ids=patient_ids, patient_class=pv1.field(2).strip() if pv1 else "",
                             sender_person=found.sender.person, sender_institution=found.sender.institution,
                             flags=found.flags, source_id=source_id_for(_sending_application(header)))
    return FeedMessage(header.message_type.message_code, header.message_type.trigger_event, header.control_id,
                       processing, context, found.documents, found.flags,
                       txa_unique_id=_unique_id(txa.first(12)) if txa else "",
                       txa_parent_id=_unique_id(txa.first(13)) if txa else "",
                       sender_id=found.sender.person_id, sender_structure=found.sender.structure)


def _ae(condition: str, rule: str, message: str, location: str = "") -> Refused:
    return refused(ERROR, condition, rule, message, location)


def _check_message_type(header: MessageHeader) -> None:
    """MDM^T02/T10/T04 or ORU^R01 (else AR), HL7 v2.5 or later (else AE, as the IG's example),
    a message control id (MSH-10, else AE)."""
    kind, trigger = header.message_type.message_code, header.message_type.trigger_event
    if kind not in ("MDM", "ORU"):
        raise refused(REJECTED, UNSUPPORTED_MESSAGE, "hl7-message-type",
                      f"message type {kind} is not a document feed message", "MSH^1^9")
    if (kind == "MDM" and trigger not in MDM_TRIGGERS) or (kind == "ORU" and trigger != "R01"):
        raise refused(REJECTED, UNSUPPORTED_EVENT, "hl7-trigger",
                      f"{kind}^{trigger} is not a trigger of the CISIS_CDA_HL7_V2 profile "
                      "(MDM^T02/T10/T04, ORU^R01)", "MSH^1^9")
    try:
        too_old = tuple(int(x) for x in header.version.split(".")[:2]) < (2, 5)
    except ValueError:
        too_old = True
    if too_old:
        raise _ae(UNSUPPORTED_VERSION, "hl7-version", f"HL7 version {header.version or '(empty)'} is not "
                  "supported: the profile is v2.6 for MDM and v2.5 for ORU", "MSH^1^12")
    if not header.control_id.strip():   # MSH-10 is R (HL7 v2.5 2.15.9.10): MSA-2 echoes it
        raise _ae(REQUIRED_FIELD_MISSING, "hl7-msh10-missing", "MSH-10 (message control id) is empty: the "
                  "acknowledgement could not name the message it answers", "MSH^1^10")


def _required(message: Er7Message, name: str, text: str) -> Segment:
    found = message.first(name)
    if found is None:
        raise _ae(SEGMENT_SEQUENCE, f"hl7-{name.lower()}-missing", text, name)
    return found


def _patient_ids(pid: Segment) -> list[CX]:
    """PID-3 identifiers with an assigning authority, in XDS form (id^^^&OID&ISO)."""
    ids = [CX(cx.id.strip(), HD.iso(cx.assigning_authority.universal_id.strip()))
           for cx in patient_identifiers(pid, 3)]
    if not ids:
        raise _ae(REQUIRED_FIELD_MISSING, "hl7-pid3-missing",
                  "PID-3 has no identifier with an ISO assigning authority", "PID^1^3")
    return ids


def _sending_application(header: MessageHeader) -> str:
    """MSH-3.1|MSH-4.1, which names the sending application (its sourceId derives from it)."""
    try:
        application = HD.parse(header.sending_application, "^", strict=False)
        facility = HD.parse(header.sending_facility, "^", strict=False)
    except DatatypeError as exc:
        raise _ae(DATA_TYPE_ERROR, "hl7-msh-hd", f"MSH-3 / MSH-4 are not HD values: {exc}", "MSH^1^3") from exc
    return f"{application.namespace_id}|{facility.namespace_id}"


def _observations(message: Er7Message) -> Observations:
    """The documents, flags and sender of the OBX groups (a PRT belongs to the OBX before it)."""
    found = Observations()
    in_document_group = False
    for segment in message.segments:
        if segment.name == "OBX":
            in_document_group = _observation(segment, found)
        elif segment.name == "PRT" and in_document_group and CE.parse(segment.first(4)).identifier.strip() == "SB":
            found.sender = _sender(segment)
    return found


def _observation(obx: Segment, found: Observations) -> bool:
    """One OBX read into `found`; True when it carries a document."""
    identifier = CE.parse(obx.first(3))
    code, system = identifier.identifier.strip(), identifier.coding_system.strip()
    value_type = obx.field(2).strip()
    if system == META_SYSTEM or code in META_CODES:
        if value_type in ("CE", "CWE"):
            found.flags[code] = CE.parse(obx.first(5)).identifier.strip().upper() == "Y"
        return False
    if value_type != "ED":
        return False
    found.documents.append(_document(obx, code, len(found.documents) + 1))
    return True


def _document(obx: Segment, type_code: str, n: int) -> DocumentObx:
    """The CDA of an OBX of type ED: OBX-5.2^5.3 TEXT^XML, OBX-5.4 Base64, OBX-5.5 the document."""
    where = f"OBX^{obx.field(1) or n}^5"
    try:
        value = ED.parse(obx.first(5))
    except DatatypeError as exc:
        raise _ae(DATA_TYPE_ERROR, "hl7-obx5-malformed", f"OBX-5 is not an ED value: {exc}", where) from exc
    kind = f"{value.type_of_data.strip()}^{value.data_subtype.strip()}"
    if kind.upper() != "TEXT^XML":   # HL7 tables 0191 / 0291, fixed by the profile: a CDA R2 document
        raise _ae(DATA_TYPE_ERROR, "hl7-obx5-type", f"OBX-5.2^OBX-5.3 is {kind}; a CDA document is TEXT^XML "
                  "(^TEXT^XML^Base64^...)", where)
    encoding = value.encoding.strip().lower()
    if encoding != "base64":
        raise _ae(APPLICATION_ERROR, "hl7-obx5-encoding",
                  f"OBX-5.4 is {encoding or '(empty)'}; the document must be Base64", where)
    try:
        data = base64.b64decode("".join(value.data.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _ae(APPLICATION_ERROR, "hl7-obx5-base64", f"OBX-5.5 is not valid base64: {exc}", where) from exc
    if not data:
        raise _ae(REQUIRED_FIELD_MISSING, "hl7-obx5-empty", "OBX-5.5 holds no document", where)
    return DocumentObx(obx.field(1), type_code, obx.field(11).strip(), data, obx.position)


def _sender(prt: Segment) -> Sender:
    """PRT-5 (XCN) and PRT-8 (XON) in XDS form: &OID&ISO authorities, the XCN typed (XCN.10 D,
    XCN.13) only with its authority; a value that is not XCN / XON is left out."""
    person, person_id = _person(prt.first(5))
    institution, structure = _organisation(prt.first(8))
    return Sender(person, institution, person_id, structure)


def _person(text: str) -> tuple[XCN | None, str]:
    try:
        xcn = XCN.parse(text, strict=False)
    except DatatypeError:
        return None, ""
    oid = xcn.assigning_authority.universal_id.strip()
    id_type = xcn.identifier_type_code.strip() if oid else ""
    person = XCN(id_number=xcn.id_number.strip(), family_name=xcn.family_name.strip(),
                 given_name=xcn.given_name.strip(), assigning_authority=HD.iso(oid) if oid else HD(),
                 name_type_code=(xcn.name_type_code.strip() or "D") if id_type else "",
                 identifier_type_code=id_type)
    return (person if person != XCN() else None), person.id_number


def _organisation(text: str) -> tuple[XON | None, str]:
    try:
        xon = XON.parse(text, strict=False)
    except DatatypeError:
        return None, ""
    name, structure = xon.organization_name.strip(), xon.organization_identifier.strip()
    oid = xon.assigning_authority.universal_id.strip()
    if not name:
        return None, structure
    if not (oid and structure):
        return XON(name), structure
    return XON(name, assigning_authority=HD.iso(oid), id_type=xon.id_type.strip(),
               organization_identifier=structure), structure


def _unique_id(text: str) -> str:
    """TXA-12 / TXA-13 (EI) -> XDS uniqueId: root^extension, or the OID alone (IG rule)."""
    ei = EI.parse(text)
    root, extension = ei.universal_id.strip(), ei.entity_identifier.strip()
    if not root:
        return extension
    return f"{root}^{extension}" if extension else root


def _check_documents(kind: str, trigger: str, order_control: str, documents: list[DocumentObx]) -> None:
    """MDM carries one document, ORU one or two; OBX-11, ORC-1 and the MDM trigger agree."""
    if not documents:
        raise _ae(REQUIRED_FIELD_MISSING, "hl7-document-missing",
                  "no OBX of type ED carries a document (OBX-5 ^TEXT^XML^Base64^...)", "OBX")
    if kind == "MDM" and len(documents) > 1:
        raise _ae(SEGMENT_SEQUENCE, "hl7-mdm-one-document", "an MDM message carries exactly one document", "OBX")
    processing = ORDER_CONTROL[order_control]
    for doc in documents:
        if RESULT_STATUS.get(doc.status) != processing:
            raise _ae(APPLICATION_ERROR, "hl7-processing-inconsistent",
                      f"OBX-11 {doc.status or '(empty)'} does not agree with ORC-1 {order_control}",
                      f"OBX^{doc.set_id}^11")
    if kind == "MDM" and MDM_TRIGGERS[trigger] != processing:
        raise _ae(APPLICATION_ERROR, "hl7-processing-inconsistent",
                  f"ORC-1 {order_control} does not agree with the trigger {trigger}", "ORC^1^1")
