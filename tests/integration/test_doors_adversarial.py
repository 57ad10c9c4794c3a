"""Adversarial inputs at the doors, against a real `partage serve`: the validation report stays
honest (a verdict "conforme" only when every layer of the profile ran; nothing posted is silently
dropped), control characters never make a 500, `partage validate` writes its report whatever the
file's name, and padding before a CDA's root does not let it skip the ingest check.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from lxml import etree

from tests.support import LiveServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ITI41 = (EXAMPLES / "iti41-provide.xml").read_bytes()
CDA = (EXAMPLES / "cda-lettre-de-liaison.xml").read_bytes()
_DOCUMENT = re.compile(rb'(<xdsb:Document id="Document01">)(.*?)(</xdsb:Document>)', re.S)
SOAP = {"Content-Type": "application/soap+xml"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("review") / "data", mllp=False,
                    env={"PARTAGE_TEXT_INDEXER": "0"}) as live:
        yield live


def _iti41_with_document(data: bytes) -> bytes:
    m = _DOCUMENT.search(ITI41)
    assert m is not None
    return ITI41[:m.start(2)] + base64.b64encode(data) + ITI41[m.end(2):]


def _validate(server, body: bytes, **kwargs) -> requests.Response:
    return requests.post(f"{server.base_url}/validate", data=body, timeout=60, **kwargs)


# --- /validate: honest verdicts ----------------------------------------------------------------

def test_validate_iti41_non_cda_document_is_not_conforme(server):
    """A document of an ITI-41 request that is not CDA is checked by no layer: its report must not
    say "conforme" (observed: verdict "conforme" with an empty `layers`)."""
    body = _iti41_with_document(b"%PDF-1.4\n% not a CDA at all\n")
    r = _validate(server, body, headers=SOAP)
    assert r.status_code == 200
    reports = [rep for rep in r.json() if rep["file"].endswith("#Document01")]
    assert reports, r.text
    assert reports[0]["verdict"] != "conforme", reports[0]


def test_validate_iti41_entry_without_its_document_is_reported(server):
    """A DocumentEntry whose Document is absent (the repository answers XDSMissingDocument):
    /validate must say so (observed: 200 with an empty list, as if nothing were wrong)."""
    m = _DOCUMENT.search(ITI41)
    body = ITI41[:m.start(1)] + ITI41[m.end(3):]
    r = _validate(server, body, headers=SOAP)
    assert r.status_code == 200
    reports = r.json()
    assert reports, "an ITI-41 request missing its document got an empty validation answer"
    assert any(not rep["valid"] for rep in reports)
    assert "XDSMissingDocument" in {f["rule"] for rep in reports for f in rep["findings"]}


def test_validate_iti41_document_without_entry_is_reported(server):
    """A Document with no DocumentEntry (XDSMissingDocumentMetadata for the repository), here a
    broken CDA: /validate must not drop it silently (observed: no report names it)."""
    m = _DOCUMENT.search(ITI41)
    orphan = base64.b64encode(b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title/></ClinicalDocument>')
    body = ITI41[:m.end(3)] + b'<xdsb:Document id="Orphan">' + orphan + b"</xdsb:Document>" + ITI41[m.end(3):]
    r = _validate(server, body, headers=SOAP)
    assert r.status_code == 200
    reports = r.json()
    named = [rep for rep in reports if "Orphan" in rep["file"] or any(
        "Orphan" in f["message"] or "Orphan" in (f["location"] or "") for f in rep["findings"])]
    assert named, [rep["file"] for rep in reports]
    assert any(not rep["valid"] for rep in named)


# --- /validate: never a 500 ------------------------------------------------------------------------

@pytest.mark.parametrize("filename", ["a\x01b", "tab\x0bvt", "esc\x1b[31m"])
def test_validate_svrl_with_control_character_in_filename_is_not_500(server, filename):
    """`?filename=` is echoed into the SVRL title; a control character in it made lxml raise and
    the server answer 500 (observed: HTTP 500 "internal error")."""
    r = _validate(server, CDA, params={"format": "svrl", "filename": filename},
                  headers={"Content-Type": "text/xml"})
    assert r.status_code == 200, r.text[:300]
    root = etree.fromstring(r.content)
    assert root.tag == "{http://purl.oclc.org/dsdl/svrl}schematron-output"


def test_validate_svrl_bundle_with_control_character_in_fullurl_is_not_500(server):
    """The same through data: a Bundle entry's fullUrl (JSON "\\u0001") names the report."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:\u0001bad", "resource": {"resourceType": "Binary", "contentType": "text/xml",
                                                       "data": base64.b64encode(CDA).decode()}}]}
    r = _validate(server, json.dumps(bundle).encode(), params={"format": "svrl"},
                  headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.text[:300]
    etree.fromstring(r.content)


# --- CLI: partage validate ------------------------------------------------------------------------

def test_cli_validate_svrl_non_utf8_filename(tmp_path):
    """A conformant file whose name is not UTF-8: the SVRL report must be written (observed:
    'internal error (UnicodeEncodeError ...)', exit 1, no report)."""
    name = os.fsdecode(b"lettre-\xff.xml")
    (tmp_path / name).write_bytes(CDA)
    run = subprocess.run([sys.executable, "-m", "partage.cli", "validate", "--profile", "structure",
                          "--format", "svrl", "--quiet", name],
                         cwd=tmp_path, capture_output=True, timeout=120,
                         env={**os.environ, "PARTAGE_DEBUG": ""})
    assert b"internal error" not in run.stderr, run.stderr
    assert b"Traceback" not in run.stderr
    assert run.returncode == 0, run.stderr
    etree.fromstring(run.stdout)


# --- ITI-41 ingest: the CDA gate -------------------------------------------------------------------

def test_iti41_invalid_cda_behind_a_long_comment_is_still_validated(server):
    """The invalid example CDA is refused; the same CDA after a 70 KB comment (root start tag beyond
    the 64 KB sniff) must be refused too (observed: Success, registered unvalidated)."""
    src = (EXAMPLES / "iti41-provide-invalid-cda.xml").read_bytes()
    m = re.search(rb'(<xdsb:Document id="[^"]+">)(.*?)(</xdsb:Document>)', src, re.S)
    cda = base64.b64decode(m.group(2))
    at = cda.index(b"<ClinicalDocument")
    padded = cda[:at] + b"<!--" + b"x" * 70_000 + b"-->" + cda[at:]
    headers = {"Content-Type": 'application/soap+xml; charset=UTF-8; '
                               'action="urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"'}
    for doc in (cda, padded):
        body = src[:m.start(2)] + base64.b64encode(doc) + src[m.end(2):]
        r = requests.post(f"{server.base_url}/xds/repository", data=body, headers=headers, timeout=60)
        assert r.status_code == 200
        assert b"ResponseStatusType:Failure" in r.content, r.content[:600]
        assert b"missing-legalAuthenticator" in r.content
