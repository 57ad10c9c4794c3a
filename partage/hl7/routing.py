"""Which feed takes an inbound HL7 v2 message, by its MSH-9 message type, and the
acknowledgement that goes back.

One MLLP listener serves every feed. The message is read once (`partage.metadata.er7`); its
route names the feed's handler (`handle_message(services, message) -> FeedOutcome`), the ACK
flavour of its profile, and the actor and action of its audit record (one per message).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..access import audit
from ..access.actor import PATIENT_FEED_ACTOR, Actor
from ..metadata.er7 import Er7Error, Er7Message
from ..services import Services
from . import document_feed, patient_feed
from .acks import DOCUMENT_FEED, PATIENT_FEED, AckFlavour, acknowledgement
from .document_submission import DOCUMENT_FEED_ACTOR
from .outcome import REJECTED, SEGMENT_SEQUENCE, FeedOutcome, Problem

log = logging.getLogger("partage.hl7")

Handler = Callable[[Services, Er7Message], FeedOutcome]


@dataclass(frozen=True)
class Route:
    handler: Handler
    flavour: AckFlavour
    actor: Actor
    action: str = ""            # the audit action ("" -> "HL7 <message type>")
    notes_pid3: bool = False    # the audit record names the PID-3 patient when the feed did not


PATIENT_ROUTE = Route(patient_feed.handle_message, PATIENT_FEED, PATIENT_FEED_ACTOR, "ITI-8", notes_pid3=True)
DOCUMENT_ROUTE = Route(document_feed.handle_message, DOCUMENT_FEED, DOCUMENT_FEED_ACTOR)   # ANS CISIS_CDA_HL7_V2
ROUTES: dict[str, Route] = {"ADT": PATIENT_ROUTE, "MDM": DOCUMENT_ROUTE, "ORU": DOCUMENT_ROUTE}
# Any other message type (and text that is no message) goes to the patient feed, which refuses it.
UNROUTED = Route(patient_feed.handle_message, PATIENT_FEED, PATIENT_FEED_ACTOR)


def route_of(message: Er7Message | None) -> Route:
    if message is None:
        return UNROUTED
    return ROUTES.get(message.header.message_type.message_code, UNROUTED)


def route(services: Services, text: str) -> str:
    """Handle one message and return the acknowledgement to send back (and audit it once)."""
    message, unreadable = _read(text)
    chosen = route_of(message)
    kind = message.header.message_type.message_code if message else ""
    token = audit.begin(chosen.action or f"HL7 {kind or '?'}", request=text.split("\r", 1)[0][:300])
    try:
        audit.note_actor(chosen.actor)
        outcome = chosen.handler(services, message) if message else _not_a_message(unreadable)
        answer = acknowledgement(outcome, message.header if message else None, chosen.flavour)
        _audit(services, chosen, text, outcome)
        return answer
    finally:
        audit.end(token)


def ack(outcome: FeedOutcome, text: str) -> str:
    """The acknowledgement of `outcome` to `text` in the flavour of its route (the listener's
    answer when handling failed)."""
    message, _unreadable = _read(text)
    return acknowledgement(outcome, message.header if message else None, route_of(message).flavour)


def _read(text: str) -> tuple[Er7Message | None, str]:
    """The message, or None and why the text is none."""
    try:
        return Er7Message.parse(text), ""
    except Er7Error as exc:
        return None, str(exc)


def _not_a_message(reason: str) -> FeedOutcome:
    text = f"message cannot be parsed: {reason}"
    return FeedOutcome(REJECTED, text, "", [Problem(SEGMENT_SEQUENCE, "hl7-not-parsable", text, "MSH")])


def _audit(services: Services, chosen: Route, text: str, outcome: FeedOutcome) -> None:
    ctx = audit.current()
    if ctx is None:
        return
    if chosen.notes_pid3 and not ctx.patients:
        audit.note_patient(audit.first_pid3(text))
    if not outcome.accepted:
        ctx.remarks.append(f"{outcome.code}|{outcome.control_id}|{outcome.text}"[:200])
    try:
        audit.finish(services, ctx, 200 if outcome.accepted else 400)
    except Exception:   # the ACK stands; the failure to audit is logged
        log.exception("could not write the audit record of an HL7 message")
