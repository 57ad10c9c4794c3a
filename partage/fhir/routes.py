"""The MHD / PDSm door: a Flask blueprint on /fhir (FHIR R4, JSON and XML).

Thin on purpose: each route parses, calls a flow (ingest, query, lifecycle) through the
modules beside it, and writes a resource or an OperationOutcome. Every failure is an
OperationOutcome carrying the XDS error code; nothing is persisted by a refused request
(the ingest and update flows are one transaction each).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from .. import jsonsafe
from ..access import authn
from ..access.actor import Actor, AuthenticationRequired
from ..failures import classify
from ..ingest import IngestService
from ..metadata.errors import XdsErrors
from ..query import QueryService
from ..services import Services
from . import access, clinical, formats, mapping, patients, publish, search, update
from . import bundle as iti65
from .capability import capability_statement
from .outcome import FhirError, Issue, from_xds, operation_outcome
from .views import Views

log = logging.getLogger("partage.fhir")
bp = Blueprint("fhir", __name__, url_prefix="/fhir")
CHUNK = 1 << 16


def _services() -> Services:
    return current_app.extensions["partage"]


def _actor(services: Services) -> Actor:
    """The signed bearer JWT of the Authorization header, verified (partage.access.authn)."""
    return authn.http_actor(services, request.headers.get("Authorization"),
                            address=request.remote_addr or "")


def _base_url() -> str:
    return request.host_url.rstrip("/") + bp.url_prefix


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _params() -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    sources = [request.args]
    if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
        sources.append(request.form)
    for source in sources:
        for key in source:
            params.setdefault(key, []).extend(source.getlist(key))
    return params


def _outcome(status: int, issues: list[Issue]) -> Response:
    return formats.respond(operation_outcome(issues, status), request, status)


@bp.errorhandler(FhirError)
def _fhir_error(exc: FhirError) -> Response:
    return _outcome(exc.status, exc.issues)


@bp.errorhandler(XdsErrors)
def _xds_error(exc: XdsErrors) -> Response:
    error = from_xds(exc)
    return _outcome(error.status, error.issues)


@bp.errorhandler(AuthenticationRequired)
def _unauthenticated(exc: AuthenticationRequired) -> Response:
    response = _outcome(401, [Issue(str(exc), "login")])
    response.headers["WWW-Authenticate"] = 'Bearer realm="partage"'
    return response


@bp.errorhandler(Exception)
def _internal(exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.code and exc.code < 500:
        return _http_error(exc)
    known = classify(exc)
    if known is not None:   # an outage (503), a slow or big body, a structural limit
        response = _outcome(known.status, [Issue(known.message, "transient" if known.status == 503 else
                                                 "too-costly" if known.status == 413 else "invalid")])
        if known.retry_after:
            response.headers["Retry-After"] = str(known.retry_after)
        return response
    log.exception("internal error on %s %s", request.method, request.path)
    return _outcome(500, [Issue("internal error; the server log has the details", "exception")])


def _http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    if code >= 500:
        return _outcome(code, [Issue("internal error; the server log has the details", "exception")])
    if code == 404:
        message = f"this server has no FHIR interaction {request.method} {request.path}"
    elif code == 405:
        message = f"{request.method} is not allowed on {request.path}"
    else:
        message = exc.description or str(exc)
    response = _outcome(code, [Issue(message, "not-supported" if code in (404, 405) else "invalid")])
    for name, value in exc.get_headers():
        if name.lower() == "allow":
            response.headers["Allow"] = value
    return response


def routing_error(exc: HTTPException) -> Response:
    """Errors raised before a /fhir view runs (no route, method not allowed) and those of the
    other /fhir blueprints: a FHIR client gets an OperationOutcome, never an HTML page (the
    application's last-resort handler sends /fhir paths here)."""
    return _http_error(exc)


# --- capability ------------------------------------------------------------------------------
@bp.get("/metadata")
def metadata() -> Response:
    return formats.respond(capability_statement(_base_url(), _now()), request)


# --- ITI-65 ------------------------------------------------------------------------------------
@bp.post("")
@bp.post("/")
def transaction() -> Response:
    services = _services()
    actor = _actor(services)
    body = formats.read_body(request, "Bundle")
    people = patients.Patients(services)
    provided = iti65.read_provide_bundle(body, people.resolve, _existing_document)
    try:
        result = IngestService(services, actor).provide_and_register(provided.request)
    except XdsErrors as exc:   # say where in the Bundle, not the request's symbolic ids
        urls = {e.symbolic: e.full_url for e in provided.entries if e.symbolic}
        raise XdsErrors([dataclasses.replace(e, location=urls.get(e.location, e.location))
                         for e in exc.errors]) from exc
    return formats.respond(iti65.transaction_response(provided, result.assigned_ids, _base_url(), _now()),
                           request, 200)


def _existing_document(reference: str) -> str | None:
    parts = reference.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == "DocumentReference":
        return mapping.entry_uuid_of(parts[-1])
    return None


# --- DocumentReference -----------------------------------------------------------------------
@bp.get("/DocumentReference")
@bp.post("/DocumentReference/_search")
def find_document_references() -> Response:
    services = _services()
    if "_content" in _params():   # keyword search (partage.fhir.clinical)
        return formats.respond(clinical.content_search(services, _actor(services), _base_url(), _params()),
                               request)
    views = Views(services, _actor(services), _base_url())
    found = views.find_documents(search.document_search(_params()), f"{_base_url()}/DocumentReference")
    return formats.respond(found, request)


@bp.get("/DocumentReference/<rid>")
def read_document_reference(rid: str) -> Response:
    services = _services()
    resource = Views(services, _actor(services), _base_url()).read_document(rid)
    if resource is None:
        raise FhirError.one(404, f"DocumentReference/{rid} is not known", "not-found",
                            "XDSDocumentUniqueIdError")
    return formats.respond(resource, request, headers={"ETag": f'W/"{resource.get("meta", {}).get("versionId", "1")}"'})


@bp.post("/DocumentReference")
def simplified_publish() -> Response:
    services = _services()
    actor = _actor(services)
    body = formats.read_body(request, "DocumentReference")
    submission = publish.simplified_submission(body, services, patients.Patients(services).resolve)
    result = IngestService(services, actor).provide_and_register(submission)
    rid = mapping.resource_id(result.assigned_ids.get("Document0", ""))
    resource = Views(services, actor, _base_url()).read_document(rid)
    location = f"{_base_url()}/DocumentReference/{rid}"
    return formats.respond(resource or {}, request, 201, headers={"Location": location})


@bp.patch("/DocumentReference")
@bp.patch("/DocumentReference/<rid>")
def patch_document_reference(rid: str | None = None) -> Response:
    services = _services()
    actor = _actor(services)
    views = Views(services, actor, _base_url())
    if rid is None:
        rid = _conditional_target(services, actor)
    doc = views.document_entry(rid)
    if doc is None:
        raise FhirError.one(404, f"DocumentReference/{rid} is not known", "not-found")
    current = views.document_resource(doc, [])
    current.pop("relatesTo", None)
    if_match = request.headers.get("If-Match", "").removeprefix("W/").strip('"')
    if if_match and if_match != (doc.version or "1"):
        raise FhirError.one(412, f"If-Match {if_match} but the current version is {doc.version or '1'}",
                            "conflict", "XDSMetadataVersionError")
    if request.mimetype in ("application/json-patch+json", "application/json"):
        try:
            operations = jsonsafe.loads(request.get_data() or b"null",
                                        formats.json_limits(services.settings))
        except ValueError as exc:   # TooComplex included: over a structural limit
            raise FhirError.one(400, f"unreadable JSON Patch: {exc}", "structure") from exc
        patched = update.apply_json_patch(current, operations)
    elif request.mimetype in formats.FHIR_MEDIA_TYPES:   # FHIRPath Patch (MHD Patch Parameters)
        patched = update.apply_fhirpath_patch(current, formats.read_body(request, "Parameters"))
    else:
        raise FhirError.one(415, "PATCH takes a JSON Patch (application/json-patch+json) or a FHIRPath "
                            "Patch Parameters resource (application/fhir+json or +xml)", "not-supported")
    update.update_document(services, actor, doc, current, patched)
    latest = _latest_version(services, actor, doc.unique_id) or rid
    return formats.respond(Views(services, actor, _base_url()).read_document(latest) or {}, request)


def _conditional_target(services: Services, actor: Actor) -> str:
    """`PATCH DocumentReference?identifier=...`: exactly one current document must match."""
    values = request.args.getlist("identifier")
    if not values:
        raise FhirError.one(400, "a conditional PATCH needs ?identifier=<masterIdentifier>", "required")
    unique_id = values[-1].rpartition("|")[2].removeprefix("urn:oid:")
    rid = _latest_version(services, actor, unique_id)
    if rid is None:
        raise FhirError.one(404, f"no DocumentReference with identifier {values[-1]}", "not-found")
    return rid


def _latest_version(services: Services, actor: Actor, unique_id: str) -> str | None:
    result = QueryService(services, actor).get_documents_and_associations(unique_ids=[unique_id])
    docs = [o for o in result.objects if o.kind == "DocumentEntry" and o.availability_status is not None
            and o.availability_status.short != "Deprecated"]
    docs = docs or [o for o in result.objects if o.kind == "DocumentEntry"]
    if not docs:
        return None
    latest = max(docs, key=lambda d: int(d.version or 1))
    return mapping.resource_id(latest.entry_uuid)


# --- List ---------------------------------------------------------------------------------------
@bp.get("/List")
@bp.post("/List/_search")
def find_lists() -> Response:
    services = _services()
    views = Views(services, _actor(services), _base_url())
    return formats.respond(views.find_lists(search.list_search(_params()), f"{_base_url()}/List"), request)


@bp.get("/List/<rid>")
def read_list(rid: str) -> Response:
    services = _services()
    resource = Views(services, _actor(services), _base_url()).read_list(rid)
    if resource is None:
        raise FhirError.one(404, f"List/{rid} is not known", "not-found")
    return formats.respond(resource, request)


# --- ITI-68 -------------------------------------------------------------------------------------
@bp.get("/Binary/<rid>")
def retrieve_document(rid: str) -> Response:
    services = _services()
    actor = _actor(services)
    doc = Views(services, actor, _base_url()).document_entry(rid)
    located = QueryService(services, actor).locate_document(doc.unique_id) if doc else None
    if located is None:
        raise FhirError.one(404, f"no document behind Binary/{rid} in this repository", "not-found",
                            "XDSDocumentUniqueIdError")
    entry = located.document
    stream = services.blobs.open(located.blob_address)
    if formats.wants_xml(request) or request.accept_mimetypes.best == formats.JSON_TYPE:
        data = stream.read()
        stream.close()
        return formats.respond({"resourceType": "Binary", "id": rid, "contentType": entry.mime_type,
                                "data": base64.b64encode(data).decode("ascii")}, request)

    def chunks():
        with stream:
            while chunk := stream.read(CHUNK):
                yield chunk
    response = Response(chunks(), content_type=entry.mime_type or "application/octet-stream",
                        direct_passthrough=True)
    if entry.size is not None:
        response.content_length = entry.size
    if entry.hash:
        response.headers["ETag"] = f'"{entry.hash}"'
    return response


# --- Patient ------------------------------------------------------------------------------------
@bp.get("/Patient")
def find_patients() -> Response:
    services = _services()
    actor = _actor(services)
    people = patients.Patients(services)
    found = [people.resource(r) for r in access.visible_patients(services, actor, people.search(_params()))]
    base = _base_url()
    return formats.respond({"resourceType": "Bundle", "type": "searchset", "total": len(found),
                            "link": [{"relation": "self", "url": request.url}],
                            "entry": [{"fullUrl": f"{base}/Patient/{p['id']}", "resource": p,
                                       "search": {"mode": "match"}} for p in found]}, request)


@bp.get("/Patient/<rid>")
def read_patient(rid: str) -> Response:
    services = _services()
    actor = _actor(services)
    people = patients.Patients(services)
    record = people.record(rid)
    shown = access.visible_patients(services, actor, [record]) if record else []
    if not shown:
        raise FhirError.one(404, f"Patient/{rid} is not known", "not-found")
    return formats.respond(people.resource(shown[0]), request)


@bp.post("/Patient")
@bp.put("/Patient/<rid>")
def save_patient(rid: str | None = None) -> Response:
    services = _services()
    access.check_write(_actor(services))
    body = formats.read_body(request, "Patient")
    if rid is not None and body.get("id") not in (None, rid):
        raise FhirError.one(400, f"the body's id {body.get('id')!r} differs from the URL's {rid!r}")
    people = patients.Patients(services)
    rid, created = people.save(body, rid)
    resource = people.resource(people.record(rid))
    location = f"{_base_url()}/Patient/{rid}"
    return formats.respond(resource, request, 201 if created else 200, headers={"Location": location})


# --- clinical reading (Observation, AllergyIntolerance, Condition, ..., Patient/$summary) ------
clinical.register(bp, _services, _actor, _base_url, _params)
