"""Registry-assigned identity: symbolic ids become UUIDs, references follow them.

ITI TF-3 4.2.3.1.5: a submitter may use symbolic ids (anything not `urn:uuid:`); the
registry replaces them, and every association and classification that named them.
Pure: returns the mapping so the caller can report it (the NIST runner reads it back).
"""

from __future__ import annotations

import uuid

from .datatypes import is_uuid_urn
from .model import SubmissionRequest

__all__ = ["assign_uuids", "is_uuid_urn"]


def assign_uuids(request: SubmissionRequest) -> dict[str, str]:
    """Replace symbolic entryUUIDs in place; return {symbolic: assigned}."""
    mapping: dict[str, str] = {}
    for obj in request.objects():
        if not is_uuid_urn(obj.entry_uuid):
            mapping[obj.entry_uuid] = uuid.uuid4().urn
            obj.entry_uuid = mapping[obj.entry_uuid]
    if not mapping:
        return mapping
    for assoc in request.associations:
        assoc.source_uuid = mapping.get(assoc.source_uuid, assoc.source_uuid)
        assoc.target_uuid = mapping.get(assoc.target_uuid, assoc.target_uuid)
    request.contents = {mapping.get(k, k): v for k, v in request.contents.items()}
    for obj in request.objects():
        if obj.lid in mapping:
            obj.lid = mapping[obj.lid]
    return mapping
