"""How a notification leaves: the door that made a subscription renders its messages.

The engine (partage.notify) decides what is owed and to whom, and what the subscriber may
see; it does not know ebRIM or FHIR. Each door gives a `Renderer` (partage.xds.dsub for
DSUB, partage.fhir.subscriptions for FHIR), handed to the sender by the composition root
(partage.server.background), so that the engine never imports a door. `Transport` POSTs what they
render, to allowed destinations only (partage.notify.destinations, checked at connect time).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection

from ..metadata.model import AnyObject
from ..services import Services
from .destinations import DestinationRefused, Destinations, endpoint_problem
from .model import Subscription


@dataclass(frozen=True)
class Event:
    """One notification owed: what the subscriber may see of one registration."""

    delivery_id: str             # the message's id, what the recipient deduplicates on (outbox.stamp)
    subscription: Subscription
    objects: list[AnyObject]     # visible: the DocumentEntries, or the SubmissionSet with its visible contents
    event_number: int            # FHIR events-since-subscription-start (no gap for what was withheld)
    timestamp: datetime


@dataclass(frozen=True)
class Outgoing:
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


class Renderer(Protocol):
    """A door's messages for the subscriptions it made."""

    action: str     # the audit trail's name of a delivery (ITI-53, ITI-112)

    def event(self, services: Services, event: Event) -> Outgoing: ...


@runtime_checkable
class Handshaking(Renderer, Protocol):
    """A channel whose new subscriptions are confirmed by a first message (DSUBm ITI-112's
    handshake); DSUB has none."""

    def handshake(self, services: Services, subscription: Subscription, delivery_id: str) -> Outgoing: ...


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int = 0       # HTTP status; 0 when none came back
    detail: str = ""
    permanent: bool = False   # retrying cannot help (the recipient refused the message itself)


_opened = threading.local()   # the sockets the current POST opened (Transport.post cuts them at its deadline)


class _Guarded:
    """A urllib3 connection that opens sockets only to allowed destinations (resolved here,
    at connect time: a name re-pointed after the subscription was checked is caught)."""

    destinations: Destinations

    def _new_conn(self) -> socket.socket:
        host, port = self._dns_host, self.port   # type: ignore[attr-defined]
        try:
            addresses = self.destinations.addresses(host, port)
        except DestinationRefused as exc:
            raise NewConnectionError(self, str(exc)) from exc   # type: ignore[arg-type]
        except socket.gaierror as exc:
            raise NameResolutionError(host, self, exc) from exc   # type: ignore[arg-type]
        failure: Exception | None = None
        for address in addresses:
            try:
                sock = connection.create_connection((address, port), self.timeout,   # type: ignore[attr-defined]
                                                    source_address=self.source_address,   # type: ignore[attr-defined]
                                                    socket_options=self.socket_options)   # type: ignore[attr-defined]
                watched = getattr(_opened, "sockets", None)
                if watched is not None:
                    watched.append(sock)
                return sock
            except TimeoutError as exc:
                failure = ConnectTimeoutError(self, f"connection to {host} timed out")
                failure.__cause__ = exc
            except OSError as exc:
                failure = NewConnectionError(self, f"failed to connect to {host}: {exc}")   # type: ignore[arg-type]
                failure.__cause__ = exc
        assert failure is not None
        raise failure


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, destinations: Destinations) -> None:
        self._pools = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": type(
                "GuardedHTTPConnection", (_Guarded, HTTPConnection), {"destinations": destinations})}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": type(
                "GuardedHTTPSConnection", (_Guarded, HTTPSConnection), {"destinations": destinations})}),
        }
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._pools)


def _refused(exc: BaseException) -> DestinationRefused | None:
    """The DestinationRefused somewhere in the chain of a requests exception."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, DestinationRefused):
            return current
        todo += [current.__cause__, current.__context__, getattr(current, "reason", None),
                 *[a for a in current.args if isinstance(a, BaseException)]]
    return None


class Transport:
    """POSTs notifications: allowed destinations only, no redirects followed, no proxy from
    the environment, the recipient's answer body never read."""

    def __init__(self, destinations: Destinations, timeout: float) -> None:
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False   # HTTP(S)_PROXY would move the connection out of the guard
        adapter = _GuardedAdapter(destinations)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def post(self, url: str, message: Outgoing) -> Outcome:
        """A 2xx is a delivery; a 4xx (but 408, 425, 429) or a refused destination is final."""
        problem = endpoint_problem(url)
        if problem:
            return Outcome(False, 0, problem, permanent=True)
        # One connection per POST (nothing reused that this POST's deadline did not open), and a
        # deadline for the whole exchange: the per-read timeout alone lets a recipient that sends
        # its answer one byte at a time hold a sender thread for as long as it likes.
        headers = {**message.headers, "Content-Type": message.content_type, "Connection": "close"}
        sockets: list[socket.socket] = []
        expired = threading.Event()

        def cut() -> None:
            expired.set()
            for sock in list(sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        _opened.sockets = sockets
        deadline = threading.Timer(self.timeout, cut)
        deadline.daemon = True
        deadline.start()
        try:
            response = self.session.post(url, data=message.body, headers=headers, timeout=self.timeout,
                                         allow_redirects=False, stream=True)
            response.close()
        except requests.RequestException as exc:
            refused = _refused(exc)
            if refused is not None:
                return Outcome(False, 0, f"{refused} (PARTAGE_NOTIFY_DESTINATIONS)", permanent=True)
            if expired.is_set():
                return Outcome(False, 0, f"no answer within {self.timeout:g} s")
            return Outcome(False, 0, f"{type(exc).__name__}: {exc}"[:500])
        except ValueError as exc:   # a header http.client cannot write (UnicodeEncodeError...): never sendable
            return Outcome(False, 0, f"the message cannot be sent: {type(exc).__name__}: {exc}"[:500],
                           permanent=True)
        finally:
            deadline.cancel()
            _opened.sockets = None
        if expired.is_set():
            return Outcome(False, 0, f"no answer within {self.timeout:g} s")
        detail = f"HTTP {response.status_code}"
        if 200 <= response.status_code < 300:
            return Outcome(True, response.status_code, detail)
        # 4xx other than 408/425/429: the recipient refuses this message; it will refuse it again.
        permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 425, 429)
        return Outcome(False, response.status_code, detail, permanent=permanent)

    def close(self) -> None:
        self.session.close()
