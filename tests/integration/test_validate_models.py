"""/validate with the ANS model schematrons configured, against a running `partage serve`:
the report names the model schematron chosen and each layer's status (JSON, and the HTML page
in headless Chromium driven by Selenium); a server whose profile lacks parts says so at
start-up and in every report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests

from tests.browser import headless_chrome, present
from tests.conftest import corpus_path
from tests.support import LiveServer

pytestmark = pytest.mark.corpus

MUTATION = "section-templateId-removed__VAC_2023.01.xml"     # a model-invalid/ case: only the volet sees it


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("validate-models")
    live = LiveServer(base / "data", mllp=False, extra_args=[
        "--schema-dir", str(corpus_path("xsd", "cda")), "--valuesets", str(corpus_path("valuesets"))])
    saved = dict(os.environ)
    os.environ["PARTAGE_CDA_MODEL_SCHEMATRONS"] = str(corpus_path("cda", "schematrons"))   # the setting's variable
    os.environ["XDG_CACHE_HOME"] = str(base / "cache")
    try:
        live.start()
    finally:   # only the server process sees them
        os.environ.clear()
        os.environ.update(saved)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory):
    """No XSD, no model schematrons, the shipped value sets only: an incomplete profile."""
    with LiveServer(tmp_path_factory.mktemp("validate-bare") / "data", mllp=False) as live:
        yield live


def _post(server, name: str, data: bytes, **params: str) -> requests.Response:
    return requests.post(f"{server.base_url}/validate", data=data, params={"filename": name, **params}, timeout=60)


def test_a_model_invalid_document_is_refused_by_its_volet(server):
    case = json.loads(corpus_path("cda", "model-invalid", "expected.json").read_text("utf-8"))[MUTATION]
    [report] = _post(server, MUTATION, corpus_path("cda", "model-invalid", MUTATION).read_bytes()).json()
    assert report["valid"] is False and report["verdict"] == "non conforme"
    assert report["model_schematron"] == case["model_schematron"] == "CI-SIS_VAC_2023.01.sch"
    assert report["model_selection"] == "templateId"
    layers = report["layers"]
    assert [name for name in layers] == ["parse", "schema", "rules", "model", "terminology", "metadata"]
    assert layers["model"]["status"] == "failed" and layers["schema"]["status"] == "passed"
    assert layers["rules"]["status"] == "passed" and layers["terminology"]["status"] == "passed"
    assert layers["metadata"]["status"] == "not applicable"
    assert all(p["status"] == "passed" for p in layers["terminology"]["parts"])
    wanted = {a["location"] for a in case["ans"]["failed_asserts"]}
    named = {f["location"].replace("hl7:", "").replace("[1]", "") for f in report["findings"]
             if f["layer"] == "model" and f["severity"] == "error"}
    assert named & wanted


def test_the_valid_example_is_conforme_with_every_layer_run(server):
    [report] = _post(server, "VAC_2023.01.xml", corpus_path("cda", "valid", "VAC_2023.01.xml").read_bytes()).json()
    assert report["verdict"] == "conforme" and report["profile_missing"] == []
    assert report["layers"]["model"]["status"] == "passed"


def test_the_ans_profile_runs_the_ans_structuration_minimale_and_the_model(server):
    [report] = _post(server, "eDISP-MED_2024.01.xml", corpus_path("cda", "valid", "eDISP-MED_2024.01.xml").read_bytes(),
                     profile="ans").json()
    assert report["profile"] == "ans" and report["valid"] is False   # as the ANS pipeline decides
    assert report["layers"]["schematron"]["status"] == "failed" and report["layers"]["model"]["status"] == "passed"
    assert report["model_schematron"] == "CI-SIS_eDISP-MED_2024.01.sch"


def test_an_incomplete_profile_says_so_at_start_and_in_every_report(bare_server):
    log = bare_server.log()
    assert "CDA profile cisis incomplete" in log and "--cda-schematrons" in log
    example = Path(__file__).resolve().parents[2] / "examples" / "cda-lettre-de-liaison.xml"
    [report] = _post(bare_server, "lettre.xml", example.read_bytes()).json()
    assert report["valid"] is True and report["verdict"] == "incomplet"
    assert any("--cda-schematrons" in m for m in report["profile_missing"])
    assert report["layers"]["model"]["status"] == "not run"
    assert report["layers"]["schema"]["status"] == "not run"
    assert report["layers"]["terminology"]["status"] == "partial"
    page = _post(bare_server, "lettre.xml", example.read_bytes(), format="html").text
    assert "Profil incomplet" in page and "conforme</span>" not in page
    form = requests.get(f"{bare_server.base_url}/validate", timeout=30).text
    assert "incomplet sur ce serveur" in form


def test_the_web_report_shows_the_model_schematron_and_each_layer(server, tmp_path):
    upload = tmp_path / MUTATION
    upload.write_bytes(corpus_path("cda", "model-invalid", MUTATION).read_bytes())
    driver = headless_chrome()
    from selenium.webdriver.common.by import By

    try:
        driver.get(f"{server.base_url}/validate")
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr"
        driver.find_element(By.ID, "file").send_keys(str(upload))
        assert driver.find_element(By.CSS_SELECTOR, "#profile option:checked").get_attribute("value") == "cisis"
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        report = present(driver, By.CSS_SELECTOR, "section.report")
        assert report.get_attribute("data-verdict") == "non conforme"
        model = driver.find_element(By.CSS_SELECTOR, "p.model")
        assert model.get_attribute("data-model-schematron") == "CI-SIS_VAC_2023.01.sch"
        assert "CI-SIS_VAC_2023.01.sch" in model.text and "templateId" in model.text
        statuses = {row.get_attribute("data-layer"): (row.get_attribute("data-status"), row.text)
                    for row in driver.find_elements(By.CSS_SELECTOR, "tr.layer")}
        assert {k: v[0] for k, v in statuses.items()} == {
            "parse": "passed", "schema": "passed", "rules": "passed", "model": "failed",
            "terminology": "passed", "metadata": "not applicable"}
        assert "schematron du modèle (volet)" in statuses["model"][1] and "exécutée, erreurs" in statuses["model"][1]
        assert "sans objet" in statuses["metadata"][1]
        findings = driver.find_elements(By.CSS_SELECTOR, "tr.finding[data-layer=model]")
        assert findings and "erreur" in findings[0].text
        driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
