"""Failures every door answers the same way, whatever its wire format.

A door catches what it knows (XDS errors, FHIR errors, HL7 rejections) and hands the rest
to `classify`, which says which of these it is: a dependency that is down (503 with
Retry-After: the database, the audit store), a client too slow or too big (408, 413), an
input that broke a structural limit while being read (400: RecursionError of deeply nested
JSON, OverflowError of an out-of-range number). Anything else is a bug: 500, logged.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exc as sa_exc

RETRY_AFTER = 5   # seconds a client is asked to wait when a dependency is down


class Unavailable(Exception):
    """A dependency the server cannot work without is down; nothing was done or sent."""


class BodyTimeout(Exception):
    """The client did not send its request body fast enough."""


class TooLarge(Exception):
    """The request, or a structure inside it, exceeds a configured limit."""


class TooComplex(ValueError):
    """An input breaks a structural limit (depth, element or entry count) before it is built."""


@dataclass(frozen=True)
class Classified:
    status: int
    message: str
    retry_after: int | None = None


def classify(exc: BaseException) -> Classified | None:
    """The answer for a failure every door treats alike, or None (a bug: 500)."""
    if isinstance(exc, Unavailable):
        return Classified(503, str(exc) or "service unavailable", RETRY_AFTER)
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError) or (
            isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated):
        return Classified(503, "the database is unavailable; try again later", RETRY_AFTER)
    if isinstance(exc, BodyTimeout):
        return Classified(408, str(exc) or "request body too slow")
    if isinstance(exc, TooLarge):
        return Classified(413, str(exc))
    if isinstance(exc, TooComplex):
        return Classified(400, str(exc))
    if isinstance(exc, RecursionError):
        return Classified(400, "input nested too deeply")
    if isinstance(exc, OverflowError):
        return Classified(400, "a number in the request is out of range")
    return None
