"""What every blueprint of the FHIR door shares: its mount under /fhir with the door's answers
to failures (partage.fhir.errors), and what it takes from a request, the process's services
and the caller authenticated by the signed bearer JWT of the Authorization header
(partage.access.authn). One place, so that `/fhir/DocumentReference`, `/fhir/AuditEvent`,
`/fhir/Consent` and `/fhir/Subscription` authenticate and answer alike."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, has_request_context, request

from ..access import authn
from ..access.actor import Actor
from ..mhd import formats
from ..mhd.outcome import FhirError, Issue, operation_outcome
from ..services import Services
from ..textsafe import address_holds_nul
from . import errors

URL_PREFIX = "/fhir"


def blueprint(name: str) -> Blueprint:
    """A blueprint of the FHIR door, under /fhir, answering failures as the door does."""
    bp = Blueprint(name, __name__, url_prefix=URL_PREFIX)
    errors.install(bp)
    bp.before_request(_check_request)
    return bp


def _check_request() -> None:
    """What no route of the door can answer, refused before any: a `_format` it does not
    speak (406), a NUL character in the address (400: no id, code or name holds one, and
    PostgreSQL's text cannot)."""
    formats.check_format(request)
    if address_holds_nul(request.path, request.args.items(multi=True)):
        raise FhirError.one(400, "the address holds a NUL character", "invalid")


def local_reference(reference: str) -> str:
    """`reference` as a path under this server's FHIR base (`Type/id...`), or "" when it is an
    absolute URL under another base: FHIR R4 references.html, an absolute reference names the
    resource on the server at that base, not the one of this server with the same id."""
    if "://" not in reference or not has_request_context():
        return reference
    # The base as the client addressed this server, whatever the scheme (a proxy ending TLS
    # forwards https as http): host, port and path decide.
    base = (request.host + URL_PREFIX + "/").lower()
    address = reference.split("://", 1)[1]
    return address[len(base):] if address.lower().startswith(base) else ""


def services() -> Services:
    """The services of the process answering the request."""
    found: Services = current_app.extensions["partage"]
    return found


def actor(services: Services) -> Actor:
    """The caller: the Authorization header's bearer JWT, verified."""
    return authn.http_actor(services, request.headers.get("Authorization"), address=request.remote_addr or "")


def caller() -> tuple[Services, Actor]:
    """The services and the authenticated caller a request is answered with."""
    held = services()
    return held, actor(held)


def _preference(wanted: str) -> str:
    """The value of one preference of the `Prefer` header (RFC 7240), lower case; "" if absent."""
    for item in request.headers.get("Prefer", "").split(","):
        name, _, value = item.split(";")[0].strip().partition("=")
        if name.strip().lower() == wanted:
            return value.strip().strip('"').lower()
    return ""


def strict_handling() -> bool:
    """`Prefer: handling=strict`: refuse what the server would otherwise ignore (FHIR search)."""
    return _preference("handling") == "strict"


def written(resource: dict[str, Any], status: int, headers: dict[str, str], done: str) -> Response:
    """The answer to a create, update or patch as `Prefer: return` asks (FHIR R4
    http.html#ins-minimal): `minimal` no body, `OperationOutcome` one saying what was `done`,
    else (`representation`, the default) the resource; the headers (Location, ETag,
    Last-Modified) in every case."""
    wanted = _preference("return")
    if wanted == "minimal":
        return no_content(status, headers)
    if wanted == "operationoutcome":
        return formats.respond(operation_outcome([Issue(done, "informational", "information")]), request,
                               status, headers=headers)
    return formats.respond(resource, request, status, headers=headers)


def check_if_match(current: str | None, what: str, xds_code: str = "") -> None:
    """`If-Match` on a write (FHIR R4 http.html#concurrency, RFC 9110 13.1.1): `*` holds when the
    resource exists, otherwise one of the listed tags must be its version (`W/"<versionId>"`,
    compared on the version alone, as FHIR writes them); a failed precondition is a 412 and the
    write is not done. `current` is the resource's versionId, None when it does not exist."""
    header = request.headers.get("If-Match")
    if header is None:
        return
    tags = [tag.strip() for tag in header.split(",") if tag.strip()]
    if current is not None and ("*" in tags or current in {t.removeprefix("W/").strip('"') for t in tags}):
        return
    now = f"the current version is {current}" if current is not None else "it does not exist"
    raise FhirError.one(412, f"If-Match {header.strip()} does not hold for {what}: {now}", "conflict", xds_code)


def no_content(status: int = 204, headers: dict[str, str] | None = None) -> Response:
    """An answer without content (204, 304): no Content-Type either (Flask would say text/html)."""
    response = Response(status=status, headers=headers)
    del response.headers["Content-Type"]
    return response
