"""Flask application factory: wires the doors onto one Services object."""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from ..config import Settings
from ..failures import classify
from ..fhir import routes as fhir_routes
from ..fhir.audit import bp as fhir_audit_bp
from ..fhir.consent import bp as fhir_consent_bp
from ..fhir.routes import bp as fhir_bp
from ..fhir.subscriptions import bp as fhir_subscription_bp  # DSUBm (docs/notifications.md)
from ..services import Services
from ..web import login, pages
from ..web.clinical_page import bp as clinical_page_bp
from ..web.validate import bp as validate_bp
from ..xds.endpoints import bp as xds_bp
from .answers import error_answer
from .auditing import install as install_audit
from .durability import DurableAnswers
from .health import bp as health_bp

log = logging.getLogger("partage")


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or (services.settings if services else Settings.from_env())
    services = services or Services.open(settings, migrate=False, bounded=True)
    app = Flask("partage")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions["partage"] = services

    install_audit(app)

    app.register_blueprint(health_bp)
    app.register_blueprint(xds_bp)
    app.register_blueprint(fhir_bp)
    app.register_blueprint(fhir_audit_bp)
    app.register_blueprint(fhir_consent_bp)
    app.register_blueprint(fhir_subscription_bp)
    app.register_blueprint(validate_bp)
    _ = services.document_checks   # load the CDA profile now: a bad --schema-dir fails at start, not later
    login.install(app, settings)
    app.register_blueprint(clinical_page_bp)
    app.register_error_handler(Exception, last_resort)
    app.wsgi_app = DurableAnswers(app.wsgi_app, services.registry)  # type: ignore[method-assign]
    return app


def last_resort(exc: Exception) -> WerkzeugResponse:
    """Whatever no door handled, answered in the door's shape: never an HTML page or a traceback.

    Outages (database, audit store) are 503 with Retry-After; slow or oversized bodies 408/413;
    inputs that broke a structural limit while read (deep nesting, huge numbers) 400. The
    browser's pages (`/dossier`, `/connexion`) get the French error page instead.
    """
    if pages.browser_path():
        return pages.failure_page(exc)
    retry_after = None
    if isinstance(exc, HTTPException) and (request.path == "/fhir" or request.path.startswith("/fhir/")):
        return fhir_routes.routing_error(exc)   # an OperationOutcome, with Allow on a 405
    if isinstance(exc, HTTPException):
        status, message = exc.code or 500, exc.description or exc.name
    else:
        known = classify(exc)
        if known is None:
            log.exception("internal error on %s %s", request.method, request.path)
            status, message = 500, "internal error; the server log has the details"
        else:
            status, message, retry_after = known.status, known.message, known.retry_after
            if status >= 500:
                log.error("%s %s: %s (%s)", request.method, request.path, message, exc)
    content_type, body = error_answer(request.path, status, message, retry_after)
    response = Response(body, status, content_type=content_type)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    if status in (408, 413):
        response.headers["Connection"] = "close"   # the rest of the body is not read
    return response
