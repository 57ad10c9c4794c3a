"""ebRIM 3.0 <-> the metadata model.

`read_*` turn a SubmitObjectsRequest / RegistryObjectList into model objects; `write_*`
turn model objects into ebRIM elements for responses. Only the mapping lives here:
whether values are acceptable is `metadata.validate`'s job, and ids are assigned by
`metadata.ids`. Slots the model does not name travel in `extra_slots` both ways.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import TypeVar

from lxml import etree

from ..metadata import values
from ..metadata.errors import ErrorCode, XdsError, XdsErrors
from ..metadata.model import (
    AnyObject,
    Association,
    Author,
    AvailabilityStatus,
    Code,
    DocumentEntry,
    Folder,
    ObjectRef,
    ObjectType,
    RegistryObject,
    SubmissionRequest,
    SubmissionSet,
    ValueProblem,
)
from . import constants as C

R = f"{{{C.RIM}}}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

# Slots the model maps to attributes, per object kind (all others go to extra_slots).
DOC_SLOTS = {
    "creationTime": "creation_time", "hash": "hash", "size": "size",
    "languageCode": "language_code", "legalAuthenticator": "legal_authenticator",
    "repositoryUniqueId": "repository_unique_id", "serviceStartTime": "service_start_time",
    "serviceStopTime": "service_stop_time", "sourcePatientId": "source_patient_id",
    "URI": "uri", "documentAvailability": "document_availability",
}
DOC_LIST_SLOTS = {
    "sourcePatientInfo": "source_patient_info",
    "urn:ihe:iti:xds:2013:referenceIdList": "reference_ids",
}
SS_SLOTS = {"submissionTime": "submission_time"}
SS_LIST_SLOTS = {"intendedRecipient": "intended_recipients"}
FOLDER_SLOTS = {"lastUpdateTime": "last_update_time"}
ASSOC_SLOTS = {
    "SubmissionSetStatus": "submission_set_status", "PreviousVersion": "previous_version",
    "OriginalStatus": "original_status", "NewStatus": "new_status",
}
AUTHOR_SLOTS = {
    "authorPerson": "person", "authorInstitution": "institutions", "authorRole": "roles",
    "authorSpecialty": "specialties", "authorTelecommunication": "telecoms",
}
EXTERNAL_IDS = {
    C.DOC_PATIENT_ID: ("patient_id", "XDSDocumentEntry.patientId"),
    C.DOC_UNIQUE_ID: ("unique_id", "XDSDocumentEntry.uniqueId"),
    C.SS_PATIENT_ID: ("patient_id", "XDSSubmissionSet.patientId"),
    C.SS_UNIQUE_ID: ("unique_id", "XDSSubmissionSet.uniqueId"),
    C.SS_SOURCE_ID: ("source_id", "XDSSubmissionSet.sourceId"),
    C.FOLDER_PATIENT_ID: ("patient_id", "XDSFolder.patientId"),
    C.FOLDER_UNIQUE_ID: ("unique_id", "XDSFolder.uniqueId"),
}
DOC_EXT_IDS = {"patient_id": C.DOC_PATIENT_ID, "unique_id": C.DOC_UNIQUE_ID}
SS_EXT_IDS = {"unique_id": C.SS_UNIQUE_ID, "source_id": C.SS_SOURCE_ID, "patient_id": C.SS_PATIENT_ID}
FOLDER_EXT_IDS = {"patient_id": C.FOLDER_PATIENT_ID, "unique_id": C.FOLDER_UNIQUE_ID}
DOC_CODE_BY_SCHEME = {scheme: attr for attr, scheme in C.DOC_CODE_SCHEMES.items()}
MULTI_CODES = {"confidentiality_codes", "event_codes"}
EXT_ID_NAMES = {scheme: name for scheme, (_attr, name) in EXTERNAL_IDS.items()}

# How each HL7-typed attribute is read from its slot or external identifier (metadata.values).
ValueReader = Callable[[str, str, str, list[ValueProblem]], object]
HL7_READERS: dict[str, ValueReader] = {
    "patient_id": values.read_cx, "source_patient_id": values.read_cx,
    "legal_authenticator": values.read_xcn, "reference_ids": values.read_reference_id,
    "creation_time": values.read_dtm, "service_start_time": values.read_dtm,
    "service_stop_time": values.read_dtm, "submission_time": values.read_dtm,
    "last_update_time": values.read_dtm, "intended_recipients": values.read_recipient,
}
LABELS = {
    "patient_id": "patientId", "source_patient_id": "sourcePatientId",
    "legal_authenticator": "legalAuthenticator", "reference_ids": "referenceIdList",
    "creation_time": "creationTime", "service_start_time": "serviceStartTime",
    "service_stop_time": "serviceStopTime", "submission_time": "submissionTime",
    "last_update_time": "lastUpdateTime", "intended_recipients": "intendedRecipient",
}


def _where(obj: RegistryObject) -> str:
    return obj.entry_uuid or obj.kind   # type: ignore[attr-defined]


def _typed(obj: RegistryObject, attr: str, text: str, problems: list[ValueProblem]) -> object:
    """The typed value of an HL7 attribute (None, with a problem noted, if unreadable)."""
    if not text:
        return None   # reported as missing where the attribute is required
    label = f"{obj.kind}.{LABELS[attr]}"   # type: ignore[attr-defined]
    return HL7_READERS[attr](text, _where(obj), label, problems)


# =============================== reading ===========================================

def read_submission(request: etree._Element) -> SubmissionRequest:
    """A SubmitObjectsRequest (or the one inside ProvideAndRegister) as a model request."""
    object_list = request.find(f"{R}RegistryObjectList")
    if object_list is None:
        object_list = request.find(f".//{R}RegistryObjectList")
    if object_list is None:
        raise XdsErrors.one(ErrorCode.REGISTRY_METADATA,
                            "no rim:RegistryObjectList in the request", "RegistryObjectList")
    return read_object_list(object_list)


def read_object_list(object_list: etree._Element) -> SubmissionRequest:
    errors: list[XdsError] = []
    out = SubmissionRequest()
    problems = out.problems
    packages: list[etree._Element] = []
    node_of: dict[str, str] = {}        # classifiedObject -> SS/Folder classification node
    loose: list[etree._Element] = []    # Classifications outside their object
    for child in object_list:
        tag = etree.QName(child).localname if isinstance(child.tag, str) else ""
        if tag == "ExtrinsicObject":
            out.documents.append(_read_document(child, errors, problems))
        elif tag == "RegistryPackage":
            packages.append(child)
        elif tag == "Association":
            out.associations.append(_read_association(child))
        elif tag == "Classification":
            node = child.get("classificationNode", "")
            if node in (C.NODE_SUBMISSION_SET, C.NODE_FOLDER):
                node_of[child.get("classifiedObject", "")] = node
            else:
                loose.append(child)
        elif tag in ("ObjectRef", ""):
            continue
        else:
            errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                   f"unexpected element rim:{tag} in RegistryObjectList", tag))
    for package in packages:
        pid = package.get("id", "")
        node = node_of.get(pid) or _inner_node(package)
        if node == C.NODE_SUBMISSION_SET:
            if out.submission_set is not None:
                errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                       "more than one SubmissionSet in the request", pid))
            out.submission_set = _read_submission_set(package, errors, problems)
        elif node == C.NODE_FOLDER:
            out.folders.append(_read_folder(package, errors, problems))
        else:
            errors.append(XdsError(
                ErrorCode.REGISTRY_METADATA,
                f"RegistryPackage {pid} is classified neither as SubmissionSet nor as Folder", pid))
    if loose:
        by_id = out.by_id()
        for classification in loose:
            target = by_id.get(classification.get("classifiedObject", ""))
            if target is not None:
                _apply_classification(target, classification, errors, problems)
    if errors:
        raise XdsErrors(errors)
    return out


def _inner_node(package: etree._Element) -> str:
    for c in package.findall(f"{R}Classification"):
        node = c.get("classificationNode", "")
        if node in (C.NODE_SUBMISSION_SET, C.NODE_FOLDER):
            return node
    return ""


def _slot_values(slot: etree._Element) -> list[str]:
    return [(v.text or "") for v in slot.iterfind(f"{R}ValueList/{R}Value")]


def _localized(element: etree._Element | None) -> str:
    if element is None:
        return ""
    ls = element.find(f"{R}LocalizedString")
    return ls.get("value", "") if ls is not None else ""


def _read_common(obj: RegistryObject, element: etree._Element) -> None:
    obj.entry_uuid = element.get("id", "")
    obj.lid = element.get("lid", "") if element.get("lid", "") != obj.entry_uuid else ""
    status = element.get("status")
    if status:
        try:
            obj.availability_status = AvailabilityStatus(status)
        except ValueError:
            obj.extra_slots["$status"] = [status]
    obj.home_community_id = element.get("home", "")
    obj.title = _localized(element.find(f"{R}Name"))
    obj.comments = _localized(element.find(f"{R}Description"))
    version = element.find(f"{R}VersionInfo")
    if version is not None:
        obj.version = version.get("versionName", "")


def _read_slots(obj: RegistryObject, element: etree._Element, single: dict[str, str],
                multi: dict[str, str], errors: list[XdsError], problems: list[ValueProblem]) -> None:
    seen = set(obj.extra_slots)   # "$status": an unknown status attribute kept for the answer
    for slot in element.findall(f"{R}Slot"):
        name = slot.get("name", "")
        values_ = _slot_values(slot)
        if name in seen:   # ebRIM 3.0: a Slot's name is unique within its object; never a silent "last one wins"
            errors.append(XdsError(ErrorCode.REGISTRY_METADATA, f"slot {name} appears twice",
                                   f"{obj.entry_uuid}/Slot[@name='{name}']"))
            continue
        seen.add(name)
        if name in single:
            attr = single[name]
            if len(values_) != 1:
                errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                       f"slot {name} must have exactly one value, has {len(values_)}",
                                       f"{obj.entry_uuid}/Slot[@name='{name}']"))
                continue
            value: object = values_[0]
            if attr in HL7_READERS:
                value = _typed(obj, attr, values_[0], problems)
            elif attr == "size":
                try:
                    value = int(values_[0])
                except ValueError:
                    errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                           f"slot size is not an integer: {values_[0]!r}", obj.entry_uuid))
                    continue
            setattr(obj, attr, value)
        elif name in multi:
            attr = multi[name]
            if attr in HL7_READERS:
                typed = [_typed(obj, attr, v, problems) for v in values_]
                setattr(obj, attr, [v for v in typed if v is not None])
            else:
                setattr(obj, attr, values_)
        else:
            obj.extra_slots[name] = values_


def _read_code(classification: etree._Element, errors: list[XdsError], where: str) -> Code:
    scheme_values = []
    for slot in classification.findall(f"{R}Slot"):
        if slot.get("name") == "codingScheme":
            scheme_values = _slot_values(slot)
    if len(scheme_values) != 1:
        errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                               "a coded Classification needs exactly one codingScheme slot value",
                               where))
    return Code(classification.get("nodeRepresentation", ""),
                scheme_values[0] if scheme_values else "",
                _localized(classification.find(f"{R}Name")))


def _read_author(classification: etree._Element, where: str, owner: str,
                 problems: list[ValueProblem]) -> Author:
    author = Author(classification_id=classification.get("id", ""))
    for slot in classification.findall(f"{R}Slot"):
        attr = AUTHOR_SLOTS.get(slot.get("name", ""))
        texts = _slot_values(slot)
        if attr == "person":
            author.person = (values.read_xcn(texts[0], where, f"{owner}.authorPerson", problems)
                             if texts and texts[0] else None)
        elif attr == "institutions":
            read = [values.read_xon(t, where, f"{owner}.authorInstitution", problems) for t in texts]
            author.institutions = [v for v in read if v is not None]
        elif attr == "telecoms":
            tel = [values.read_xtn(t, where, f"{owner}.authorTelecommunication", problems) for t in texts]
            author.telecoms = [v for v in tel if v is not None]
        elif attr:
            setattr(author, attr, texts)
    return author


def _apply_classification(obj: AnyObject, c: etree._Element, errors: list[XdsError],
                          problems: list[ValueProblem]) -> None:
    scheme = c.get("classificationScheme", "")
    node = c.get("classificationNode", "")
    where = f"{obj.entry_uuid}/Classification[@classificationScheme='{scheme}']"
    if scheme in (C.DOC_AUTHOR, C.SS_AUTHOR) and isinstance(obj, DocumentEntry | SubmissionSet):
        obj.authors.append(_read_author(c, _where(obj), obj.kind, problems))
    elif node in (C.DOC_LIMITED_METADATA, C.SS_LIMITED_METADATA, C.FOLDER_LIMITED_METADATA):
        if not isinstance(obj, Association):   # an Association has no limited-metadata form
            obj.limited_metadata = True
    elif isinstance(obj, DocumentEntry) and scheme in DOC_CODE_BY_SCHEME:
        attr = DOC_CODE_BY_SCHEME[scheme]
        code = _read_code(c, errors, where)
        if attr in MULTI_CODES:
            getattr(obj, attr).append(code)
        elif getattr(obj, attr) is not None:
            errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                   f"{attr} given more than once", where))
        else:
            setattr(obj, attr, code)
    elif isinstance(obj, SubmissionSet) and scheme == C.SS_CONTENT_TYPE:
        obj.content_type_code = _read_code(c, errors, where)
    elif isinstance(obj, Folder) and scheme == C.FOLDER_CODE_LIST:
        obj.codes.append(_read_code(c, errors, where))
    elif isinstance(obj, Association) and scheme == C.ASSOCIATION_DOCUMENTATION:
        obj.documentation = _read_code(c, errors, where)
    elif node in (C.NODE_SUBMISSION_SET, C.NODE_FOLDER):
        return
    else:
        obj.extra_slots.setdefault("$classification", []).append(
            f"{scheme}|{node}|{c.get('nodeRepresentation', '')}")


def _read_external_ids(obj: RegistryObject, element: etree._Element, allowed: dict[str, str],
                       errors: list[XdsError], problems: list[ValueProblem]) -> None:
    for ext in element.findall(f"{R}ExternalIdentifier"):
        scheme = ext.get("identificationScheme", "")
        attr = next((a for a, s in allowed.items() if s == scheme), None)
        if attr is None:
            obj.extra_slots.setdefault("$externalIdentifier", []).append(
                f"{scheme}|{ext.get('value', '')}")
            continue
        if getattr(obj, attr):
            errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                                   f"{EXT_ID_NAMES[scheme]} given more than once", obj.entry_uuid))
        text = ext.get("value", "")
        setattr(obj, attr, _typed(obj, attr, text, problems) if attr in HL7_READERS and text else text)


_Read = TypeVar("_Read", DocumentEntry, SubmissionSet, Folder, Association)


def _read_contents(obj: _Read, element: etree._Element, slots: dict[str, str], list_slots: dict[str, str],
                   ext_ids: dict[str, str] | None, errors: list[XdsError], problems: list[ValueProblem]) -> _Read:
    """`obj` with what its element holds beyond its own attributes: slots, classifications and,
    but for an Association (`ext_ids` None), external identifiers."""
    _read_slots(obj, element, slots, list_slots, errors, problems)
    for c in element.findall(f"{R}Classification"):
        _apply_classification(obj, c, errors, problems)
    if ext_ids is not None:
        _read_external_ids(obj, element, ext_ids, errors, problems)
    return obj


def _read_document(element: etree._Element, errors: list[XdsError],
                   problems: list[ValueProblem]) -> DocumentEntry:
    doc = DocumentEntry()
    _read_common(doc, element)
    doc.mime_type = element.get("mimeType", "")
    object_type = element.get("objectType", ObjectType.STABLE.value)
    try:
        doc.object_type = ObjectType(object_type)
    except ValueError:
        errors.append(XdsError(ErrorCode.REGISTRY_METADATA,
                               f"unknown DocumentEntry objectType {object_type}", doc.entry_uuid))
    return _read_contents(doc, element, DOC_SLOTS, DOC_LIST_SLOTS, DOC_EXT_IDS, errors, problems)


def _read_submission_set(element: etree._Element, errors: list[XdsError],
                         problems: list[ValueProblem]) -> SubmissionSet:
    ss = SubmissionSet()
    _read_common(ss, element)
    return _read_contents(ss, element, SS_SLOTS, SS_LIST_SLOTS, SS_EXT_IDS, errors, problems)


def _read_folder(element: etree._Element, errors: list[XdsError],
                 problems: list[ValueProblem]) -> Folder:
    folder = Folder()
    _read_common(folder, element)
    return _read_contents(folder, element, FOLDER_SLOTS, {}, FOLDER_EXT_IDS, errors, problems)


def _read_association(element: etree._Element) -> Association:
    assoc = Association()
    errors: list[XdsError] = []
    _read_common(assoc, element)
    assoc.association_type = element.get("associationType", "")
    assoc.source_uuid = element.get("sourceObject", "")
    assoc.target_uuid = element.get("targetObject", "")
    problems: list[ValueProblem] = []
    _read_contents(assoc, element, ASSOC_SLOTS, {}, None, errors, problems)
    if errors:
        raise XdsErrors(errors)
    return assoc


# =============================== writing ===========================================

def _el(parent: etree._Element | None, tag: str, **attrs: str) -> etree._Element:
    attrs = {k: v for k, v in attrs.items() if v is not None}
    if parent is None:
        return etree.Element(R + tag, attrs, nsmap={"rim": C.RIM})
    return etree.SubElement(parent, R + tag, attrs)


def _slot(parent: etree._Element, name: str, items: Iterable[object]) -> None:
    """A slot; typed HL7 values are written by their own `format()` (their __str__)."""
    slot = _el(parent, "Slot", name=name)
    value_list = _el(slot, "ValueList")
    for value in items:
        _el(value_list, "Value").text = str(value)


def _localized_el(parent: etree._Element, name: str, text: str) -> None:
    if text:
        holder = _el(parent, name)
        _el(holder, "LocalizedString", value=text)


def _stable_id(*parts: str) -> str:
    """Sub-object ids derived from their owner, so repeated queries return the same ids."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "|".join(parts)).urn


def _common_attrs(obj: RegistryObject, object_type: str) -> dict[str, str]:
    status = obj.availability_status or AvailabilityStatus.APPROVED
    attrs = {"id": obj.entry_uuid, "lid": obj.logical_id, "objectType": object_type,
             "status": str(status)}
    if obj.home_community_id:
        attrs["home"] = obj.home_community_id
    return attrs


def _write_name_desc_version(element: etree._Element, obj: RegistryObject) -> None:
    _localized_el(element, "Name", obj.title)
    _localized_el(element, "Description", obj.comments)
    _el(element, "VersionInfo", versionName=obj.version or "1")


def _write_extra_slots(element: etree._Element, obj: RegistryObject) -> None:
    for name, texts in obj.extra_slots.items():
        if not name.startswith("$"):
            _slot(element, name, texts)


def _write_code(element: etree._Element, obj_id: str, scheme_uuid: str, code: Code, index: int) -> None:
    c = _el(element, "Classification", classificationScheme=scheme_uuid, classifiedObject=obj_id,
            nodeRepresentation=code.code, objectType=C.OBJECT_TYPE_CLASSIFICATION,
            id=_stable_id(obj_id, scheme_uuid, str(index), code.code))
    _slot(c, "codingScheme", [code.scheme])
    _localized_el(c, "Name", code.display)


def _write_author(element: etree._Element, obj_id: str, scheme_uuid: str, author: Author, index: int) -> None:
    c = _el(element, "Classification", classificationScheme=scheme_uuid, classifiedObject=obj_id,
            nodeRepresentation="", objectType=C.OBJECT_TYPE_CLASSIFICATION,
            id=author.classification_id or _stable_id(obj_id, scheme_uuid, str(index)))
    if author.person:
        _slot(c, "authorPerson", [author.person.format()])
    for slot_name, attr in AUTHOR_SLOTS.items():
        if attr != "person" and getattr(author, attr):
            _slot(c, slot_name, getattr(author, attr))


def _write_ext_id(element: etree._Element, obj_id: str, scheme_uuid: str, value: object) -> None:
    e = _el(element, "ExternalIdentifier", identificationScheme=scheme_uuid, value=str(value),
            registryObject=obj_id, objectType=C.OBJECT_TYPE_EXTERNAL_IDENTIFIER,
            id=_stable_id(obj_id, scheme_uuid))
    _localized_el(e, "Name", EXT_ID_NAMES[scheme_uuid])


def _write_node(element: etree._Element, obj_id: str, node: str) -> None:
    """A Classification of the object under a classification node: what makes a
    RegistryPackage a SubmissionSet or a Folder, and what flags limited metadata."""
    _el(element, "Classification", classifiedObject=obj_id, classificationNode=node,
        objectType=C.OBJECT_TYPE_CLASSIFICATION, id=_stable_id(obj_id, node))


def _write_limited_and_ext_ids(element: etree._Element, obj: DocumentEntry | SubmissionSet | Folder,
                               limited_node: str, ext_ids: dict[str, str]) -> None:
    """The limited-metadata flag and the ExternalIdentifiers that close the object."""
    if obj.limited_metadata:
        _write_node(element, obj.entry_uuid, limited_node)
    for attr, scheme in ext_ids.items():
        if getattr(obj, attr):
            _write_ext_id(element, obj.entry_uuid, scheme, getattr(obj, attr))


def write_document(doc: DocumentEntry, parent: etree._Element | None = None) -> etree._Element:
    e = _el(parent, "ExtrinsicObject", **_common_attrs(doc, str(doc.object_type)),
            mimeType=doc.mime_type or "application/octet-stream")
    for slot_name, attr in DOC_SLOTS.items():
        value = getattr(doc, attr)
        if value not in (None, ""):
            _slot(e, slot_name, [value])
    for slot_name, attr in DOC_LIST_SLOTS.items():
        if getattr(doc, attr):
            _slot(e, slot_name, getattr(doc, attr))
    _write_extra_slots(e, doc)
    _write_name_desc_version(e, doc)
    for i, author in enumerate(doc.authors):
        _write_author(e, doc.entry_uuid, C.DOC_AUTHOR, author, i)
    for attr, scheme in C.DOC_CODE_SCHEMES.items():
        value = getattr(doc, attr)
        for i, code in enumerate(value if isinstance(value, list) else [value] if value else []):
            _write_code(e, doc.entry_uuid, scheme, code, i)
    _write_limited_and_ext_ids(e, doc, C.DOC_LIMITED_METADATA, DOC_EXT_IDS)
    return e


def _write_package(package: SubmissionSet | Folder, parent: etree._Element | None,
                   slots: dict[str, list[object]], classify: Callable[[etree._Element], None], node: str,
                   limited_node: str, ext_ids: dict[str, str]) -> etree._Element:
    """A RegistryPackage in ebRIM's order: its slots (those with values), name, description and
    version, the classifications `classify` writes, the `node` that makes it a SubmissionSet or
    a Folder, the limited-metadata flag and the external identifiers."""
    e = _el(parent, "RegistryPackage", **_common_attrs(package, C.OBJECT_TYPE_REGISTRY_PACKAGE))
    for slot_name, items in slots.items():
        if items:
            _slot(e, slot_name, items)
    _write_extra_slots(e, package)
    _write_name_desc_version(e, package)
    classify(e)
    _write_node(e, package.entry_uuid, node)
    _write_limited_and_ext_ids(e, package, limited_node, ext_ids)
    return e


def write_submission_set(ss: SubmissionSet, parent: etree._Element | None = None) -> etree._Element:
    def classify(e: etree._Element) -> None:
        for i, author in enumerate(ss.authors):
            _write_author(e, ss.entry_uuid, C.SS_AUTHOR, author, i)
        if ss.content_type_code:
            _write_code(e, ss.entry_uuid, C.SS_CONTENT_TYPE, ss.content_type_code, 0)

    slots: dict[str, list[object]] = {
        "submissionTime": [ss.submission_time.format()] if ss.submission_time else [],
        "intendedRecipient": list(ss.intended_recipients)}
    return _write_package(ss, parent, slots, classify, C.NODE_SUBMISSION_SET, C.SS_LIMITED_METADATA, SS_EXT_IDS)


def write_folder(folder: Folder, parent: etree._Element | None = None) -> etree._Element:
    def classify(e: etree._Element) -> None:
        for i, code in enumerate(folder.codes):
            _write_code(e, folder.entry_uuid, C.FOLDER_CODE_LIST, code, i)

    slots: dict[str, list[object]] = {
        "lastUpdateTime": [folder.last_update_time.format()] if folder.last_update_time else []}
    return _write_package(folder, parent, slots, classify, C.NODE_FOLDER, C.FOLDER_LIMITED_METADATA,
                          FOLDER_EXT_IDS)


def write_association(assoc: Association, parent: etree._Element | None = None) -> etree._Element:
    attrs = _common_attrs(assoc, C.OBJECT_TYPE_ASSOCIATION)
    e = _el(parent, "Association", **attrs, associationType=str(assoc.association_type),
            sourceObject=assoc.source_uuid, targetObject=assoc.target_uuid)
    for slot_name, attr in ASSOC_SLOTS.items():
        if getattr(assoc, attr):
            _slot(e, slot_name, [getattr(assoc, attr)])
    _write_extra_slots(e, assoc)
    _localized_el(e, "Name", assoc.title)
    _localized_el(e, "Description", assoc.comments)
    if assoc.version:
        _el(e, "VersionInfo", versionName=assoc.version)
    if assoc.documentation:
        _write_code(e, assoc.entry_uuid, C.ASSOCIATION_DOCUMENTATION, assoc.documentation, 0)
    return e


def write_object(obj: AnyObject | ObjectRef, parent: etree._Element) -> etree._Element:
    if isinstance(obj, ObjectRef):
        attrs = {"id": obj.entry_uuid}
        if obj.home_community_id:
            attrs["home"] = obj.home_community_id
        return _el(parent, "ObjectRef", **attrs)
    if isinstance(obj, DocumentEntry):
        return write_document(obj, parent)
    if isinstance(obj, SubmissionSet):
        return write_submission_set(obj, parent)
    if isinstance(obj, Folder):
        return write_folder(obj, parent)
    return write_association(obj, parent)


def write_object_list(objects: Iterable[AnyObject | ObjectRef], parent: etree._Element) -> etree._Element:
    object_list = _el(parent, "RegistryObjectList")
    for obj in objects:
        write_object(obj, object_list)
    return object_list
