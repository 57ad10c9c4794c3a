"""Which handler takes an inbound HL7 v2 message, by its MSH-9 message type.

One MLLP listener serves every feed; each feed is a module with
`handle_message(services, text) -> FeedOutcome` and `ack(outcome, text) -> str`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..access.actor import PATIENT_FEED_ACTOR
from ..services import Services
from . import documents, pif

log = logging.getLogger("partage.hl7")

Handler = Callable[[Services, str], pif.FeedOutcome]
Acker = Callable[[pif.FeedOutcome, str], str]

# message type (MSH-9.1) -> (handler, acknowledgement writer)
ROUTES: dict[str, tuple[Handler, Acker]] = {
    "ADT": (pif.handle_message, pif.ack),
    "MDM": (documents.handle_message, documents.ack),   # CDA documents (ANS CISIS_CDA_HL7_V2)
    "ORU": (documents.handle_message, documents.ack),
}


MAX_SEGMENTS = 1000   # ADT, MDM, ORU messages have tens; each segment costs the handlers objects
# Fields, components and repetitions: beyond a base, one separator per 16 characters (a real
# message is a few hundred separators, plus a base64 CDA that has none).
SEPARATORS_BASE, CHARS_PER_SEPARATOR = 20000, 16


def message_type(text: str) -> str:
    first = text.split("\r", 1)[0]
    if not first.startswith("MSH") or len(first) < 4:
        return ""
    fields = first.split(first[3])
    return fields[8].split("^")[0] if len(fields) > 8 else ""


def _control_id(text: str) -> str:
    first = text.split("\r", 1)[0]
    fields = first.split(first[3]) if first.startswith("MSH") and len(first) > 3 else []
    return fields[9] if len(fields) > 9 else ""


def route(services: Services, text: str) -> str:
    """Handle one message and return the acknowledgement to send back (and audit it once)."""
    from ..access import audit

    handler, acker = ROUTES.get(message_type(text), (pif.handle_message, pif.ack))
    kind = message_type(text)
    segments = text.count("\r") + text.count("\n")   # counted on the text, before any parsing
    if segments > MAX_SEGMENTS:
        return pif.ack(pif.FeedOutcome("AR", f"{segments} segments: a message may have at most {MAX_SEGMENTS}",
                                       _control_id(text)), text)
    separators = sum(text.count(c) for c in "|^~&")
    if separators > SEPARATORS_BASE + len(text) // CHARS_PER_SEPARATOR:
        return pif.ack(pif.FeedOutcome("AR", f"{separators} fields, components and repetitions in {len(text)} "
                                             "characters: too many to read", _control_id(text)), text)
    token = audit.begin("ITI-8" if kind == "ADT" else f"HL7 {kind or '?'}", request=text.split("\r", 1)[0][:300])
    try:
        audit.note_actor(PATIENT_FEED_ACTOR if kind == "ADT" else getattr(documents, "DOCUMENT_FEED_ACTOR", PATIENT_FEED_ACTOR))
        opened = audit.current()
        if opened is not None:
            audit.open_record(services, opened)   # fail closed: no write without its audit record
        answer = acker(handler(services, text), text)
        ctx = audit.current()
        if ctx is not None:
            if kind == "ADT" and not ctx.patients:
                audit.note_patient(audit.first_pid3(text))
            accepted = "MSA|AA" in answer or "MSA|CA" in answer
            if not accepted:
                ctx.remarks.append(answer.split("MSA|", 1)[-1].split("\r", 1)[0][:200])
            try:
                audit.finish(services, ctx, 200 if accepted else 400)
            except audit.AuditUnavailable:   # the ACK stands: its pending record was written first
                log.error("could not complete the audit record of an HL7 message")
        return answer
    finally:
        audit.end(token)
