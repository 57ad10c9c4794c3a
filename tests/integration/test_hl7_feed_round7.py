"""The MLLP feeds (ITI-8 ADT and the ANS CDA-in-HL7v2 document feed) judged by HL7 v2.5 chapter 2
(review round 7): the acknowledgement mode a sender asks for (2.9.3, MSH-15 / MSH-16), the error
codes of table 0357 for a message type or event not taken, the ACK's MSH-9 from v2.5 (2.15.9.9),
and one message per MLLP frame
(Appendix C; 2.10.3 batches). Every answer is a well-formed ACK and nothing is half-applied.

In-process router on SQLite, and one real MLLP listener."""

from __future__ import annotations

import socket
import uuid

import pytest

from partage.access.actor import SYSTEM, Actor
from partage.config import Settings
from partage.hl7.mllp import MllpDecoder, frame
from partage.hl7.routing import route
from partage.hl7.server import MllpServer
from partage.metadata import kinds
from partage.metadata.datatypes import CX, HD
from partage.metadata.er7 import Er7Message
from partage.query import QueryService
from partage.services import Services
from tests.conftest import corpus_path
from tests.integration.test_document_feed import adt_a28, header, message, msa, renamed

pytestmark = pytest.mark.corpus

APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("hl7r7") / "data", insecure_dev=True,
                        cda_schema_dir=str(corpus_path("xsd", "cda")),
                        cda_valuesets_dir=str(corpus_path("valuesets")))
    opened = Services.open(settings)
    assert msa(route(opened, adt_a28(header(source())["ins"])))[1] == "AA"
    yield opened
    opened.close()


def source() -> bytes:
    return corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_2.xml").read_bytes()


def entries(services, unique_id: str) -> list:
    actor = Actor(id="test", name="test", kind=SYSTEM, auth_method="internal")
    return QueryService(services, actor).get_objects(kinds.KIND_DOCUMENT, unique_ids=[unique_id]).objects


def known(services, nir: str) -> bool:
    with services.registry.read() as conn:
        return services.registry.patient_pk(conn, CX(nir, HD.iso("1.2.250.1.213.1.4.8"))) is not None


def with_ack_modes(text: str, accept: str, application: str) -> str:
    """The message with MSH-15 / MSH-16 set (enhanced acknowledgement mode when either is valued)."""
    lines = text.split("\r")
    fields = lines[0].split("|")
    fields += [""] * (17 - len(fields))
    fields[14], fields[15] = accept, application
    lines[0] = "|".join(fields)
    return "\r".join(lines)


def adt(trigger: str, nir: str, control: str) -> str:
    return "\r".join([
        f"MSH|^~\\&|DPI|HOPITAL|PARTAGE|PARTAGE|20240101120000||ADT^{trigger}^ADT_A01|{control}|P|2.5",
        f"EVN|{trigger}|20240101120000",
        f"PID|||{nir}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^NH||SEPT^ROUND||19800101|F",
        "PV1|1|N"]) + "\r"


def well_formed(ack: str) -> Er7Message:
    parsed = Er7Message.parse(ack)
    assert parsed.segments[0].name == "MSH" and parsed.segments[1].name == "MSA"
    return parsed


# --- HL7 v2.5 2.9.3: enhanced acknowledgement mode -------------------------------------------------

@pytest.mark.parametrize("kind", ["MDM", "ORU"])
def test_enhanced_mode_accept_ack_only_is_answered_with_a_commit_accept(services, kind):
    """MSH-15 AL, MSH-16 NE: the sender asks for the accept acknowledgement (CA/CE/CR, table 0008)
    and no application acknowledgement. Before: MSA-1 AA, an application ACK it said it does not want."""
    doc = renamed(source(), "7101" if kind == "MDM" else "7102")
    text = with_ack_modes(message(kind, doc), "AL", "NE")
    ack = well_formed(route(services, text))
    control = Er7Message.parse(text).header.control_id
    assert (ack.first("MSA").field(1), ack.first("MSA").field(2)) == ("CA", control)
    assert ack.segments[0].field(9) == ("ACK^T02^ACK" if kind == "MDM" else "ACK^R01^ACK")
    assert len(entries(services, header(doc)["unique_id"])) == 1


def test_enhanced_mode_refusal_is_a_commit_error_naming_its_rule(services):
    """MSH-15 AL, MSH-16 NE and a message refused (HL7 version below 2.5): CE with its ERR, not AE."""
    doc = renamed(source(), "7103")
    text = with_ack_modes(message("ORU", doc).replace("|P|2.5|", "|P|2.3|", 1), "AL", "NE")
    ack = well_formed(route(services, text))
    assert ack.first("MSA").field(1) == "CE"
    assert ack.first("ERR").field(3).split("^")[0] == "203"
    assert entries(services, header(doc)["unique_id"]) == []


def test_enhanced_mode_on_the_patient_feed(services):
    """The ITI-8 feed in enhanced mode: CA when only the accept acknowledgement is asked for; the
    application acknowledgement (AR here) when MSH-16 asks for it (AL, or ER and refused)."""
    nir = "2800175000002"
    text = with_ack_modes(adt("A28", nir, f"r7-{uuid.uuid4().hex[:8]}"), "AL", "NE")
    assert well_formed(route(services, text)).first("MSA").field(1) == "CA"
    assert known(services, nir)
    for application in ("AL", "ER"):
        refused = with_ack_modes(adt("A99", "2800175000010", f"r7-{uuid.uuid4().hex[:8]}"), "AL", application)
        assert well_formed(route(services, refused)).first("MSA").field(1) == "AR"


# --- HL7 v2.5 table 0357 on the ITI-8 route ---------------------------------------------------------

@pytest.mark.parametrize("msh9, code", [("QRY^A19", "200"), ("SIU^S12", "200"), ("ADT^A99", "201"),
                                        ("ADT^A03", "201")])
def test_message_type_or_event_not_taken_is_ar_with_its_table_0357_code(services, msh9, code):
    """A message type no feed takes is 200 Unsupported message type, an ADT event the ITI-8 feed
    does not take 201 Unsupported event code (HL7 v2.5 2.9.2, table 0357). Before: 207."""
    text = adt("A01", "2800175000003", f"r7-{uuid.uuid4().hex[:8]}").replace("ADT^A01^ADT_A01", msh9)
    ack = well_formed(route(services, text))
    assert ack.first("MSA").field(1) == "AR"
    err = ack.first("ERR")
    assert (err.field(2), err.field(3).split("^")[0]) == ("MSH^1^9", code)
    assert not known(services, "2800175000003")


@pytest.mark.parametrize("version", ["2.5", "2.6"])
def test_patient_feed_ack_msh9_has_its_structure_from_v25(services, version):
    """HL7 v2.5 2.15.9.9: MSH-9's three components are required; the ITI-8 ACK to a v2.5 ADT (in its
    version) is ACK^A28^ACK. Before: ACK^A28, the v2.3.1 layout, which a v2.3.1 message still gets."""
    for sent, msh9 in ((version, "ACK^A28^ACK"), ("2.3.1", "ACK^A28")):
        text = adt("A28", "2800175000011", f"r7-{uuid.uuid4().hex[:8]}").replace("|P|2.5", f"|P|{sent}", 1)
        ack = well_formed(route(services, text))
        assert (ack.segments[0].field(9), ack.segments[0].field(12), ack.first("MSA").field(1)) == (
            msh9, sent, "AA")


# --- MODIF_CONF_CODE on a replacement (docs/hl7-feed.md; IG example 3) --------------------------------

def codes_of(services, unique_id: str) -> set[str]:
    [entry] = [e for e in entries(services, unique_id) if e.availability_status in (None, APPROVED)]
    return {c.code for c in entry.confidentiality_codes}


@pytest.mark.parametrize("kind, flag, code", [
    ("MDM", "INVISIBLE_PATIENT", "INVISIBLE_PATIENT"),
    ("ORU", "INVISIBLE_PATIENT", "INVISIBLE_PATIENT"),
    ("ORU", "INVISIBLE_REP_LEGAUX", "INVISIBLE_REPRESENTANTS_LEGAUX")])
def test_replacement_without_modif_conf_code_keeps_every_confidentiality_flag(services, kind, flag, code):
    """MODIF_CONF_CODE = N says the replacement does not change the replaced document's MetaDMPMSS
    confidentiality (docs/hl7-feed.md; the IG's example 3 keeps MASQUE_PS). A document hidden from the
    patient (INVISIBLE_PATIENT, e.g. awaiting the announcement consultation) replaced by a message whose
    flags say N: before, the replacement (the lineage's newest version) was visible to the patient."""
    tag = {"MDM": "7110", "ORU": "7112"}[kind] + ("1" if flag == "INVISIBLE_REP_LEGAUX" else "0")
    v1 = renamed(source(), tag)
    first = message(kind, v1, flags={flag: "Y"})
    assert msa(route(services, first))[1] == "AA"
    assert code in codes_of(services, header(v1)["unique_id"])
    v2 = renamed(source(), tag + "2", replaces=header(v1)["unique_id"])
    replacement = message(kind, v2, status="C", parent=header(v1)["unique_id"], flags={"MODIF_CONF_CODE": "N"})
    assert msa(route(services, replacement))[1] == "AA"
    assert code in codes_of(services, header(v2)["unique_id"]), "the replacement lifted the flag"
    # MODIF_CONF_CODE = Y restates them (IG example 4): the flag is lifted by saying so
    v3 = renamed(source(), tag + "3", replaces=header(v2)["unique_id"])
    lifted = message(kind, v3, status="C", parent=header(v2)["unique_id"], flags={"MODIF_CONF_CODE": "Y"})
    assert msa(route(services, lifted))[1] == "AA"
    assert code not in codes_of(services, header(v3)["unique_id"])


# --- one message per MLLP frame (HL7 v2.5 Appendix C) -----------------------------------------------

def test_two_adt_messages_in_one_frame_are_refused_whole(services):
    """Two ADT messages in one frame: before, the first was applied and answered AA, the second
    silently dropped (its PID never read). Now: AE 100 naming the second MSH; neither applied."""
    first = adt("A28", "2800175000004", f"r7-{uuid.uuid4().hex[:8]}")
    second = adt("A28", "2800175000005", f"r7-{uuid.uuid4().hex[:8]}")
    ack = well_formed(route(services, first + second))
    assert ack.first("MSA").field(1) == "AE"
    assert ack.first("MSA").field(2) == Er7Message.parse(first).header.control_id
    err = ack.first("ERR")
    assert (err.field(2), err.field(3).split("^")[0], err.field(5).split("^")[0]) == (
        "MSH^2", "100", "hl7-one-message")
    assert not known(services, "2800175000004") and not known(services, "2800175000005")


@pytest.mark.parametrize("tail", ["MSH", "BTS|1\rFTS|1"])
def test_document_message_with_another_message_or_a_batch_trailer_is_not_half_registered(services, tail):
    """An ORU followed, in the same frame, by another message or a batch trailer (2.10.3): before,
    the ORU was indexed (AA) and the rest ignored. Now: AE 100, nothing indexed."""
    doc = renamed(source(), "7104" if tail == "MSH" else "7105")
    oru = message("ORU", doc)
    extra = adt("A08", "2800175000006", "r7-x") if tail == "MSH" else tail + "\r"
    ack = well_formed(route(services, oru + extra))
    assert ack.first("MSA").field(1) == "AE"
    assert ack.first("ERR").field(3).split("^")[0] == "100"
    assert entries(services, header(doc)["unique_id"]) == []


def test_two_messages_in_one_frame_over_mllp_get_one_well_formed_ack(services):
    """The same through a real listener: one frame in, one ACK out, the connection kept."""
    server = MllpServer(("127.0.0.1", 0), services).start()
    try:
        first = adt("A28", "2800175000007", f"r7-{uuid.uuid4().hex[:8]}")
        second = adt("A28", "2800175000008", f"r7-{uuid.uuid4().hex[:8]}")
        third = adt("A28", "2800175000009", f"r7-{uuid.uuid4().hex[:8]}")
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            answers: list[bytes] = []
            decoder = MllpDecoder()
            for data in (first + second, third):
                sock.sendall(frame(data.encode()))
                wanted = len(answers) + 1
                while len(answers) < wanted:
                    chunk = sock.recv(65536)
                    assert chunk, "the listener closed the connection"
                    answers.extend(decoder.feed(chunk))
        codes = [well_formed(a.decode()).first("MSA").field(1) for a in answers]
        assert codes == ["AE", "AA"]
        assert not known(services, "2800175000007") and not known(services, "2800175000008")
        assert known(services, "2800175000009")
    finally:
        server.stop()
