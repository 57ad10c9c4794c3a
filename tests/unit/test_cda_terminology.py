"""SVS value-set loading and layer 4 (membership of header codes in the CI-SIS JDV)."""

from __future__ import annotations

import logging

import pytest
from lxml import etree

from partage.cda.profile import validate
from partage.cda.terminology import BINDINGS, Terminology, check_terminology, load_terminology
from partage.terminology.svs import ValueSets, load_svs_directory, load_svs_file
from tests.conftest import corpus_path
from tests.unit.test_cda_samples import sample_cda

SVS = """<?xml version="1.0" encoding="UTF-8"?>
<RetrieveValueSetResponse xmlns="urn:ihe:iti:svs:2008">
  <ValueSet id="{oid}" displayName="{name}" revisionDate="2025-01-01">
    <ConceptList>{concepts}</ConceptList>
  </ValueSet>
</RetrieveValueSetResponse>"""


def write_svs(directory, stem: str, oid: str, concepts: list[tuple[str, str]]) -> None:
    body = "".join(f'<Concept code="{c}" codeSystem="{s}" displayName="{c}"/>' for c, s in concepts)
    (directory / f"{stem}.xml").write_text(SVS.format(oid=oid, name=stem, concepts=body), encoding="utf-8")


def test_load_svs_file(tmp_path):
    write_svs(tmp_path, "JDV_X", "1.2.3", [("A", "urn:oid:9.8"), ("B", "9.8")])
    vs = load_svs_file(tmp_path / "JDV_X.xml")
    assert vs.oid == "1.2.3" and vs.name == "JDV_X" and vs.version == "2025-01-01"
    assert vs.concepts == frozenset({("A", "9.8"), ("B", "9.8")})   # urn:oid: prefix dropped
    assert vs.display[("A", "9.8")] == "A"
    assert vs.contains("A", "urn:oid:9.8") and vs.contains("B") and not vs.contains("A", "1.1")
    assert vs.stem == "JDV_X" and len(vs) == 2


def test_load_svs_directory_skips_empty_files(tmp_path, caplog):
    write_svs(tmp_path, "JDV_A", "1.2.3", [("A", "9.8")])
    (tmp_path / "Empty.xml").write_bytes(b"")
    (tmp_path / "Broken.xml").write_bytes(b"<not-closed>")
    with caplog.at_level(logging.WARNING, logger="partage.terminology"):
        sets = load_svs_directory(tmp_path)
    assert isinstance(sets, ValueSets) and list(sets) == ["1.2.3"]
    assert sets.by_name("JDV_A") is sets["1.2.3"]
    assert any("empty" in r.message for r in caplog.records)
    assert any("Broken" in r.message for r in caplog.records)
    assert load_svs_file(tmp_path / "Empty.xml") is None


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_svs_directory(tmp_path / "nope")


def test_corpus_value_sets():
    sets = load_svs_directory(corpus_path("valuesets"))
    j07 = sets.by_name("JDV_J07_XdsTypeCode_CISIS")
    assert j07.oid == "1.2.250.1.213.1.1.5.471" and len(j07) == 114
    assert j07.contains("11488-4", "2.16.840.1.113883.6.1")
    assert ("E1762", "ASTM") in j07.concepts   # the non-OID code system is kept as is
    j08 = sets["1.2.250.1.213.1.1.5.463"]
    assert {"N", "R", "V", "MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"} <= j08.codes
    for empty in ("ActPharmacySupplyType", "CoverageRoleType", "MediaType"):
        assert sets.by_name(empty) is None
    assert len(sets) > 500


def test_shipped_defaults_are_loaded_without_a_directory():
    terminology = load_terminology(None)
    j08 = [vs for vs in terminology.value_sets.values() if "J08" in vs.name]
    assert j08 and {"N", "R", "V", "MASQUE_PS"} <= j08[0].codes


def _terminology(tmp_path) -> Terminology:
    write_svs(tmp_path, "J01", "1.2.250.1.213.1.1.5.461", [("G15_10", "1.2.250.1.213.1.1.4.5")])
    write_svs(tmp_path, "J143", "1.2.250.1.213.1.1.5.590", [("M", "2.16.840.1.113883.5.1"),
                                                            ("F", "2.16.840.1.113883.5.1")])
    write_svs(tmp_path, "J245", "1.2.250.1.213.1.1.5.718", [("M", "1.2.250.1.213.1.6.1.69")])
    write_svs(tmp_path, "J246", "1.2.250.1.213.1.1.5.719", [("DR", "1.2.250.1.213.1.6.1.11")])
    return Terminology(load_svs_directory(tmp_path), tmp_path)


def _check(data: bytes, terminology: Terminology) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in check_terminology(etree.fromstring(data), terminology):
        out.setdefault(f.rule, []).append(f)
    return out


def test_sample_passes_its_bindings(tmp_path):
    found = _check(sample_cda(), _terminology(tmp_path))
    assert set(found) == {"valueset-not-loaded"}   # the others are not configured here
    assert found["valueset-not-loaded"][0].severity == "info"
    assert "J02" in found["valueset-not-loaded"][0].message


def test_author_specialty_outside_its_value_set(tmp_path):
    data = sample_cda().replace(b'code="G15_10"', b'code="XX99"')
    found = _check(data, _terminology(tmp_path))
    [f] = found["author-specialty-not-in-jdv"]
    assert f.location == "/hl7:ClinicalDocument/hl7:author/hl7:assignedAuthor/hl7:code/@code"
    assert f.severity == "error" and f.layer == "terminology" and f.line


def test_code_system_matters_when_given(tmp_path):
    data = sample_cda().replace(b'codeSystem="1.2.250.1.213.1.1.4.5"', b'codeSystem="1.2.3.4"')
    assert "author-specialty-not-in-jdv" in _check(data, _terminology(tmp_path))


def test_gender_and_name_prefix(tmp_path):
    data = sample_cda().replace(b'<administrativeGenderCode code="M"', b'<administrativeGenderCode code="Q"')
    data = data.replace(b"<prefix>M</prefix>", b"<prefix>Monsieur</prefix>")
    found = _check(data, _terminology(tmp_path))
    assert found["gender-not-in-jdv"][0].location.endswith("hl7:administrativeGenderCode/@code")
    assert found["name-prefix-not-in-jdv"][0].location == \
        "/hl7:ClinicalDocument/hl7:author/hl7:assignedAuthor/hl7:assignedPerson/hl7:name/hl7:prefix"


def test_null_flavored_codes_are_not_checked(tmp_path):
    data = sample_cda().replace(b'<code code="G15_10" codeSystem="1.2.250.1.213.1.1.4.5"',
                                b'<code nullFlavor="UNK" code="XX99" codeSystem="1.2.250.1.213.1.1.4.5"')
    assert "author-specialty-not-in-jdv" not in _check(data, _terminology(tmp_path))


def test_bindings_have_distinct_ids_per_value_set():
    by_id: dict[str, set[str]] = {}
    for binding in BINDINGS:
        by_id.setdefault(binding.id, set()).add(binding.oid)
    assert all(len(oids) == 1 for oids in by_id.values())


def test_terminology_layer_blocks_in_the_default_profile(tmp_path):
    _terminology(tmp_path)
    data = sample_cda().replace(b'code="G15_10"', b'code="XX99"')
    report = validate(data, "cisis", valuesets=str(tmp_path))
    assert not report.valid
    assert report.layers["terminology"].status == "failed"


def test_corpus_value_sets_accept_the_sample():
    report = validate(sample_cda(), "cisis", valuesets=str(corpus_path("valuesets")))
    assert report.valid, [f.to_dict() for f in report.findings if f.severity == "error"]
    assert "valueset-not-loaded" not in report.rules()
