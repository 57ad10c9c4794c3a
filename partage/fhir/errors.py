"""How every blueprint of the FHIR door answers the failures it expects: an OperationOutcome in
the request's format, 401 with its `WWW-Authenticate` challenge (RFC 6750) for a missing or
refused credential, the XDS error's status for a refusal of the flows. One place, so that
`/fhir/DocumentReference`, `/fhir/AuditEvent`, `/fhir/Consent` and `/fhir/Subscription`
answer alike."""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..access.actor import AuthenticationRequired
from ..metadata.errors import XdsErrors
from ..mhd import formats
from ..mhd.outcome import FhirError, Issue, from_xds, operation_outcome


def outcome_response(status: int, issues: list[Issue]) -> Response:
    """An OperationOutcome of these issues, with this HTTP status, in the asked format."""
    return formats.respond(operation_outcome(issues, status), request, status)


def fhir_error(exc: FhirError) -> Response:
    return outcome_response(exc.status, exc.issues)


def xds_errors(exc: XdsErrors) -> Response:
    error = from_xds(exc)
    return outcome_response(error.status, error.issues)


def unauthenticated(exc: AuthenticationRequired) -> Response:
    response = outcome_response(401, [Issue(str(exc), "login")])
    response.headers["WWW-Authenticate"] = 'Bearer realm="partage"'
    return response


def install(bp: Blueprint) -> None:
    """Register the FHIR door's answers on one of its blueprints."""
    bp.register_error_handler(FhirError, fhir_error)
    bp.register_error_handler(XdsErrors, xds_errors)
    bp.register_error_handler(AuthenticationRequired, unauthenticated)
