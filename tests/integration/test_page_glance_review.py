"""The patient page (`/dossier/<id>`) judged as a French GP reads it and as issue 20's acceptance
asks: values as a clinician writes them, the latest result of each analyte with its flag and
trend, current treatments only, allergies in French, and the one-screen layout for a heavy
patient. In process (Flask test client, `--insecure-dev`, as test_page_adversarial.py), on
lab and treatment documents made from the corpus's BIO-CR-BIO template; the layout check loads
the page's own HTML (its CSS is inline) in headless Chromium once, without a server."""

from __future__ import annotations

import copy
from datetime import date

import pytest
from lxml import etree
from lxml import html as lxml_html

from benchmarks.bench_clinical import NIR, feed_patient
from partage.access.actor import INSECURE_DEV_ACTOR
from partage.ingest import IngestService
from partage.server.app import create_app
from partage.services import Services
from partage.web import formatting as fmt
from tests import clinical_support as C
from tests.conftest import corpus_path
from tests.page_support import dev_services

pytestmark = pytest.mark.corpus

H = "{urn:hl7-org:v3}"
XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
LAB_TEMPLATE = "1.3.6.1.4.1.19376.1.3.1.6"
T_MEDICATION = "1.3.6.1.4.1.19376.1.5.3.1.4.7"
T_ALLERGY = "1.3.6.1.4.1.19376.1.5.3.1.4.6"
CREAT = ("2160-0", "Créatinine [Masse/Volume] Sérum/Plasma ; Numérique")


@pytest.fixture
def services(tmp_path):
    with dev_services(tmp_path / "data") as opened:
        yield opened


def _template() -> etree._Element:
    return etree.fromstring(corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_Glycemie_mole.xml").read_bytes())


def lab_document(results: list[dict], doc_time: str = "20240601120000+0200") -> bytes:
    """A BIO-CR-BIO report of these results (each: code, display, value, unit, when, and
    optionally low, high, interpretation), made from the corpus's glycaemia report."""
    root = _template()
    root.find(f"{H}effectiveTime").set("value", doc_time)
    obs = next(o for o in root.iter(f"{H}observation")
               if LAB_TEMPLATE in {t.get("root") for t in o.findall(f"{H}templateId")})
    parent = obs.getparent()
    position = parent.index(obs)
    parent.remove(obs)
    for i, r in enumerate(results):
        o = copy.deepcopy(obs)
        o.find(f"{H}code").set("code", r["code"])
        o.find(f"{H}code").set("displayName", r["display"])
        o.find(f"{H}effectiveTime").set("value", r["when"])
        v = o.find(f"{H}value")
        v.set("value", r["value"])
        v.set("unit", r["unit"])
        for ic in o.findall(f"{H}interpretationCode"):
            if r.get("interpretation"):
                ic.set("code", r["interpretation"])
            else:
                o.remove(ic)
        rng = o.find(f"{H}referenceRange/{H}observationRange/{H}value")
        for side in ("low", "high"):
            el = rng.find(H + side)
            if r.get(side) is None:
                rng.remove(el)
            else:
                el.set("value", r[side])
                el.set("unit", r["unit"])
        parent.insert(position + i, o)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _add_entries(root: etree._Element, entries: list[etree._Element]) -> None:
    section = next(s for s in root.iter(f"{H}section"))
    for e in entries:
        entry = etree.SubElement(section, f"{H}entry")
        entry.append(e)


def medication(name: str, code: str, low: str, high: str = "", status: str = "completed") -> etree._Element:
    high_el = f'<high value="{high}"/>' if high else ""
    return etree.fromstring(f"""<substanceAdministration xmlns="urn:hl7-org:v3"
        xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" classCode="SBADM" moodCode="EVN">
      <templateId root="1.3.6.1.4.1.19376.1.5.3.1.4.7"/><templateId root="1.3.6.1.4.1.19376.1.5.3.1.4.7.1"/>
      <id root="1.2.250.1.999.{abs(hash((name, low, high))) % 10**9}"/>
      <statusCode code="{status}"/>
      <effectiveTime xsi:type="IVL_TS"><low value="{low}"/>{high_el}</effectiveTime>
      <doseQuantity value="1" unit="{{tbl}}"/>
      <consumable><manufacturedProduct><templateId root="1.3.6.1.4.1.19376.1.5.3.1.4.7.2"/>
        <manufacturedMaterial><code code="{code}" codeSystem="1.2.250.1.213.2.3.1" displayName="{name}"/>
        <name>{name}</name></manufacturedMaterial></manufacturedProduct></consumable>
    </substanceAdministration>""")


def allergy(agent: str, crit_code: str, crit_system: str, crit_display: str) -> etree._Element:
    return etree.fromstring(f"""<act xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
        classCode="ACT" moodCode="EVN"><templateId root="1.3.6.1.4.1.19376.1.5.3.1.4.5.3"/>
      <entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">
        <templateId root="1.3.6.1.4.1.19376.1.5.3.1.4.5"/><templateId root="1.3.6.1.4.1.19376.1.5.3.1.4.6"/>
        <id root="1.2.250.1.999.42"/>
        <code code="DALG" codeSystem="2.16.840.1.113883.5.4" displayName="Allergie médicamenteuse"/>
        <statusCode code="completed"/><effectiveTime><low value="20200101"/></effectiveTime>
        <value xsi:type="CD" code="ALG" codeSystem="2.16.840.1.113883.5.4"/>
        <participant typeCode="CSM"><participantRole classCode="MANU"><playingEntity classCode="MMAT">
          <code code="J01CA04" codeSystem="2.16.840.1.113883.6.73" displayName="{agent}"/></playingEntity>
        </participantRole></participant>
        <entryRelationship typeCode="SUBJ" inversionInd="true"><observation classCode="OBS" moodCode="EVN">
          <templateId root="1.3.6.1.4.1.19376.1.5.3.1.4.5.3"/>
          <code code="82606-5" codeSystem="2.16.840.1.113883.6.1" displayName="Criticité"/>
          <statusCode code="completed"/>
          <value xsi:type="CE" code="{crit_code}" codeSystem="{crit_system}" displayName="{crit_display}"/>
        </observation></entryRelationship>
      </observation></entryRelationship></act>""")


def other_document(entries: list[etree._Element], doc_time: str) -> bytes:
    """The glycaemia report with `entries` added to its section (its own result left in)."""
    root = _template()
    root.find(f"{H}effectiveTime").set("value", doc_time)
    _add_entries(root, entries)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def store(services: Services, documents: list[bytes]) -> str:
    pid = feed_patient(services)
    ingest = IngestService(services, INSECURE_DEV_ACTOR)
    for i, data in enumerate(documents):
        ingest.provide_and_register(C.submission(C.for_patient(data, NIR), f"d{i}"))
    return C.public_id(services, pid)


def page(services: Services, rid: str) -> lxml_html.HtmlElement:
    response = create_app(services=services).test_client().get(f"/dossier/{rid}")
    assert response.status_code == 200, response.data[:300]
    return lxml_html.fromstring(response.data)


def result_row(tree: lxml_html.HtmlElement, code: str) -> dict[str, str]:
    rows = tree.xpath(f"//tr[@class='result'][@data-code='{code}']")
    assert len(rows) == 1, f"{len(rows)} lines for {code}"
    cells = rows[0].xpath("./td")
    return {"label": cells[0].text_content().strip(), "value": cells[1].text_content().strip(),
            "flag": cells[2].text_content().strip(), "trend": cells[3].text_content().strip(),
            "trend_title": cells[3].get("title", ""), "reference": cells[4].text_content().strip(),
            "date": cells[5].text_content().strip()}


def _r(value: str, unit: str, when: str, **more) -> dict:
    return {"code": CREAT[0], "display": CREAT[1], "value": value, "unit": unit, "when": when, **more}


# --- latest results -----------------------------------------------------------------------------
def test_no_trend_arrow_between_values_in_different_units(services):
    """DEFECT: the trend compares the two numbers whatever their units. Creatinine 10 mg/L in
    March, then 1.1 mg/dL (= 11 mg/L, a rise) in May: the page draws ↘ (a fall) and its
    tooltip says "précédent : 10 mg/L". Two values in different units are not comparable as
    numbers: no arrow (the history plot already drops the values in another unit)."""
    rid = store(services, [lab_document([_r("10", "mg/L", "20240315080000+0100")], "20240315120000+0100"),
                           lab_document([_r("1.1", "mg/dL", "20240515080000+0200")], "20240515120000+0200")])
    row = result_row(page(services, rid), CREAT[0])
    assert row["value"] == "1,1 mg/dL"
    assert row["trend"] == "", row


def test_latest_value_trend_and_flags_held(services):
    """Held: the newest of two same-day results (different times) is the latest, even when the
    older document carries it; the arrow is against the previous value; a reference with a
    high bound only flags a value above it; decimal comma; date in Paris."""
    rid = store(services, [
        lab_document([_r("9.5", "mg/L", "20240601060000+0200", high="12"),
                      _r("13.25", "mg/L", "20240601210000+0200", high="12")], "20240601220000+0200"),
        lab_document([_r("11", "mg/L", "20240601100000+0200", high="12")], "20240702120000+0200")])
    row = result_row(page(services, rid), CREAT[0])
    assert row["value"] == "13,25 mg/L" and row["date"] == "01/06/2024"
    assert row["trend"] == "↗" and "11 mg/L" in row["trend_title"]
    assert row["flag"] == "Élevé" and row["reference"] == "< 12 mg/L"


def test_a_result_at_2330_utc_on_new_years_eve_is_dated_the_first_of_january_in_paris(services):
    """Held: 31/12 23:30 UTC is 01/01 00:30 in Paris."""
    rid = store(services, [lab_document([_r("9", "mg/L", "20241231233000+0000")], "20250101090000+0100")])
    assert result_row(page(services, rid), CREAT[0])["date"] == "01/01/2025"


def test_a_result_time_given_without_offset_is_not_shifted_a_day(services):
    """DEFECT: a TS without a UTC offset is the sender's local time (HL7 v3 Data Types: no
    zone = local time), and the extractor stores its digits "as given" (clinical/cdaread.ts),
    but the page reads every stored time of day as UTC (formatting.paris) and adds Paris's
    offset: a result taken on 31/12/2024 at 23:30 (French lab, no offset written) is shown
    dated 01/01/2025. The stored value must say one thing (UTC) or the page must not shift it."""
    rid = store(services, [lab_document([_r("9", "mg/L", "20241231233000")], "20250101090000+0100")])
    assert result_row(page(services, rid), CREAT[0])["date"] == "31/12/2024"


@pytest.mark.parametrize(("written", "shown"), [("0.00004", "0,00004"), ("0.00012", "0,00012"),
                                                ("1.200000", "1,2"), ("63.000000", "63")])
def test_a_small_value_is_shown_as_the_lab_wrote_it_not_rounded_to_zero(services, written, shown):
    """DEFECT: `formatting.number` rounds every value to 4 decimals: a result the laboratory
    wrote 0.00004 is shown "0" (and 0.00012 as "0,0001"): the page states a value that was not
    measured. Trailing zeros go ("1.200000" -> "1,2"), significant digits stay."""
    rid = store(services, [lab_document([_r(written, "g/L", "20240315080000+0100")])])
    assert result_row(page(services, rid), CREAT[0])["value"] == f"{shown} g/L"


@pytest.mark.parametrize(("ucum", "shown"), [("10*9/l", "G/L"), ("[iU]/L", "UI/L"), ("/mm3", "/mm³"),
                                             ("umol/L", "µmol/L"), ("10*9/L", "G/L")])
def test_ucum_units_are_shown_as_a_french_report_prints_them(ucum, shown):
    """DEFECT (first three): UCUM's litre is "L" or "l" and its international unit "[IU]" or
    "[iU]" (UCUM §4.3, §45: both spellings are the same unit); cubic "3" is an exponent. The
    table knows only some spellings: "10*9/l" is shown raw instead of "G/L", "[iU]/L" with
    its brackets, "/mm3" instead of "/mm³"."""
    assert fmt.unit(ucum) == shown


# --- identity -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("born", "today", "shown"), [
    (date(1980, 12, 4), date(2026, 12, 4), "46 ans"), (date(1980, 12, 5), date(2026, 12, 4), "45 ans"),
    (date(2000, 2, 29), date(2025, 2, 28), "24 ans"), (date(2000, 2, 29), date(2025, 3, 1), "25 ans"),
    (date(2025, 1, 5), date(2026, 12, 4), "22 mois")])
def test_age_from_the_birth_date_held(born, today, shown):
    assert fmt.age(born, today) == shown


# --- treatments and allergies -------------------------------------------------------------------
def test_a_treatment_a_newer_document_says_stopped_is_not_current(services):
    """DEFECT: a 2022 document lists METFORMINE taken since 01/01/2020 (no end); a 2024
    document records the same product (same code) from 01/01/2021 to 01/03/2024: stopped. The
    newer mention is left out as past, and the older one, deduplicated only against mentions
    of the same start date (query/clinical.dedupe), is shown under "Traitements en cours".
    The newest mention of a product decides whether it is current."""
    rid = store(services, [
        other_document([medication("METFORMINE 1000 mg", "3400930000001", "20200101")], "20220601120000+0200"),
        other_document([medication("METFORMINE 1000 mg", "3400930000001", "20210101", "20240301")],
                       "20240315120000+0100")])
    treatments = page(services, rid).get_element_by_id("treatments").text_content()
    assert "METFORMINE" not in treatments, treatments


def test_the_same_treatment_in_two_documents_is_one_line_and_a_past_end_is_not_current(services):
    """Held: deduplicated by product; an end date in the past leaves the list."""
    rid = store(services, [
        other_document([medication("LEVOTHYROX 75 µg", "3400930000002", "20200101"),
                        medication("AMOXICILLINE 1 g", "3400930000003", "20230101", "20230110")],
                       "20230601120000+0200"),
        other_document([medication("LEVOTHYROX 75 µg", "3400930000002", "20200101")], "20240315120000+0100")])
    items = page(services, rid).xpath("//section[@id='treatments']//li/b/text()")
    assert items == ["LEVOTHYROX 75 µg"], items


def test_a_criticality_the_labels_do_not_know_is_said_with_the_documents_own_french_words(services):
    """DEFECT: the page names a criticality only from the FHIR value set
    (2.16.840.1.113883.4.642.4.130); a CDA coding it in HL7 v3 ObservationValue (CRITH,
    2.16.840.1.113883.5.1063, IHE PCC's criticality) shows "criticité crith", although the
    document says "Élevée" in its displayName (the extractor keeps only the code). Issue 20:
    labels in French "from the documents' own displayNames or French value-set labels"."""
    rid = store(services, [other_document([allergy("Amoxicilline", "CRITH", "2.16.840.1.113883.5.1063", "Élevée")],
                                          "20240315120000+0100")])
    text = " ".join(page(services, rid).get_element_by_id("allergies").text_content().split())
    assert "Amoxicilline" in text
    assert "crith" not in text.lower() and "criticité élevée" in text, text


# --- one screen, for a heavy patient ------------------------------------------------------------
LONG_TITLE = ("Compte rendu <script>alert(1)</script> de consultation de suivi diabétologique " * 7)[:500]
BLOCKS = ("identity", "synthesis", "allergies", "treatments", "results", "timeline")


@pytest.fixture(scope="module")
def heavy_page(tmp_path_factory):
    """A patient of 200 documents, 80 analytes, 40 current treatments, one document titled in
    500 characters with a script in it; the page's HTML rendered once, then measured once in
    headless Chromium at 1920x1080 (file://: the page's CSS is inline, it needs no server)."""
    from tests.browser import headless_chrome

    data = tmp_path_factory.mktemp("heavy")
    with dev_services(data / "data") as services:
        pid = feed_patient(services)
        ingest = IngestService(services, INSECURE_DEV_ACTOR)
        analytes = [{"code": f"{10000 + i}-{i % 10}", "display": f"Analyte numéro {i} [Masse/Volume] Sérum ; Numérique",
                     "value": f"{i + 0.5}", "unit": "mg/L", "when": "20240601080000+0200", "low": "1",
                     "high": "50"} for i in range(80)]
        docs = [lab_document(analytes, "20240601120000+0200"),
                other_document([medication(f"MEDICAMENT {i} 10 mg", f"34009300{i:05d}", "20200101")
                                for i in range(40)], "20240602120000+0200")]
        for i, d in enumerate(docs):
            ingest.provide_and_register(C.submission(C.for_patient(d, NIR), f"d{i}"))
        pdf = C.make_pdf("Consultation")
        for i in range(197):
            ingest.provide_and_register(C.pdf_submission(pid.format(), pdf, f"p{i}", title=f"Consultation {i}"))
        ingest.provide_and_register(C.pdf_submission(pid.format(), pdf, "long", title=LONG_TITLE))
        response = create_app(services=services).test_client().get(f"/dossier/{C.public_id(services, pid)}")
    assert response.status_code == 200
    path = data / "page.html"
    path.write_bytes(response.data)
    driver = headless_chrome("--window-size=1920,1080", "--hide-scrollbars", "--lang=fr-FR")
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1920, "height": 1080, "deviceScaleFactor": 1, "mobile": False})
        driver.get(path.as_uri())
        measures = driver.execute_script("""
            const box = e => { const r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, height: r.height}; };
            const out = {page: [document.documentElement.scrollWidth, document.documentElement.scrollHeight,
                                window.innerWidth, window.innerHeight], blocks: {}};
            for (const id of arguments[0]) { const e = document.getElementById(id); out.blocks[id] = e ? box(e) : null; }
            const long = [...document.querySelectorAll('#timeline tr.doc')].find(r => r.textContent.includes('alert(1)'));
            out.long_row = long ? box(long) : null;
            const normal = document.querySelector('#timeline tr.doc');
            out.normal_row = normal ? box(normal) : null;
            out.scripts = document.querySelectorAll('script').length;
            return out;""", list(BLOCKS))
    finally:
        driver.quit()
    return {"measures": measures, "html": response.data}


def test_a_heavy_patient_still_reads_in_one_screen(heavy_page):
    """Held: 200 documents, 80 analytes, 40 treatments: the page stays 1080 px high, every
    block starts and ends on the first screen; the script in a title is text."""
    m = heavy_page["measures"]
    width, height, inner_w, inner_h = m["page"]
    assert width <= inner_w and height <= inner_h == 1080, m["page"]
    for block, box in m["blocks"].items():
        assert box is not None and box["height"] > 40 and box["bottom"] <= 1080, (block, box)
    assert m["scripts"] == 0
    assert b"<script>alert(1)" not in heavy_page["html"]


def test_a_500_character_title_takes_one_line_of_the_timeline_with_an_ellipsis(heavy_page):
    """DEFECT: the timeline prints a document's whole title: a 500-character title takes
    about ten lines of the timeline (the results table cuts its cells with an ellipsis, the
    timeline does not), pushing the other documents out of the first screen. Expected: one
    line (or two) with an ellipsis, the full title in a tooltip and on the document's page."""
    m = heavy_page["measures"]
    assert m["long_row"] is not None and m["normal_row"] is not None
    assert m["long_row"]["height"] <= 2 * m["normal_row"]["height"], (m["long_row"], m["normal_row"])
