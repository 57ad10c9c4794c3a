"""Header reading: the CDA header as plain data, on the sample and on the ANS examples."""

from __future__ import annotations

import json

import pytest

from partage.cda.header import CdaCode, document_model, read_header
from partage.cda.parser import XmlRejected
from tests.conftest import corpus_path
from tests.unit.test_cda_samples import nonxml_cda, sample_cda


def test_sample_header():
    h = read_header(sample_cda())
    assert h.realm_codes == ["FR"]
    assert h.type_id == ("2.16.840.1.113883.1.3", "POCD_HD000040")
    assert h.id == ("2.25.299999999999999999999999999999999999002", "DOC-1")
    assert h.set_id == ("2.25.299999999999999999999999999999999999003", "SET-1")
    assert h.version_number == "1"
    assert h.code == CdaCode("11488-4", "2.16.840.1.113883.6.1", "CR de consultation")
    assert h.title == "Compte rendu de consultation"
    assert h.effective_time == "20250314101500+0100"
    assert h.confidentiality.code == "N" and h.language_code == "fr-FR"
    assert h.document_model == "2.25.299999999999999999999999999999999999001:2025.01"
    assert h.body == "structuredBody" and h.media_type == ""


def test_sample_patient_and_ins_traits():
    p = read_header(sample_cda()).patient
    assert p.ids == [("1.2.250.1.213.1.4.10", "185067512345689"),
                     ("2.25.299999999999999999999999999999999999004", "IPP-42")]
    assert p.ins == ("1.2.250.1.213.1.4.10", "185067512345689") and p.has_ins
    assert (p.birth_name, p.used_name) == ("ESSAI", "TEST")
    assert (p.first_given_name, p.given_names) == ("Jean", ["Jean Pierre"])
    assert (p.birth_time, p.gender, p.birthplace_code) == ("19850612", "M", "69123")


def test_sample_participants():
    h = read_header(sample_cda())
    author = h.authors[0]
    assert author.ids == [("1.2.250.1.71.4.2.1", "899999999999")]
    assert (author.family, author.given, author.prefix, author.suffix) == ("MEDECIN", ["Paul"], "M", "DR")
    assert author.code.code == "G15_10" and author.time == "20250314101000+0100"
    assert author.organization.ids == [("1.2.250.1.71.4.2.2", "1999999999")]
    assert h.legal_authenticator.signature_code == "S"
    assert h.custodian.ids == [("1.2.250.1.71.4.2.2", "1999999999")]
    event = h.service_event
    assert (event.start, event.stop) == ("20250314100000+0100", "20250314101000+0100")
    assert event.performers[0].organization.industry_code.code == "AMBULATOIRE"
    assert h.encounter.facility_code.code == "SA01" and h.encounter.code.code == "AMB"
    assert h.related_documents[0].type_code == "RPLC"
    assert h.related_documents[0].parent_ids == [("2.25.299999999999999999999999999999999999005", "")]


def test_nonxml_header():
    h = read_header(nonxml_cda())
    assert (h.body, h.media_type, h.representation) == ("nonXMLBody", "application/pdf", "B64")
    assert h.document_model == "1.3.6.1.4.1.19376.1.2.20"


def test_to_dict_is_plain_data():
    d = read_header(sample_cda()).to_dict()
    json.dumps(d)
    assert d["document_model"].startswith("2.25.")


def test_document_model_prefers_cisis_templates():
    assert document_model([("1.3.6.1.4.1.19376.1.3.3", ""), ("1.2.250.1.213.1.1.1.55", "2024.01")]) \
        == "1.2.250.1.213.1.1.1.55:2024.01"
    assert document_model([]) == ""


def test_read_header_refuses_unsafe_or_foreign_xml():
    with pytest.raises(XmlRejected):
        read_header(b'<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>')
    with pytest.raises(ValueError):
        read_header(b"<html/>")


def _manifest() -> list[dict]:
    data = json.loads(corpus_path("cda", "manifest.json").read_text(encoding="utf-8"))
    return data["files"]


def test_header_matches_the_corpus_manifest():
    manifest = _manifest()
    valid = corpus_path("cda", "valid")
    for entry in manifest:
        h = read_header((valid / entry["file"]).read_bytes())
        where = entry["file"]
        assert (h.code.code, h.code.code_system) == (entry["code"]["code"], entry["code"]["codeSystem"]), where
        assert h.title == entry["title"], where
        assert h.effective_time == entry["effectiveTime"], where
        assert h.confidentiality.code == entry["confidentialityCode"], where
        assert h.language_code == entry["languageCode"], where
        assert h.realm_codes == [entry["realmCode"]], where
        assert h.id == (entry["id"]["root"], entry["id"].get("extension", "")), where
        assert h.set_id == (entry["setId"]["root"], entry["setId"].get("extension", "")), where
        assert h.version_number == entry["versionNumber"], where
        assert h.template_ids == [(t["root"], t.get("extension", "")) for t in entry["templateIds"]], where
        assert h.body == entry["body"], where
        assert h.patient.ids == [(i["root"], i.get("extension", "")) for i in entry["recordTarget_patient_ids"]], where
        assert h.patient.birth_time == (entry["patient_birthTime"] or ""), where
        assert len(h.authors) == entry["n_authors"], where
        assert (h.legal_authenticator is not None) == entry["has_legalAuthenticator"], where
        assert (h.encounter is not None) == entry["has_componentOf"], where
        assert h.auto_presentable is False


def test_corpus_nonxml_bodies_have_a_media_type():
    valid = corpus_path("cda", "valid")
    kinds = {e["file"]: e["body"] for e in _manifest()}
    nonxml = [f for f, kind in kinds.items() if kind == "nonXMLBody"]
    assert len(nonxml) == 3
    for name in nonxml:
        h = read_header((valid / name).read_bytes())
        assert h.media_type == "application/pdf" and h.representation == "B64"
        assert h.document_model == "1.3.6.1.4.1.19376.1.2.20"
