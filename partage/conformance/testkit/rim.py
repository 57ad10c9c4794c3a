"""ebRIM work on test-kit templates and on registry answers, by local name.

Templates come in ebRIM 2.1 (most of the kit) or 3.0; the toolkit sends 3.0 after
converting, and so does this runner. The id assignments (patient id, uniqueIds,
sourceId, entryUUIDs) follow the toolkit's TestMgmt / IdParser rules; `Objects`
classifies what a registry returned, for the ExpectedContents predicates.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

from ...ebxml import constants as C

RIM2 = "urn:oasis:names:tc:ebxml-regrep:rim:xsd:2.1"
RS2 = "urn:oasis:names:tc:ebxml-regrep:registry:xsd:2.1"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
STATUS_NS = C.STATUS_TYPE
EBRS_ASSOC_NS = C.ASSOCIATION_TYPE_EBRS
IHE_ASSOC_NS = C.ASSOCIATION_TYPE_IHE
IHE_ASSOC_TYPES = {"APND", "XFRM", "RPLC", "XFRM_RPLC", "signs"}
OBJECT_LISTS = ("RegistryObjectList", "LeafRegistryObjectList")
REFERENCE_ATTRIBUTES = ("classifiedObject", "sourceObject", "targetObject", "registryObject")
_V3_ORDER = ("Slot", "Name", "Description", "VersionInfo", "Classification", "ExternalIdentifier")
_OBJECT_TYPES = {
    "RegistryPackage": C.OBJECT_TYPE_REGISTRY_PACKAGE,
    "Association": C.OBJECT_TYPE_ASSOCIATION,
    "Classification": C.OBJECT_TYPE_CLASSIFICATION,
    "ExternalIdentifier": C.OBJECT_TYPE_EXTERNAL_IDENTIFIER,
}
SS_SCHEMES = (C.SS_UNIQUE_ID, C.SS_PATIENT_ID, C.SS_SOURCE_ID)
FOLDER_SCHEMES = (C.FOLDER_UNIQUE_ID, C.FOLDER_PATIENT_ID)


class MetadataError(ValueError):
    """A template that cannot be processed as the plan asks."""


def local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def children(element: etree._Element, name: str | None = None) -> list[etree._Element]:
    return [c for c in element if isinstance(c.tag, str) and (name is None or local(c) == name)]


def object_list(root: etree._Element) -> etree._Element | None:
    """The (Leaf)RegistryObjectList at or under `root`: the wrapper of the metadata objects."""
    if local(root) in OBJECT_LISTS:
        return root
    for element in root.iter():
        if local(element) in OBJECT_LISTS:
            return element
    return None


def attributes(element: etree._Element) -> list[tuple[str, str]]:
    """An element's attributes; lxml gives them as str (its types also allow bytes)."""
    return [(k, v) for k, v in element.items() if isinstance(k, str) and isinstance(v, str)]


def top_objects(root: etree._Element) -> list[etree._Element]:
    wrapper = object_list(root)
    if wrapper is None:
        raise MetadataError(f"no RegistryObjectList / LeafRegistryObjectList in {local(root)}")
    return children(wrapper)


def external_identifiers(obj: etree._Element, scheme: str) -> list[etree._Element]:
    return [e for e in children(obj, "ExternalIdentifier") if e.get("identificationScheme") == scheme]


# --------------------------------------------------------------------------- assignments
def assign_external_ids(objects: list[etree._Element], kind: str, schemes: tuple[str, ...],
                        allocate: Callable[[], str], *, skip_id: str | None = None,
                        keep_schemes: frozenset[str] = frozenset()) -> dict[str, str]:
    """Give every matching ExternalIdentifier of every `kind` object a fresh value.

    Returns object id -> value assigned (the toolkit's Assigned* log sections).
    """
    assigned = {}
    for obj in objects:
        if local(obj) != kind or (skip_id is not None and obj.get("id") == skip_id):
            continue
        for scheme in schemes:
            for identifier in external_identifiers(obj, scheme):
                value = identifier.get("value") if scheme in keep_schemes else allocate()
                identifier.set("value", value or "")
                assigned[obj.get("id", "")] = value or ""
    return assigned


def assign_patient_id(objects: list[etree._Element], patient_id: str) -> dict[str, str]:
    """XDSDocumentEntry/SubmissionSet/Folder.patientId := patient_id (TestMgmt.assignPatientId)."""
    assigned = assign_external_ids(objects, "ExtrinsicObject", (C.DOC_PATIENT_ID,), lambda: patient_id)
    assigned |= assign_external_ids(objects, "RegistryPackage", (C.SS_PATIENT_ID, C.FOLDER_PATIENT_ID),
                                    lambda: patient_id)
    return assigned


def assign_unique_ids(objects: list[etree._Element], allocate: Callable[[], str], *,
                      skip_id: str | None = None, keep_schemes: frozenset[str] = frozenset()) -> dict[str, str]:
    """Fresh uniqueIds for documents, submission sets and folders (TestMgmt.assignUniqueIds)."""
    assigned = assign_external_ids(objects, "ExtrinsicObject", (C.DOC_UNIQUE_ID,), allocate,
                                   skip_id=skip_id, keep_schemes=keep_schemes)
    assigned |= assign_external_ids(objects, "RegistryPackage", (C.SS_UNIQUE_ID,), allocate,
                                    skip_id=skip_id, keep_schemes=keep_schemes)
    assigned |= assign_external_ids(objects, "RegistryPackage", (C.FOLDER_UNIQUE_ID,), allocate,
                                    skip_id=skip_id, keep_schemes=keep_schemes)
    return assigned


def assign_source_id(objects: list[etree._Element], source_id: str) -> dict[str, str]:
    return assign_external_ids(objects, "RegistryPackage", (C.SS_SOURCE_ID,), lambda: source_id)


def assign_uuids(objects: list[etree._Element]) -> dict[str, str]:
    """Replace every symbolic id (not urn:uuid:) with a fresh urn:uuid, and every reference to it.

    As the toolkit's IdParser: all `id` attributes anywhere in the objects count as
    definitions; classifiedObject / sourceObject / targetObject / registryObject are the
    references, and a symbolic reference to an undefined id is an error.
    """
    mapping: dict[str, str] = {}
    for obj in objects:
        for element in obj.iter():
            ident = element.get("id") if isinstance(element.tag, str) else None
            if ident is None or ident.startswith("urn:uuid:"):
                continue
            new = mapping.setdefault(ident, f"urn:uuid:{uuid.uuid4()}")
            element.set("id", new)
    for obj in objects:
        for element in obj.iter():
            if not isinstance(element.tag, str):
                continue
            for attribute in REFERENCE_ATTRIBUTES:
                value = element.get(attribute)
                if value is None or value.startswith("urn:uuid:"):
                    continue
                if value not in mapping:
                    raise MetadataError(f"{local(element)}/@{attribute}={value!r} names no object of the "
                                        "submission (AssignUuids cannot resolve it)")
                element.set(attribute, mapping[value])
    return mapping


# --------------------------------------------------------------------------- conversion
def submit_objects_request(root: etree._Element, objects: list[etree._Element]) -> etree._Element:
    """An lcm:SubmitObjectsRequest (ebRIM 3.0) holding `objects`, converted from 2.1 if needed."""
    request = etree.Element(f"{{{C.LCM}}}SubmitObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
    original = root if local(root) == "SubmitObjectsRequest" else next(
        (e for e in root.iter() if local(e) == "SubmitObjectsRequest"), None)
    if original is not None and etree.QName(original).namespace == C.LCM:
        for slot_list in children(original, "RequestSlotList"):
            request.append(copy.deepcopy(slot_list))
    wrapper = etree.SubElement(request, f"{{{C.RIM}}}RegistryObjectList")
    converter = _V3Converter()
    for obj in objects:
        if etree.QName(obj).namespace == C.RIM:
            wrapper.append(copy.deepcopy(obj))
        elif local(obj) != "ObjectRef":   # the toolkit drops 2.1 ObjectRefs
            wrapper.append(converter.convert(obj))
    return request


@dataclass
class _V3Converter:
    """ebRIM 2.1 -> 3.0, as the toolkit's TranslateToV3 does it."""

    count: int = 0

    def _new_id(self) -> str:
        self.count += 1
        return f"id_{self.count}"

    def convert(self, source: etree._Element) -> etree._Element:
        name = local(source)
        target = etree.Element(f"{{{C.RIM}}}{name}")
        for attribute, value in attributes(source):
            attribute = etree.QName(attribute).localname if attribute.startswith("{") else attribute
            if attribute in ("minorVersion", "majorVersion"):
                continue
            if attribute == "status" and ":" not in value:
                value = STATUS_NS + value
            elif attribute == "associationType" and ":" not in value:
                value = (IHE_ASSOC_NS if value in IHE_ASSOC_TYPES else EBRS_ASSOC_NS) + value
            target.set(XML_LANG if attribute == "lang" else attribute, value)
        if name in _OBJECT_TYPES:
            target.set("objectType", _OBJECT_TYPES[name])
        if name in ("Association", "Classification") and not target.get("id"):
            target.set("id", self._new_id())
        parts = children(source)
        for part_name in _V3_ORDER:
            for part in parts:
                if local(part) == part_name:
                    converted = self.convert(part)
                    if part_name == "ExternalIdentifier":
                        if not converted.get("id"):
                            converted.set("id", self._new_id())
                        converted.set("registryObject", source.get("id", ""))
                    target.append(converted)
        for part in parts:
            if local(part) not in _V3_ORDER and local(part) != "ObjectRef":
                target.append(self.convert(part))
        if source.text and source.text.strip():
            target.text = source.text
        return target


# --------------------------------------------------------------------------- answers
def simple_type(association_type: str | None) -> str:
    """HasMember for urn:oasis:...:AssociationType:HasMember (the toolkit's getSimpleAssocType)."""
    return (association_type or "").rpartition(":")[2]


def simple_status(status: str | None) -> str:
    return (status or "").rpartition(":")[2]


class Objects:
    """The registry objects of a response, classified as the toolkit's Metadata parser does."""

    def __init__(self, response: etree._Element | None) -> None:
        wrapper = object_list(response) if response is not None else None
        self.all = children(wrapper) if wrapper is not None else []
        top_classifications = [o for o in self.all if local(o) == "Classification"]
        self.documents = [o for o in self.all if local(o) == "ExtrinsicObject"]
        self.associations = [o for o in self.all if local(o) == "Association"]
        self.object_refs = [o for o in self.all if local(o) == "ObjectRef"]
        packages = [o for o in self.all if local(o) == "RegistryPackage"]
        self.submission_sets = [p for p in packages if self._is(p, C.NODE_SUBMISSION_SET, SS_SCHEMES,
                                                                 top_classifications)]
        self.folders = [p for p in packages if p not in self.submission_sets
                        and self._is(p, C.NODE_FOLDER, FOLDER_SCHEMES, top_classifications)]
        self.by_id = {o.get("id"): o for o in self.all if o.get("id")}

    @staticmethod
    def _is(package: etree._Element, node: str, schemes: tuple[str, ...],
            top_classifications: list[etree._Element]) -> bool:
        if any(c.get("classificationNode") == node for c in children(package, "Classification")):
            return True
        if any(c.get("classificationNode") == node and c.get("classifiedObject") == package.get("id")
               for c in top_classifications):
            return True
        return any(external_identifiers(package, scheme) for scheme in schemes)

    @property
    def submission_set(self) -> etree._Element | None:
        return self.submission_sets[0] if self.submission_sets else None

    def describe(self, ident: str | None) -> str:
        obj = self.by_id.get(ident or "")
        if obj is None:
            return repr(ident)
        kind = "SubmissionSet" if obj in self.submission_sets else "Folder" if obj in self.folders \
            else local(obj)
        return f"{kind}({ident})"
