"""The hospital document feed (MDM / ORU carrying a CDA, ANS CISIS_CDA_HL7_V2) tried as a
connector vendor's conformance tester would: retransmissions after a lost ACK, several documents
in one ORU, the acknowledgement's shape and charset (HL7 v2.5 ch. 2: MSH-10 required, MSH-18 the
character set of the message it heads), the journal of messages not processed (kept, replayed,
forgotten once accepted, bounded) and the audit of every message with its patient.

In-process (Services + route, or an in-process MLLP listener), SQLite, with the corpus XSD and
value sets: light on a shared machine."""

from __future__ import annotations

import argparse
import base64
import socket
import threading

import pytest

from partage.access.actor import SYSTEM, Actor
from partage.cli.hl7 import run_replay
from partage.config import Settings
from partage.hl7.journal import Journal
from partage.hl7.mllp import MllpDecoder, frame
from partage.hl7.routing import route
from partage.hl7.server import MllpServer
from partage.metadata import kinds
from partage.metadata.datatypes import CX, HD
from partage.query import QueryService
from partage.registry import audit_log
from partage.services import Services
from tests.conftest import corpus_path
from tests.integration.test_document_feed import (
    adt_a28,
    err_rules,
    header,
    message,
    msa,
    pid3,
    renamed,
)

pytestmark = pytest.mark.corpus

DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("hl7doc2") / "data", insecure_dev=True,
                        cda_schema_dir=str(corpus_path("xsd", "cda")),
                        cda_valuesets_dir=str(corpus_path("valuesets")))
    opened = Services.open(settings)
    source = corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_2.xml").read_bytes()
    assert msa(route(opened, adt_a28(header(source)["ins"])))[1] == "AA"
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def listener(services):
    server = MllpServer(("127.0.0.1", 0), services).start()
    yield server
    server.stop()


def source() -> bytes:
    return corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_2.xml").read_bytes()


def entries(services, unique_id: str) -> list:
    """Every entry (any status) of the registry with this uniqueId."""
    actor = Actor(id="test", name="test", kind=SYSTEM, auth_method="internal")
    return QueryService(services, actor).get_objects(kinds.KIND_DOCUMENT, unique_ids=[unique_id]).objects


def last_audit(services) -> dict:
    with services.registry.read() as conn:
        return next(iter(audit_log.events(conn, limit=1)))


def patient_pk(services, ins) -> int:
    with services.registry.read() as conn:
        return services.registry.patient_pk(conn, CX(ins[1], HD.iso(ins[0])))


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(frame(data))
        decoder = MllpDecoder()
        while chunk := sock.recv(65536):
            for reply in decoder.feed(chunk):
                return reply
    raise AssertionError("no acknowledgement")


def journal_keys(services) -> set[str]:
    return {p.stem for p, _ in Journal.of(services).entries()}


# --- duplicates: a retransmission after a lost ACK ------------------------------------------------

@pytest.mark.parametrize("kind", ["MDM", "ORU"])
def test_retransmitted_replacement_after_a_lost_ack_is_accepted_once(services, kind):
    """The sender did not get the ACK of its T10 / ORU-C and sends the same message again (HL7 v2.5
    2.9.2, original mode: the initiator retransmits). The replacement is already done with the same
    bytes: AA (as for a retransmitted T02, docs/hl7-feed.md), not AE 900, nothing indexed twice, and
    the message is not left in the journal of messages not processed."""
    tag = "801" if kind == "MDM" else "802"
    v1 = renamed(source(), tag)
    v1_id = header(v1)["unique_id"]
    assert msa(route(services, message(kind, v1)))[1] == "AA"
    v2 = renamed(source(), tag + ".2", replaces=v1_id)
    v2_id = header(v2)["unique_id"]
    text = message(kind, v2, status="C", parent=v1_id, control=f"rplc-{tag}")
    assert msa(route(services, text))[1] == "AA"
    again = route(services, text)
    assert msa(again)[1:3] == ["AA", f"rplc-{tag}"], again
    assert not [s for s in again.split("\r") if s.startswith("ERR")]
    assert len(entries(services, v2_id)) == 1
    assert Journal.key(text) not in journal_keys(services)


def test_retransmitted_initial_transmission_is_indexed_once(services):
    doc = renamed(source(), "803")
    text = message("MDM", doc, control="t02-twice")
    assert msa(route(services, text))[1] == "AA"
    assert msa(route(services, text))[1:3] == ["AA", "t02-twice"]
    assert len(entries(services, header(doc)["unique_id"])) == 1


@pytest.mark.parametrize("then", ["replaced", "deleted"])
def test_late_retransmission_of_an_initial_transmission_does_not_bring_back_an_old_version(services, then):
    """T02 v1, then v1 replaced (T10) or deleted (T04); the sender's queue sends the T02 of v1 again
    (its ACK was lost). v1 must not come back as a second, current entry beside v2 (or after its
    deletion): refused, the registry unchanged."""
    tag = "818" if then == "replaced" else "819"
    v1 = renamed(source(), tag)
    v1_id = header(v1)["unique_id"]
    t02 = message("MDM", v1, control=f"late-{tag}")
    assert msa(route(services, t02))[1] == "AA"
    if then == "replaced":
        v2 = renamed(source(), tag + ".2", replaces=v1_id)
        assert msa(route(services, message("MDM", v2, status="C", parent=v1_id)))[1] == "AA"
    else:
        assert msa(route(services, message("MDM", v1, status="D")))[1] == "AA"
    # The same message (same MSH-10): the first answer again, nothing changed (docs/hl7-feed.md,
    # "Retransmissions"); the same document under a new MSH-10 (a sender that re-queued it, or a
    # retransmission whose answer is no longer remembered): refused.
    again = route(services, t02)
    assert msa(again)[1:3] == ["AA", f"late-{tag}"], again
    ack = route(services, t02.replace(f"|late-{tag}|", f"|late-{tag}-b|", 1))
    found = entries(services, v1_id)
    assert len(found) == 1 and found[0].availability_status.value != "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved", (
        ack, [o.availability_status for o in found])
    assert msa(ack)[1] == "AE" and err_rules(ack), ack


def other_structure(data: bytes) -> bytes:
    """The same CDA authored (and kept) by another structure (FINESS 1999999999)."""
    return data.replace(b'extension="1060021920"', b'extension="1999999999"')


@pytest.mark.parametrize("kind", ["MDM", "ORU"])
def test_replacement_by_a_structure_that_did_not_author_the_document_is_refused(services, kind):
    """Authors alone change documents (docs/access.md; the DMP's rule behind the IG's 901): another
    hospital's connector sending a T10 / ORU-C for a document its structure did not author is
    refused (AR 901), and the document stays the current version."""
    tag = "820" if kind == "MDM" else "821"
    v1 = renamed(source(), tag)
    v1_id = header(v1)["unique_id"]
    assert msa(route(services, message(kind, v1)))[1] == "AA"
    v2 = other_structure(renamed(source(), tag + ".2", replaces=v1_id))
    ack = route(services, message(kind, v2, status="C", parent=v1_id))
    assert msa(ack)[1] in ("AE", "AR") and "901" in err_rules(ack), ack
    [entry] = entries(services, v1_id)
    assert entry.availability_status.value.endswith(":Approved")
    assert not entries(services, header(v2)["unique_id"])
    # The same structure may.
    v2_same = renamed(source(), tag + ".3", replaces=v1_id)
    assert msa(route(services, message(kind, v2_same, status="C", parent=v1_id)))[1] == "AA"


def test_deletion_by_a_structure_that_did_not_author_the_document_is_refused(services):
    doc = renamed(source(), "822")
    assert msa(route(services, message("ORU", doc)))[1] == "AA"
    ack = route(services, message("ORU", other_structure(doc), status="D"))
    assert msa(ack)[1] in ("AE", "AR") and "901" in err_rules(ack), ack
    [entry] = entries(services, header(doc)["unique_id"])
    assert entry.availability_status.value.endswith(":Approved")


def test_same_message_on_several_connections_at_once_is_indexed_once(services):
    """The sender timed out and sent the same T02 again on a new connection while the first was
    still being processed: the document is indexed once, every copy answered AA."""
    doc = renamed(source(), "825")
    text = message("ORU", doc, control="race")
    acks: list[str] = []
    threads = [threading.Thread(target=lambda: acks.append(route(services, text))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [msa(a)[1] for a in acks] == ["AA"] * 3, acks
    assert len(entries(services, header(doc)["unique_id"])) == 1


def oru_with_two(first: bytes, second: bytes, control: str) -> str:
    """An ORU^R01 carrying two documents (the IG's level 3 + level 1 case): two OBX of type ED."""
    text = message("ORU", first, control=control)
    h = header(second)
    extra = f"OBX|9|ED|{h['type']}^Document^LN||^TEXT^XML^Base64^{base64.b64encode(second).decode()}||||||F|"
    segments = text.split("\r")
    at = next(i for i, s in enumerate(segments) if s.startswith("OBX|1|ED|"))
    segments.insert(at + 1, extra)
    return "\r".join(segments)


def test_oru_whose_first_document_is_indexed_does_not_drop_the_second(services):
    """An ORU with documents A and B, A already indexed: answering AA "already indexed" and never
    indexing B loses B while telling the sender all is done. Either both are on the registry after
    an AA, or the message is refused (and kept)."""
    a = renamed(source(), "804")
    b = renamed(source(), "805")
    assert msa(route(services, message("ORU", a)))[1] == "AA"
    ack = route(services, oru_with_two(a, b, "two-docs"))
    if msa(ack)[1] == "AA":
        assert entries(services, header(b)["unique_id"]), f"AA but B was never indexed: {ack}"
        assert len(entries(services, header(a)["unique_id"])) == 1, "A indexed twice"
    else:
        assert msa(ack)[1] in ("AE", "AR") and err_rules(ack), ack
        assert not entries(services, header(b)["unique_id"])   # all or nothing


# --- MSH: the control id, the acknowledgement -----------------------------------------------------

def test_message_without_control_id_is_refused_naming_msh10(services):
    """MSH-10 is required (HL7 v2.5 2.15.9.10, R): without it the sender cannot match the ACK
    (MSA-2) to its message. AE, ERR-2 MSH^1^10, ERR-3 101; nothing indexed."""
    doc = renamed(source(), "806")
    text = message("ORU", doc, control="x").replace("ORU^R01^ORU_R01|x|", "ORU^R01^ORU_R01||")
    ack = route(services, text)
    assert msa(ack)[1] == "AE", ack
    err = next(s for s in ack.split("\r") if s.startswith("ERR|"))
    assert err.split("|")[2] == "MSH^1^10" and err.split("|")[3].startswith("101^"), ack
    assert not entries(services, header(doc)["unique_id"])


def test_ack_shape_echoes_the_message(services):
    doc = renamed(source(), "807")
    ack = route(services, message("MDM", doc, control="shape-1"))
    msh, msa_ = ack.split("\r")[0].split("|"), msa(ack)
    assert msh[8] == "ACK^T02^ACK" and msh[11] == "2.6"
    assert msh[2:6] == ["PFI-Y", "Organisation-Y", "RIS-Y", "Organisation-Y"]
    assert msa_[1:3] == ["AA", "shape-1"]


def test_ack_is_encoded_in_the_charset_its_msh18_declares(services, listener):
    """The ACK copies the message's MSH-18 (8859/15, as the IG's ORU example): its bytes must be
    in that charset (HL7 v2.5 2.15.9.18), or the sender reads its French reasons garbled."""
    doc = renamed(source(), "808")
    other = doc.replace(b'extension="279035121518989"', b'extension="277076322082910"')
    text = message("ORU", other, control="latin-ack").replace("UNICODE UTF-8", "8859/15")
    text = text.replace(pid3(header(other)["ins"]), pid3(header(doc)["ins"]))   # PID-3 not the CDA's
    raw = raw_exchange(listener.port, text.encode("iso8859-15"))
    ack = raw.decode("iso8859-15")
    assert ack.split("\r")[0].split("|")[17] == "8859/15"
    assert msa(ack)[1] == "AE" and "hl7-pid3-mismatch" in err_rules(ack), ack
    assert "être" in ack, ack   # the reason's French, read in the declared charset


# --- the journal -------------------------------------------------------------------------------------

def test_kept_8859_15_message_is_replayed_as_sent_and_forgotten(services, listener, tmp_path):
    """A document sent before its patient (AR 902) in 8859/15 with an accented sender name: kept;
    after the ADT, `partage hl7 replay` sends it again, it is accepted and then forgotten. The
    kept bytes must be the message's (in its MSH-18 charset), or the replay is read garbled and its
    journal entry, keyed by the text, stays for ever."""
    doc = renamed(source(), "809")
    unknown = doc.replace(b'extension="279035121518989"', b'extension="180012345678902"')
    text = message("ORU", unknown, control="latin-kept").replace("UNICODE UTF-8", "8859/15")
    text = text.replace("^Eric^Thomas", "^Éric^Thomas")
    ack = raw_exchange(listener.port, text.encode("iso8859-15")).decode("iso8859-15")
    assert msa(ack)[1] == "AR" and "902" in err_rules(ack), ack
    assert Journal.key(text) in journal_keys(services)
    assert msa(route(services, adt_a28(header(unknown)["ins"])))[1] == "AA"
    args = argparse.Namespace(data=services.settings.data_dir, to=f"127.0.0.1:{listener.port}", list=False,
                              timeout=60.0)
    run_replay(args)
    assert entries(services, header(unknown)["unique_id"])
    assert Journal.key(text) not in journal_keys(services), "accepted on replay but still kept"


def test_journal_of_messages_not_processed_is_bounded(tmp_path):
    """Every refused message is written to disk by an unauthenticated MLLP peer: the journal has
    a cap (PARTAGE_HL7_JOURNAL_MAX_MESSAGES); past it, a message is still answered AE/AR but not kept."""
    settings = Settings(data_dir=tmp_path / "data", insecure_dev=True, hl7_journal_max_messages=3)
    opened = Services.open(settings)
    try:
        for n in range(6):
            text = f"MSH|^~\\&|A|B|C|D|20240101||ORU^R01^ORU_R01|bound-{n}|P|2.5\rPID|||1^^^&1.2.3&ISO\r"
            ack = route(opened, text)
            assert msa(ack)[1] in ("AE", "AR") and err_rules(ack), ack
        kept = {path.read_text(encoding="utf-8").split("|")[9] for path, _ in Journal.of(opened).entries()}
        assert kept == {"bound-0", "bound-1", "bound-2"}   # the first ones stay; none overwritten
    finally:
        opened.close()


def test_journal_bytes_are_bounded(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", insecure_dev=True, hl7_journal_max_bytes=1000)
    opened = Services.open(settings)
    try:
        for n in range(5):
            text = f"MSH|^~\\&|A|B|C|D|20240101||ORU^R01^ORU_R01|bytes-{n}|P|2.5\rPID|||1^^^&1.2.3&ISO\r" + \
                f"NTE|1||{'x' * 300}\r"
            assert msa(route(opened, text))[1] in ("AE", "AR")
        assert sum(path.stat().st_size for path, _ in Journal.of(opened).entries()) <= 1000
        assert len(Journal.of(opened).entries()) == 2
    finally:
        opened.close()


def test_unknown_patient_is_refused_ar_902_and_kept(services):
    doc = renamed(source(), "810")
    unknown = doc.replace(b'extension="279035121518989"', b'extension="180012345678903"')
    text = message("MDM", unknown, control="unk")
    ack = route(services, text)
    assert msa(ack)[1] == "AR" and "902" in err_rules(ack)
    assert "PID^1^3" in ack
    assert Journal.key(text) in journal_keys(services)


# --- audit ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["bad-base64", "delete-never-indexed", "pid3-mismatch", "version"])
def test_refused_document_message_is_audited_with_its_patient(services, case):
    """Every message is audited with its patient (docs/access.md): a refused MDM/ORU naming a known
    patient in PID-3 leaves an audit row naming that patient, as the ITI-8 feed's do."""
    doc = renamed(source(), "811")
    ins = header(doc)["ins"]
    text = message("ORU", doc, control=f"audit-{case}")
    if case == "bad-base64":
        b64 = base64.b64encode(doc).decode()
        text = text.replace(b64, b64[:-4] + "A===")
    elif case == "delete-never-indexed":
        text = message("ORU", doc, status="D", control=f"audit-{case}")
    elif case == "pid3-mismatch":
        other = doc.replace(b'extension="279035121518989"', b'extension="277076322082910"')
        text = message("ORU", other, control=f"audit-{case}").replace(pid3(header(other)["ins"]), pid3(ins))
    else:
        text = text.replace("|P|2.5|", "|P|2.3|")
    ack = route(services, text)
    assert msa(ack)[1] in ("AE", "AR"), ack
    row = last_audit(services)
    assert row["patient_pk"] == patient_pk(services, ins), row


def test_accepted_document_message_is_audited_with_its_patient(services):
    doc = renamed(source(), "812")
    assert msa(route(services, message("ORU", doc)))[1] == "AA"
    assert last_audit(services)["patient_pk"] == patient_pk(services, header(doc)["ins"])


# --- the document in OBX-5 --------------------------------------------------------------------------

def test_base64_wrapped_with_escaped_line_breaks_is_read(services):
    doc = renamed(source(), "813")
    b64 = base64.b64encode(doc).decode()
    wrapped = "\\X0D0A\\".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    assert msa(route(services, message("ORU", doc).replace(b64, wrapped)))[1] == "AA"


@pytest.mark.parametrize("bad", ["padding", "alphabet", "empty"])
def test_broken_base64_is_ae_naming_obx5(services, bad):
    doc = renamed(source(), "814")
    b64 = base64.b64encode(doc).decode()
    broken = {"padding": b64 + "=", "alphabet": b64[:100] + "*" + b64[101:], "empty": ""}[bad]
    ack = route(services, message("ORU", doc).replace(b64, broken))
    assert msa(ack)[1] == "AE", ack
    assert "OBX^1^5" in ack and next(s for s in ack.split("\r") if s.startswith("ERR|")).split("|")[4] == "E"
    assert not entries(services, header(doc)["unique_id"])


@pytest.mark.parametrize("ed", ["^AP^PDF^Base64^", "^IM^JPEG^Base64^", "^TEXT^HTML^Base64^", "^^^Base64^"])
def test_ed_type_and_subtype_other_than_text_xml_are_refused(services, ed):
    """OBX-5 is ^TEXT^XML^Base64^<CDA> (the profile; HL7 v2.5 ED, tables 0191 / 0291): a value
    declaring a PDF, an image or HTML is not read as a CDA and indexed: AE naming OBX-5."""
    doc = renamed(source(), "823")
    ack = route(services, message("ORU", doc).replace("^TEXT^XML^Base64^", ed))
    assert msa(ack)[1] == "AE" and "OBX^1^5" in ack, ack
    assert not entries(services, header(doc)["unique_id"])


def test_ed_type_and_subtype_are_read_in_any_case(services):
    doc = renamed(source(), "824")
    assert msa(route(services, message("ORU", doc).replace("^TEXT^XML^Base64^", "^text^xml^BASE64^")))[1] == "AA"


def test_cda_split_over_two_obx_in_an_mdm_is_refused(services):
    doc = renamed(source(), "815")
    b64 = base64.b64encode(doc).decode()
    cut = len(b64) // 8 * 4
    text = message("MDM", doc)
    first = next(s for s in text.split("\r") if s.startswith("OBX|1|ED|"))
    split = first.replace(b64, b64[:cut]) + "\r" + first.replace("OBX|1|", "OBX|2|").replace(b64, b64[cut:])
    ack = route(services, text.replace(first, split))
    assert msa(ack)[1] == "AE" and err_rules(ack), ack
    assert not entries(services, header(doc)["unique_id"])


def test_deletion_of_a_document_never_indexed_is_ae_900(services):
    doc = renamed(source(), "816")
    ack = route(services, message("MDM", doc, status="D"))
    assert msa(ack)[1] == "AE" and "900" in err_rules(ack)


def test_unsupported_trigger_is_ar_201(services):
    doc = renamed(source(), "817")
    ack = route(services, message("MDM", doc).replace("MDM^T02^MDM_T02", "MDM^T11^MDM_T02"))
    assert msa(ack)[1] == "AR" and "201^Unsupported event code^HL70357" in ack
    assert ack.split("\r")[0].split("|")[8] == "ACK^T11^ACK"
