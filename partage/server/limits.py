"""Request body size, per route, enforced before anything is buffered or parsed.

A WSGI middleware in front of the Flask application: a declared Content-Length beyond the
route's limit is answered 413 at once, in the door's own shape, without reading a byte of
the body (and so before any credential in it is looked at); a chunked body, or one that
lies about its length, is counted while it streams and the read that crosses the limit
raises `BodyTooLarge` (a 413 in the door's shape as well).

| route | setting |
|---|---|
| /xds/repository (MTOM ITI-41 carries documents) | max_request_bytes |
| /xds/registry (metadata only), DSUB's /xds/notification-broker and /xds/subscription/<id> | registry_max_bytes |
| /fhir (an ITI-65 Bundle carries base64 documents) | fhir_max_bytes |
| /validate | validate_max_bytes |
| anything else | other_max_bytes |
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

from werkzeug.exceptions import RequestEntityTooLarge

from ..config import Settings
from .answers import wsgi_error

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class BodyTooLarge(RequestEntityTooLarge):
    """A request body crossed its route's limit while streaming."""


def route_limit(settings: Settings, path: str) -> tuple[int, str]:
    """(bytes, setting name) of the body limit at `path`."""
    if path.startswith("/xds/repository"):
        return settings.max_request_bytes, "PARTAGE_MAX_REQUEST_BYTES"
    if path.startswith("/xds/"):
        return settings.registry_max_bytes, "PARTAGE_REGISTRY_MAX_BYTES"
    if path == "/fhir" or path.startswith("/fhir/"):
        return settings.fhir_max_bytes, "PARTAGE_FHIR_MAX_BYTES"
    if path == "/validate":
        return settings.validate_max_bytes, "PARTAGE_VALIDATE_MAX_BYTES"
    return settings.other_max_bytes, "PARTAGE_OTHER_MAX_BYTES"


class CappedInput:
    """wsgi.input that raises BodyTooLarge once more than `limit` bytes were read."""

    def __init__(self, stream: BinaryIO, limit: int, message: str) -> None:
        self._stream = stream
        self._limit = limit
        self._message = message
        self._read = 0

    def _count(self, data: bytes) -> bytes:
        self._read += len(data)
        if self._read > self._limit:
            raise BodyTooLarge(self._message)
        return data

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            # Read in bounded steps, so that an endless body is stopped at the limit.
            parts: list[bytes] = []
            while True:
                chunk = self._count(self._stream.read(64 * 1024))
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
        return self._count(self._stream.read(min(size, self._limit + 1 - self._read) or 1))

    def readline(self, size: int = -1) -> bytes:
        bound = self._limit + 1 - self._read
        return self._count(self._stream.readline(bound if size is None or size < 0 else min(size, bound)))

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class BodyLimits:
    """WSGI middleware applying `route_limit` to every request."""

    def __init__(self, app: WsgiApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        # The ASGI adapter ends the body itself (chunked bodies have no Content-Length).
        environ["wsgi.input_terminated"] = True
        path = environ.get("PATH_INFO", "")
        limit, setting = route_limit(self.settings, path)
        message = f"the request body exceeds {limit} bytes, the limit of {path} ({setting})"
        declared = environ.get("CONTENT_LENGTH") or ""
        try:
            length = int(declared) if declared.strip() else None
        except ValueError:
            length = -1
        if length is not None and (length < 0 or length > limit):
            status, text = (413, message) if length > limit else (400, "malformed Content-Length")
            return wsgi_error(start_response, path, status, text, close=True)
        environ["wsgi.input"] = CappedInput(environ["wsgi.input"], limit, message)
        return self.app(environ, start_response)
