"""The one ER7 reader and the document feed's typed reading under hostile input: text that is
no message is refused with Er7Error, a broken MDM / ORU with Refused (AE / AR and a rule), and
nothing else ever escapes; the acknowledgement of any of them reads back as one ACK."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from partage.hl7.acks import DOCUMENT_FEED, acknowledgement
from partage.hl7.document_message import read_message
from partage.hl7.mllp import frame
from partage.hl7.outcome import FeedOutcome, Refused
from partage.metadata.er7 import Er7Error, Er7Message
from tests.fuzz.conftest import FUZZ
from tests.fuzz.mutations import mutated
from tests.unit.test_hl7_documents import mdm

MDM = mdm().encode("utf-8")
ORU = mdm().replace("MDM^T02^MDM_T02", "ORU^R01^ORU_R01").replace("|2.6|", "|2.5|").encode("utf-8")


@FUZZ
@given(text=st.text(max_size=400))
def test_any_text_is_a_message_or_refused_as_none(text):
    try:
        message = Er7Message.parse(text)
    except Er7Error:
        return
    assert message.segments[0].name == "MSH" and message.text == text


@FUZZ
@given(seed=st.sampled_from([MDM, ORU]), data=st.data())
def test_a_broken_document_message_is_refused_by_rule(seed, data):
    text = data.draw(mutated(seed)).decode("latin-1")
    try:
        message = Er7Message.parse(text)
    except Er7Error:
        return
    try:
        read_message(message)
        code, problems = "AA", []
    except Refused as exc:
        assert exc.code in ("AE", "AR") and exc.problems and all(p.rule for p in exc.problems)
        code, problems = exc.code, exc.problems
    written = acknowledgement(FeedOutcome(code, "x", message.header.control_id, problems), message.header,
                              DOCUMENT_FEED)
    if "\x0b" not in text and "\x1c" not in text:   # what an MLLP frame can carry in
        frame(written.encode("utf-8"))
    ack = Er7Message.parse(written)
    assert [s.name for s in ack.segments][:2] == ["MSH", "MSA"] and ack.first("MSA").field(1) == code
