"""POST /validate and the upload form, against a running `partage serve` (requests over HTTP)."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
import requests
from lxml import etree

from tests.support import LiveServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_CDA = (EXAMPLES / "cda-lettre-de-liaison.xml").read_bytes()
BROKEN_CDA = EXAMPLE_CDA.replace(b"<title>Lettre de liaison</title>", b"")
PATIENT = {"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "270017512345615"}
MAX_BYTES = 200_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("validate") / "data"
    # Authentication on (no --insecure-dev): validation must still answer.
    os.environ["PARTAGE_VALIDATE_MAX_BYTES"] = str(MAX_BYTES)   # inherited by the server process
    try:
        with LiveServer(data, mllp=False, insecure_dev=False) as live:
            yield live
    finally:
        os.environ.pop("PARTAGE_VALIDATE_MAX_BYTES", None)


def _post(server, data: bytes, **kwargs) -> requests.Response:
    return requests.post(f"{server.base_url}/validate", data=data, timeout=30, **kwargs)


def _shape_ok(reports) -> None:
    assert isinstance(reports, list) and reports
    for r in reports:
        assert {"file", "valid", "document_model", "findings"} <= set(r)
        for f in r["findings"]:
            assert set(f) == {"rule", "severity", "layer", "message", "location", "line"}


def test_a_conformant_cda_gets_a_valid_json_report(server):
    r = _post(server, EXAMPLE_CDA, headers={"Content-Type": "text/xml"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    reports = r.json()
    _shape_ok(reports)
    assert reports[0]["valid"] is True
    assert reports[0]["document_model"] == "1.2.250.1.999.1.1:2024.01"


def test_a_broken_cda_names_rule_and_location(server):
    reports = _post(server, BROKEN_CDA, params={"filename": "lettre.xml"}).json()
    _shape_ok(reports)
    assert reports[0]["file"] == "lettre.xml" and reports[0]["valid"] is False
    title = [f for f in reports[0]["findings"] if f["rule"] == "missing-title"]
    assert title and title[0]["location"].startswith("/hl7:ClinicalDocument/hl7:title")
    assert title[0]["layer"] == "rules" and title[0]["severity"] == "error"


def test_a_body_sent_as_curl_data_binary_sends_it(server):
    """curl --data-binary @doc.xml labels the body application/x-www-form-urlencoded."""
    r = _post(server, BROKEN_CDA, params={"format": "json"},
              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert "missing-title" in {f["rule"] for f in r.json()[0]["findings"]}


def test_svrl_by_parameter_and_by_accept_header(server):
    for kwargs in ({"params": {"format": "svrl"}}, {"headers": {"Accept": "application/svrl+xml"}}):
        r = _post(server, BROKEN_CDA, **kwargs)
        assert r.headers["Content-Type"].startswith("application/svrl+xml")
        root = etree.fromstring(r.content)
        svrl = "{http://purl.oclc.org/dsdl/svrl}"
        assert root.tag == f"{svrl}schematron-output"
        assert "missing-title" in {fa.get("id") for fa in root.iter(f"{svrl}failed-assert")}
        # notes are reports, not failed assertions
        assert {fa.get("role") for fa in root.iter(f"{svrl}failed-assert")} == {"error"}
        assert "schema-not-run" in {r.get("id") for r in root.iter(f"{svrl}successful-report")}


def test_the_form_and_an_html_report(server):
    form = requests.get(f"{server.base_url}/validate", timeout=10)
    assert form.status_code == 200 and "multipart/form-data" in form.text and "<input" in form.text
    r = requests.post(f"{server.base_url}/validate", timeout=30,
                      files={"file": ("lettre<script>.xml", BROKEN_CDA, "text/xml")},
                      data={"format": "html", "profile": "cisis"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "missing-title" in r.text and "non conforme" in r.text
    assert "<script>" not in r.text                       # the file name is escaped
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]


def test_several_files_in_one_upload(server):
    r = requests.post(f"{server.base_url}/validate", timeout=30,
                      files=[("file", ("a.xml", EXAMPLE_CDA)), ("file", ("b.xml", BROKEN_CDA))])
    assert [(x["file"], x["valid"]) for x in r.json()] == [("a.xml", True), ("b.xml", False)]


def test_an_iti41_request_is_validated_with_its_metadata(server):
    good = _post(server, (EXAMPLES / "iti41-provide.xml").read_bytes(),
                 headers={"Content-Type": "application/soap+xml"}).json()
    _shape_ok(good)
    assert [(r["file"].rsplit("#", 1)[-1], r["valid"]) for r in good] == [("Document01", True)]
    bad = _post(server, (EXAMPLES / "iti41-provide-invalid-cda.xml").read_bytes(),
                headers={"Content-Type": "application/soap+xml"}).json()
    assert [r["valid"] for r in bad] == [False]
    assert "missing-legalAuthenticator" in {f["rule"] for f in bad[0]["findings"]}
    # The metadata cross-check runs: a uniqueId that is not the CDA id is reported.
    text = (EXAMPLES / "iti41-provide.xml").read_text().replace(
        'value="1.2.250.1.999.1.2024.1"', 'value="1.2.250.1.999.1.2024.99"')
    mismatch = _post(server, text.encode(), headers={"Content-Type": "application/soap+xml"}).json()
    assert "xds-uniqueId-mismatch" in {f["rule"] for r in mismatch for f in r["findings"]}


def test_an_mtom_iti41_request_is_validated(server):
    import re

    from partage.ebxml.mtom import Attachment, build_multipart

    text = (EXAMPLES / "iti41-provide-invalid-cda.xml").read_text()
    envelope = re.sub(r'(<xdsb:Document id="Document01">)[^<]*(</xdsb:Document>)',
                      r'\1<xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:doc1@test"/>\2',
                      text).encode()
    cda = (EXAMPLES / "cda-lettre-de-liaison.xml").read_bytes()
    start, end = cda.index(b"  <legalAuthenticator>"), cda.index(b"</legalAuthenticator>\n") + 22
    cda = cda[:start] + cda[end:]
    content_type, chunks, _ = build_multipart(envelope, [Attachment("doc1@test", "text/xml", cda)])
    reports = _post(server, b"".join(chunks), headers={"Content-Type": content_type}).json()
    assert [r["file"].rsplit("#", 1)[-1] for r in reports] == ["Document01"]
    assert "missing-legalAuthenticator" in {f["rule"] for f in reports[0]["findings"]}


def _bundle(cda: bytes) -> dict:
    return {
        "resourceType": "Bundle", "type": "transaction",
        "meta": {"profile": ["https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Comprehensive.ProvideBundle"]},
        "entry": [
            {"fullUrl": "urn:uuid:1f0a4a57-8c59-4b53-9d2f-1c1e2f3a4b5c",
             "resource": {"resourceType": "List", "status": "current", "mode": "working",
                          "code": {"coding": [{"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes",
                                               "code": "submissionset"}]},
                          "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986",
                                          "value": "urn:oid:1.2.250.1.999.3.1"}],
                          "subject": {"identifier": PATIENT}, "date": "2024-11-20T10:00:00+01:00",
                          "entry": [{"item": {"reference": "urn:uuid:2f0a4a57-8c59-4b53-9d2f-1c1e2f3a4b5c"}}]},
             "request": {"method": "POST", "url": "List"}},
            {"fullUrl": "urn:uuid:2f0a4a57-8c59-4b53-9d2f-1c1e2f3a4b5c",
             "resource": {"resourceType": "DocumentReference", "status": "current",
                          "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.250.1.999.1.2024.1"},
                          "subject": {"identifier": PATIENT},
                          "type": {"coding": [{"system": "http://loinc.org", "code": "11490-0"}]},
                          "content": [{"attachment": {"contentType": "text/xml", "language": "fr-FR",
                                                      "data": base64.b64encode(cda).decode()},
                                       "format": {"system": "urn:oid:1.2.250.1.213.1.1.4.2.282",
                                                  "code": "urn:asip:ci-sis:vsm:2012"}}]},
             "request": {"method": "POST", "url": "DocumentReference"}},
        ],
    }


def test_an_mhd_bundle_has_its_cda_validated(server):
    r = _post(server, json.dumps(_bundle(BROKEN_CDA)).encode(), headers={"Content-Type": "application/fhir+json"})
    reports = r.json()
    _shape_ok(reports)
    documents = [x for x in reports if not x["file"].endswith("#metadata")]
    assert len(documents) == 1 and documents[0]["valid"] is False
    assert "missing-title" in {f["rule"] for f in documents[0]["findings"]}


def test_limits_and_hostile_input(server):
    too_big = EXAMPLE_CDA + b"<!--" + b"x" * MAX_BYTES + b"-->"
    r = _post(server, too_big)
    assert r.status_code == 413 and "exceeds" in r.json()["error"]
    bomb = (b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY a "aaaaaaaaaa">'
            + b"".join(f'<!ENTITY a{i} "{"&a;" * 10 if i == 0 else f"&a{i - 1};" * 10}">'.encode() for i in range(9))
            + b']><ClinicalDocument xmlns="urn:hl7-org:v3"><title>&a8;</title></ClinicalDocument>')
    xxe = (b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&x;</title></ClinicalDocument>')
    for hostile in (bomb, xxe):
        started = time.monotonic()
        reports = _post(server, hostile).json()
        assert time.monotonic() - started < 10   # refused at parse: an expanded bomb would take far longer
        assert reports[0]["valid"] is False and reports[0]["findings"][0]["layer"] == "parse"
        assert "root:" not in json.dumps(reports)
    other = _post(server, b"%PDF-1.4 pas un CDA").json()
    assert other[0]["valid"] is False and other[0]["findings"][0]["rule"] == "not-supported"
    assert _post(server, b"").status_code == 400
    assert _post(server, EXAMPLE_CDA, params={"profile": "nope"}).status_code == 400
    assert _post(server, EXAMPLE_CDA, params={"format": "pdf"}).status_code == 400
