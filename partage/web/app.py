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

    from .health import bp as health_bp
    app.register_blueprint(health_bp)
    from ..xds.endpoints import bp as xds_bp
    app.register_blueprint(xds_bp)
    from ..fhir.routes import bp as fhir_bp
    app.register_blueprint(fhir_bp)
    return app
