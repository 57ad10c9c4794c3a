"""The professional's page in a real browser (headless Chromium driven by Selenium), as a GP
uses it: sign in through the OpenID provider (`partage dev-idp`), open the sample patient of
31 documents, see the five blocks on one 1920x1080 screen without scrolling (checked by the
elements' geometry; the screenshots go to a temporary directory, or where `PARTAGE_SCREENSHOTS`
says: `PARTAGE_SCREENSHOTS=docs/img` remakes the docs' images), read the latest creatinine,
open its history as a plot, search "thyroïde" and open the thyroid report, filter and open
documents, sign out. The server runs WITHOUT --insecure-dev."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

from benchmarks.bench_clinical import build
from partage.config import Settings
from partage.services import Services
from tests import clinical_support as C
from tests.browser import headless_chrome, present
from tests.conftest import corpus_path
from tests.page_support import DevIdp
from tests.support import LiveServer

pytestmark = [pytest.mark.corpus, pytest.mark.slow]

WIDTH, HEIGHT = 1920, 1080
BLOCKS = ["identity", "synthesis", "allergies", "treatments", "results", "timeline"]
CREATININE = "2160-0"


def _folded(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).lower()


@pytest.fixture(scope="module")
def server(tmp_path_factory, authority):
    corpus = corpus_path("cda", "valid").parent.parent
    data = tmp_path_factory.mktemp("page-browser") / "data"
    services = Services.open(Settings(data_dir=data))
    pid = build(services, corpus)           # the sample patient: 31 documents through the real ingest flow
    rid = C.public_id(services, pid)
    services.close()
    with DevIdp(data.parent) as idp, pytest.MonkeyPatch.context() as env:
        for key, value in idp.server_args().items():
            env.setenv(key, value)
        with LiveServer(data, insecure_dev=False, mllp=False, extra_args=["--trust", authority.ca_file]) as live:
            live.dossier = f"{live.base_url}/dossier/{rid}"
            yield live


@pytest.fixture(scope="module")
def driver():
    browser = headless_chrome(f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars", "--lang=fr-FR")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
    try:
        yield browser
    finally:
        browser.quit()


def _by():
    from selenium.webdriver.common.by import By

    return By


def _rect(driver, element) -> dict:
    return driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                 "return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,"
                                 " width: r.width, height: r.height};", element)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where the screenshots go: a test run leaves the checkout as it found it."""
    chosen = os.environ.get("PARTAGE_SCREENSHOTS")
    return Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")


def test_a_gp_reads_the_record_in_one_screen(server, driver, screenshots):
    By = _by()
    driver.get(server.dossier)
    # no session: the provider's page; the GP picks herself (Pro Santé Connect would check her e-CPS)
    assert "/authorize" in driver.current_url
    driver.find_element(By.CSS_SELECTOR, "button[value='gp']").click()
    present(driver, By.ID, "patient-name")
    assert driver.current_url == server.dossier, driver.current_url
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr"
    assert driver.find_element(By.ID, "patient-name").text == "DURAND Élise"
    strip = driver.find_element(By.ID, "identity").text
    for expected in ("Féminin", "ans", "née le 15/03/1979", "INS-NIR", "2 79 03 51 215 100 31",
                     "MÉDECIN TRAITANT", "Dr Claire MARTIN"):
        assert expected in strip, (expected, strip)
    assert "^^^" not in strip and "1.2.250" not in strip          # never a raw HL7 identifier

    # the five blocks (and the identity strip) on the first screen, no page scrolling
    for block in BLOCKS:
        r = _rect(driver, driver.find_element(By.ID, block))
        assert r["width"] > 200 and r["height"] > 40, (block, r)
        assert 0 <= r["top"] and r["bottom"] <= HEIGHT and 0 <= r["left"] and r["right"] <= WIDTH, (block, r)
    size = driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight,"
                                 " window.innerWidth, window.innerHeight];")
    assert size[0] <= size[2] == WIDTH and size[1] <= size[3] == HEIGHT, size
    screenshots.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(screenshots / "patient-page.png"))
    paint = driver.execute_script("const p = performance.getEntriesByName('first-contentful-paint')[0];"
                                  "return p ? p.startTime : null;")
    print(f"first contentful paint: {paint} ms")   # measured in benchmarks/bench_page.py, not asserted here

    # the latest creatinine, readable without a click: its line is on screen inside the results block
    results = driver.find_element(By.ID, "results")
    line = results.find_element(By.CSS_SELECTOR, f"tr.result[data-code='{CREATININE}']")
    box, row = _rect(driver, results), _rect(driver, line)
    assert box["top"] <= row["top"] and row["bottom"] <= box["bottom"] <= HEIGHT, (box, row)
    cells = [c.text for c in line.find_elements(By.TAG_NAME, "td")]
    assert cells[0] == "Créatinine" and cells[1] == "12,2 mg/L" and cells[3] == "↗", cells
    assert cells[4] == "7–12 mg/L" and cells[5] == "15/08/2024", cells
    # allergies, treatments (deduplicated, active, dose and since when), the synthesis
    assert "PARACETAMOL" in driver.find_element(By.ID, "allergies").text
    treatments = driver.find_element(By.ID, "treatments").text
    assert treatments.count("LEVOTHYROX") == 1 and "1 comprimé" in treatments and "depuis le" in treatments
    assert "Autre" not in treatments
    assert "Thyroïdite auto-immune" in driver.find_element(By.ID, "synthesis").text

    # its history is one click away, drawn as a plot with dates and the reference range
    line.find_element(By.CSS_SELECTOR, "td.analyte a").click()
    assert present(driver, By.ID, "history-title").text == "Créatinine"
    plot = driver.find_element(By.CSS_SELECTOR, "svg.history")
    assert len(plot.find_elements(By.CSS_SELECTOR, "circle.point")) == 8
    dates = [t.text for t in plot.find_elements(By.CSS_SELECTOR, "text.date")]
    assert dates[0] == "15/01/2024" and dates[-1] == "15/08/2024", dates
    assert plot.find_elements(By.CSS_SELECTOR, "rect.reference")
    assert "valeurs de référence 7–12 mg/L" in plot.text
    driver.save_screenshot(str(screenshots / "creatinine-history.png"))
    driver.back()

    # keyword search in French: "thyroïde" finds the thyroid report ("THYROIDIEN" in its text)
    box = present(driver, By.CSS_SELECTOR, "#search-form input[name=q]")
    box.send_keys("thyroïde")
    box.submit()
    present(driver, By.ID, "search-results")
    hits = driver.find_elements(By.CSS_SELECTOR, "#search-results li.hit")
    assert hits, driver.find_element(By.ID, "search-results").text
    marks = [m.text for m in hits[0].find_elements(By.TAG_NAME, "mark")]
    assert marks and all(_folded(m).startswith("thyroid") for m in marks), marks
    for block in BLOCKS:   # the search shares the screen with the rest
        assert _rect(driver, driver.find_element(By.ID, block))["bottom"] <= HEIGHT, block
    hits[0].find_element(By.TAG_NAME, "a").click()          # the document, in one click
    text = present(driver, By.ID, "document").text
    assert "/documents/" in driver.current_url, driver.current_url
    assert "thyroidien" in _folded(text) and "Thyréostimuline" in text
    driver.back()
    driver.back()

    # the timeline: filter by type, open a document in one click
    By = _by()
    from selenium.webdriver.support.ui import Select

    Select(present(driver, By.CSS_SELECTOR, "#timeline select[name=type]")).select_by_visible_text(
        "Lettre de sortie")
    driver.find_element(By.CSS_SELECTOR, "#timeline form.filters button").click()
    present(driver, By.XPATH, "//section[@id='timeline']//a[contains(., 'tout afficher')]")
    rows = driver.find_elements(By.CSS_SELECTOR, "#timeline tr.doc")
    assert len(rows) == 3 and all("Consultation de suivi" in r.text for r in rows)
    driver.get(server.dossier)
    present(driver, By.XPATH, "//section[@id='timeline']//a[normalize-space()='SYNTHESE MEDICALE']").click()
    assert "Thyroïdite auto-immune" in present(driver, By.ID, "document").text

    # sign out: the session is over
    driver.get(server.dossier)
    present(driver, By.ID, "logout").click()
    assert "déconnecté" in present(driver, By.ID, "message").text
    driver.get(server.dossier)
    present(driver, By.CSS_SELECTOR, "button[value='gp']")
    assert "/authorize" in driver.current_url
