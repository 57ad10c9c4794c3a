"""The notification sender of a server, in a process of its own, wired with the doors' renderers.

The composition root's one piece of the notification engine. `Notifier(settings).start()`
runs `python -m partage.web.notifier` (a fresh interpreter, never a fork of a process with
threads), hands it the settings on its stdin, and waits until it says it is ready: its
Services are open and the sender (`partage.notify.sender.Sender`, with the DSUB and FHIR
renderers) has looked at the outbox once. A server that answers has a working sender whose
start-up is over. `.stop()` asks it to stop after the deliveries in progress (SIGTERM), then
waits. The process also stops when its parent goes away, so a killed server leaves no sender
behind; a sender that fails while the server runs (a non-zero exit: a crash, a kill) is
started again (after 1, 2, 4 ... 60 s). One that exits cleanly was asked to stop (SIGTERM to
the server's process group, as a service manager sends it) and is not restarted.

`partage serve` runs exactly one, started by the gunicorn master (partage.web.server,
`when_ready` / `on_exit`), not one per worker. A process rather than a thread of the master:
gunicorn forks its workers from the master, and a fork taken while a thread is inside SQLite
or a pool lock hangs the new worker. Not `multiprocessing`: its children are inherited by
the forked workers, whose exit would try to join (or, as daemons, kill) the master's sender.
Several servers (hosts) may each run one: outbox rows are leased in the database, so no row
is delivered by two senders (partage.registry.outbox). `PARTAGE_NOTIFIER=0` turns it off
(the outbox then waits for a server that runs one).
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

from ..config import Settings

log = logging.getLogger("partage.notify")
PARENT_CHECK_S = 1.0
READY_TIMEOUT_S = 60.0
READY = b"ready\n"
STOPPING = b"stopping\n"
RESTART_MAX_S = 60.0


def renderers() -> dict[str, Any]:
    """Each door renders the notifications of the subscriptions it made."""
    from ..fhir.subscriptions import FhirRenderer
    from ..notify.model import DSUB, FHIR
    from ..xds.dsub import NotifyRenderer

    return {DSUB: NotifyRenderer(), FHIR: FhirRenderer()}


def run(settings: Settings, parent_pid: int, ready: Any = None) -> None:
    """The sender process: deliver until SIGTERM / SIGINT or until the parent is gone.
    `ready` (a binary stream) is told once the sender has looked at the outbox."""
    from ..notify.sender import Sender
    from ..services import Services

    stop = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    # Ctrl-C reaches the whole process group: the server decides when its sender stops (SIGTERM).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    services = Services.open(settings, migrate=False)
    sender = Sender(services, renderers()).start()
    try:
        sender.first_pass.wait(READY_TIMEOUT_S)
        _say(ready, READY)
        while not stop.wait(PARENT_CHECK_S):
            if os.getppid() != parent_pid:
                log.info("notification sender: the server is gone; stopping")
                break
        _say(ready, STOPPING)   # a clean stop, asked for: the server does not start another
    finally:
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
    """`python -m partage.web.notifier`: the settings come pickled on stdin, from the server."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    settings, parent_pid = pickle.load(sys.stdin.buffer)
    sys.stdin.close()
    ready = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr   # nothing else goes to the server's pipe
    run(settings, parent_pid, ready)
    return 0


class Notifier:
    """The server's one sender process: started, watched (restarted if it dies), stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None

    def start(self) -> Notifier:
        self._spawn()
        self._watch = threading.Thread(target=self._supervise, name="partage-notifier-watch", daemon=True)
        self._watch.start()
        return self

    def _spawn(self) -> bool:
        """Start the process and wait for its ready line; False if it did not come."""
        with self._lock:
            if self._stopping.is_set():
                return False
            process = subprocess.Popen([sys.executable, "-m", "partage.web.notifier"], stdin=subprocess.PIPE,
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
            log.info("notification sender process %s started", process.pid)
            return True
        log.error("notification sender process %s did not start; see the log above", process.pid)
        return False

    def _supervise(self) -> None:
        """Restart the sender when it fails. Its exit status is no witness (the gunicorn master
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
                log.info("notification sender process %s stopped", process.pid)
                return
            if time.monotonic() - started > RESTART_MAX_S:
                delay = 1.0
            log.error("notification sender process %s ended unexpectedly; starting another in %.0f s",
                      process.pid, delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RESTART_MAX_S)
            self._spawn()

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the sender to stop after the deliveries in progress; kill it if it does not."""
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
        log.info("notification sender process %s stopped", process.pid)


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
