"""Clinical FHIR views judged as an R4 validator and a clinician would (round 2): corpus CDA
documents filed by ITI-41 into a real server, their facts read back on /fhir.

- a search for Observations answers Observations only, whatever `category` says;
- `date` compares the fact's time as the range its precision covers (FHIR R4 search.html#date);
- `Patient/<id>/$summary` is a document Bundle holding every resource its Composition names
  (FHIR R4 composition.html: "any other resources referenced from Composition must be included
  as subsequent entries in the Bundle (for example Patient ...)");
- an allergy's verificationStatus says what the document's certainty (FR-Certitude, LOINC
  66455-7) says, never "confirmed" for an allergy the document calls unconfirmed.
"""

from __future__ import annotations

import pytest
import requests
from fhir.resources.R4B import get_fhir_model_class
from lxml import etree

from partage.config import Settings
from partage.services import Services
from tests import clinical_support as C
from tests.conftest import corpus_path
from tests.support import LiveServer
from tests.xdsclient import XdsClient

pytestmark = pytest.mark.corpus

NIR = "279035121518972"
PID = C.patient_cx(NIR)
H = "{urn:hl7-org:v3}"
T_ALLERGY = "1.3.6.1.4.1.19376.1.5.3.1.4.6"
JSON = {"Accept": "application/fhir+json"}


def _unconfirmed_allergy(data: bytes) -> bytes:
    """The IPS-FR example with its allergy's certainty (FR-Certitude) 'unconfirmed'."""
    root = etree.fromstring(data)
    changed = 0
    for obs in root.iter(H + "observation"):
        if T_ALLERGY not in {t.get("root") for t in obs.findall(H + "templateId")}:
            continue
        for rel in obs.findall(H + "entryRelationship"):
            inner = rel.find(H + "observation")
            code = inner.find(H + "code") if inner is not None else None
            if code is not None and code.get("code") == "66455-7":
                value = inner.find(H + "value")
                value.set("code", "unconfirmed")
                value.set("displayName", "Non confirmé")
                changed += 1
    assert changed, "the example's allergy has no FR-Certitude entry any more"
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


FILED = {"IPS-FR_2024.01_DLU.xml": _unconfirmed_allergy, "VAC_2023.01.xml": None,
         "BIO-CR-BIO_2024.01_TSH_1.xml": None}


def _valid(resource: dict) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("clinical-r2") / "data"
    with LiveServer(data, mllp=False) as live:
        services = Services.open(Settings(data_dir=data), migrate=False)
        with services.registry.write() as conn:
            services.registry.upsert_patient(conn, [PID])
        rid = C.public_id(services, PID)
        live.rid, live.patient = rid, f"Patient/{rid}"
        services.close()
        client = XdsClient(live.base_url)
        for i, (name, change) in enumerate(FILED.items()):
            cda = C.for_patient(corpus_path("cda", "valid", name).read_bytes(), NIR)
            if change:
                cda = change(cda)
            request = C.submission(cda, f"doc{i}")
            reply = client.provide_and_register(request, {f"doc{i}": cda})
            assert reply.status == "Success", (name, reply.error_codes, live.log())
        yield live


def _get(server, path: str, **params) -> dict:
    response = requests.get(f"{server.base_url}/fhir/{path}", params=params, headers=JSON, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


# --- an Observation search answers Observations ------------------------------------------------
@pytest.mark.parametrize("category", ["exam", "social-history", "http://terminology.hl7.org/CodeSystem/"
                                                                "observation-category|imaging"])
def test_observation_search_by_another_category_answers_no_other_resource(server, category):
    bundle = _get(server, "Observation", patient=server.patient, category=category)
    kinds = {e["resource"]["resourceType"] for e in bundle.get("entry", [])}
    assert kinds <= {"Observation"}, kinds
    assert bundle["total"] == 0 and not bundle.get("entry")


def test_observation_category_keeps_its_own_kind(server):
    labs = _get(server, "Observation", patient=server.patient, category="laboratory")
    vitals = _get(server, "Observation", patient=server.patient, category="vital-signs")
    both = _get(server, "Observation", patient=server.patient, category="laboratory,vital-signs")
    assert labs["total"] >= 1 and vitals["total"] >= 1
    assert both["total"] == labs["total"] + vitals["total"]
    anded = _get(server, "Observation", patient=server.patient, category=["laboratory", "vital-signs"])
    assert anded["total"] == 0      # repeated parameters are ANDed: no Observation is both


# --- dates as ranges ---------------------------------------------------------------------------
def test_a_fact_dated_to_the_year_is_found_by_its_year(server):
    """The BCG of the VAC example is dated 1975 (a year): `date=1975` contains it, `date=ge1975-06`
    overlaps it (FHIR R4 search.html#date: eq "the range of the search value fully contains the
    range of the target value", ge "the range above the search value intersects the range of the
    target value"), `date=1976` does not."""
    everything = _get(server, "Immunization", patient=server.patient)
    bcg = [e["resource"] for e in everything["entry"] if e["resource"].get("occurrenceDateTime") == "1975"]
    assert bcg, [e["resource"].get("occurrenceDateTime") for e in everything["entry"]]
    ids = {r["id"] for r in bcg}
    for value in ("1975", "eq1975", "ge1975-06", "le1975-01-01", "gt1974", "lt1975-12"):
        found = {e["resource"]["id"] for e in _get(server, "Immunization", patient=server.patient,
                                                    date=value).get("entry", [])}
        assert ids <= found, value
    for value in ("1976", "1975-06", "gt1975", "lt1975", "ge1976"):
        found = {e["resource"]["id"] for e in _get(server, "Immunization", patient=server.patient,
                                                    date=value).get("entry", [])}
        assert not ids & found, value


def test_a_day_is_found_by_its_day_month_and_year(server):
    weights = _get(server, "Observation", patient=server.patient, code="http://loinc.org|29463-7")
    day = next(e["resource"] for e in weights["entry"] if len(e["resource"].get("effectiveDateTime", "")) == 10)
    when = day["effectiveDateTime"]
    for value in (when, when[:7], when[:4], f"ge{when}", f"le{when}"):
        found = {e["resource"]["id"] for e in _get(server, "Observation", patient=server.patient,
                                                    code="http://loinc.org|29463-7", date=value)["entry"]}
        assert day["id"] in found, value


# --- $summary is a document that holds what it references ---------------------------------------
def test_summary_document_holds_the_patient_it_is_about(server):
    bundle = _get(server, f"{server.patient}/$summary")
    _valid(bundle)
    composition = bundle["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition"
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    subject = composition["subject"]["reference"]
    assert subject in full_urls, (subject, sorted(full_urls)[:5])
    patient = next(e["resource"] for e in bundle["entry"] if e["fullUrl"] == subject)
    assert patient["resourceType"] == "Patient" and patient["id"] == server.rid
    for entry in bundle["entry"]:
        _valid(entry["resource"])
        for key in ("subject", "patient"):
            ref = entry["resource"].get(key, {}).get("reference") if entry["resource"]["resourceType"] != \
                "Composition" else None
            if ref:
                assert ref in full_urls, (entry["fullUrl"], ref)
    for section in composition["section"]:
        for ref in section.get("entry", []):
            assert ref["reference"] in full_urls


def test_summary_of_an_unknown_patient_is_a_404_operation_outcome(server):
    response = requests.get(f"{server.base_url}/fhir/Patient/nobody0000/$summary", headers=JSON, timeout=30)
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


# --- what the document says about an allergy -------------------------------------------------
def test_an_unconfirmed_allergy_is_not_served_as_confirmed(server):
    bundle = _get(server, "AllergyIntolerance", patient=server.patient)
    paracetamol = [e["resource"] for e in bundle["entry"] if e["resource"]["code"].get("text") == "PARACETAMOL"]
    assert paracetamol
    for res in paracetamol:
        _valid(res)
        codes = {c["code"] for c in res.get("verificationStatus", {}).get("coding", [])}
        assert codes == {"unconfirmed"}, res.get("verificationStatus")
        assert res["verificationStatus"]["coding"][0]["system"] == \
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
    # the $summary says the same
    summary = _get(server, f"{server.patient}/$summary")
    served = [e["resource"] for e in summary["entry"] if e["resource"]["resourceType"] == "AllergyIntolerance"
              and e["resource"]["code"].get("text") == "PARACETAMOL"]
    assert served and all(r["verificationStatus"]["coding"][0]["code"] == "unconfirmed" for r in served)


# --- every resource served is valid R4 ------------------------------------------------------------
@pytest.mark.parametrize("resource_type", ["Observation", "AllergyIntolerance", "Condition",
                                           "MedicationStatement", "Immunization"])
def test_every_resource_served_validates_and_names_its_patient(server, resource_type):
    bundle = _get(server, resource_type, patient=server.patient, _count="1000")
    assert bundle["total"] == len(bundle.get("entry", []))
    for entry in bundle.get("entry", []):
        res = entry["resource"]
        assert res["resourceType"] == resource_type
        _valid(res)
        ref = (res.get("subject") or res.get("patient"))["reference"]
        assert ref.endswith(f"/Patient/{server.rid}")
        again = _get(server, f"{resource_type}/{res['id']}")
        assert again == res


def test_an_unconfirmed_problem_says_so(server):
    """The IPS-FR example's problem R69 carries FR-Certitude 'unconfirmed'."""
    bundle = _get(server, "Condition", patient=server.patient)
    r69 = [e["resource"] for e in bundle["entry"]
           if any(c.get("code") == "R69" for c in e["resource"]["code"].get("coding", []))]
    assert r69
    for res in r69:
        _valid(res)
        assert res["verificationStatus"]["coding"] == [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "unconfirmed"}]


# --- tokens and paging as FHIR R4 search.html defines them --------------------------------------
def test_code_system_with_no_code_finds_every_code_of_the_system(server):
    """search.html#token: `[system]|` matches any code in that system."""
    everything = _get(server, "Observation", patient=server.patient, _count="1000")
    loinc = [e["resource"]["id"] for e in everything["entry"]
             if e["resource"]["code"].get("coding", [{}])[0].get("system") == "http://loinc.org"]
    assert loinc
    found = _get(server, "Observation", patient=server.patient, code="http://loinc.org|", _count="1000")
    assert sorted(e["resource"]["id"] for e in found["entry"]) == sorted(loinc)
    assert _get(server, "Observation", patient=server.patient, code="http://snomed.info/sct|")["total"] == 0


@pytest.mark.parametrize("param, value", [("_count", "-1"), ("_offset", "-5"), ("_count", "x"),
                                          ("date", "2024-13-01"), ("date", "ap2024"), ("_sort", "code")])
def test_a_bad_parameter_is_a_400_operation_outcome(server, param, value):
    response = requests.get(f"{server.base_url}/fhir/Observation", params={"patient": server.patient, param: value},
                            headers=JSON, timeout=30)
    assert response.status_code == 400, (param, value, response.text[:300])
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["severity"] == "error"
