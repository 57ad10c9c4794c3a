"""How a notification leaves: the door that made a subscription renders its messages.

The engine (partage.notify) decides what is owed and to whom, and what the subscriber may
see; it does not know ebRIM or FHIR. Each door gives a `Renderer` (partage.xds.dsub for
DSUB, partage.fhir.subscriptions for FHIR), handed to the sender by the composition root
(partage.web.server), so that the engine never imports a door.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import requests

from ..metadata.model import AnyObject
from ..services import Services
from .model import Subscription


@dataclass(frozen=True)
class Event:
    """One notification owed: what the subscriber may see of one registration."""

    delivery_id: str             # what the recipient deduplicates on
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

    def handshake(self, services: Services, subscription: Subscription, delivery_id: str) -> Outgoing: ...


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int = 0       # HTTP status; 0 when none came back
    detail: str = ""
    permanent: bool = False   # retrying cannot help (the recipient refused the message itself)


def post(url: str, message: Outgoing, timeout: float) -> Outcome:
    """POST to a subscriber's endpoint: a 2xx is a delivery; redirects are not followed."""
    headers = {**message.headers, "Content-Type": message.content_type}
    try:
        response = requests.post(url, data=message.body, headers=headers, timeout=timeout,
                                 allow_redirects=False)
    except requests.RequestException as exc:
        return Outcome(False, 0, f"{type(exc).__name__}: {exc}"[:500])
    detail = f"HTTP {response.status_code}"
    response.close()
    if 200 <= response.status_code < 300:
        return Outcome(True, response.status_code, detail)
    # 4xx other than 408/429: the recipient refuses this message; it will refuse it again.
    permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 425, 429)
    return Outcome(False, response.status_code, detail, permanent=permanent)
