"""CDA header + HL7 v2 message -> XDS metadata, as the ANS IG "transmission de documents
CDA-R2 en HL7v2" maps them (page mapping.md, "Mapping XDS").

One job: given the header of a CDA document (partage.cda.header) and what the message
carries beside it (PID-3, PV1-2, the PRT "Send by" sender, the MetaDMPMSS OBX flags),
build the DocumentEntry and the SubmissionSet of one submission. Pure: no I/O, no
registry; refusals are `MappingError` naming what is missing.

Fiche (DocumentEntry), from the CDA:
  typeCode <- ClinicalDocument/code; classCode <- typeCode through ASS_X04
  (CorrespondanceType-Classe); formatCode <- the document-model templateId through
  ASS_A11 (CorresModeleCDA-XdsFormatCode), or the nonXMLBody mediaType through ASS_A12;
  confidentialityCode <- ClinicalDocument/confidentialityCode plus the MASQUE_PS /
  INVISIBLE_PATIENT / INVISIBLE_REP_LEGAUX flags of the message; creationTime <-
  effectiveTime; service start/stop <- documentationOf/serviceEvent/effectiveTime;
  healthcareFacilityTypeCode <- encompassingEncounter/location/healthCareFacility/code;
  practiceSettingCode <- serviceEvent/performer/.../standardIndustryClassCode;
  patientId <- recordTarget/patientRole/id (the INS), sourcePatientId <- the local id
  (the INS when there is none); uniqueId <- ClinicalDocument/id; author, legalAuthenticator,
  title, languageCode from the header; mimeType text/xml.
Lot de soumission (SubmissionSet), from the message: patientId <- PID-3; author <- PRT
  "SB^Send by" (PRT-5 person, PRT-8 organisation); contentTypeCode <- PV1-2.

The two correspondence tables are facts of the ANS terminology (NOS ConceptMaps
ASS_X04-CorrespondanceType-Classe-CISIS, 2024-04-26, and
ASS_A11-CorresModeleCDA-XdsFormatCode-CISIS), transcribed as code pairs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..metadata.datatypes import CE, CX, DTM, HD, XCN, XON, DatatypeError
from ..metadata.model import (
    Association,
    AssociationType,
    Author,
    Code,
    DocumentEntry,
    SubmissionSet,
)
from .ans_maps import (
    CLASS_DISPLAY,
    MEDIA_TYPE_TO_FORMAT,
    MODEL_TO_FORMAT,
    STRUCTURATION_MINIMALE_FORMAT,
    TRE_A03,
    TRE_A11,
    TYPE_TO_CLASS,
)
from .constants import CONFIDENTIALITY_SYSTEM, INS_ROOTS
from .crosscheck import cda_unique_id, ts_offset_readable, ts_to_utc
from .header import CdaCode, CdaHeader, CdaOrganization, CdaPerson, Ident

MASKING_SYSTEM = "1.2.250.1.213.1.1.4.13"  # CI-SIS confidentiality extensions (MASQUE_PS ...)
CONTENT_TYPE_SYSTEM = "1.2.250.1.213.2.2"  # TRE_R209-TypeActivite (JDV_J59 contentTypeCode)
RPPS_ROOT = "1.2.250.1.71.4.2.1"
STRUCTURE_ROOT = "1.2.250.1.71.4.2.2"
CDA_MIME_TYPE = "text/xml"
# The IG's proposed mapping of PV1-2 (patient class) to the SubmissionSet contentTypeCode.
PATIENT_CLASS_TO_CONTENT_TYPE = {"I": "03", "O": "07", "R": "19", "N": "97", "E": "07"}

# OBX-3 (MetaDMPMSS) flag -> confidentialityCode it adds when OBX-5 is Y.
MASKING_FLAGS = {
    "MASQUE_PS": ("MASQUE_PS", "Masqué aux professionnels de santé"),
    "INVISIBLE_PATIENT": ("INVISIBLE_PATIENT", "Non visible par le patient"),
    "INVISIBLE_REP_LEGAUX": ("INVISIBLE_REPRESENTANTS_LEGAUX", "Non visible par les représentants légaux"),
}



class MappingError(ValueError):
    """The header and the message cannot give a required XDS attribute."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


@dataclass
class MessageContext:
    """What the HL7 v2 message carries beside the document (all optional but PID-3)."""

    patient_ids: list[CX] = field(default_factory=list)     # PID-3 repetitions
    patient_class: str = ""                                 # PV1-2
    sender_person: XCN | None = None                        # PRT-5 (PRT-4 = SB)
    sender_institution: XON | None = None                   # PRT-8 (PRT-4 = SB)
    flags: dict[str, bool] = field(default_factory=dict)    # MetaDMPMSS OBX-3 code -> OBX-5 is Y
    source_id: str = ""                                     # SubmissionSet.sourceId (OID)
    submission_time: DTM | None = None                      # now when absent


@dataclass
class XdsMetadata:
    entry: DocumentEntry
    submission_set: SubmissionSet
    replaces: list[str] = field(default_factory=list)   # uniqueIds of relatedDocument[@typeCode=RPLC]


def _clean(text: str) -> str:
    """A header text as one HL7 component value: white space folded (the typed values escape
    the separators when they are written)."""
    return " ".join((text or "").split())


def _code(c: CdaCode | None, default_system: str = "") -> Code | None:
    if c is None or not c.code:
        return None
    return Code(c.code, c.code_system or default_system, c.display_name)


def _cx(ident: Ident) -> CX:
    root, ext = ident
    return CX(_clean(ext), HD.iso(root)) if ext else CX(_clean(root))


def _xcn(person: CdaPerson) -> XCN | None:
    ident = next((i for i in person.ids if i[1]), None)
    family = _clean(person.family) or (_clean(person.device) if not ident else "")
    given = _clean(person.given[0]) if person.given else ""
    if ident is None and not family:
        return None
    rpps = ident is not None and ident[0] == RPPS_ROOT
    return XCN(id_number=_clean(ident[1]) if ident else "", family_name=family, given_name=given,
               prefix=_clean(person.prefix), assigning_authority=HD.iso(ident[0]) if ident else HD(),
               name_type_code="D" if rpps else "", identifier_type_code="IDNPS" if rpps else "")


def _xon(org: CdaOrganization | None) -> XON | None:
    if org is None or not _clean(org.name):
        return None
    ident = next((i for i in org.ids if i[1] or i[0]), None)
    if ident is None:
        return XON(_clean(org.name))
    root, ext = ident
    if not ext:
        return XON(_clean(org.name), organization_identifier=root)
    return XON(_clean(org.name), assigning_authority=HD.iso(root),
               id_type="IDNST" if root == STRUCTURE_ROOT else "", organization_identifier=_clean(ext))


def _coded(c: CdaCode | None) -> str:
    """authorRole / authorSpecialty (HL7 CE text, code^display^system)."""
    if c is None or not c.code:
        return ""
    return CE(_clean(c.code), _clean(c.display_name), _clean(c.code_system)).format()


def author_of(person: CdaPerson) -> Author:
    author = Author(person=_xcn(person))
    institution = _xon(person.organization)
    if institution is not None:
        author.institutions.append(institution)
    if person.function_code is not None and person.function_code.code:
        author.roles.append(_coded(person.function_code))
    if person.code is not None and person.code.code:
        author.specialties.append(_coded(person.code))
    return author


def class_code(type_code: Code) -> Code:
    system = type_code.scheme
    cls = TYPE_TO_CLASS.get((type_code.code, system))
    if cls is None:
        raise MappingError("hl7-classCode-unknown",
                           f"aucun classCode pour le typeCode {type_code.code} ({system}) dans la table "
                           "ASS_X04-CorrespondanceType-Classe")
    return Code(cls, TRE_A03, CLASS_DISPLAY.get(cls, ""))


def format_code(header: CdaHeader) -> Code:
    if header.body == "nonXMLBody":
        fmt = MEDIA_TYPE_TO_FORMAT.get(header.media_type)
        if fmt is None:
            raise MappingError("hl7-formatCode-unknown",
                               f"aucun formatCode pour un corps non structuré de mediaType "
                               f"{header.media_type or '(aucun)'}")
        return Code(fmt, TRE_A11)
    for root, _ext in reversed(header.template_ids):   # the most specific model is the last one
        found = MODEL_TO_FORMAT.get(root)
        if found is not None:
            return Code(*found)
    return Code(*STRUCTURATION_MINIMALE_FORMAT)


def _patient_id(header: CdaHeader, ctx: MessageContext) -> tuple[CX, CX]:
    """(patientId, sourcePatientId): the INS of recordTarget, which PID-3 must carry too."""
    patient = header.patient
    ids = patient.ids if patient else []
    if not ids:
        raise MappingError("hl7-patient-missing", "le CDA ne porte pas de recordTarget/patientRole/id")
    pid3 = {(cx.assigning_authority.universal_id, cx.id) for cx in ctx.patient_ids
            if cx.assigning_authority.universal_id}
    ins = next((i for i in ids if i[0] in INS_ROOTS and i[1]), None)
    chosen = ins or next((i for i in ids if i in pid3), None)
    if chosen is None:
        raise MappingError("hl7-ins-missing", "le recordTarget du CDA ne porte pas d'INS et aucun de "
                           "ses identifiants ne figure dans PID-3 (erreur 903 du guide)")
    if pid3 and chosen not in pid3:
        raise MappingError("hl7-pid3-mismatch", f"PID-3 ne porte pas l'identifiant du patient du CDA, "
                           f"{_cx(chosen).format()} (PID-3 doit être identique à recordTarget/patientRole/id)")
    local = next((i for i in ids if i != chosen and i[1] and i[0] not in INS_ROOTS), None)
    return _cx(chosen), _cx(local or chosen)


def _source_patient_info(header: CdaHeader) -> list[str]:
    p = header.patient
    if p is None:
        return []
    out = []
    family = p.birth_name or (p.family_names[0] if p.family_names else "")
    given = p.first_given_name or (p.given_names[0] if p.given_names else "")
    if family or given:
        out.append(f"PID-5|{_clean(family)}^{_clean(given)}")
    if p.birth_time:
        out.append(f"PID-7|{p.birth_time[:8]}")
    if p.gender:
        out.append(f"PID-8|{_clean(p.gender)}")
    return out


def _dtm(ts: str, where: str) -> DTM:
    """A CDA TS as the UTC DTM of XDS; MappingError when it is not a time."""
    if not ts_offset_readable(ts):   # dropping it would give a local time as UTC (ITI TF-3 4.2.3.1.5)
        raise MappingError("hl7-time-invalid", f"{where} « {ts} » porte un décalage horaire illisible (attendu "
                           "±HHMM) : son heure UTC est inconnue")
    try:
        return DTM(ts_to_utc(ts))
    except DatatypeError as exc:
        raise MappingError("hl7-time-invalid", f"{where} « {ts} » n'est pas une date utilisable (contrôle du "
                           f"type DTM : {exc})") from None


def _required(value: Any, rule: str, message: str) -> Any:
    if not value:
        raise MappingError(rule, message)
    return value


def now_dtm() -> DTM:
    return DTM.from_datetime(datetime.now(UTC))


def new_oid() -> str:
    """A fresh OID under 2.25 (ITU-T X.667: UUID as OID)."""
    return f"2.25.{uuid.uuid4().int}"


def source_id_for(application: str) -> str:
    """A stable sourceId OID for a sending application (MSH-3/MSH-4), under 2.25."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'urn:partage:hl7-source:' + application).int}"


def to_xds(header: CdaHeader, ctx: MessageContext, *, entry_id: str = "Document01",
           submission_id: str = "SubmissionSet01") -> XdsMetadata:
    """The DocumentEntry and SubmissionSet of the document; MappingError when impossible."""
    patient_id, source_patient_id = _patient_id(header, ctx)
    type_code = _required(_code(header.code), "hl7-typeCode-missing", "le CDA ne porte pas de ClinicalDocument/code")
    entry = DocumentEntry(entry_uuid=entry_id)
    entry.unique_id = _required(cda_unique_id(header.id), "hl7-uniqueId-missing",
                                "le CDA ne porte pas de ClinicalDocument/id")
    entry.patient_id, entry.source_patient_id = patient_id, source_patient_id
    entry.source_patient_info = _source_patient_info(header)
    entry.type_code = type_code
    entry.class_code = class_code(type_code)
    entry.format_code = format_code(header)
    entry.mime_type = CDA_MIME_TYPE
    entry.title = header.title
    entry.language_code = header.language_code
    entry.creation_time = _dtm(_required(header.effective_time, "hl7-creationTime-missing",
                                         "le CDA ne porte pas d'effectiveTime"), "effectiveTime")
    event = header.service_event
    if event is not None:
        entry.service_start_time = _dtm(event.start, "serviceEvent/effectiveTime/low") if event.start else None
        entry.service_stop_time = _dtm(event.stop, "serviceEvent/effectiveTime/high") if event.stop else None
    conf = _required(_code(header.confidentiality, CONFIDENTIALITY_SYSTEM), "hl7-confidentiality-missing",
                     "le CDA ne porte pas de confidentialityCode")
    entry.confidentiality_codes = [conf]
    for flag, (code, display) in MASKING_FLAGS.items():
        if ctx.flags.get(flag):
            entry.confidentiality_codes.append(Code(code, MASKING_SYSTEM, display))
    encounter = header.encounter
    entry.healthcare_facility_type_code = _required(
        _code(encounter.facility_code) if encounter else None, "hl7-healthcareFacilityTypeCode-missing",
        "le CDA ne porte pas de componentOf/encompassingEncounter/location/healthCareFacility/code")
    setting = next((p.organization.industry_code for e in header.service_events for p in e.performers
                    if p.organization is not None and p.organization.industry_code
                    and p.organization.industry_code.code), None)
    entry.practice_setting_code = _required(
        _code(setting), "hl7-practiceSettingCode-missing",
        "le CDA ne porte pas de documentationOf/serviceEvent/performer/assignedEntity/representedOrganization/"
        "standardIndustryClassCode")
    if header.legal_authenticator is not None:   # typed: XCN or None
        entry.legal_authenticator = _xcn(header.legal_authenticator)
    entry.authors = [a for a in (author_of(p) for p in header.authors) if not a.is_empty()]

    ss = SubmissionSet(entry_uuid=submission_id)
    ss.unique_id = new_oid()
    ss.source_id = ctx.source_id or source_id_for("partage-hl7")
    ss.patient_id = patient_id
    ss.submission_time = ctx.submission_time or now_dtm()
    ss.title = header.title
    content = PATIENT_CLASS_TO_CONTENT_TYPE.get(ctx.patient_class.strip().upper())
    if content is None:
        raise MappingError("hl7-contentTypeCode-unknown",
                           f"PV1-2 {ctx.patient_class or '(vide)'} ne donne aucun contentTypeCode "
                           f"(valeurs attendues : {', '.join(PATIENT_CLASS_TO_CONTENT_TYPE)})")
    ss.content_type_code = Code(content, CONTENT_TYPE_SYSTEM)
    sender = Author(person=ctx.sender_person)
    if ctx.sender_institution is not None:
        sender.institutions.append(ctx.sender_institution)
    if not sender.is_empty():
        ss.authors.append(sender)
    elif entry.authors:
        ss.authors.append(Author(person=entry.authors[0].person, institutions=list(entry.authors[0].institutions)))
    replaces = [cda_unique_id(i) for r in header.related_documents if r.type_code == "RPLC"
                for i in r.parent_ids[:1]]
    return XdsMetadata(entry, ss, replaces)


def membership(ss: SubmissionSet, entry: DocumentEntry, association_id: str = "Association01") -> Association:
    return Association(entry_uuid=association_id, association_type=AssociationType.HAS_MEMBER,
                       source_uuid=ss.entry_uuid, target_uuid=entry.entry_uuid,
                       submission_set_status="Original")
