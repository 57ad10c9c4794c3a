"""What every blueprint of the FHIR door shares: its mount under /fhir with the door's answers
to failures (partage.fhir.errors), and what it takes from a request, the process's services
and the caller authenticated by the signed bearer JWT of the Authorization header
(partage.access.authn). One place, so that `/fhir/DocumentReference`, `/fhir/AuditEvent`,
`/fhir/Consent` and `/fhir/Subscription` authenticate and answer alike."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from ..access import authn
from ..access.actor import Actor
from ..mhd import formats
from ..mhd.outcome import FhirError
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


def strict_handling() -> bool:
    """`Prefer: handling=strict`: refuse what the server would otherwise ignore (FHIR search)."""
    for item in request.headers.get("Prefer", "").split(","):
        name, _, value = item.strip().partition("=")
        if name.strip().lower() == "handling":
            return value.strip().strip('"').lower() == "strict"
    return False


def no_content(status: int = 204, headers: dict[str, str] | None = None) -> Response:
    """An answer without content (204, 304): no Content-Type either (Flask would say text/html)."""
    response = Response(status=status, headers=headers)
    del response.headers["Content-Type"]
    return response
