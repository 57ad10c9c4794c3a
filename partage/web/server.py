"""`partage serve`: gunicorn workers for HTTP, the MLLP listener in the master process.

Each worker is a `partage.web.worker.HypercornWorker`: an asyncio HTTP server in front
(slow and idle clients cost a coroutine; header, body and answer deadlines), the Flask
application in a bounded pool of threads behind the admission layer. docs/robustness.md
says why and what a client sees at each limit.

The master migrates the database once, then forks workers that each build their own
Services (engines are never shared across a fork). The MLLP listener runs as a thread
of the master so that one port serves however many HTTP workers there are.

Each worker also runs the background PDF text indexer (`partage.clinical.queue`), as a
thread started after the worker has loaded the app (`post_worker_init`, so it uses the
worker's own Services and engine, never one inherited across the fork) and stopped when
the worker exits. Several workers (and several hosts) share the queue safely: jobs are
claimed one at a time, with `FOR UPDATE SKIP LOCKED` on PostgreSQL. A worker replaced by
gunicorn (crash, timeout, `max_requests`) leaves its claimed job to the others after the
job's lease. `PARTAGE_TEXT_INDEXER=0` turns the thread off (then `partage clinical
reindex` drains the queue).
"""

from __future__ import annotations

import logging
import sys

from gunicorn.app.base import BaseApplication

from ..config import Settings
from ..services import Services

log = logging.getLogger("partage")

BANNER_INSECURE = """
*****************************************************************************
*  PARTAGE IS RUNNING IN INSECURE DEVELOPMENT MODE (--insecure-dev)          *
*  No authentication: every request acts as 'insecure-dev' with full access. *
*  Never use this mode with real patient data.                               *
*****************************************************************************
"""


class PartageServer(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mllp = None
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        self.cfg.set("bind", [f"{s.host}:{s.port}"])
        self.cfg.set("workers", s.workers)
        self.cfg.set("threads", s.threads)
        self.cfg.set("worker_class", "partage.web.worker.HypercornWorker")
        self.cfg.set("timeout", s.http_timeout)
        self.cfg.set("graceful_timeout", 30)
        self.cfg.set("when_ready", self._when_ready)
        self.cfg.set("on_exit", self._on_exit)
        self.cfg.set("post_worker_init", self._post_worker_init)
        self.cfg.set("worker_exit", self._worker_exit)
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn >= 27 opens one control socket per user ($HOME/.gunicorn/gunicorn.ctl):
            # unused here, and several servers on one host would fight over that path.
            self.cfg.set("control_socket_disable", True)

    def load(self):
        from .app import create_app

        return create_app(self.settings)

    def _when_ready(self, _arbiter) -> None:
        if self.settings.mllp_port:
            from ..hl7.server import start_mllp_server

            self.mllp = start_mllp_server(Services.open(self.settings, migrate=False))
            log.info("MLLP listener on %s:%d", self.settings.mllp_bind_host, self.mllp.port)

    def _post_worker_init(self, worker) -> None:
        if self.settings.text_indexer:
            from ..clinical.queue import TextIndexer

            worker.partage_text_indexer = TextIndexer(worker.wsgi.extensions["partage"]).start()

    def _worker_exit(self, _arbiter, worker) -> None:
        indexer = getattr(worker, "partage_text_indexer", None)
        if indexer is not None:
            indexer.stop()

    def _on_exit(self, _arbiter) -> None:
        if self.mllp is not None:
            self.mllp.stop()


def serve(settings: Settings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if settings.insecure_dev:
        sys.stderr.write(BANNER_INSECURE)
    else:
        from ..access.authn import trust_problem

        problem = trust_problem(settings)
        if problem:
            log.error("%s", problem)
            return 2
    if not settings.insecure_dev and not settings.trust:
        log.warning("no --trust (PARTAGE_TRUST) configured: no credential can be verified, so every "
                    "request for patient data will be refused (see docs/access.md)")
    services = Services.open(settings, migrate=True)
    log.info("data directory %s, database %s", settings.data_dir.resolve(),
             services.registry.engine.url.render_as_string(hide_password=True))
    services.close()
    PartageServer(settings).run()
    return 0
