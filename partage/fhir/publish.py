"""PDSm simplified publish (MHD ITI-105): one DocumentReference with the document inline
in attachment.data, POSTed alone; the server writes the SubmissionSet around it.

Decisions written down here: the SubmissionSet's sourceId is this repository's OID,
its authors are the document's, its contentTypeCode is the document's classCode
(PDSm sends no designation for a simplified publish), its submissionTime is now.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..metadata.datatypes import CX, DTM
from ..metadata.errors import ErrorCode, XdsError, XdsErrors
from ..metadata.model import Association, AssociationType, SubmissionRequest, SubmissionSet
from ..mhd import mapping
from ..mhd.bundle import decode_base64, spool_content
from ..services import Services

Json = dict[str, Any]
ERROR = ErrorCode.REPOSITORY_METADATA


def simplified_submission(res: Json, services: Services,
                          patient: Callable[[Json], CX | None]) -> SubmissionRequest:
    parsed = mapping.document_entry(res, mapping.contained_resolver(res), patient, ERROR)
    errors = list(parsed.errors)
    doc = parsed.entry
    doc.entry_uuid, doc.availability_status = "Document0", None
    request = SubmissionRequest()
    if not parsed.data:
        errors.append(XdsError(ErrorCode.MISSING_DOCUMENT, "a simplified publish carries the document in "
                               "content.attachment.data", "DocumentReference"))
    else:
        data = decode_base64(parsed.data, "attachment", errors)
        if data is not None:
            request.contents[doc.entry_uuid] = spool_content(data, doc.mime_type)
    if parsed.relations:
        errors.append(XdsError(ERROR, "relatesTo needs a Provide Document Bundle (ITI-65)", "DocumentReference"))
    if errors:
        raise XdsErrors(errors)
    ss = SubmissionSet(entry_uuid="SubmissionSet0", unique_id=f"2.25.{uuid.uuid4().int}",
                       source_id=services.settings.repository_unique_id, patient_id=doc.patient_id,
                       submission_time=DTM.from_datetime(datetime.now(UTC)),
                       content_type_code=doc.class_code, authors=list(doc.authors),
                       limited_metadata=doc.limited_metadata)
    request.submission_set = ss
    request.documents = [doc]
    request.associations = [Association(entry_uuid="Member0", association_type=AssociationType.HAS_MEMBER,
                                        source_uuid=ss.entry_uuid, target_uuid=doc.entry_uuid,
                                        submission_set_status="Original")]
    return request
