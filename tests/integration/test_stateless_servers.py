"""Stateless servers: two `partage serve` processes (two "hosts", each with its own data
directory) share nothing but the PostgreSQL registry and the S3 store (SeaweedFS), and one
client talks to both alternately, with authentication on. What one host writes the other
serves; a single-use credential spent on one is refused by the other (the replay cache is
in the database); the PDF text queue is drained by whichever host claims each job."""

from __future__ import annotations

import contextlib
import time

import pytest
import requests
from lxml import etree

from partage.access import saml
from partage.access.credentials import sample_actors
from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID, Settings
from partage.metadata.datatypes import XCN
from partage.metadata.model import Code
from partage.registry import text_jobs
from partage.registry.access_state import Records
from partage.services import Services
from tests import clinical_support as C
from tests import factories as F
from tests.conftest import require_postgres
from tests.s3_support import blob_store_environment
from tests.support import LiveServer, postgres_database
from tests.xdsclient import XdsClient, objects_of

APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, authority):
    require_postgres()
    root = tmp_path_factory.mktemp("hosts")
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database("partage_stateless"))
        env = blob_store_environment(stack, root / "s3", "stateless")
        servers = [stack.enter_context(LiveServer(root / name, database_url=url, insecure_dev=False, mllp=False,
                                                  env=env, extra_args=["--trust", authority.ca_file,
                                                                       "--one-time-credentials", "all"]))
                   for name in ("host-a", "host-b")]
        services = Services.open(Settings(data_dir=root / "admin", database_url=url), migrate=False)
        stack.callback(services.close)
        yield servers, services, root


def _author(professional_id: str) -> XCN:
    return XCN.parse(f"{professional_id}^AUTEUR^Test^^^Dr^^^&1.2.250.1.71.4.2.1&ISO")


def _soap(server, authority, actor) -> XdsClient:
    return XdsClient(server.base_url, security=lambda: saml.security_header(authority.saml_assertion(actor)))


def test_what_one_host_files_the_other_serves(hosts, authority):
    (a, b), services, root = hosts
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    Records(services.registry).open(pid, medecin_traitant="810001234567")
    doctor = sample_actors(pid)["doctor"]
    doc = F.document(pid, "doc1")
    doc.authors[0].person = _author(doctor.id)
    request = F.submission(pid, [doc], contents=False)
    body = b"<doc>filed on host A, served by host B</doc>"
    reply = _soap(a, authority, doctor).provide_and_register(request, {doc.entry_uuid: body})
    assert reply.status == "Success", reply.error_codes

    found = _soap(b, authority, doctor).stored_query(
        "FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{pid}'"], "$XDSDocumentEntryStatus": [APPROVED]})
    assert [o.unique_id for o in objects_of(found)] == [doc.unique_id]
    retrieved, documents = _soap(b, authority, doctor).retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [doc.unique_id])
    assert retrieved.status == "Success" and documents[doc.unique_id].read() == body
    for host in ("host-a", "host-b"):   # neither host kept the document
        assert not list((root / host).glob("blobs/??/??/*"))


def test_a_credential_spent_on_one_host_is_refused_by_the_other(hosts, authority):
    (a, b), services, _root = hosts
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    Records(services.registry).open(pid, medecin_traitant="810001234567")
    gp = sample_actors(pid)["gp"]
    header = saml.security_header(authority.saml_assertion(gp))
    params = {"$XDSDocumentEntryPatientId": [f"'{pid}'"], "$XDSDocumentEntryStatus": [APPROVED]}
    assert XdsClient(a.base_url, security=header).stored_query("FindDocuments", params).status == "Success"
    replayed = XdsClient(b.base_url, security=header).stored_query("FindDocuments", params)
    text = etree.tostring(replayed.body, encoding="unicode")
    assert "already used" in text, text[:500]

    token = authority.jwt(gp)
    search = f"/fhir/DocumentReference?status=current&patient.identifier=urn:oid:{pid.assigning_authority.universal_id}|{pid.id}"
    first = requests.get(b.base_url + search, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert first.status_code == 200, first.text[:500]
    again = requests.get(a.base_url + search, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert again.status_code == 401 and "already used" in again.text


def test_the_pdf_text_queue_is_shared(hosts, authority):
    (a, b), services, _root = hosts
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    Records(services.registry).open(pid, medecin_traitant="810001234567")
    doctor = sample_actors(pid)["doctor"]
    for i, host in enumerate((a, b, a, b)):
        data = C.make_pdf(f"Bilan numero {i} creatinine")
        doc = F.document(pid, f"pdf{i}", mime_type="application/pdf", title="Compte rendu PDF",
                         format_code=Code("urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3"))
        doc.authors[0].person = _author(doctor.id)
        reply = _soap(host, authority, doctor).provide_and_register(F.submission(pid, [doc], contents=False),
                                                                    {doc.entry_uuid: data})
        assert reply.status == "Success", reply.error_codes
    deadline = time.monotonic() + 60
    while text_jobs.backlog(services.registry, max_attempts=5)["waiting"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert text_jobs.backlog(services.registry, max_attempts=5) == {"waiting": 0, "failed": 0}
