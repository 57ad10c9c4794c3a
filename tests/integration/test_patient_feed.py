"""ITI-8 over real MLLP: the feed creates, updates and merges patients; XDS follows."""

from __future__ import annotations

import uuid

import pytest

from partage.hl7.mllp import MllpClient
from tests import factories as F
from tests.support import LiveServer
from tests.xdsclient import XdsClient, objects_of

APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"


def adt(trigger: str, pid: str, *, mrg: str = "", control: str = "") -> str:
    """An ADT message; its MSH-10 unique unless given (the feed answers a message sent again with
    the same MSH-10 as the first time, docs/hl7-feed.md "Retransmissions")."""
    control = control or uuid.uuid4().hex[:16]
    segments = [
        f"MSH|^~\\&|DPI|HOPITAL|PARTAGE|PARTAGE|20240101120000||ADT^{trigger}^ADT_{trigger}|{control}|P|2.3.1",
        f"EVN|{trigger}|20240101120000",
        f"PID|||{pid}||DUPONT^JEANNE||19700101|F",
        "PV1||O",
    ]
    if mrg:
        segments.insert(3, f"MRG|{mrg}")
    return "\r".join(segments) + "\r"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("pif") / "data") as live:
        yield live


def _find(server, pid):
    return objects_of(XdsClient(server.base_url).stored_query(
        "FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{pid}'"], "$XDSDocumentEntryStatus": [APPROVED]}))


def test_feed_then_submit(server):
    pid = F.patient_id()
    client = XdsClient(server.base_url)
    assert client.provide_and_register(F.submission(pid, contents=False), {"doc1": b"x"}).error_codes == \
        ["XDSUnknownPatientId"]
    with MllpClient("127.0.0.1", server.mllp_port) as mllp:
        ack = mllp.send(adt("A01", pid, control="c1"))
    assert "MSA|AA|c1" in ack
    reply = client.provide_and_register(F.submission(pid, contents=False), {"doc1": b"x"})
    assert reply.status == "Success", reply.error_codes
    assert len(_find(server, pid)) == 1


def test_merge_moves_documents(server):
    kept, merged = F.patient_id(), F.patient_id()
    client = XdsClient(server.base_url)
    with MllpClient("127.0.0.1", server.mllp_port) as mllp:
        assert "MSA|AA" in mllp.send(adt("A01", kept))
        assert "MSA|AA" in mllp.send(adt("A04", merged))
        assert client.provide_and_register(F.submission(merged, contents=False), {"doc1": b"y"}).status == "Success"
        assert "MSA|AA" in mllp.send(adt("A40", kept, mrg=merged))
    assert len(_find(server, kept)) == 1


@pytest.mark.parametrize("message, code", [
    # ORU and MDM go to the document feed (tests/integration/test_document_feed.py).
    ("MSH|^~\\&|A|B|C|D|20240101||SIU^S12|9|P|2.5\rPID|||1^^^&1.2.3&ISO\r", "AR"),
    ("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|9|P|2.3.1\rEVN|A01\rPID|||nobody\r", "AE"),
    ("MSH|^~\\&|A|B|C|D|20240101||ADT^A40|9|P|2.3.1\rEVN|A40\rPID|||1^^^&1.2.3&ISO\r", "AE"),
])
def test_refused_messages_are_acknowledged_with_the_reason(server, message, code):
    with MllpClient("127.0.0.1", server.mllp_port) as mllp:
        ack = mllp.send(message)
    assert f"MSA|{code}|9|" in ack
    assert "ERR|" in ack
