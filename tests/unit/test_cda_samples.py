"""A small CI-SIS CDA written for Partage's tests (not taken from the ANS examples), plus
helpers to break it one element at a time. Other CDA tests import `sample_cda` from here,
so the rules are tested without the shared corpus too."""

from __future__ import annotations

import base64

from lxml import etree

from partage.cda.profile import validate

HL7 = "urn:hl7-org:v3"

SAMPLE_CDA = """<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <realmCode code="FR"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <templateId root="2.16.840.1.113883.2.8.2.1"/>
  <templateId root="1.2.250.1.213.1.1.1.1"/>
  <templateId root="2.25.299999999999999999999999999999999999001" extension="2025.01"/>
  <id root="2.25.299999999999999999999999999999999999002" extension="DOC-1"/>
  <code code="11488-4" codeSystem="2.16.840.1.113883.6.1" displayName="CR de consultation"/>
  <title>Compte rendu de consultation</title>
  <effectiveTime value="20250314101500+0100"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25" displayName="Normal"/>
  <languageCode code="fr-FR"/>
  <setId root="2.25.299999999999999999999999999999999999003" extension="SET-1"/>
  <versionNumber value="1"/>
  <recordTarget>
    <patientRole>
      <id root="1.2.250.1.213.1.4.10" extension="185067512345689"/>
      <id root="2.25.299999999999999999999999999999999999004" extension="IPP-42"/>
      <addr use="H"><streetAddressLine>1 rue des Essais</streetAddressLine><city>Lyon</city></addr>
      <telecom use="MC" value="tel:+33600000000"/>
      <patient>
        <name>
          <family qualifier="BR">ESSAI</family>
          <family qualifier="CL">TEST</family>
          <given qualifier="BR">Jean</given>
          <given>Jean Pierre</given>
        </name>
        <administrativeGenderCode code="M" codeSystem="2.16.840.1.113883.5.1" displayName="Masculin"/>
        <birthTime value="19850612"/>
        <birthplace><place><addr><county>69123</county><city>Lyon</city></addr></place></birthplace>
      </patient>
    </patientRole>
  </recordTarget>
  <author>
    <time value="20250314101000+0100"/>
    <assignedAuthor>
      <id root="1.2.250.1.71.4.2.1" extension="899999999999"/>
      <code code="G15_10" codeSystem="1.2.250.1.213.1.1.4.5" displayName="Médecin - Médecine générale"/>
      <telecom value="mailto:medecin@example.org"/>
      <assignedPerson><name><prefix>M</prefix><family>MEDECIN</family><given>Paul</given><suffix>DR</suffix></name></assignedPerson>
      <representedOrganization>
        <id root="1.2.250.1.71.4.2.2" extension="1999999999"/>
        <name>Cabinet d'essai</name>
      </representedOrganization>
    </assignedAuthor>
  </author>
  <custodian>
    <assignedCustodian>
      <representedCustodianOrganization>
        <id root="1.2.250.1.71.4.2.2" extension="1999999999"/>
        <name>Cabinet d'essai</name>
      </representedCustodianOrganization>
    </assignedCustodian>
  </custodian>
  <legalAuthenticator>
    <time value="20250314101500+0100"/>
    <signatureCode code="S"/>
    <assignedEntity>
      <id root="1.2.250.1.71.4.2.1" extension="899999999999"/>
      <assignedPerson><name><family>MEDECIN</family><given>Paul</given></name></assignedPerson>
    </assignedEntity>
  </legalAuthenticator>
  <documentationOf>
    <serviceEvent>
      <code code="GLQP012" codeSystem="1.2.250.1.213.2.5" displayName="Acte"/>
      <effectiveTime><low value="20250314100000+0100"/><high value="20250314101000+0100"/></effectiveTime>
      <performer typeCode="PRF">
        <assignedEntity>
          <id root="1.2.250.1.71.4.2.1" extension="899999999999"/>
          <representedOrganization>
            <id root="1.2.250.1.71.4.2.2" extension="1999999999"/>
            <standardIndustryClassCode code="AMBULATOIRE" codeSystem="1.2.250.1.213.1.1.4.9" displayName="Ambulatoire"/>
          </representedOrganization>
        </assignedEntity>
      </performer>
    </serviceEvent>
  </documentationOf>
  <relatedDocument typeCode="RPLC">
    <parentDocument><id root="2.25.299999999999999999999999999999999999005"/></parentDocument>
  </relatedDocument>
  <componentOf>
    <encompassingEncounter>
      <code code="AMB" codeSystem="2.16.840.1.113883.5.4" displayName="Ambulatoire"/>
      <effectiveTime><low value="20250314100000+0100"/></effectiveTime>
      <location>
        <healthCareFacility>
          <code code="SA01" codeSystem="1.2.250.1.71.4.2.4" displayName="Etablissement public de santé"/>
        </healthCareFacility>
      </location>
    </encompassingEncounter>
  </componentOf>
  <component>
    <structuredBody>
      <component><section><title>Motif</title><text>Essai.</text></section></component>
    </structuredBody>
  </component>
</ClinicalDocument>
"""

PDF = b"%PDF-1.4\n% Partage test\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def sample_cda() -> bytes:
    return SAMPLE_CDA.encode("utf-8")


def edit(data: bytes, before: str, after: str) -> bytes:
    """Replace one exact piece of text (fails loudly if the sample changed)."""
    text = data.decode("utf-8")
    assert text.count(before) >= 1, before
    return text.replace(before, after, 1).encode("utf-8")


def nonxml_cda(media_type: str = "application/pdf", payload: bytes = PDF, representation: str = "B64") -> bytes:
    """The sample as an XDS-SD document: three templateIds and a base64 body."""
    data = sample_cda()
    data = edit(data, '<templateId root="2.25.299999999999999999999999999999999999001" extension="2025.01"/>',
                '<templateId root="1.3.6.1.4.1.19376.1.2.20"/>')
    text = base64.encodebytes(payload).decode("ascii") if representation == "B64" else payload.decode()
    body = (f'<nonXMLBody><text mediaType="{media_type}" representation="{representation}">{text}</text>'
            "</nonXMLBody>")
    start = data.index(b"<structuredBody>")
    end = data.index(b"</structuredBody>") + len(b"</structuredBody>")
    return data[:start] + body.encode() + data[end:]


def rule_ids(data: bytes, **options) -> set[str]:
    report = validate(data, "structure", **options)
    return {f.rule for f in report.findings if f.severity == "error"}


def test_sample_is_well_formed_and_passes_the_rules():
    assert etree.fromstring(sample_cda()).tag == f"{{{HL7}}}ClinicalDocument"
    report = validate(sample_cda(), "structure")
    assert report.valid, [f.to_dict() for f in report.findings]
    assert not [f for f in report.findings if f.severity != "info"]


def test_nonxml_sample_passes_the_rules():
    report = validate(nonxml_cda(), "structure")
    assert report.valid, [f.to_dict() for f in report.findings]
    assert report.header.body == "nonXMLBody"
    assert report.header.media_type == "application/pdf"
