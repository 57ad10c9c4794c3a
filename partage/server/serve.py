"""`partage serve`: gunicorn workers for HTTP, the MLLP listener in the master process.

Each worker is a `partage.server.worker.HypercornWorker`: an asyncio HTTP server in front
(slow and idle clients cost a coroutine; header, body and answer deadlines), the Flask
application in a bounded pool of threads behind the admission layer. docs/robustness.md
says why and what a client sees at each limit.

The master migrates the database once, then forks workers that each build their own
Services (engines are never shared across a fork). The MLLP listener runs as a thread
of the master so that one port serves however many HTTP workers there are. The master also
starts the server's one background process and waits until it is ready before forking the
workers (`partage.server.background`: the outbox's deliveries, docs/notifications.md, and the
PDF text indexer, docs/clinical-reading.md, at a lower CPU priority than the workers); it
stops it on exit. The workers only validate, store and register: a PDF's text is read by
the background process from the durable job queue, never on a worker's CPU share or GIL.
"""

from __future__ import annotations

import logging
import sys

from flask import Flask
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]  # gunicorn ships no types

from ..access.authn import trust_problem
from ..config import Settings
from ..hl7.server import MllpServer, start_mllp_server
from ..notify.destinations import DEFAULT as DEFAULT_DESTINATIONS
from ..services import Services
from .app import create_app
from .background import BackgroundProcess, wanted

log = logging.getLogger("partage")

BANNER_INSECURE = """
*****************************************************************************
*  PARTAGE IS RUNNING IN INSECURE DEVELOPMENT MODE (--insecure-dev)          *
*  No authentication: every request acts as 'insecure-dev' with full access. *
*  Never use this mode with real patient data.                               *
*****************************************************************************
"""


class PartageServer(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mllp: MllpServer | None = None
        self.background: BackgroundProcess | None = None
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        self.cfg.set("bind", [f"{s.host}:{s.port}"])
        self.cfg.set("workers", s.workers)
        self.cfg.set("threads", s.threads)
        self.cfg.set("worker_class", "partage.server.worker.HypercornWorker")
        self.cfg.set("timeout", s.http_timeout)
        self.cfg.set("graceful_timeout", 30)
        self.cfg.set("when_ready", self._when_ready)
        self.cfg.set("on_exit", self._on_exit)
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn >= 27 opens one control socket per user ($HOME/.gunicorn/gunicorn.ctl):
            # unused here, and several servers on one host would fight over that path.
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Flask:
        return create_app(self.settings)

    def _when_ready(self, _arbiter: object) -> None:
        if wanted(self.settings):   # the outbox sender and the PDF text indexer (partage.server.background)
            self.background = BackgroundProcess(self.settings).start()
        if self.settings.mllp_port:
            self.mllp = start_mllp_server(Services.open(self.settings, migrate=False, bounded=True))
            log.info("MLLP listener on %s:%d", self.settings.mllp_bind_host, self.mllp.port)

    def _on_exit(self, _arbiter: object) -> None:
        if self.mllp is not None:
            self.mllp.stop()
        if self.background is not None:
            self.background.stop()


def serve(settings: Settings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if settings.insecure_dev:
        sys.stderr.write(BANNER_INSECURE)
    else:
        problem = trust_problem(settings)
        if problem:
            log.error("%s", problem)
            return 2
    if not settings.insecure_dev and not settings.trust:
        log.warning("no --trust (PARTAGE_TRUST) configured: no credential can be verified, so every "
                    "request for patient data will be refused (see docs/access.md)")
    if settings.notifier and not settings.insecure_dev and settings.notify_destinations == DEFAULT_DESTINATIONS:
        log.warning("notifications may go to any public, private or loopback address: set "
                    "PARTAGE_NOTIFY_DESTINATIONS to your subscribers' networks or names (docs/notifications.md)")
    services = Services.open(settings, migrate=True)
    log.info("data directory %s, database %s", settings.data_dir.resolve(),
             services.registry.engine.url.render_as_string(hide_password=True))
    services.close()
    PartageServer(settings).run()
    return 0
