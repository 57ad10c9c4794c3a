"""Which feed takes an inbound HL7 v2 message, by its MSH-9 message type, and the
acknowledgement that goes back.

One MLLP listener serves every feed. The message's size is judged first, on its text, before
anything reads it (segments and separators counted: a message past the limits is refused AR
with only its MSH read); then it is read once (`partage.metadata.er7`); its route names the
feed's handler (`handle_message(services, message) -> FeedOutcome`), the ACK flavour of its
profile, and the actor and action of its audit record (one per message, written ahead of any
write: fail closed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..access import audit
from ..access.actor import PATIENT_FEED_ACTOR, Actor
from ..metadata.er7 import Er7Error, Er7Message, MessageHeader, first_segment, read_header
from ..services import Services
from . import document_feed, patient_feed
from .acks import DOCUMENT_FEED, PATIENT_FEED, AckFlavour, acknowledgement
from .document_submission import DOCUMENT_FEED_ACTOR
from .outcome import (
    ACCEPTED,
    APPLICATION_ERROR,
    DATA_TYPE_ERROR,
    ERROR,
    REJECTED,
    SEGMENT_SEQUENCE,
    FeedOutcome,
    Problem,
)
from .retransmissions import Memory, Retransmission

# A feed's handler: the message -> its outcome; it keeps an accepted message's answer with
# `Memory.keep` in the transaction of the message's effect (docs/hl7-feed.md, "Retransmissions").
Handler = Callable[[Services, Er7Message, Memory | None], FeedOutcome]

MAX_SEGMENTS = 1000   # ADT, MDM, ORU messages have tens; each segment costs the reader a tuple of fields
# Fields, components and repetitions: beyond a base, one separator per 16 characters (a real
# message is a few hundred separators, plus a base64 CDA that has none).
SEPARATORS_BASE, CHARS_PER_SEPARATOR = 20000, 16
BATCH_SEGMENTS = frozenset({"MSH", "FHS", "BHS", "BTS", "FTS"})   # what starts or ends another message
AUDITED_PID3 = 8   # PID-3 repetitions looked up for the audit record (a real PID-3 has one to three)


@dataclass(frozen=True)
class Route:
    handler: Handler
    flavour: AckFlavour
    actor: Actor
    action: str = ""            # the audit action ("" -> "HL7 <message type>")
    notes_pid3: bool = False    # the audit record names the PID-3 patient when the feed did not


PATIENT_ROUTE = Route(patient_feed.handle_message, PATIENT_FEED, PATIENT_FEED_ACTOR, "ITI-8", notes_pid3=True)
DOCUMENT_ROUTE = Route(document_feed.handle_message, DOCUMENT_FEED, DOCUMENT_FEED_ACTOR,   # ANS CISIS_CDA_HL7_V2
                       notes_pid3=True)
ROUTES: dict[str, Route] = {"ADT": PATIENT_ROUTE, "MDM": DOCUMENT_ROUTE, "ORU": DOCUMENT_ROUTE}
# Any other message type (and text that is no message) goes to the patient feed, which refuses it.
UNROUTED = Route(patient_feed.handle_message, PATIENT_FEED, PATIENT_FEED_ACTOR)


def route_of(header: MessageHeader | None) -> Route:
    if header is None:
        return UNROUTED
    return ROUTES.get(header.message_type.message_code, UNROUTED)


def route(services: Services, text: str, *, not_in_charset: str = "") -> str:
    """Handle one message and return the acknowledgement to send back (and audit it once).
    `not_in_charset`: why the bytes received are not in the charset MSH-18 declares (the
    listener's `er7.decode`): the message is refused AE unread, never stored with its
    characters replaced."""
    too_big = over_limits(text)
    if too_big is not None:   # refused before the reader builds anything
        return ack(too_big, text)
    message, unreadable = _read(text)
    header = message.header if message else None
    chosen = route_of(header)
    kind = header.message_type.message_code if header else ""
    token = audit.begin(chosen.action or f"HL7 {kind or '?'}", request=first_segment(text, 300))
    try:
        audit.note_actor(chosen.actor)
        opened = audit.current()
        if opened is not None:
            audit.open_record(services, opened)   # fail closed: no write without its audit record
        if not_in_charset and message:
            outcome = FeedOutcome(ERROR, not_in_charset, message.header.control_id, [Problem(
                DATA_TYPE_ERROR, "hl7-charset", not_in_charset, "MSH^1^18")])
        elif message is None:
            outcome = _not_a_message(unreadable)
        elif (extra := _second_message(message)) is not None:
            outcome = FeedOutcome(ERROR, extra.message, message.header.control_id, [extra])
        else:
            outcome = _handled(services, chosen, message)
        answer = acknowledgement(outcome, header, chosen.flavour)
        _audit(services, chosen, message, outcome)
        return answer
    finally:
        audit.end(token)


def _handled(services: Services, chosen: Route, message: Er7Message) -> FeedOutcome:
    """The outcome of a message read: the answer kept for it when its sender sent it before
    (a retransmission, audited as such; or another message reusing its MSH-10, refused), else
    what its feed decides, whose answer the feed keeps when it accepted the message."""
    memory = Memory.of(services, message) if chosen is not UNROUTED else None
    earlier = memory.recall() if memory is not None else None
    if earlier is not None:
        return _again(earlier)
    try:
        outcome = chosen.handler(services, message, memory)
    except Retransmission as again:   # a copy of the message committed first: this one changed nothing
        assert memory is not None
        return _again(memory.answer(again.answer))
    if memory is None:
        return outcome
    if outcome.accepted:
        return memory.keep_alone(outcome)
    later = memory.recall()   # a copy processed meanwhile (this one then found nothing to change)
    return _again(later) if later is not None and later.code == ACCEPTED else outcome


def _again(answer: FeedOutcome) -> FeedOutcome:
    """A message its sender sent before: nothing processed; the audit record says so."""
    ctx = audit.current()
    if ctx is not None:
        what = "retransmission: answered as the original" if answer.accepted else "control id reused"
        ctx.remarks.append(f"{what}, {answer.code}|{answer.control_id}; nothing processed"[:200])
    return answer


def over_limits(text: str) -> FeedOutcome | None:
    """The refusal of a message too big to read (segments, then fields, components and
    repetitions, counted on its text before any parsing); None when it is within the limits."""
    segments = text.count("\r") + text.count("\n") - text.count("\r\n")   # CR, LF or CRLF ends one
    if segments > MAX_SEGMENTS:
        return _refusal("hl7-too-many-segments", f"{segments} segments: a message may have at most {MAX_SEGMENTS}")
    separators = sum(text.count(c) for c in _separators(text))
    if separators > SEPARATORS_BASE + len(text) // CHARS_PER_SEPARATOR:
        return _refusal("hl7-too-many-elements", f"{separators} fields, components and repetitions in "
                                                 f"{len(text)} characters: too many to read")
    return None


def _separators(text: str) -> set[str]:
    """The standard field, component, repetition and subcomponent separators, and those the
    text's MSH-1 / MSH-2 declare (read from its first 8 characters: nothing is split)."""
    declared = text[3:6] + text[7:8] if text.startswith("MSH") else ""
    return set("|^~&") | {c for c in declared if c not in "\r\n"}


def ack(outcome: FeedOutcome, text: str) -> str:
    """The acknowledgement of `outcome` to `text` in the flavour of its route, with only its MSH
    read (the answer to a message refused before it is read, or whose handling failed)."""
    header = read_header(text)
    if header is not None and not outcome.control_id:
        outcome.control_id = header.control_id
    return acknowledgement(outcome, header, route_of(header).flavour)


def failed(text: str, reason: str) -> str:
    """The acknowledgement of a message whose handling failed (a dependency down, a bug): the
    code its route's flavour gives a failure a retransmission may clear (the document feed's
    AR, the IG's "circumstantial, may be resent": an AE tells its sender not to send it again
    as it is, and the document would be lost), MSA-3 `reason`."""
    return ack(FeedOutcome(route_of(read_header(text)).flavour.failure_code, reason), text)


def _refusal(rule: str, text: str) -> FeedOutcome:
    return FeedOutcome(REJECTED, text, "", [Problem(APPLICATION_ERROR, rule, text)])


def _read(text: str) -> tuple[Er7Message | None, str]:
    """The message, or None and why the text is none."""
    try:
        return Er7Message.parse(text), ""
    except Er7Error as exc:
        return None, str(exc)


def _second_message(message: Er7Message) -> Problem | None:
    """Why the text holds more than the one message an MLLP frame carries (HL7 v2.5 Appendix C:
    one message per block), or None: a second MSH, or a batch's header or trailer (2.10.3, not
    taken here). Nothing of such a frame is processed: the ACK of its first message alone would
    say AA for messages never applied."""
    extra = next((s for s in message.segments[1:] if s.name in BATCH_SEGMENTS), None)
    if extra is None:
        return None
    text = (f"segment {extra.position + 1} is {extra.name}: one MLLP frame carries one message (batches and "
            "several messages in one frame are not taken; send each message in its own frame)")
    occurrence = sum(1 for s in message.segments[:extra.position + 1] if s.name == extra.name)
    return Problem(SEGMENT_SEQUENCE, "hl7-one-message", text, f"{extra.name}^{occurrence}")


def _not_a_message(reason: str) -> FeedOutcome:
    text = f"message cannot be parsed: {reason}"
    return FeedOutcome(REJECTED, text, "", [Problem(SEGMENT_SEQUENCE, "hl7-not-parsable", text, "MSH")])


def _audit(services: Services, chosen: Route, message: Er7Message | None, outcome: FeedOutcome) -> None:
    ctx = audit.current()
    if ctx is None:
        return
    if chosen.notes_pid3 and not ctx.patients and message is not None:
        # PID-3's identifiers (an IPP may come before the INS): the row goes to the patient they name
        pid = message.first("PID")
        for identifier in (pid.repetitions(3) if pid is not None else [])[:AUDITED_PID3]:
            audit.note_patient(identifier)
    if not outcome.accepted:
        ctx.remarks.append(f"{outcome.code}|{outcome.control_id}|{outcome.text}"[:200])
    # Fail closed (docs/robustness.md): no ACK goes out without its record. AuditUnavailable
    # reaches the listener, which answers AE "send again later"; what the message did is kept
    # with its answer (`retransmissions`), so the message sent again is answered as processed,
    # and audited, instead of processed twice.
    audit.finish(services, ctx, 200 if outcome.accepted else 400)
