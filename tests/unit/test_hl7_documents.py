"""The hospital document feed without a server: CDA header -> XDS metadata (partage.cda.to_xds),
reading MDM / ORU messages (partage.hl7.document_message) and writing their acknowledgements
(partage.hl7.acks), the journal of messages not processed (partage.hl7.journal)."""

from __future__ import annotations

import base64

import pytest

from partage.cda.crosscheck import cross_check
from partage.cda.gate import entry_metadata
from partage.cda.header import read_header
from partage.cda.to_xds import MappingError, MessageContext, membership, to_xds
from partage.hl7.acks import DOCUMENT_FEED, acknowledgement, business_ack
from partage.hl7.document_message import read_message
from partage.hl7.journal import Journal
from partage.hl7.outcome import DocumentOutcome, Problem, Refused
from partage.metadata.datatypes import CX, DTM
from partage.metadata.er7 import Er7Message
from partage.metadata.model import SubmissionRequest
from partage.metadata.validate import ITI_41, validate_submission
from partage.terminology.domain import load_affinity_domain
from tests.unit.test_cda_samples import edit, nonxml_cda, sample_cda

INS = CX.parse("185067512345689^^^&1.2.250.1.213.1.4.10&ISO")


def context(**overrides) -> MessageContext:
    values = {"patient_ids": [INS], "patient_class": "I"}
    values.update(overrides)
    return MessageContext(**values)


def test_header_and_message_give_the_ig_mapping():
    meta = to_xds(read_header(sample_cda()), context(flags={"MASQUE_PS": True, "INVISIBLE_PATIENT": False}))
    e, ss = meta.entry, meta.submission_set
    assert e.unique_id == "2.25.299999999999999999999999999999999999002^DOC-1"
    assert (e.patient_id, e.source_patient_id) == (INS, CX.parse("IPP-42^^^&2.25.299999999999999999999999999999999999004&ISO"))
    assert (e.type_code.code, e.type_code.scheme) == ("11488-4", "2.16.840.1.113883.6.1")
    assert (e.class_code.code, e.class_code.scheme) == ("10", "1.2.250.1.213.1.1.4.1")   # ASS_X04
    # A model template unknown to ASS_A11: the structuration minimale formatCode.
    assert (e.format_code.code, e.format_code.scheme) == ("urn:asip:ci-sis:vsm:2012", "1.2.250.1.213.1.1.4.2.282")
    assert [c.code for c in e.confidentiality_codes] == ["N", "MASQUE_PS"]
    assert (e.creation_time, e.service_start_time, e.service_stop_time) == (
        DTM("20250314091500"), DTM("20250314090000"), DTM("20250314091000"))
    assert e.healthcare_facility_type_code.code == "SA01" and e.practice_setting_code.code == "AMBULATOIRE"
    assert e.legal_authenticator.id_number == "899999999999"
    assert e.legal_authenticator.assigning_authority.universal_id == "1.2.250.1.71.4.2.1"
    assert e.authors and e.authors[0].specialties[0].startswith("G15_10^")
    assert e.mime_type == "text/xml" and e.language_code == "fr-FR"
    assert ss.patient_id == INS and (ss.content_type_code.code, ss.content_type_code.scheme) == ("03", "1.2.250.1.213.2.2")
    assert meta.replaces == ["2.25.299999999999999999999999999999999999005"]
    # The result passes the metadata rules and agrees with the header (layer 5).
    request = SubmissionRequest(ss, [e], [], [membership(ss, e)])
    assert not [x for x in validate_submission(request, load_affinity_domain(None), ITI_41)]
    assert not cross_check(read_header(sample_cda()), entry_metadata(e))


def test_unstructured_body_takes_the_formatcode_of_its_media_type():
    meta = to_xds(read_header(nonxml_cda()), context())
    assert meta.entry.format_code.code == "urn:ihe:iti:xds-sd:pdf:2008"


def test_known_document_model_gives_its_formatcode():
    data = edit(sample_cda(), 'root="2.25.299999999999999999999999999999999999001" extension="2025.01"',
                'root="1.2.250.1.213.1.1.1.55" extension="2021.01"')
    assert to_xds(read_header(data), context()).entry.format_code.code == "urn:ihe:lab:xd-lab:2008"


@pytest.mark.parametrize("before, after, ctx, rule", [
    ('code="11488-4"', 'code="00000-0"', {}, "hl7-classCode-unknown"),
    ("<healthCareFacility>", "<healthCareFacility><!-- x -->", {"patient_class": "Z"}, "hl7-contentTypeCode-unknown"),
    ('<code code="SA01" codeSystem="1.2.250.1.71.4.2.4" displayName="Etablissement public de santé"/>', "", {},
     "hl7-healthcareFacilityTypeCode-missing"),
    ("<healthCareFacility>", "<healthCareFacility>", {"patient_ids": [CX.parse("1^^^&1.2.250.1.213.1.4.10&ISO")]},
     "hl7-pid3-mismatch"),
])
def test_what_cannot_be_mapped_is_refused_by_rule(before, after, ctx, rule):
    with pytest.raises(MappingError) as caught:
        to_xds(read_header(edit(sample_cda(), before, after)), context(**ctx))
    assert caught.value.rule == rule


def mdm(trigger="T02", orc="NW", status="F", payload: bytes | None = None) -> str:
    b64 = base64.b64encode(sample_cda() if payload is None else payload).decode()
    return "\r".join([
        f"MSH|^~\\&|RIS|ORG|PFI|ORG|20240101||MDM^{trigger}^MDM_T02|c-1|P|2.6|||||FRA|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2",
        "EVN||20240101",
        "PID|||185067512345689^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS||DOE^JOHN||19700101|M",
        "PV1|1|O",
        f"ORC|{orc}|",
        "OBR|1|||11488-4^CR^LN|",
        "TXA|1|11488-4|TEXT|20240101||||||||DOC-1^^2.25.299999999999999999999999999999999999002^ISO||||AU",
        f"OBX|1|ED|11488-4^CR^LN||^text^XML^Base64^{b64}||||||{status}|",
        "PRT||UC||SB^Send by^participation|801234567866^Dupont^Jean^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO"
        "^D^^^RPPS|||Organisation-X^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985",
        "OBX|2|CWE|MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS||Y^^ expandedYes-NoIndicator||||||F|",
        "OBX|3|CWE|DESTDMP^Destinataire DMP^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    ]) + "\r"


def test_mdm_is_read_as_the_ig_profiles_it():
    m = read_message(Er7Message.parse(mdm()))
    assert (m.message_type, m.trigger, m.control_id, m.processing) == ("MDM", "T02", "c-1", "initial")
    assert m.documents[0].data == sample_cda() and m.documents[0].status == "F"
    assert m.flags == {"MASQUE_PS": True, "DESTDMP": False}
    assert m.txa_unique_id == "2.25.299999999999999999999999999999999999002^DOC-1"
    assert m.context.patient_ids == [INS] and m.context.patient_class == "O"
    assert m.context.sender_person.format() == "801234567866^Dupont^Jean^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^RPPS"
    assert m.context.sender_institution.format() == "Organisation-X^^^^^&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985"
    assert (m.sender_id, m.sender_structure) == ("801234567866", "300017985")


@pytest.mark.parametrize("text, code, rule", [
    (mdm(trigger="T02", orc="CA"), "AE", "hl7-processing-inconsistent"),
    (mdm(trigger="T10", orc="RO", status="F"), "AE", "hl7-processing-inconsistent"),
    (mdm(trigger="T11"), "AR", "hl7-trigger"),
    (mdm().replace("MDM^T02^MDM_T02", "ADT^A01"), "AR", "hl7-message-type"),
    (mdm().replace("^Base64^", "^Hex^"), "AE", "hl7-obx5-encoding"),
    (mdm().replace("|P|2.6|", "|P|2.3.1|"), "AE", "hl7-version"),
    (mdm().replace("PID|||185067512345689^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS", "PID|||42"),
     "AE", "hl7-pid3-missing"),
])
def test_malformed_requests_are_refused(text, code, rule):
    with pytest.raises(Refused) as caught:
        read_message(Er7Message.parse(text))
    assert caught.value.code == code and caught.value.problems[0].rule == rule


def test_acknowledgement_mirrors_the_header_and_names_the_rules():
    outcome = DocumentOutcome("AE", "2 error(s)", "c-1", problems=[
        Problem("207", "missing-title", "the CDA has no title", "/hl7:ClinicalDocument (line 3)", "CISIS-CDA"),
        Problem("207", "902", "patient unknown", "PID^1^3")])
    text = acknowledgement(outcome, Er7Message.parse(mdm()).header, DOCUMENT_FEED)
    segments = text.split("\r")
    assert segments[0].startswith("MSH|^~\\&|PFI|ORG|RIS|ORG|")
    assert "|ACK^T02^ACK|" in segments[0] and "|P|2.6|||||FRA|UNICODE UTF-8" in segments[0]
    assert segments[1] == "MSA|AE|c-1|2 error(s)"
    assert segments[2].split("|")[3:6] == ["207^Application error^HL70357", "E", "missing-title^^CISIS-CDA"]
    assert segments[3].split("|")[2] == "PID^1^3"


def test_journal_keeps_a_message_until_it_is_accepted(tmp_path):
    journal = Journal.in_data_dir(tmp_path)
    text = mdm()
    journal.keep(text, DocumentOutcome("AR", "unknown patient", "c-1", problems=[Problem("207", "902", "x")]))
    journal.keep(text, DocumentOutcome("AR", "unknown patient", "c-1", problems=[Problem("207", "902", "x")]))
    [(path, meta)] = journal.entries()
    assert path.read_bytes() == text.encode("utf-8")
    assert (meta["attempts"], meta["rules"]) == (2, ["902"])
    journal.forget(text)
    assert journal.entries() == []


def test_business_acknowledgement_is_the_igs_zam_z01():
    header = Er7Message.parse(mdm()).header
    ok = business_ack(DocumentOutcome("AA", "indexed", "c-1"), header).split("\r")
    assert ok[0].startswith("MSH|^~\\&|PFI|ORG|RIS|ORG|") and "|ZAM^Z01^ZAM_Z01|" in ok[0]
    assert ok[0].endswith("|P|2.6|||||FRA|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2")
    assert ok[1].startswith("EVN||")
    assert ok[2].split("|")[:6] == ["OBX", "1", "CWE", "ACK_RECEPTION_DMP^Accusé de réception DMP^AckMetierZAM",
                                    "c-1", "Y^^expandedYes-NoIndicator"]
    assert ok[3] == ""
    ko = business_ack(DocumentOutcome("AE", "2 error(s)", "c-1", problems=[
        Problem("207", "missing-title", "no title", "/x", "CISIS-CDA"), Problem("207", "missing-setId", "no setId")]),
        header).split("\r")
    assert ko[2].split("|")[5] == "N^^expandedYes-NoIndicator"
    err = ko[3].split("|")
    assert err[3] == "207^Application error^messageErrorCondition"
    assert err[5] == "missing-title^no title^CISIS-CDA" and err[6] == "missing-title~missing-setId"
