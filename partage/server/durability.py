"""Nothing is answered before what the request wrote is on disk.

The registry makes each write durable before it returns (`Registry.write`); inside a request
its writes are synced together once, at the end (`Registry.one_sync`). This middleware opens
that scope around the application and holds the status line back until the sync is done, so
a client reads "Success" only about data that survives a power loss. If that sync fails (the
database went away meanwhile), the answer prepared is dropped for the door's 503.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from ..failures import classify
from ..registry.store import Registry
from .answers import wsgi_error

log = logging.getLogger("partage.server")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None] | None


class DurableAnswers:
    """WSGI middleware: the request's writes synced once, before its answer starts."""

    def __init__(self, app: WsgiApp, registry: Registry) -> None:
        self.app = app
        self.registry = registry

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        held: list[tuple[str, list[tuple[str, str]], ExcInfo]] = []

        def hold(status: str, headers: list[tuple[str, str]], exc_info: ExcInfo = None) -> Callable[[bytes], None]:
            held[:] = [(status, headers, exc_info)]
            return _no_write

        body: Iterable[bytes] | None = None
        try:
            with self.registry.one_sync():
                body = self.app(environ, hold)
        except Exception as exc:   # the closing sync failed: what the request wrote may not be on disk
            known = classify(exc)
            if known is None:
                raise
            close = getattr(body, "close", None)
            if close is not None:
                close()   # the prepared answer is dropped (WSGI: an iterable is always closed)
            log.error("%s %s: the final sync failed: %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), exc)
            return wsgi_error(start_response, environ.get("PATH_INFO", ""), known.status, known.message,
                              retry_after=known.retry_after)
        status, headers, exc_info = held[0]
        start_response(status, headers, exc_info)
        return body


def _no_write(_data: bytes) -> None:
    raise RuntimeError("the WSGI write() callable is not supported: return the body instead")
