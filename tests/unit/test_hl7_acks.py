"""The one acknowledgement builder (partage.hl7.acks), in both flavours, and the router that
picks the flavour of each message's feed (partage.hl7.routing)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partage.config import Settings
from partage.hl7.acks import (
    DOCUMENT_FEED,
    PATIENT_FEED,
    AckFlavour,
    ack_status,
    acknowledgement,
    business_ack,
)
from partage.hl7.mllp import frame
from partage.hl7.outcome import DocumentOutcome, FeedOutcome, Problem
from partage.hl7.routing import ack, route
from partage.metadata.datatypes import CE, unescape_hl7
from partage.metadata.er7 import Er7Message, MessageHeader, one_line
from partage.services import Services
from tests import factories as F

ADT = "MSH|^~\\&|DPI|HOPITAL|PARTAGE|PARTAGE|20240101||ADT^A01^ADT_A01|c-9|T|2.3.1\rPID|||1^^^&1.2.3&ISO\r"
MDM = ("MSH|^~\\&|RIS^1.2.3^ISO|ORG|PFI|ORG2|20240101||MDM^T02^MDM_T02|c\\F\\1|T|2.6|||||FRA|8859/15|||"
       "2.1^CISIS_CDA_HL7_V2\rPID|||1^^^&1.2.3&ISO\r")


def header(text: str) -> MessageHeader:
    return Er7Message.parse(text).header


def segments(ack_text: str) -> Er7Message:
    assert ack_text.endswith("\r") and "\n" not in ack_text
    return Er7Message.parse(ack_text)


# --- the ITI-8 flavour ------------------------------------------------------------------------

def test_patient_feed_ack_mirrors_the_header():
    m = segments(acknowledgement(FeedOutcome("AA", "", "c-9"), header(ADT), PATIENT_FEED))
    msh = m.segments[0]
    assert [msh.field(n) for n in (3, 4, 5, 6)] == ["PARTAGE", "PARTAGE", "DPI", "HOPITAL"]
    assert (msh.field(9), msh.field(11), msh.field(12)) == ("ACK^A01", "P", "2.3.1")
    assert len(msh.fields) == 13   # nothing after MSH-12 in this flavour
    assert m.first("MSA").fields == ("MSA", "AA", "c-9") and m.first("ERR") is None


def test_patient_feed_refusal_has_one_err_in_the_v231_layout():
    outcome = FeedOutcome("AE", "PID-3 has | no ISO id", "c-9", [Problem("101", "hl7-pid3-missing",
                                                                          "PID-3 has | no ISO id")])
    m = segments(acknowledgement(outcome, header(ADT), PATIENT_FEED))
    assert unescape_hl7(m.first("MSA").field(3), strict=False) == "PID-3 has | no ISO id"
    [err] = m.all("ERR")
    assert err.field(1) == "^^^101&PID-3 has \\F\\ no ISO id" and err.field(3) == ""


def test_patient_feed_default_version_when_the_message_has_none():
    no_version = ADT.replace("|T|2.3.1", "|T|")
    assert segments(acknowledgement(FeedOutcome("AA"), header(no_version), PATIENT_FEED)).segments[0].field(12) \
        == "2.3.1"


# --- the CISIS_CDA_HL7_V2 flavour -------------------------------------------------------------

def test_document_feed_ack_is_the_igs():
    m = segments(acknowledgement(DocumentOutcome("AA", "indexed 1.2^x", "c\\F\\1"), header(MDM), DOCUMENT_FEED))
    msh = m.segments[0]
    assert [msh.field(n) for n in (3, 4, 5, 6)] == ["PFI", "ORG2", "RIS^1.2.3^ISO", "ORG"]
    assert (msh.field(9), msh.field(11), msh.field(12), msh.field(17), msh.field(18)) == (
        "ACK^T02^ACK", "T", "2.6", "FRA", "8859/15")
    assert not set(msh.field(10)) & set("|^~&\\")   # the ACK's own control id never breaks MSH
    msa = m.first("MSA")
    assert msa.field(2) == "c\\F\\1"   # MSA-2 echoes MSH-10 as received
    assert unescape_hl7(msa.field(3), strict=False) == "indexed 1.2^x"


@pytest.mark.parametrize("kind, version", [("MDM^T02^MDM_T02", "2.6"), ("ORU^R01^ORU_R01", "2.5")])
def test_document_feed_default_version_by_message_type(kind, version):
    text = MDM.replace("MDM^T02^MDM_T02", kind).replace("|T|2.6|", "|T||")
    assert segments(acknowledgement(FeedOutcome("AA"), header(text), DOCUMENT_FEED)).segments[0].field(12) == version


def test_document_feed_err_per_problem():
    outcome = DocumentOutcome("AE", "2 error(s)", "c-1", problems=[
        Problem("207", "missing-title", "the CDA has no title\nat all", "/hl7:ClinicalDocument (line 3)",
                "CISIS-CDA"),
        Problem("100", "hl7-txa-missing", "no TXA", "TXA"),
        Problem("207", "902", "patient unknown", "PID^1^3")])
    errs = segments(acknowledgement(outcome, header(MDM), DOCUMENT_FEED)).all("ERR")
    assert len(errs) == 3
    first, second, third = errs
    assert (first.field(2), first.field(3), first.field(4), first.field(5)) == (
        "", "207^Application error^HL70357", "E", "missing-title^^CISIS-CDA")
    assert first.field(7) == "/hl7:ClinicalDocument (line 3)" and first.field(8) == "the CDA has no title at all"
    assert (second.field(2), second.field(3)) == ("TXA", "100^Segment sequence error^HL70357")
    assert (third.field(2), third.field(5)) == ("PID^1^3", "902^^PARTAGE")


def test_a_refusal_without_problems_still_has_its_err():
    for flavour, where, received in ((DOCUMENT_FEED, 5, MDM), (PATIENT_FEED, 1, ADT), (PATIENT_FEED, 3, MDM)):
        # a v2.5+ message gets the v2.5 ERR (ERR-3 required, ERR-1 withdrawn) in either flavour
        m = segments(acknowledgement(FeedOutcome("AR", "internal error", "c-1"), header(received), flavour))
        [err] = m.all("ERR")
        assert err.field(where), flavour.name


def test_an_unreadable_message_gets_a_default_header():
    m = segments(acknowledgement(FeedOutcome("AR", "message cannot be parsed"), None, PATIENT_FEED))
    msh = m.segments[0]
    assert (msh.field(3), msh.field(4), msh.field(5), msh.field(9)) == ("PARTAGE", "PARTAGE", "", "ACK")
    assert m.first("MSA").fields[:2] == ("MSA", "AR")


@settings(max_examples=200)
@given(text=st.text(), rule=st.text(), location=st.text(),
       flavour=st.sampled_from([PATIENT_FEED, DOCUMENT_FEED]))
def test_no_text_breaks_an_acknowledgement(text, rule, location, flavour: AckFlavour):
    outcome = FeedOutcome("AE", text, "c-1", [Problem("207", rule, text, location)])
    written = acknowledgement(outcome, header(MDM), flavour)
    frame(written.encode("utf-8"))   # never the framing bytes
    m = segments(written)
    assert [s.name for s in m.segments] == ["MSH", "MSA", "ERR"]
    assert unescape_hl7(m.first("MSA").field(3), strict=False) == one_line(text)
    if flavour is DOCUMENT_FEED:
        err = m.first("ERR")
        assert CE.parse(err.field(5)).identifier == one_line(rule)
        assert unescape_hl7(err.field(8), strict=False) == one_line(text)[:2000]


def test_business_ack_escapes_rules_and_reasons():
    outcome = DocumentOutcome("AE", "x", "c-1", problems=[Problem("207", "a^b", "bad | thing"),
                                                        Problem("207", "c~d", "other")])
    m = segments(business_ack(outcome, header(MDM)))
    assert [s.name for s in m.segments] == ["MSH", "EVN", "OBX", "ERR"]
    err = m.first("ERR")
    assert CE.parse(err.field(5)) == CE("a^b", "bad | thing", "PARTAGE")
    assert [unescape_hl7(r, strict=False) for r in err.repetitions(6)] == ["a^b", "c~d"]
    assert m.segments[0].field(21) == "2.1^CISIS_CDA_HL7_V2"


def test_a_sender_reads_the_status_of_an_ack_with_the_reader():
    refused = acknowledgement(FeedOutcome("AE", "PID-3 a|b", "c-9"), header(ADT), PATIENT_FEED)
    assert ack_status(refused) == ("AE", "PID-3 a\\F\\b")   # MSA-3 as ER7 text
    assert ack_status(refused.replace("\r", "\n")) == ("AE", "PID-3 a\\F\\b")
    assert ack_status("MSH|^~\\&|A\rEVN|1\r") == ("", "") and ack_status("garbage") == ("", "")


# --- the router picks the flavour of the feed --------------------------------------------------

@pytest.fixture(scope="module")
def services(tmp_path_factory):
    svc = Services.open(Settings(data_dir=tmp_path_factory.mktemp("acks")))
    yield svc
    svc.close()


def test_each_feed_answers_in_its_flavour(services):
    assert segments(route(services, ADT)).segments[0].field(9) == "ACK^A01"
    document = segments(route(services, MDM))   # no ORC: refused by the document feed
    assert document.segments[0].field(9) == "ACK^T02^ACK" and document.first("ERR").field(5).startswith(
        "hl7-orc-missing^")
    other = segments(route(services, ADT.replace("ADT^A01^ADT_A01", "SIU^S12")))
    assert other.first("MSA").field(1) == "AR" and other.segments[0].field(9) == "ACK^S12"


@pytest.mark.parametrize("text", ["", "garbage", "MSH|^~", "MSH|^^^^|A", "\x00\x01"])
def test_text_that_is_no_message_is_rejected(services, text):
    m = segments(route(services, text))
    assert m.first("MSA").field(1) == "AR" and "cannot be parsed" in m.first("MSA").field(3)
    assert m.first("ERR").field(1).startswith("MSH^^^100&")   # ELD: the segment in error


def test_non_standard_encoding_characters_feed_a_patient(services):
    pid = F.patient_id()
    text = (f"MSH#@*$!#DPI#HOPITAL#PARTAGE#PARTAGE#20240101##ADT@A28@ADT_A05#enc-1#P#2.5\r"
            f"PID###{str(pid).replace('^', '@').replace('&', '!')}##DUPONT@JEANNE\r")
    m = segments(route(services, text))
    # a v2.5 message: MSH-9 has its three components (HL7 v2.5 2.15.9.9)
    assert m.first("MSA").fields[:3] == ("MSA", "AA", "enc-1") and m.segments[0].field(9) == "ACK^A28^ACK"
    with services.registry.read() as conn:
        assert services.registry.patient_pk(conn, pid) is not None


def test_the_listeners_last_resort_answer_follows_the_route():
    assert segments(ack(FeedOutcome("AE", "internal error"), MDM)).segments[0].field(9) == "ACK^T02^ACK"
    assert segments(ack(FeedOutcome("AE", "internal error"), ADT)).segments[0].field(9) == "ACK^A01"
    assert segments(ack(FeedOutcome("AE", "internal error"), "garbage")).first("MSA").field(1) == "AE"


# --- limits: judged on the text before the reader sees it -------------------------------------

@pytest.mark.parametrize("extra", ["NTE|1\r" * 1200, "NTE|" + "|" * 60_000 + "\r",
                                   "NTE|1|" + "^" * 60_000 + "\r", "PID|||" + "1~" * 30_000 + "\r"])
@pytest.mark.parametrize("base", [ADT, MDM])
def test_a_message_past_the_limits_is_refused_in_its_flavour(services, monkeypatch, base, extra):
    control_id = Er7Message.parse(base).header.control_id

    def never(*_args: object) -> None:
        raise AssertionError("the reader saw a message past the limits")

    monkeypatch.setattr(Er7Message, "parse", classmethod(never))
    answer = route(services, base + extra)
    monkeypatch.undo()
    m = segments(answer)
    msa = m.first("MSA")
    assert msa.field(1) == "AR" and msa.field(2) == control_id
    assert "too many" in msa.field(3) or "at most" in msa.field(3)
    assert m.segments[0].field(9) == ("ACK^T02^ACK" if base is MDM else "ACK^A01")


def test_declared_separators_are_counted_too(services):
    """A message declaring its own separators cannot pass the limit with them (# for |, @ for ^)."""
    text = "MSH#@*$!#DPI#HOPITAL#PARTAGE#PARTAGE#20240101##ADT@A28@ADT_A05#enc-2#P#2.5\rNTE#" + "#" * 60_000 + "\r"
    msa = segments(route(services, text)).first("MSA")
    assert msa.fields[:3] == ("MSA", "AR", "enc-2") and "too many" in msa.field(3)


def test_crlf_line_ends_count_one_segment_each(services):
    pid = F.patient_id()
    text = f"MSH|^~\\&|DPI|HOPITAL|PARTAGE|PARTAGE|20240101||ADT^A01|crlf|P|2.5\r\nPID|||{pid}\r\n"
    assert segments(route(services, text + "NTE|1\r\n" * 900)).first("MSA").field(1) == "AA"
