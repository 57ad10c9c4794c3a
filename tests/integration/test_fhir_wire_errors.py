"""What the /fhir door answers to bodies and requests it cannot take, through a running server:
a single-valued element given twice (XML and JSON) and every routing error are refused with
an OperationOutcome (JSON, or XML when asked), never an HTML page, and nothing is stored."""

from __future__ import annotations

import json

import pytest
import requests
from fhir.resources.R4B.operationoutcome import OperationOutcome
from lxml import etree

from tests.conftest import corpus_path
from tests.support import LiveServer

F = "{http://hl7.org/fhir}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("fhirwire") / "data"
    codes = corpus_path("mhd", "environment", "codes.xml")
    with LiveServer(data, mllp=False, extra_args=["--codes", str(codes)]) as live:
        live.fhir = f"{live.base_url}/fhir"
        yield live


def _json_outcome(response: requests.Response) -> dict:
    assert response.headers["Content-Type"].startswith("application/fhir+json"), response.headers
    body = response.json()
    OperationOutcome.model_validate(body)
    return body


def _xml_outcome(response: requests.Response) -> etree._Element:
    assert response.headers["Content-Type"].startswith("application/fhir+xml"), response.headers
    root = etree.fromstring(response.content)
    assert root.tag == F + "OperationOutcome"
    OperationOutcome.model_validate_xml(response.content)
    return root


def _document_count(server) -> int:
    r = requests.get(f"{server.fhir}/DocumentReference", params={"patient.identifier": "urn:oid:1.3.6.1.4.1.21367.13.20.1000|IHERED-2654"}, timeout=30)
    return int(r.json().get("total", 0)) if r.status_code == 200 else -1


def test_a_repeated_element_in_xml_is_refused_where_it_is(server):
    bundle = corpus_path("mhd", "TestCollections", "MHD_DocumentRecipient_comprehensive",
                         "1_Prerequisite_Single_Document_with_Binary", "Bundle", "pdb.xml").read_bytes()
    before = _document_count(server)
    r = requests.post(server.fhir, data=bundle, headers={"Content-Type": "application/fhir+xml"}, timeout=30)
    assert r.status_code == 400
    root = _xml_outcome(r)      # an XML request is answered in XML
    issue = root.find(F + "issue")
    assert issue.find(F + "code").get("value") == "structure"
    assert issue.find(F + "expression").get("value") == \
        "Bundle.entry[0].resource.context.practiceSetting.coding[0].code"
    assert "'code' is single-valued but repeated" in issue.find(F + "diagnostics").get("value")
    assert _document_count(server) == before


@pytest.mark.parametrize("body,where", [
    ('{"resourceType": "Patient", "gender": "male", "gender": "female"}', "Patient.gender"),
    ('{"resourceType": "Patient", "gender": ["male", "female"]}', "Patient.gender"),
    ('{"resourceType": "Patient", "name": [{"family": "A", "family": "B"}]}', "Patient.name[0].family"),
    ('{"resourceType": "Patient", "birthDate": "1970-01-01", "_birthDate": {"extension": '
     '[{"url": "u", "valueString": "a", "valueString": "b"}]}}', "Patient.birthDate.extension[0].valueString"),
])
def test_a_repeated_element_in_json_is_refused_where_it_is(server, body, where):
    r = requests.post(f"{server.fhir}/Patient", data=body, headers={"Content-Type": "application/fhir+json"},
                      timeout=30)
    assert r.status_code == 400
    issue = _json_outcome(r)["issue"][0]
    assert issue["expression"] == [where] and "single-valued but repeated" in issue["diagnostics"]


def test_a_repeated_element_in_xml_patient_is_refused(server):
    body = '<Patient xmlns="http://hl7.org/fhir"><gender value="male"/><gender value="female"/></Patient>'
    r = requests.post(f"{server.fhir}/Patient", data=body, timeout=30,
                      headers={"Content-Type": "application/fhir+xml", "Accept": "application/fhir+json"})
    assert r.status_code == 400
    assert _json_outcome(r)["issue"][0]["expression"] == ["Patient.gender"]


ROUTING = [
    ("GET", "/fhir/Nonsense", 404),
    ("GET", "/fhir/DocumentReference/x/_history", 404),
    ("GET", "/fhir/_history", 404),
    ("POST", "/fhir/Binary", 404),
    ("GET", "/fhir/", 405),
    ("GET", "/fhir", 405),
    ("DELETE", "/fhir/List/x", 405),
    ("PUT", "/fhir/List/x", 405),
]


@pytest.mark.parametrize("method,path,status", ROUTING)
def test_routing_errors_are_operation_outcomes(server, method, path, status):
    r = requests.request(method, server.base_url + path, timeout=30)
    assert r.status_code == status
    issue = _json_outcome(r)["issue"][0]
    assert issue["severity"] == "error" and issue["code"] == "not-supported"
    assert method in issue["diagnostics"]
    if status == 405:
        assert r.headers.get("Allow")
    xml = requests.request(method, server.base_url + path, params={"_format": "xml"}, timeout=30)
    assert xml.status_code == status
    _xml_outcome(xml)
    accept = requests.request(method, server.base_url + path, headers={"Accept": "application/fhir+xml"}, timeout=30)
    _xml_outcome(accept)


def test_other_doors_keep_their_own_answers(server):
    r = requests.get(f"{server.base_url}/no-such-page", timeout=30)
    assert r.status_code == 404
    assert "OperationOutcome" not in r.text
    assert json.loads(requests.get(f"{server.base_url}/healthz", timeout=30).text)
