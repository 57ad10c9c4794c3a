"""ITI-41/42/18/43 over real SOAP/MTOM against a running `partage serve`."""

from __future__ import annotations

import hashlib

import pytest

from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID
from partage.metadata.model import Association, AssociationType, Code
from tests import factories as F
from tests.support import served_with_services
from tests.xdsclient import XdsClient, objects_of

APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served_with_services(tmp_path_factory.mktemp("xds") / "data", mllp=False) as live:
        yield live


def _patient(server) -> str:
    pid = F.patient_id()
    with server.services.registry.write() as conn:
        server.services.registry.upsert_patient(conn, [pid])
    return pid


@pytest.mark.parametrize("mtom", [True, False])
def test_provide_query_retrieve(server, mtom):
    client = XdsClient(server.base_url, mtom=mtom)
    pid = _patient(server)
    request = F.submission(pid, contents=False)
    payload = b"<ClinicalDocument>" + b"x" * 5000 + b"</ClinicalDocument>"
    reply = client.provide_and_register(request, {"doc1": payload})
    assert reply.status == "Success", reply.error_codes

    found = client.stored_query("FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{pid}'"],
                                                  "$XDSDocumentEntryStatus": [APPROVED]})
    assert found.status == "Success"
    docs = objects_of(found)
    assert [d.unique_id for d in docs] == [request.documents[0].unique_id]
    assert docs[0].hash == hashlib.sha1(payload).hexdigest()
    assert docs[0].size == len(payload)

    refs = client.stored_query("FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{pid}'"],
                                                 "$XDSDocumentEntryStatus": [APPROVED]}, "ObjectRef")
    assert [o.get("id") for o in refs.body.iter("{*}ObjectRef")] == [docs[0].entry_uuid]

    retrieved, documents = client.retrieve(DEFAULT_REPOSITORY_UNIQUE_ID,
                                           [docs[0].unique_id, "1.2.3.404"])
    assert retrieved.status == "PartialSuccess"
    assert retrieved.error_codes == ["XDSDocumentUniqueIdError"]
    assert documents[docs[0].unique_id].read() == payload


def test_failed_submission_leaves_nothing(server):
    client = XdsClient(server.base_url)
    pid = _patient(server)
    good = F.document(pid, "good")
    bad = F.document(pid, "bad", class_code=Code("77", "1.2.250.1.213.1.1.4.1"))   # outside the domain
    reply = client.provide_and_register(F.submission(pid, [good, bad], contents=False),
                                        {"good": b"a", "bad": b"b"})
    assert reply.status == "Failure"
    assert "XDSRepositoryMetadataError" in reply.error_codes
    found = client.stored_query("GetDocuments", {"$XDSDocumentEntryUniqueId": [f"('{good.unique_id}')"]})
    assert objects_of(found) == []


def test_unknown_patient_and_missing_document(server):
    client = XdsClient(server.base_url)
    pid = F.patient_id()
    reply = client.provide_and_register(F.submission(pid, contents=False), {"doc1": b"x"})
    assert reply.error_codes == ["XDSUnknownPatientId"]
    pid = _patient(server)
    reply = client.provide_and_register(F.submission(pid, contents=False), {})
    assert reply.error_codes == ["XDSMissingDocument"]


def test_register_and_related_documents(server):
    client = XdsClient(server.base_url)
    pid = _patient(server)
    first = F.document(pid, hash="a" * 40, size=10, repository_unique_id="1.2.3.4.5")
    assert client.register(F.submission(pid, [first], contents=False)).status == "Success"
    uuid1 = objects_of(client.stored_query("GetDocuments", {
        "$XDSDocumentEntryUniqueId": [f"('{first.unique_id}')"]}))[0].entry_uuid
    second = F.document(pid, "doc2", hash="b" * 40, size=11, repository_unique_id="1.2.3.4.5")
    apnd = Association(entry_uuid="ap", association_type=AssociationType.APND, source_uuid="doc2",
                       target_uuid=uuid1)
    assert client.register(F.submission(pid, [second], contents=False,
                                        extra_associations=[apnd])).status == "Success"
    related = client.stored_query("GetRelatedDocuments", {
        "$XDSDocumentEntryEntryUUID": [f"'{uuid1}'"],
        "$AssociationTypes": [f"('{AssociationType.APND}')"]})
    kinds = sorted(o.kind for o in objects_of(related))
    assert kinds == ["Association", "DocumentEntry", "DocumentEntry"]


def test_unknown_action_and_garbage(server):
    import requests
    response = requests.post(f"{server.base_url}/xds/registry", data=b"<not-soap/>",
                             headers={"Content-Type": "application/soap+xml"}, timeout=10)
    assert response.status_code == 400 and b"Fault" in response.content
    response = requests.post(f"{server.base_url}/xds/registry",
                             data=b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>',
                             headers={"Content-Type": "application/soap+xml"}, timeout=10)
    assert response.status_code == 400 and b"Traceback" not in response.content
