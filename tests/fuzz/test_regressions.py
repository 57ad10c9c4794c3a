"""Findings of the fuzz targets, kept as plain regression tests (CI starts without the
hypothesis example database, so each finding is written down here)."""

from __future__ import annotations

import json

from lxml import etree

from partage.ebxml import constants as C
from partage.ebxml.soap import SoapError, fault_envelope
from partage.metadata.errors import ErrorCode, XdsError
from partage.xds.responses import registry_response


def test_fault_quoting_control_characters_is_still_xml():
    """Finding 1: a fault whose reason quoted client bytes (NUL, 0x1F) could not be written."""
    envelope = etree.fromstring(fault_envelope(SoapError("Sender", "", "unreadable request: a\x00b\x1fc")))
    reason = envelope.findtext(f".//{{{C.SOAP12}}}Text")
    assert reason == "unreadable request: a\ufffdb\ufffdc"


def test_registry_error_quoting_control_characters_is_still_xml():
    error = XdsError(ErrorCode.REGISTRY_METADATA, "bad value '\x01'", "Document\x0201")
    element = registry_response([error])
    reparsed = etree.fromstring(etree.tostring(element))
    [registry_error] = reparsed.iter(f"{{{C.RS}}}RegistryError")
    assert registry_error.get("codeContext") == "bad value '\ufffd'"
    assert registry_error.get("location") == "Document\ufffd01"


def test_mtom_request_with_a_nul_in_its_boundary_gets_a_fault(app_client):
    response = app_client.post("/xds/repository", data=b"--x\x00y\r\n\r\n",
                               headers={"Content-Type": 'multipart/related; boundary="x\x01y"; type="application/xop+xml"'})
    assert response.status_code == 400 and b"Fault" in response.data


def test_bundle_entry_with_an_empty_resource_type_is_a_400(app_client):
    """Finding 2: an entry whose resourceType is empty (or unknown) reached a 500."""
    from tests.fuzz.test_fuzz_fhir import BUNDLE

    for resource_type in ("", "NoSuchType", "R4.\u00c7Type"):
        bundle = json.loads(json.dumps(BUNDLE))
        bundle["entry"][1]["resource"]["resourceType"] = resource_type
        response = app_client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"})
        assert response.status_code == 400, (resource_type, response.data[:300])
        assert response.get_json()["resourceType"] == "OperationOutcome"
