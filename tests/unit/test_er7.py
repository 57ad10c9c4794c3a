"""The one ER7 reader (partage.metadata.er7): segments, fields, repetitions, escapes, the
encoding characters a message declares, and messages as they come out of MLLP frames."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partage.hl7.mllp import MllpDecoder, frame
from partage.metadata.datatypes import CX, ED, MSG, XPN, unescape_hl7
from partage.metadata.er7 import (
    Er7Error,
    Er7Message,
    first_segment,
    one_line,
    read_header,
    text_field,
)

ADT = ("MSH|^~\\&|DPI^1.2.3^ISO|HOPITAL|PARTAGE|PARTAGE|20240101||ADT^A01^ADT_A01|c\\F\\1|P|2.5^FRA|||||FRA"
       "|8859/15~UNICODE UTF-8\r"
       "EVN|A01|20240101\r"
       "PID|||123^^^&1.2.250.1.213.1.4.10&ISO^INS~~X\\S\\Y^^^&1.2.3&ISO||DU\\T\\PONT^JEANNE~NOM^USAGE||19700101|F\r")


def test_fields_are_numbered_as_the_standard_does():
    m = Er7Message.parse(ADT)
    msh, pid = m.segments[0], m.first("PID")
    assert [s.name for s in m.segments] == ["MSH", "EVN", "PID"]
    assert (msh.field(1), msh.field(2), msh.field(3), msh.field(9)) == ("|", "^~\\&", "DPI^1.2.3^ISO",
                                                                        "ADT^A01^ADT_A01")
    assert pid.position == 2 and pid.field(1) == "" and pid.field(99) == "" and pid.field(0) == ""
    assert m.all("OBX") == [] and m.first("OBX") is None


def test_header_is_read_through_the_composite_types():
    h = Er7Message.parse(ADT).header
    assert h.message_type == MSG("ADT", "A01", "ADT_A01")
    assert (h.sending_application, h.receiving_facility) == ("DPI^1.2.3^ISO", "PARTAGE")
    assert h.control_id == "c\\F\\1"   # as ER7 text: what MSA-2 echoes
    assert (h.version, h.charset, h.processing_id) == ("2.5", "8859/15", "P")


def test_repetitions_skip_empty_ones_and_values_are_unescaped_by_their_type():
    pid = Er7Message.parse(ADT).first("PID")
    reps = pid.repetitions(3)
    assert len(reps) == 2
    ids = [CX.parse(r, strict=False) for r in reps]
    assert [cx.id for cx in ids] == ["123", "X^Y"]   # \S\ is a component separator as data
    assert ids[0].assigning_authority.universal_id == "1.2.250.1.213.1.4.10" and ids[0].id_type == "INS"
    assert pid.first(5) == "DU\\T\\PONT^JEANNE"
    assert XPN.parse(pid.first(5)).family_name == "DU&PONT"


@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n"])
def test_line_ends_and_blank_lines(separator):
    text = ADT.replace("\r", separator) + separator * 3
    m = Er7Message.parse(text)
    assert [s.name for s in m.segments] == ["MSH", "EVN", "PID"] and m.text == text


def test_declared_encoding_characters_are_translated_to_the_standard_ones():
    # field #, component @, repetition *, escape $, subcomponent !; ^ | & ~ \ are data here
    text = ("MSH#@*$!#APP@1.2.3@ISO#FAC#R#F#20240101##ADT@A01#9#P#2.5\r"
            "PID###12^3@@@!1.2.250.1.213.1.4.10!ISO*4~5@@@!1.2.3!ISO##A|B$S$C\\D&E\r")
    m = Er7Message.parse(text)
    pid = m.first("PID")
    assert m.header.message_type.trigger_event == "A01" and m.header.sending_application == "APP^1.2.3^ISO"
    assert [CX.parse(r, strict=False).id for r in pid.repetitions(3)] == ["12^3", "4~5"]
    assert XPN.parse(pid.field(5)).family_name == "A|B^C\\D&E"


def test_swapped_component_and_repetition_characters():
    m = Er7Message.parse("MSH|~^\\&|A|B|C|D|1||ADT~A04|1|P|2.5\rPID|||1~~~&1.2.3&ISO^2~~~&1.2.4&ISO\r")
    assert m.header.message_type == MSG("ADT", "A04")
    assert [CX.parse(r, strict=False).id for r in m.first("PID").repetitions(3)] == ["1", "2"]


def test_truncation_character_of_v27_is_accepted():
    m = Er7Message.parse("MSH|^~\\&#|A|B|C|D|1||ADT^A01|1|P|2.7\r")
    assert m.header.version == "2.7" and m.segments[0].field(2) == "^~\\&"


@pytest.mark.parametrize("text", [
    "", "PID|||1", "MSH|^~", "MSH|^~\\^|A", "MSH|^~\\||A", "MSH|^~a&|A", "MSH|^~ &|A", "MSH|^~\\&&&&|A",
    "\rMSH|^~\\&|A",   # a message starts with MSH, not with an empty line
])
def test_text_that_is_no_message_is_refused(text):
    with pytest.raises(Er7Error):
        Er7Message.parse(text)


def test_a_megabyte_document_comes_out_whole():
    data = os.urandom(3 * 1024 * 1024)
    text = ADT + f"OBX|1|ED|11488-4^CR^LN||^TEXT^XML^Base64^{base64.b64encode(data).decode()}||||||F\r"
    value = ED.parse(Er7Message.parse(text).first("OBX").first(5))
    assert (value.type_of_data, value.data_subtype, value.encoding) == ("TEXT", "XML", "Base64")
    assert base64.b64decode(value.data) == data


def test_read_header_reads_msh_alone_with_bounded_work():
    """What answers a message refused before it is read: its MSH, whatever follows it."""
    assert read_header(ADT) == Er7Message.parse(ADT).header
    huge = ADT.split("\r", 1)[0] + "|" * 200_000 + "\rNTE|1\r" * 3
    assert read_header(huge) == Er7Message.parse(ADT.split("\r", 1)[0]).header
    assert read_header("garbage") is None and read_header("") is None


def test_text_field_keeps_a_field_whole():
    assert text_field("a|b^c&d~e\\f") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"
    assert text_field("line 1\r\nline 2\x0b\x1c  end") == "line 1 line 2 end"
    assert text_field("|" * 10, limit=3) == "\\F\\" * 3   # cut before escaping: no broken escape
    assert one_line(" a \n b ") == "a b"


@settings(max_examples=300)
@given(value=st.text())
def test_any_text_written_as_a_field_reads_back(value):
    text = "MSH|^~\\&|A|B|C|D|1||ACK|1|P|2.5\rNTE|1||" + text_field(value) + "|after\r"
    nte = Er7Message.parse(text).first("NTE")
    assert unescape_hl7(nte.field(3), strict=False) == one_line(value)
    assert nte.field(4) == "after"
    assert b"\x0b" not in text.encode() and b"\x1c" not in text.encode()


# --- messages as they come out of MLLP frames --------------------------------------------------

def test_a_message_fed_byte_by_byte_reads_as_the_original():
    stream = b"\r\n" + frame(ADT.encode("utf-8")) + b"\r\n" + frame(ADT.replace("\r", "\n").encode("utf-8"))
    decoder = MllpDecoder()
    out = [m for i in range(len(stream)) for m in decoder.feed(stream[i:i + 1])]
    assert len(out) == 2
    first, second = (Er7Message.parse(m.decode("utf-8")) for m in out)
    assert first.segments == second.segments and first.first("PID").repetitions(3)


def test_latin1_bytes_decoded_as_the_listener_does_still_read():
    raw = ADT.replace("JEANNE", "HÉLÈNE").encode("latin-1")
    m = Er7Message.parse(frame(raw)[1:-2].decode("utf-8", errors="replace"))
    assert XPN.parse(m.first("PID").first(5)).given_name == "H\ufffdL\ufffdNE"
    assert CX.parse(m.first("PID").repetitions(3)[0], strict=False).id == "123"


def test_first_segment_is_cut_without_reading_the_rest():
    assert first_segment(ADT) == ADT.split("\r", 1)[0]
    assert first_segment(ADT, 10) == ADT[:10]
    assert first_segment("MSH|^~\\&|A\nPID|1") == "MSH|^~\\&|A" and first_segment("") == ""
