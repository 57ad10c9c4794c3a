"""What a feed decided about one message: the acknowledgement code and the failed rules.

Every feed returns a `FeedOutcome` (AA, AE or AR, and one `Problem` per failed rule); the
acknowledgement builder (`acks`) writes it as MSA and ERR segments, the journal keeps it with
the message. Nothing here writes or reads HL7 text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACCEPTED, ERROR, REJECTED = "AA", "AE", "AR"
# MSA-1 codes saying the message was taken: AA (application accept), CA (enhanced mode's commit accept)
ACCEPTING = frozenset({ACCEPTED, "CA"})

# HL7 table 0357 (message error condition): the codes the feeds use, with their text.
SEGMENT_SEQUENCE, REQUIRED_FIELD_MISSING, DATA_TYPE_ERROR = "100", "101", "102"
UNSUPPORTED_MESSAGE, UNSUPPORTED_EVENT, UNSUPPORTED_VERSION, APPLICATION_ERROR = "200", "201", "203", "207"
CONDITION_TEXT = {SEGMENT_SEQUENCE: "Segment sequence error", REQUIRED_FIELD_MISSING: "Required field missing",
                  DATA_TYPE_ERROR: "Data type error", UNSUPPORTED_MESSAGE: "Unsupported message type",
                  UNSUPPORTED_EVENT: "Unsupported event code", UNSUPPORTED_VERSION: "Unsupported version",
                  APPLICATION_ERROR: "Application error"}
# The IG CISIS_CDA_HL7_V2's applicationErrorCode table (error-codes.md), ERR-5 of the document feed.
WRONG_VERSION, UNAUTHORISED, UNKNOWN_PATIENT, NO_INS, OTHER = "900", "901", "902", "903", "906"


@dataclass
class Problem:
    """One ERR segment: HL7 error condition (table 0357), the failed rule, its message, where."""

    condition: str
    rule: str
    message: str
    location: str = ""      # an ERL (e.g. OBX^1^5), or an XPath written as the diagnostic
    table: str = "PARTAGE"  # the coding system of `rule`
    segment: str = ""       # the ERL of the segment the XPath `location` is in (the document's OBX)


@dataclass
class FeedOutcome:
    """A feed's answer to one message: MSA-1 `code`, MSA-3 `text`, MSA-2 `control_id` (the
    message's MSH-10 as ER7 text) and the problems behind a refusal."""

    code: str
    text: str = ""
    control_id: str = ""
    problems: list[Problem] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.code in ACCEPTING


@dataclass
class DocumentOutcome(FeedOutcome):
    """The document feed's outcome: also the processing asked for and the documents' uniqueIds."""

    processing: str = ""
    unique_ids: list[str] = field(default_factory=list)


class Refused(Exception):
    """A message refused (`code` AE or AR) for the given problems."""

    def __init__(self, code: str, *problems: Problem) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.code = code
        self.problems = list(problems)


def refused(code: str, condition: str, rule: str, message: str, location: str = "") -> Refused:
    """A refusal for one problem."""
    return Refused(code, Problem(condition, rule, message, location))
