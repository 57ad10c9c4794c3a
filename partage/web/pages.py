"""Responses of the browser's pages (the record pages, the sign-in), in French and in one
style: their security headers, a one-message page, and the error pages (400, 403, 404, 405,
500) that say what happened and nothing of the server's inside (no stack trace, no exception
text). The API doors keep their own error formats (SOAP Fault, OperationOutcome)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

log = logging.getLogger("partage.web")
BROWSER_PREFIXES = ("/dossier", "/connexion")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "frame-src 'self'; object-src 'self'; form-action 'self'{idp}; "
                               "frame-ancestors 'self'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
TEXTS = {
    400: ("Demande incorrecte", "La demande n'a pas pu être comprise."),
    401: ("Identification requise", "Connectez-vous pour consulter ce dossier."),
    403: ("Accès refusé", "Vous n'avez pas accès à cette page."),
    404: ("Page introuvable", "Cette page n'existe pas, ou ce que vous cherchez ne vous est pas accessible."),
    405: ("Action non permise", "Cette action n'est pas permise à cette adresse."),
    413: ("Demande trop volumineuse", "La demande dépasse la taille acceptée."),
    500: ("Erreur du serveur", "Une erreur est survenue de notre côté. Elle a été enregistrée ; réessayez "
                               "dans un instant."),
}


def headers() -> dict[str, str]:
    """The pages' headers; forms may post to this site and to its OpenID provider (sign-out)."""
    issuer = current_app.extensions["partage"].settings.oidc_issuer.rstrip("/")
    csp = SECURITY_HEADERS["Content-Security-Policy"].format(idp=f" {issuer}" if issuer else "")
    return {**SECURITY_HEADERS, "Content-Security-Policy": csp}


def html(body: str, status: int = 200) -> Response:
    return Response(body, status, {"Content-Type": "text/html; charset=utf-8", **headers()})


def message(title: str, text: str, status: int, **extra: Any) -> Response:
    """A page of the site's style saying one thing (errors, refusals, sign-in problems)."""
    return html(render_template("message.html", title=title, message=text, status=status, **extra), status)


def error_page(status: int) -> Response:
    title, text = TEXTS.get(status, TEXTS[500] if status >= 500 else TEXTS[400])
    return message(title, text, status)


def _browser_path() -> bool:
    return request.path.startswith(BROWSER_PREFIXES)


def view_error(exc: Exception) -> WerkzeugResponse:
    """What a browser page's view raised (its blueprints register this for Exception)."""
    if isinstance(exc, HTTPException):
        if isinstance(exc.response, WerkzeugResponse):   # abort(a response): that response
            return exc.response
        return error_page(exc.code or 500)
    log.exception("error on %s %s", request.method, request.path)
    return error_page(500)


def install(app: Flask) -> None:
    """French error pages for routing errors on the browser's paths: the app's handler of HTTP
    errors, which hands other paths to the one installed before it (the FHIR door's)."""
    previous: Callable[[HTTPException], Any] | None = app.error_handler_spec[None][None].get(HTTPException)

    def routing_error(exc: HTTPException) -> Any:
        if _browser_path() and exc.response is None:
            return error_page(exc.code or 500)
        return previous(exc) if previous is not None else exc

    app.register_error_handler(HTTPException, routing_error)
