"""XDS metadata (the model) <-> MHD 4.2 resources, in both directions, in one place.

Follows the MHD "FHIR maps": DocumentEntry <-> DocumentReference, SubmissionSet <->
List(code=submissionset), Folder <-> List(code=folder); entryUUID is the resource id and
the `official` urn:uuid identifier, uniqueId is masterIdentifier (SubmissionSet/Folder:
the `usual` identifier) written `urn:oid:` when it is an OID; codes are Coding
system/code with OID schemes as `urn:oid:` (see `codes`). Resources are FHIR JSON dicts:
`formats` parses and serialises them with the fhir.resources R4B models.

Not carried by MHD and so not mapped (they stay in the registry and in ITI-18 answers):
`UNMAPPED` below. What the server says of a resource rather than of the metadata (FHIR
`meta.versionId` and `meta.lastUpdated`, and `DocumentReference.date`: when the entry was
registered, as MHD defines it) comes from the registry row (`ServerMeta`), never from a client. Hour- and minute-precision times gain seconds (FHIR has no such
precision).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..metadata.datatypes import (
    CX,
    DTM,
    XCN,
    XPN,
    DatatypeError,
    Recipient,
    is_oid,
    is_uuid_urn,
    source_patient_field,
    unique_id_parts,
)
from ..metadata.errors import ErrorCode, XdsError
from ..metadata.model import (
    Association,
    AssociationType,
    Author,
    AvailabilityStatus,
    Code,
    DocumentEntry,
    Folder,
    SubmissionSet,
)
from . import datatypes as dt
from .codes import scheme_of

Json = dict[str, Any]

MHD_SD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
PROFILE = {
    ("DocumentReference", False): MHD_SD + "IHE.MHD.Comprehensive.DocumentReference",
    ("DocumentReference", True): MHD_SD + "IHE.MHD.Minimal.DocumentReference",
    ("SubmissionSet", False): MHD_SD + "IHE.MHD.Comprehensive.SubmissionSet",
    ("SubmissionSet", True): MHD_SD + "IHE.MHD.Minimal.SubmissionSet",
    ("Folder", False): MHD_SD + "IHE.MHD.Comprehensive.Folder",
    ("Folder", True): MHD_SD + "IHE.MHD.Minimal.Folder",
}
LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
EXT_SOURCE_ID = MHD_SD + "ihe-sourceId"
EXT_DESIGNATION = MHD_SD + "ihe-designationType"
EXT_RECIPIENT = MHD_SD + "ihe-intendedRecipient"
EXT_AUTHOR_ORG = MHD_SD + "ihe-authorOrg"
PDSM_SD = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
EXT_IS_ARCHIVED = PDSM_SD + "pdsm-ext-is-archived"
EXT_PDSM_RECIPIENT = PDSM_SD + "pdsm-ext-intended-recipient"
# Ours: what MHD has no element for but a round trip needs.
EXT_MORE_AUTHORS = "urn:partage:fhir:author"
EXT_MORE_INSTITUTIONS = "urn:partage:fhir:authorInstitution"
EXT_SOURCE_PATIENT_INFO = "urn:partage:fhir:sourcePatientInfo"
URI = "urn:ietf:rfc:3986"

UNMAPPED = {
    "DocumentEntry": {"home_community_id", "extra_slots", "lid", "object_type", "repository_unique_id",
                      "document_availability", "entry_uuid_if_symbolic", "version"},
    "SubmissionSet": {"home_community_id", "extra_slots", "lid", "version"},
    "Folder": {"home_community_id", "extra_slots", "lid", "version"},
    "Author": {"classification_id"},
}

STATUS_TO_FHIR = {
    AvailabilityStatus.APPROVED: "current", AvailabilityStatus.SUBMITTED: "current",
    AvailabilityStatus.ARCHIVED: "current", AvailabilityStatus.DEPRECATED: "superseded",
    AvailabilityStatus.DELETED: "entered-in-error",
}
FHIR_TO_STATUS = {"current": AvailabilityStatus.APPROVED, "superseded": AvailabilityStatus.DEPRECATED,
                  "entered-in-error": AvailabilityStatus.DELETED}
LIST_STATUS = {"current": AvailabilityStatus.APPROVED, "retired": AvailabilityStatus.DEPRECATED,
               "entered-in-error": AvailabilityStatus.DELETED}
RELATION_TO_FHIR = {AssociationType.RPLC: "replaces", AssociationType.APND: "appends",
                    AssociationType.XFRM: "transforms", AssociationType.SIGNS: "signs"}
FHIR_TO_RELATION = {v: k for k, v in RELATION_TO_FHIR.items()}


# --- references ------------------------------------------------------------------------------
def resource_id(entry_uuid: str) -> str:
    """The FHIR id of a registry object: its entryUUID without `urn:uuid:`."""
    return entry_uuid[9:] if entry_uuid.startswith("urn:uuid:") else entry_uuid


def entry_uuid_of(rid: str) -> str:
    return rid if rid.startswith("urn:uuid:") else f"urn:uuid:{rid}"


def default_patient_reference(cx: CX) -> Json:
    """A logical reference (by identifier): what a pure mapping can say about a patient."""
    return {"identifier": dt.cx_to_identifier(cx)}


@dataclass(frozen=True)
class ServerMeta:
    """What the registry row says of a resource: its FHIR version (a counter of the row's
    changes), when it last changed and when it was registered (FHIR instants)."""

    version_id: str
    last_updated: str
    registered: str


def _with_server_meta(res: Json, meta: ServerMeta | None, *, dated: bool = False) -> None:
    if meta is None:
        return
    res["meta"]["versionId"] = meta.version_id
    res["meta"]["lastUpdated"] = meta.last_updated
    if dated and meta.registered:
        res["date"] = meta.registered


@dataclass
class Links:
    """How the output side writes references that depend on the server."""

    patient: Callable[[CX], Json] = default_patient_reference   # CX -> Reference
    content_url: Callable[[DocumentEntry], str] = lambda _doc: ""  # where ITI-68 gets the bytes


# --- small pieces -------------------------------------------------------------------------------
def concept(code: Code) -> Json:
    return {"coding": [dt.coding(code.code, code.scheme, code.display)]}


def code_of(cc: Json | None) -> Code | None:
    if not cc:
        return None
    codings = cc.get("coding") or []
    if not codings:
        return None
    c = codings[0]
    return Code(c.get("code", ""), scheme_of(c.get("system", "")), c.get("display", ""))


def _uid_value(uid: str) -> str:
    return f"urn:oid:{uid}" if is_oid(unique_id_parts(uid)[0]) else uid


def _uid_of(value: str) -> str:
    return value[8:] if value.lower().startswith("urn:oid:") else value


def _oid_value(value: str) -> str:
    return f"urn:oid:{value}" if is_oid(value) else value


def _ext(resource: Json, url: str) -> list[Json]:
    return [e for e in resource.get("extension", []) or [] if e.get("url") == url]


def _compact(resource: Json) -> Json:
    """Drop empty values so the R4B models (which refuse empty lists/objects) accept it."""
    out: Json = {}
    for key, value in resource.items():
        if isinstance(value, dict):
            value = _compact(value)
            if not value:
                continue
        elif isinstance(value, list):
            items = []
            for item in value:
                if isinstance(item, dict):
                    item = _compact(item)
                    if not item:
                        continue
                elif item is None or item == "":
                    continue
                items.append(item)
            if not items:
                continue
            value = items
        elif value is None or value == "":
            continue
        out[key] = value
    return out


# --- authors -----------------------------------------------------------------------------------
def _author_resources(author: Author, rid: str) -> list[Json]:
    """Contained resources for one author; the first one is what `author` points to."""
    only_org = (len(author.institutions) == 1 and not author.person and not author.roles
                and not author.specialties and not author.telecoms)
    if only_org:
        return [{**dt.xon_to_organization(author.institutions[0]), "id": rid}]
    if author.person and not (author.institutions or author.roles or author.specialties):
        res = {**dt.xcn_to_practitioner(author.person), "id": rid}
        if author.telecoms:
            res["telecom"] = [dt.xtn_to_contact(t) for t in author.telecoms]
        return [res]
    role: Json = {"resourceType": "PractitionerRole", "id": rid}
    out = [role]
    if author.person:
        practitioner = {**dt.xcn_to_practitioner(author.person), "id": f"{rid}-p"}
        if author.telecoms:
            practitioner["telecom"] = [dt.xtn_to_contact(t) for t in author.telecoms]
        role["practitioner"] = {"reference": f"#{rid}-p"}
        out.append(practitioner)
    elif author.telecoms:
        role["telecom"] = [dt.xtn_to_contact(t) for t in author.telecoms]
    for i, institution in enumerate(author.institutions):
        out.append({**dt.xon_to_organization(institution), "id": f"{rid}-o{i}"})
        if i == 0:
            role["organization"] = {"reference": f"#{rid}-o0"}
        else:
            role.setdefault("extension", []).append(
                {"url": EXT_MORE_INSTITUTIONS, "valueReference": {"reference": f"#{rid}-o{i}"}})
    if author.roles:
        role["code"] = [dt.cwe_to_concept(r) for r in author.roles]
    if author.specialties:
        role["specialty"] = [dt.cwe_to_concept(s) for s in author.specialties]
    return out


Resolve = Callable[[Json | None], Json | None]


def _author_of(resource: Json, resolve: Resolve) -> Author:
    kind = resource.get("resourceType")
    if kind == "Organization":
        return Author(institutions=[dt.organization_to_xon(resource)])
    if kind in ("Practitioner", "Patient", "RelatedPerson"):
        return Author(person=dt.practitioner_to_xcn(resource),
                      telecoms=[dt.contact_to_xtn(t) for t in resource.get("telecom", []) or []])
    if kind == "PractitionerRole":
        author = Author()
        practitioner = resolve(resource.get("practitioner"))
        if practitioner:
            author.person = dt.practitioner_to_xcn(practitioner)
            author.telecoms += [dt.contact_to_xtn(t) for t in practitioner.get("telecom", []) or []]
        author.telecoms += [dt.contact_to_xtn(t) for t in resource.get("telecom", []) or []]
        refs = [resource.get("organization")] + [e.get("valueReference") for e in
                                                 _ext(resource, EXT_MORE_INSTITUTIONS)]
        for ref in refs:
            org = resolve(ref)
            if org:
                author.institutions.append(dt.organization_to_xon(org))
        author.roles = [dt.concept_to_cwe(c) for c in resource.get("code", []) or []]
        author.specialties = [dt.concept_to_cwe(c) for c in resource.get("specialty", []) or []]
        return author
    if kind == "Device":
        names = resource.get("deviceName") or []
        return Author(person=XCN(family_name=names[0].get("name", "")) if names else None)
    return Author()


def _authors_out(authors: Iterable[Author], prefix: str, contained: list[Json]) -> list[Json]:
    refs = []
    for i, author in enumerate(authors):
        resources = _author_resources(author, f"{prefix}{i}")
        contained += resources
        refs.append({"reference": f"#{resources[0]['id']}"})
    return refs


def _authors_in(refs: Iterable[Json], resolve: Resolve, where: str, errors: list[XdsError]) -> list[Author]:
    out = []
    for ref in refs:
        res = resolve(ref)
        if res is None:
            errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                   f"author reference {ref.get('reference', ref)!r} does not resolve "
                                   "to a contained or submitted resource", where))
            continue
        author = _author_of(res, resolve)
        if not author.is_empty():
            out.append(author)
    return out


# --- DocumentEntry <-> DocumentReference --------------------------------------------------------
def document_reference(doc: DocumentEntry, links: Links | None = None,
                       relations: Iterable[Association] = (), meta: ServerMeta | None = None) -> Json:
    links = links or Links()
    contained: list[Json] = []
    res: Json = {"resourceType": "DocumentReference", "id": resource_id(doc.entry_uuid),
                 "meta": {"profile": [PROFILE["DocumentReference", doc.limited_metadata]]}}
    _with_server_meta(res, meta, dated=True)
    status = doc.availability_status or AvailabilityStatus.APPROVED
    if doc.unique_id:
        res["masterIdentifier"] = {"system": URI, "value": _uid_value(doc.unique_id)}
    res["identifier"] = [{"use": "official", "system": URI, "value": doc.entry_uuid}]
    res["status"] = STATUS_TO_FHIR.get(status, "current")
    if status == AvailabilityStatus.ARCHIVED:
        res["extension"] = [{"url": EXT_IS_ARCHIVED, "valueBoolean": True}]
    if doc.type_code:
        res["type"] = concept(doc.type_code)
    if doc.class_code:
        res["category"] = [concept(doc.class_code)]
    if doc.patient_id:
        res["subject"] = links.patient(doc.patient_id)
    res["author"] = _authors_out(doc.authors, "author", contained)
    if doc.legal_authenticator:
        contained.append({**dt.xcn_to_practitioner(doc.legal_authenticator), "id": "authenticator"})
        res["authenticator"] = {"reference": "#authenticator"}
    res["relatesTo"] = relates_to(doc, relations)
    if doc.comments:
        res["description"] = doc.comments
    res["securityLabel"] = [concept(c) for c in doc.confidentiality_codes]
    attachment: Json = {"contentType": doc.mime_type, "language": doc.language_code,
                        "url": doc.uri or links.content_url(doc), "title": doc.title}
    if doc.size is not None:
        attachment["size"] = doc.size
    if doc.hash:
        attachment["hash"] = dt.sha1_to_base64(doc.hash)
    if doc.creation_time:
        attachment["creation"] = dt.dtm_to_fhir(doc.creation_time)
    content: Json = {"attachment": attachment}
    if doc.format_code:
        content["format"] = dt.coding(doc.format_code.code, doc.format_code.scheme, doc.format_code.display)
    res["content"] = [content]
    context: Json = {"event": [concept(c) for c in doc.event_codes]}
    period = {}
    if doc.service_start_time:
        period["start"] = dt.dtm_to_fhir(doc.service_start_time)
    if doc.service_stop_time:
        period["end"] = dt.dtm_to_fhir(doc.service_stop_time)
    context["period"] = period
    if doc.healthcare_facility_type_code:
        context["facilityType"] = concept(doc.healthcare_facility_type_code)
    if doc.practice_setting_code:
        context["practiceSetting"] = concept(doc.practice_setting_code)
    if doc.source_patient_id or doc.source_patient_info:
        contained.append(_source_patient(doc))
        context["sourcePatientInfo"] = {"reference": "#sourcePatient"}
    context["related"] = [dt.keep({"identifier": _reference_id(r)}, r.format()) for r in doc.reference_ids]
    res["context"] = context
    res["contained"] = contained
    return _compact(res)


def _reference_id(cx: CX) -> Json:
    ident = dt.cx_to_identifier(cx)
    ident.pop("extension", None)
    return ident


def _source_patient(doc: DocumentEntry) -> Json:
    patient: Json = {"resourceType": "Patient", "id": "sourcePatient"}
    if doc.source_patient_id:
        patient["identifier"] = [{"use": "usual", **dt.cx_to_identifier(doc.source_patient_id)}]
    if doc.source_patient_info:
        patient["extension"] = [{"url": EXT_SOURCE_PATIENT_INFO, "valueString": line}
                                for line in doc.source_patient_info]
    for line in doc.source_patient_info:
        field_name, value = source_patient_field(line)
        if field_name == "PID-5" and "name" not in patient:
            xpn = XPN.parse(value)
            name: Json = {"family": xpn.family_name} if xpn.family_name else {}
            if xpn.given_name:
                name["given"] = [xpn.given_name]
            if name:
                patient["name"] = [name]
        elif field_name == "PID-7" and value[:8].isdigit() and len(value) >= 8:
            patient["birthDate"] = f"{value[:4]}-{value[4:6]}-{value[6:8]}"
        elif field_name == "PID-8" and value in ("M", "F", "U", "A", "O"):
            patient["gender"] = {"M": "male", "F": "female", "U": "unknown"}.get(value, "other")
    return patient


def _source_patient_in(patient: Json, doc: DocumentEntry) -> None:
    identifiers = patient.get("identifier") or []
    if identifiers:
        doc.source_patient_id = dt.identifier_to_cx(identifiers[0])
    lines = [e.get("valueString", "") for e in _ext(patient, EXT_SOURCE_PATIENT_INFO)]
    if lines:
        doc.source_patient_info = lines
        return
    for ident in identifiers[1:]:
        doc.source_patient_info.append(f"PID-3|{dt.identifier_to_cx(ident).format()}")
    for name in patient.get("name") or []:
        given = (name.get("given") or [""])[0]
        doc.source_patient_info.append(f"PID-5|{XPN(name.get('family', ''), given).format()}")
    if patient.get("birthDate"):
        doc.source_patient_info.append(f"PID-7|{patient['birthDate'].replace('-', '')}")
    if patient.get("gender"):
        doc.source_patient_info.append(
            f"PID-8|{ {'male': 'M', 'female': 'F', 'unknown': 'U'}.get(patient['gender'], 'O') }")


def relates_to(doc: DocumentEntry, relations: Iterable[Association]) -> list[Json]:
    out = []
    for assoc in relations:
        if assoc.source_uuid != doc.entry_uuid:
            continue
        target = {"reference": f"DocumentReference/{resource_id(assoc.target_uuid)}"}
        if assoc.association_type == AssociationType.XFRM_RPLC:
            out += [{"code": "transforms", "target": target}, {"code": "replaces", "target": target}]
        elif assoc.association_type in RELATION_TO_FHIR:
            out.append({"code": RELATION_TO_FHIR[AssociationType(assoc.association_type)],
                        "target": target})
    return out


@dataclass
class ParsedDocument:
    """A DocumentReference read into the model, with what the caller still has to resolve."""

    entry: DocumentEntry
    relations: list[tuple[str, Json]] = field(default_factory=list)   # (association type, target ref)
    url: str = ""
    data: str = ""            # attachment.data (base64), PDSm simplified publish
    errors: list[XdsError] = field(default_factory=list)


def document_entry(res: Json, resolve: Resolve, patient: Callable[[Json], CX | None],
                   code: str = ErrorCode.REGISTRY_METADATA) -> ParsedDocument:
    """DocumentReference -> DocumentEntry. `resolve` finds contained/bundle resources,
    `patient` turns a subject Reference into the XDS patient id (None: it does not resolve)."""
    doc = DocumentEntry()
    out = ParsedDocument(doc)
    where = res.get("id") or "DocumentReference"

    def error(text: str, error_code: str = code) -> None:
        out.errors.append(XdsError(error_code, text, where))

    official = [i for i in res.get("identifier") or []
                if i.get("use") == "official" and str(i.get("value", "")).startswith("urn:uuid:")]
    if official:
        doc.entry_uuid = official[0]["value"]
    elif res.get("id"):
        doc.entry_uuid = entry_uuid_of(res["id"]) if _looks_uuid(res["id"]) else res["id"]
    profiles = (res.get("meta") or {}).get("profile") or []
    doc.limited_metadata = PROFILE["DocumentReference", True] in profiles
    master = res.get("masterIdentifier") or {}
    doc.unique_id = _uid_of(master.get("value", ""))
    status = res.get("status", "")
    doc.availability_status = FHIR_TO_STATUS.get(status)
    if doc.availability_status is None:
        error(f"DocumentReference.status {status!r} is not current, superseded or entered-in-error")
    if any(e.get("valueBoolean") for e in _ext(res, EXT_IS_ARCHIVED)):
        doc.availability_status = AvailabilityStatus.ARCHIVED
    doc.type_code = code_of(res.get("type"))
    categories = res.get("category") or []
    doc.class_code = code_of(categories[0]) if categories else None
    if res.get("subject"):
        pid = patient(res["subject"])
        if pid is None:
            error(f"DocumentReference.subject {_ref_text(res['subject'])} does not resolve to a "
                  "Patient known here", ErrorCode.UNKNOWN_PATIENT_ID)
        else:
            doc.patient_id = pid
    doc.authors = _authors_in(res.get("author") or [], resolve, where, out.errors)
    if res.get("authenticator"):
        auth = resolve(res["authenticator"])
        if auth is None:
            error(f"DocumentReference.authenticator {_ref_text(res['authenticator'])} does not resolve")
        elif auth.get("resourceType") == "PractitionerRole":
            author = _author_of(auth, resolve)
            doc.legal_authenticator = author.person
        elif auth.get("resourceType") in ("Practitioner", "Patient"):
            doc.legal_authenticator = dt.practitioner_to_xcn(auth)
    for rel in res.get("relatesTo") or []:
        kind = FHIR_TO_RELATION.get(rel.get("code", ""))
        if kind is None:
            error(f"relatesTo.code {rel.get('code')!r} is not replaces, transforms, signs or appends")
            continue
        out.relations.append((str(kind), rel.get("target") or {}))
    codes_of_relations = {(k, _ref_text(t)) for k, t in out.relations}
    for relation, target in list(out.relations):
        if relation == AssociationType.XFRM and (str(AssociationType.RPLC), _ref_text(target)) in codes_of_relations:
            out.relations = [r for r in out.relations if _ref_text(r[1]) != _ref_text(target)]
            out.relations.append((str(AssociationType.XFRM_RPLC), target))
    doc.comments = res.get("description", "") or ""
    doc.confidentiality_codes = [c for c in map(code_of, res.get("securityLabel") or []) if c]
    contents = res.get("content") or []
    if len(contents) != 1:
        error(f"DocumentReference has {len(contents)} content elements; XDS needs exactly one")
    if contents:
        content = contents[0]
        attachment = content.get("attachment") or {}
        doc.mime_type = attachment.get("contentType", "") or ""
        doc.language_code = attachment.get("language", "") or ""
        doc.title = attachment.get("title", "") or ""
        out.url = attachment.get("url", "") or ""
        out.data = attachment.get("data", "") or ""
        if attachment.get("size") is not None:
            doc.size = int(attachment["size"])
        try:
            if attachment.get("hash"):
                doc.hash = dt.base64_to_sha1(attachment["hash"])
            if attachment.get("creation"):
                doc.creation_time = dt.fhir_to_dtm(attachment["creation"])
        except DatatypeError as exc:
            error(str(exc))
        fmt = content.get("format")
        if fmt:
            doc.format_code = Code(fmt.get("code", ""), scheme_of(fmt.get("system", "")), fmt.get("display", ""))
    context = res.get("context") or {}
    doc.event_codes = [c for c in map(code_of, context.get("event") or []) if c]
    period = context.get("period") or {}
    try:
        if period.get("start"):
            doc.service_start_time = dt.fhir_to_dtm(period["start"])
        if period.get("end"):
            doc.service_stop_time = dt.fhir_to_dtm(period["end"])
    except DatatypeError as exc:
        error(f"DocumentReference.context.period: {exc}")
    doc.healthcare_facility_type_code = code_of(context.get("facilityType"))
    doc.practice_setting_code = code_of(context.get("practiceSetting"))
    if context.get("sourcePatientInfo"):
        source = resolve(context["sourcePatientInfo"])
        if source is None or source.get("resourceType") != "Patient":
            error(f"context.sourcePatientInfo {_ref_text(context['sourcePatientInfo'])} does not "
                  "resolve to a Patient (contained or in the Bundle)")
        else:
            _source_patient_in(source, doc)
    for related in context.get("related") or []:
        if related.get("identifier"):
            doc.reference_ids.append(dt.kept(
                related, CX, lambda cx: dt.keep({"identifier": _reference_id(cx)}, cx.format()),
                lambda r: dt.identifier_to_cx(r["identifier"])))
    return out


def _looks_uuid(text: str) -> bool:
    return is_uuid_urn(f"urn:uuid:{text}")


def _ref_text(ref: Json | None) -> str:
    if not ref:
        return "(none)"
    if ref.get("reference"):
        return repr(ref["reference"])
    ident = ref.get("identifier") or {}
    return f"identifier {ident.get('system', '')}|{ident.get('value', '')}"


# --- SubmissionSet / Folder <-> List -----------------------------------------------------------
def _recipient_resource(recipient: Recipient, rid: str) -> list[Json]:
    author = Author(person=recipient.person,
                    institutions=[recipient.organization] if recipient.organization else [],
                    telecoms=[recipient.telecom] if recipient.telecom else [])
    return _author_resources(author, rid)


def _kept_recipient(ref: Json, recipient: Json, resolve: Resolve) -> Recipient:
    """An intendedRecipient reference's kept value, else the one read from the resource it names."""
    return dt.kept(ref, Recipient, lambda _value: {"reference": ref.get("reference")},
                   lambda _ref: _recipient_of(recipient, resolve))


def _recipient_of(resource: Json, resolve: Resolve) -> Recipient:
    author = _author_of(resource, resolve)
    return Recipient(author.institutions[0] if author.institutions else None, author.person,
                     author.telecoms[0] if author.telecoms else None)


def submission_set_list(ss: SubmissionSet, members: Iterable[tuple[str, str]] = (),
                        links: Links | None = None, meta: ServerMeta | None = None) -> Json:
    """`members`: (kind, entryUUID) of the DocumentEntries and Folders it holds."""
    links = links or Links()
    contained: list[Json] = []
    res: Json = {"resourceType": "List", "id": resource_id(ss.entry_uuid),
                 "meta": {"profile": [PROFILE["SubmissionSet", ss.limited_metadata]]},
                 "extension": []}
    _with_server_meta(res, meta)
    if ss.source_id:
        res["extension"].append({"url": EXT_SOURCE_ID, "valueIdentifier": {"value": _oid_value(ss.source_id)}})
    if ss.content_type_code:
        res["extension"].append({"url": EXT_DESIGNATION, "valueCodeableConcept": concept(ss.content_type_code)})
    for i, recipient in enumerate(ss.intended_recipients):
        contained += _recipient_resource(recipient, f"recipient{i}")
        res["extension"].append({"url": EXT_RECIPIENT,
                                 "valueReference": dt.keep({"reference": f"#recipient{i}"}, recipient.format())})
    status = ss.availability_status or AvailabilityStatus.APPROVED
    if status == AvailabilityStatus.ARCHIVED:
        res["extension"].append({"url": EXT_IS_ARCHIVED, "valueBoolean": True})
    res["identifier"] = [{"use": "usual", "system": URI, "value": _uid_value(ss.unique_id)},
                         {"use": "official", "system": URI, "value": ss.entry_uuid}]
    res["status"] = "current" if status != AvailabilityStatus.DELETED else "entered-in-error"
    res["mode"] = "working"
    res["title"] = ss.title
    res["code"] = {"coding": [{"system": LIST_TYPES, "code": "submissionset"}]}
    if ss.patient_id:
        res["subject"] = links.patient(ss.patient_id)
    if ss.submission_time:
        res["date"] = dt.dtm_to_fhir(ss.submission_time)
    authors = _authors_out(ss.authors, "author", contained)
    if authors:
        res["source"] = authors[0]
        res["extension"] += [{"url": EXT_MORE_AUTHORS, "valueReference": r} for r in authors[1:]]
    if ss.comments:
        res["note"] = [{"text": ss.comments}]
    res["entry"] = [{"item": {"reference": _member_ref(kind, uuid)}} for kind, uuid in members]
    res["contained"] = contained
    return _compact(res)


def _member_ref(kind: str, entry_uuid: str) -> str:
    return f"{'DocumentReference' if kind == 'DocumentEntry' else 'List'}/{resource_id(entry_uuid)}"


def folder_list(folder: Folder, members: Iterable[str] = (), links: Links | None = None,
                meta: ServerMeta | None = None) -> Json:
    links = links or Links()
    status = folder.availability_status or AvailabilityStatus.APPROVED
    res: Json = {"resourceType": "List", "id": resource_id(folder.entry_uuid),
                 "meta": {"profile": [PROFILE["Folder", folder.limited_metadata]]},
                 "extension": [{"url": EXT_DESIGNATION, "valueCodeableConcept": concept(c)} for c in folder.codes],
                 "identifier": [{"use": "usual", "system": URI, "value": _uid_value(folder.unique_id)},
                                {"use": "official", "system": URI, "value": folder.entry_uuid}],
                 "status": "current" if status != AvailabilityStatus.DELETED else "entered-in-error",
                 "mode": "working", "title": folder.title,
                 "code": {"coding": [{"system": LIST_TYPES, "code": "folder"}]}}
    _with_server_meta(res, meta)
    if folder.patient_id:
        res["subject"] = links.patient(folder.patient_id)
    if folder.last_update_time:
        res["date"] = dt.dtm_to_fhir(folder.last_update_time)
    if folder.comments:
        res["note"] = [{"text": folder.comments}]
    res["entry"] = [{"item": {"reference": _member_ref("DocumentEntry", uuid)}} for uuid in members]
    return _compact(res)


def list_kind(res: Json) -> str:
    """'submissionset', 'folder' or '' (another List)."""
    for c in (res.get("code") or {}).get("coding") or []:
        if c.get("system") == LIST_TYPES and c.get("code") in ("submissionset", "folder"):
            return str(c["code"])
    return ""


def _identifiers(res: Json) -> tuple[str, str]:
    unique_id = entry_uuid = ""
    for ident in res.get("identifier") or []:
        value = ident.get("value", "") or ""
        if ident.get("use") == "official" and value.startswith("urn:uuid:"):
            entry_uuid = value
        elif ident.get("use") == "usual" or (not unique_id and ident.get("use") != "official"):
            unique_id = _uid_of(value)
    if not entry_uuid and res.get("id"):
        entry_uuid = entry_uuid_of(res["id"]) if _looks_uuid(res["id"]) else res["id"]
    return unique_id, entry_uuid


ListObject = TypeVar("ListObject", SubmissionSet, Folder)


@dataclass
class ParsedList(Generic[ListObject]):
    """A List read into the model (a SubmissionSet or a Folder), with its members to resolve."""

    obj: ListObject
    members: list[Json] = field(default_factory=list)    # entry.item references
    errors: list[XdsError] = field(default_factory=list)
    where: str = ""                                      # what errors are located by

    @classmethod
    def start(cls, obj: ListObject, res: Json) -> ParsedList[ListObject]:
        """The reading of `res` into `obj` begun: its identifiers, and the Minimal profile
        read as limited metadata."""
        out = cls(obj, where=res.get("id") or obj.kind)
        obj.unique_id, obj.entry_uuid = _identifiers(res)
        profiles = (res.get("meta") or {}).get("profile") or []
        obj.limited_metadata = PROFILE[obj.kind, True] in profiles
        return out

    def date(self, res: Json, code: str) -> DTM | None:
        """List.date as a DTM; None when absent or (an error noted) malformed."""
        if not res.get("date"):
            return None
        try:
            return dt.fhir_to_dtm(res["date"])
        except DatatypeError as exc:
            self.errors.append(XdsError(code, f"List.date: {exc}", self.where))
            return None

    def subject(self, res: Json, patient: Callable[[Json], CX | None], known_here: str = "") -> CX | None:
        """The patient List.subject resolves to; None when absent or (an error noted) unknown."""
        if not res.get("subject"):
            return None
        pid = patient(res["subject"])
        if pid is None:
            self.errors.append(XdsError(ErrorCode.UNKNOWN_PATIENT_ID,
                                        f"List.subject {_ref_text(res['subject'])} does not resolve{known_here}",
                                        self.where))
        return pid


def submission_set(res: Json, resolve: Resolve, patient: Callable[[Json], CX | None],
                   code: str = ErrorCode.REGISTRY_METADATA) -> ParsedList[SubmissionSet]:
    ss = SubmissionSet()
    out = ParsedList.start(ss, res)
    where = out.where
    for e in _ext(res, EXT_SOURCE_ID):
        ss.source_id = _uid_of((e.get("valueIdentifier") or {}).get("value", ""))
    for e in _ext(res, EXT_DESIGNATION):
        ss.content_type_code = code_of(e.get("valueCodeableConcept"))
    for e in _ext(res, EXT_RECIPIENT) + _ext(res, EXT_PDSM_RECIPIENT):
        ref = e.get("valueReference") or {}
        recipient = resolve(ref)
        if recipient is None:
            out.errors.append(XdsError(code, f"intendedRecipient {_ref_text(ref)} does not resolve", where))
        else:
            ss.intended_recipients.append(_kept_recipient(ref, recipient, resolve))
    ss.availability_status = AvailabilityStatus.APPROVED
    if any(e.get("valueBoolean") for e in _ext(res, EXT_IS_ARCHIVED)):
        ss.availability_status = AvailabilityStatus.ARCHIVED
    ss.title = res.get("title", "") or ""
    ss.patient_id = out.subject(res, patient, known_here=" to a Patient known here")
    ss.submission_time = out.date(res, code)
    author_refs = ([res["source"]] if res.get("source") else []) + [
        e.get("valueReference") for e in _ext(res, EXT_MORE_AUTHORS)]
    ss.authors = _authors_in(author_refs, resolve, where, out.errors)
    for e in _ext(res, EXT_AUTHOR_ORG):
        org = resolve(e.get("valueReference"))
        if org is not None:
            ss.authors.append(Author(institutions=[dt.organization_to_xon(org)]))
    ss.comments = " ".join(n.get("text", "") for n in res.get("note") or []).strip()
    out.members = [e.get("item") or {} for e in res.get("entry") or []]
    return out


def folder(res: Json, patient: Callable[[Json], CX | None],
           code: str = ErrorCode.REGISTRY_METADATA) -> ParsedList[Folder]:
    f = Folder()
    out = ParsedList.start(f, res)
    f.codes = [c for c in (code_of(e.get("valueCodeableConcept")) for e in _ext(res, EXT_DESIGNATION)) if c]
    f.title = res.get("title", "") or ""
    f.comments = " ".join(n.get("text", "") for n in res.get("note") or []).strip()
    f.availability_status = LIST_STATUS.get(res.get("status", "current"), AvailabilityStatus.APPROVED)
    f.last_update_time = out.date(res, code)
    f.patient_id = out.subject(res, patient)
    out.members = [e.get("item") or {} for e in res.get("entry") or []]
    return out


def contained_resolver(res: Json, fallback: Resolve | None = None) -> Resolve:
    """Resolve `#id` against the resource's contained resources, anything else by `fallback`."""
    contained = {c.get("id"): c for c in res.get("contained") or []}

    def resolve(ref: Json | None) -> Json | None:
        if not ref or not ref.get("reference"):
            return None
        target = ref["reference"]
        if target.startswith("#"):
            return contained.get(target[1:])
        return fallback(ref) if fallback else None
    return resolve


def patient_from_identifier(ref: Json) -> CX | None:
    """A logical patient reference (identifier only) as a CX; None for anything else."""
    ident = ref.get("identifier")
    if not ident or not ident.get("value"):
        return None
    return dt.identifier_to_cx(ident)
