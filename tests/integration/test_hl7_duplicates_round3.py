"""Retransmissions of HL7 v2 messages (both MLLP feeds), tried as a sender whose ACKs get lost.

HL7 v2.5 chapter 2: MSH-10 identifies the message and comes back in MSA-2 (2.14.9.10, 2.14.8.2);
in original mode the sender retransmits a message whose acknowledgement did not arrive (2.10.2,
2.11.1), and the receiver's protection is to know, by sender and control id, what it has already
processed. A retransmission must not change the record a second time and gets the answer the
original got; another message reusing a control id is not answered as a duplicate
(docs/hl7-feed.md, "Retransmissions").

Real MLLP over a socket to an in-process listener, on SQLite and PostgreSQL (`database_url`)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import text as sql

from partage.access.actor import SYSTEM, Actor
from partage.config import Settings
from partage.hl7.mllp import MllpClient
from partage.hl7.server import MllpServer
from partage.metadata import kinds
from partage.metadata.datatypes import CX, HD
from partage.query import QueryService
from partage.registry import audit_log
from partage.registry import patients as registry_patients
from partage.services import Services
from tests.conftest import corpus_path
from tests.integration.test_document_feed import adt_a28, err_rules, header, message, msa, renamed

pytestmark = pytest.mark.corpus

DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"


def source() -> bytes:
    return corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_2.xml").read_bytes()


def open_services(tmp_path, database_url: str, **settings) -> Services:
    return Services.open(Settings(data_dir=tmp_path / "data", database_url=database_url, insecure_dev=True,
                                  cda_schema_dir=str(corpus_path("xsd", "cda")),
                                  cda_valuesets_dir=str(corpus_path("valuesets")), **settings))


@pytest.fixture
def feed(tmp_path, database_url):
    """Services on the backend under test and a real MLLP listener; the corpus patient known."""
    services = open_services(tmp_path, database_url)
    server = MllpServer(("127.0.0.1", 0), services).start()
    try:
        assert msa(send(server, adt_a28(header(source())["ins"])))[1] == "AA"
        yield services, server
    finally:
        server.stop()
        services.close()


def send(server: MllpServer, text: str) -> str:
    """One message on a connection of its own (the sender reconnects after a lost ACK)."""
    with MllpClient("127.0.0.1", server.port, timeout=120) as client:
        return client.send(text)


def entries(services, unique_id: str) -> list:
    actor = Actor(id="test", name="test", kind=SYSTEM, auth_method="internal")
    return QueryService(services, actor).get_objects(kinds.KIND_DOCUMENT, unique_ids=[unique_id]).objects


def audits_of(services, control_id: str) -> list[dict]:
    """The audit rows of the messages whose MSH carries this control id."""
    with services.registry.read() as conn:
        rows = audit_log.events(conn, limit=1000)
    return [r for r in rows if f"|{control_id}|" in r["request"]]


def errs(ack: str) -> list[str]:
    return [s for s in ack.split("\r") if s.startswith("ERR")]


def from_sender(text: str, application: str, facility: str) -> str:
    """The same message sent by another application (MSH-3, MSH-4)."""
    msh, rest = text.split("\r", 1)
    fields = msh.split("|")
    fields[2], fields[3] = application, facility
    return "|".join(fields) + "\r" + rest


# --- the document feed ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ORU", "MDM"])
def test_deletion_resent_after_a_lost_ack_gets_the_original_ack_and_changes_nothing(feed, kind):
    """T04 / ORU-D processed, ACK lost, the sender sends it again (same MSH-10, same content): the
    answer is the original's (AA, MSA-2 the MSH-10, same MSA-3), not AE 900; the document stays
    deleted once; the retransmission is audited as such and the deletion audited once."""
    services, server = feed
    doc = renamed(source(), "931" if kind == "ORU" else "932")
    uid = header(doc)["unique_id"]
    assert msa(send(server, message(kind, doc, control=f"ini-{kind}")))[1] == "AA"
    deletion = message(kind, doc, status="D", control=f"del-{kind}")
    first = send(server, deletion)
    assert msa(first)[1:3] == ["AA", f"del-{kind}"], first
    again = send(server, deletion)
    assert msa(again)[1:4] == msa(first)[1:4], again
    assert not errs(again), again
    [entry] = entries(services, uid)
    assert entry.availability_status.value == DELETED
    rows = audits_of(services, f"del-{kind}")
    assert len(rows) == 2, rows
    assert sum(uid in json.loads(r["objects"]) for r in rows) == 1, rows   # the effect, audited once
    assert "retransmission" in rows[0]["detail"], rows[0]                  # newest first


def test_copies_of_a_deletion_arriving_together_are_processed_once(feed):
    """The sender timed out and opened new connections while the first copy was processed: one
    deletion, every copy answered the same AA."""
    services, server = feed
    doc = renamed(source(), "933")
    assert msa(send(server, message("ORU", doc)))[1] == "AA"
    deletion = message("ORU", doc, status="D", control="del-race")
    acks: list[str] = []
    threads = [threading.Thread(target=lambda: acks.append(send(server, deletion))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [msa(a)[1:4] for a in acks] == [msa(acks[0])[1:4]] * 3 and msa(acks[0])[1] == "AA", acks
    assert entries(services, header(doc)["unique_id"])[0].availability_status.value == DELETED


def test_new_document_resent_is_indexed_once_with_the_same_answer(feed):
    services, server = feed
    doc = renamed(source(), "934")
    text = message("MDM", doc, control="t02-r3")
    first = send(server, text)
    assert msa(first)[1] == "AA", first
    again = send(server, text)
    assert msa(again)[1:4] == msa(first)[1:4], again
    assert len(entries(services, header(doc)["unique_id"])) == 1


def test_retransmission_with_a_new_msh7_is_still_a_retransmission(feed):
    """Some engines stamp MSH-7 anew when they resend: the content is the same message."""
    services, server = feed
    doc = renamed(source(), "935")
    assert msa(send(server, message("ORU", doc)))[1] == "AA"
    deletion = message("ORU", doc, status="D", control="del-msh7")
    assert msa(send(server, deletion))[1] == "AA"
    again = send(server, deletion.replace("|202106060931||ORU", "|202106061015||ORU", 1))
    assert msa(again)[1] == "AA" and not errs(again), again


def test_same_control_id_from_two_senders_is_two_messages(feed):
    """MSH-10 is unique per sending system: two applications may use the same id."""
    services, server = feed
    a, b = renamed(source(), "936"), renamed(source(), "937")
    first = send(server, message("ORU", a, control="shared-1"))
    second = send(server, from_sender(message("ORU", b, control="shared-1"), "SIL-Z", "labo-z"))
    assert msa(first)[1:3] == ["AA", "shared-1"] and msa(second)[1:3] == ["AA", "shared-1"], (first, second)
    assert len(entries(services, header(a)["unique_id"])) == 1
    assert len(entries(services, header(b)["unique_id"])) == 1


def test_a_different_message_reusing_a_control_id_is_refused(feed):
    """Same sender, same MSH-10, other content: not a retransmission (its answer would be about
    another message) and not silently processed either: AE naming MSH-10, nothing indexed."""
    services, server = feed
    a, b = renamed(source(), "938"), renamed(source(), "939")
    assert msa(send(server, message("ORU", a, control="reused-1")))[1] == "AA"
    ack = send(server, message("ORU", b, control="reused-1"))
    assert msa(ack)[1:3] == ["AE", "reused-1"], ack
    assert err_rules(ack) == ["hl7-control-id-reused"] and "MSH^1^10" in errs(ack)[0], ack
    assert not entries(services, header(b)["unique_id"])


# --- the patient feed -----------------------------------------------------------------------------

INS_ROOT = "1.2.250.1.213.1.4.8"


def adt(trigger: str, nir: str, name: str, control: str, *, merged: str = "") -> str:
    segments = [f"MSH|^~\\&|DPI|HOPITAL|PARTAGE|PARTAGE|20240101120000||ADT^{trigger}^ADT_A01|{control}|P|2.5",
                f"EVN|{trigger}|20240101120000",
                f"PID|||{nir}^^^ASIP-SANTE-INS-NIR&{INS_ROOT}&ISO^INS||{name}^JEANNE||19700101|F",
                "PV1|1|O"]
    if merged:
        segments.insert(3, f"MRG|{merged}^^^ASIP-SANTE-INS-NIR&{INS_ROOT}&ISO^INS")
    return "\r".join(segments) + "\r"


def name_of(services, nir: str) -> str:
    with services.registry.read() as conn:
        pk = services.registry.patient_pk(conn, CX(nir, HD.iso(INS_ROOT)))
        return registry_patients.record(conn, pk).demographics["name"].partition("^")[0]


def test_a08_resent_late_does_not_undo_a_later_update(feed):
    """A08 #1, ACK lost; A08 #2; the sender's queue resends #1: the record keeps #2's name."""
    services, server = feed
    nir = "270017512345601"
    assert msa(send(server, adt("A28", nir, "AVANT", "a28-r3")))[1] == "AA"
    first = send(server, adt("A08", nir, "PREMIER", "a08-r3-1"))
    assert msa(send(server, adt("A08", nir, "SECOND", "a08-r3-2")))[1] == "AA"
    again = send(server, adt("A08", nir, "PREMIER", "a08-r3-1"))
    assert msa(again)[1:4] == msa(first)[1:4] and msa(again)[1] == "AA", again
    assert name_of(services, nir) == "SECOND"


def test_a40_resent_makes_no_second_change(feed):
    services, server = feed
    keep, gone = "270017512345602", "270017512345603"
    assert msa(send(server, adt("A28", keep, "GARDE", "a28-r3-k")))[1] == "AA"
    assert msa(send(server, adt("A28", gone, "PARTI", "a28-r3-g")))[1] == "AA"
    merge = adt("A40", keep, "FUSION", "a40-r3", merged=gone)
    first = send(server, merge)
    assert msa(first)[1] == "AA", first
    assert msa(send(server, adt("A08", keep, "APRES", "a08-r3-3")))[1] == "AA"
    again = send(server, merge)
    assert msa(again)[1:4] == msa(first)[1:4], again
    assert name_of(services, keep) == "APRES"
    assert len(audits_of(services, "a40-r3")) == 2


# --- the memory's bounds ----------------------------------------------------------------------------

def test_the_memory_is_bounded_by_count(tmp_path, database_url):
    """PARTAGE_HL7_ANSWERS_MAX_MESSAGES: past it the oldest answers are forgotten (and a message
    sent again after that is processed again)."""
    services = open_services(tmp_path, database_url, hl7_answers_max_messages=2)
    server = MllpServer(("127.0.0.1", 0), services).start()
    try:
        nir = "270017512345604"
        for n in range(1, 4):
            assert msa(send(server, adt("A28" if n == 1 else "A08", nir, f"NOM{n}", f"bound-{n}")))[1] == "AA"
        with services.registry.read() as conn:
            assert conn.execute(sql("SELECT count(*) FROM hl7_answers")).scalar() == 2
        assert msa(send(server, adt("A08", nir, "NOM3", "bound-3")))[1] == "AA"   # remembered
        assert msa(send(server, adt("A28", nir, "NOM1", "bound-1")))[1] == "AA"   # forgotten: applied again
        assert name_of(services, nir) == "NOM1"
    finally:
        server.stop()
        services.close()


def test_the_memory_is_bounded_by_age(tmp_path, database_url):
    """PARTAGE_HL7_ANSWERS_MAX_AGE (seconds): an answer older than that is forgotten."""
    services = open_services(tmp_path, database_url, hl7_answers_max_age=1)
    server = MllpServer(("127.0.0.1", 0), services).start()
    try:
        nir = "270017512345605"
        assert msa(send(server, adt("A28", nir, "VIEUX", "age-1")))[1] == "AA"
        time.sleep(2.2)
        assert msa(send(server, adt("A08", nir, "NEUF", "age-2")))[1] == "AA"
        with services.registry.read() as conn:
            assert conn.execute(sql("SELECT count(*) FROM hl7_answers")).scalar() == 1
    finally:
        server.stop()
        services.close()
