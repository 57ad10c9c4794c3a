"""PDSm metadata update: a PATCH of a DocumentReference, limited to status, securityLabel
and isArchived, carried out as an ITI-57 request by `partage.lifecycle` (the same update
path as the SOAP door).

A status or isArchived change becomes an UpdateAvailabilityStatus association; a
securityLabel change becomes a new version of the DocumentEntry (same uniqueId and
logical id, PreviousVersion = the current version). Both in one PATCH are two ITI-57
requests, the new version first.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from .. import lifecycle
from ..access.actor import Actor
from ..metadata.datatypes import DTM
from ..metadata.errors import ErrorCode
from ..metadata.model import (
    Association,
    AssociationType,
    AvailabilityStatus,
    DocumentEntry,
    SubmissionRequest,
    SubmissionSet,
)
from ..mhd import mapping
from ..mhd.outcome import FhirError
from ..services import Services

Json = dict[str, Any]
ALLOWED = {"status", "securityLabel", "extension"}


def apply_json_patch(resource: Json, operations: Any) -> Json:
    """RFC 6902 add / replace / remove / test on a JSON resource (no move/copy)."""
    if not isinstance(operations, list):
        raise FhirError.one(400, "a JSON Patch is a list of operations")
    doc = copy.deepcopy(resource)
    for op in operations:
        if not isinstance(op, dict) or "path" not in op or op.get("op") not in ("add", "replace", "remove", "test"):
            raise FhirError.one(400, f"unsupported JSON Patch operation {op!r} (add, replace, remove, test)")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        if not parts:
            raise FhirError.one(400, "a JSON Patch cannot replace the whole resource")
        parent: Any = doc
        for part in parts[:-1]:
            try:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
            except (KeyError, IndexError, ValueError) as exc:
                raise FhirError.one(400, f"JSON Patch path {op['path']} does not exist") from exc
        last = parts[-1]
        try:
            if op["op"] == "test":
                current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
                if current != op.get("value"):
                    raise FhirError.one(412, f"JSON Patch test failed at {op['path']}", "conflict",
                                        ErrorCode.METADATA_VERSION)
            elif op["op"] == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            elif isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(index, op.get("value"))
                else:
                    parent[index] = op.get("value")
            else:
                parent[last] = op.get("value")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise FhirError.one(400, f"JSON Patch {op['op']} at {op['path']} failed: {exc}") from exc
    return doc


_PATH = re.compile(r"^DocumentReference(?:\.(\w+)(?:\[(\d+)\]|\.where\(url\s*=\s*'([^']*)'\))?)?$")


def _part_value(part: Json) -> Any:
    """A FHIRPath Patch value: a `value[x]`, or nested parts naming the elements of a complex value."""
    for key, value in part.items():
        if key.startswith("value"):
            return value
    out: Json = {}
    for sub in part.get("part") or []:
        out[sub.get("name", "")] = _part_value(sub)
    return out


def apply_fhirpath_patch(resource: Json, parameters: Json) -> Json:
    """FHIR Patch as Parameters (the MHD Patch Parameters form): add, insert, delete and replace
    on `DocumentReference.<element>`, an item `[i]` of it, or `extension.where(url='...')`."""
    doc = copy.deepcopy(resource)
    for n, operation in enumerate(parameters.get("parameter") or []):
        if operation.get("name") != "operation":
            continue
        parts = {p.get("name"): p for p in operation.get("part") or []}
        kind = (parts.get("type") or {}).get("valueCode", "")
        path = (parts.get("path") or {}).get("valueString", "")
        match = _PATH.match(path.replace(" ", ""))
        where = f"Parameters.parameter[{n}]"
        if kind not in ("add", "insert", "delete", "replace") or match is None:
            raise FhirError.one(400, f"{where}: unsupported FHIRPath Patch operation {kind!r} on {path!r} "
                                "(add, insert, delete, replace on DocumentReference.<element>[index])")
        element, index, url = match.groups()
        value = _part_value(parts["value"]) if "value" in parts else None
        if kind == "add":
            name = (parts.get("name") or {}).get("valueString", "")
            if element or not name:
                raise FhirError.one(400, f"{where}: add takes path DocumentReference and a name")
            if isinstance(doc.get(name), list) or name in _LISTS:
                doc.setdefault(name, []).append(value)
            else:
                doc[name] = value
            continue
        if not element:
            raise FhirError.one(400, f"{where}: {kind} needs an element of DocumentReference")
        current = doc.get(element)
        if index is None and url is None:
            if kind == "delete":
                doc.pop(element, None)
            elif kind == "replace":
                if current is None:
                    raise FhirError.one(400, f"{where}: nothing at {path} to replace")
                doc[element] = value if not isinstance(current, list) or isinstance(value, list) else [value]
            else:   # insert
                position = int((parts.get("index") or {}).get("valueInteger", len(current or [])))
                doc.setdefault(element, []).insert(position, value)
            continue
        items = current if isinstance(current, list) else []
        positions = [int(index)] if index is not None else [i for i, item in enumerate(items)
                                                            if isinstance(item, dict) and item.get("url") == url]
        positions = [i for i in positions if i < len(items)]
        if kind == "delete":
            doc[element] = [item for i, item in enumerate(items) if i not in positions]
        elif kind == "replace":
            if len(positions) != 1:
                raise FhirError.one(400, f"{where}: {path} must select exactly one item to replace")
            items[positions[0]] = value
        else:
            raise FhirError.one(400, f"{where}: insert takes a list element path, not {path!r}")
    return doc


_LISTS = {"securityLabel", "extension", "category", "author", "identifier", "content", "relatesTo"}


def _submission_set(doc: DocumentEntry, services: Services) -> SubmissionSet:
    """The SubmissionSet the server writes for an update it performs on a client's behalf."""
    return SubmissionSet(entry_uuid="update-ss", unique_id=f"2.25.{uuid.uuid4().int}",
                         source_id=services.settings.repository_unique_id, patient_id=doc.patient_id,
                         submission_time=DTM.from_datetime(_now()),
                         content_type_code=doc.class_code, limited_metadata=doc.class_code is None)


def _now() -> datetime:
    return datetime.now(UTC)


def update_document(services: Services, actor: Actor, doc: DocumentEntry, current: Json, patched: Json) -> None:
    """Compare the stored and the patched DocumentReference and run the ITI-57 updates."""
    changed = {k for k in set(current) | set(patched) if current.get(k) != patched.get(k)}
    refused = changed - ALLOWED
    if refused:
        raise FhirError.one(422, f"PDSm metadata update may change status, securityLabel and isArchived "
                            f"only, not {', '.join(sorted(refused))}", "business-rule",
                            ErrorCode.UNMODIFIABLE_METADATA)
    other_ext = [e for e in patched.get("extension", []) if e.get("url") != mapping.EXT_IS_ARCHIVED]
    if other_ext != [e for e in current.get("extension", []) if e.get("url") != mapping.EXT_IS_ARCHIVED]:
        raise FhirError.one(422, "only the isArchived extension may change", "business-rule",
                            ErrorCode.UNMODIFIABLE_METADATA)
    archived = any(e.get("valueBoolean") for e in patched.get("extension", [])
                   if e.get("url") == mapping.EXT_IS_ARCHIVED)
    status = patched.get("status")
    if status not in mapping.FHIR_TO_STATUS:
        raise FhirError.one(422, f"status {status!r} is not current, superseded or entered-in-error",
                            "invalid", ErrorCode.METADATA_UPDATE)
    new_status = mapping.FHIR_TO_STATUS[status]
    if archived:
        if new_status != AvailabilityStatus.APPROVED:
            raise FhirError.one(422, "only a current document can be archived", "business-rule",
                                ErrorCode.METADATA_UPDATE)
        new_status = AvailabilityStatus.ARCHIVED
    target = doc
    if current.get("securityLabel") != patched.get("securityLabel"):
        codes = [mapping.code_of(c) for c in patched.get("securityLabel", [])]
        new = dataclasses.replace(doc, entry_uuid="new-version", confidentiality_codes=[c for c in codes if c],
                                  lid=doc.logical_id, availability_status=None, authors=list(doc.authors))
        ss = _submission_set(doc, services)
        request = SubmissionRequest(ss, [new], [], [Association(
            entry_uuid="update-member", association_type=AssociationType.HAS_MEMBER, source_uuid=ss.entry_uuid,
            target_uuid=new.entry_uuid, submission_set_status="Original", previous_version=doc.version or "1")])
        lifecycle.update_document_set(services, actor, request)
        target = new
    old_status = doc.availability_status or AvailabilityStatus.APPROVED
    if target is not doc:
        old_status = AvailabilityStatus.APPROVED
    if new_status != old_status:
        ss = _submission_set(doc, services)
        request = SubmissionRequest(ss, [], [], [Association(
            entry_uuid="update-status", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS,
            source_uuid=ss.entry_uuid, target_uuid=target.entry_uuid,
            original_status=str(old_status), new_status=str(new_status))])
        lifecycle.update_document_set(services, actor, request)


def delete_document(services: Services, actor: Actor, doc: DocumentEntry) -> None:
    """FHIR DELETE of a DocumentReference: a status update to Deleted run as ITI-57 (the
    lifecycle asks who may: authors alone). Deleting a deleted document changes nothing."""
    old_status = doc.availability_status or AvailabilityStatus.APPROVED
    if old_status == AvailabilityStatus.DELETED:
        return
    ss = _submission_set(doc, services)
    lifecycle.update_document_set(services, actor, SubmissionRequest(ss, [], [], [Association(
        entry_uuid="delete-status", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS,
        source_uuid=ss.entry_uuid, target_uuid=doc.entry_uuid,
        original_status=str(old_status), new_status=str(AvailabilityStatus.DELETED))]))
