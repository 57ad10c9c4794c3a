"""Fail closed: when the audit store refuses writes, or the database goes away, every door
answers 503 with Retry-After in its own shape (HL7: AE), sends no patient data, writes nothing;
when the dependency is back, the same requests succeed, and nothing was half-written."""

from __future__ import annotations

import contextlib
import sqlite3

import psycopg
import pytest
import requests

from partage.hl7.mllp import MllpClient
from tests import factories as F
from tests.conftest import require_postgres
from tests.integration.test_patient_feed import adt
from tests.support import PG_ADMIN_URL, LiveServer, postgres_database
from tests.xdsclient import XdsClient, objects_of

APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
NIR = "urn:oid:1.2.250.1.213.1.4.10"
ENV = {"PARTAGE_TEXT_INDEXER": "0"}


def _record(server) -> tuple[str, str, str]:
    """A patient with one document; returns (patient id, DocumentReference id, Binary URL)."""
    pid = F.patient_id()
    with MllpClient("127.0.0.1", server.mllp_port) as mllp:
        assert "MSA|AA" in mllp.send(adt("A01", pid))
    reply = XdsClient(server.base_url).provide_and_register(F.submission(pid, contents=False), {"doc1": b"hello"})
    assert reply.status == "Success", reply.error_codes
    found = requests.get(f"{server.base_url}/fhir/DocumentReference", timeout=10,
                         params={"patient.identifier": f"{NIR}|{pid.id}", "status": "current"}).json()
    resource = found["entry"][0]["resource"]
    binary = resource["content"][0]["attachment"]["url"]
    assert requests.get(binary, timeout=10).content == b"hello"
    return pid, resource["id"], binary


def _find(server, pid) -> list:
    return objects_of(XdsClient(server.base_url).stored_query(
        "FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{pid}'"], "$XDSDocumentEntryStatus": [APPROVED]}))


def _assert_503(response: requests.Response, shape: str) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert int(response.headers["Retry-After"]) > 0
    if shape == "fhir":
        assert response.headers["Content-Type"].startswith("application/fhir+json")
        assert response.json()["resourceType"] == "OperationOutcome"
    else:
        assert b"soap:Fault" in response.content and b"XDSRegistryBusy" in response.content
    assert b"hello" not in response.content


def _patient_count(server, value: str) -> int:
    bundle = requests.get(f"{server.base_url}/fhir/Patient", params={"identifier": f"{NIR}|{value}"},
                          timeout=10).json()
    return len(bundle.get("entry", []))


def _every_door_refuses(server, pid: str, ref: str, binary: str, *, audit_down: bool) -> str:
    """Reads and writes on every door while a dependency is down; returns a patient id that must
    not exist afterwards."""
    value = pid.id
    _assert_503(requests.get(f"{server.base_url}/fhir/DocumentReference", timeout=10,
                             params={"patient.identifier": f"{NIR}|{value}", "status": "current"}), "fhir")
    doc = requests.get(f"{server.base_url}/fhir/DocumentReference/{ref}", timeout=10)
    if doc.status_code != 503:   # with the database down even the read of its id fails
        pytest.fail(f"DocumentReference read answered {doc.status_code}")
    _assert_503(requests.get(binary, timeout=10), "fhir")
    client = XdsClient(server.base_url)
    with client.session as session:
        for body in (open("examples/iti18-find-documents.xml", "rb").read(),):
            _assert_503(session.post(f"{server.base_url}/xds/registry", data=body,
                                     headers={"Content-Type": "application/soap+xml"}, timeout=10), "soap")
    new_pid = F.patient_id()
    new_value = new_pid.id
    r = requests.post(f"{server.base_url}/fhir/Patient", timeout=10, json={
        "resourceType": "Patient", "identifier": [{"system": NIR, "value": new_value}],
        "name": [{"family": "DURAND"}], "birthDate": "1980-01-01"})
    _assert_503(r, "fhir")
    r = session_post_iti41(server, new_pid)
    _assert_503(r, "soap")
    with MllpClient("127.0.0.1", server.mllp_port, timeout=30) as mllp:
        ack = mllp.send(adt("A01", new_pid))
    assert "MSA|AE" in ack and ("audit" in ack if audit_down else ("database" in ack or "audit" in ack)), ack
    return new_pid


def session_post_iti41(server, pid: str) -> requests.Response:
    body = open("examples/iti41-provide.xml", "rb").read().replace(
        b"270017512345615^^^&amp;1.2.250.1.213.1.4.10&amp;ISO", str(pid).replace("&", "&amp;").encode())
    return requests.post(f"{server.base_url}/xds/repository", data=body, timeout=30,
                         headers={"Content-Type": "application/soap+xml"})


def test_audit_store_refusing_writes_closes_every_door(tmp_path):
    with LiveServer(tmp_path / "data", env=ENV) as server:
        pid, ref, binary = _record(server)
        db = sqlite3.connect(tmp_path / "data" / "registry.sqlite3")
        db.execute("CREATE TRIGGER audit_down BEFORE INSERT ON audit_events "
                   "BEGIN SELECT RAISE(ABORT, 'audit store down'); END")
        db.commit()
        try:
            new_pid = _every_door_refuses(server, pid, ref, binary, audit_down=True)
        finally:
            db.execute("DROP TRIGGER audit_down")
            db.commit()
            db.close()
        # Back: the same requests succeed, and nothing of the refused writes exists.
        assert _find(server, pid)
        assert _patient_count(server, new_pid.id) == 0
        assert not _find(server, new_pid)
        assert "Traceback" not in server.log()


def test_database_going_away_is_503_then_recovers(tmp_path):
    require_postgres()
    with postgres_database("doors_outage") as url:
        name = url.rsplit("/", 1)[1]
        with LiveServer(tmp_path / "data", database_url=url, env=ENV) as server:
            pid, ref, binary = _record(server)
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
                try:
                    health = requests.get(f"{server.base_url}/healthz", timeout=10)
                    assert health.status_code == 503 and health.json()["status"] == "degraded"
                    new_pid = _every_door_refuses(server, pid, ref, binary, audit_down=False)
                finally:
                    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            assert requests.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
            assert _find(server, pid)
            assert _patient_count(server, new_pid.id) == 0
            with contextlib.suppress(Exception):
                assert "Traceback" not in server.log()
