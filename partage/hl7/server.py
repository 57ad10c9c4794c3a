"""The MLLP listener: a threaded TCP server that frames, dispatches and acknowledges.

Each connection is read with the MLLP decoder (bounded message size, idle timeout);
each message goes to the handler for its type and the ACK goes back on the same
connection. One thread per connection: feeds are few, long-lived connections.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading

from ..services import Services
from .mllp import MllpDecoder, MllpError, frame
from .outcome import FeedOutcome
from .routing import ack, route

log = logging.getLogger("partage.hl7")

IDLE_TIMEOUT = 300.0
MAX_MESSAGE = 64 * 1024 * 1024


class _Handler(socketserver.BaseRequestHandler):
    server: MllpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(self.server.idle_timeout)
        decoder = MllpDecoder(max_message=self.server.max_message)
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                log.info("MLLP connection from %s idle, closed", self.client_address[0])
                return
            except OSError:
                return
            if not data:
                return
            try:
                messages = list(decoder.feed(data))
            except MllpError as exc:
                log.warning("MLLP framing error from %s: %s", self.client_address[0], exc)
                return
            for raw in messages:
                text = raw.decode("utf-8", errors="replace")
                try:
                    reply = route(self.server.services, text)
                except Exception:   # the feed must get an answer, not a closed socket
                    log.exception("MLLP message failed")
                    reply = ack(FeedOutcome("AE", "internal error; see the server log"), text)
                sock.sendall(frame(reply.encode("utf-8")))


class MllpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], services: Services, *, idle_timeout: float = IDLE_TIMEOUT,
                 max_message: int = MAX_MESSAGE) -> None:
        self.services = services
        self.idle_timeout = idle_timeout
        self.max_message = max_message
        super().__init__(address, _Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> MllpServer:
        self._thread = threading.Thread(target=self.serve_forever, name="mllp", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def start_mllp_server(services: Services) -> MllpServer:
    settings = services.settings
    return MllpServer((settings.mllp_bind_host, settings.mllp_port), services).start()
