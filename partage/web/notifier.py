"""The notification sender of a server, in a process of its own, wired with the doors' renderers.

The composition root's one piece of the notification engine. `Notifier(settings).start()`
starts a process (spawned: a fresh interpreter, never a fork of a process with threads)
that opens its own Services and runs `partage.notify.sender.Sender` with the DSUB and FHIR
renderers; `.stop()` asks it to stop after the deliveries in progress (SIGTERM), then waits.
The process also stops when its parent goes away, so a killed server leaves no sender behind.

`partage serve` runs one, started by the gunicorn master (partage.web.server, `when_ready` /
`on_exit`). A process rather than a thread of the master: gunicorn forks its workers from the
master, and a fork taken while a thread is inside SQLite or a pool lock hangs the new worker.
`PARTAGE_NOTIFIER=0` turns it off (the outbox then waits for a server that runs one).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
from typing import Any

from ..config import Settings
from ..fhir.subscriptions import FhirRenderer
from ..notify.channels import Renderer
from ..notify.model import DSUB, FHIR
from ..notify.sender import Sender
from ..services import Services
from ..xds.dsub import NotifyRenderer

log = logging.getLogger("partage.notify")
PARENT_CHECK_S = 1.0


def renderers() -> dict[str, Renderer]:
    """Each door renders the notifications of the subscriptions it made."""
    return {DSUB: NotifyRenderer(), FHIR: FhirRenderer()}


def run(settings: Settings, parent_pid: int) -> None:
    """The sender process: deliver until SIGTERM / SIGINT or until the parent is gone."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    stop = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    services = Services.open(settings, migrate=False)
    sender = Sender(services, renderers()).start()
    try:
        while not stop.wait(PARENT_CHECK_S):
            if os.getppid() != parent_pid:
                log.info("notification sender: the server is gone; stopping")
                break
    finally:
        sender.stop()
        services.close()


class Notifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: Any = None

    def start(self) -> Notifier:
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(target=run, args=(self.settings, os.getpid()), name="partage-notifier")
        self.process.start()
        log.info("notification sender process %s started", self.process.pid)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or not self.process.is_alive():
            return
        self.process.terminate()
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
