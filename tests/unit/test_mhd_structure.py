"""Which FHIR elements repeat (partage.mhd.structure): the one rule the server uses to refuse a
single-valued element given twice and the MHD runner uses to read fixtures as HAPI does."""

from __future__ import annotations

import pytest
from lxml import etree

from partage.mhd import structure

NS = 'xmlns="http://hl7.org/fhir"'


def test_cardinality_comes_from_the_models():
    assert structure.child("Coding", "code") == structure.Child("code", False, "code", True)
    assert structure.child("CodeableConcept", "coding").repeats
    assert structure.child("BundleEntry", "resource").type_name == structure.RESOURCE
    assert structure.child("Extension", "valueString").primitive
    assert structure.child("Coding", "nonsense") is None
    assert [c.name for c in structure.children("Coding")] == ["id", "extension", "system", "version", "code",
                                                             "display", "userSelected"]


XML_BUNDLE = f"""<Bundle {NS}><type value="transaction"/>
  <entry><resource><DocumentReference>
    <status value="current"/>
    <context><practiceSetting><coding>
      <system value="http://snomed.info/sct"/><code value="225728007"/><code value="second"/>
    </coding></practiceSetting></context>
    <content><attachment><url value="a"/><url value="b"/></attachment></content>
    <content><attachment><url value="c"/></attachment></content>
  </DocumentReference></resource></entry>
  <entry><resource><Patient><birthDate value="1970-01-01">
    <extension url="u"><valueString value="x"/><valueString value="y"/></extension>
  </birthDate></Patient></resource></entry>
</Bundle>"""


def test_xml_repeats_are_located():
    repeats = structure.xml_repeats(etree.fromstring(XML_BUNDLE))
    assert [r.path for r in repeats] == [
        "Bundle.entry[0].resource.context.practiceSetting.coding[0].code",
        "Bundle.entry[0].resource.content[0].attachment.url",
        "Bundle.entry[1].resource.birthDate.extension[0].valueString",
    ]
    assert all(r.element in r.describe() for r in repeats)


def test_dropping_keeps_the_first_repeat():
    root = etree.fromstring(XML_BUNDLE)
    structure.xml_repeats(root, drop=True)
    codes = root.findall(".//{http://hl7.org/fhir}coding/{http://hl7.org/fhir}code")
    assert [c.get("value") for c in codes] == ["225728007"]
    assert structure.xml_repeats(root) == []


def test_repeating_elements_and_choices_are_not_repeats():
    ok = f"""<Bundle {NS}><entry/><entry/><link><relation value="self"/></link>
      <link><relation value="next"/></link></Bundle>"""
    assert structure.xml_repeats(etree.fromstring(ok)) == []
    two_resources = f"<Bundle {NS}><entry><resource><Patient/><Patient/></resource></entry></Bundle>"
    assert [r.path for r in structure.xml_repeats(etree.fromstring(two_resources))] == ["Bundle.entry[0].resource"]


def test_json_arrays_and_duplicate_members_are_repeats():
    data = structure.load_json(b"""{"resourceType": "Bundle", "type": "transaction", "type": "batch",
      "entry": [{"resource": {"resourceType": "DocumentReference", "status": ["current", "superseded"],
        "_status": {"extension": [{"url": "x", "valueCode": "a", "valueCode": "b"}]},
        "content": [{"attachment": {"url": "u"}}]}}]}""")
    assert [r.path for r in structure.json_repeats(data)] == [
        "Bundle.type", "Bundle.entry[0].resource.status", "Bundle.entry[0].resource.status.extension[0].valueCode"]


@pytest.mark.parametrize("text", [
    '{"resourceType": "Coding"}',
    '{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "name": [{"given": ["a", "b"]}]}}]}',
])
def test_well_formed_json_has_no_repeat(text):
    assert structure.json_repeats(structure.load_json(text)) == []
