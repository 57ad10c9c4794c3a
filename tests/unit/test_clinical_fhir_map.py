"""Facts -> FHIR R4B resources (valid, pointing back to their document), dates, current treatments.
(The page's plots and formatting: tests/unit/test_page.py.)"""

from __future__ import annotations

import pytest
from fhir.resources.R4B import get_fhir_model_class

from partage.fhir.clinical_map import FactMapper, fhir_datetime, is_current_treatment
from partage.query.clinical import FactRow
from tests import factories as F

PID = F.patient_id(7)
DOC = F.document(PID, "urn:uuid:0b3c2f44-52c7-4c5e-9b43-0f8d6c1a2b3c")


def fact(kind: str, **fields) -> FactRow:
    base = dict(pk=1, kind=kind, code="", code_system="", display="", value_num=None, value_text="", unit="",
                ref_low="", ref_high="", ref_text="", interpretation="", status="", effective="",
                effective_end="", detail={}, document=DOC)
    base.update(fields)
    return FactRow(**base)


def mapper() -> FactMapper:
    return FactMapper("http://h/fhir", lambda cx: {"reference": "Patient/p1"})


def _valid(resource: dict) -> dict:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return resource


@pytest.mark.parametrize("digits, expected", [
    ("1975", "1975"), ("202403", "2024-03"), ("20240315", "2024-03-15"),
    ("2024031512", "2024-03-15T12:00:00Z"), ("20240315123456", "2024-03-15T12:34:56Z"), ("", "")])
def test_dates(digits, expected):
    assert fhir_datetime(digits) == expected


def test_observation_points_to_its_document():
    obs = _valid(mapper().resource(fact("lab", code="2160-0", code_system="2.16.840.1.113883.6.1",
                                        display="Créatinine", value_num=12.5, unit="mg/L", ref_low="7 mg/L",
                                        ref_high="12 mg/L", interpretation="H", status="completed",
                                        effective="20240315073000")))
    assert obs["code"]["coding"][0] == {"system": "http://loinc.org", "code": "2160-0", "display": "Créatinine"}
    assert obs["valueQuantity"] == {"value": 12.5, "unit": "mg/L", "system": "http://unitsofmeasure.org",
                                    "code": "mg/L"}
    assert obs["referenceRange"][0]["high"]["value"] == 12.0
    assert obs["derivedFrom"][0]["reference"] == "http://h/fhir/DocumentReference/0b3c2f44-52c7-4c5e-9b43-0f8d6c1a2b3c"
    assert obs["meta"]["source"] == obs["derivedFrom"][0]["reference"]


def test_allergy_type_from_its_snomed_code():
    allergy = _valid(mapper().resource(fact("allergy", code="XM5DJ7", display="PARACETAMOL", status="active",
                                            detail={"type": {"code": "416098002", "display": "x"},
                                                    "criticality": "low"})))
    assert (allergy["type"], allergy["category"], allergy["criticality"]) == ("allergy", ["medication"], "low")
    assert allergy["clinicalStatus"]["coding"][0]["code"] == "active"


def test_an_allergy_whose_document_gives_no_status_says_it_is_unknown():
    """R4 ait-1: clinicalStatus SHALL be present unless the allergy is entered-in-error; a
    document that gives none gets the data-absent-reason 'unknown', not a guessed status."""
    allergy = _valid(mapper().resource(fact("allergy", code="XM5DJ7", display="PARACETAMOL")))
    [absent] = allergy["clinicalStatus"]["extension"]
    assert absent == {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}
    assert "coding" not in allergy["clinicalStatus"]
    erroneous = _valid(mapper().resource(fact("allergy", code="XM5DJ7", detail={"verification": "entered-in-error"})))
    assert "clinicalStatus" not in erroneous


def test_current_treatment_and_other_resources_are_valid():
    ongoing = fact("medication", display="LEVOTHYROX", effective="20220211", detail={"mood": "EVN"})
    ended = fact("medication", display="AMOXICILLINE", effective="20211201", effective_end="20211206")
    assert is_current_treatment(ongoing) and not is_current_treatment(ended)
    assert is_current_treatment(fact("medication", effective_end="20301231"), today="20260101")
    assert _valid(mapper().resource(ongoing))["status"] == "active"
    assert _valid(mapper().resource(ended))["status"] == "completed"
    _valid(mapper().resource(fact("problem", code="E06.3", code_system="2.16.840.1.113883.6.3",
                                  display="Thyroïdite", status="resolved", effective="2024",
                                  effective_end="20240301")))
    vaccine = _valid(mapper().resource(fact("immunization", code="61077869", display="BCG", status="completed",
                                            detail={"lot": "235421176"})))
    assert vaccine["occurrenceString"] == "unknown" and vaccine["lotNumber"] == "235421176"
