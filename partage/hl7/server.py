"""The MLLP listener: a threaded TCP server that frames, dispatches and acknowledges.

Each connection is read with the MLLP decoder; each message goes to the handler for its
type and the ACK goes back on the same connection. One thread per connection: feeds are
few, long-lived connections. Bounded: a message must arrive whole within idle_timeout
(PARTAGE_MLLP_IDLE_TIMEOUT) of the previous answer, trickled bytes do not extend it; a frame
is at most max_message bytes; at most max_connections connections are open (more are closed
at once); unfinished frames and messages being processed, all connections together, hold at
most max_buffered bytes (the connection that would cross it is closed: its sender sends again). A failing dependency (database, audit
store) gets an AE acknowledgement saying so: the sender keeps the message and sends it again.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from typing import Any

from ..failures import classify
from ..metadata.er7 import decode, encode
from ..services import Services
from .mllp import MllpDecoder, MllpError, frame
from .routing import failed, route

log = logging.getLogger("partage.hl7")

IDLE_TIMEOUT = 300.0
MAX_MESSAGE = 64 * 1024 * 1024
MAX_CONNECTIONS = 64
MAX_BUFFERED = 128 * 1024 * 1024


class BufferBudget:
    """Bytes held for unfinished frames, summed over every connection, under one cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def resize(self, held: int, wanted: int) -> bool:
        """Move a connection's share from `held` to `wanted` bytes; False when over the cap."""
        with self._lock:
            if wanted > held and self.used + wanted - held > self.limit:
                return False
            self.used += wanted - held
            return True


class _Handler(socketserver.BaseRequestHandler):
    server: MllpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        peer = self.client_address[0]
        decoder = MllpDecoder(max_message=self.server.max_message)
        held = 0
        # One deadline per message: from the end of the previous answer (or the connection's
        # start) to the end of the next frame. Bytes arriving do not extend it.
        deadline = time.monotonic() + self.server.idle_timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.info("MLLP connection from %s: no whole message within %g s, closed",
                             peer, self.server.idle_timeout)
                    return
                sock.settimeout(remaining)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue   # the deadline check above closes it
                except OSError:
                    return
                if not data:
                    return
                try:
                    messages = list(decoder.feed(data))
                except MllpError as exc:
                    log.warning("MLLP framing error from %s: %s", peer, exc)
                    return
                # Unfinished frames and the messages about to be processed count against the budget.
                wanted = decoder.pending + sum(len(m) for m in messages)
                if not self.server.budget.resize(held, wanted):
                    log.warning("MLLP connection from %s closed: the listener holds %d bytes of frames "
                                "(PARTAGE_MLLP_MAX_BUFFERED %d)", peer, self.server.budget.used,
                                self.server.budget.limit)
                    return
                held = wanted
                for raw in messages:
                    sock.settimeout(self.server.idle_timeout)
                    sock.sendall(frame(encode(self._answer(raw))))   # in the charset its MSH-18 names
                if messages:
                    self.server.budget.resize(held, decoder.pending)
                    held = decoder.pending
                    deadline = time.monotonic() + self.server.idle_timeout
        finally:
            self.server.budget.resize(held, 0)

    def _answer(self, raw: bytes) -> str:
        text, not_in_charset = decode(raw)
        try:
            return route(self.server.services, text, not_in_charset=not_in_charset)
        except Exception as exc:   # the feed must get an answer, not a closed socket
            known = classify(exc)
            if known is None:
                log.exception("MLLP message failed")
                return failed(text, "internal error; see the server log")
            log.error("MLLP message not processed: %s (%s)", known.message, exc)
            return failed(text, f"{known.message}; send again later")


class MllpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], services: Services, *, idle_timeout: float = IDLE_TIMEOUT,
                 max_message: int = MAX_MESSAGE, max_connections: int = MAX_CONNECTIONS,
                 max_buffered: int = MAX_BUFFERED) -> None:
        self.services = services
        self.idle_timeout = idle_timeout
        self.max_message = max_message
        self.max_connections = max_connections
        self.budget = BufferBudget(max_buffered)
        self._connections = threading.BoundedSemaphore(max_connections)
        super().__init__(address, _Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    def verify_request(self, request: Any, client_address: Any) -> bool:  # noqa: ARG002 — socketserver's signature
        """Refuse a connection beyond max_connections (closed at once, before any read)."""
        if self._connections.acquire(blocking=False):
            return True
        log.warning("MLLP connection from %s refused: %d connections already open "
                    "(PARTAGE_MLLP_MAX_CONNECTIONS)", client_address[0], self.max_connections)
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def start(self) -> MllpServer:
        self._thread = threading.Thread(target=self.serve_forever, name="mllp", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def start_mllp_server(services: Services) -> MllpServer:
    settings = services.settings
    return MllpServer((settings.mllp_bind_host, settings.mllp_port), services,
                      idle_timeout=settings.mllp_idle_timeout, max_message=settings.mllp_max_message,
                      max_connections=settings.mllp_max_connections,
                      max_buffered=settings.mllp_max_buffered).start()
