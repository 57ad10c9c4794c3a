"""Raw HTTP over sockets for the door probes: slow clients, lying lengths, chunked floods.

`requests` cannot send a body one byte a second or stop half-way; these helpers can.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.memory import is_linux, rss_bytes


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_answer(sock: socket.socket, timeout: float = 30.0) -> Answer | None:
    """The HTTP answer on `sock` (body read to Content-Length, or to close), or None if closed first."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except (ConnectionError, TimeoutError, OSError):
            chunk = b""
        if not chunk:
            return None
        data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(rest) < length:
        try:
            chunk = sock.recv(65536)
        except (ConnectionError, TimeoutError, OSError):
            break
        if not chunk:
            break
        rest += chunk
    return Answer(status, headers, rest if length < 0 else rest[:length])


def send_stream(sock: socket.socket, chunks: Iterable[bytes], *, chunked: bool = False, finish: bool = True) -> int:
    """Send chunks until they end or the peer stops listening; returns the bytes sent.
    `finish=False`: a chunked body is left open (no last chunk), as a sender cut short."""
    sent = 0
    try:
        for chunk in chunks:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            sent += len(chunk)
        if chunked and finish:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    return sent


def closed_by_peer(sock: socket.socket, wait: float = 0.2) -> bool:
    """True when the server closed `sock` (EOF or reset); False if it is still open."""
    sock.settimeout(wait)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def tree_rss(pid: int) -> int:
    return sum(rss_bytes(pid).values()) if is_linux() else 0


class RssWatch:
    """Peak growth of a process tree's resident memory while a probe runs (sampled every 10 ms).

    with RssWatch(server.process.pid) as watch: ...probe...
    watch.growth  # bytes above the resident size before the probe
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = tree_rss(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.1)
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.before
