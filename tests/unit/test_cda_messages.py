"""The report's own lines, in French (one language per page): why a verdict is incomplete, the
SVRL title, the schema layer's wrapper around libxml2's words."""

from __future__ import annotations

from lxml import etree

from partage.cda.findings import NOT_RUN, PARTIAL, PASSED, LayerResult, Report, to_svrl
from partage.cda.messages import schema_message


def test_an_incomplete_verdict_says_why_in_french():
    report = Report(file="doc.xml", layers={
        "rules": LayerResult(PASSED), "terminology": LayerResult(PARTIAL, "1 jeu(x) de valeurs non chargé(s)"),
        "model": LayerResult(NOT_RUN)})
    assert report.verdict == "incomplet"
    assert report.incomplete_because() == [
        "terminologie : exécutée en partie (1 jeu(x) de valeurs non chargé(s))",
        "schematron du modèle (volet) : non exécutée"]


def test_the_svrl_title_is_french():
    root = etree.fromstring(to_svrl(Report(file="doc.xml", profile="cisis")))
    assert root.get("title") == "Partage – validation CDA : doc.xml"


def test_libxml2_words_are_quoted_not_translated():
    detail = "Element '{urn:hl7-org:v3}title': This element is not expected."
    assert schema_message(detail + "\n") == f"non conforme au schéma XML du CDA (message du validateur libxml2 : {detail})"
