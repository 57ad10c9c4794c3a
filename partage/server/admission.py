"""The ASGI front of each worker: who gets into the application, and for how long.

Connections are held by the asyncio server (Hypercorn) at the cost of a coroutine, so idle
and slow clients are cheap; the server itself closes a connection whose request headers
have not all arrived within `header_timeout` (bytes do not extend it). What this layer adds:

- a bounded number of requests inside the application: one thread each, `threads` in all,
  of which requests that carry a body may take all but a reserve (so that slow uploads never
  starve /healthz or a query); requests beyond wait, cheaply, at most `queue_timeout` seconds
  and `max_queued` at once, then get a 503 with Retry-After;
- a deadline on the request body: `body_timeout` seconds of grace, after which the body must
  have arrived at an average of `body_min_rate` bytes per second; a client that falls behind
  makes the application's read fail with `BodyTimeout` (the door answers 408);
- a deadline on each chunk of the answer (`send_timeout`): a client that stops reading is
  dropped and its thread freed.

Body *size* limits are per route and need the doors' answers: `partage.server.limits`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from ..failures import BodyTimeout

log = logging.getLogger("partage.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (path, status, message, retry_after) -> (content type, body): the door's own error answer
ErrorAnswer = Callable[[str, int, str, int | None], tuple[str, bytes]]


@dataclass(frozen=True)
class AdmissionLimits:
    threads: int = 8
    body_timeout: float = 30.0
    body_min_rate: int = 16 * 1024
    send_timeout: float = 60.0
    queue_timeout: float = 30.0
    max_queued: int = 256

    @property
    def body_threads(self) -> int:
        """Threads that requests with a body may hold at once: all but a quarter."""
        return max(1, self.threads - max(1, self.threads // 4))


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


MAX_HEADER_BYTES = 32 * 1024   # request line + headers (a JWT is a few KB)


def _header_bytes(scope: Scope) -> int:
    """The request line and headers as they came (near enough: separators counted)."""
    line = len(scope.get("method", "")) + len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 12
    return line + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))


DRAIN_LIMIT = 600.0   # s an unwanted body is discarded before its connection is left to the server


class _BodyState:
    """Whether the request body has ended (its last message, or a disconnect, was received)."""

    ended = False
    draining = False


class Admission:
    """ASGI middleware: admission control and body/answer deadlines around a WSGI adapter."""

    def __init__(self, app: AsgiApp, limits: AdmissionLimits, answer: ErrorAnswer) -> None:
        self.app = app
        self.limits = limits
        self.answer = answer
        self.waiting = 0
        self._slots: asyncio.Semaphore | None = None
        self._draining: set[asyncio.Task[None]] = set()
        self._body_slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._slots is None or self._body_slots is None:
            self._slots = asyncio.Semaphore(self.limits.threads)
            self._body_slots = asyncio.Semaphore(self.limits.body_threads)
        slots, body_slots = self._slots, self._body_slots
        if _header_bytes(scope) > MAX_HEADER_BYTES:
            # The server refuses them only while they are incomplete: headers arriving in one
            # read (up to 64 KB) reach here whole. The same limit, whatever the packets.
            await self._refuse(scope, send, f"request headers larger than {MAX_HEADER_BYTES // 1024} KB", 431)
            return
        has_body = _has_body(scope)
        if self.waiting >= self.limits.max_queued:
            await self._refuse(scope, send, "too many requests are waiting")
            return
        held: list[asyncio.Semaphore] = []
        self.waiting += 1
        try:
            async with asyncio.timeout(self.limits.queue_timeout):
                if has_body:
                    await body_slots.acquire()
                    held.append(body_slots)
                await slots.acquire()
                held.append(slots)
        except TimeoutError:
            for sem in held:
                sem.release()
            await self._refuse(scope, send, f"no capacity within {self.limits.queue_timeout:g} s")
            return
        finally:
            self.waiting -= 1
        body = _BodyState()

        def answered() -> None:
            """The answer is complete: a body the application left unread is discarded.

            (A 413 or a refused credential answers before the body is read. The server hands the
            body over through a small queue, and would wait on it forever, holding the answer's
            end and the connection; the rest is read and dropped here, off the application's
            threads, until it ends or the connection closes.)
            """
            if has_body and not body.ended and not body.draining:
                body.draining = True
                drain = asyncio.create_task(self._drain(receive))
                self._draining.add(drain)
                drain.add_done_callback(self._draining.discard)

        try:
            await self.app(scope, self._deadline_receive(receive, body), self._deadline_send(send, answered))
        finally:
            answered()
            for sem in held:
                sem.release()

    async def _drain(self, receive: Receive) -> None:
        try:
            async with asyncio.timeout(DRAIN_LIMIT):
                while True:
                    message = await receive()
                    if message.get("type") != "http.request" or not message.get("more_body"):
                        return
        except TimeoutError:
            log.warning("a client kept sending an unwanted body for %s s", DRAIN_LIMIT)

    def _deadline_receive(self, receive: Receive, body: _BodyState) -> Receive:
        start = time.monotonic()
        received = 0
        limits = self.limits

        async def deadline_receive() -> Message:
            nonlocal received
            allowed = limits.body_timeout + received / limits.body_min_rate
            remaining = start + allowed - time.monotonic()
            if remaining <= 0:
                raise BodyTimeout(f"request body too slow: {received} bytes in {allowed:.0f} s")
            try:
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                raise BodyTimeout(f"request body too slow: {received} bytes in {allowed:.0f} s") from None
            received += len(message.get("body", b""))
            if message.get("type") != "http.request" or not message.get("more_body"):
                body.ended = True
            return message

        return deadline_receive

    def _deadline_send(self, send: Send, answered: Callable[[], None]) -> Send:
        dropped = False
        timeout = self.limits.send_timeout

        async def deadline_send(message: Message) -> None:
            nonlocal dropped
            if message.get("type") == "http.response.body" and not message.get("more_body"):
                answered()
            if dropped:
                return   # the client stopped reading: the rest of the answer goes nowhere
            try:
                await asyncio.wait_for(send(message), timeout)
            except TimeoutError:
                dropped = True
                log.warning("client stopped reading the answer for %s s; dropped (%s, %s)", timeout, message.get("type"), len(message.get("body", b"")))

        return deadline_send

    async def _refuse(self, scope: Scope, send: Send, reason: str, status: int = 503) -> None:
        """503 (busy, with Retry-After) or 431 (headers too large: the connection is closed, a
        body it announced is not read)."""
        retry = max(1, int(self.limits.queue_timeout // 6)) if status == 503 else None
        content_type, body = self.answer(scope.get("path", ""), status,
                                         f"server busy: {reason}" if status == 503 else reason, retry)
        log.warning("%s for %s %s: %s", status, scope.get("method"), scope.get("path"), reason)
        headers = [(b"content-type", content_type.encode("latin-1")), (b"content-length", str(len(body)).encode())]
        headers.append((b"retry-after", str(retry).encode()) if retry else (b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
