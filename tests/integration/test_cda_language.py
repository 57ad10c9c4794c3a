"""One language per page: on the report of a document that breaks several layers at once, every
message Partage writes is French, like the ANS schematrons' messages beside it (docs/cda-rules.md,
"Language of the reports"). Partage's own layers are the structuration minimale, the schema
wrapper, the terminology, the metadata cross-check, the layer reasons and the XDS refusals."""

from __future__ import annotations

import re

import pytest
from lxml import html

from partage.cda.findings import ERROR, MODEL, SCHEMA, SCHEMATRON
from partage.cda.gate import findings_to_errors, rule_in_context
from partage.cda.profile import Validator, get_profile
from partage.cda.report_html import to_html
from partage.metadata.datatypes import CX, DTM
from partage.metadata.model import Code
from tests.conftest import corpus_path

pytestmark = pytest.mark.corpus

VAC = "section-templateId-removed__VAC_2023.01.xml"    # also refused by its volet (ANS messages)
BREAKS = (   # (in the document, instead): one or more findings of Partage's own layers each
    ('<realmCode code="FR" />', '<realmCode code="EN" />'),
    ("<title>Historique de vaccinations</title>", "<title> </title>"),
    ('<languageCode code="fr-FR" />', '<languageCode code="en-US" />'),
    ('<versionNumber value="1" />', '<versionNumber value="premier" />'),          # XSD too
    ('<confidentialityCode code="N"', '<confidentialityCode code="Q"'),
    ('<telecom value="tel:0144534551" use="H"/>', '<telecom value="0144534551" use="XX"/>'),
    ('<given qualifier="BR">DOMINIQUE</given>', '<given qualifier="XX">DOMINIQUE</given>'),
    ('<administrativeGenderCode code="F"', '<administrativeGenderCode code="Z"'),   # terminology
)
METADATA = {   # every one contradicts the header (layer 5)
    "patient_id": CX.parse("123^^^&1.2.3&ISO"), "type_code": Code("11488-4", "2.16.840.1.113883.6.1"),
    "creation_time": DTM("20200101"), "title": "Autre titre", "mime_type": "application/pdf",
    "language_code": "fr-FR", "unique_id": "1.2.3.4",
}
# Typical words of English prose (Partage's messages used to read "realmCode must be 'FR', found ...").
ENGLISH = re.compile(r"\b(must|is not|differs from|required|needs|found|should|does not|the|of|is|not in|"
                     r"missing|more)\b")
# A third party's own words (libxml2's XSD message, a decoder's), quoted inside the French message.
QUOTED = re.compile(r"\((?:message du (?:validateur|lecteur) libxml2|message du décodeur|contrôle du type \w+) "
                    r": .*\)\s*$", re.S)
FRENCH = re.compile(r"[éèàçêù]|\b(le|la|les|doit|est|pas|du|des)\b")


def _english(text: str) -> list[str]:
    return ENGLISH.findall(QUOTED.sub("", text))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    data = corpus_path("cda", "model-invalid", VAC).read_text("utf-8")
    for before, after in BREAKS:
        assert data.count(before) == 1, before
        data = data.replace(before, after)
    profile = get_profile("cisis", schema=str(corpus_path("xsd", "cda")), valuesets=str(corpus_path("valuesets")),
                          model_schematrons=str(corpus_path("cda", "schematrons")),
                          cache_dir=str(tmp_path_factory.mktemp("sch-cache")))
    return Validator(profile).validate(data.encode("utf-8"), filename=VAC, xds_metadata=METADATA)


def test_the_document_breaks_every_kind_of_layer(report):
    layers = {f.layer for f in report.findings if f.severity == ERROR}
    assert {"schema", "rules", "terminology", "metadata", "model"} <= layers
    assert len({f.rule for f in report.findings if f.layer == "rules"}) >= 6


def test_the_report_page_speaks_french_only(report):
    page = html.fromstring(to_html([report]))
    rows = page.xpath("//tr[contains(@class, 'finding')]")
    ours = [(row.get("data-rule"), row.findall("td")[3].text_content()) for row in rows
            if row.get("data-layer") not in (MODEL, SCHEMATRON)]
    ans = [row.findall("td")[3].text_content() for row in rows if row.get("data-layer") == MODEL]
    assert len(ours) >= 15 and ans
    assert all(FRENCH.search(message) for message in ans), ans     # the ANS schematrons' French
    english = {rule: (message, _english(message)) for rule, message in ours if _english(message)}
    assert not english, english
    assert all(FRENCH.search(message) for _rule, message in ours)
    schema = [m for _r, m in ours if m.startswith("non conforme au schéma XML")]
    assert schema and all(QUOTED.search(m) for m in schema)   # libxml2's words kept, as its own
    reasons = [td.text_content() for td in page.xpath("//tr[@class='layer' or @class='part']/td[3]")]
    assert len(reasons) >= 7
    assert not [r for r in reasons if _english(r)], reasons


def test_the_xds_refusal_speaks_french_too(report):
    blocking = [f for f in report.findings if f.severity == ERROR and f.layer not in (MODEL, SCHEMA)]
    errors = findings_to_errors("Document01", "XDSRepositoryMetadataError", blocking)
    assert errors
    for error in errors:
        read = rule_in_context(error.context)
        assert read is not None and read[0] in {f.rule for f in blocking}, error.context
        assert not _english(read[1]), error.context
        assert error.context.startswith("DocumentEntry Document01 : règle CDA ")
        assert "(ligne " in error.location or "(" not in error.location
