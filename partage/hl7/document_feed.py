"""The hospital document feed: CDA R2 documents in HL7 v2 MDM / ORU messages (ANS IG
"transmission de documents CDA-R2 en HL7v2", CISIS_CDA_HL7_V2), one message at a time.

read (`document_message`) -> process (`document_submission`) -> the outcome, whose IG
acknowledgement the router writes (`acks`, flavour DOCUMENT_FEED): AA when done; AE when the
message or its document is wrong; AR when refused for a circumstance a retransmission may
clear (unknown patient: IG code 902; an internal error). A message not accepted is kept in the
journal for `partage hl7 replay`; the ZAM^Z01 business acknowledgement goes out when asked.
"""

from __future__ import annotations

import logging

from ..metadata.er7 import Er7Message
from ..metadata.errors import XdsErrors
from ..services import Services
from .business_acks import send_business_ack
from .document_message import FeedMessage, read_message
from .document_submission import document_erls, problems_of, process
from .journal import Journal
from .outcome import ACCEPTED, APPLICATION_ERROR, OTHER, REJECTED, DocumentOutcome, Problem, Refused
from .retransmissions import Memory, Retransmission

log = logging.getLogger("partage.hl7.documents")


def handle_message(services: Services, message: Er7Message, memory: Memory | None = None) -> DocumentOutcome:
    """The message processed; an accepted one's answer kept by `memory` in the transaction of its
    effect (`Retransmission` when a copy of it was processed first)."""
    outcome, read = _outcome(services, message, memory)
    log.info("HL7 document feed %s: %s %s", outcome.control_id, outcome.code, outcome.text)
    if read is not None and read.flags.get("ACK_RECEPTION"):
        send_business_ack(services, outcome, message.header)
    try:
        journal = Journal.of(services)
        if outcome.code == ACCEPTED:
            journal.forget(message.text)
        elif journal.keep(message.text, outcome) is None:
            log.warning("HL7 document feed %s not kept for replay: the journal of messages not processed is "
                        "full (PARTAGE_HL7_JOURNAL_MAX_MESSAGES / _MAX_BYTES)", outcome.control_id)
            outcome.text += " (not kept for replay: the journal of messages not processed is full)"
    except OSError:
        log.exception("HL7 document feed: the journal of refused messages cannot be written")
    return outcome


def _outcome(services: Services, message: Er7Message, memory: Memory | None
             ) -> tuple[DocumentOutcome, FeedMessage | None]:
    """The outcome of the message, and its typed form when it could be read."""
    control_id = message.header.control_id
    read: FeedMessage | None = None
    try:
        read = read_message(message)
        return process(services, read, memory), read
    except Retransmission:   # the router answers it as the copy processed first
        raise
    except Refused as exc:
        text = exc.problems[0].message if exc.problems else ""
        return DocumentOutcome(exc.code, text, control_id, problems=exc.problems), read
    except XdsErrors as exc:
        code, problems = problems_of(exc.errors, document_erls(read.documents) if read is not None else None)
        rules = ", ".join(dict.fromkeys(p.rule for p in problems))
        return DocumentOutcome(code, f"{len(problems)} error(s): {rules}", control_id, problems=problems), read
    except Exception:   # storage down, a bug: the sender may retransmit, and the message is kept
        log.exception("HL7 document feed: message %s failed", control_id)
        return DocumentOutcome(REJECTED, "internal error; the message is kept for replay (see the server log)",
                               control_id, problems=[Problem(APPLICATION_ERROR, OTHER, "internal error")]), read
