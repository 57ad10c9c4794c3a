"""The CDA header as plain data: what ingest maps to XDS metadata and what the rules check.

Plain dataclasses of strings (identifiers as (root, extension) pairs, codes as CdaCode),
no lxml objects, so the result can be logged, compared and serialised. Reading never
raises on a missing element: absent values are "" / None / [] and the rules say what is
required.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from lxml import etree

from .constants import (
    CISIS_MODEL_PREFIX,
    CLINICAL_DOCUMENT,
    GENERIC_TEMPLATES,
    HL7,
    INS_ROOTS,
    SDTC,
    TEMPLATE_XDS_SD,
)
from .locate import text_of
from .parser import DEFAULT_LIMITS, ParseLimits, parse_cda

Ident = tuple[str, str]   # (root, extension); extension "" when absent

_H = f"{{{HL7}}}"


@dataclass(frozen=True, slots=True)
class CdaCode:
    code: str = ""
    code_system: str = ""
    display_name: str = ""
    code_system_name: str = ""

    def __bool__(self) -> bool:
        return bool(self.code)


@dataclass(slots=True)
class CdaOrganization:
    ids: list[Ident] = field(default_factory=list)
    name: str = ""
    industry_code: CdaCode | None = None   # standardIndustryClassCode (practice setting)
    telecoms: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CdaPerson:
    """An author, authenticator, performer or participant: person and/or organisation."""

    ids: list[Ident] = field(default_factory=list)
    family: str = ""
    given: list[str] = field(default_factory=list)
    prefix: str = ""
    suffix: str = ""
    code: CdaCode | None = None            # role / specialty (assignedAuthor/code ...)
    function_code: CdaCode | None = None
    time: str = ""
    organization: CdaOrganization | None = None
    device: str = ""                       # assignedAuthoringDevice: "manufacturer / software"
    telecoms: list[str] = field(default_factory=list)
    signature_code: str = ""               # legal/authenticator signatureCode


@dataclass(slots=True)
class CdaPatient:
    """recordTarget/patientRole, with the INS identity traits spelled out."""

    ids: list[Ident] = field(default_factory=list)
    ins: Ident | None = None               # the first id whose root is an INS OID
    birth_name: str = ""                   # family[@qualifier='BR']
    used_name: str = ""                    # family[@qualifier='CL' or 'SP']
    family_names: list[str] = field(default_factory=list)
    first_given_name: str = ""             # given[@qualifier='BR'] (first birth given name)
    given_names: list[str] = field(default_factory=list)   # given without qualifier (birth given names)
    used_given_name: str = ""              # given[@qualifier='CL']
    birth_time: str = ""
    gender: str = ""
    birthplace_code: str = ""              # birthplace/place/addr/county (INSEE COG code)
    birthplace_city: str = ""
    deceased: bool = False

    @property
    def has_ins(self) -> bool:
        return self.ins is not None


@dataclass(slots=True)
class CdaAct:
    """What the header's acts (serviceEvent, encompassingEncounter) share: ids, a code and the
    effectiveTime interval."""

    ids: list[Ident] = field(default_factory=list)
    code: CdaCode | None = None
    start: str = ""
    stop: str = ""


@dataclass(slots=True)
class CdaServiceEvent(CdaAct):
    performers: list[CdaPerson] = field(default_factory=list)


@dataclass(slots=True)
class CdaEncounter(CdaAct):
    facility_code: CdaCode | None = None   # location/healthCareFacility/code
    facility_ids: list[Ident] = field(default_factory=list)
    location_name: str = ""
    responsible: CdaPerson | None = None


@dataclass(slots=True)
class CdaRelatedDocument:
    type_code: str = ""                    # RPLC, APND, XFRM
    parent_ids: list[Ident] = field(default_factory=list)
    parent_set_id: Ident | None = None
    parent_version: str = ""


@dataclass(slots=True)
class CdaHeader:
    realm_codes: list[str] = field(default_factory=list)
    type_id: Ident | None = None
    template_ids: list[Ident] = field(default_factory=list)
    model_template_ids: list[Ident] = field(default_factory=list)   # all but the generic two
    id: Ident | None = None
    set_id: Ident | None = None
    version_number: str = ""
    code: CdaCode | None = None
    title: str = ""
    effective_time: str = ""
    confidentiality: CdaCode | None = None
    language_code: str = ""
    patient: CdaPatient | None = None
    authors: list[CdaPerson] = field(default_factory=list)
    legal_authenticator: CdaPerson | None = None
    authenticators: list[CdaPerson] = field(default_factory=list)
    custodian: CdaOrganization | None = None
    service_events: list[CdaServiceEvent] = field(default_factory=list)
    encounter: CdaEncounter | None = None
    related_documents: list[CdaRelatedDocument] = field(default_factory=list)
    body: str = ""                         # "structuredBody" | "nonXMLBody" | ""
    media_type: str = ""                   # nonXMLBody/text/@mediaType
    representation: str = ""               # nonXMLBody/text/@representation
    auto_presentable: bool = False

    @property
    def document_model(self) -> str:
        """The most specific document-model templateId, as "root" or "root:extension"."""
        return document_model(self.model_template_ids)

    @property
    def service_event(self) -> CdaServiceEvent | None:
        return self.service_events[0] if self.service_events else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["document_model"] = self.document_model
        return out


def document_model(model_templates: list[Ident]) -> str:
    """CI-SIS models are 1.2.250.1.213.1.1.1.x (the last one is the most specific)."""
    if not model_templates:
        return ""
    roots = [t for t in model_templates if t[0] == TEMPLATE_XDS_SD]
    if not roots:
        roots = [t for t in model_templates if t[0].startswith(CISIS_MODEL_PREFIX)] or model_templates
    root, ext = roots[-1]
    return f"{root}:{ext}" if ext else root


# --- reading ------------------------------------------------------------------------------
# One pass over each element's children into a {local name: [elements]} dict, then plain
# dict lookups: lxml's find() re-scans the children on every call.

_N = len(_H)
Kids = dict[str, list[etree._Element]]


_shared = threading.local()   # .buckets: a child index to reuse (the rules layer's), while reading


def _kids(el: etree._Element | None) -> Kids:
    buckets: dict[etree._Element, Kids] | None = getattr(_shared, "buckets", None)
    if buckets is not None and el is not None:
        found = buckets.get(el)
        if found is None:
            found = buckets[el] = _index(el)
        return found
    return _index(el)


def _index(el: etree._Element | None) -> Kids:
    out: Kids = {}
    if el is not None:
        for child in el.iterchildren(tag=etree.Element):
            tag = child.tag
            if tag.startswith(_H):
                name = tag[_N:]
                bucket = out.get(name)
                if bucket is None:
                    out[name] = [child]
                else:
                    bucket.append(child)
    return out


def _one(kids: Kids, name: str) -> etree._Element | None:
    found = kids.get(name)
    return found[0] if found else None


def _text(el: etree._Element | None) -> str:
    if el is None:
        return ""
    text = text_of(el) if len(el) else (el.text or "")
    return " ".join(text.split())


def _ii(el: etree._Element | None) -> Ident | None:
    if el is None or el.get("nullFlavor"):
        return None
    return (el.get("root", ""), el.get("extension", ""))


def _ids(kids: Kids) -> list[Ident]:
    return [i for i in (_ii(e) for e in kids.get("id", ())) if i is not None]


def _code(el: etree._Element | None) -> CdaCode | None:
    if el is None:
        return None
    return CdaCode(el.get("code", ""), el.get("codeSystem", ""), el.get("displayName", ""),
                   el.get("codeSystemName", ""))


def _value(el: etree._Element | None) -> str:
    return "" if el is None else el.get("value", "")


def _telecoms(kids: Kids) -> list[str]:
    return [t.get("value", "") for t in kids.get("telecom", ()) if t.get("value")]


def _organization(el: etree._Element | None) -> CdaOrganization | None:
    if el is None:
        return None
    kids = _kids(el)
    return CdaOrganization(ids=_ids(kids), name=_text(_one(kids, "name")),
                           industry_code=_code(_one(kids, "standardIndustryClassCode")),
                           telecoms=_telecoms(kids))


def _person_name(person: CdaPerson, name: etree._Element | None) -> None:
    if name is None:
        return
    kids = _kids(name)
    person.family = _text(_one(kids, "family"))
    person.given = [_text(g) for g in kids.get("given", ())]
    person.prefix = _text(_one(kids, "prefix"))
    person.suffix = _text(_one(kids, "suffix"))


def _assigned(entity: etree._Element | None) -> CdaPerson:
    person = CdaPerson()
    if entity is None:
        return person
    kids = _kids(entity)
    person.ids = _ids(kids)
    person.code = _code(_one(kids, "code"))
    person.telecoms = _telecoms(kids)
    who = _one(kids, "assignedPerson")
    if who is not None:
        _person_name(person, next(who.iterchildren(_H + "name"), None))
    device = _one(kids, "assignedAuthoringDevice")
    if device is not None:
        dev = _kids(device)
        person.device = " / ".join(x for x in (_text(_one(dev, "manufacturerModelName")),
                                               _text(_one(dev, "softwareName"))) if x)
    person.organization = _organization(_one(kids, "representedOrganization"))
    return person


def _participation(el: etree._Element, entity_tag: str) -> CdaPerson:
    kids = _kids(el)
    person = _assigned(_one(kids, entity_tag))
    person.time = _value(_one(kids, "time"))
    person.function_code = _code(_one(kids, "functionCode"))
    sig = _one(kids, "signatureCode")
    person.signature_code = "" if sig is None else sig.get("code", "")
    return person


def _patient(record_target: etree._Element) -> CdaPatient:
    role = next(record_target.iterchildren(_H + "patientRole"), None)
    if role is None:
        return CdaPatient()
    role_kids = _kids(role)
    p = CdaPatient(ids=_ids(role_kids))
    p.ins = next((i for i in p.ids if i[0] in INS_ROOTS), None)
    patient = _one(role_kids, "patient")
    if patient is None:
        return p
    kids = _kids(patient)
    name = _one(kids, "name")
    if name is not None:
        for part in name.iterchildren(_H + "family", _H + "given"):
            value, qualifier = _text(part), part.get("qualifier", "")
            if part.tag == _H + "family":
                p.family_names.append(value)
                if qualifier == "BR" and not p.birth_name:
                    p.birth_name = value
                elif qualifier in ("CL", "SP") and not p.used_name:
                    p.used_name = value
            elif qualifier == "BR" and not p.first_given_name:
                p.first_given_name = value
            elif qualifier == "CL" and not p.used_given_name:
                p.used_given_name = value
            elif not qualifier:
                p.given_names.append(value)
    p.birth_time = _value(_one(kids, "birthTime"))
    gender = _one(kids, "administrativeGenderCode")
    p.gender = "" if gender is None else gender.get("code", "")
    birthplace = _one(kids, "birthplace")
    if birthplace is not None:
        addr = _path(birthplace, "place", "addr")
        if addr is not None:
            addr_kids = _kids(addr)
            p.birthplace_code = _text(_one(addr_kids, "county"))
            p.birthplace_city = _text(_one(addr_kids, "city"))
    deceased = next(patient.iterchildren(f"{{{SDTC}}}deceasedInd"), None)
    p.deceased = deceased is not None and deceased.get("value") == "true"
    return p


def _path(el: etree._Element | None, *steps: str) -> etree._Element | None:
    for step in steps:
        if el is None:
            return None
        el = next(el.iterchildren(_H + step), None)
    return el


def _interval(el: etree._Element | None) -> tuple[str, str]:
    if el is None:
        return "", ""
    if el.get("value"):
        return el.get("value", ""), ""
    kids = _kids(el)
    return _value(_one(kids, "low")), _value(_one(kids, "high"))


def _service_event(event: etree._Element) -> CdaServiceEvent:
    kids = _kids(event)
    start, stop = _interval(_one(kids, "effectiveTime"))
    return CdaServiceEvent(ids=_ids(kids), code=_code(_one(kids, "code")), start=start, stop=stop,
                           performers=[_participation(p, "assignedEntity") for p in kids.get("performer", ())])


def _encounter(enc: etree._Element) -> CdaEncounter:
    kids = _kids(enc)
    start, stop = _interval(_one(kids, "effectiveTime"))
    facility = _path(_one(kids, "location"), "healthCareFacility")
    fac = _kids(facility)
    responsible = _one(kids, "responsibleParty")
    return CdaEncounter(
        ids=_ids(kids), code=_code(_one(kids, "code")), start=start, stop=stop,
        facility_code=_code(_one(fac, "code")) if facility is not None else None,
        facility_ids=_ids(fac), location_name=_text(_path(_one(fac, "location"), "name")),
        responsible=None if responsible is None else _assigned(_path(responsible, "assignedEntity")))


def read_header_element(doc: etree._Element, auto_presentable: bool = False,
                        buckets: dict[etree._Element, Kids] | None = None) -> CdaHeader:
    """Read the header of a parsed ClinicalDocument element.

    `buckets`: a child index {element: {local name: [hl7 children]}} already built for this
    tree (the rules layer's RuleContext), reused and completed instead of rebuilt.
    """
    if doc.tag != CLINICAL_DOCUMENT:
        raise ValueError(f"l'élément {doc.tag} n'est pas un ClinicalDocument CDA")
    if buckets is None:
        return _read_header(doc, auto_presentable)
    _shared.buckets = buckets
    try:
        return _read_header(doc, auto_presentable)
    finally:
        _shared.buckets = None


def _read_header(doc: etree._Element, auto_presentable: bool) -> CdaHeader:
    h = CdaHeader(auto_presentable=auto_presentable)
    for child in doc.iterchildren(tag=etree.Element):
        tag = child.tag
        if not tag.startswith(_H):
            continue
        name = tag[_N:]
        if name == "realmCode":
            h.realm_codes.append(child.get("code", ""))
        elif name == "typeId":
            h.type_id = (child.get("root", ""), child.get("extension", ""))
        elif name == "templateId":
            tid = (child.get("root", ""), child.get("extension", ""))
            h.template_ids.append(tid)
            if tid[0] not in GENERIC_TEMPLATES:
                h.model_template_ids.append(tid)
        elif name == "id":
            h.id = _ii(child)
        elif name == "code":
            h.code = _code(child)
        elif name == "title":
            h.title = _text(child)
        elif name == "effectiveTime":
            h.effective_time = child.get("value", "")
        elif name == "confidentialityCode":
            h.confidentiality = _code(child)
        elif name == "languageCode":
            h.language_code = child.get("code", "")
        elif name == "setId":
            h.set_id = _ii(child)
        elif name == "versionNumber":
            h.version_number = child.get("value", "")
        elif name == "recordTarget":
            if h.patient is None:
                h.patient = _patient(child)
        elif name == "author":
            h.authors.append(_participation(child, "assignedAuthor"))
        elif name == "custodian":
            h.custodian = _organization(_path(child, "assignedCustodian", "representedCustodianOrganization"))
        elif name == "legalAuthenticator":
            h.legal_authenticator = _participation(child, "assignedEntity")
        elif name == "authenticator":
            h.authenticators.append(_participation(child, "assignedEntity"))
        elif name == "documentationOf":
            event = _path(child, "serviceEvent")
            if event is not None:
                h.service_events.append(_service_event(event))
        elif name == "relatedDocument":
            parent = _path(child, "parentDocument")
            kids = _kids(parent)
            h.related_documents.append(CdaRelatedDocument(
                type_code=child.get("typeCode", ""), parent_ids=_ids(kids),
                parent_set_id=_ii(_one(kids, "setId")), parent_version=_value(_one(kids, "versionNumber"))))
        elif name == "componentOf":
            enc = _path(child, "encompassingEncounter")
            if enc is not None:
                h.encounter = _encounter(enc)
        elif name == "component":
            for body in child.iterchildren(_H + "structuredBody", _H + "nonXMLBody"):
                if body.tag == _H + "structuredBody":
                    h.body = "structuredBody"
                else:
                    h.body = "nonXMLBody"
                    text = next(body.iterchildren(_H + "text"), None)
                    if text is not None:
                        h.media_type = text.get("mediaType", "")
                        h.representation = text.get("representation", "")
    return h


def read_header(data: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> CdaHeader:
    """Parse (hardened) and read the header; XmlRejected or ValueError when that is impossible."""
    parsed = parse_cda(data, limits)
    if parsed.clinical_document is None:
        raise ValueError(f"pas un document CDA : l'élément racine est {parsed.root.tag}")
    return read_header_element(parsed.clinical_document, parsed.auto_presentable)
