"""Many submitters at once against the real server: no lock errors, exactly one winner
per uniqueId, nothing half-registered."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from partage.hl7.mllp import MllpClient
from tests import factories as F
from tests.integration.test_patient_feed import adt
from tests.support import LiveServer
from tests.xdsclient import XdsClient, objects_of


@pytest.fixture
def server(tmp_path, database_url):
    with LiveServer(tmp_path / "data", database_url=database_url, workers=2) as live:
        yield live


def test_same_unique_id_submitted_concurrently(server):
    pid = F.patient_id()
    with MllpClient("127.0.0.1", server.mllp_port) as mllp:
        assert "MSA|AA" in mllp.send(adt("A01", pid))
    shared_uid = F.oid()

    def submit(n: int):
        doc = F.document(pid, unique_id=shared_uid)
        return XdsClient(server.base_url).provide_and_register(
            F.submission(pid, [doc], contents=False), {"doc1": f"content {n}".encode()})

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(submit, range(16)))
    successes = [r for r in replies if r.status == "Success"]
    failures = [r for r in replies if r.status != "Success"]
    assert len(successes) == 1
    for reply in failures:
        assert "XDSDuplicateUniqueIdInRegistry" in reply.error_codes, reply.error_codes
    found = objects_of(XdsClient(server.base_url).stored_query(
        "GetDocuments", {"$XDSDocumentEntryUniqueId": [f"('{shared_uid}')"]}))
    assert len(found) == 1


def test_parallel_submissions_for_many_patients(server):
    patients = [F.patient_id() for _ in range(6)]
    with MllpClient("127.0.0.1", server.mllp_port) as mllp:
        for pid in patients:
            assert "MSA|AA" in mllp.send(adt("A01", pid))

    def submit(i: int):
        pid = patients[i % len(patients)]
        return XdsClient(server.base_url).provide_and_register(
            F.submission(pid, [F.document(pid, "d1"), F.document(pid, "d2")], contents=False),
            {"d1": f"a{i}".encode(), "d2": f"b{i}".encode()})

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(submit, range(24)))
    assert [r.status for r in replies] == ["Success"] * 24, [r.error_codes for r in replies]
    total = 0
    for pid in patients:
        total += len(objects_of(XdsClient(server.base_url).stored_query(
            "FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{pid}'"],
                              "$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]})))
    assert total == 48
