"""The CDA engine under mutated documents: always a report (a parse finding or rule
findings), never an exception, in bounded time."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from partage.cda.profile import get_profile, get_validator
from tests.fuzz.conftest import FUZZ
from tests.fuzz.mutations import mutated

SEED = b"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <realmCode code="FR"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <templateId root="2.16.840.1.113883.2.8.2.1"/>
  <templateId root="1.2.250.1.213.1.1.1.1"/>
  <id root="1.2.250.1.999.1" extension="DOC-1"/>
  <code code="11490-0" codeSystem="2.16.840.1.113883.6.1" displayName="Lettre de sortie"/>
  <title>Lettre de sortie</title>
  <effectiveTime value="20241120093000+0100"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="fr-FR"/>
  <setId root="1.2.250.1.999.1" extension="SET-1"/><versionNumber value="1"/>
  <recordTarget><patientRole>
    <id root="1.2.250.1.213.1.4.8" extension="279035121518989"/>
    <patient><name><given>JEANNE</given><family qualifier="BR">DUPONT</family></name>
      <administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/>
      <birthTime value="19700101"/></patient>
  </patientRole></recordTarget>
  <author><time value="20241120093000+0100"/><assignedAuthor>
    <id root="1.2.250.1.71.4.2.1" extension="801234567890"/>
    <assignedPerson><name><family>MARTIN</family></name></assignedPerson>
  </assignedAuthor></author>
  <custodian><assignedCustodian><representedCustodianOrganization>
    <id root="1.2.250.1.71.4.2.2" extension="1111111111"/>
  </representedCustodianOrganization></assignedCustodian></custodian>
  <component><nonXMLBody><text mediaType="text/plain" representation="B64">Qm9uam91cg==</text></nonXMLBody></component>
</ClinicalDocument>
"""


@FUZZ
@given(data=st.data())
def test_mutated_cda_always_gets_a_report(data):
    validator = get_validator(get_profile("cisis"))
    document = data.draw(mutated(SEED, 6))
    started = time.monotonic()
    report = validator.validate(document, filename="fuzz.xml")
    assert time.monotonic() - started < 10   # bounded (milliseconds here; 10 s: a loaded machine's margin)
    for finding in report.findings:
        assert finding.rule and finding.severity in {"error", "warning", "info"} and finding.layer
