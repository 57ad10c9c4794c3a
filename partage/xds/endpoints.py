"""The XDS.b doors: POST /xds/registry and /xds/repository, SOAP 1.2 dispatched on wsa:Action;
DSUB's /xds/notification-broker and /xds/subscription/<id> (partage.xds.dsub) go through the
same transport, limits and credential checks.

Each handler parses its request into the model, calls a flow (ingest, query, update,
retrieve), and writes the ebRS answer. Requests and responses use MTOM when the
client does; documents stay in spooled files from the socket to the blob store.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import tempfile
from collections.abc import Callable

from flask import Blueprint, Response, current_app, request
from lxml import etree

from .. import lifecycle
from ..access import audit, authn
from ..access.actor import Actor, AuthenticationRequired
from ..ebxml import constants as C
from ..ebxml import ebrim
from ..ebxml.mtom import (
    Attachment,
    MtomError,
    MtomTooLarge,
    Part,
    build_multipart,
    content_type_params,
    read_soap_request,
    xop_includes,
)
from ..ebxml.soap import (
    SoapError,
    SoapRequest,
    build_envelope,
    fault_action,
    fault_envelope,
    parse_envelope,
    problem_action,
)
from ..failures import classify
from ..ingest import IngestService
from ..metadata.errors import ErrorCode, XdsError, XdsErrors
from ..metadata.model import DocumentContent
from ..query import QueryService
from ..repository.store import BlobStoreUnavailable
from ..services import Services
from ..xmlsafe import XmlInputError
from . import dsub, retrieve, storedquery
from .responses import query_response, registry_response
from .sqparams import Params

log = logging.getLogger("partage.xds")
bp = Blueprint("xds", __name__)

XDSB = f"{{{C.XDSB}}}"
LCM = f"{{{C.LCM}}}"
SPOOL = 1 << 20
Parts = dict[str, Part]   # a message's attachments by normalised Content-ID


class Reply:
    """What a handler returns: a body element and the attachments to send with it."""

    def __init__(self, body: etree._Element, attachments: list[Attachment] | None = None) -> None:
        self.body = body
        self.attachments = attachments or []


def _services() -> Services:
    services: Services = current_app.extensions["partage"]
    return services


def _actor(services: Services, envelope: SoapRequest) -> Actor:
    """The VIHF-like SAML assertion of the WS-Security header, verified (partage.access.authn)."""
    audit.set_action(envelope.action)
    return authn.soap_actor(services, envelope.header, address=request.remote_addr or "")


def _content_from_element(document: etree._Element, parts: Parts) -> DocumentContent:
    """An xdsb:Document as a file: its XOP part, or its inline base64 decoded to a spool."""
    includes = xop_includes(document)
    if includes:
        _, cid = includes[0]
        part = parts.get(cid)
        if part is None:
            raise XdsErrors.one(ErrorCode.MISSING_DOCUMENT, f"xop:Include references unknown part cid:{cid}")
        return DocumentContent(file=part.file, size=part.size, sha1=part.sha1_hex,
                               content_type=part.content_type)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL)
    sha1, size = hashlib.sha1(), 0
    try:
        data = base64.b64decode("".join((document.text or "").split()), validate=True)
    except ValueError as exc:
        raise XdsErrors.one(ErrorCode.REPOSITORY_ERROR,
                            f"Document {document.get('id')} is not valid base64: {exc}") from exc
    sha1.update(data)
    size = len(data)
    spool.write(data)
    return DocumentContent(file=spool, size=size, sha1=sha1.hexdigest())


# --------------------------------------------------------------------------- handlers
def handle_provide_and_register(services: Services, actor: Actor, body: etree._Element, parts: Parts) -> Reply:
    submit = body.find(f"{LCM}SubmitObjectsRequest")
    if submit is None:
        raise XdsErrors.one(ErrorCode.REPOSITORY_METADATA,
                            "ProvideAndRegisterDocumentSetRequest has no lcm:SubmitObjectsRequest")
    submission = ebrim.read_submission(submit)
    for document in body.findall(f"{XDSB}Document"):
        doc_id = document.get("id", "")
        if doc_id in submission.contents:
            raise XdsErrors.one(ErrorCode.REPOSITORY_METADATA, f"two Documents with id {doc_id}")
        submission.contents[doc_id] = _content_from_element(document, parts)
    IngestService(services, actor).provide_and_register(submission)
    return Reply(registry_response())


def handle_register(services: Services, actor: Actor, body: etree._Element, _parts: Parts) -> Reply:
    submission = ebrim.read_submission(body)
    IngestService(services, actor).register(submission)
    return Reply(registry_response())


def handle_stored_query(services: Services, actor: Actor, body: etree._Element, _parts: Parts) -> Reply:
    try:
        name, raw, return_type = storedquery.read_request(body)
        params = Params(name, raw)
        service = QueryService(services, actor, object_refs=return_type == "ObjectRef")
        result = storedquery.run(service, name, params)
    except XdsErrors as exc:
        return Reply(query_response([], exc.errors))
    objects = result.objects if return_type == "LeafClass" else storedquery.as_object_refs(result)
    return Reply(query_response(objects, params.warnings + result.warnings))


def handle_retrieve(services: Services, actor: Actor, body: etree._Element, _parts: Parts) -> Reply:
    element, attachments = retrieve.retrieve_document_set(services, actor, body)
    return Reply(element, attachments)


def handle_update(services: Services, actor: Actor, body: etree._Element, _parts: Parts) -> Reply:
    lifecycle.update_document_set(services, actor, ebrim.read_submission(body))
    return Reply(registry_response())


def handle_remove_metadata(services: Services, actor: Actor, body: etree._Element, _parts: Parts) -> Reply:
    refs = [r.get("id", "") for r in body.iter(f"{{{C.RIM}}}ObjectRef")]
    lifecycle.remove_metadata(services, actor, refs)
    return Reply(registry_response())


def handle_remove_documents(services: Services, actor: Actor, body: etree._Element, _parts: Parts) -> Reply:
    xdsb, rmd = f"{{{C.XDSB}}}", f"{{{C.RMD}}}"
    requests = body.findall(f"{xdsb}DocumentRequest") or body.findall(f"{rmd}DocumentRequest")
    items = [((item.findtext(f"{xdsb}RepositoryUniqueId") or "").strip(),
              (item.findtext(f"{xdsb}DocumentUniqueId") or "").strip()) for item in requests]
    result = lifecycle.remove_documents(services, actor, items)
    status = None
    if result.errors:
        status = C.STATUS_PARTIAL if result.removed else C.STATUS_FAILURE
    return Reply(registry_response(result.errors, status=status))


def handle_subscribe(services: Services, actor: Actor, body: etree._Element, _parts: Parts) -> Reply:
    return Reply(dsub.subscribe(services, actor, body, base_url=request.host_url.rstrip("/")))


def handle_unsubscribe(services: Services, actor: Actor, body: etree._Element, _parts: Parts) -> Reply:
    return Reply(dsub.unsubscribe(services, actor, body, (request.view_args or {}).get("rid", "")))


Handler = Callable[[Services, Actor, etree._Element, Parts], Reply]
REGISTRY_ACTIONS: dict[str, Handler] = {
    C.ACTION_REGISTER: handle_register,
    C.ACTION_STORED_QUERY: handle_stored_query,
    C.ACTION_UPDATE: handle_update,
    C.ACTION_REMOVE_METADATA: handle_remove_metadata,
}
REPOSITORY_ACTIONS: dict[str, Handler] = {
    C.ACTION_PNR: handle_provide_and_register,
    C.ACTION_RETRIEVE: handle_retrieve,
    C.ACTION_REMOVE_DOCUMENTS: handle_remove_documents,
    # A combined registry/repository also answers registry actions at the repository URL.
    **REGISTRY_ACTIONS,
}
# DSUB (ITI-52): the notification broker, and each subscription's own address (its manager).
BROKER_ACTIONS: dict[str, Handler] = {C.ACTION_SUBSCRIBE: handle_subscribe, C.ACTION_UNSUBSCRIBE: handle_unsubscribe}
MANAGER_ACTIONS: dict[str, Handler] = {C.ACTION_UNSUBSCRIBE: handle_unsubscribe}


# --------------------------------------------------------------------------- transport
def _respond(envelope_bytes: bytes, attachments: list[Attachment], mtom: bool,
             action: str, status: int = 200) -> Response:
    if not mtom and not attachments:
        return Response(envelope_bytes, status=status,
                        content_type=f'application/soap+xml; charset=UTF-8; action="{action}"')
    content_type, chunks, length = build_multipart(envelope_bytes, attachments, action=action)
    response = Response(chunks, status=status, content_type=content_type, direct_passthrough=True)
    if length is not None:
        response.content_length = length
    return response


def _fault(error: SoapError, relates_to: str | None, mtom: bool, status: int = 0,
           retry_after: int | None = None) -> Response:
    body = fault_envelope(error, relates_to=relates_to)
    status = status or (400 if error.code == "Sender" else 500)
    response = _respond(body, [], mtom, fault_action(error), status)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def dispatch(actions: dict[str, Handler]) -> Response:
    services = _services()
    content_type = request.headers.get("Content-Type", "")
    mtom = "multipart/related" in content_type.lower()
    action_parameter = content_type_params(content_type)[1].get("action")   # RFC 3902, on the message
    seen: dict[str, object] = {}

    def check_action(action: str) -> None:
        if action not in actions:
            raise SoapError("Sender", "wsa:ActionNotSupported", f"action {action!r} is not served at {request.path}",
                            detail=[problem_action(action)])

    def check_header(header: etree._Element | None) -> None:
        """A plain message's credentials, checked as soon as its Header has streamed in, before
        its action: an unauthenticated caller learns nothing, not even which actions a route serves."""
        action = (header.findtext(f"{{{C.WSA}}}Action") or "").strip() if header is not None else ""
        seen["message_id"] = (header.findtext(f"{{{C.WSA}}}MessageID") or "").strip() if header is not None else ""
        if action:
            audit.set_action(action)
        seen["actor"] = authn.soap_actor(services, header, address=request.remote_addr or "")
        if action:
            check_action(action)

    def check_root(root: bytes) -> None:
        """The envelope, its credentials and its action, checked before any attachment is spooled."""
        envelope = seen["envelope"] = parse_envelope(root, action_parameter=action_parameter)
        if "actor" not in seen:
            seen["actor"] = _actor(services, envelope)
        check_action(envelope.action)

    try:
        message = read_soap_request(content_type, request.stream, max_total=services.settings.max_request_bytes,
                                    max_root=services.settings.soap_max_bytes, on_root=check_root,
                                    on_header=check_header)
    except MtomTooLarge as exc:
        return _fault(SoapError("Sender", f"xdsb:{ErrorCode.INVALID_REQUEST}", str(exc)), _message_id(seen),
                      mtom, 413)
    except (MtomError, XmlInputError) as exc:
        return _fault(SoapError("Sender", "", f"unreadable request: {exc}"), _message_id(seen), mtom)
    except SoapError as exc:
        return _fault(exc, _message_id(seen), mtom)
    except AuthenticationRequired as exc:
        return _fault(SoapError("Sender", "wsse:FailedAuthentication", str(exc)), _message_id(seen), mtom)
    envelope = seen["envelope"]
    actor = seen["actor"]
    assert isinstance(envelope, SoapRequest) and isinstance(actor, Actor)
    handler = actions[envelope.action]
    try:
        reply = handler(services, actor, envelope.body, message.parts)
    except AuthenticationRequired as exc:
        return _fault(SoapError("Sender", "wsse:FailedAuthentication", str(exc)), envelope.message_id, mtom)
    except SoapError as exc:   # a refusal the operation answers as a Fault (DSUB)
        return _fault(exc, envelope.message_id, mtom)
    except XdsErrors as exc:
        reply = Reply(_error_body(envelope.action, exc.errors))
    except Exception as exc:   # never a traceback to the client: a RegistryError with a reference
        known = classify(exc)
        if known is not None and known.status in (408, 413, 503):   # an outage, a slow or big body
            code = _busy_code(exc) if known.status >= 500 else str(ErrorCode.INVALID_REQUEST)
            return _fault(SoapError("Receiver" if known.status >= 500 else "Sender", f"xdsb:{code}", known.message),
                          envelope.message_id, mtom, known.status, known.retry_after)
        log.exception("internal error on %s", envelope.action)
        audit.note_failure("internal error")
        if envelope.action not in REPOSITORY_ACTIONS:   # no ebRS answer to carry it: a Receiver Fault
            return _fault(SoapError("Receiver", "", "internal error; the server log has the details"),
                          envelope.message_id, mtom)
        reply = Reply(_error_body(envelope.action, [XdsError(
            ErrorCode.REGISTRY_ERROR if envelope.action in REGISTRY_ACTIONS else ErrorCode.REPOSITORY_ERROR,
            "internal error; the server log has the details")]))
    _audit_status(reply.body)
    response_action = C.RESPONSE_ACTIONS[envelope.action]
    out = build_envelope(response_action, reply.body, relates_to=envelope.message_id)
    return _respond(out, reply.attachments, mtom or bool(reply.attachments), response_action)


def _audit_status(body: etree._Element) -> None:
    """An ebRS answer of status Failure (sent with HTTP 200) is a refused request for the audit
    trail (ATNA outcome 4, docs/access.md), named by its error codes (not their texts)."""
    response = body if body.get("status") else body.find(f"{{{C.RS}}}RegistryResponse")
    if response is None or response.get("status") != C.STATUS_FAILURE:
        return
    codes = sorted({e.get("errorCode", "") for e in response.iter(f"{{{C.RS}}}RegistryError")
                    if e.get("severity") == C.SEVERITY_ERROR} - {""})
    audit.note_refusal(f"answered Failure ({', '.join(codes) or 'no error code'})")


def _busy_code(exc: Exception) -> str:
    """The XDS code of an outage (ITI TF-3 Table 4.2.4.1-2): the document store's is the
    repository's (out of space: XDSRepositoryOutOfResources), any other the registry's."""
    if isinstance(exc, BlobStoreUnavailable):
        return "XDSRepositoryOutOfResources" if exc.full else "XDSRepositoryBusy"
    return "XDSRegistryBusy"


def _message_id(seen: dict[str, object]) -> str | None:
    envelope = seen.get("envelope")
    if isinstance(envelope, SoapRequest):
        return envelope.message_id
    return str(seen.get("message_id") or "") or None   # a fault raised while checking the Header


def _error_body(action: str, errors: list[XdsError]) -> etree._Element:
    if action == C.ACTION_STORED_QUERY:
        return query_response([], errors)
    if action == C.ACTION_RETRIEVE:
        return retrieve.error_response(errors)
    return registry_response(errors)


@bp.post("/xds/registry")
def registry_endpoint() -> Response:
    return dispatch(REGISTRY_ACTIONS)


@bp.post("/xds/repository")
def repository_endpoint() -> Response:
    return dispatch(REPOSITORY_ACTIONS)


@bp.post(dsub.BROKER_PATH)
def notification_broker_endpoint() -> Response:
    return dispatch(BROKER_ACTIONS)


@bp.post(f"{dsub.SUBSCRIPTION_PATH}/<rid>")
def subscription_endpoint(rid: str) -> Response:  # noqa: ARG001 — Flask passes it
    return dispatch(MANAGER_ACTIONS)
