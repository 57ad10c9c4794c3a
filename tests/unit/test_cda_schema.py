"""Layer 1: XML Schema validation against the configured CDA schema, or an explicit "not run"."""

from __future__ import annotations

import pytest
from lxml import etree

from partage.cda.profile import Validator, get_profile, validate
from partage.cda.schema import SchemaNotFound, check_schema, find_schema
from tests.conftest import corpus_path
from tests.unit.test_cda_samples import sample_cda

MINI_XSD = """<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:hl7-org:v3"
           xmlns="urn:hl7-org:v3" elementFormDefault="qualified">
  <xs:element name="ClinicalDocument">
    <xs:complexType><xs:sequence>
      <xs:element name="realmCode" minOccurs="0"><xs:complexType><xs:attribute name="code"/></xs:complexType></xs:element>
      <xs:element name="title" type="xs:string"/>
    </xs:sequence></xs:complexType>
  </xs:element>
</xs:schema>"""


def test_without_schema_the_layer_says_not_run():
    report = validate(sample_cda(), "cisis")
    assert report.layers["schema"].status == "not run"
    assert "schema-not-run" in report.rules()
    assert [f.severity for f in report.findings if f.rule == "schema-not-run"] == ["info"]


def test_find_schema(tmp_path):
    (tmp_path / "CDA.xsd").write_text(MINI_XSD)
    assert find_schema(tmp_path) == (tmp_path / "CDA.xsd").resolve()
    assert find_schema(tmp_path / "CDA.xsd") == (tmp_path / "CDA.xsd").resolve()
    with pytest.raises(SchemaNotFound):
        find_schema(tmp_path / "elsewhere")


def test_schema_errors_have_location_and_line(tmp_path):
    (tmp_path / "CDA.xsd").write_text(MINI_XSD)
    doc = etree.fromstring(b'<ClinicalDocument xmlns="urn:hl7-org:v3">\n<title>t</title>\n<title>again</title>'
                           b"</ClinicalDocument>")
    [finding] = check_schema(doc, find_schema(tmp_path))
    assert finding.rule == "xsd-invalid" and finding.layer == "schema"
    assert finding.location == "/hl7:ClinicalDocument/hl7:title[2]"
    assert finding.line == 3


def test_schema_is_compiled_at_validator_start(tmp_path):
    (tmp_path / "CDA.xsd").write_text("<not a schema")
    with pytest.raises(etree.XMLSyntaxError):
        Validator(get_profile("cisis", schema=str(tmp_path)))


def test_schema_layer_blocks_when_configured(tmp_path):
    (tmp_path / "CDA.xsd").write_text(MINI_XSD)
    report = validate(sample_cda(), "cisis", schema=str(tmp_path))
    assert report.layers["schema"].status == "failed" and report.layers["schema"].blocking
    assert not report.valid


def test_corpus_schema_accepts_the_sample_and_rejects_a_misplaced_element():
    xsd = str(corpus_path("xsd", "cda"))
    assert validate(sample_cda(), "cisis", schema=xsd).layers["schema"].status == "passed"
    broken = sample_cda().replace(b'<languageCode code="fr-FR"/>', b"").replace(
        b"<versionNumber", b'<languageCode code="fr-FR"/><versionNumber')
    report = validate(broken, "cisis", schema=xsd)
    errors = [f for f in report.findings if f.layer == "schema"]
    assert errors and errors[0].location.startswith("/hl7:ClinicalDocument/hl7:")
    assert errors[0].line is not None
