"""Layer 3: an ISO Schematron (queryBinding xslt2) written for these tests, run by Partage's
compiler on saxonche: anchored and floating rules, first-rule-wins, abstract rules and
patterns, let, includes, doc() lookups relative to the .sch, roles, messages, locations."""

from __future__ import annotations

import pytest

pytest.importorskip("saxonche", reason="saxonche is a dependency of partage (setup.cfg); not installed here")

from partage.cda.profile import get_profile, get_validator
from partage.cda.schematron import SchematronError, analyse_context, load_schematron
from tests.unit.test_cda_samples import edit, sample_cda

SCH = """<?xml version="1.0" encoding="UTF-8"?>
<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="xslt2">
  <ns uri="urn:hl7-org:v3" prefix="hl7"/>
  <let name="cd" value="'//hl7:ClinicalDocument'"/>
  <pattern id="header">
    <rule context="//hl7:ClinicalDocument[hl7:typeId]/hl7:title">
      <let name="len" value="string-length(normalize-space(.))"/>
      <assert id="T-1" role="error" test="$len &gt; 3">title too short: '<value-of select="."/>' (<value-of select="$len"/>)</assert>
    </rule>
    <rule context="//hl7:ClinicalDocument[hl7:typeId]/hl7:*">
      <report id="T-OTHER" role="info" test="false()">never</report>
    </rule>
    <rule context="//hl7:ClinicalDocument[hl7:typeId]/hl7:code">
      <!-- never fires: the rule above claims every child first (first rule wins) -->
      <assert id="T-SHADOWED" role="error" test="false()">shadowed</assert>
    </rule>
    <rule context="//hl7:ClinicalDocument[hl7:typeId]/hl7:languageCode/@code">
      <assert id="T-LANG" role="warning" test="doc('voc-lang.xml')/*/concept[@code = current()]">language <value-of select="."/> not in voc-lang.xml</assert>
    </rule>
  </pattern>
  <pattern id="abstract-rules">
    <rule abstract="true" id="has-root"><assert id="T-ROOT" test="@root">an id needs a root</assert></rule>
    <rule context="//hl7:ClinicalDocument/hl7:setId"><extends rule="has-root"/></rule>
  </pattern>
  <pattern abstract="true" id="required">
    <rule context="$parent"><assert id="T-REQ" role="error" test="$child">missing <value-of select="'$child'"/> in <name/></assert></rule>
  </pattern>
  <pattern is-a="required" id="req-custodian">
    <param name="parent" value="//hl7:ClinicalDocument"/>
    <param name="child" value="hl7:custodian"/>
  </pattern>
  <pattern id="floating">
    <rule context="hl7:section[not(hl7:title)]">
      <assert id="T-SECTION" role="error" test="false()">a section without title</assert>
    </rule>
  </pattern>
  <include href="extra.sch"/>
</schema>
"""

EXTRA = """<pattern xmlns="http://purl.oclc.org/dsdl/schematron" id="included">
  <rule context="//hl7:ClinicalDocument/hl7:versionNumber">
    <assert id="T-VERSION" test="number(@value) &lt; 10">version <value-of select="@value"/> too high</assert>
  </rule>
</pattern>
"""

VOC = """<valueSets><concept code="fr-FR"/><concept code="fr-CA"/></valueSets>"""


@pytest.fixture(scope="module")
def sch(tmp_path_factory):
    root = tmp_path_factory.mktemp("sch")
    (root / "test.sch").write_text(SCH, encoding="utf-8")
    (root / "extra.sch").write_text(EXTRA, encoding="utf-8")
    (root / "voc-lang.xml").write_text(VOC, encoding="utf-8")
    return root / "test.sch"


def _failed(sch, data: bytes) -> dict[str, list]:
    validator = get_validator(get_profile("structure", schematron=str(sch)).with_options(
        layers=frozenset({"rules", "schematron"})))
    report = validator.validate(data)
    out: dict[str, list] = {}
    for f in report.findings:
        if f.layer == "schematron":
            out.setdefault(f.rule, []).append(f)
    return out


def test_the_sample_passes(sch):
    assert _failed(sch, sample_cda()) == {}


def test_each_kind_of_rule_reports_its_failure(sch):
    data = sample_cda()
    data = edit(data, "<title>Compte rendu de consultation</title>", "<title>CR</title>")
    data = edit(data, '<languageCode code="fr-FR"/>', '<languageCode code="en-US"/>')
    data = edit(data, '<setId root="2.25.299999999999999999999999999999999999003" extension="SET-1"/>',
                '<setId extension="SET-1"/>')
    data = edit(data, '<versionNumber value="1"/>', '<versionNumber value="12"/>')
    data = edit(data, "<section><title>Motif</title>", "<section>")
    start, end = data.index(b"<custodian>"), data.index(b"</custodian>") + len(b"</custodian>")
    data = data[:start] + data[end:]
    failed = _failed(sch, data)
    assert set(failed) == {"T-1", "T-LANG", "T-ROOT", "T-VERSION", "T-SECTION", "T-REQ"}
    title = failed["T-1"][0]
    assert title.severity == "error" and title.message == "title too short: 'CR' (2)"
    assert title.location == "/hl7:ClinicalDocument/hl7:title" and title.line
    assert failed["T-LANG"][0].severity == "warning"
    assert failed["T-LANG"][0].location.endswith("hl7:languageCode/@code")
    assert failed["T-REQ"][0].message == "missing hl7:custodian in ClinicalDocument"
    assert "/hl7:section" in failed["T-SECTION"][0].location


def test_contexts_are_anchored_or_floating():
    anchored = analyse_context("//hl7:ClinicalDocument[hl7:typeId]/hl7:author/hl7:time")
    assert anchored and anchored[0].anchor == "//hl7:ClinicalDocument[hl7:typeId]"
    assert anchored[0].tests == ("hl7:author", "hl7:time")
    assert analyse_context("hl7:section[not(hl7:title)]") is None
    assert analyse_context("//hl7:entry[current()]") is None


def test_a_missing_include_is_a_defect_of_the_schematron_not_a_crash(tmp_path):
    """As the ANS tool does: the include is reported, the rest compiles and runs; the layer says partial."""
    for name, text in (("extra.sch", EXTRA), ("voc-lang.xml", VOC)):
        (tmp_path / name).write_text(text, encoding="utf-8")
    bad = tmp_path / "bad.sch"
    bad.write_text(SCH.replace('<include href="extra.sch"/>', '<include href="missing.sch"/>'), encoding="utf-8")
    compiled = load_schematron(bad)
    assert [d.href for d in compiled.missing_includes] == ["missing.sch"]
    validator = get_validator(get_profile("structure", schematron=str(bad)).with_options(
        layers=frozenset({"rules", "schematron"})))
    data = edit(sample_cda(), "<title>Compte rendu de consultation</title>", "<title>CR</title>")
    report = validator.validate(data)
    assert report.layers["schematron"].status == "failed"      # the rules that exist still ran
    assert "T-1" in report.rules() and "schematron-defect" in report.rules()
    clean = validator.validate(sample_cda())
    assert clean.layers["schematron"].status == "partial" and clean.valid and clean.verdict == "incomplet"
    assert any("missing.sch" in f.message for f in clean.findings if f.rule == "schematron-defect")


def test_a_schematron_that_is_not_one_is_refused(tmp_path):
    bad = tmp_path / "bad.sch"
    bad.write_text("<schema xmlns='urn:not-schematron'/>", encoding="utf-8")
    with pytest.raises(SchematronError, match="not an ISO schematron"):
        load_schematron(bad)
