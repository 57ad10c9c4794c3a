"""HL7 v2 over MLLP under hostile input: framing never loses sync or grows without bound,
and every message, however broken, gets an acknowledgement (AA, AE or AR), never an
exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from partage.hl7.mllp import MllpDecoder, MllpError, frame
from partage.hl7.routing import route
from tests.fuzz.conftest import FUZZ
from tests.fuzz.mutations import mutated

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ADT = (EXAMPLES / "adt-a01.hl7").read_bytes()
MERGE = (b"MSH|^~\\&|DPI|HOPITAL|PARTAGE|PARTAGE|20241120090000||ADT^A40^ADT_A39|MSG0002|P|2.5\r"
         b"EVN|A40|20241120090000\r"
         b"PID|||1234567890124^^^&1.2.250.1.213.1.4.10&ISO||DUPONT^JEANNE\r"
         b"MRG|1234567890123^^^&1.2.250.1.213.1.4.10&ISO\r")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    from partage.config import Settings
    from partage.services import Services

    svc = Services.open(Settings(data_dir=tmp_path_factory.mktemp("hl7fuzz")))
    yield svc
    svc.close()


@FUZZ
@given(messages=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
       junk=st.text("\r\n", max_size=8), cuts=st.lists(st.integers(1, 64), max_size=20))
def test_framing_recovers_whole_messages_from_any_chunking(messages, junk, cuts):
    """Line ends between frames are tolerated; each framed message comes out whole and exact."""
    messages = [m.replace(b"\x0b", b"").replace(b"\x1c", b"") for m in messages]
    stream = junk.encode() + b"".join(frame(m) + junk.encode() for m in messages)
    decoder = MllpDecoder(max_message=4096)
    out, at = [], 0
    for size in [*cuts, len(stream)]:
        out += list(decoder.feed(stream[at:at + size]))
        at += size
    assert out == messages


@FUZZ
@given(data=st.binary(max_size=2000))
def test_framing_bounds_memory(data):
    decoder = MllpDecoder(max_message=256)
    try:
        for _ in decoder.feed(data):
            pass
    except MllpError:
        return
    assert decoder.pending <= 256 + 2


@FUZZ
@given(seed=st.sampled_from([ADT, MERGE]), data=st.data())
def test_every_message_gets_an_acknowledgement(services, seed, data):
    text = data.draw(mutated(seed)).decode("latin-1")
    ack = route(services, text)
    segments = ack.split("\r")
    assert segments[0].startswith("MSH|")
    msa = [s for s in segments if s.startswith("MSA|")]
    assert msa and msa[0].split("|")[1] in {"AA", "AE", "AR", "CA", "CE", "CR"}, ack
