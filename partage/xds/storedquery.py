"""ITI-18 Registry Stored Query: AdhocQueryRequest -> query flow -> AdhocQueryResponse."""

from __future__ import annotations

from lxml import etree

from ..ebxml import constants as C
from ..metadata import kinds
from ..metadata.datatypes import CE, CX, DatatypeError
from ..metadata.errors import ErrorCode, XdsErrors
from ..metadata.model import Code, ObjectRef
from ..metadata.query import DocumentFilter, FolderFilter, SubmissionSetFilter, TimeRange
from ..query import QueryResult, QueryService
from .sqparams import Params

Q = f"{{{C.QUERY}}}"
R = f"{{{C.RIM}}}"

OBJECT_TYPES = {C.OBJECT_TYPE_STABLE: "S", C.OBJECT_TYPE_ON_DEMAND: "O"}


def read_request(request: etree._Element) -> tuple[str, dict[str, list[list[str]]], str]:
    """(query name, raw parameters, returnType) from an AdhocQueryRequest."""
    response_option = request.find(f"{Q}ResponseOption")
    return_type = response_option.get("returnType", "LeafClass") if response_option is not None else "LeafClass"
    adhoc = request.find(f"{R}AdhocQuery")
    if adhoc is None:
        raise XdsErrors.one(ErrorCode.REGISTRY_ERROR, "AdhocQueryRequest has no rim:AdhocQuery")
    query_id = adhoc.get("id", "")
    name = C.STORED_QUERIES.get(query_id)
    if name is None:
        raise XdsErrors.one(ErrorCode.UNKNOWN_STORED_QUERY, f"unknown stored query id {query_id!r}",
                            query_id)
    raw = adhoc_slots(adhoc)
    if return_type not in ("LeafClass", "ObjectRef"):
        raise XdsErrors.one(ErrorCode.REGISTRY_ERROR,
                            f"returnType {return_type!r} is neither LeafClass nor ObjectRef")
    return name, raw, return_type


def adhoc_slots(adhoc: etree._Element) -> dict[str, list[list[str]]]:
    """The raw parameters of a rim:AdhocQuery (ITI-18, and the ITI-52 subscription filter):
    each name's Slots, each Slot's Value texts (sqparams.RawParams; a Slot kept apart from
    another of the same name, which is an AND)."""
    raw: dict[str, list[list[str]]] = {}
    for slot in adhoc.findall(f"{R}Slot"):
        values = [(v.text or "") for v in slot.iterfind(f"{R}ValueList/{R}Value")]
        raw.setdefault(slot.get("name", ""), []).append(values)
    return raw


def codes_of(values: list[str]) -> list[Code]:
    out = []
    for value in values:   # checked by sqparams.check_coded: code^^codingScheme
        ce = CE.parse(value)
        out.append(Code(ce.identifier, ce.coding_system))
    return out


def _statuses(values: list[str]) -> list[str]:
    return [v.rsplit(":", 1)[-1] for v in values]


def _range(params: Params, low: str, high: str) -> TimeRange:
    return TimeRange(params.value(low), params.value(high))


def document_filter(p: Params) -> DocumentFilter:
    # $XDSDocumentEntryType not given: Stable entries only (ITI TF-2a 3.18.4.1.2.3.7, the
    # On-Demand Documents option), so that a consumer unaware of On-Demand entries gets none.
    types = p.values("$XDSDocumentEntryType") or [C.OBJECT_TYPE_STABLE]
    f = DocumentFilter(statuses=_statuses(p.values("$XDSDocumentEntryStatus")),
                       object_types=[OBJECT_TYPES[t] for t in types])   # sqparams checked them
    single = {"class": "$XDSDocumentEntryClassCode", "type": "$XDSDocumentEntryTypeCode",
              "setting": "$XDSDocumentEntryPracticeSettingCode",
              "hcft": "$XDSDocumentEntryHealthcareFacilityTypeCode",
              "format": "$XDSDocumentEntryFormatCode"}
    for attribute, name in single.items():
        if p.has(name):
            f.codes[attribute] = [codes_of(p.values(name))]
    for attribute, name in (("event", "$XDSDocumentEntryEventCodeList"),
                            ("conf", "$XDSDocumentEntryConfidentialityCode")):
        if p.has(name):
            f.codes[attribute] = [codes_of(group) for group in p.groups(name)]
    f.creation_time = _range(p, "$XDSDocumentEntryCreationTimeFrom", "$XDSDocumentEntryCreationTimeTo")
    f.service_start = _range(p, "$XDSDocumentEntryServiceStartTimeFrom", "$XDSDocumentEntryServiceStartTimeTo")
    f.service_stop = _range(p, "$XDSDocumentEntryServiceStopTimeFrom", "$XDSDocumentEntryServiceStopTimeTo")
    f.author_persons = [like_pattern(v) for v in p.values("$XDSDocumentEntryAuthorPerson")]
    f.reference_ids = p.groups("$XDSDocumentEntryReferenceIdList")
    return f


def like_pattern(pattern: str) -> str:
    """ITI-18 wildcards (% and _) are SQL LIKE's; other characters are literal."""
    return pattern.replace("\\", "\\\\")


def _patient(p: Params, name: str) -> CX | None:
    """The stored query's patient parameter as a CX (None when it cannot name a patient:
    the answer is then empty, as for an unknown patient; sqparams checked its form)."""
    try:
        return CX.parse(p.value(name), strict=False)
    except DatatypeError:
        return None


def run(service: QueryService, name: str, p: Params) -> QueryResult:
    if p.has("$XDSAssociationStatus"):
        service.association_statuses = _statuses(p.values("$XDSAssociationStatus"))
    if p.value("$MetadataLevel").strip() == "2":
        service.metadata_level = 2
    if name in ("FindDocuments", "FindDocumentsByReferenceId"):
        return service.find_documents(_patient(p, "$XDSDocumentEntryPatientId"), document_filter(p))
    if name == "FindSubmissionSets":
        set_filter = SubmissionSetFilter(
            statuses=_statuses(p.values("$XDSSubmissionSetStatus")),
            source_ids=p.values("$XDSSubmissionSetSourceId"),
            submission_time=_range(p, "$XDSSubmissionSetSubmissionTimeFrom", "$XDSSubmissionSetSubmissionTimeTo"),
            author_persons=[like_pattern(v) for v in p.values("$XDSSubmissionSetAuthorPerson")],
            content_types=[codes_of(p.values("$XDSSubmissionSetContentType"))] if p.has("$XDSSubmissionSetContentType") else [])
        return service.find_submission_sets(_patient(p, "$XDSSubmissionSetPatientId"), set_filter)
    if name == "FindFolders":
        folder_filter = FolderFilter(
            statuses=_statuses(p.values("$XDSFolderStatus")),
            last_update_time=_range(p, "$XDSFolderLastUpdateTimeFrom", "$XDSFolderLastUpdateTimeTo"),
            codes=[codes_of(g) for g in p.groups("$XDSFolderCodeList")])
        return service.find_folders(_patient(p, "$XDSFolderPatientId"), folder_filter)
    if name == "GetAll":
        docs = document_filter(p)
        sets = SubmissionSetFilter(statuses=_statuses(p.values("$XDSSubmissionSetStatus")))
        folders = FolderFilter(statuses=_statuses(p.values("$XDSFolderStatus")))
        return service.get_all(_patient(p, "$patientId"), docs, sets, folders)
    if name == "GetDocuments":
        return service.get_objects(kinds.KIND_DOCUMENT, entry_uuids=p.values("$XDSDocumentEntryEntryUUID"),
                                   unique_ids=p.values("$XDSDocumentEntryUniqueId"),
                                   logical_ids=p.values("$XDSDocumentEntryLogicalID"))
    if name == "GetFolders":
        return service.get_objects(kinds.KIND_FOLDER, entry_uuids=p.values("$XDSFolderEntryUUID"),
                                   unique_ids=p.values("$XDSFolderUniqueId"),
                                   logical_ids=p.values("$XDSFolderLogicalID"))
    if name == "GetAssociations":
        return service.get_associations(p.values("$uuid"))
    if name == "GetDocumentsAndAssociations":
        return service.get_documents_and_associations(
            entry_uuids=p.values("$XDSDocumentEntryEntryUUID"), unique_ids=p.values("$XDSDocumentEntryUniqueId"))
    if name == "GetSubmissionSets":
        return service.get_submission_sets(p.values("$uuid"))
    if name == "GetSubmissionSetAndContents":
        return service.get_submission_set_and_contents(
            document_filter(p), entry_uuid=p.value("$XDSSubmissionSetEntryUUID"),
            unique_id=p.value("$XDSSubmissionSetUniqueId"))
    if name == "GetFolderAndContents":
        return service.get_folder_and_contents(
            document_filter(p), entry_uuid=p.value("$XDSFolderEntryUUID"),
            unique_id=p.value("$XDSFolderUniqueId"))
    if name == "GetFoldersForDocument":
        return service.get_folders_for_document(entry_uuid=p.value("$XDSDocumentEntryEntryUUID"),
                                                unique_id=p.value("$XDSDocumentEntryUniqueId"))
    if name == "GetRelatedDocuments":
        return service.get_related_documents(
            p.values("$AssociationTypes"), document_filter(p),
            entry_uuid=p.value("$XDSDocumentEntryEntryUUID"), unique_id=p.value("$XDSDocumentEntryUniqueId"))
    raise XdsErrors.one(ErrorCode.UNKNOWN_STORED_QUERY, f"stored query {name} is not supported")


def as_object_refs(result: QueryResult) -> list[ObjectRef]:
    return [ObjectRef(o.entry_uuid, o.home_community_id) for o in result.objects]
