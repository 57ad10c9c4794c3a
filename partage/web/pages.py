"""Responses of the browser's pages (the record pages, the sign-in), in French and in one
style: their security headers, a one-message page, and the error pages (400, 403, 404, 405,
500) that say what happened and nothing of the server's inside (no stack trace, no exception
text). The API doors keep their own error formats (SOAP Fault, OperationOutcome)."""

from __future__ import annotations

import html as html_text
import logging
from typing import Any

from flask import Response, current_app, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from ..failures import classify

log = logging.getLogger("partage.web")
BROWSER_PREFIXES = ("/dossier", "/connexion")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "frame-src 'self'; object-src 'self'; form-action 'self'{idp}; "
                               "frame-ancestors 'self'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    # HTTPS only from the first answer a browser read over TLS (RFC 6797; ignored over plain HTTP, 8.1;
    # OWASP ASVS 4.0 14.4.5): the session cookie is Secure, so the pages are meant to be read over TLS
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
}
TEXTS = {
    400: ("Demande incorrecte", "La demande n'a pas pu être comprise."),
    401: ("Identification requise", "Connectez-vous pour consulter ce dossier."),
    403: ("Accès refusé", "Vous n'avez pas accès à cette page."),
    404: ("Page introuvable", "Cette page n'existe pas, ou ce que vous cherchez ne vous est pas accessible."),
    405: ("Action non permise", "Cette action n'est pas permise à cette adresse."),
    408: ("Délai dépassé", "La demande est arrivée trop lentement ; réessayez."),
    413: ("Demande trop volumineuse", "La demande dépasse la taille acceptée."),
    500: ("Erreur du serveur", "Une erreur est survenue de notre côté. Elle a été enregistrée ; réessayez "
                               "dans un instant."),
    503: ("Service momentanément indisponible", "Le service ne peut pas répondre pour le moment ; "
                                                "réessayez dans un instant."),
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


def error_page(status: int, retry_after: int | None = None) -> Response:
    title, text = TEXTS.get(status, TEXTS[500] if status >= 500 else TEXTS[400])
    response = message(title, text, status)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def is_browser_path(path: str) -> bool:
    """Is `path` one of the browser's pages (French HTML errors, not a door's shape)?"""
    return path.startswith(BROWSER_PREFIXES)


def browser_path() -> bool:
    """Is this request for one of the browser's pages?"""
    return is_browser_path(request.path)


def plain_error_page(status: int) -> bytes:
    """The French error page where no application runs yet (the server's own limits, deadlines and
    overload, answered before Flask: `partage.server.answers`): the same words, without the style."""
    title, text = TEXTS.get(status, TEXTS[500] if status >= 500 else TEXTS[400])
    title, text = html_text.escape(title), html_text.escape(text)
    return (f'<!doctype html>\n<html lang="fr">\n<head><meta charset="utf-8"><title>{title} — Partage</title>'
            f'</head>\n<body><main><h1>{title}</h1><p>{text}</p></main></body>\n</html>\n').encode()


def failure_page(exc: Exception) -> WerkzeugResponse:
    """The page for what a browser page raised, or a routing error on the browser's paths: the
    same status as every door gives (outage 503 + Retry-After, 408, 413, 400), in French."""
    if isinstance(exc, HTTPException):
        if isinstance(exc.response, WerkzeugResponse):   # abort(a response): that response
            return exc.response
        return error_page(exc.code or 500)
    known = classify(exc)
    if known is None:
        log.exception("error on %s %s", request.method, request.path)
        return error_page(500)
    if known.status >= 500:
        log.error("%s %s: %s (%s)", request.method, request.path, known.message, exc)
    return error_page(known.status, known.retry_after)


view_error = failure_page   # what the page blueprints register for Exception
