"""Clinical facts (partage.clinical) -> FHIR R4 resources.

One function per resource type; each resource says where it comes from: `meta.source`
is the URL of the source DocumentReference (and an Observation also lists it in
`derivedFrom`). Resource ids are the facts' keys, stable for the life of the fact.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from ..clinical.extract import ALLERGY, IMMUNIZATION, LAB, MEDICATION, PROBLEM, VITAL
from ..metadata.datatypes import CX
from ..mhd.codes import system_of
from ..mhd.mapping import resource_id
from ..query.clinical import FactRow, is_current_treatment

Json = dict[str, Any]
RESOURCE_OF_KIND = {LAB: "Observation", VITAL: "Observation", ALLERGY: "AllergyIntolerance",
                    PROBLEM: "Condition", MEDICATION: "MedicationStatement", IMMUNIZATION: "Immunization"}
KINDS_OF_RESOURCE: dict[str, list[str]] = {}
for _kind, _rtype in RESOURCE_OF_KIND.items():
    KINDS_OF_RESOURCE.setdefault(_rtype, []).append(_kind)

OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
# A status the document does not give (R4 ait-1 requires AllergyIntolerance.clinicalStatus):
# the data-absent-reason extension says it is unknown rather than asserting one.
UNKNOWN_STATUS = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                                 "valueCode": "unknown"}]}
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
# The document's certainty (FR-Certitude, JDV_HL7_condition-ver-status-CISIS) -> verificationStatus.
# AllergyIntolerance's value set (required binding) has no provisional / differential: unconfirmed.
ALLERGY_VERIFICATIONS = {"confirmed": "confirmed", "unconfirmed": "unconfirmed", "provisional": "unconfirmed",
                         "differential": "unconfirmed", "refuted": "refuted", "entered-in-error": "entered-in-error"}
CONDITION_VERIFICATIONS = {c: c for c in ("confirmed", "unconfirmed", "provisional", "differential", "refuted",
                                          "entered-in-error")}
UCUM = "http://unitsofmeasure.org"
# SNOMED CT types of an allergy / intolerance entry (PCC; CI-SIS JDV_TypeEvenementIndesirablePrevisible)
# -> (AllergyIntolerance.type, category)
ALLERGY_TYPES = {
    "416098002": ("allergy", "medication"), "59037007": ("intolerance", "medication"),
    "419511003": ("", "medication"), "414285001": ("allergy", "food"), "235719002": ("intolerance", "food"),
    "418471000": ("", "food"), "419199007": ("allergy", ""), "420134006": ("", ""),
    "232347008": ("allergy", "environment"), "426232007": ("allergy", "environment"),
    "418038007": ("", ""),
}


def fhir_datetime(digits: str) -> str:
    """Stored digits (UTC when the source gave an offset) -> FHIR date / dateTime."""
    d = "".join(ch for ch in digits if ch.isdigit())
    if len(d) < 4:
        return ""
    if len(d) < 6:
        return d[:4]
    if len(d) < 8:
        return f"{d[:4]}-{d[4:6]}"
    if len(d) < 10:
        return f"{d[:4]}-{d[4:6]}-{d[6:8]}"
    d = d.ljust(14, "0")
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}T{d[8:10]}:{d[10:12]}:{d[12:14]}Z"


def concept(code: str, system: str, display: str) -> Json:
    out: Json = {}
    if code:
        coding: Json = {"code": code}
        if system:
            coding["system"] = system_of(system)
        if display:
            coding["display"] = display
        out["coding"] = [coding]
    if display:
        out["text"] = display
    return out or {"text": "(unnamed)"}


def fhir_decimal(text: str) -> Decimal | None:
    """A number as written (CDA REAL / PQ digits) -> a FHIR decimal keeping its precision
    (R4 datatypes: "the precision of the decimal value has significance": 12.20 stays 12.20);
    None for what is not a finite number. The JSON writer (`mhd.formats`) writes it as is."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _number(text: str) -> tuple[Decimal | None, str]:
    parts = text.split(None, 1)
    if not parts:
        return None, ""
    number = fhir_decimal(parts[0])
    if number is None:
        return None, text
    return number, parts[1] if len(parts) > 1 else ""


def _quantity(value: Decimal, unit: str, comparator: str = "") -> Json:
    out: Json = {"value": value}
    if comparator:
        out["comparator"] = comparator
    if unit and not any(ch.isspace() for ch in unit):   # a UCUM code has no spaces
        out.update(unit=unit, system=UCUM, code=unit)
    elif unit:
        out["unit"] = unit
    return out


def _result_value(fact: FactRow) -> tuple[str, Any] | None:
    """(value[x] name, value) of a lab result or vital sign: its number with the document's own
    digits, a bound alone as a comparator ("< 5": IVL_PQ high only), a range, a code or text."""
    number = fhir_decimal(fact.detail.get("value", ""))
    if number is None and fact.value_num is not None:   # a fact read before detail["value"] was kept:
        # the digits of its text ("1.950 m[IU]/L"), else the float's shortest repr (never its binary expansion)
        number = _number(fact.value_text)[0]
        if number is None:
            number = fhir_decimal(repr(fact.value_num))
    if number is not None:
        return "valueQuantity", _quantity(number, fact.unit)
    bounds = fact.detail.get("range") or {}
    quantities = {side: _quantity(n, b.get("unit", "")) for side, b in bounds.items()
                  if (n := fhir_decimal(b.get("value", ""))) is not None}
    if len(quantities) == 1:
        side, quantity = next(iter(quantities.items()))
        quantity["comparator"] = {"low": ">", "high": "<"}[side] + ("=" if bounds[side].get("inclusive") else "")
        return "valueQuantity", quantity
    if len(quantities) == 2 and quantities["low"]["value"] <= quantities["high"]["value"]:   # rng-2
        return "valueRange", quantities
    if fact.detail.get("value_code"):
        vc = fact.detail["value_code"]
        return "valueCodeableConcept", concept(vc.get("code", ""), vc.get("system", ""), vc.get("display", ""))
    if fact.value_text:
        return "valueString", fact.value_text
    return None


# HL7 v3 NullFlavor of an absent result -> data-absent-reason (R4 obs-6: only without a value)
ABSENT_REASONS = {"UNK": "unknown", "ASKU": "asked-unknown", "NAV": "temp-unknown", "NASK": "not-asked",
                  "MSK": "masked", "NA": "not-applicable", "NAN": "not-a-number", "NINF": "negative-infinity",
                  "PINF": "positive-infinity", "NI": "unknown", "OTH": "unknown", "UNC": "unknown",
                  "QS": "unknown", "TRC": "unknown"}
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"


class FactMapper:
    """Builds resources for one request (base URL, patient references)."""

    def __init__(self, base_url: str, patient_reference: Callable[[CX], Json]) -> None:
        self.base_url = base_url
        self.patient_reference = patient_reference

    def document_url(self, fact: FactRow) -> str:
        return f"{self.base_url}/DocumentReference/{resource_id(fact.document.entry_uuid)}"

    def _base(self, fact: FactRow) -> Json:
        return {"resourceType": RESOURCE_OF_KIND[fact.kind], "id": str(fact.pk),
                "meta": {"source": self.document_url(fact)}}

    def _refer_to_patient(self, res: Json, key: str, fact: FactRow) -> None:
        """res[key]: the fact's patient, as its document names it (a registered one always does)."""
        if fact.document.patient_id is not None:
            res[key] = self.patient_reference(fact.document.patient_id)

    def resource(self, fact: FactRow) -> Json:
        return {LAB: self.observation, VITAL: self.observation, ALLERGY: self.allergy,
                PROBLEM: self.condition, MEDICATION: self.medication,
                IMMUNIZATION: self.immunization}[fact.kind](fact)

    def observation(self, fact: FactRow) -> Json:
        res = self._base(fact)
        res["status"] = {"completed": "final", "active": "preliminary", "aborted": "cancelled"}.get(
            fact.status, "final")
        category = "laboratory" if fact.kind == LAB else "vital-signs"
        res["category"] = [{"coding": [{"system": OBS_CATEGORY, "code": category}]}]
        res["code"] = concept(fact.code, fact.code_system, fact.display)
        self._refer_to_patient(res, "subject", fact)
        when = fhir_datetime(fact.effective)
        if when:
            res["effectiveDateTime"] = when
        value = _result_value(fact)
        if value is not None:
            res[value[0]] = value[1]
        elif fact.detail.get("value_absent"):
            res["dataAbsentReason"] = {"coding": [{"system": DATA_ABSENT_REASON, "code": ABSENT_REASONS.get(
                fact.detail["value_absent"], "unknown")}]}
        if fact.interpretation:
            res["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": fact.interpretation}]}]
        rng: Json = {}
        for side, raw in (("low", fact.ref_low), ("high", fact.ref_high)):
            number, unit = _number(raw)
            if number is not None:
                rng[side] = _quantity(number, unit)
        if fact.ref_text:
            rng["text"] = fact.ref_text
        if rng:
            res["referenceRange"] = [rng]
        if fact.detail.get("method"):
            res["method"] = {"text": fact.detail["method"]}
        res["derivedFrom"] = [{"reference": self.document_url(fact)}]
        return res

    def allergy(self, fact: FactRow) -> Json:
        res = self._base(fact)
        status = {"active": "active", "inactive": "inactive", "resolved": "resolved"}.get(fact.status)
        if status:
            res["clinicalStatus"] = {"coding": [{"system": ALLERGY_CLINICAL, "code": status}]}
        verification = ALLERGY_VERIFICATIONS.get(fact.detail.get("verification", ""))
        if verification:   # what the document says (FR-Certitude); nothing said, nothing asserted
            res["verificationStatus"] = {"coding": [{"system": ALLERGY_VERIFICATION, "code": verification}]}
        if verification == "entered-in-error":   # ait-2: no clinicalStatus then
            res.pop("clinicalStatus", None)
        elif "clinicalStatus" not in res:   # ait-1 wants one; the document says none: said absent, not guessed
            res["clinicalStatus"] = UNKNOWN_STATUS
        atype = fact.detail.get("type") or {}
        known = ALLERGY_TYPES.get(atype.get("code", ""))
        if known:
            kind, category = known
            if kind:
                res["type"] = kind
            if category:
                res["category"] = [category]
        elif atype.get("display"):   # an uncoded type: what its words say
            lowered = atype["display"].lower()
            if "intol" in lowered:
                res["type"] = "intolerance"
            elif "allerg" in lowered:
                res["type"] = "allergy"
            if "médic" in lowered or "medic" in lowered:
                res["category"] = ["medication"]
            elif "aliment" in lowered:
                res["category"] = ["food"]
        if fact.detail.get("criticality") in ("low", "high", "unable-to-assess"):
            res["criticality"] = fact.detail["criticality"]
        res["code"] = concept(fact.code, fact.code_system, fact.display)
        self._refer_to_patient(res, "patient", fact)
        when = fhir_datetime(fact.effective)
        if when:
            res["onsetDateTime"] = when
        reaction = fact.detail.get("reaction")
        if reaction and (reaction.get("code") or reaction.get("display")):
            res["reaction"] = [{"manifestation": [concept(reaction.get("code", ""), reaction.get("system", ""),
                                                          reaction.get("display", ""))]}]
        return res

    def condition(self, fact: FactRow) -> Json:
        res = self._base(fact)
        status = {"active": "active", "recurrence": "recurrence", "relapse": "relapse",
                  "inactive": "inactive", "remission": "remission", "resolved": "resolved"}.get(fact.status)
        if status:
            res["clinicalStatus"] = {"coding": [{"system": CONDITION_CLINICAL, "code": status}]}
        verification = CONDITION_VERIFICATIONS.get(fact.detail.get("verification", ""))
        if verification:
            res["verificationStatus"] = {"coding": [{"system": CONDITION_VERIFICATION, "code": verification}]}
        if verification == "entered-in-error":   # con-5: no clinicalStatus then
            res.pop("clinicalStatus", None)
        elif "clinicalStatus" not in res:   # con-3 wants one on a problem-list item: said absent, not guessed
            res["clinicalStatus"] = UNKNOWN_STATUS
        res["category"] = [{"coding": [{"system": CONDITION_CATEGORY, "code": "problem-list-item"}]}]
        if fact.detail.get("severity"):
            res["severity"] = {"text": fact.detail["severity"]}
        res["code"] = concept(fact.code, fact.code_system, fact.display)
        self._refer_to_patient(res, "subject", fact)
        start, end = fhir_datetime(fact.effective), fhir_datetime(fact.effective_end)
        if start:
            res["onsetDateTime"] = start
        if end:
            res["abatementDateTime"] = end
        return res

    def medication(self, fact: FactRow) -> Json:
        res = self._base(fact)
        res["status"] = "active" if is_current_treatment(fact) else "completed"
        if fact.detail.get("mood") == "INT":
            res["status"] = "intended" if is_current_treatment(fact) else "completed"
        res["medicationCodeableConcept"] = concept(fact.code, fact.code_system, fact.display)
        self._refer_to_patient(res, "subject", fact)
        start, end = fhir_datetime(fact.effective), fhir_datetime(fact.effective_end)
        if start or end:
            res["effectivePeriod"] = {k: v for k, v in (("start", start), ("end", end)) if v}
        dosage: Json = {}
        if fact.detail.get("text"):
            dosage["text"] = fact.detail["text"]
        if fact.detail.get("route"):
            dosage["route"] = {"text": fact.detail["route"]}
        if dosage:
            res["dosage"] = [dosage]
        res["derivedFrom"] = [{"reference": self.document_url(fact)}]
        return res

    def immunization(self, fact: FactRow) -> Json:
        res = self._base(fact)
        res["status"] = "not-done" if fact.status == "not-done" else "completed"
        res["vaccineCode"] = concept(fact.code, fact.code_system, fact.display)
        self._refer_to_patient(res, "patient", fact)
        when = fhir_datetime(fact.effective)
        if when:
            res["occurrenceDateTime"] = when
        else:
            res["occurrenceString"] = "unknown"
        if fact.detail.get("lot"):
            res["lotNumber"] = fact.detail["lot"]
        if fact.detail.get("route"):
            res["route"] = {"text": fact.detail["route"]}
        if fact.detail.get("series"):
            res["note"] = [{"text": fact.detail["series"]}]
        return res
