"""The CDA profile in the ingest flow (SQLite and PostgreSQL): a non-conformant CDA is refused
whole, with the findings in the XDS errors, and leaves nothing registered."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.ingest import IngestService
from partage.metadata.datatypes import CX, DTM, XCN
from partage.metadata.errors import XdsErrors
from partage.metadata.model import Author, Code, DocumentContent
from partage.registry import schema
from tests import factories as F
from tests.unit.test_cda_samples import PDF

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_CDA = (EXAMPLES / "cda-lettre-de-liaison.xml").read_bytes()
PID = CX.parse("270017512345615^^^&1.2.250.1.213.1.4.10&ISO")


def _known_patient(services) -> str:
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [PID], {"name": "DUPONT^JEANNE"})
    return PID


def _submission(data: bytes, **overrides):
    """The README tour's submission: metadata agreeing with examples/cda-lettre-de-liaison.xml."""
    fields = dict(unique_id="1.2.250.1.999.1.2024.1", creation_time=DTM("20241120093000"), title="Lettre de liaison",
                  service_start_time=None, service_stop_time=None,
                  authors=[Author(person=XCN.parse("810001234567^MARTIN^Claire^^^^^^&1.2.250.1.71.4.2.1&ISO"))])
    fields.update(overrides)
    request = F.submission(PID, [F.document(PID, **fields)], contents=False)
    request.contents["doc1"] = DocumentContent(file=io.BytesIO(data), size=len(data),
                                               sha1=hashlib.sha1(data).hexdigest())
    return request


def _ingest(services, request):
    return IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(request)


def _count(services, table) -> int:
    with services.registry.read() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def _blobs(services) -> list[Path]:
    root = services.settings.blob_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_the_readme_example_cda_is_accepted(services):
    _known_patient(services)
    result = _ingest(services, _submission(EXAMPLE_CDA))
    assert "doc1" in result.assigned_ids
    assert _count(services, schema.registry_objects) == 3


def test_a_non_conformant_cda_is_refused_and_nothing_is_registered(services):
    _known_patient(services)
    start = EXAMPLE_CDA.index(b"  <legalAuthenticator>")
    end = EXAMPLE_CDA.index(b"</legalAuthenticator>\n") + len(b"</legalAuthenticator>\n")
    broken = EXAMPLE_CDA[:start] + EXAMPLE_CDA[end:]
    with pytest.raises(XdsErrors) as exc:
        _ingest(services, _submission(broken))
    assert set(exc.value.codes) == {"XDSRepositoryMetadataError"}
    error = exc.value.errors[0]
    assert "missing-legalAuthenticator" in error.context and "doc1" in error.context
    assert error.location.startswith("/hl7:ClinicalDocument/hl7:legalAuthenticator")
    assert _count(services, schema.registry_objects) == 0
    assert _count(services, schema.unique_ids) == 0
    assert _blobs(services) == []


def test_metadata_contradicting_the_header_are_refused(services):
    _known_patient(services)
    with pytest.raises(XdsErrors) as exc:
        _ingest(services, _submission(EXAMPLE_CDA, type_code=Code("11488-4", "2.16.840.1.113883.6.1")))
    assert "xds-typeCode-mismatch" in exc.value.summary()
    assert _count(services, schema.registry_objects) == 0


def test_a_cda_declared_as_another_mime_type_is_still_validated(services):
    _known_patient(services)
    broken = EXAMPLE_CDA.replace(b"<title>Lettre de liaison</title>", b"")
    with pytest.raises(XdsErrors) as exc:
        _ingest(services, _submission(broken, mime_type="application/pdf"))
    assert "missing-title" in exc.value.summary()


def test_documents_that_are_not_cda_are_not_checked(services):
    _known_patient(services)
    result = _ingest(services, _submission(PDF, mime_type="application/pdf",
                                           format_code=Code("urn:ihe:iti:xds-sd:pdf:2008", "1.2.250.1.213.1.1.4.2.282")))
    assert "doc1" in result.assigned_ids


def test_blocking_layers_are_configurable(services):
    services.settings.validation_blocking = "none"    # advisory: findings become warnings
    _known_patient(services)
    broken = EXAMPLE_CDA.replace(b"<title>Lettre de liaison</title>", b"")
    result = _ingest(services, _submission(broken))
    assert "doc1" in result.assigned_ids
    assert any("missing-title" in w.context for w in result.warnings)


def test_a_bad_validation_setting_fails_at_start_not_on_a_document(services):
    from partage.server.app import create_app

    services.settings.validation_blocking = "rules,spelling"
    with pytest.raises(ValueError, match="unknown validation layer 'spelling'"):
        create_app(services=services)


# --- the FHIR door (ITI-65) goes through the same flow ---------------------------------------------

@pytest.fixture(scope="module")
def fhir_server(tmp_path_factory):
    from tests.support import LiveServer

    data = tmp_path_factory.mktemp("cda-mhd") / "data"
    with LiveServer(data, mllp=False) as live:
        yield live


def test_iti65_refuses_a_non_conformant_cda_with_an_operation_outcome(fhir_server):
    import requests

    from tests.integration.test_mhd import provide_bundle

    value = F.cx(PID).id
    r = requests.post(f"{fhir_server.base_url}/fhir/Patient", timeout=30, json={
        "resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10", "value": value}],
        "name": [{"family": "DUPONT", "given": ["JEANNE"]}], "birthDate": "1970-01-01"})
    assert r.status_code in (200, 201), r.text
    doc = _submission(EXAMPLE_CDA).documents[0]
    broken = EXAMPLE_CDA.replace(b"<title>Lettre de liaison</title>", b"")
    refused = requests.post(f"{fhir_server.base_url}/fhir", json=provide_bundle(doc, broken, value), timeout=60,
                            headers={"Accept": "application/fhir+json"})
    assert refused.status_code >= 400
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "missing-title" in json.dumps(outcome)
    accepted = requests.post(f"{fhir_server.base_url}/fhir", json=provide_bundle(doc, EXAMPLE_CDA, value),
                             timeout=60, headers={"Accept": "application/fhir+json"})
    assert accepted.status_code == 200, accepted.text
