"""Every FHIR search parameter this server understands, declared once.

A declaration says the parameter's name and FHIR type, the element it searches (a FHIRPath
expression), the registry index it is answered from (`partage.registry.search_index`), how a
FHIR token becomes that index's values (`tokens`), whether it sorts, and which modifiers it
takes. From these tables `partage.fhir.search` parses a request (unknown names and modifiers,
values of the wrong type), builds the registry criteria, writes the self and next links, and
`partage.fhir.capability` writes the CapabilityStatement's searchParam lists: a parameter the
statement lists is one the routes answer, and the reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..metadata.datatypes import is_oid
from ..metadata.kinds import KIND_DOCUMENT, KIND_FOLDER, KIND_SUBMISSION_SET
from ..mhd.codes import SCHEME_OF_URL, scheme_of
from ..mhd.outcome import FhirError
from ..registry.search_index import (
    ColumnIndex,
    DateIndex,
    Index,
    NameIndex,
    PatientIdentifierIndex,
    PatientIdIndex,
    PatientIndex,
    PeriodIndex,
    TokenIndex,
    TokenMatch,
)

ParamType = Literal["number", "date", "string", "token", "reference", "uri", "special"]
# A FHIR token (system or None, value or None: `system|`, `value`, `|value` = system "") -> what
# to look for, in which index; an empty list: nothing can match (e.g. a foreign identifier system).
Tokens = Callable[[str | None, str | None], list[tuple[Index, TokenMatch]]]

URI = "urn:ietf:rfc:3986"
MHD_SP = "https://profiles.ihe.net/ITI/MHD/SearchParameter/"
CORE_SP = "http://hl7.org/fhir/SearchParameter/"
DOC_STATUS_SYSTEM = "http://hl7.org/fhir/document-reference-status"
LIST_STATUS_SYSTEM = "http://hl7.org/fhir/list-status"
LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
BOOLEAN_SYSTEM = "http://hl7.org/fhir/special-values"


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: ParamType
    expression: str                          # the element searched (FHIRPath)
    documentation: str
    index: Index | None = None               # None: the door answers it itself (patient, _content)
    tokens: Tokens | None = None             # token parameters: FHIR token -> index values
    sort: DateIndex | ColumnIndex | PatientIndex | None = None
    modifiers: frozenset[str] = frozenset()
    also: tuple[Index, ...] = ()             # string parameters: more indexes searched (OR)
    definition: str = ""                     # the SearchParameter's canonical URL, when one exists


@dataclass(frozen=True)
class ResourceSearch:
    """What a resource type's search answers: its parameters and its default order."""

    resource_type: str
    params: tuple[SearchParam, ...]
    default_sort: tuple[str, ...] = ()       # e.g. ("-date",)
    results: tuple[str, ...] = ("_count", "_sort", "_total")
    by_name: dict[str, SearchParam] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.params})


# --- the syntax of a token (FHIR R4 search.html#token, #escaping) --------------------------------
# One reading of `system|value`, its commas (OR) and its backslash escapes (`\,` `\|` `\$` `\\`) for
# every parameter, `patient.identifier` (fhir.patients.patient_token) included.
def split_escaped(text: str, sep: str, limit: int = -1) -> list[str]:
    """Split on `sep` where it is not escaped by a backslash (the escapes stay)."""
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep and limit != 0:
            parts.append("".join(current))
            current = []
            limit -= 1
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    out, escaped = [], False
    for ch in text:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(ch)
    return "".join(out)


def token(text: str) -> tuple[str | None, str | None]:
    """`system|value` -> (system, value): None is "any", `|value` has the system ""."""
    parts = split_escaped(text, "|", 1)
    if len(parts) == 1:
        value = unescape(parts[0])
        return None, value or None
    system, value = unescape(parts[0]), unescape(parts[1])
    return system, value or None


# --- tokens ----------------------------------------------------------------------------------
def schemes_of(system: str) -> list[str]:
    """Every XDS codingScheme a FHIR Coding.system may stand for (the scheme as stored may be the
    OID or, from some sources, the URL itself)."""
    schemes = {scheme_of(system), system}
    schemes |= {url for url, oid in SCHEME_OF_URL.items() if oid == scheme_of(system)}
    if is_oid(scheme_of(system)):
        schemes.add(f"urn:oid:{scheme_of(system)}")
    return sorted(s for s in schemes if s)


def coded(attribute: str) -> Tokens:
    index = TokenIndex((attribute,))

    def tokens(system: str | None, value: str | None) -> list[tuple[Index, TokenMatch]]:
        if system is None or system == "":   # any system / explicitly none
            return [(index, TokenMatch(system, value))]
        return [(index, TokenMatch(s, value)) for s in schemes_of(system)]
    return tokens


def coded_param(name: str, expression: str, documentation: str, attribute: str) -> SearchParam:
    """A token parameter on one coded attribute of the model (system|code, either side optional)."""
    return SearchParam(name, "token", expression, documentation, TokenIndex((attribute,)), coded(attribute))


def related_tokens(system: str | None, value: str | None) -> list[tuple[Index, TokenMatch]]:
    """referenceIdList: the CX's assigning authority (an OID, `urn:oid:` in FHIR) and its id."""
    index = TokenIndex(("refid",))
    return [(index, TokenMatch(scheme_of(system) if system else system, value))]


UNIQUE_ID, ENTRY_UUID = ColumnIndex("unique_id"), ColumnIndex("entry_uuid")


def identifier_tokens(system: str | None, value: str | None) -> list[tuple[Index, TokenMatch]]:
    """masterIdentifier (uniqueId, `urn:oid:` for an OID) or the `official` entryUUID identifier;
    both have the system urn:ietf:rfc:3986, so another system (or none) matches nothing."""
    if system is not None and system != URI:
        return []
    if value is None:
        return [(UNIQUE_ID, TokenMatch(None, None)), (ENTRY_UUID, TokenMatch(None, None))]
    out: list[tuple[Index, TokenMatch]] = [(ENTRY_UUID, TokenMatch(None, value))]
    if value.lower().startswith("urn:oid:"):
        out.append((UNIQUE_ID, TokenMatch(None, value[8:])))
    elif not is_oid(value):   # an OID uniqueId is written urn:oid: in FHIR
        out.append((UNIQUE_ID, TokenMatch(None, value)))
    return out


def id_tokens(system: str | None, value: str | None) -> list[tuple[Index, TokenMatch]]:
    if system or value is None:
        return []
    return [(ENTRY_UUID, TokenMatch(None, value if value.startswith("urn:uuid:") else f"urn:uuid:{value}"))]


def code_table(system_uri: str, table: dict[str, list[str]], column: str, name: str) -> Tokens:
    """A code of a fixed FHIR value set, stored as registry values (statuses, List types)."""
    index = ColumnIndex(column)

    def tokens(system: str | None, value: str | None) -> list[tuple[Index, TokenMatch]]:
        if system not in (None, system_uri):
            return []
        if value is None:
            return [(index, TokenMatch(None, v)) for values in table.values() for v in values]
        if value not in table:
            raise FhirError.one(400, f"{name}={value}: expected one of {', '.join(table)}")
        return [(index, TokenMatch(None, v)) for v in table[value]]
    return tokens


def oid_value(column: str) -> Tokens:
    """An OID held in a column, written `urn:oid:` in FHIR (sourceId)."""
    index = ColumnIndex(column)

    def tokens(system: str | None, value: str | None) -> list[tuple[Index, TokenMatch]]:
        if system not in (None, URI):
            return []
        return [(index, TokenMatch(None, value[8:] if value and value.lower().startswith("urn:oid:") else value))]
    return tokens


def patient_identifier_tokens(system: str | None, value: str | None) -> list[tuple[Index, TokenMatch]]:
    """A patient's identifiers are CX (an OID authority, `urn:oid:` in FHIR, and a value)."""
    if system == "":
        return []   # every identifier here has a system
    authority = scheme_of(system) if system is not None else None
    if authority is not None and not is_oid(authority):
        return []
    return [(PatientIdentifierIndex(), TokenMatch(authority, value))]


def patient_id_tokens(system: str | None, value: str | None) -> list[tuple[Index, TokenMatch]]:
    return [] if system or value is None else [(PatientIdIndex(), TokenMatch(None, value))]


DOCUMENT_STATUS = {"current": ["Approved", "Archived"], "superseded": ["Deprecated"],
                   "entered-in-error": ["Deleted"]}
LIST_STATUS = {"current": ["Approved", "Archived"], "retired": ["Deprecated"], "entered-in-error": ["Deleted"]}
LIST_KINDS = {"submissionset": [KIND_SUBMISSION_SET], "folder": [KIND_FOLDER]}
ARCHIVED = {"true": ["Archived"], "false": ["Approved", "Deprecated", "Deleted", "Submitted"]}

REGISTERED = DateIndex(("registered_at",))
LAST_UPDATED = DateIndex(("updated_at",))
CREATION = DateIndex(("creation_time",), "creation_high")
SERVICE_START = DateIndex(("service_start",), "service_start_high")
SERVICE_STOP = DateIndex(("service_stop",), "service_stop_high")
LIST_DATE = DateIndex(("submission_time", "last_update_time"))
BIRTHDATE = PatientIndex("birthdate")


# --- the resources --------------------------------------------------------------------------------
COMMON_DOCUMENT_LIST = (
    SearchParam("patient", "reference", "subject", "the patient: Patient/<id> or <id> (ITI-67/66 require patient or "
                "patient.identifier); :Patient, the one type it may name (FHIR R4 search.html#reference)",
                modifiers=frozenset({"identifier", "Patient"})),
    SearchParam("patient.identifier", "token", "subject.identifier", "an identifier of the patient "
                "(system|value; the system is the urn:oid: of its assigning authority)"),
)

DOCUMENT_REFERENCE = ResourceSearch("DocumentReference", (
    *(SearchParam(p.name, p.type, f"DocumentReference.{p.expression}", p.documentation, modifiers=p.modifiers)
      for p in COMMON_DOCUMENT_LIST),
    SearchParam("status", "token", "DocumentReference.status", "current | superseded | entered-in-error "
                "(required by ITI-67)", ColumnIndex("status"),
                code_table(DOC_STATUS_SYSTEM, DOCUMENT_STATUS, "status", "status")),
    SearchParam("identifier", "token", "DocumentReference.masterIdentifier | DocumentReference.identifier",
                "uniqueId (urn:oid:...) or entryUUID (urn:uuid:...), system urn:ietf:rfc:3986",
                UNIQUE_ID, identifier_tokens),
    SearchParam("_id", "token", "DocumentReference.id", "the logical id (the entryUUID)", ENTRY_UUID, id_tokens),
    SearchParam("date", "date", "DocumentReference.date", "when the DocumentReference was created: when "
                "the registry registered the DocumentEntry (MHD)", REGISTERED, sort=REGISTERED),
    SearchParam("creation", "date", "DocumentReference.content.attachment.creation",
                "DocumentEntry.creationTime (MHD DocumentReference-Creation)", CREATION,
                sort=DateIndex(("creation_time",)), definition=f"{MHD_SP}DocumentReference-Creation"),
    SearchParam("_lastUpdated", "date", "DocumentReference.meta.lastUpdated", "last change of the "
                "entry (its registration or a status change)", LAST_UPDATED, sort=LAST_UPDATED),
    SearchParam("period", "date", "DocumentReference.context.period", "serviceStartTime..serviceStopTime "
                "(a missing side is open)", PeriodIndex("service_start", "service_stop_high"),
                sort=DateIndex(("service_start",))),
    SearchParam("period-start", "date", "DocumentReference.context.period.start", "serviceStartTime",
                SERVICE_START, sort=DateIndex(("service_start",))),
    SearchParam("period-end", "date", "DocumentReference.context.period.end", "serviceStopTime",
                SERVICE_STOP, sort=DateIndex(("service_stop",))),
    SearchParam("author.given", "string", "DocumentReference.author.resolve().given", "a given name of an "
                "author person (prefix, accents and case folded)", NameIndex("given")),
    SearchParam("author.family", "string", "DocumentReference.author.resolve().family", "the family name of "
                "an author person (prefix, accents and case folded)", NameIndex("family")),
    coded_param("category", "DocumentReference.category", "classCode (system|code)", "class"),
    coded_param("type", "DocumentReference.type", "typeCode (system|code)", "type"),
    coded_param("setting", "DocumentReference.context.practiceSetting", "practiceSettingCode", "setting"),
    coded_param("facility", "DocumentReference.context.facilityType", "healthcareFacilityTypeCode", "hcft"),
    coded_param("event", "DocumentReference.context.event", "eventCodeList", "event"),
    coded_param("security-label", "DocumentReference.securityLabel", "confidentialityCode", "conf"),
    coded_param("format", "DocumentReference.content.format", "formatCode", "format"),
    # MHD 4.2 ITI-67 (and its DocumentResponder CapabilityStatement): `related` is of type reference
    # (DocumentReference.context.related); the referenceIdList is held there as identifiers, searched
    # by related:identifier=system|value (FHIR R4 search.html#reference, :identifier).
    SearchParam("related", "reference", "DocumentReference.context.related", "referenceIdList, held as "
                "context.related.identifier: related:identifier=system|value (urn:oid: of the assigning "
                "authority, and the id); no referenceIdList entry is a literal reference, so a plain "
                "reference matches none", TokenIndex(("refid",)), related_tokens,
                modifiers=frozenset({"identifier"}), definition=f"{CORE_SP}DocumentReference-related"),
    SearchParam("isArchived", "token", "DocumentReference.extension('pdsm-ext-is-archived')",
                "PDSm: true keeps archived entries only, false leaves them out", ColumnIndex("status"),
                code_table(BOOLEAN_SYSTEM, ARCHIVED, "status", "isArchived")),
    SearchParam("_content", "string", "DocumentReference.content.attachment", "MHD Full-Text Search: words "
                "of the documents' text, with the other parameters (docs/clinical-reading.md)"),
), default_sort=("-date",))

LIST = ResourceSearch("List", (
    *(SearchParam(p.name, p.type, f"List.{p.expression}", p.documentation, modifiers=p.modifiers)
      for p in COMMON_DOCUMENT_LIST),
    SearchParam("status", "token", "List.status", "current | retired | entered-in-error (required by ITI-66)",
                ColumnIndex("status"), code_table(LIST_STATUS_SYSTEM, LIST_STATUS, "status", "status")),
    SearchParam("code", "token", "List.code", "submissionset | folder (both when absent)", ColumnIndex("kind"),
                code_table(LIST_TYPES, LIST_KINDS, "kind", "code")),
    SearchParam("identifier", "token", "List.identifier", "uniqueId (urn:oid:...) or entryUUID (urn:uuid:...)",
                UNIQUE_ID, identifier_tokens),
    SearchParam("_id", "token", "List.id", "the logical id (the entryUUID)", ENTRY_UUID, id_tokens),
    SearchParam("date", "date", "List.date", "SubmissionSet submissionTime, Folder lastUpdateTime", LIST_DATE,
                sort=LIST_DATE),
    SearchParam("_lastUpdated", "date", "List.meta.lastUpdated", "last change of the entry", LAST_UPDATED,
                sort=LAST_UPDATED),
    SearchParam("designationType", "token", "List.extension('ihe-designationType')",
                "SubmissionSet contentTypeCode, Folder codeList", TokenIndex(("ctype", "folder")),
                lambda s, v: [*coded("ctype")(s, v), *coded("folder")(s, v)]),
    SearchParam("sourceId", "token", "List.extension('ihe-sourceId')", "SubmissionSet sourceId (urn:oid:...)",
                ColumnIndex("source_id"), oid_value("source_id")),
    SearchParam("source.given", "string", "List.source.resolve().given", "a given name of an author person",
                NameIndex("given")),
    SearchParam("source.family", "string", "List.source.resolve().family", "the family name of an author person",
                NameIndex("family")),
    SearchParam("isArchived", "token", "List.extension('pdsm-ext-is-archived')", "PDSm: archived entries only "
                "(true) or none (false)", ColumnIndex("status"),
                code_table(BOOLEAN_SYSTEM, ARCHIVED, "status", "isArchived")),
), default_sort=("-date",))

LIST_KINDS_ALL = (KIND_SUBMISSION_SET, KIND_FOLDER)
DOCUMENT_KINDS = (KIND_DOCUMENT,)

PATIENT = ResourceSearch("Patient", (
    SearchParam("identifier", "token", "Patient.identifier", "system|value (system: urn:oid: of the assigning "
                "authority), value alone, or system|", PatientIdentifierIndex(), patient_identifier_tokens),
    SearchParam("_id", "token", "Patient.id", "the logical id", PatientIdIndex(), patient_id_tokens),
    SearchParam("family", "string", "Patient.name.family", "a family name (prefix, accents and case folded)",
                PatientIndex("family"), modifiers=frozenset({"exact"})),
    SearchParam("given", "string", "Patient.name.given", "a given name (prefix, accents and case folded)",
                PatientIndex("given"), modifiers=frozenset({"exact"})),
    SearchParam("name", "string", "Patient.name", "a family or given name (prefix, accents and case folded)",
                PatientIndex("family"), modifiers=frozenset({"exact"}), also=(PatientIndex("given"),)),
    SearchParam("birthdate", "date", "Patient.birthDate", "the birth date, with prefixes and partial dates "
                "(1970, 1970-05)", BIRTHDATE, sort=BIRTHDATE),
))

# Result parameters every search takes (and the CapabilityStatement lists with their types).
RESULT_PARAMS: dict[str, tuple[ParamType, str]] = {
    "_count": ("number", "entries per page (default 20, at most 1000; 0: the total only)"),
    "_sort": ("special", "sort keys, comma-separated, - for descending: the parameters declared sortable"),
    "_total": ("token", "none | estimate | accurate: the total counts only what the actor may see "
               "(docs/conformance.md)"),
}
FORMAT_PARAMS = ("_format", "_pretty")   # the response's form, never a filter
PAGE_PARAM = "_cursor"                   # where a next link starts (opaque)


def coded_attributes(resource: ResourceSearch) -> dict[str, str]:
    """Parameter name -> the model's code attribute, for the parameters that search exactly one
    coded attribute (category -> class, type -> type, ...): what a Subscription's criteria may
    filter on, from the same declarations as the searches."""
    return {p.name: p.index.attributes[0] for p in resource.params
            if isinstance(p.index, TokenIndex) and len(p.index.attributes) == 1
            and p.index.attributes[0] != "refid"}
