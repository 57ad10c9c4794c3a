"""Clinical FHIR resources judged against FHIR R4 (round 3): values and invariants.

Every CDA of the corpus whose model Partage reads facts from, plus hand-made edge documents, is
filed by ITI-41 into a real server for one patient; every clinical resource is then read back
through the FHIR HTTP API (searches, paged, and reads, JSON and XML) and judged:

- by the fhir.resources R4B models (structure, cardinalities, datatypes' regexes);
- by the R4 invariants the models do not check (`check_invariants` says which);
- a result keeps the precision its document wrote (R4 datatypes.html#decimal: "the precision of
  the decimal value has significance", 1.950 is not 1.95), never through a float;
- a bound alone ("< 5": IVL_PQ with only a high) is a Quantity with its comparator, not the
  bare number;
- an ended problem (PCC Problem Entry effectiveTime/high) whose status says "active" is served
  as resolved (R4 con-4: "If condition is abated, then clinicalStatus must be either inactive,
  resolved, or remission").
"""

from __future__ import annotations

import copy
import json
import re
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
import requests
from fhir.resources.R4B import get_fhir_model_class
from lxml import etree

from partage.clinical.extract import known_model
from partage.config import Settings
from partage.services import Services
from tests import clinical_support as C
from tests.conftest import corpus_path
from tests.support import LiveServer
from tests.xdsclient import XdsClient

pytestmark = pytest.mark.corpus

NIR = "279035121518958"
PID = C.patient_cx(NIR)
EMPTY_PID = C.patient_cx("179035121518947")   # a record without any document
H = "{urn:hl7-org:v3}"
XSI = "{http://www.w3.org/2001/XMLSchema-instance}type"
T_LAB = "1.3.6.1.4.1.19376.1.3.1.6"
T_PROBLEM = "1.3.6.1.4.1.19376.1.5.3.1.4.5"
JSON = {"Accept": "application/fhir+json"}
XML = {"Accept": "application/fhir+xml"}
EDGE_SYSTEM = "1.2.250.1.999.3.1"
CLINICAL = ("Observation", "Condition", "AllergyIntolerance", "Immunization", "MedicationStatement")
FHIR_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")

# code -> (the CDA <value> (attributes, children), the observation's effectiveTime attributes or None)
EDGES: dict[str, tuple[dict, list[tuple[str, dict]], dict | None]] = {
    "two-decimals": ({XSI: "PQ", "value": "12.20", "unit": "mg/L"}, [], None),
    "exponent": ({XSI: "PQ", "value": "1.0e3", "unit": "/uL"}, [], None),
    "huge": ({XSI: "PQ", "value": "123456789012345678901234.5678", "unit": "/L"}, [], None),
    "tiny": ({XSI: "PQ", "value": "0.000000000000000000012", "unit": "mol/L"}, [], None),
    "overflow": ({XSI: "PQ", "value": "1e400", "unit": "/L"}, [], None),
    "not-a-number": ({XSI: "PQ", "value": "NaN", "unit": "g/L"}, [], None),
    "negative": ({XSI: "PQ", "value": "-3.50", "unit": "mmol/L"}, [], None),
    "zero": ({XSI: "PQ", "value": "0.00", "unit": "g/L"}, [], None),
    "no-unit": ({XSI: "PQ", "value": "7"}, [], None),
    "braces": ({XSI: "PQ", "value": "450", "unit": "10*9/L{cells}"}, [], None),
    "null-value": ({XSI: "PQ", "nullFlavor": "UNK"}, [], None),
    "text": ({XSI: "ST"}, [], None),
    "below": ({XSI: "IVL_PQ"}, [("high", {"value": "5", "unit": "mg/L", "inclusive": "false"})], None),
    "at-most": ({XSI: "IVL_PQ"}, [("high", {"value": "0.50", "unit": "g/L"})], None),
    "above": ({XSI: "IVL_PQ"}, [("low", {"value": "90", "unit": "mL/min", "inclusive": "false"})], None),
    "range": ({XSI: "IVL_PQ"}, [("low", {"value": "2.0", "unit": "g/L"}), ("high", {"value": "4.00", "unit": "g/L"})],
              None),
    "time-null": ({XSI: "PQ", "value": "1.1", "unit": "g/L"}, [], {"nullFlavor": "UNK"}),
    "time-offset": ({XSI: "PQ", "value": "1.2", "unit": "g/L"}, [], {"value": "20240315083000+0100"}),
    "time-not-a-day": ({XSI: "PQ", "value": "1.3", "unit": "g/L"}, [], {"value": "20241399"}),
}


# --- the documents ------------------------------------------------------------------------------
def _corpus_documents() -> list[tuple[str, bytes]]:
    """Every valid corpus CDA whose model Partage reads facts from (as the extractor decides)."""
    out = []
    for path in sorted(corpus_path("cda", "valid").glob("*.xml")):
        data = path.read_bytes()
        try:
            root = etree.fromstring(data)
        except etree.XMLSyntaxError:
            continue
        doc = root if root.tag == H + "ClinicalDocument" else root.find(f".//{H}ClinicalDocument")
        if doc is not None and known_model(doc) and doc.find(f"{H}component/{H}structuredBody") is not None:
            out.append((path.name, data))
    return out


def _edge_lab_document() -> bytes:
    """The TSH report with one more result per edge case beside its first one."""
    root = etree.fromstring(corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_1.xml").read_bytes())
    first = next(o for o in root.iter(H + "observation") if T_LAB in {t.get("root") for t in o.findall(H + "templateId")})
    holder = first.getparent()
    for code, (attrs, kids, when) in reversed(EDGES.items()):
        clone = copy.deepcopy(holder)
        obs = clone.find(H + "observation")
        code_el = obs.find(H + "code")
        for name in list(code_el.attrib):
            del code_el.attrib[name]
        code_el.attrib.update({"code": code, "codeSystem": EDGE_SYSTEM, "displayName": f"Cas limite {code}"})
        for old in obs.findall(H + "value") + obs.findall(H + "referenceRange") + obs.findall(H + "interpretationCode"):
            obs.remove(old)
        value = etree.SubElement(obs, H + "value")
        obs.remove(value)
        obs.insert(list(obs).index(obs.find(H + "effectiveTime")) + 1, value)
        value.attrib.update(attrs)
        if code == "text":
            value.text = "présence de cristaux"
        for name, kattrs in kids:
            etree.SubElement(value, H + name, kattrs)
        if when is not None:
            et = obs.find(H + "effectiveTime")
            for name in list(et.attrib):
                del et.attrib[name]
            et.attrib.update(when)
        holder.addnext(clone)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _ended_active_problem() -> bytes:
    """The IPS-FR example with its first problem ended (effectiveTime/high) while its Problem
    Status Observation still says "active", and its second ended with no status at all."""
    root = etree.fromstring(corpus_path("cda", "valid", "IPS-FR_2024.01_DLU.xml").read_bytes())
    problems = [o for o in root.iter(H + "observation") if T_PROBLEM in {t.get("root") for t in o.findall(H + "templateId")}]
    for problem, code in zip(problems[:2], ("ENDED-ACTIVE", "ENDED-UNSAID"), strict=True):
        value = problem.find(H + "value")
        value.attrib.update({"code": code, "codeSystem": EDGE_SYSTEM})
        etree.SubElement(problem.find(H + "effectiveTime"), H + "high", value="20240301")
        for rel in problem.findall(H + "entryRelationship"):
            inner = rel.find(H + "observation")
            if inner is not None and "1.3.6.1.4.1.19376.1.5.3.1.4.1.1" in {t.get("root") for t in inner.findall(H + "templateId")}:
                if code == "ENDED-UNSAID":
                    problem.remove(rel)
                else:
                    assert inner.find(H + "value").get("code") == "active"
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("clinical-r3") / "data"
    # the header rules only: the edge documents are not examples of their model, on purpose
    with LiveServer(data, mllp=False, env={"PARTAGE_VALIDATION_PROFILE": "structure"}) as live:
        services = Services.open(Settings(data_dir=data), migrate=False)
        with services.registry.write() as conn:
            services.registry.upsert_patient(conn, [PID])
            services.registry.upsert_patient(conn, [EMPTY_PID])
        live.rid = C.public_id(services, PID)
        live.empty_rid = C.public_id(services, EMPTY_PID)
        live.patient = f"Patient/{live.rid}"
        services.close()
        client = XdsClient(live.base_url)
        documents = [*_corpus_documents(), ("edge-labs", _edge_lab_document()),
                     ("edge-problems", _ended_active_problem())]
        live.filed, live.refused = [], {}
        for i, (name, raw) in enumerate(documents):
            cda = C.for_patient(raw, NIR)
            reply = client.provide_and_register(C.submission(cda, f"doc{i}"), {f"doc{i}": cda})
            if reply.status == "Success":
                live.filed.append(name)
            else:
                live.refused[name] = [e.get("codeContext") for e in reply.body.iter("{urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0}RegistryError")]
        assert {"edge-labs", "edge-problems"} <= set(live.filed), live.log()
        assert len(live.filed) >= 20, live.filed
        live.bundles, live.resources = {}, {}
        for rtype in CLINICAL:
            live.bundles[rtype], live.resources[rtype] = _search_all(live, rtype)
        yield live


def _get(server, path: str, headers=JSON, **params) -> requests.Response:
    response = requests.get(f"{server.base_url}/fhir/{path}", params=params, headers=headers, timeout=60)
    assert response.status_code == 200, (path, response.text[:2000])
    return response


def _decode(response: requests.Response) -> dict:
    """The JSON body with its decimals as written (a float would hide 1.950's last zero)."""
    return json.loads(response.content, parse_float=Decimal)


def _search_all(server, rtype: str) -> tuple[list[dict], list[dict]]:
    """Every resource of the patient, page by page, and the searchset Bundles."""
    out: list[dict] = []
    bundles: list[dict] = []
    response = _get(server, rtype, patient=server.patient, _count="50")
    while True:
        bundle = _decode(response)
        bundles.append(bundle)
        out += [e["resource"] for e in bundle.get("entry", [])]
        following = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        if not following:
            assert len(out) == bundle["total"], (rtype, len(out), bundle["total"])
            return bundles, out
        response = requests.get(following[0], headers=JSON, timeout=60)
        assert response.status_code == 200, response.text


# --- the invariants --------------------------------------------------------------------------------
def _walk(value, path="$"):
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def _codes(concept: dict | None, system: str) -> set[str]:
    return {c.get("code") for c in (concept or {}).get("coding", []) if c.get("system") == system}


def _value(res: dict, prefix: str) -> list[str]:
    return [k for k in res if k.startswith(prefix) and k[len(prefix):][:1].isupper()]


def _quantity_checks(q: dict, where: str) -> None:
    assert "value" not in q or isinstance(q["value"], (Decimal, int)), (where, q)
    if "code" in q:   # qty-3: a coded unit says its system
        assert q.get("system"), ("qty-3", where, q)
    if "comparator" in q:
        assert q["comparator"] in ("<", "<=", ">=", ">"), (where, q)


def check_resource(res: dict, where: str = "") -> None:
    """fhir.resources' R4B model, then the R4 invariants it does not check."""
    where = where or f"{res.get('resourceType')}/{res.get('id')}"
    get_fhir_model_class(res["resourceType"]).model_validate(res)
    for path, value in _walk(res):
        # ele-1 (every element has a value or children), string/decimal lexical forms
        assert value not in ("", {}, []), ("ele-1", where, path)
        if isinstance(value, str):
            assert value == value.strip() or path.endswith(".div"), ("string", where, path, value)
        if path.rsplit(".", 1)[-1].startswith("extension") and isinstance(value, list):
            for ext in value:   # ext-1: a value or extensions, never both
                assert ("extension" in ext) != any(k.startswith("value") for k in ext), ("ext-1", where, ext)
        if path.startswith("$.entry") and res["resourceType"] == "Bundle":
            continue   # the entries' resources are judged one by one below
        if isinstance(value, dict) and isinstance(value.get("reference"), str) and value["reference"].startswith("#"):
            ids = {c.get("id") for c in res.get("contained", [])}
            assert value["reference"][1:] in ids or value["reference"] == "#", ("ref-1", where, value)
        if isinstance(value, Decimal):
            assert value.is_finite() and FHIR_DECIMAL.fullmatch(str(value).replace("E", "e")) or \
                FHIR_DECIMAL.fullmatch(str(value)), (where, path, value)
    text = json.dumps({k: v for k, v in res.items() if k != "contained"}, default=str)
    for inner in res.get("contained", []):
        assert "contained" not in inner, ("dom-2", where)
        assert f'"#{inner.get("id")}"' in text, ("dom-3", where, inner.get("id"))
        assert not {"versionId", "lastUpdated"} & set(inner.get("meta", {})), ("dom-4", where)
        assert "security" not in inner.get("meta", {}), ("dom-5", where)
    rtype = res["resourceType"]
    if rtype == "Observation":
        values = _value(res, "value")
        assert len(values) <= 1
        assert not (values and "dataAbsentReason" in res), ("obs-6", where)
        for comp in res.get("component", []):   # obs-7
            assert not (comp["code"] == res["code"] and values), ("obs-7", where)
        for rng in res.get("referenceRange", []):   # obs-3
            assert {"low", "high", "text"} & set(rng), ("obs-3", where, rng)
            for side in ("low", "high"):
                if side in rng:
                    _quantity_checks(rng[side], where)
        if "valueQuantity" in res:
            _quantity_checks(res["valueQuantity"], where)
        if "valueRange" in res:   # rng-2
            low, high = res["valueRange"].get("low"), res["valueRange"].get("high")
            if low and high:
                assert Decimal(low["value"]) <= Decimal(high["value"]), ("rng-2", where)
    elif rtype == "Condition":
        error = "entered-in-error" in _codes(res.get("verificationStatus"),
                                             "http://terminology.hl7.org/CodeSystem/condition-ver-status")
        problem_list = any("problem-list-item" in _codes(c, "http://terminology.hl7.org/CodeSystem/condition-category")
                           for c in res.get("category", []))
        if problem_list and not error:   # con-3
            assert "clinicalStatus" in res, ("con-3", where)
        if _value(res, "abatement"):   # con-4
            assert _codes(res.get("clinicalStatus"), "http://terminology.hl7.org/CodeSystem/condition-clinical") & \
                {"inactive", "resolved", "remission"}, ("con-4", where, res.get("clinicalStatus"))
        if error:   # con-5
            assert "clinicalStatus" not in res, ("con-5", where)
    elif rtype == "AllergyIntolerance":
        error = "entered-in-error" in _codes(
            res.get("verificationStatus"), "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification")
        assert ("clinicalStatus" in res) != error, ("ait-1/ait-2", where)
    elif rtype == "MedicationStatement":
        period = res.get("effectivePeriod") or {}
        if "start" in period and "end" in period:   # per-1
            assert period["start"][:10] <= period["end"][:10], ("per-1", where, period)
    elif rtype == "Bundle":
        kind = res["type"]
        assert "total" not in res or kind in ("searchset", "history"), "bdl-1"
        urls = []
        for entry in res.get("entry", []):
            assert "search" not in entry or kind == "searchset", "bdl-2"
            assert "request" not in entry or kind in ("batch", "transaction", "history"), "bdl-3"
            assert "response" not in entry or kind in ("batch-response", "transaction-response", "history"), "bdl-4"
            assert {"resource", "request", "response"} & set(entry), "bdl-5"
            if "fullUrl" in entry:
                assert "/_history/" not in entry["fullUrl"], "bdl-8"
                urls.append(entry["fullUrl"])
                if "resource" in entry and not entry["fullUrl"].startswith("urn:"):
                    r = entry["resource"]
                    assert urlsplit(entry["fullUrl"]).path.endswith(f"/{r['resourceType']}/{r['id']}"), entry["fullUrl"]
            if "resource" in entry:
                check_resource(entry["resource"])
        assert len(urls) == len(set(urls)), ("bdl-7", sorted(u for u in urls if urls.count(u) > 1))
        if kind == "document":
            assert res.get("identifier", {}).get("system") and res["identifier"].get("value"), "bdl-9"
            assert res.get("timestamp"), "bdl-10"
            assert res["entry"][0]["resource"]["resourceType"] == "Composition", "bdl-11"
    elif rtype == "Composition":
        def sections(items):
            for s in items:
                yield s
                yield from sections(s.get("section", []))
        for s in sections(res.get("section", [])):
            assert {"text", "entry", "section"} & set(s), ("cmp-1", where, s.get("title"))
            assert not ("emptyReason" in s and "entry" in s), ("cmp-2", where, s.get("title"))


# --- every resource, every way it is read --------------------------------------------------------
def test_every_corpus_document_was_filed(server):
    """All but those the CDA header rules refuse (eDISP-MED_2024.01: a patient name qualifier
    "SP"): that is the validator's decision, not the clinical reading's."""
    assert {name for name, _ in _corpus_documents()} <= set(server.filed) | set(server.refused)
    assert all(all("règle CDA" in (why or "") for why in whys) for whys in server.refused.values()), server.refused
    assert len(server.refused) <= 1, server.refused


@pytest.mark.parametrize("rtype", CLINICAL)
def test_every_resource_of_a_search_is_valid_r4(server, rtype):
    found = server.resources[rtype]
    assert found, rtype
    problems = []
    for res in found:
        try:
            check_resource(res)
        except (AssertionError, ValueError) as exc:
            problems.append(str(exc)[:300])
    assert not problems, problems[:10]


@pytest.mark.parametrize("rtype", CLINICAL)
def test_every_searchset_bundle_is_valid_r4(server, rtype):
    for bundle in server.bundles[rtype]:
        assert bundle["type"] == "searchset"
        check_resource(bundle)


@pytest.mark.parametrize("rtype", CLINICAL)
def test_every_resource_read_alone_is_valid_r4_in_json_and_xml(server, rtype):
    klass = get_fhir_model_class(rtype)
    for res in server.resources[rtype]:
        alone = _decode(_get(server, f"{rtype}/{res['id']}"))
        assert alone == res
        check_resource(alone)
        xml = _get(server, f"{rtype}/{res['id']}", headers=XML).content
        klass.model_validate_xml(xml)


def test_the_summary_document_is_valid_r4(server):
    summary = _decode(_get(server, f"Patient/{server.rid}/$summary"))
    check_resource(summary)
    composition = summary["entry"][0]["resource"]
    held = {e["fullUrl"] for e in summary["entry"]}
    named = {e["reference"] for s in composition["section"] for e in s.get("entry", [])}
    assert named <= held


def test_the_summary_of_an_empty_record_is_valid_r4(server):
    """Every section empty: each says why (emptyReason) and has a text (R4 cmp-1: "A section must
    contain at least one of text, entries, or sub-sections")."""
    summary = _decode(_get(server, f"Patient/{server.empty_rid}/$summary"))
    check_resource(summary)
    assert all("emptyReason" in s for s in summary["entry"][0]["resource"]["section"])


# --- values keep the digits their document wrote -------------------------------------------------
def _edge(server, code: str) -> dict:
    found = [r for r in server.resources["Observation"]
             if any(c.get("code") == code for c in r["code"].get("coding", []))]
    assert len(found) == 1, (code, len(found))
    return found[0]


def _raw_value(server, res: dict) -> tuple[str, str]:
    """valueQuantity.value as the JSON and the XML bodies write it."""
    body = _get(server, f"Observation/{res['id']}").text
    json_text = re.search(r'"valueQuantity":\{[^{}]*"value":([^,}]+)', body).group(1)
    xml = etree.fromstring(_get(server, f"Observation/{res['id']}", headers=XML).content)
    xml_text = xml.find("{http://hl7.org/fhir}valueQuantity/{http://hl7.org/fhir}value").get("value")
    return json_text, xml_text


@pytest.mark.parametrize(("code", "written"), [
    ("two-decimals", "12.20"), ("exponent", "1.0e3"), ("huge", "123456789012345678901234.5678"),
    ("tiny", "0.000000000000000000012"), ("overflow", "1e400"), ("negative", "-3.50"), ("zero", "0.00")])
def test_a_result_keeps_the_precision_its_document_wrote(server, code, written):
    """R4 datatypes.html#decimal: "The precision of the decimal value has significance";
    12.20 is served as 12.20 (not 12.2), in JSON and in XML, and 1e400 is not infinity."""
    res = _edge(server, code)
    for text in _raw_value(server, res):
        assert FHIR_DECIMAL.fullmatch(text), text
        assert Decimal(text).as_tuple() == Decimal(written).as_tuple(), (code, text, written)


def test_the_corpus_tsh_keeps_its_three_decimals(server):
    """BIO-CR-BIO_2024.01_TSH_1: TSH value="1.950", reference range 0.270 - 4.200."""
    tsh = [r for r in server.resources["Observation"]
           if any(c.get("code") == "3016-3" for c in r["code"].get("coding", []))
           and r["effectiveDateTime"] == "2014-04-02T12:55:21Z"]
    served = {str(r["valueQuantity"]["value"]): r for r in tsh}
    assert "1.950" in served, sorted(served)
    assert [str(served["1.950"]["referenceRange"][0][s]["value"]) for s in ("low", "high")] == ["0.270", "4.200"]


def test_a_value_that_is_no_number_is_not_served_as_one(server):
    res = _edge(server, "not-a-number")
    assert "valueQuantity" not in res


def test_units(server):
    assert "unit" not in _edge(server, "no-unit")["valueQuantity"]
    braces = _edge(server, "braces")["valueQuantity"]
    assert braces["code"] == "10*9/L{cells}" and braces["system"] == "http://unitsofmeasure.org"


def test_a_bound_alone_is_a_quantity_with_its_comparator(server):
    """A lab's "< 5" (IVL_PQ with a high only, inclusive="false") is a Quantity whose
    comparator is "<" (R4 Quantity.comparator), not the value 5 nor the text "5 mg/L"."""
    expected = {"below": ("<", "5"), "at-most": ("<=", "0.50"), "above": (">", "90")}
    for code, (comparator, value) in expected.items():
        q = _edge(server, code).get("valueQuantity")
        assert q is not None, (code, _edge(server, code))
        assert q["comparator"] == comparator and str(q["value"]) == value, (code, q)


def test_an_interval_is_a_range(server):
    rng = _edge(server, "range").get("valueRange")
    assert rng is not None and str(rng["low"]["value"]) == "2.0" and str(rng["high"]["value"]) == "4.00"


def test_an_absent_value_says_why(server):
    res = _edge(server, "null-value")
    assert not _value(res, "value")
    assert res["dataAbsentReason"]["coding"][0]["code"] == "unknown"


def test_text_and_times(server):
    assert _edge(server, "text")["valueString"] == "présence de cristaux"
    assert _edge(server, "time-offset")["effectiveDateTime"] == "2024-03-15T07:30:00Z"
    # no time of its own that exists: the battery's (or the document's) time, never "2024-13-99"
    inherited = _edge(server, "time-null")["effectiveDateTime"]
    assert _edge(server, "time-not-a-day")["effectiveDateTime"] == inherited
    assert not inherited.startswith("2024-13")


# --- an ended problem ---------------------------------------------------------------------------
def _condition(server, code: str) -> dict:
    found = [r for r in server.resources["Condition"]
             if any(c.get("code") == code for c in r["code"].get("coding", []))]
    assert len(found) == 1, (code, len(found))
    return found[0]


@pytest.mark.parametrize("code", ["ENDED-ACTIVE", "ENDED-UNSAID"])
def test_an_ended_problem_is_resolved(server, code):
    """PCC Problem Entry: effectiveTime/high is when the problem was resolved. The end date is
    kept (abatementDateTime) and the Condition says resolved, whatever "active" the document's
    status observation still carries (R4 con-4)."""
    res = _condition(server, code)
    assert res["abatementDateTime"] == "2024-03-01"
    assert _codes(res["clinicalStatus"], "http://terminology.hl7.org/CodeSystem/condition-clinical") == {"resolved"}
    found = _decode(_get(server, "Condition", patient=server.patient, **{"clinical-status": "active"}))
    assert res["id"] not in {e["resource"]["id"] for e in found.get("entry", [])}
