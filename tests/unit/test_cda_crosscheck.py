"""Layer 5: the CDA header against the XDS metadata submitted with it."""

from __future__ import annotations

from dataclasses import dataclass

from partage.cda.crosscheck import cda_unique_id, cross_check, parse_cx, parse_xcn_id, ts_to_utc
from partage.cda.header import read_header
from partage.cda.profile import validate
from tests.unit.test_cda_samples import nonxml_cda, sample_cda


@dataclass
class Code:   # shaped like partage.metadata.model.Code
    code: str
    scheme: str


def consistent() -> dict:
    return {
        "patient_id": "185067512345689^^^&1.2.250.1.213.1.4.10&ISO",
        "source_patient_id": "IPP-42^^^&2.25.299999999999999999999999999999999999004&ISO",
        "unique_id": "2.25.299999999999999999999999999999999999002^DOC-1",
        "type_code": Code("11488-4", "2.16.840.1.113883.6.1"),
        "confidentiality_codes": [Code("N", "2.16.840.1.113883.5.25"), ("MASQUE_PS", "1.2.250.1.213.1.1.4.13")],
        "creation_time": "20250314091500",
        "service_start_time": "20250314090000",
        "service_stop_time": "202503140910",
        "language_code": "fr-FR",
        "title": "Compte rendu de consultation",
        "legal_authenticator": "899999999999^MEDECIN^Paul^^^^^^&1.2.250.1.71.4.2.1&ISO",
        "healthcare_facility_type_code": "SA01^^1.2.250.1.71.4.2.4",
        "practice_setting_code": ("AMBULATOIRE", "1.2.250.1.213.1.1.4.9"),
        "mime_type": "text/xml",
        "authors": ["899999999999^MEDECIN^Paul^^^^^^&1.2.250.1.71.4.2.1&ISO"],
    }


def rules(metadata: dict, data: bytes | None = None) -> set[str]:
    return {f.rule for f in cross_check(read_header(data or sample_cda()), metadata)}


def test_consistent_metadata_pass():
    assert rules(consistent()) == set()


def test_absent_keys_are_not_checked():
    assert rules({}) == set()


def test_each_disagreement_is_named():
    cases = {
        "patient_id": ("999999999999999^^^&1.2.250.1.213.1.4.10&ISO", "xds-patientId-mismatch"),
        "source_patient_id": ("IPP-43^^^&2.25.1&ISO", "xds-sourcePatientId-mismatch"),
        "unique_id": ("2.25.299999999999999999999999999999999999002", "xds-uniqueId-mismatch"),
        "type_code": (Code("11369-6", "2.16.840.1.113883.6.1"), "xds-typeCode-mismatch"),
        "confidentiality_codes": ([("R", "2.16.840.1.113883.5.25")], "xds-confidentialityCode-mismatch"),
        "creation_time": ("20250314101500", "xds-creationTime-mismatch"),
        "service_start_time": ("20250313", "xds-serviceStartTime-mismatch"),
        "service_stop_time": ("20250315", "xds-serviceStopTime-mismatch"),
        "language_code": ("en-US", "xds-languageCode-mismatch"),
        "title": ("Autre titre", "xds-title-mismatch"),
        "legal_authenticator": ("811111111111^AUTRE^^^^^^^&1.2.250.1.71.4.2.1&ISO", "xds-legalAuthenticator-mismatch"),
        "healthcare_facility_type_code": ("SA02^^1.2.250.1.71.4.2.4", "xds-healthcareFacilityTypeCode-mismatch"),
        "practice_setting_code": (("AMO", "1.2.250.1.213.1.1.4.9"), "xds-practiceSettingCode-mismatch"),
        "mime_type": ("application/pdf", "xds-mimeType"),
        "authors": (["811111111111^AUTRE^^^^^^^&1.2.250.1.71.4.2.1&ISO"], "xds-author-mismatch"),
    }
    for key, (value, rule) in cases.items():
        metadata = consistent()
        metadata[key] = value
        assert rules(metadata) == {rule}, key


def test_findings_point_at_the_cda_element():
    metadata = consistent()
    metadata["type_code"] = "11369-6^^2.16.840.1.113883.6.1"
    [finding] = cross_check(read_header(sample_cda()), metadata)
    assert finding.layer == "metadata" and finding.severity == "error"
    assert finding.location == "/hl7:ClinicalDocument/hl7:code"


def test_title_and_authors_are_warnings():
    metadata = consistent()
    metadata["title"] = "Autre"
    assert [f.severity for f in cross_check(read_header(sample_cda()), metadata)] == ["warning"]


def test_xds_sd_format_code():
    data = nonxml_cda()
    assert rules({"format_code": "urn:ihe:iti:xds-sd:pdf:2008^^1.3.6.1.4.1.19376.1.2.3"}, data) == set()
    assert rules({"format_code": ("urn:ihe:iti:xds-sd:text:2008", "")}, data) == {"xds-formatCode-mismatch"}


def test_helpers():
    assert parse_cx("123^^^&1.2.3&ISO") == ("1.2.3", "123")
    assert parse_cx("123^^^&urn:oid:1.2.3&ISO") == ("1.2.3", "123")
    assert parse_xcn_id("99^DOE^John^^^^^^&1.2.250.1.71.4.2.1&ISO") == ("1.2.250.1.71.4.2.1", "99")
    assert cda_unique_id(("1.2.3", "")) == "1.2.3" and cda_unique_id(("1.2.3", "x")) == "1.2.3^x"
    assert ts_to_utc("20250314101500+0100") == "20250314091500"
    assert ts_to_utc("202503140030-0230") == "202503140300"
    assert ts_to_utc("20250314") == "20250314"
    assert ts_to_utc("20250101003000+0100") == "20241231233000"


def test_metadata_layer_in_the_profile():
    metadata = consistent()
    ok = validate(sample_cda(), "cisis", xds_metadata=metadata)
    assert ok.valid and ok.layers["metadata"].status == "passed"
    metadata["patient_id"] = "1^^^&1.2.250.1.213.1.4.10&ISO"
    bad = validate(sample_cda(), "cisis", xds_metadata=metadata)
    assert not bad.valid and "xds-patientId-mismatch" in bad.rules()
    alone = validate(sample_cda(), "cisis").layers["metadata"]
    assert alone.status == "not applicable" and "ITI-41" in alone.reason


def test_class_code_is_checked_against_the_ans_type_to_class_table():
    """11488-4 (compte rendu de consultation) is class 10 in ASS_X04: 11 is reported."""
    assert "xds-classCode-mismatch" not in rules({**consistent(), "class_code": Code("10", "1.2.250.1.213.1.1.4.1")})
    header = read_header(sample_cda())
    [finding] = [f for f in cross_check(header, {**consistent(), "class_code": Code("11", "1.2.250.1.213.1.1.4.1")})
                 if f.rule == "xds-classCode-mismatch"]
    assert finding.severity == "error" and "10" in finding.message


def test_structured_format_code_is_checked_against_the_document_model():
    """A document of model 1.2.250.1.213.1.1.1.5.1 has the formatCode ASS_A11 gives that model."""
    data = sample_cda().replace(b'root="2.25.299999999999999999999999999999999999001" extension="2025.01"',
                                b'root="1.2.250.1.213.1.1.1.5.1"')
    wrong = {**consistent(), "format_code": Code("urn:asip:ci-sis:vsm:2012", "1.2.250.1.213.1.1.4.2.282")}
    right = {**consistent(), "format_code": Code("urn:asip:ci-sis:cse-cs8:2017", "1.2.250.1.213.1.1.4.2.282")}
    [finding] = [f for f in cross_check(read_header(data), wrong) if f.rule == "xds-formatCode-mismatch"]
    assert finding.severity == "error"      # CI-SIS: the formatCode is the model's (ASS_A11)
    assert "xds-formatCode-mismatch" not in rules(right, data)
    assert "xds-formatCode-mismatch" not in rules(wrong)   # a model the table does not know: not checked
