"""Liveness and storage status: what a load balancer and an operator look at first."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from .. import __version__
from ..services import Services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    services: Services = current_app.extensions["partage"]
    storage = {"registry": services.registry.status(), "repository": services.blobs.status()}
    ok = all(part["status"] == "ok" for part in storage.values())
    body = {"status": "ok" if ok else "degraded", "version": __version__, "storage": storage,
            "authentication": "disabled (insecure-dev)" if services.settings.insecure_dev
            else "required"}
    return jsonify(body), 200 if ok else 503
