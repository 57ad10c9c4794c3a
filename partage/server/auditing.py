"""One audit record per request on the patient-data doors (/xds, /fhir, the /dossier pages).

Opens the request's audit context before the door runs and writes the record when the
response is ready (`partage.access.audit`). Public endpoints (health, metrics, the FHIR
CapabilityStatement, CDA validation) hold no patient data and are not audited.

Fail closed: a request that may write (POST, PUT, PATCH, DELETE) runs only once its record
is shown writable (`audit.open_record`); an answer goes out only once its record is written. When the audit
store refuses either, the client gets 503 with Retry-After in the door's shape (SOAP
Fault, OperationOutcome) and nothing else: no patient data, no write.
"""

from __future__ import annotations

import logging
import re

from flask import Flask, Response, g, request

from ..access import audit
from ..ebxml import constants as C
from ..failures import RETRY_AFTER
from ..web import pages
from .answers import error_answer

log = logging.getLogger("partage.audit")

AUDITED_PREFIXES = ("/xds/", "/fhir", "/dossier")   # /dossier: the record web pages
PUBLIC_PATHS = frozenset({"/fhir/metadata"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

SOAP_ACTIONS = {
    C.ACTION_PNR: "ITI-41", C.ACTION_REGISTER: "ITI-42", C.ACTION_RETRIEVE: "ITI-43",
    C.ACTION_STORED_QUERY: "ITI-18", C.ACTION_UPDATE: "ITI-57", C.ACTION_RESTRICTED_UPDATE: "ITI-92",
    C.ACTION_REMOVE_METADATA: "ITI-62", C.ACTION_REMOVE_DOCUMENTS: "ITI-86",
    C.ACTION_SUBSCRIBE: "ITI-52", C.ACTION_UNSUBSCRIBE: "ITI-52-unsubscribe",
}
FHIR_ACTIONS = [   # (method, path pattern, name)
    ("POST", r"/fhir/?$", "ITI-65"),
    ("GET", r"/fhir/DocumentReference(/.*)?$", "ITI-67"),
    ("POST", r"/fhir/DocumentReference/_search$", "ITI-67"),
    ("PUT", r"/fhir/DocumentReference.*", "PDSm-update"),
    ("PATCH", r"/fhir/DocumentReference.*", "PDSm-update"),
    ("DELETE", r"/fhir/DocumentReference/.*", "PDSm-delete"),
    ("GET", r"/fhir/List(/.*)?$", "ITI-66"),
    ("POST", r"/fhir/List/_search$", "ITI-66"),
    ("GET", r"/fhir/Binary/.*", "ITI-68"),
    ("GET", r"/fhir/Patient.*", "ITI-78"),
    ("GET", r"/fhir/AuditEvent.*", "ITI-81"),
    ("GET", r"/fhir/Consent.*", "consent-read"),
    ("PUT", r"/fhir/Consent.*", "consent-update"),
    ("GET", r"/dossier/[^/]+/documents/[^/]+/content$", "page-document-content"),
    ("GET", r"/dossier/[^/]+/documents/.*", "page-document"),
    ("GET", r"/dossier/[^/]+/resultats$", "page-results"),
    ("POST", r"/dossier/[^/]+/acces$", "page-access-mode"),
    ("GET", r"/dossier/.*", "page-record"),
]


def action_name(method: str, path: str, soap_action: str = "") -> str:
    if soap_action:
        return SOAP_ACTIONS.get(soap_action, soap_action)
    method = "GET" if method == "HEAD" else method   # a GET without its body (RFC 9110 9.3.2)
    for verb, pattern, name in FHIR_ACTIONS:
        if method == verb and re.match(pattern, path):
            return name
    return f"{method} {path}"


def _audited(path: str) -> bool:
    return path.startswith(AUDITED_PREFIXES) and path not in PUBLIC_PATHS


def install(app: Flask) -> None:
    services = app.extensions["partage"]

    @app.before_request
    def _open_audit() -> None:
        if _audited(request.path):
            g.partage_audit_token = audit.begin(action_name(request.method, request.path),
                                                request=f"{request.method} {request.full_path.rstrip('?')}",
                                                address=request.remote_addr or "")
            if request.method in WRITE_METHODS:
                ctx = audit.current()
                if ctx is not None:
                    g.partage_audit_refused = True
                    audit.open_record(services, ctx)   # AuditUnavailable -> 503, the door never runs
                    g.partage_audit_refused = False

    @app.after_request
    def _write_audit(response: Response) -> Response:
        ctx = audit.current()
        if ctx is not None and getattr(g, "partage_audit_token", None) is not None:
            if ctx.action.startswith("urn:"):
                ctx.action = action_name(request.method, request.path, ctx.action)
            g.partage_audit_written = True
            if getattr(g, "partage_audit_refused", False):
                return response   # the store refused the record ahead: this is already the 503
            try:
                audit.finish(services, ctx, response.status_code)
            except audit.AuditUnavailable as exc:
                response.close()   # nothing of it is sent
                return unavailable(request.path, str(exc))
        return response

    @app.teardown_request
    def _close_audit(exc: BaseException | None) -> None:  # noqa: ARG001 — Flask passes it
        token = getattr(g, "partage_audit_token", None)
        if token is None:
            return
        ctx = audit.current()
        if ctx is not None and not getattr(g, "partage_audit_written", False):
            try:
                audit.finish(services, ctx, 500)
            except audit.AuditUnavailable:
                log.error("could not write the audit record of a failed request")
        g.partage_audit_token = None
        try:
            audit.end(token)
        except ValueError:   # reset from another context: nothing to restore
            pass


def unavailable(path: str, message: str) -> Response:
    """503 with Retry-After, in the door's shape (the browser's pages: the French error page)."""
    if pages.browser_path():
        return pages.error_page(503, RETRY_AFTER)
    content_type, body = error_answer(path, 503, message, RETRY_AFTER)
    return Response(body, 503, content_type=content_type, headers={"Retry-After": str(RETRY_AFTER)})
