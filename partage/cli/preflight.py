"""`partage serve` checks every setting in the master, before any worker starts.

A bad setting must stop the start with one line naming it (exit status 2), not start a
server that looks healthy and fails on the first request, nor fail in a worker with a
traceback: values (`Settings.problems`, the notification destinations), files (affinity domain, access matrix, trust
store, CDA schema / value sets / Schematron and the validation profile, all loaded the
way the workers will load them), the database (reachable, migrated) and the ports (free).
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

from sqlalchemy.engine import make_url

from ..access.authn import trust_problem
from ..access.decisions import AccessTable
from ..cda.gate import CdaGate
from ..config import Settings
from ..notify.destinations import Destinations
from ..services import Services
from ..terminology.domain import load_affinity_domain


class _Held(logging.Handler):
    """Holds what the loaders say while the checks run: a refusal is one line; a server that
    starts then says it (e.g. what the CDA profile lacks)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def first_problem(settings: Settings) -> str:
    """The first thing that stops `settings` from serving, as one line; "" when none."""
    held = _Held()
    logger = logging.getLogger("partage")
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(held)
    try:
        for check in (_values, _notifications, _files, _ports, _database):
            problem = check(settings)
            if problem:
                return problem
    finally:
        logger.removeHandler(held)
        logger.propagate = propagate
    for record in held.records:   # the checks passed: what the loaders said is said now
        logging.getLogger(record.name).handle(record)
    return ""


def _values(settings: Settings) -> str:
    problems = settings.problems()
    return problems[0] if problems else ""


def _notifications(settings: Settings) -> str:
    try:
        Destinations.from_settings(settings)
    except ValueError as exc:
        return f"PARTAGE_NOTIFY_DESTINATIONS: {exc}"
    return ""


def _exists(path: str, flag: str, *, directory: bool | None = None) -> str:
    where = Path(path)
    if not where.exists():
        return f"{flag}: {path} does not exist"
    if directory is True and not where.is_dir():
        return f"{flag}: {path} is not a directory"
    if directory is False and not where.is_file():
        return f"{flag}: {path} is not a file"
    return ""


def _files(settings: Settings) -> str:
    checks = [(settings.codes, "--codes (PARTAGE_CODES)", None),
              (settings.access_matrix, "--access-matrix (PARTAGE_ACCESS_MATRIX)", False),
              (settings.cda_schema_dir, "--cda-schema-dir (PARTAGE_CDA_SCHEMA_DIR)", True),
              (settings.cda_valuesets_dir, "--cda-valuesets (PARTAGE_CDA_VALUESETS_DIR)", True),
              (settings.cda_schematron, "--cda-schematron (PARTAGE_CDA_SCHEMATRON)", False),
              (settings.trust, "--trust (PARTAGE_TRUST)", False),
              (settings.issuers, "--issuers (PARTAGE_ISSUERS)", False)]
    for path, flag, directory in checks:
        if path:
            problem = _exists(path, flag, directory=directory)
            if problem:
                return problem
    problem = trust_problem(settings)
    if problem:
        return problem
    if settings.access_matrix:
        try:
            AccessTable.load(settings.access_matrix)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            reason = f"not JSON ({exc})" if isinstance(exc, json.JSONDecodeError) else f"{type(exc).__name__}: {exc}"
            return f"--access-matrix (PARTAGE_ACCESS_MATRIX): {settings.access_matrix}: {reason}"
    # The loaders the workers run (Services.domain, Services.document_checks), run here first.
    try:
        load_affinity_domain(settings.codes)
    except Exception as exc:   # any loader failure is a bad file, whatever its type
        return f"--codes (PARTAGE_CODES): {settings.codes or 'the shipped defaults'}: {_reason(exc)}"
    try:
        CdaGate.from_settings(settings)
    except Exception as exc:
        return ("--cda-schema-dir / --cda-valuesets / --cda-schematron / --validation-profile / "
                f"--validation-blocking: the CDA profile cannot be built: {_reason(exc)}")
    return ""


def _ports(settings: Settings) -> str:
    for flag, host_flag, host, port in (
            ("--port (PARTAGE_PORT)", "--host (PARTAGE_HOST)", settings.host, settings.port),
            ("--mllp-port (PARTAGE_MLLP_PORT)", "PARTAGE_MLLP_HOST", settings.mllp_bind_host, settings.mllp_port)):
        if not port:
            continue
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            return f"{host_flag}: {host}: {exc}"
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return f"{flag}: cannot listen on {host}:{port}: {exc.strerror or exc}"
    if settings.port == settings.mllp_port and settings.host == settings.mllp_bind_host:
        return f"--mllp-port (PARTAGE_MLLP_PORT): {settings.mllp_port} is also the HTTP --port"
    return ""


def _database(settings: Settings) -> str:
    try:
        services = Services.open(settings, migrate=True)
    except Exception as exc:
        return f"--database (PARTAGE_DATABASE_URL): {_safe_url(settings)}: {_reason(exc)}"
    try:
        status = services.registry.status()
        if status["status"] != "ok":
            return f"--database (PARTAGE_DATABASE_URL): {_safe_url(settings)}: {status['status']}"
        blobs = services.blobs.status()
        if blobs.get("status") != "ok":
            return f"PARTAGE_BLOB_URL / --data: the blob store is not usable: {blobs.get('status')}"
    finally:
        services.close()
    return ""


def _safe_url(settings: Settings) -> str:
    try:
        return make_url(settings.database).render_as_string(hide_password=True)
    except Exception:
        return "(unreadable URL)"


def _reason(exc: BaseException) -> str:
    """One line: the exception's first line, without driver noise."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
