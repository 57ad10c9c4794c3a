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
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import http_date, parse_date

from .. import jsonsafe
from ..access.actor import Actor
from ..failures import classify
from ..ingest import IngestService
from ..metadata.errors import XdsErrors
from ..mhd import bundle as iti65
from ..mhd import formats, mapping
from ..mhd.outcome import FhirError, Issue
from ..query import QueryService
from ..query.search import SearchService
from ..repository.store import BlobUnavailable, open_checked
from ..services import Services
from . import access, clinical, door, errors, patients, publish, search, searchparams, update
from .capability import capability_statement
from .views import Views

log = logging.getLogger("partage.fhir")
Json = dict[str, Any]
bp = door.blueprint("fhir")
CHUNK = 1 << 16


def _base_url() -> str:
    return request.host_url.rstrip("/") + (bp.url_prefix or "")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _params() -> dict[str, list[str]]:
    """The search parameters of the URL and, for `POST _search`, of its form body (FHIR R4
    search.html#Introduction: application/x-www-form-urlencoded). A body of another type is a
    415: read as no parameter, it would widen the search to everything."""
    params: dict[str, list[str]] = {}
    sources = [request.args]
    form = formats.search_form(request)
    if form is not None:
        sources.append(form)
        formats.check_format(request)   # its _format, checked as the URL's was (406 for an unknown one)
    elif request.method == "POST" and (request.content_length or "Transfer-Encoding" in request.headers):
        raise FhirError.one(415, f"a POST _search body is application/x-www-form-urlencoded, not "
                                 f"{request.mimetype or 'untyped'}", "not-supported")
    for source in sources:
        for key in source:
            params.setdefault(key, []).extend(source.getlist(key))
    return params


def _cursor() -> str:
    return request.args.get(searchparams.PAGE_PARAM, "")


def _version(resource: Json) -> tuple[str, datetime | None]:
    meta = resource.get("meta") or {}
    updated = meta.get("lastUpdated")
    return str(meta.get("versionId") or ""), (datetime.fromisoformat(updated.replace("Z", "+00:00"))
                                              if updated else None)


def _not_modified(etag: str, modified: datetime | None) -> bool:
    """If-None-Match (it wins when present), else If-Modified-Since (RFC 9110 13.1.2-3)."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        wanted = {t.strip().removeprefix("W/").strip('"') for t in if_none_match.split(",")}
        return "*" in wanted or etag.removeprefix("W/").strip('"') in wanted
    since = parse_date(request.headers.get("If-Modified-Since"))
    return since is not None and modified is not None and modified <= since


def _validators(resource: Json, headers: dict[str, str] | None = None) -> dict[str, str]:
    """ETag W/"versionId" and Last-Modified from a resource's meta, beside `headers`."""
    version, modified = _version(resource)
    headers = dict(headers or {})
    if version:
        headers["ETag"] = f'W/"{version}"'
    if modified is not None:
        headers["Last-Modified"] = http_date(modified)
    return headers


def _read(resource: Json) -> Response:
    """A resource read with its validators; 304 when the client's copy is current (a GET or
    HEAD, RFC 9110 13.1.2)."""
    headers = _validators(resource)
    _, modified = _version(resource)
    if "ETag" in headers and _not_modified(headers["ETag"], modified):
        return door.no_content(304, headers)
    return formats.respond(resource, request, headers=headers)


def _known(resource: Json | None, what: str, xds_code: str = "") -> Json:
    """The resource `what` (e.g. Patient/123) found, or the 404 of one unknown or not visible."""
    if resource is None:
        raise FhirError.one(404, f"{what} is not known", "not-found", xds_code)
    return resource


def _vread(resource: Json | None, what: str, vid: str) -> Response:
    """Only the current version of a resource is kept: an older one is answered 404."""
    resource = _known(resource, what)
    current, _ = _version(resource)
    if vid != current:
        raise FhirError.one(404, f"{what}/_history/{vid}: only the current version ({current}) is kept",
                            "not-found")
    return _read(resource)


def _created(resource: Json, path: str, created: bool = True) -> Response:
    """A create (201) or update (200): Location names the version, ETag and Last-Modified too."""
    version, _ = _version(resource)
    location = f"{_base_url()}/{path}/_history/{version}" if version else f"{_base_url()}/{path}"
    return door.written(resource, 201 if created else 200, _validators(resource, {"Location": location}),
                        f"{path} {'created' if created else 'updated'} (version {version or 1})")


_outcome = errors.outcome_response


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
    services, actor = door.caller()
    body = formats.read_body(request, "Bundle")
    people = patients.Patients(services)
    provided = iti65.read_provide_bundle(body, people.resolve, _existing_document)
    try:
        result = IngestService(services, actor).provide_and_register(provided.request)
    except XdsErrors as exc:   # say where in the Bundle, not the request's symbolic ids
        urls = {e.symbolic: e.full_url for e in provided.entries if e.symbolic}
        raise XdsErrors([dataclasses.replace(e, location=urls.get(e.location, e.location))
                         for e in exc.errors]) from exc
    subject = provided.request.submission_set.patient_id if provided.request.submission_set else None

    def patient() -> str:   # a Patient entry's location: the server's Patient the submission is for
        return str(people.reference_for(subject).get("reference", "")) if subject is not None else ""
    return formats.respond(iti65.transaction_response(provided, result.assigned_ids, _base_url(), _now(), patient),
                           request, 200)


def _existing_document(reference: str) -> str | None:
    parts = door.local_reference(reference).rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == "DocumentReference":
        return mapping.entry_uuid_of(parts[-1])
    return None


# --- DocumentReference -----------------------------------------------------------------------
@bp.get("/DocumentReference")
@bp.post("/DocumentReference/_search")
def find_document_references() -> Response:
    services, actor = door.caller()
    parsed, found = search.document_search(_params(), strict=door.strict_handling())
    base = f"{_base_url()}/DocumentReference"
    if parsed.content:   # keyword search (partage.fhir.clinical)
        return formats.respond(clinical.content_search(services, actor, _base_url(), parsed, found), request)
    return formats.respond(Views(services, actor, _base_url()).find_documents(parsed, found, base, _cursor()),
                           request)


def _document(rid: str) -> Json | None:
    services = door.services()
    return Views(services, door.actor(services), _base_url()).read_document(rid)


def _readable(kind: str, endpoint: str, find: Callable[[str], Json | None], xds_code: str = "") -> None:
    """The read (`GET /kind/rid`) and vread (`/_history/vid`) of the resources `find` gives;
    `xds_code` goes with a read's 404."""
    def read(rid: str) -> Response:
        return _read(_known(find(rid), f"{kind}/{rid}", xds_code))

    def vread(rid: str, vid: str) -> Response:
        return _vread(find(rid), f"{kind}/{rid}", vid)

    bp.add_url_rule(f"/{kind}/<rid>", f"read_{endpoint}", read, methods=["GET"])
    bp.add_url_rule(f"/{kind}/<rid>/_history/<vid>", f"vread_{endpoint}", vread, methods=["GET"])


_readable("DocumentReference", "document_reference", _document, "XDSDocumentUniqueIdError")


@bp.post("/DocumentReference")
def simplified_publish() -> Response:
    services, actor = door.caller()
    body = formats.read_body(request, "DocumentReference")
    submission = publish.simplified_submission(body, services, patients.Patients(services).resolve)
    result = IngestService(services, actor).provide_and_register(submission)
    rid = mapping.resource_id(result.assigned_ids.get("Document0", ""))
    resource = Views(services, actor, _base_url()).read_document(rid)
    if resource is None:   # registered, but not for this actor's eyes (e.g. a masked document)
        return Response(status=201, headers={"Location": f"{_base_url()}/DocumentReference/{rid}"})
    return _created(resource, f"DocumentReference/{rid}")


@bp.patch("/DocumentReference")
@bp.patch("/DocumentReference/<rid>")
def patch_document_reference(rid: str | None = None) -> Response:
    services, actor = door.caller()
    views = Views(services, actor, _base_url())
    if rid is None:
        rid = _conditional_target(services, actor)
    doc = views.document_entry(rid)
    if doc is None:
        raise FhirError.one(404, f"DocumentReference/{rid} is not known", "not-found")
    row = views.meta_of([doc.entry_uuid]).get(doc.entry_uuid)
    current = views.document_resource(doc, [], row)
    current.pop("relatesTo", None)
    _check_document_version(row, rid)
    if request.mimetype in ("application/json-patch+json", "application/json"):
        formats.check_strings(request.get_data())   # the values it writes are FHIR strings
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
    resource = Views(services, actor, _base_url()).read_document(latest)
    if resource is None:
        raise FhirError.one(404, f"DocumentReference/{latest} is not visible after the update", "not-found")
    return door.written(resource, 200, _validators(resource), f"DocumentReference/{latest} patched")


def _check_document_version(row: Any, rid: str) -> None:
    """A PATCH's or DELETE's If-Match against the DocumentReference's version (its meta row)."""
    door.check_if_match(str(row.revision or 1) if row is not None else "1", f"DocumentReference/{rid}",
                        "XDSMetadataVersionError")


@bp.delete("/DocumentReference/<rid>")
def delete_document_reference(rid: str) -> Response:
    """Deleting a document (docs/access.md, "Changing documents: authors alone"): the version
    becomes Deleted (`entered-in-error`), as with a PDSm PATCH of its status, and stays in the
    registry as a tombstone for the audit trail. Its author's act alone: anyone else gets the
    lifecycle's refusal (403), and a document the actor may not see answers as an unknown one."""
    services, actor = door.caller()
    views = Views(services, actor, _base_url())
    doc = views.document_entry(rid)
    if doc is None:
        raise FhirError.one(404, f"DocumentReference/{rid} is not known", "not-found",
                            "XDSDocumentUniqueIdError")
    row = views.meta_of([doc.entry_uuid]).get(doc.entry_uuid)
    _check_document_version(row, rid)
    update.delete_document(services, actor, doc)
    return door.no_content()


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
    services = door.services()
    views = Views(services, door.actor(services), _base_url())
    parsed, found = search.list_search(_params(), strict=door.strict_handling())
    return formats.respond(views.find_lists(parsed, found, f"{_base_url()}/List", _cursor()), request)


def _list(rid: str) -> Json | None:
    services = door.services()
    return Views(services, door.actor(services), _base_url()).read_list(rid)


_readable("List", "list", _list)


# --- ITI-68 -------------------------------------------------------------------------------------
@bp.get("/Binary/<rid>")
def retrieve_document(rid: str) -> Response:
    services, actor = door.caller()
    doc = Views(services, actor, _base_url()).document_entry(rid)
    located = QueryService(services, actor).locate_document(doc.unique_id) if doc else None
    if located is None:
        raise FhirError.one(404, f"no document behind Binary/{rid} in this repository", "not-found",
                            "XDSDocumentUniqueIdError")
    entry = located.document
    mime_type = entry.mime_type or "application/octet-stream"
    as_resource = formats.wants_resource(request, mime_type)   # a Binary resource (base64), not the bytes
    # The bytes never change under a uniqueId: their hash is a strong validator (the resource
    # form is another representation, hence another tag).
    etag = ""
    if entry.hash:
        form = ("-xml" if formats.wants_xml(request) else "-json") if as_resource else ""
        etag = f'"{entry.hash}{form}"'
    if etag and _not_modified(etag, None):
        return door.no_content(304, {"ETag": etag})
    try:   # checked before the answer starts: never a 200 that breaks off on bytes changed in the store
        stream = open_checked(services.blobs, located.blob_address, entry.size)
    except BlobUnavailable as exc:
        log.error("Binary/%s: %s", rid, exc)
        raise FhirError.one(500, f"the content behind Binary/{rid} cannot be read from this repository",
                            "exception", "XDSRepositoryError") from exc
    if as_resource:
        try:
            with stream:
                data = stream.read()
        except OSError as exc:   # a larger blob, found changed at its end: nothing was sent yet
            log.error("Binary/%s: %s", rid, exc)
            raise FhirError.one(500, f"the content behind Binary/{rid} cannot be read from this repository",
                                "exception", "XDSRepositoryError") from exc
        return formats.respond({"resourceType": "Binary", "id": rid, "contentType": entry.mime_type,
                                "data": base64.b64encode(data).decode("ascii")}, request,
                               headers={"ETag": etag} if etag else None)

    def chunks() -> Iterator[bytes]:
        with stream:
            while chunk := stream.read(CHUNK):
                yield chunk
    response = Response(chunks(), content_type=mime_type, direct_passthrough=True)
    if entry.size is not None:
        response.content_length = entry.size
    if etag:
        response.headers["ETag"] = etag
    return response


# --- Patient ------------------------------------------------------------------------------------
@bp.get("/Patient")
@bp.post("/Patient/_search")
def find_patients() -> Response:
    services, actor = door.caller()
    parsed, found = search.patient_search(_params(), strict=door.strict_handling())
    page = SearchService(services, actor).patients(found, parsed.page)
    people = patients.Patients(services)
    resources = [people.resource(record, row) for record, row in page.records]
    return formats.respond(search.bundle(_base_url(), f"{_base_url()}/Patient", parsed, resources, page.next,
                                         page.total, _cursor()), request)


def _patient(rid: str) -> Json | None:
    services, actor = door.caller()
    people = patients.Patients(services)
    record = people.record(rid)
    shown = access.visible_patients(services, actor, [record]) if record else []
    return people.resource(shown[0], people.meta(shown[0].pk)) if shown else None


_readable("Patient", "patient", _patient)


@bp.post("/Patient")
@bp.put("/Patient/<rid>")
def save_patient(rid: str | None = None) -> Response:
    services = door.services()
    access.check_write(door.actor(services))
    body = formats.read_body(request, "Patient")
    if rid is not None and body.get("id") != rid:   # FHIR R4 http.html#update: missing or different, 400
        raise FhirError.one(400, f"the body's id {body.get('id')!r} is not the URL's {rid!r}")
    people = patients.Patients(services)
    rid, created = people.save(body, rid)
    record = people.record(rid)
    if record is None:   # saved in this request: it exists
        raise FhirError.one(500, f"Patient/{rid} was saved but cannot be read back", "exception")
    return _created(people.resource(record, people.meta(record.pk)), f"Patient/{rid}", created)


# --- clinical reading (Observation, AllergyIntolerance, Condition, ..., Patient/$summary) ------
clinical.register(bp, door.services, door.actor, _base_url, _params)
