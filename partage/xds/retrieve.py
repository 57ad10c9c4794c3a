"""ITI-43 Retrieve Document Set: each requested document streamed from the blob store.

Partial success is per document (ITI TF-2 3.43.4.2.3): the found ones are returned,
each missing one gets its own RegistryError.
"""

from __future__ import annotations

import logging

from lxml import etree

from ..access.actor import Actor
from ..ebxml import constants as C
from ..ebxml.mtom import Attachment
from ..metadata.errors import ErrorCode, XdsError
from ..query import QueryService
from ..repository.store import BlobUnavailable, open_checked
from ..services import Services
from .responses import error_list

log = logging.getLogger(__name__)
X = f"{{{C.XDSB}}}"
RS = f"{{{C.RS}}}"
XOP_INCLUDE = f"{{{C.XOP}}}Include"


def _text(element: etree._Element, name: str) -> str:
    child = element.find(X + name)
    return (child.text or "").strip() if child is not None else ""


def retrieve_document_set(services: Services, actor: Actor,
                          body: etree._Element) -> tuple[etree._Element, list[Attachment]]:
    our_repository = services.settings.repository_unique_id
    service = QueryService(services, actor)
    errors: list[XdsError] = []
    found = []
    requests = body.findall(X + "DocumentRequest")
    if not requests:
        errors.append(XdsError(ErrorCode.REPOSITORY_ERROR, "RetrieveDocumentSetRequest has no DocumentRequest"))
    for i, item in enumerate(requests):
        repository_id = _text(item, "RepositoryUniqueId")
        unique_id = _text(item, "DocumentUniqueId")
        home = _text(item, "HomeCommunityId")
        if repository_id != our_repository:
            errors.append(XdsError(ErrorCode.UNKNOWN_REPOSITORY_ID,
                                   f"repository {repository_id!r} is not this repository ({our_repository})",
                                   unique_id))
            continue
        located = service.locate_document(unique_id)
        if located is None:
            errors.append(XdsError(ErrorCode.DOCUMENT_UNIQUE_ID_ERROR,
                                   f"no document {unique_id!r} in this repository", unique_id))
            continue
        doc, address = located.document, located.blob_address
        try:   # checked before the answer starts: never a 200 that breaks off on bytes changed in the store
            stream = open_checked(services.blobs, address, doc.size)
        except BlobUnavailable as exc:
            log.error("ITI-43: document %s: %s", unique_id, exc)
            errors.append(XdsError(ErrorCode.REPOSITORY_ERROR,
                                   f"the content of document {unique_id!r} cannot be read from this repository",
                                   unique_id))
            continue
        found.append((f"doc{i}.{address[:16]}@partage", repository_id, unique_id, home, doc, stream))

    status = C.STATUS_SUCCESS
    if errors:
        status = C.STATUS_PARTIAL if found else C.STATUS_FAILURE
    root = etree.Element(X + "RetrieveDocumentSetResponse", nsmap={"xdsb": C.XDSB, "rs": C.RS,
                                                                   "xop": C.XOP})
    response = etree.SubElement(root, RS + "RegistryResponse", status=status)
    error_list(response, errors)
    attachments = []
    for cid, repository_id, unique_id, home, doc, stream in found:
        item = etree.SubElement(root, X + "DocumentResponse")
        if home:
            etree.SubElement(item, X + "HomeCommunityId").text = home
        etree.SubElement(item, X + "RepositoryUniqueId").text = repository_id
        etree.SubElement(item, X + "DocumentUniqueId").text = unique_id
        etree.SubElement(item, X + "mimeType").text = doc.mime_type
        document = etree.SubElement(item, X + "Document")
        etree.SubElement(document, XOP_INCLUDE, href=f"cid:{cid}")
        attachments.append(Attachment(cid, doc.mime_type or "application/octet-stream", stream))
    return root, attachments


def error_response(errors: list[XdsError]) -> etree._Element:
    root = etree.Element(X + "RetrieveDocumentSetResponse", nsmap={"xdsb": C.XDSB, "rs": C.RS})
    response = etree.SubElement(root, RS + "RegistryResponse", status=C.STATUS_FAILURE)
    error_list(response, errors)
    return root
