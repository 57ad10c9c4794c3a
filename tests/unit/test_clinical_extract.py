"""Level-3 entries of the ANS example documents -> facts; document text (CDA narrative, PDF)."""

from __future__ import annotations

import pytest
from lxml import etree

from partage.cda.parser import parse_cda
from partage.clinical.extract import ALLERGY, IMMUNIZATION, LAB, MEDICATION, PROBLEM, VITAL, extract
from partage.clinical.index import read_document
from partage.clinical.text import cda_text, pdf_text
from partage.registry.text_search import OPEN, SearchHit, terms_of
from tests.clinical_support import make_pdf
from tests.conftest import corpus_path


def _facts(name: str):
    data = corpus_path("cda", "valid", name).read_bytes()
    return extract(parse_cda(data).clinical_document)


def _by(facts, kind):
    return [f for f in facts if f.kind == kind]


@pytest.mark.corpus
def test_lab_results_of_a_bio_cr_bio_report():
    facts = _facts("BIO-CR-BIO_2024.01_TSH_1.xml")
    tsh = next(f for f in facts if f.code == "3016-3")
    assert tsh.kind == LAB and tsh.code_system == "2.16.840.1.113883.6.1"
    assert tsh.value_num == pytest.approx(1.95) and tsh.unit == "m[IU]/L"
    assert (tsh.ref_low, tsh.ref_high) == ("0.270 m[IU]/L", "4.200 m[IU]/L")
    assert tsh.interpretation == "N"
    assert tsh.effective == "20140402125521"   # 14:55:21+0200 in UTC
    t4 = next(f for f in facts if f.code == "3024-7")
    assert t4.interpretation == "L" and t4.value_num == pytest.approx(7.67)


@pytest.mark.corpus
@pytest.mark.parametrize("name, code, panel", [
    ("BIO-CR-BIO_2024.01_Glycemie_mole.xml", "40193-5", "Biochimie"),          # the report entry's code
    ("BIO-CR-BIO_2024.01_Electrophorese.xml", "2885-2", "Electrophorèse des protéines"),
])
def test_a_lab_result_knows_its_panel(name, code, panel):
    found = next(f for f in _by(_facts(name), LAB) if f.code == code)
    assert found.detail["panel"] == panel
    assert all("panel" not in f.detail for f in _facts(name) if f.kind != LAB)


@pytest.mark.corpus
def test_every_lab_result_of_an_electrophoresis_has_a_code_and_a_value():
    labs = _by(_facts("BIO-CR-BIO_2024.01_Electrophorese.xml"), LAB)
    assert len(labs) >= 20
    assert all(f.code and (f.value_num is not None or f.value_text) for f in labs)


@pytest.mark.corpus
def test_patient_summary_allergies_problems_treatments_vaccinations():
    facts = _facts("IPS-FR_2024.01_DLU.xml")
    [allergy] = _by(facts, ALLERGY)
    assert allergy.display == "PARACETAMOL" and allergy.status == "active"
    assert allergy.detail["criticality"] == "low"
    problems = {f.code: f for f in _by(facts, PROBLEM)}
    assert problems["E06.3"].display == "Thyroïdite auto-immune" and problems["E06.3"].status == "active"
    assert problems["N10"].status == "resolved" and problems["N10"].effective_end == "20180125"
    meds = [f.display for f in _by(facts, MEDICATION)]
    assert any("LEVOTHYROX" in m for m in meds)
    # the drug named as the cause of an adverse reaction is not a treatment
    assert not any("AMOXICILLINE" in m for m in meds)
    vaccines = _by(facts, IMMUNIZATION)
    assert vaccines and all(v.detail.get("lot") for v in vaccines)
    assert {f.code for f in _by(facts, VITAL)} == {"29463-7", "8302-2"}


@pytest.mark.corpus
def test_vaccination_record():
    vaccines = _by(_facts("VAC_2023.01.xml"), IMMUNIZATION)
    assert len(vaccines) == 4
    bcg = vaccines[0]
    assert bcg.code == "61077869" and "BCG" in bcg.display and bcg.effective == "1975"
    assert bcg.detail["lot"] == "235421176"


@pytest.mark.corpus
def test_unknown_document_model_yields_no_facts_but_is_searchable():
    data = corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_1.xml").read_bytes()
    root = etree.fromstring(data)
    for t in root.findall("{urn:hl7-org:v3}templateId"):
        if t.get("root", "").startswith("1.2.250.1.213.1.1.1."):
            t.set("root", "1.2.250.1.999.999.1")
    changed = etree.tostring(root)
    facts, text = read_document("text/xml", changed)
    assert facts == []
    assert "Thyréostimuline" in text or "TSH" in text


@pytest.mark.corpus
def test_unstructured_cda_has_no_facts():
    facts, _text = read_document("text/xml", corpus_path("cda", "valid", "DOC_NON_STRUCTURE_CDA-R2-N1.xml").read_bytes())
    assert facts == []


@pytest.mark.corpus
def test_cda_text_is_the_narrative():
    data = corpus_path("cda", "valid", "IPS-FR_2024.01_DLU.xml").read_bytes()
    text = cda_text(parse_cda(data).clinical_document)
    assert "Thyroïdite auto-immune" in text
    assert "<" not in text


def test_pdf_text_layer_is_read():
    assert "creatinine elevee" in pdf_text(make_pdf("Bilan renal: creatinine elevee"))
    facts, text = read_document("application/pdf", make_pdf("Compte rendu de consultation"))
    assert facts == [] and "consultation" in text


def test_unreadable_pdf_is_not_an_error():
    assert pdf_text(b"%PDF-1.4 garbage") == ""
    assert read_document("application/pdf", b"%PDF-1.4 garbage") == ([], "")


def test_search_terms_cannot_carry_query_syntax():
    assert terms_of('créat* OR "x" NEAR(a b) -- ;') == ["créat", "or", "x", "near", "a", "b"]
    hit = SearchHit("lid", 1.0, f"a <b> {OPEN}créatinine{chr(0x27e7)} x")
    assert hit.excerpt_html == "a &lt;b&gt; <mark>créatinine</mark> x"
    assert hit.excerpt_text == "a <b> créatinine x"


def test_narrative_rendering_keeps_structure_and_drops_anything_active():
    from partage.clinical.narrative import render

    cda = b"""<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:x="http://www.w3.org/1999/xhtml">
      <title>CR &amp; suivi</title>
      <component><structuredBody><component><section><title>R\xc3\xa9sultats</title>
        <text><table border="1" onclick="alert(1)"><tbody><tr><td colspan="2" style="x">Cr\xc3\xa9at &lt;b&gt;</td></tr></tbody></table>
          <list listType="ordered"><item>un</item><item><content styleCode="Bold">deux</content></item></list>
          <paragraph>voir <linkHtml href="javascript:alert(1)">ici</linkHtml><renderMultiMedia referencedObject="i1"/> fin</paragraph>
          <x:script>alert(2)</x:script> apr\xc3\xa8s
        </text>
        <component><section><title>Sous-section</title><text>texte</text></section></component>
      </section></component></structuredBody></component></ClinicalDocument>"""
    out = render(etree.fromstring(cda))
    page = etree.HTML(out)
    assert page.xpath("//h2")[0].text == "CR & suivi"
    assert page.xpath("//td[@colspan='2']")[0].text == "Créat <b>"
    assert [li.xpath("string()") for li in page.xpath("//ol/li")] == ["un", "deux"]
    assert page.xpath("//span[@class='bold']")
    assert "ici" in out and "fin" in out and "après" in out and "Sous-section" in out
    for bad in ("script", "onclick", "javascript", "style=", "href", "<img"):
        assert bad not in out, bad
