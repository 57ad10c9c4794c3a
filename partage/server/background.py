"""The server's background process: the notification sender and the PDF text indexer.

Work that a request must not wait for, and must not slow down, runs here, apart from the
HTTP workers: the outbox's deliveries (`partage.notify.sender.Sender`, with the DSUB and
FHIR renderers of the doors) and the reading of PDFs' text (`partage.clinical.queue`'s
`TextIndexer`: pypdf costs 100 ms to seconds of CPU per document). In a process of its own
it takes no GIL from the workers, and it runs at a lower priority (`os.nice`), so that on a
busy host requests get the CPU first and the background catches up in the pauses.

`BackgroundProcess(settings).start()` runs `python -m partage.server.background` (a fresh
interpreter, never a fork of a process with threads), hands it the settings on its stdin,
and waits until it says it is ready: its Services are open and the sender has looked at the
outbox once. `.stop()` asks it to stop after the work in progress (SIGTERM), then waits.
The process also stops when its parent goes away, so a killed server leaves nothing behind;
one that fails while the server runs (a crash, a kill) is started again (after 1, 2, 4 ...
60 s). One that exits cleanly was asked to stop and is not restarted.

`partage serve` runs exactly one, started by the gunicorn master (partage.server.serve,
`when_ready` / `on_exit`), not one per worker. A process rather than a thread of the master:
gunicorn forks its workers from the master, and a fork taken while a thread is inside SQLite
or a pool lock hangs the new worker. Not `multiprocessing`: its children are inherited by
the forked workers, whose exit would try to join (or, as daemons, kill) the master's sender.
Several servers (hosts) may each run one: outbox rows and text jobs are leased in the
database, so none is done twice (partage.registry.outbox, partage.registry.text_jobs).
`PARTAGE_NOTIFIER=0` turns the sender off and `PARTAGE_TEXT_INDEXER=0` the indexer (the
outbox then waits for a server that runs one; `partage clinical reindex` drains the jobs);
with both off there is no background process.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from ..clinical.queue import TextIndexer
from ..config import Settings
from ..fhir.subscriptions import FhirRenderer
from ..notify.model import DSUB, FHIR
from ..notify.sender import Sender
from ..services import Services
from ..xds.dsub import NotifyRenderer

log = logging.getLogger("partage.notify")
PARENT_CHECK_S = 1.0
READY_TIMEOUT_S = 60.0
READY = b"ready\n"
STOPPING = b"stopping\n"
RESTART_MAX_S = 60.0


NICENESS = 10   # below the HTTP workers: requests first, the background in the pauses


def renderers() -> dict[str, Any]:
    """Each door renders the notifications of the subscriptions it made."""
    return {DSUB: NotifyRenderer(), FHIR: FhirRenderer()}


def wanted(settings: Settings) -> bool:
    """Whether this server has background work to run at all."""
    return settings.notifier or settings.text_indexer


def run(settings: Settings, parent_pid: int, ready: Any = None) -> None:
    """The background process: deliver and index until SIGTERM or until the parent is gone.
    `ready` (a binary stream) is told once the sender has looked at the outbox."""
    stop = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    # Ctrl-C reaches the whole process group: the server decides when its sender stops (SIGTERM).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(NICENESS)
    except OSError:   # not allowed here: run at the workers' priority
        pass
    services = Services.open(settings, migrate=False)
    sender = Sender(services, renderers()).start() if settings.notifier else None
    indexer = TextIndexer(services).start() if settings.text_indexer else None
    try:
        if sender is not None:
            sender.first_pass.wait(READY_TIMEOUT_S)
        _say(ready, READY)
        while not stop.wait(PARENT_CHECK_S):
            if os.getppid() != parent_pid:
                log.info("background process: the server is gone; stopping")
                break
        _say(ready, STOPPING)   # a clean stop, asked for: the server does not start another
    finally:
        if indexer is not None:
            indexer.stop()
        if sender is not None:
            sender.stop()
        services.close()


def _say(channel: Any, line: bytes) -> None:
    if channel is None:
        return
    try:
        channel.write(line)
        channel.flush()
    except OSError:   # the server stopped listening: carry on, it may still be there
        pass


def main() -> int:
    """`python -m partage.server.background`: the settings come pickled on stdin, from the server."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    settings, parent_pid = pickle.load(sys.stdin.buffer)
    sys.stdin.close()
    ready = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr   # nothing else goes to the server's pipe
    run(settings, parent_pid, ready)
    return 0


class BackgroundProcess:
    """The server's one background process: started, watched (restarted if it dies), stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None

    def start(self) -> BackgroundProcess:
        self._spawn()
        self._watch = threading.Thread(target=self._supervise, name="partage-background-watch", daemon=True)
        self._watch.start()
        return self

    def _spawn(self) -> bool:
        """Start the process and wait for its ready line; False if it did not come."""
        with self._lock:
            if self._stopping.is_set():
                return False
            process = subprocess.Popen([sys.executable, "-m", "partage.server.background"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, close_fds=True)
            self.process = process
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(pickle.dumps((self.settings, os.getpid())))
            process.stdin.close()
        except OSError:
            pass
        line = _read_line(process.stdout.fileno(), READY_TIMEOUT_S)
        if line == READY:
            log.info("background process %s started", process.pid)
            return True
        log.error("background process %s did not start; see the log above", process.pid)
        return False

    def _supervise(self) -> None:
        """Restart the process when it fails. Its exit status is no witness (the gunicorn master
        reaps every child, this one included): what it said on its pipe before the end is."""
        delay = 1.0
        while not self._stopping.is_set():
            process = self.process
            if process is None or process.stdout is None:
                return
            started = time.monotonic()
            said = _read_all(process.stdout.fileno())
            process.stdout.close()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:   # closed its pipe but lives on: end it
                process.kill()
            if self._stopping.is_set():
                return
            if STOPPING in said:   # asked to stop (SIGTERM to the server's process group): not a failure
                log.info("background process %s stopped", process.pid)
                return
            if time.monotonic() - started > RESTART_MAX_S:
                delay = 1.0
            log.error("background process %s ended unexpectedly; starting another in %.0f s",
                      process.pid, delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RESTART_MAX_S)
            self._spawn()

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the process to stop after the work in progress; kill it if it does not."""
        self._stopping.set()
        with self._lock:
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.info("background process %s stopped", process.pid)


def _read_line(fd: int, timeout: float) -> bytes:
    """The first line written on `fd` within `timeout` seconds (b"" if none)."""
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b""
        chunk = os.read(fd, 1)
        if not chunk:
            return b""
        line += chunk
    return line


def _read_all(fd: int) -> bytes:
    """Everything written on `fd` until its writer is gone."""
    said = b""
    while chunk := os.read(fd, 256):
        said += chunk
    return said


if __name__ == "__main__":
    sys.exit(main())
