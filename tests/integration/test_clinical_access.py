"""The access policy on clinical reading, against a real server WITHOUT --insecure-dev: a fact,
a text or a page element from a masked document never reaches a professional who may not
see the document, and is shown to those who may (its author, the médecin traitant)."""

from __future__ import annotations

import dataclasses

import pytest
import requests

from partage.access import saml
from partage.access.credentials import sample_actors
from partage.config import Settings
from partage.metadata.datatypes import XCN
from partage.metadata.model import Author
from partage.registry.access_state import Records
from partage.services import Services
from tests import clinical_support as C
from tests.conftest import corpus_path
from tests.support import LiveServer
from tests.xdsclient import XdsClient

pytestmark = pytest.mark.corpus

NIR = "279035121519000"
PID = C.patient_cx(NIR)
TSH = "http://loinc.org|3016-3"
GLUCOSE = "http://loinc.org|40193-5"




@pytest.fixture(scope="module")
def actors():
    out = sample_actors(PID)
    out["other"] = dataclasses.replace(out["emergency"], purpose="normal", reason="")
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory, authority, actors):
    data = tmp_path_factory.mktemp("clinical-access") / "data"
    with LiveServer(data, insecure_dev=False, mllp=False,
                    extra_args=["--trust", str(authority.directory / "ca.pem")]) as live:
        services = Services.open(Settings(data_dir=data), migrate=False)
        with services.registry.write() as conn:
            services.registry.upsert_patient(conn, [PID])
        Records(services.registry).open(PID, medecin_traitant=actors["gp"].id)
        rid = C.public_id(services, PID)
        live.patient, live.dossier = f"Patient/{rid}", f"/dossier/{rid}"
        services.close()
        doctor = actors["doctor"]
        client = XdsClient(live.base_url,   # a fresh assertion per request: assertions are single-use
                           security=lambda: saml.security_header(authority.saml_assertion(doctor)))
        author = [Author(person=XCN.parse(f"{doctor.id}^CARDIOLOGUE^Paul^^^^^^&1.2.250.1.71.4.2.1&ISO"))]
        for i, (name, masked) in enumerate([("BIO-CR-BIO_2024.01_TSH_1.xml", True),
                                            ("BIO-CR-BIO_2024.01_Glycemie_mole.xml", False)]):
            cda = C.for_patient(corpus_path("cda", "valid", name).read_bytes(), NIR, author=doctor.id)
            request = C.submission(cda, f"doc{i}", authors=author,
                                   extra_confidentiality=[C.MASQUE_PS] if masked else None)
            reply = client.provide_and_register(request, {f"doc{i}": cda})
            assert reply.status == "Success", (reply.error_codes, live.log())
        yield live


def _get(server, authority, actor, path: str, **params) -> requests.Response:
    headers = {"Accept": "application/fhir+json"}
    if actor is not None:
        headers["Authorization"] = f"Bearer {authority.jwt(actor)}"
    return requests.get(f"{server.base_url}{path}", params=params, headers=headers, timeout=30)


def _total(server, authority, actor, code: str) -> int:
    response = _get(server, authority, actor, "/fhir/Observation", patient=server.patient, code=code)
    assert response.status_code == 200, response.text
    return response.json()["total"]


def test_masked_facts_reach_only_whom_the_document_reaches(server, authority, actors):
    assert _total(server, authority, actors["other"], TSH) == 0
    assert _total(server, authority, actors["other"], GLUCOSE) == 1
    assert _total(server, authority, actors["doctor"], TSH) == 1     # the author
    assert _total(server, authority, actors["gp"], TSH) == 1         # the médecin traitant
    everything = _get(server, authority, actors["other"], "/fhir/Observation", patient=server.patient).json()
    assert {e["resource"]["code"]["coding"][0]["code"] for e in everything["entry"]} == {"40193-5"}


def test_masked_facts_are_not_in_the_summary_search_or_page(server, authority, actors):
    other = actors["other"]
    summary = _get(server, authority, other, f"/fhir/{server.patient}/$summary")
    assert summary.status_code == 200
    assert "3016-3" not in summary.text and "Thyréostimuline" not in summary.text
    search = _get(server, authority, other, "/fhir/DocumentReference", patient=server.patient,
                  _content="thyréostimuline").json()
    assert search["total"] == 0
    page = _get(server, authority, other, server.dossier)
    assert page.status_code == 200 and "Glucose" in page.text
    assert "Thyréostimuline" not in page.text and "Thyroxine" not in page.text
    assert "ne vous sont pas accessibles" in page.text        # the page says something is not shown...
    assert "TSH" not in page.text and "1 document" not in page.text   # ...never what, nor how many
    gp_page = _get(server, authority, actors["gp"], server.dossier)
    assert "Thyréostimuline" in gp_page.text
    assert "ne vous sont pas accessibles" not in gp_page.text


def test_a_masked_fact_cannot_be_read_by_id(server, authority, actors):
    bundle = _get(server, authority, actors["gp"], "/fhir/Observation", patient=server.patient, code=TSH).json()
    rid = bundle["entry"][0]["resource"]["id"]
    assert _get(server, authority, actors["gp"], f"/fhir/Observation/{rid}").status_code == 200
    assert _get(server, authority, actors["other"], f"/fhir/Observation/{rid}").status_code == 404


def test_no_credentials_no_clinical_data(server, authority):
    assert _get(server, authority, None, "/fhir/Observation", patient=server.patient).status_code == 401
    assert _get(server, authority, None, f"/fhir/{server.patient}/$summary").status_code == 401
    assert _get(server, authority, None, server.dossier).status_code == 401
