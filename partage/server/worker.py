"""The gunicorn worker of `partage serve`: Hypercorn (asyncio) in front, the Flask app in threads.

gunicorn stays the process manager (the master migrates, runs the MLLP listener, forks,
watches and replaces workers); each worker runs an asyncio HTTP/1.1 server, Hypercorn, on
the sockets gunicorn opened. Why this model (docs/robustness.md, "Server model"):

- a connection costs a coroutine, not a thread: hundreds of idle or slow clients are held
  cheaply, and the worker keeps serving others;
- Hypercorn closes a connection whose request headers are not complete within
  `header_timeout` seconds of its opening (or of the previous answer); bytes do not extend it;
- the Flask application runs in a pool of `threads` threads (a2wsgi), behind the admission
  layer (`admission.py`: bounded requests in the application, body and answer deadlines)
  and the per-route size limits (`limits.py`); request bodies are streamed to the
  application as they arrive, with back-pressure, never buffered whole.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any, cast

from a2wsgi import WSGIMiddleware
from gunicorn.workers.base import Worker  # type: ignore[import-untyped]  # gunicorn ships no types
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets

from ..config import Settings
from .admission import MAX_HEADER_BYTES, Admission, AdmissionLimits, AsgiApp
from .answers import error_answer
from .limits import BodyLimits

log = logging.getLogger("partage.server")


def admission_limits(settings: Settings) -> AdmissionLimits:
    return AdmissionLimits(threads=max(1, settings.threads), body_timeout=settings.body_timeout,
                           body_min_rate=max(1, settings.body_min_rate), send_timeout=settings.send_timeout,
                           queue_timeout=settings.queue_timeout, max_queued=settings.max_queued)


def asgi_app(flask_app: Any, settings: Settings) -> Admission:
    """The Flask application as the worker serves it: limits, adapter, admission."""
    limits = admission_limits(settings)
    wsgi = WSGIMiddleware(cast(Any, BodyLimits(flask_app, settings)), workers=limits.threads)
    return Admission(cast(AsgiApp, wsgi), limits, error_answer)


def hypercorn_config(settings: Settings, graceful_timeout: float) -> Config:
    config = Config()
    config.keep_alive_timeout = settings.header_timeout
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    config.graceful_timeout = graceful_timeout
    config.accesslog = logging.getLogger("partage.access")
    config.access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(L)ss'
    config.errorlog = logging.getLogger("partage.server")
    config.include_server_header = False
    return config


class HypercornWorker(Worker):  # type: ignore[misc]  # gunicorn is untyped
    """A gunicorn worker serving the app with Hypercorn on gunicorn's sockets."""

    def init_signals(self) -> None:
        # The event loop owns the signals (installed in _serve); reset gunicorn's defaults.
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        settings: Settings = self.app.settings
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)       # graceful: finish what is in flight
        for quick in (signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(quick, os._exit, 0)
        config = hypercorn_config(settings, float(self.cfg.graceful_timeout))
        sockets = Sockets(secure_sockets=[], insecure_sockets=[s.sock for s in self.sockets], quic_sockets=[])
        heartbeat = loop.create_task(self._heartbeat(stop))
        try:
            await worker_serve(ASGIWrapper(cast(Any, asgi_app(self.wsgi, settings))), config, sockets=sockets,
                               shutdown_trigger=stop.wait)
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Tell the master this worker lives; stop when the master is gone."""
        while not stop.is_set():
            self.notify()
            if self.ppid != os.getppid():
                log.info("master gone; worker %s stops", self.pid)
                stop.set()
            await asyncio.sleep(1.0)
