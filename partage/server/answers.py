"""Each door's own shape for an error the server raises itself (size, deadline, overload,
outage, a bug): SOAP 1.2 Fault on /xds, OperationOutcome on /fhir, the validation service's
JSON problem on /validate, the French error page on the browser's pages (/dossier, /connexion),
a small JSON object elsewhere.

Used by the ASGI admission layer (before the application runs), the WSGI middlewares
(`wsgi_error`) and the application's last-resort error handler, so that no API client ever sees an
HTML error page, a browser never a JSON one, and no one a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from ..ebxml.soap import SoapError, fault_envelope
from ..metadata.errors import ErrorCode
from ..mhd.outcome import Issue, operation_outcome
from ..web import pages

_FHIR_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
               408: "timeout", 413: "too-costly", 503: "transient"}


def xds_code(status: int) -> str:
    """The XDS error code a SOAP fault of the server's own carries (ITI TF-3 4.2.4.1)."""
    if status == 503:
        return "XDSRegistryBusy"
    if status >= 500:
        return str(ErrorCode.REGISTRY_ERROR)
    return str(ErrorCode.INVALID_REQUEST)


def error_answer(path: str, status: int, message: str, retry_after: int | None = None) -> tuple[str, bytes]:
    """(content type, body) of the error answer at `path`."""
    if path.startswith("/xds/"):
        code = "Sender" if status < 500 else "Receiver"
        subcode = "wsse:FailedAuthentication" if status == 401 else f"xdsb:{xds_code(status)}"
        return ("application/soap+xml; charset=UTF-8",
                fault_envelope(SoapError(code, subcode, f"HTTP {status}: {message}")))
    if path.startswith("/fhir"):
        issue = Issue(message, _FHIR_CODES.get(status, "exception" if status >= 500 else "invalid"))
        return ("application/fhir+json; charset=utf-8",
                json.dumps(operation_outcome([issue], status)).encode())
    if pages.is_browser_path(path):   # a browser reads the pages' own French words (no server inside)
        return "text/html; charset=utf-8", pages.plain_error_page(status)
    body: dict[str, object] = {"error": message, "status": status}
    if retry_after:
        body["retry_after"] = retry_after
    return "application/json", json.dumps(body).encode()


def wsgi_error(start_response: Callable[..., Any], path: str, status: int, message: str, *,
               retry_after: int | None = None, close: bool = False) -> list[bytes]:
    """Start and return the error answer at `path` from a WSGI middleware (no Flask there)."""
    content_type, body = error_answer(path, status, message, retry_after)
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    if pages.is_browser_path(path):
        headers += [(name, value.format(idp="")) for name, value in pages.SECURITY_HEADERS.items()]
    if retry_after:
        headers.append(("Retry-After", str(retry_after)))
    if close:
        headers.append(("Connection", "close"))
    start_response(f"{status} {HTTPStatus(status).phrase}", headers)
    return [body]

