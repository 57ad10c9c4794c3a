"""Model object -> row values and search-index rows. Pure; the one place that decides
which metadata attributes are queryable and how they are normalised."""

from __future__ import annotations

import json
from typing import Any

from ..metadata import codec
from ..metadata.datatypes import DTM
from ..metadata.model import (
    AnyObject,
    Association,
    AvailabilityStatus,
    DocumentEntry,
    Folder,
    ObjectType,
    SubmissionSet,
)
from .bodies import pack, unpack
from .schema import KIND_ASSOCIATION, KIND_DOCUMENT, KIND_FOLDER, KIND_SUBMISSION_SET
from .search_index import date_range, normalize, token_hashes

KIND_OF = {
    "DocumentEntry": KIND_DOCUMENT, "SubmissionSet": KIND_SUBMISSION_SET,
    "Folder": KIND_FOLDER, "Association": KIND_ASSOCIATION,
}

# object_codes.attribute values: short, stable, one per queryable coded attribute.
CODE_ATTRIBUTES = {
    "class_code": "class", "type_code": "type", "format_code": "format",
    "healthcare_facility_type_code": "hcft", "practice_setting_code": "setting",
    "confidentiality_codes": "conf", "event_codes": "event",
    "content_type_code": "ctype", "codes": "folder",
}
REFERENCE_ID_ATTRIBUTE = "refid"

STATUS_SHORT = {s.value: s.short for s in AvailabilityStatus}


def status_short(status: AvailabilityStatus | str | None) -> str:
    if status is None:
        return "Approved"
    return STATUS_SHORT.get(str(status), str(status).rsplit(":", 1)[-1])


def pad_time(value: str) -> str | None:
    """DTM digits to 14 digits at their lower bound, so string order is time order."""
    if not value:
        return None
    digits = value[:14]
    lower = "00000101000000"
    return digits + lower[len(digits):]


def time_column(value: DTM | None) -> str | None:
    return value.lower_bound() if value is not None else None


def high_column(value: DTM | None) -> str | None:
    """The exclusive end of the range a DTM covers (search_index.date_range)."""
    return date_range(value)[1] if value is not None else None


def row_values(obj: AnyObject, *, patient_pk: int | None, registered_at: str,
               blob_address: str | None = None, lineage: str | None = None) -> dict[str, Any]:
    """The row of `obj`; a DocumentEntry's `lineage` defaults to its own logical id. A new row
    is revision 1, last updated when registered (`register.rewrite` counts the changes)."""
    values: dict[str, Any] = {
        "kind": KIND_OF[obj.kind],
        "entry_uuid": obj.entry_uuid,
        "lid": obj.logical_id,
        "version": int(obj.version or 1),
        "patient_pk": patient_pk,
        "status": status_short(obj.availability_status),
        "home_community_id": obj.home_community_id,
        "registered_at": registered_at,
        "revision": 1,
        "updated_at": registered_at,
        "body": pack(json.dumps(codec.to_dict(obj), separators=(",", ":"), ensure_ascii=False)),
    }
    if isinstance(obj, DocumentEntry):
        values.update(
            unique_id=obj.unique_id,
            creation_time=time_column(obj.creation_time),
            service_start=time_column(obj.service_start_time),
            service_stop=time_column(obj.service_stop_time),
            creation_high=high_column(obj.creation_time),
            service_start_high=high_column(obj.service_start_time),
            service_stop_high=high_column(obj.service_stop_time),
            hash=obj.hash or None, size=obj.size,
            repository_unique_id=obj.repository_unique_id or None,
            mime_type=obj.mime_type or None,
            object_type="O" if obj.object_type == ObjectType.ON_DEMAND else "S",
            blob_address=blob_address,
            lineage=lineage or obj.logical_id,
        )
    elif isinstance(obj, SubmissionSet):
        values.update(unique_id=obj.unique_id, submission_time=time_column(obj.submission_time),
                      source_id=obj.source_id)
    elif isinstance(obj, Folder):
        values.update(unique_id=obj.unique_id, last_update_time=time_column(obj.last_update_time))
    elif isinstance(obj, Association):
        values.update(assoc_type=str(obj.association_type), source_uuid=obj.source_uuid,
                      target_uuid=obj.target_uuid)
    return values


def code_rows(obj: AnyObject) -> list[dict[str, Any]]:
    """The token rows of `obj`: each coded value (scheme, code) and each referenceIdList CX,
    whose token is (assigning authority, id) and whose text is the whole CX (ITI-18 matches it)."""
    rows = []
    for name, attribute in CODE_ATTRIBUTES.items():
        value = getattr(obj, name, None)
        if value is None:
            continue
        for code in value if isinstance(value, list) else [value]:
            rows.append({"attribute": attribute, "code": code.code, "scheme": code.scheme,
                         **token_hashes(attribute, code.scheme, code.code)})
    for ref in getattr(obj, "reference_ids", ()):
        rows.append({"attribute": REFERENCE_ID_ATTRIBUTE, "code": ref.format(), "scheme": "",
                     **token_hashes(REFERENCE_ID_ATTRIBUTE, ref.assigning_authority.universal_id, ref.id)})
    return rows


def author_rows(obj: AnyObject) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for author in getattr(obj, "authors", ()):
        person = author.person
        if person:
            given = " ".join(n for n in (person.given_name, person.further_given_names) if n)
            rows.append({"person": person.format(), "family_norm": normalize(person.family_name) or None,
                         "given_norm": normalize(given) or None})
    return rows


def object_from_row(body: bytes | str) -> AnyObject:
    """The object a row's stored body holds (registry.bodies: packed, or JSON from before 0016)."""
    return codec.from_dict(json.loads(unpack(body)))
