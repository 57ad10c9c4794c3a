"""Level-3 CDA entries -> facts, by IHE PCC / XD-LAB entry templates.

The CI-SIS document models reuse the IHE entry templates (Laboratory Observation,
Allergy and Intolerance, Problem, Medication, Immunization, Vital Sign), so one reader
per template serves every model. Facts are extracted only from the document models
listed in KNOWN_MODELS (those of the ANS example corpus); any other document is indexed
as a document only (its text is still searchable).

Nesting matters: the drug that caused an adverse reaction is a Medication entry inside
an Allergy entry, and is not a current treatment. Problems and allergies are read where
the models put them (an entry, or a concern act's subject); medications and
vaccinations only as entries of their own; lab results and vital signs wherever they
are (batteries and specimen acts nest them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from lxml import etree

from .cdaread import (
    HL7,
    XSI_TYPE,
    child,
    children,
    clean,
    coded,
    effective,
    inherited_time,
    interval,
    narrative_index,
    number_text,
    original_text,
    panel_name,
    quantity,
    section_title,
    templates,
)

LAB, VITAL, ALLERGY, PROBLEM, MEDICATION, IMMUNIZATION = (
    "lab", "vital", "allergy", "problem", "medication", "immunization")
KINDS = (LAB, VITAL, ALLERGY, PROBLEM, MEDICATION, IMMUNIZATION)

# IHE entry templates
T_LAB_OBSERVATION = "1.3.6.1.4.1.19376.1.3.1.6"
T_VITAL_SIGN = "1.3.6.1.4.1.19376.1.5.3.1.4.13.2"
T_ALLERGY = "1.3.6.1.4.1.19376.1.5.3.1.4.6"
T_PROBLEM = "1.3.6.1.4.1.19376.1.5.3.1.4.5"
T_CONCERNS = {"1.3.6.1.4.1.19376.1.5.3.1.4.5.1", "1.3.6.1.4.1.19376.1.5.3.1.4.5.2",
              "1.3.6.1.4.1.19376.1.5.3.1.4.5.3"}
T_PROBLEM_STATUS = "1.3.6.1.4.1.19376.1.5.3.1.4.1.1"
T_SEVERITY = "1.3.6.1.4.1.19376.1.5.3.1.4.1"
T_MEDICATION = "1.3.6.1.4.1.19376.1.5.3.1.4.7"
T_IMMUNIZATION = "1.3.6.1.4.1.19376.1.5.3.1.4.12"
LOINC_CRITICALITY = "82606-5"
LOINC_CERTAINTY = "66455-7"   # FR-Certitude: the entry's verification status (condition-ver-status codes)

# CI-SIS document models (ClinicalDocument/templateId, 1.2.250.1.213.1.1.1.x) whose
# entries are read; they are the models of the ANS example corpus.
KNOWN_MODELS = {
    "1.2.250.1.213.1.1.1.13": "VSM (volet de synthèse médicale)",
    "1.2.250.1.213.1.1.1.55": "BIO-CR-BIO (compte rendu de biologie)",
    "1.2.250.1.213.1.1.1.59": "BIO-TROD (test rapide)",
    "1.2.250.1.213.1.1.1.51": "IPS-FR (patient summary)",
    "1.2.250.1.213.1.1.1.37": "VAC (vaccinations)",
    "1.2.250.1.213.1.1.1.46": "VAC-NOTE (note de vaccination)",
    "1.2.250.1.213.1.1.1.21": "LDL-EES (lettre de liaison de sortie)",
    "1.2.250.1.213.1.1.1.29": "LDL-SES (lettre de liaison de sortie)",
    "1.2.250.1.213.1.1.1.22": "DLU-EHPAD DLU",
    "1.2.250.1.213.1.1.1.23": "DLU-EHPAD FLUDT",
    "1.2.250.1.213.1.1.1.40": "ANEST-CR-ANEST",
    "1.2.250.1.213.1.1.1.15": "AVC-AUNV", "1.2.250.1.213.1.1.1.16": "AVC-EUNV",
    "1.2.250.1.213.1.1.1.17": "AVC-SUNV",
    "1.2.250.1.213.1.1.1.32": "CANCER-CR-GM", "1.2.250.1.213.1.1.1.27": "CANCER-D2LM-FIN",
    "1.2.250.1.213.1.1.1.8": "CANCER-FRCP", "1.2.250.1.213.1.1.1.26": "CANCER-PPS",
    "1.2.250.1.213.1.1.1.2.1.2": "CARD-F-PRC-TAP", "1.2.250.1.213.1.1.1.2.1.3": "CARD-F-PRC-DCI",
    "1.2.250.1.213.1.1.1.2.1.5": "CARD-F-PRC-PPV",
    "1.2.250.1.213.1.1.1.5.1": "CSE-CS8", "1.2.250.1.213.1.1.1.5.2": "CSE-CS9",
    "1.2.250.1.213.1.1.1.5.3": "CSE-CS24", "1.2.250.1.213.1.1.1.5.4": "CSE-MDE",
    "1.2.250.1.213.1.1.1.12.1": "OBP-SAP", "1.2.250.1.213.1.1.1.12.2": "OBP-SNM",
    "1.2.250.1.213.1.1.1.12.3": "OBP-SNE", "1.2.250.1.213.1.1.1.12.4": "OBP-SCM",
    "1.2.250.1.213.1.1.1.30": "SDM-MR", "1.2.250.1.213.1.1.1.38": "TLM-DA",
    "1.2.250.1.213.1.1.1.39": "eP-MED-DM (prescription)", "1.2.250.1.213.1.1.1.54": "eDISP-MED",
    "1.2.250.1.213.1.1.1.36": "CNAM-HR", "1.2.250.1.213.1.1.1.45": "IMG-CR-IMG",
    "1.2.250.1.213.1.1.1.47": "IMG-DA-IMG",
}
_H = f"{{{HL7}}}"


@dataclass
class Fact:
    kind: str
    code: str = ""
    code_system: str = ""
    display: str = ""
    value_num: float | None = None
    value_text: str = ""
    unit: str = ""
    ref_low: str = ""
    ref_high: str = ""
    ref_text: str = ""
    interpretation: str = ""
    status: str = ""
    effective: str = ""          # UTC digits (or as given without an offset), <= 14
    effective_end: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Its fields by name (`dataclasses.asdict` deep-copies each value: ten times slower,
        for a dict of strings written at once)."""
        out = {name: getattr(self, name) for name in _FACT_FIELDS}
        out["detail"] = dict(self.detail)
        return out


_FACT_FIELDS = tuple(f.name for f in fields(Fact))


def document_models(doc: etree._Element) -> list[str]:
    return [t.get("root", "") for t in doc.findall(_H + "templateId")]


def known_model(doc: etree._Element) -> str:
    """The document's known CI-SIS model root, or '' (then nothing is extracted)."""
    for root in reversed(document_models(doc)):
        if root in KNOWN_MODELS:
            return root
    return ""


def extract(doc: etree._Element) -> list[Fact]:
    """The facts of a ClinicalDocument element, in document order; [] for unknown models."""
    if doc is None or doc.tag != _H + "ClinicalDocument" or not known_model(doc):
        return []
    body = child(doc, "component", "structuredBody")
    if body is None:
        return []
    narrative = narrative_index(body)
    doc_time = ""
    et = child(doc, "effectiveTime")
    if et is not None:
        doc_time = interval(et)[0]
    facts: list[Fact] = []
    for el in body.iter(_H + "observation", _H + "substanceAdministration"):
        tids = templates(el)
        if not tids:
            continue
        fact = None
        if el.tag == _H + "observation":
            if T_LAB_OBSERVATION in tids:
                fact = _lab(el, narrative, LAB)
            elif T_VITAL_SIGN in tids:
                fact = _lab(el, narrative, VITAL)
            elif T_ALLERGY in tids and _top_level(el):
                fact = _allergy(el, narrative)
            elif T_PROBLEM in tids and _top_level(el):
                fact = _problem(el, narrative)
        elif _is_entry(el):
            if T_IMMUNIZATION in tids:
                fact = _immunization(el, narrative)
            elif T_MEDICATION in tids:
                fact = _medication(el, narrative)
        if fact is None:
            continue
        if not fact.effective and fact.kind in (LAB, VITAL):
            fact.effective = inherited_time(el) or doc_time
        section = section_title(el)
        if section:
            fact.detail["section"] = section
        if fact.kind == LAB:
            panel = panel_name(el)
            if panel:
                fact.detail["panel"] = panel
        facts.append(fact)
    return facts


# --- placement -------------------------------------------------------------------------
def _is_entry(el: etree._Element) -> bool:
    parent = el.getparent()
    return parent is not None and parent.tag == _H + "entry"


def _top_level(el: etree._Element) -> bool:
    """An entry of its own, or the subject of a concern act that is one."""
    if _is_entry(el):
        return True
    rel = el.getparent()
    if rel is None or rel.tag != _H + "entryRelationship":
        return False
    act = rel.getparent()
    return act is not None and act.tag == _H + "act" and bool(templates(act) & T_CONCERNS) and _is_entry(act)


def _negated(el: etree._Element) -> bool:
    return (el.get("negationInd") or "").lower() == "true"


def _related(el: etree._Element, template: str = "", code: str = "") -> etree._Element | None:
    for rel in children(el, "entryRelationship"):
        obs = child(rel, "observation")
        if obs is None:
            continue
        if template and template in templates(obs):
            return obs
        if code and ((obs_code := child(obs, "code")) is not None and obs_code.get("code") == code):
            return obs
    return None


def _certainty(el: etree._Element, fact: Fact) -> None:
    """The entry's certainty (FR-Certitude), as the document codes it, in detail["verification"]."""
    value = child(_related(el, code=LOINC_CERTAINTY), "value")
    if value is not None and value.get("code"):
        fact.detail["verification"] = value.get("code", "")


def _clinical_status(el: etree._Element) -> str:
    status = _related(el, T_PROBLEM_STATUS)
    if status is not None:
        value = child(status, "value")
        if value is not None and value.get("code"):
            return value.get("code", "")
    parent = el.getparent()
    act = parent.getparent() if parent is not None else None
    if act is not None and act.tag == _H + "act":
        sc = child(act, "statusCode")
        if sc is not None and sc.get("code"):
            return {"active": "active", "completed": "resolved", "suspended": "inactive",
                    "aborted": "inactive"}.get(sc.get("code", ""), "")
    return ""


# --- readers -----------------------------------------------------------------------------
def _dated_fact(kind: str, el: etree._Element, named: tuple[str, str, str],
                narrative: dict[str, str] | None = None, status: str = "") -> Fact | None:
    """The fact `el` records, dated by its effectiveTime and named by `named` (code, system,
    display) or else, given the `narrative`, by its original text; None when it has no name."""
    code, system, display = named
    if not code and not display and narrative is not None:
        display = original_text(child(el, "text"), narrative)
    if not code and not display:
        return None
    fact = Fact(kind, code, system, display, status=status)
    fact.effective, fact.effective_end = effective(el)
    return fact


def _lab(el: etree._Element, narrative: dict[str, str], kind: str) -> Fact | None:
    fact = _dated_fact(kind, el, coded(child(el, "code"), narrative))
    if fact is None:
        return None
    value = child(el, "value")
    if value is not None:
        vtype = value.get(XSI_TYPE, "").rpartition(":")[2]
        if vtype in ("PQ", "INT", "REAL", "MO"):
            fact.value_num, fact.unit, fact.value_text = quantity(value)
            if number_text(value.get("value")):   # the digits as written: their precision is the result's
                fact.detail["value"] = number_text(value.get("value"))
        elif vtype == "IVL_PQ":
            _interval_value(value, fact)
        elif vtype in ("CD", "CE", "CV", "CO"):
            vcode, vsystem, vdisplay = coded(value, narrative)
            fact.value_text = vdisplay or vcode
            if vcode:
                fact.detail["value_code"] = {"code": vcode, "system": vsystem, "display": vdisplay}
        elif vtype in ("ST", "ED", "BL", "TS"):
            fact.value_text = clean(value.text) or value.get("value", "") or original_text(value, narrative)
        else:
            fact.value_text = clean(value.text) or value.get("value", "")
        if value.get("nullFlavor") and not fact.value_text and "value" not in fact.detail:
            fact.detail["value_absent"] = value.get("nullFlavor", "")
    interp = child(el, "interpretationCode")
    if interp is not None:
        fact.interpretation = interp.get("code", "")
    rng = child(el, "referenceRange", "observationRange")
    if rng is not None:
        rvalue = child(rng, "value")
        if rvalue is not None:
            low, high = child(rvalue, "low"), child(rvalue, "high")
            fact.ref_low = quantity(low)[2] if low is not None else ""
            fact.ref_high = quantity(high)[2] if high is not None else ""
        fact.ref_text = original_text(child(rng, "text"), narrative)
    method = child(el, "methodCode")
    if method is not None and method.get("displayName"):
        fact.detail["method"] = clean(method.get("displayName"))
    status = child(el, "statusCode")
    fact.status = status.get("code", "") if status is not None else ""
    return fact


def _interval_value(value: etree._Element, fact: Fact) -> None:
    """An IVL_PQ result: a range (low and high), or a bound alone, as a lab writes "< 5" (high
    only) or "> 90" (low only). detail["range"] keeps each bound's digits and whether it is
    included (HL7 v3 IVL: `inclusive`, true unless said false)."""
    bounds: dict[str, dict[str, Any]] = {}
    parts = []
    for side in ("low", "high"):
        bound = child(value, side)
        if bound is None:
            continue
        _number, unit, text = quantity(bound)
        if text:
            parts.append(text)
        digits = number_text(bound.get("value"))
        if digits:
            bounds[side] = {"value": digits, "unit": unit,
                            "inclusive": (bound.get("inclusive") or "true").lower() != "false"}
        fact.unit = fact.unit or unit
    if len(parts) == 1 and len(bounds) == 1:
        side, only = next(iter(bounds.items()))
        sign = {"low": ">", "high": "<"}[side] + ("=" if only["inclusive"] else "")
        fact.value_text = f"{sign} {parts[0]}"
    else:
        fact.value_text = " - ".join(parts)
    if bounds:
        fact.detail["range"] = bounds


def problem_status(status: str, end: str) -> str:
    """A problem's clinical status given its end (PCC Problem Entry: effectiveTime/high is when
    the problem was resolved): an ended problem is resolved unless the document says it is
    inactive or in remission, whatever its concern's or status observation's "active" says
    (FHIR R4 con-4: an abated Condition is inactive, resolved or in remission)."""
    if end and status not in ("inactive", "resolved", "remission"):
        return "resolved"
    return status


def _allergy(el: etree._Element, narrative: dict[str, str]) -> Fact | None:
    if _negated(el):
        return None
    type_code, type_system, type_display = coded(child(el, "code"), narrative)
    agent = child(el, "participant", "participantRole", "playingEntity")
    code = system = display = ""
    if agent is not None:
        code, system, display = coded(child(agent, "code"), narrative)
        name = child(agent, "name")
        display = display or clean(name.text if name is not None else "")
    if not code and not display:   # no agent: the reaction described in value
        code, system, display = coded(child(el, "value"), narrative)
    fact = _dated_fact(ALLERGY, el, (code, system, display), narrative, _clinical_status(el))
    if fact is None:
        return None
    fact.detail["type"] = {"code": type_code, "system": type_system, "display": type_display}
    reaction = child(el, "value")
    if reaction is not None and agent is not None:
        rcode, rsystem, rdisplay = coded(reaction, narrative)
        if rcode or rdisplay:
            fact.detail["reaction"] = {"code": rcode, "system": rsystem, "display": rdisplay}
    crit = _related(el, code=LOINC_CRITICALITY)
    crit_value = child(crit, "value")
    if crit_value is not None:
        fact.detail["criticality"] = crit_value.get("code", "")
        fact.detail["criticality_display"] = coded(crit_value, narrative)[2]
    _certainty(el, fact)
    return fact


def _problem(el: etree._Element, narrative: dict[str, str]) -> Fact | None:
    if _negated(el):
        return None
    fact = _dated_fact(PROBLEM, el, coded(child(el, "value"), narrative), narrative, _clinical_status(el))
    if fact is None:
        return None
    if fact.effective_end and fact.status != problem_status(fact.status, fact.effective_end):
        if fact.status:
            fact.detail["stated_status"] = fact.status   # what the document said of the ended problem
        fact.status = problem_status(fact.status, fact.effective_end)
    ptype = coded(child(el, "code"), narrative)
    fact.detail["type"] = {"code": ptype[0], "system": ptype[1], "display": ptype[2]}
    sev = _related(el, T_SEVERITY)
    sev_value = child(sev, "value")
    if sev_value is not None:
        fact.detail["severity"] = coded(sev_value, narrative)[2] or sev_value.get("code", "")
    _certainty(el, fact)
    return fact


def _product(el: etree._Element, narrative: dict[str, str]) -> tuple[str, str, str, etree._Element | None]:
    material = child(el, "consumable", "manufacturedProduct", "manufacturedMaterial")
    if material is None:
        return "", "", "", None
    code, system, display = coded(child(material, "code"), narrative)
    name = child(material, "name")
    display = clean(name.text) if name is not None and clean(name.text) else display
    return code, system, display, material


def _medication(el: etree._Element, narrative: dict[str, str]) -> Fact | None:
    code, system, display, _material = _product(el, narrative)
    fact = _dated_fact(MEDICATION, el, (code, system, display), narrative)
    if fact is None:
        return None
    sc = child(el, "statusCode")
    fact.status = sc.get("code", "") if sc is not None else ""
    fact.detail["mood"] = el.get("moodCode", "")
    route = child(el, "routeCode")
    if route is not None:
        fact.detail["route"] = coded(route, narrative)[2] or route.get("code", "")
    dose = child(el, "doseQuantity")
    if dose is not None:
        fact.detail["dose"] = quantity(dose)[2] or quantity(child(dose, "low"))[2]
    dosage = original_text(child(el, "text"), narrative)
    if dosage:
        fact.detail["text"] = dosage
    return fact


def _immunization(el: etree._Element, narrative: dict[str, str]) -> Fact | None:
    code, system, display, material = _product(el, narrative)
    fact = _dated_fact(IMMUNIZATION, el, (code, system, display))
    if fact is None:
        return None
    fact.status = "not-done" if _negated(el) else "completed"
    if material is not None:
        lot = child(material, "lotNumberText")
        if lot is not None and clean(lot.text):
            fact.detail["lot"] = clean(lot.text)
    route = child(el, "routeCode")
    if route is not None:
        fact.detail["route"] = coded(route, narrative)[2] or route.get("code", "")
    series = coded(child(el, "code"), narrative)
    if series[2]:
        fact.detail["series"] = series[2]
    return fact
