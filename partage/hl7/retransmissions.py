"""Retransmissions: what the feeds answered, by sender and message control id.

HL7 v2.5 chapter 2 (2.10.2, 2.11.1): in original mode a sender that gets no acknowledgement
sends the message again, with the same MSH-10, which the acknowledgement echoes in MSA-2;
duplicate detection by control id is the receiver's protection. A message accepted here has
its answer (MSA-1, MSA-3) kept in the registry (`registry.hl7_answers`) by sender (MSH-3,
MSH-4) and MSH-10, in the transaction of its effect (`Memory.keep`, called by the feeds inside
it): a crash leaves neither an effect without its answer nor the reverse. The router looks the
message up first (`Memory.recall`): a retransmission (same content, MSH-7 left out) gets the
original's answer and changes nothing; another message reusing the id is refused AE
(`hl7-control-id-reused`, ERR-2 MSH^1^10). Refusals are not kept: they changed nothing, and a
refusal for a circumstance (AR) must be processed anew when the message comes back (a replay of
the journal is such a message).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace

from sqlalchemy import Connection

from ..metadata.er7 import Er7Message
from ..registry import hl7_answers
from ..registry.hl7_answers import Answer
from ..services import Services
from .outcome import APPLICATION_ERROR, ERROR, FeedOutcome, Problem

MSH_TIME = 7   # MSH-7, the time of the message: an engine may stamp it anew when it resends


class Retransmission(Exception):
    """Raised inside the transaction of a message's effect when a copy of the same message
    committed its answer first (copies arriving together): the effect is rolled back and the
    copy gets the original's answer."""

    def __init__(self, answer: Answer) -> None:
        super().__init__("a copy of this message was processed first")
        self.answer = answer


@dataclass
class Memory:
    """The answers kept for one received message's sender and control id."""

    services: Services
    key: str
    sender: str
    control_id: str
    digest: str
    kept: bool = False   # by a transaction of the feed (False again when that one rolled back)

    @classmethod
    def of(cls, services: Services, message: Er7Message) -> Memory | None:
        """None when the message has no MSH-10 (nothing to know it again by)."""
        header = message.header
        if not header.control_id:
            return None
        sender = f"{header.sending_application}|{header.sending_facility}"
        key = hashlib.sha256("\r".join([sender, header.control_id]).encode()).hexdigest()
        return cls(services, key, sender, header.control_id, content_digest(message))

    def recall(self) -> FeedOutcome | None:
        """The answer to this message if the same sender sent it before: the original's when the
        content is the same, an AE refusal when it is another message reusing the id."""
        with self.services.registry.read() as conn:
            earlier = hl7_answers.recall(conn, self.key)
        return self.answer(earlier) if earlier is not None else None

    def answer(self, earlier: Answer) -> FeedOutcome:
        if earlier.digest == self.digest:
            return FeedOutcome(earlier.code, earlier.text, self.control_id)
        text = (f"MSH-10 {self.control_id} already names another message of this sender (MSH-3, MSH-4), "
                "processed earlier: a new message needs a new control id; nothing processed")
        return FeedOutcome(ERROR, text, self.control_id, [Problem(APPLICATION_ERROR, "hl7-control-id-reused",
                                                                  text, "MSH^1^10")])

    def keep(self, conn: Connection, outcome: FeedOutcome) -> None:
        """Inside the transaction of the message's effect: keep its answer (an accepted one
        only). `Retransmission` when a copy of the message kept its answer first."""
        if not outcome.accepted:
            return
        settings = self.services.settings
        now = int(time.time())
        answer = Answer(self.digest, outcome.code, outcome.text, now)
        if not hl7_answers.keep(conn, self.key, sender=self.sender, control_id=self.control_id, answer=answer):
            earlier = hl7_answers.recall(conn, self.key)
            raise Retransmission(earlier or answer)
        hl7_answers.prune(conn, now=now, max_age=settings.hl7_answers_max_age,
                          max_messages=settings.hl7_answers_max_messages)
        self.kept = True

    def keep_alone(self, outcome: FeedOutcome) -> FeedOutcome:
        """An accepted message whose feed wrote nothing (a DESTDMP=N message, documents already
        indexed): its answer kept in a transaction of its own. The answer to send: the one kept
        first when a copy got there before."""
        if not outcome.accepted or self.kept:
            return outcome
        try:
            with self.services.registry.write() as conn:
                self.keep(conn, outcome)
        except Retransmission as again:
            return replace(outcome, code=again.answer.code, text=again.answer.text, problems=[])
        return outcome


def content_digest(message: Er7Message) -> str:
    """SHA-256 of the message's segments in the standard encoding, MSH-7 left out: the same
    message whatever its line ends, declared encoding characters or time of sending."""
    digest = hashlib.sha256()
    for segment in message.segments:
        fields = segment.fields
        if segment.name == "MSH" and len(fields) > MSH_TIME:
            fields = (*fields[:MSH_TIME], "", *fields[MSH_TIME + 1:])
        digest.update("|".join(fields).encode())
        digest.update(b"\r")
    return digest.hexdigest()
