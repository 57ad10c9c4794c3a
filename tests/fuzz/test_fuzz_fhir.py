"""The MHD door under mutated FHIR JSON and XML and hostile search parameters: always an
OperationOutcome with a 4xx (or a normal answer), never a 500 or a traceback."""

from __future__ import annotations

import base64
import json
import time

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ
from tests.fuzz.mutations import mutated

PATIENT = {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "279035121518989"}
BUNDLE = {
    "resourceType": "Bundle", "type": "transaction",
    "meta": {"profile": ["https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Comprehensive.ProvideBundle"]},
    "entry": [
        {"fullUrl": "urn:uuid:1f0a4a57-8c59-4b53-9d2f-1c1e2f3a4b5c",
         "resource": {"resourceType": "List", "status": "current", "mode": "working",
                      "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986",
                                      "value": "urn:oid:1.2.250.1.999.3.1"}],
                      "subject": {"identifier": PATIENT}, "date": "2024-11-20T09:30:00+01:00",
                      "source": {"identifier": {"value": "urn:oid:1.2.250.1.999.2"}},
                      "entry": [{"item": {"reference": "urn:uuid:2f0a4a57-8c59-4b53-9d2f-1c1e2f3a4b5c"}}]},
         "request": {"method": "POST", "url": "List"}},
        {"fullUrl": "urn:uuid:2f0a4a57-8c59-4b53-9d2f-1c1e2f3a4b5c",
         "resource": {"resourceType": "DocumentReference", "status": "current",
                      "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.250.1.999.4.1"},
                      "subject": {"identifier": PATIENT},
                      "type": {"coding": [{"system": "http://loinc.org", "code": "11490-0"}]},
                      "content": [{"attachment": {"contentType": "text/plain", "language": "fr-FR",
                                                  "data": base64.b64encode(b"Bonjour").decode()},
                                   "format": {"system": "urn:oid:1.2.250.1.213.1.1.4.2.282",
                                              "code": "urn:ihe:iti:xds-sd:text:2008"}}]},
         "request": {"method": "POST", "url": "DocumentReference"}},
    ],
}
BUNDLE_JSON = json.dumps(BUNDLE).encode()
SEARCH_KEYS = ["patient", "patient.identifier", "status", "identifier", "date", "creation", "author.given",
               "author.family", "category", "type", "setting", "period", "facility", "event",
               "security-label", "format", "related", "_count", "_sort", "_format", "period-start",
               "isArchived", "unknown-param"]


def _assert_fhir_answer(response, started: float) -> None:
    assert time.monotonic() - started < 10
    assert response.status_code < 500, response.data[:2000]
    assert b"Traceback" not in response.data
    if response.status_code >= 400 and "json" in (response.mimetype or ""):
        assert response.get_json()["resourceType"] == "OperationOutcome"


@FUZZ
@given(payload=mutated(BUNDLE_JSON))
def test_mutated_transaction_bundles(app_client, payload):
    started = time.monotonic()
    response = app_client.post("/fhir", data=payload, headers={"Content-Type": "application/fhir+json"})
    _assert_fhir_answer(response, started)


@FUZZ
@given(data=st.data())
def test_structurally_wrong_bundles(app_client, data):
    """Valid JSON, wrong FHIR: values of the wrong type, missing or unexpected members."""
    bundle = json.loads(BUNDLE_JSON)
    entry = data.draw(st.sampled_from(bundle["entry"]))
    resource = entry["resource"]
    key = data.draw(st.sampled_from(sorted(resource)))
    resource[key] = data.draw(st.one_of(st.none(), st.integers(), st.text(max_size=20),
                                        st.lists(st.integers(), max_size=2), st.just({"x": 1})))
    started = time.monotonic()
    response = app_client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"})
    _assert_fhir_answer(response, started)


@FUZZ
@given(params=st.dictionaries(st.sampled_from(SEARCH_KEYS), st.text(max_size=30), max_size=5))
def test_hostile_search_parameters(app_client, params):
    started = time.monotonic()
    response = app_client.get("/fhir/DocumentReference", query_string=params)
    _assert_fhir_answer(response, started)


PATIENT_KEYS = ["identifier", "_id", "family", "given", "name", "birthdate", "family:exact", "given:contains",
                "_count", "_sort", "_total", "_cursor", "_format", "gender"]
LIST_KEYS = ["patient.identifier", "status", "code", "date", "designationType", "sourceId", "source.family",
             "identifier", "_sort", "_cursor", "_total", "_count"]


@FUZZ
@given(params=st.dictionaries(st.sampled_from(PATIENT_KEYS), st.text(max_size=30), max_size=5),
       strict=st.booleans())
def test_hostile_patient_search_parameters(app_client, params, strict):
    started = time.monotonic()
    headers = {"Prefer": "handling=strict"} if strict else {}
    response = app_client.get("/fhir/Patient", query_string=params, headers=headers)
    _assert_fhir_answer(response, started)


@FUZZ
@given(params=st.dictionaries(st.sampled_from(LIST_KEYS), st.text(max_size=30), max_size=5),
       cursor=st.one_of(st.none(), st.binary(max_size=60)))
def test_hostile_list_search_parameters_and_cursors(app_client, params, cursor):
    started = time.monotonic()
    params = {"patient.identifier": f"{PATIENT['system']}|{PATIENT['value']}", "status": "current", **params}
    if cursor is not None:
        params["_cursor"] = base64.urlsafe_b64encode(cursor).decode()
    response = app_client.get("/fhir/List", query_string=params)
    _assert_fhir_answer(response, started)
