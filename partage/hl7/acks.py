"""HL7 v2 acknowledgements: the one writer of ACK (MSH, MSA, ERR) and of the document feed's
business acknowledgement ZAM^Z01, and what a sender reads of an ACK it gets back (`ack_status`).

An acknowledgement answers a `FeedOutcome` (AA / AE / AR and its problems) to the message it
was about: MSH mirrors the message's sender and receiver (MSH-3/4 <- its MSH-5/6, MSH-5/6 <- its
MSH-3/4, as received), MSA-2 echoes its MSH-10. Two profiles write it differently, each an
`AckFlavour`:

- `PATIENT_FEED` (IHE ITI-8, HL7 v2.3.1): ``ACK^<trigger>`` (``ACK^<trigger>^ACK`` from v2.5), MSH-11 ``P``, one ERR whose ERR-1
  (ELD, the v2.3.1 layout) carries the error code and text;
- `DOCUMENT_FEED` (ANS CISIS_CDA_HL7_V2): ``ACK^<trigger>^ACK`` in the message's version,
  MSH-11 and MSH-18 copied, MSH-17 ``FRA``, one ERR per failed rule in the v2.5 layout (ERR-2
  location, ERR-3 table 0357 condition, ERR-4 severity, ERR-5 the rule, ERR-7 diagnostic, ERR-8
  message).

Values are written through the composite types of `partage.metadata.datatypes` and escaped by
`partage.metadata.er7.text_field`: text never breaks a field, a segment or the framing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..metadata.datatypes import CE, EI, MSG, escape_hl7
from ..metadata.er7 import Er7Error, Er7Message, MessageHeader, one_line, text_field
from .outcome import (
    ACCEPTED,
    APPLICATION_ERROR,
    CONDITION_TEXT,
    ERROR,
    OTHER,
    REJECTED,
    FeedOutcome,
    Problem,
)

ENCODING = "^~\\&"
PROFILE_ID = "CISIS_CDA_HL7_V2"
_ERL = re.compile(r"[A-Z0-9]{3}(\^\d+)*")
_ERL_HEAD = re.compile(r"([A-Z0-9]{3})(?:\^(\d+))?(?:\^(\d+))?")   # segment, sequence, field of an ERL
_ACCEPT_CODES = {"AA": "CA", "AE": "CE", "AR": "CR"}   # HL7 table 0008: commit accept / error / reject
_DELIMITERS = "|^~&\\"   # left out of the ACK's own MSH-10, which ends with the message's


@dataclass(frozen=True)
class AckFlavour:
    """How a profile writes its acknowledgement."""

    name: str
    message_structure: bool          # MSH-9 ACK^<trigger>^ACK rather than ACK^<trigger> (before v2.5)
    versions: Mapping[str, str] = field(default_factory=dict)   # MSH-12 when the message has none,
    # by message code ("" for any other)
    mirror_processing_id: bool = False   # MSH-11 copied (else P)
    country_and_charset: bool = False    # MSH-17 FRA, MSH-18 copied (else nothing after MSH-12)
    v25_errors: bool = False             # ERR-2..8 per problem (else ERR-1, the v2.3.1 ELD)
    # MSA-1 of a message the server could not handle now (a dependency down, an internal error):
    # a retransmission may succeed
    failure_code: str = ERROR

    def version(self, received: MessageHeader) -> str:
        code = received.message_type.message_code
        return received.version or self.versions.get(code) or self.versions.get("", "")


PATIENT_FEED = AckFlavour("IHE ITI-8", message_structure=False, versions={"": "2.3.1"})
DOCUMENT_FEED = AckFlavour(PROFILE_ID, message_structure=True, versions={"MDM": "2.6", "": "2.5"},
                           mirror_processing_id=True, country_and_charset=True, v25_errors=True,
                           failure_code=REJECTED)   # the IG's AR: "circumstantial, may be resent"


def acknowledgement(outcome: FeedOutcome, received: MessageHeader | None, flavour: AckFlavour) -> str:
    """The ACK answering `outcome` to the message whose header is `received` (None: the text
    was no message), in the flavour of its profile."""
    header = received or MessageHeader()
    version = flavour.version(header)
    # MSH-9.3 the structure: the IG's ACK^<trigger>^ACK, and any ACK from v2.5 on (HL7 v2.5 2.15.9.9:
    # all three components of MSH-9 are required)
    structure = "ACK" if flavour.message_structure or _from_v25(version) else ""
    message_type = MSG("ACK", header.message_type.trigger_event, structure)
    processing_id = header.processing_id if flavour.mirror_processing_id else ""
    tail = ["FRA", header.charset or "UNICODE UTF-8"] if flavour.country_and_charset else []
    msh = _msh(header, _now(), message_type, processing_id, version, tail, prefix="ACK",
               control_id=outcome.control_id)
    msa = _segment("MSA", msa_code(outcome.code, header), outcome.control_id, text_field(outcome.text))
    errors = _err_v25 if flavour.v25_errors or _from_v25(version) else _err_eld
    return _message([msh, msa, *(errors(p) for p in _problems(outcome))])


def msa_code(code: str, received: MessageHeader) -> str:
    """MSA-1 for an outcome `code` (AA / AE / AR) to a message in its acknowledgement mode (HL7 v2.5
    2.9.2, 2.9.3): original mode (MSH-15 and MSH-16 empty): the application acknowledgement. Enhanced
    mode: the application acknowledgement when MSH-16 asks for one for this outcome (AL; ER when
    refused; SU when accepted), else the accept acknowledgement CA / CE / CR (table 0008), also
    when MSH-15 says NE: the listener answers every frame, so that no sender waits in vain."""
    if not (received.accept_ack_type or received.application_ack_type):
        return code
    wanted = received.application_ack_type
    if wanted == "AL" or (wanted == "ER" and code != ACCEPTED) or (wanted == "SU" and code == ACCEPTED):
        return code
    return _ACCEPT_CODES.get(code, code)


def business_ack(outcome: FeedOutcome, received: MessageHeader | None) -> str:
    """The IG's ZAM^Z01 "accusé de réception DMP": MSH, EVN, OBX ACK_RECEPTION_DMP (Y/N, OBX-4
    the message's MSH-10) and, when refused, the one ERR the structure allows: ERR-3 207,
    ERR-5 the first failed rule, ERR-6 every rule id, ERR-8 the reasons."""
    header = received or MessageHeader()
    now = _now()
    msh = _msh(header, now, MSG("ZAM", "Z01", "ZAM_Z01"), header.processing_id, "2.6",
               ["FRA", "UNICODE UTF-8", "", "", EI("2.1", PROFILE_ID).format()], prefix="ZAM",
               control_id=outcome.control_id)
    accepted = outcome.code == ACCEPTED
    segments = [msh, _segment("EVN", "", now), _segment(
        "OBX", "1", "CWE", CE("ACK_RECEPTION_DMP", "Accusé de réception DMP", "AckMetierZAM").format(),
        outcome.control_id, CE("Y" if accepted else "N", "", "expandedYes-NoIndicator").format(),
        "", "", "", "", "", "F")]
    if not accepted:
        segments.append(_business_err(_problems(outcome)))
    return _message(segments)


def ack_status(ack: str) -> tuple[str, str]:
    """(MSA-1, MSA-3 as ER7 text) of an acknowledgement received; ("", "") when it has no MSA
    (or is no message)."""
    try:
        msa = Er7Message.parse(ack).first("MSA")
    except Er7Error:
        return "", ""
    return (msa.field(1), msa.field(3)) if msa is not None else ("", "")


def _problems(outcome: FeedOutcome) -> list[Problem]:
    """The problems of a refusal (one naming no rule when the feed gave none); none for AA."""
    if outcome.code == ACCEPTED:
        return []
    return outcome.problems or [Problem(APPLICATION_ERROR, OTHER, outcome.text)]


def _msh(received: MessageHeader, now: str, message_type: MSG, processing_id: str, version: str,
         tail: list[str], *, prefix: str, control_id: str) -> str:
    """MSH with sender and receiver mirrored; `tail` is MSH-17 onwards."""
    tail_of_id = "".join(c for c in control_id if c not in _DELIMITERS)[-8:]
    fields = [received.receiving_application or "PARTAGE", received.receiving_facility or "PARTAGE",
              received.sending_application, received.sending_facility, now, "", message_type.format(),
              f"{prefix}{now}{tail_of_id}", processing_id or "P", escape_hl7(version)]
    if tail:
        fields += ["", "", "", "", *tail]
    return "|".join(["MSH", ENCODING, *fields])


def _from_v25(version: str) -> bool:
    """ERR-1 is withdrawn from v2.5 on (ERR-2 location, ERR-3 and ERR-4 required)."""
    parts = version.split(".")
    try:
        return tuple(int(p) for p in parts[:2]) >= (2, 5)
    except ValueError:
        return False


def _err_eld(problem: Problem) -> str:
    """ERR-1 (ELD, HL7 v2.3.1): <segment>^<sequence>^<field>^<code>&<text>, the
    location from the problem's ERL (empty when it names none)."""
    head = _ERL_HEAD.match(problem.location) if _ERL.fullmatch(problem.location or "") else None
    location = [part or "" for part in head.groups()] if head else ["", "", ""]
    return _segment("ERR", "^".join([*location, f"{escape_hl7(problem.condition)}&{text_field(problem.message)}"]))


def _err_v25(problem: Problem) -> str:
    """ERR-2 location (an ERL, else the text goes to ERR-7), ERR-3 condition, ERR-4 E, ERR-5 the
    rule in its table, ERR-8 the message."""
    erl = _ERL.fullmatch(problem.location or "") is not None
    condition = CE(problem.condition, CONDITION_TEXT.get(problem.condition, "Application error"), "HL70357")
    return _segment("ERR", "", problem.location if erl else problem.segment, condition.format(), "E",
                    CE(one_line(problem.rule), "", problem.table).format(), "",
                    "" if erl else text_field(problem.location), text_field(problem.message, 2000))


def _business_err(problems: list[Problem]) -> str:
    first = problems[0]
    rules = "~".join(dict.fromkeys(escape_hl7(one_line(p.rule)) for p in problems))
    reasons = "; ".join(f"{p.rule}: {p.message}" for p in problems)
    return _segment("ERR", "", "", CE("207", "Application error", "messageErrorCondition").format(), "E",
                    CE(one_line(first.rule), one_line(first.message, 200), first.table).format(), rules,
                    "", text_field(reasons, 4000))


def _segment(name: str, *fields: str) -> str:
    """A segment, its trailing empty fields left out."""
    return "|".join([name, *fields]).rstrip("|")


def _message(segments: list[str]) -> str:
    return "\r".join(segments) + "\r"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")
