"""Which handler takes an inbound HL7 v2 message, by its MSH-9 message type.

One MLLP listener serves every feed; each feed is a module with
`handle_message(services, text) -> FeedOutcome` and `ack(outcome, text) -> str`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..services import Services
from . import pif

Handler = Callable[[Services, str], pif.FeedOutcome]
Acker = Callable[[pif.FeedOutcome, str], str]

# message type (MSH-9.1) -> (handler, acknowledgement writer)
ROUTES: dict[str, tuple[Handler, Acker]] = {
    "ADT": (pif.handle_message, pif.ack),
}


def message_type(text: str) -> str:
    first = text.split("\r", 1)[0]
    if not first.startswith("MSH") or len(first) < 4:
        return ""
    fields = first.split(first[3])
    return fields[8].split("^")[0] if len(fields) > 8 else ""


def route(services: Services, text: str) -> str:
    """Handle one message and return the acknowledgement to send back."""
    handler, acker = ROUTES.get(message_type(text), (pif.handle_message, pif.ack))
    return acker(handler(services, text), text)
