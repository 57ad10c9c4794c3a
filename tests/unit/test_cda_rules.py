"""Layer 2: every CI-SIS rule of the table fails on a document breaking it, with its id and location."""

from __future__ import annotations

import pytest
from lxml import etree

from partage.cda.profile import validate
from partage.cda.rules import RULE_TABLE, check_rules, is_ts, is_uid
from tests.unit.test_cda_samples import PDF, nonxml_cda, sample_cda

NS = {"hl7": "urn:hl7-org:v3"}
J07 = """<?xml version="1.0" encoding="UTF-8"?>
<RetrieveValueSetResponse xmlns="urn:ihe:iti:svs:2008">
  <ValueSet id="1.2.250.1.213.1.1.5.471" displayName="J07 (test subset)">
    <ConceptList><Concept code="11488-4" codeSystem="2.16.840.1.113883.6.1" displayName="CR"/></ConceptList>
  </ValueSet>
</RetrieveValueSetResponse>"""


def mutate(data: bytes, xpath: str, attribute: str | None = None, value: str | None = None) -> bytes:
    """Remove the element(s) at xpath, or set one attribute on them."""
    root = etree.fromstring(data)
    nodes = root.xpath(xpath, namespaces=NS)
    assert nodes, xpath
    for node in nodes:
        if attribute is None:
            node.getparent().remove(node)
        else:
            node.set(attribute, value)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def errors(data: bytes, **options) -> dict[str, list]:
    report = validate(data, "structure", **options)
    out: dict[str, list] = {}
    for f in report.findings:
        if f.severity != "info":
            out.setdefault(f.rule, []).append(f)
    return out


CD = "/hl7:ClinicalDocument"
PATIENT = f"{CD}/hl7:recordTarget/hl7:patientRole/hl7:patient"

# (rule id, mutation: (xpath, attribute, value) -- attribute None means remove, expected location)
CASES = [
    ("realm-not-fr", ("hl7:realmCode", "code", "US"), f"{CD}/hl7:realmCode/@code"),
    ("missing-typeId", ("hl7:typeId", None, None), f"{CD}/hl7:typeId"),
    ("missing-typeId", ("hl7:typeId", "extension", "POCD_HD000041"), f"{CD}/hl7:typeId"),
    ("missing-hl7fr-templateId", ("hl7:templateId[@root='2.16.840.1.113883.2.8.2.1']", None, None),
     f"{CD}/hl7:templateId[@root='2.16.840.1.113883.2.8.2.1']"),
    ("missing-cisis-templateId", ("hl7:templateId[@root='1.2.250.1.213.1.1.1.1']", None, None),
     f"{CD}/hl7:templateId[@root='1.2.250.1.213.1.1.1.1']"),
    ("missing-model-templateId", ("hl7:templateId[@extension]", None, None), f"{CD}/hl7:templateId"),
    ("missing-id", ("hl7:id", None, None), f"{CD}/hl7:id"),
    ("missing-id", ("hl7:id", "root", "not an oid"), f"{CD}/hl7:id/@root"),
    ("missing-code", ("hl7:code", None, None), f"{CD}/hl7:code"),
    ("missing-code", ("hl7:code", "codeSystem", "LOINC"), f"{CD}/hl7:code/@codeSystem"),
    ("missing-title", ("hl7:title", None, None), f"{CD}/hl7:title"),
    ("missing-effectiveTime", ("hl7:effectiveTime", None, None), f"{CD}/hl7:effectiveTime"),
    ("ts-invalid", ("hl7:effectiveTime", "value", "March 2025"), f"{CD}/hl7:effectiveTime/@value"),
    ("ts-malformed", ("hl7:legalAuthenticator/hl7:time", "value", "20250314101500+100"),
     f"{CD}/hl7:legalAuthenticator/hl7:time/@value"),
    ("missing-confidentialityCode", ("hl7:confidentialityCode", None, None), f"{CD}/hl7:confidentialityCode"),
    ("bad-confidentialityCode", ("hl7:confidentialityCode", "code", "X"), f"{CD}/hl7:confidentialityCode/@code"),
    ("bad-confidentialityCode", ("hl7:confidentialityCode", "code", "MASQUE_PS"),
     f"{CD}/hl7:confidentialityCode/@code"),
    ("missing-languageCode", ("hl7:languageCode", None, None), f"{CD}/hl7:languageCode"),
    ("languageCode-not-fr", ("hl7:languageCode", "code", "en-US"), f"{CD}/hl7:languageCode/@code"),
    ("missing-setId", ("hl7:setId", None, None), f"{CD}/hl7:setId"),
    ("missing-versionNumber", ("hl7:versionNumber", None, None), f"{CD}/hl7:versionNumber"),
    ("missing-versionNumber", ("hl7:versionNumber", "value", "v2"), f"{CD}/hl7:versionNumber/@value"),
    ("missing-recordTarget", ("hl7:recordTarget", None, None), f"{CD}/hl7:recordTarget"),
    ("missing-patient-id", ("hl7:recordTarget/hl7:patientRole/hl7:id[2]", "extension", ""),
     f"{CD}/hl7:recordTarget/hl7:patientRole/hl7:id[2]/@extension"),
    ("ins-nir-key", ("hl7:recordTarget/hl7:patientRole/hl7:id[1]", "extension", "185067512345600"),
     f"{CD}/hl7:recordTarget/hl7:patientRole/hl7:id[1]/@extension"),
    ("patient-name-missing", ("hl7:recordTarget/hl7:patientRole/hl7:patient/hl7:name/hl7:given", None, None),
     f"{PATIENT}/hl7:name/hl7:given"),
    ("patient-name-qualifier",
     ("hl7:recordTarget/hl7:patientRole/hl7:patient/hl7:name/hl7:family[2]", "qualifier", "SP"),
     f"{PATIENT}/hl7:name/hl7:family[2]/@qualifier"),
    ("missing-patient-gender",
     ("hl7:recordTarget/hl7:patientRole/hl7:patient/hl7:administrativeGenderCode", None, None),
     f"{PATIENT}/hl7:administrativeGenderCode"),
    ("ins-without-birthTime", ("hl7:recordTarget/hl7:patientRole/hl7:patient/hl7:birthTime", None, None),
     f"{PATIENT}/hl7:birthTime"),
    ("ins-without-birthName",
     ("hl7:recordTarget/hl7:patientRole/hl7:patient/hl7:name/hl7:family[@qualifier='BR']", None, None),
     f"{PATIENT}/hl7:name/hl7:family[@qualifier='BR']"),
    ("ins-without-firstGivenName",
     ("hl7:recordTarget/hl7:patientRole/hl7:patient/hl7:name/hl7:given[@qualifier='BR']", None, None),
     f"{PATIENT}/hl7:name/hl7:given[@qualifier='BR']"),
    ("ins-without-givenNames",
     ("hl7:recordTarget/hl7:patientRole/hl7:patient/hl7:name/hl7:given[not(@qualifier)]", None, None),
     f"{PATIENT}/hl7:name/hl7:given[not(@qualifier)]"),
    ("ins-without-birthplace", ("hl7:recordTarget/hl7:patientRole/hl7:patient/hl7:birthplace", None, None),
     f"{PATIENT}/hl7:birthplace/hl7:place/hl7:addr/hl7:county"),
    ("ins-without-gender",
     ("hl7:recordTarget/hl7:patientRole/hl7:patient/hl7:administrativeGenderCode", "code", ""),
     f"{PATIENT}/hl7:administrativeGenderCode"),
    ("missing-author", ("hl7:author", None, None), f"{CD}/hl7:author"),
    ("author-incomplete", ("hl7:author/hl7:time", None, None), f"{CD}/hl7:author/hl7:time"),
    ("author-incomplete", ("hl7:author/hl7:assignedAuthor/hl7:id", "extension", ""),
     f"{CD}/hl7:author/hl7:assignedAuthor/hl7:id/@extension"),
    ("missing-custodian", ("hl7:custodian", None, None), f"{CD}/hl7:custodian"),
    ("custodian-bad-id-root",
     ("hl7:custodian/hl7:assignedCustodian/hl7:representedCustodianOrganization/hl7:id", "root", "1.2.3"),
     f"{CD}/hl7:custodian/hl7:assignedCustodian/hl7:representedCustodianOrganization/hl7:id/@root"),
    ("missing-legalAuthenticator", ("hl7:legalAuthenticator", None, None), f"{CD}/hl7:legalAuthenticator"),
    ("missing-legalAuthenticator", ("hl7:legalAuthenticator/hl7:signatureCode", "code", "X"),
     f"{CD}/hl7:legalAuthenticator/hl7:signatureCode[@code='S']"),
    ("legalAuthenticator-incomplete", ("hl7:legalAuthenticator/hl7:time", None, None),
     f"{CD}/hl7:legalAuthenticator/hl7:time"),
    ("missing-documentationOf", ("hl7:documentationOf", None, None),
     f"{CD}/hl7:documentationOf/hl7:serviceEvent"),
    ("missing-documentationOf", ("hl7:documentationOf/hl7:serviceEvent/hl7:performer", None, None),
     f"{CD}/hl7:documentationOf/hl7:serviceEvent/hl7:performer"),
    ("serviceEvent-incomplete", ("hl7:documentationOf/hl7:serviceEvent/hl7:effectiveTime/hl7:low", None, None),
     f"{CD}/hl7:documentationOf/hl7:serviceEvent/hl7:effectiveTime/hl7:low"),
    ("relatedDocument-invalid", ("hl7:relatedDocument", "typeCode", "FOO"), f"{CD}/hl7:relatedDocument/@typeCode"),
    ("relatedDocument-invalid", ("hl7:relatedDocument/hl7:parentDocument/hl7:id", None, None),
     f"{CD}/hl7:relatedDocument/hl7:parentDocument/hl7:id"),
    ("missing-componentOf", ("hl7:componentOf", None, None), f"{CD}/hl7:componentOf"),
    ("encounter-incomplete",
     ("hl7:componentOf/hl7:encompassingEncounter/hl7:location/hl7:healthCareFacility/hl7:code", None, None),
     f"{CD}/hl7:componentOf/hl7:encompassingEncounter/hl7:location/hl7:healthCareFacility/hl7:code"),
    ("encounter-incomplete", ("hl7:componentOf/hl7:encompassingEncounter/hl7:effectiveTime", None, None),
     f"{CD}/hl7:componentOf/hl7:encompassingEncounter/hl7:effectiveTime"),
    ("telecom-invalid", ("hl7:recordTarget/hl7:patientRole/hl7:telecom", "value", "0600000000"),
     f"{CD}/hl7:recordTarget/hl7:patientRole/hl7:telecom/@value"),
    ("addr-invalid", ("hl7:recordTarget/hl7:patientRole/hl7:addr", "use", "XX"),
     f"{CD}/hl7:recordTarget/hl7:patientRole/hl7:addr/@use"),
    ("missing-body", ("hl7:component", None, None), f"{CD}/hl7:component"),
]


@pytest.mark.parametrize("rule_id, mutation, location", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_fails_on_its_mutation(rule_id, mutation, location):
    xpath, attribute, value = mutation
    found = errors(mutate(sample_cda(), xpath, attribute, value))
    assert rule_id in found, found
    assert location in [f.location for f in found[rule_id]]
    assert all(f.line for f in found[rule_id])


def test_blocking_rules_make_the_document_invalid():
    report = validate(mutate(sample_cda(), "hl7:title", None), "structure")
    assert not report.valid
    warning_only = validate(mutate(sample_cda(), "hl7:legalAuthenticator/hl7:time", "value", "20250314101500+100"),
                            "structure")
    assert warning_only.valid   # ts-malformed is a warning


def test_non_ins_patient_needs_a_birth_time_under_its_own_rule():
    data = mutate(sample_cda(), "hl7:recordTarget/hl7:patientRole/hl7:id[1]", None)
    data = mutate(data, "hl7:recordTarget/hl7:patientRole/hl7:patient/hl7:birthTime", None)
    found = errors(data)
    assert "missing-patient-birthTime" in found
    assert not any(rule.startswith("ins-") for rule in found)


def test_non_ins_patient_does_not_need_ins_traits():
    data = mutate(sample_cda(), "hl7:recordTarget/hl7:patientRole/hl7:id[1]", None)
    data = mutate(data, "hl7:recordTarget/hl7:patientRole/hl7:patient/hl7:birthplace", None)
    assert errors(data) == {}


def test_empty_title_is_refused():
    found = errors(sample_cda().replace(b"<title>Compte rendu de consultation</title>", b"<title> </title>"))
    assert "missing-title" in found


def test_type_code_membership_needs_the_value_set(tmp_path):
    bad = mutate(sample_cda(), "hl7:code", "code", "00000-0")
    assert "code-not-in-typecode-jdv" not in errors(bad)   # no J07 loaded: not checked (noted as info)
    report = validate(bad, "cisis")
    assert "valueset-not-loaded" in report.rules()
    (tmp_path / "JDV_J07_XdsTypeCode_CISIS.xml").write_text(J07, encoding="utf-8")
    found = errors(bad, valuesets=str(tmp_path))
    assert [f.location for f in found["code-not-in-typecode-jdv"]] == [f"{CD}/hl7:code/@code"]
    assert "code-not-in-typecode-jdv" not in errors(sample_cda(), valuesets=str(tmp_path))


# --- unstructured (XDS-SD) bodies ------------------------------------------------------

BODY_TEXT = f"{CD}/hl7:component/hl7:nonXMLBody/hl7:text"


def test_nonxml_needs_exactly_the_three_templates():
    data = nonxml_cda()
    extra = data.replace(b'<templateId root="1.3.6.1.4.1.19376.1.2.20"/>',
                         b'<templateId root="1.3.6.1.4.1.19376.1.2.20"/><templateId root="1.2.250.1.213.1.1.1.99"/>')
    assert "nonxml-templateIds" in errors(extra)
    missing = data.replace(b'<templateId root="1.3.6.1.4.1.19376.1.2.20"/>', b'<templateId root="1.2.3.4"/>')
    found = errors(missing)
    assert found["nonxml-templateIds"][0].location == f"{CD}/hl7:templateId[@root='1.3.6.1.4.1.19376.1.2.20']"


def test_nonxml_media_type():
    found = errors(nonxml_cda(media_type="application/x-msdownload"))
    assert [f.location for f in found["nonxml-bad-mediaType"]] == [f"{BODY_TEXT}/@mediaType"]


def test_nonxml_not_base64():
    data = nonxml_cda().replace(b"JVBERi0", b"JV*!BERi0")
    assert [f.location for f in errors(data)["nonxml-not-base64"]] == [BODY_TEXT]


def test_nonxml_pdf_must_be_base64_and_a_pdf():
    assert "nonxml-not-base64" in errors(nonxml_cda(representation="TXT", payload=b"hello"))
    assert "nonxml-not-base64" in errors(nonxml_cda(payload=b"GIF89a not a pdf"))


def test_nonxml_text_plain_inline_is_accepted():
    assert errors(nonxml_cda(media_type="text/plain", payload=b"Compte rendu", representation="TXT")) == {}
    assert errors(nonxml_cda(media_type="text/plain", payload=PDF[:4])) == {}


def test_not_a_clinical_document():
    report = validate(b"<html xmlns='http://www.w3.org/1999/xhtml'/>", "structure")
    assert not report.valid
    assert report.rules() == {"not-clinical-document"}


def test_every_rule_of_the_table_is_exercised():
    exercised = {c[0] for c in CASES} | {"missing-patient-birthTime", "code-not-in-typecode-jdv",
                                          "nonxml-templateIds", "nonxml-bad-mediaType", "nonxml-not-base64"}
    assert set(RULE_TABLE) <= exercised, set(RULE_TABLE) - exercised


def test_check_rules_subset():
    doc = etree.fromstring(mutate(sample_cda(), "hl7:title", None))
    assert {f.rule for f in check_rules(doc, only={"missing-title"})} == {"missing-title"}


@pytest.mark.parametrize("value, ok", [("1.2.250.1", True), ("0", True), ("1.02", False), ("3.1", False),
                                       ("d3b07384-d9a0-4c9b-8a0d-2b3c4d5e6f70", True), ("abc", True), ("", False)])
def test_uid_syntax(value, ok):
    assert is_uid(value) is ok


@pytest.mark.parametrize("value, ok", [("2025", True), ("20250314101500+0100", True), ("20250314101500.123-0500", True),
                                       ("20250314101500+100", False), ("2025-03-14", False), ("202503141", False)])
def test_ts_syntax(value, ok):
    assert is_ts(value) is ok
