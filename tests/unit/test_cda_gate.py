"""The CDA profile at the ingest door: which bytes are CDA, which findings refuse, in what words."""

from __future__ import annotations

import hashlib
import io

import pytest

from partage.cda.findings import PARSE, SCHEMA, Finding
from partage.cda.gate import (
    CdaGate,
    entry_metadata,
    finding_context,
    is_cda,
    parse_blocking,
    profile_from_settings,
    rule_in_context,
)
from partage.config import Settings
from partage.metadata.datatypes import CX, DTM, XCN
from partage.metadata.errors import ErrorCode
from partage.metadata.model import Author, Code, DocumentContent, DocumentEntry
from tests.unit.test_cda_samples import PDF, edit, sample_cda

PID = CX.parse("185067512345689^^^&1.2.250.1.213.1.4.10&ISO")


def _entry(**overrides) -> DocumentEntry:
    """Metadata that agree with the sample CDA's header."""
    entry = DocumentEntry(
        entry_uuid="Document01", unique_id="2.25.299999999999999999999999999999999999002^DOC-1",
        patient_id=PID, source_patient_id=PID, mime_type="text/xml", creation_time=DTM("20250314091500"),
        language_code="fr-FR", title="Compte rendu de consultation",
        type_code=Code("11488-4", "2.16.840.1.113883.6.1"),
        confidentiality_codes=[Code("N", "2.16.840.1.113883.5.25")],
        healthcare_facility_type_code=Code("SA01", "1.2.250.1.71.4.2.4"),
        authors=[Author(person=XCN.parse("899999999999^MEDECIN^Paul^^^^^^&1.2.250.1.71.4.2.1&ISO"))])
    for key, value in overrides.items():
        setattr(entry, key, value)
    return entry


def _content(data: bytes) -> DocumentContent:
    return DocumentContent(file=io.BytesIO(data), size=len(data), sha1=hashlib.sha1(data).hexdigest())


@pytest.fixture(scope="module")
def gate() -> CdaGate:
    return CdaGate.from_settings(Settings())


# --- which bytes are CDA -------------------------------------------------------------------------

def test_a_clinical_document_is_cda_whatever_its_prolog_or_encoding():
    data = sample_cda()
    assert is_cda(data)
    assert is_cda(b"\xef\xbb\xbf" + data)
    assert is_cda(b"<!-- a comment -->\n" + data.split(b"?>", 1)[1])
    assert is_cda(data.decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"))
    assert is_cda(b'<!DOCTYPE x [<!ENTITY a "b">]><ClinicalDocument xmlns="urn:hl7-org:v3"/>')


def test_other_bytes_are_not_cda():
    assert not is_cda(PDF)
    assert not is_cda(b"Compte rendu en texte libre")
    assert not is_cda(b"")
    assert not is_cda(b"<ClinicalDocument/>")                       # no HL7 v3 namespace
    assert not is_cda(b'<Bundle xmlns="http://hl7.org/fhir"/>')
    assert not is_cda(b"<doc>1.2.3</doc>")


def test_an_auto_presentable_cda_is_cda():
    wrapped = (b'<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0">'
               b'<data:Contenu xmlns:data="urn:x">' + sample_cda().split(b"?>", 1)[1]
               + b"</data:Contenu></xsl:stylesheet>")
    assert is_cda(wrapped)


def test_a_clinical_document_hidden_behind_a_long_prolog_is_cda():
    """The root's start tag is looked for however far it is: padding before it (a comment,
    a processing instruction, whitespace) must not make a CDA pass as "not a CDA"."""
    body = sample_cda().split(b"?>", 1)[1]
    assert is_cda(b"<!--" + b"x" * 70_000 + b"-->" + body)
    assert is_cda(b"<?pad " + b"y" * 1_000_000 + b"?>" + body)
    assert is_cda(b"<?xml version='1.0'?>" + b"\n" * 100_000 + body)
    wrapped = (b'<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0">'
               + b"<xsl:template match='/'>" + b"z" * 70_000 + b"</xsl:template>"
               + b'<data:Contenu xmlns:data="urn:x">' + body + b"</data:Contenu></xsl:stylesheet>")
    assert is_cda(wrapped)   # an auto-presentable CDA whose document comes after 64 KB
    source = io.BytesIO(b"<!--" + b"x" * 70_000 + b"-->" + body)
    source.seek(5)
    assert is_cda(source) and source.tell() == 0   # a file is read from its start and left there


def test_xml_unreadable_before_its_root_is_cda_when_it_names_hl7():
    """Bytes that start as XML and break before any root: checked as CDA when they name the
    HL7 v3 namespace (the parser then refuses them), else not CDA."""
    body = sample_cda().split(b"?>", 1)[1]
    assert is_cda(b"<!-- a -- b -->" + body)          # "--" inside a comment: not XML
    assert is_cda(b"<?xml version='1.0'?><!-- unfinished <ClinicalDocument xmlns='urn:hl7-org:v3'>")
    assert not is_cda(b"<?xml version='1.0'?><!--" + b"x" * 100)   # no root, no HL7
    assert not is_cda(b"<?xml version='1.0'?><!--" + b"x" * 100 + b"-->")
    assert not is_cda(b"<!-- a -- b --><html><body>texte</body></html>")


# --- configuration --------------------------------------------------------------------------------

def test_parse_blocking():
    assert parse_blocking("") is None
    assert parse_blocking("none") == {PARSE}
    assert parse_blocking("1,2, terminology ,5") == {PARSE, SCHEMA, "rules", "terminology", "metadata"}
    assert "schematron" in parse_blocking("all")
    with pytest.raises(ValueError, match="unknown validation layer"):
        parse_blocking("rules,spelling")


def test_default_profile_blocks_layers_1_2_4_5():
    profile = profile_from_settings(Settings())
    assert profile.name == "cisis"
    assert {SCHEMA, "rules", "terminology", "metadata"} <= profile.blocking
    assert "schematron" not in profile.blocking
    blocking = profile_from_settings(Settings(validation_blocking="rules")).blocking
    assert blocking == {PARSE, "rules"}


def test_entry_metadata_takes_what_the_cross_check_compares():
    meta = entry_metadata(_entry())
    assert meta["patient_id"] == PID and meta["unique_id"].endswith("^DOC-1")
    assert meta["type_code"] == Code("11488-4", "2.16.840.1.113883.6.1")
    assert meta["authors"] == [XCN.parse("899999999999^MEDECIN^Paul^^^^^^&1.2.250.1.71.4.2.1&ISO")]
    assert "service_start_time" not in meta     # empty values are not compared


# --- the check --------------------------------------------------------------------------------------

def test_a_conformant_cda_with_agreeing_metadata_passes(gate):
    assert [e for e in gate(_entry(), _content(sample_cda())) if not e.warning] == []


def test_a_broken_cda_is_refused_with_rule_and_location(gate):
    data = edit(sample_cda(), "<title>Compte rendu de consultation</title>", "")
    errors = gate(_entry(), _content(data), ErrorCode.REGISTRY_METADATA)
    refusing = [e for e in errors if not e.warning]
    assert refusing and all(e.code == ErrorCode.REGISTRY_METADATA for e in refusing)
    missing = [e for e in refusing if "missing-title" in e.context]
    assert missing, [e.context for e in errors]
    assert missing[0].context == ("DocumentEntry Document01 : règle CDA missing-title (structuration minimale) : "
                                  "le titre du document (title) est obligatoire")
    assert missing[0].location.startswith("/hl7:ClinicalDocument/hl7:title")
    assert "(ligne " in missing[0].location
    assert rule_in_context(missing[0].context) == ("missing-title", "le titre du document (title) est obligatoire")


def test_metadata_that_contradict_the_header_are_refused(gate):
    errors = gate(_entry(type_code=Code("11490-0", "2.16.840.1.113883.6.1")), _content(sample_cda()))
    assert [e.context.split(" : ")[1] for e in errors if not e.warning] == \
        ["règle CDA xds-typeCode-mismatch (cohérence avec les métadonnées XDS)"]
    assert errors[0].code == ErrorCode.REPOSITORY_METADATA


def test_the_code_context_reads_back_for_every_layer():
    """The HL7 feed's acknowledgement reads the rule id back from the codeContext: every layer's
    French name (some hold parentheses) must give it back, and the message after it, whole."""
    for layer in ("parse", "schema", "rules", "schematron", "model", "terminology", "metadata"):
        f = Finding("une-regle", "error", layer, "message (avec : ponctuation)")
        assert rule_in_context(finding_context("Document01", f)) == ("une-regle", "message (avec : ponctuation)")
    assert rule_in_context("DocumentEntry.title: required") is None


def test_the_declared_mime_type_does_not_exempt_a_cda(gate):
    data = edit(sample_cda(), "<title>Compte rendu de consultation</title>", "")
    errors = gate(_entry(mime_type="application/octet-stream"), _content(data))
    contexts = " ".join(e.context for e in errors if not e.warning)
    assert "missing-title" in contexts and "xds-mimeType" in contexts


def test_non_cda_documents_are_not_checked(gate):
    assert gate(_entry(mime_type="application/pdf"), _content(PDF)) == []
    assert gate(_entry(mime_type="text/plain"), _content(b"texte")) == []
    assert gate(_entry(), None) == []


def test_a_padded_cda_is_checked_like_any_other(gate):
    data = edit(sample_cda(), "<title>Compte rendu de consultation</title>", "")
    padded = data.replace(b"?>", b"?><!--" + b" " * 70_000 + b"-->", 1)
    errors = gate(_entry(), _content(padded))
    assert any("missing-title" in e.context for e in errors if not e.warning)
    broken = b"<!-- a -- b -->" + data.split(b"?>", 1)[1]
    errors = gate(_entry(), _content(broken))
    assert errors and not errors[0].warning and "(lecture XML)" in errors[0].context


def test_a_cda_that_does_not_parse_is_refused(gate):
    errors = gate(_entry(), _content(sample_cda()[:2000]))
    assert errors and not errors[0].warning and "(lecture XML)" in errors[0].context


def test_advisory_configuration_turns_errors_into_warnings():
    advisory = CdaGate.from_settings(Settings(validation_blocking="none"))
    data = edit(sample_cda(), "<title>Compte rendu de consultation</title>", "")
    found = advisory(_entry(), _content(data))
    assert found and all(e.warning for e in found)
    assert any("missing-title" in e.context for e in found)


def test_the_header_read_with_the_rules_index_is_the_header(corpus_dir):
    """The metadata layer reads the header reusing the rules layer's child index: same result."""
    from partage.cda.header import read_header
    from partage.cda.profile import get_validator

    validator = get_validator(profile_from_settings(Settings()))
    files = [sample_cda()] + [p.read_bytes() for p in sorted((corpus_dir / "cda" / "valid").glob("*.xml"))]
    for data in files:
        report = validator.validate(data, xds_metadata={"title": "x"})
        assert report.header.to_dict() == read_header(data).to_dict()
