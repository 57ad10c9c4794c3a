"""Flask application factory: wires the doors onto one Services object."""

from __future__ import annotations

import logging

from flask import Flask

from ..config import Settings
from ..services import Services

log = logging.getLogger("partage")


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or (services.settings if services else Settings.from_env())
    services = services or Services.open(settings, migrate=False)
    app = Flask("partage")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions["partage"] = services

    from .auditing import install as install_audit
    install_audit(app)

    from .health import bp as health_bp
    app.register_blueprint(health_bp)
    from ..xds.endpoints import bp as xds_bp
    app.register_blueprint(xds_bp)
    from ..fhir.routes import bp as fhir_bp
    app.register_blueprint(fhir_bp)
    from ..fhir.audit import bp as fhir_audit_bp
    app.register_blueprint(fhir_audit_bp)
    from ..fhir.consent import bp as fhir_consent_bp
    app.register_blueprint(fhir_consent_bp)
    from .validate import bp as validate_bp
    app.register_blueprint(validate_bp)
    _ = services.document_checks   # load the CDA profile now: a bad --schema-dir fails at start, not later
    from . import login, pages
    from .clinical_page import bp as clinical_page_bp
    login.install(app, settings)
    app.register_blueprint(clinical_page_bp)
    pages.install(app)
    return app
