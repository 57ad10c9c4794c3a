"""MHD facade (ITI-65/66/67/68), fourth review round, as an outside judge reads IHE MHD 4.2 and
FHIR R4 REST: what the earlier rounds (test_mhd*.py, test_fhir_rest*.py, test_fhir_adversarial.py,
test_fhir_wire_errors.py, test_fhir_search_gate.py) did not try. In-process (the Flask app over a
temporary data directory, SQLite and PostgreSQL, `--insecure-dev`: every request is the development actor's, as
test_fhir_rest_round2.py runs).
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import pytest

from partage.config import Settings
from partage.metadata.datatypes import CX
from partage.server.app import create_app
from partage.services import Services
from tests import factories as F
from tests.integration.test_mhd import NIR, provide_bundle, text_doc

JSON = {"Accept": "application/fhir+json"}
OTHER_AUTHORITY = "1.2.250.1.999.77"


@pytest.fixture(scope="module")
def app_services(tmp_path_factory, module_database_url):
    """On the embedded SQLite default and on PostgreSQL (a database of its own)."""
    services = Services.open(Settings(data_dir=tmp_path_factory.mktemp("mhd4") / "data", insecure_dev=True,
                                      database_url=module_database_url))
    yield services
    services.close()


@pytest.fixture(scope="module")
def client(app_services):
    return create_app(services=app_services).test_client()


def outcome(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"], body
    return body


def new_patient(client, system: str = NIR, value: str = "") -> tuple[str, CX, str]:
    """(FHIR id, XDS patient id, identifier value) of a Patient created by POST."""
    value = value or F.patient_id(uuid.uuid4().int % 10**9).id
    r = client.post("/fhir/Patient", headers=JSON, json={
        "resourceType": "Patient", "identifier": [{"system": system, "value": value}],
        "name": [{"family": "DUPONT", "given": ["Jeanne"]}], "birthDate": "1980-02-03"})
    assert r.status_code == 201, r.get_data(as_text=True)
    authority = system.removeprefix("urn:oid:")
    return r.get_json()["id"], CX.parse(f"{value}^^^&{authority}&ISO"), value


def bundle_for(pid: CX, system: str, value: str, payload: bytes = b"hello") -> dict:
    """An ITI-65 Provide Document Bundle of one text document, its subject named by identifier."""
    bundle = provide_bundle(text_doc(pid, "d1"), payload, value)
    for entry in bundle["entry"][:2]:
        entry["resource"]["subject"] = {"identifier": {"system": system, "value": value}}
    return bundle


def provide(client, pid: CX, system: str, value: str, payload: bytes = b"hello") -> dict:
    r = client.post("/fhir", json=bundle_for(pid, system, value, payload), headers=JSON)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    return r.get_json()


def matches(response) -> list[dict]:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return [e["resource"] for e in response.get_json().get("entry", []) if e["search"]["mode"] == "match"]


# --- ITI-67 / ITI-66: patient.identifier is a token like any other ---------------------------------
def test_patient_identifier_reads_the_token_escapes(client):
    """FHIR R4 search.html#escaping: in a token, `\\,` is a comma of the value (not an OR), and
    MHD 4.2 ITI-67 / ITI-66 make `patient.identifier` a token (ITI TF-2x Z.2). The identifier
    `AB,CD` is searched `system|AB\\,CD`. The Patient search read it so and found the Patient;
    `patient.identifier` split the token on its last `|` and kept the backslash, so it looked for
    the value `AB\\,CD` and answered an empty Bundle for a patient who has a document."""
    system = f"urn:oid:{OTHER_AUTHORITY}"
    rid, pid, value = new_patient(client, system, f"AB,{uuid.uuid4().hex[:8]}")
    provide(client, pid, system, value)
    escaped = quote(f"{system}|{value.replace(',', chr(92) + ',')}")
    found = client.get(f"/fhir/Patient?identifier={escaped}", headers=JSON).get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == [rid]      # the same token, read as a token
    assert len(matches(client.get(f"/fhir/DocumentReference?patient={rid}&status=current", headers=JSON))) == 1
    assert len(matches(client.get(f"/fhir/DocumentReference?patient.identifier={escaped}&status=current",
                                  headers=JSON))) == 1
    assert len(matches(client.get(f"/fhir/List?patient.identifier={escaped}&status=current&code=submissionset",
                                  headers=JSON))) == 1


def test_patient_identifier_value_alone_means_any_system(client):
    """FHIR R4 search.html#token: `[parameter]=[code]` matches the value "irrespective of the value
    of the system property", and search.html#chaining: `patient.identifier=X` names the patients
    `Patient?identifier=X` finds. `Patient?identifier=<NIR>` found the patient, but ITI-67 and
    ITI-66 with `patient.identifier=<NIR>` answered an empty Bundle (200, total 0) for a patient
    who has a document: a Document Consumer is told there is nothing. A value two patients hold
    under two authorities names no single patient (400 XDSResultNotSinglePatient, as a comma list)."""
    rid, pid, value = new_patient(client)
    provide(client, pid, NIR, value)
    found = client.get(f"/fhir/Patient?identifier={value}", headers=JSON).get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == [rid]
    assert len(matches(client.get(f"/fhir/DocumentReference?patient.identifier={value}&status=current",
                                  headers=JSON))) == 1
    assert len(matches(client.get(f"/fhir/List?patient.identifier={value}&status=current",
                                  headers=JSON))) == 1
    # `|value` is "no system": every patient identifier here has one
    assert matches(client.get(f"/fhir/DocumentReference?patient.identifier=%7C{value}&status=current",
                              headers=JSON)) == []
    new_patient(client, f"urn:oid:{OTHER_AUTHORITY}", value)   # the same value, another authority
    r = client.get(f"/fhir/DocumentReference?patient.identifier={value}&status=current", headers=JSON)
    issue = outcome(r, 400)["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "XDSResultNotSinglePatient", issue


def test_patient_reference_takes_its_type_modifier(client):
    """FHIR R4 search.html#reference: a reference parameter takes `:[type]` (`subject:Patient=23`);
    MHD 4.2 ITI-67 `patient` is a Reference(Patient). `patient:Patient=<id>` was read as an unknown
    modifier: ignored (lenient), then "patient or patient.identifier is required" (400), or
    refused outright under `Prefer: handling=strict`."""
    rid, pid, value = new_patient(client)
    provide(client, pid, NIR, value)
    for headers in (JSON, {**JSON, "Prefer": "handling=strict"}):
        got = matches(client.get(f"/fhir/DocumentReference?patient:Patient={rid}&status=current", headers=headers))
        assert len(got) == 1, headers
        assert len(matches(client.get(f"/fhir/List?patient:Patient=Patient/{rid}&status=current",
                                      headers=headers))) == 1


# --- ITI-68: the Accept header of a Retrieve Document ----------------------------------------------
def _binary_url(client) -> str:
    _rid, pid, value = new_patient(client)
    answer = provide(client, pid, NIR, value, b"le texte")
    return answer["entry"][2]["response"]["location"]


@pytest.mark.parametrize("accept", ["application/pdf", "image/*", "application/pdf, text/html;q=0.5",
                                    "text/plain;q=0, application/pdf"])
def test_iti68_accept_that_takes_neither_the_document_nor_a_binary_is_406(client, accept):
    """MHD 4.2 ITI-68 2:3.68.4.1.3: the Document Responder provides the document in the requested
    MIME type or replies with an error status, Table 3.68.4.2.2-1: "unable to format document in
    content types listed in the 'Accept' field: 406 Not Acceptable" (it is not required to
    transform). A text/plain document asked as application/pdf was answered 200 text/plain."""
    url = _binary_url(client)
    r = client.get(url, headers={"Accept": accept})
    assert r.status_code == 406, (accept, r.status_code, r.headers.get("Content-Type"))
    body = json.loads(r.get_data())
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "not-supported"


def test_iti68_accept_quality_chooses_the_bytes_or_the_binary_resource(client):
    """RFC 9110 12.5.1 (which ITI-68 2:3.68.4.1.2 defers to): the representation of highest quality
    wins. `Accept: text/plain, application/fhir+json;q=0.1` prefers the document's own bytes; it
    was answered the base64 Binary resource because any FHIR type of non-zero quality won."""
    url = _binary_url(client)
    for accept, expected in (("text/plain, application/fhir+json;q=0.1", "text/plain"),
                             ("text/*;q=0.9, application/fhir+xml;q=0.5", "text/plain"),
                             ("*/*", "text/plain"),
                             ("text/plain;q=0.2, application/fhir+json", "application/fhir+json"),
                             ("application/fhir+xml", "application/fhir+xml"),
                             # the generic JSON type asks for the resource too (http.html#mime-type)
                             ("application/json", "application/fhir+json")):
        r = client.get(url, headers={"Accept": accept})
        assert r.status_code == 200, r.get_data(as_text=True)[:300]
        assert r.headers["Content-Type"].split(";")[0] == expected, (accept, r.headers["Content-Type"])
        if expected == "text/plain":
            assert r.get_data() == b"le texte"


# --- Content-Type of what is written ---------------------------------------------------------------
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/octet-stream"])
def test_a_body_that_is_not_declared_fhir_is_415_and_writes_nothing(client, content_type):
    """FHIR R4 http.html#mime-type: "The correct mime type SHALL be used by clients and servers"
    (application/fhir+json, application/fhir+xml, or the generic json/xml types); RFC 9110
    15.5.16: content in a format the target does not support is a 415. An ITI-65 Bundle, or a
    Patient, sent as text/plain or as an HTML form's urlencoded body was sniffed, read as FHIR and
    registered (200/201)."""
    rid, pid, value = new_patient(client)
    body = json.dumps(bundle_for(pid, NIR, value))
    issue = outcome(client.post("/fhir", data=body, content_type=content_type, headers=JSON), 415)["issue"][0]
    assert issue["code"] == "not-supported"
    assert matches(client.get(f"/fhir/DocumentReference?patient={rid}&status=current", headers=JSON)) == []

    other = F.patient_id(uuid.uuid4().int % 10**9).id
    patient = json.dumps({"resourceType": "Patient", "identifier": [{"system": NIR, "value": other}]})
    outcome(client.post("/fhir/Patient", data=patient, content_type=content_type, headers=JSON), 415)
    assert client.get(f"/fhir/Patient?identifier={quote(NIR + '|' + other)}", headers=JSON).get_json()["total"] == 0

    # the FHIR types (with parameters, the generic and the DSTU2 ones) and a body without a type are read
    assert client.post("/fhir", data=body, content_type="application/fhir+json; fhirVersion=4.0; charset=utf-8",
                       headers=JSON).status_code == 200
    for declared in ("application/json+fhir", None):
        _rid, pid2, value2 = new_patient(client)
        data = json.dumps(bundle_for(pid2, NIR, value2)).encode()
        r = client.post("/fhir", data=data, content_type=declared, headers=JSON) if declared else \
            client.post("/fhir", data=data, headers=JSON)
        assert r.status_code == 200, (declared, r.get_data(as_text=True)[:300])
