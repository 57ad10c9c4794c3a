"""Clinical reading over HTTP against a real server: corpus documents filed by ITI-41, their
facts read back as FHIR resources (valid R4B), the IPS-like $summary, keyword search."""

from __future__ import annotations

import pytest
import requests
from fhir.resources.R4B import get_fhir_model_class
from lxml import html

from partage.config import Settings
from partage.metadata.datatypes import DTM
from partage.services import Services
from tests import clinical_support as C
from tests.conftest import corpus_path
from tests.support import LiveServer
from tests.xdsclient import XdsClient

pytestmark = pytest.mark.corpus

NIR = "279035121518989"
PID = C.patient_cx(NIR)
INS = f"urn:oid:1.2.250.1.213.1.4.10|{NIR}"
FILED = ["IPS-FR_2024.01_DLU.xml", "BIO-CR-BIO_2024.01_TSH_1.xml", "BIO-CR-BIO_2024.01_Glycemie_mole.xml",
         "VAC_2023.01.xml", "BIO-CR-BIO_2024.01_TSH_2.xml"]


def _valid(resource: dict) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("clinical") / "data"
    with LiveServer(data, mllp=False) as live:
        services = Services.open(Settings(data_dir=data), migrate=False)
        with services.registry.write() as conn:
            services.registry.upsert_patient(conn, [PID])
        rid = C.public_id(services, PID)
        live.patient, live.dossier = f"Patient/{rid}", f"/dossier/{rid}"
        services.close()
        client = XdsClient(live.base_url)
        live.filed = {}
        for i, name in enumerate(FILED):
            cda = C.for_patient(corpus_path("cda", "valid", name).read_bytes(), NIR)
            request = C.submission(cda, f"doc{i}")
            reply = client.provide_and_register(request, {f"doc{i}": cda})
            assert reply.status == "Success", (name, reply.error_codes, live.log())
            live.filed[name] = request.documents[0].unique_id
        pdf = C.make_pdf("Consultation de nephrologie: creatinine stable")
        request = C.pdf_submission(PID, pdf, "docpdf", creation_time=DTM("20240601120000"))
        assert client.provide_and_register(request, {"docpdf": pdf}).status == "Success"
        services = Services.open(Settings(data_dir=data), migrate=False)
        C.wait_for_text_index(services)   # the PDF's text is indexed by the server's background thread
        services.close()
        yield live


def _get(server, path: str, **params) -> dict:
    response = requests.get(f"{server.base_url}/fhir/{path}", params=params,
                            headers={"Accept": "application/fhir+json"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_latest_result_is_one_request(server):
    bundle = _get(server, "Observation", patient=server.patient, code="http://loinc.org|3016-3", _sort="-date", _count="1")
    assert bundle["total"] == 1
    obs = bundle["entry"][0]["resource"]
    _valid(obs)
    assert obs["valueQuantity"]["value"] == pytest.approx(1.95)
    assert obs["valueQuantity"]["unit"] == "m[IU]/L"
    assert obs["interpretation"][0]["coding"][0]["code"] == "N"
    assert obs["referenceRange"][0]["low"]["value"] == pytest.approx(0.27)
    assert obs["effectiveDateTime"] == "2014-04-02T12:55:21Z"
    source = obs["derivedFrom"][0]["reference"]
    assert source == obs["meta"]["source"] and "/DocumentReference/" in source
    doc = requests.get(source, headers={"Accept": "application/fhir+json"}, timeout=30).json()
    assert doc["masterIdentifier"]["value"].endswith(server.filed["BIO-CR-BIO_2024.01_TSH_1.xml"])
    again = _get(server, f"Observation/{obs['id']}")
    assert again["id"] == obs["id"]


def test_observation_search_by_date_category_and_paging(server):
    everything = _get(server, "Observation", **{"patient.identifier": INS})
    assert everything["total"] >= 5
    dates = [e["resource"].get("effectiveDateTime", "") for e in everything["entry"]]
    assert dates == sorted(dates, reverse=True)
    recent = _get(server, "Observation", patient=server.patient, date="ge2015-01-01")
    assert all(e["resource"]["effectiveDateTime"] >= "2015" for e in recent["entry"])
    assert not any(e["resource"]["code"]["coding"][0]["code"] == "3016-3" for e in recent["entry"])
    labs = _get(server, "Observation", patient=server.patient, category="laboratory")
    assert {e["resource"]["category"][0]["coding"][0]["code"] for e in labs["entry"]} == {"laboratory"}
    page = _get(server, "Observation", patient=server.patient, _count="2", _sort="date")
    assert len(page["entry"]) == 2 and any(link["relation"] == "next" for link in page["link"])


@pytest.mark.parametrize("resource_type, expected", [
    ("AllergyIntolerance", "PARACETAMOL"),
    ("Condition", "Thyroïdite auto-immune"),
    ("MedicationStatement", "LEVOTHYROX 75 microgrammes"),
    ("Immunization", "VACCIN BCG SSI, poudre et solvant pour suspension injectable"),
])
def test_fact_views_by_patient(server, resource_type, expected):
    bundle = _get(server, resource_type, patient=server.patient)
    assert bundle["total"] >= 1
    for entry in bundle["entry"]:
        _valid(entry["resource"])
        assert "/DocumentReference/" in entry["resource"]["meta"]["source"]
    texts = [(e["resource"].get("code") or e["resource"].get("vaccineCode")
              or e["resource"].get("medicationCodeableConcept"))["text"] for e in bundle["entry"]]
    assert expected in texts


def test_current_treatments_and_active_problems_are_one_request_each(server):
    current = _get(server, "MedicationStatement", patient=server.patient, status="active")
    assert current["total"] >= 1 and {e["resource"]["status"] for e in current["entry"]} == {"active"}
    everything = _get(server, "MedicationStatement", patient=server.patient)
    assert everything["total"] > current["total"]
    resolved = _get(server, "Condition", patient=server.patient, **{"clinical-status": "resolved"})
    assert {e["resource"]["code"]["coding"][0]["code"] for e in resolved["entry"]} >= {"N10", "G45.9"}


def test_capability_statement_lists_the_clinical_views(server):
    cs = _get(server, "metadata")
    _valid(cs)
    resources = {r["type"]: r for r in cs["rest"][0]["resource"]}
    for rtype in ("Observation", "AllergyIntolerance", "Condition", "MedicationStatement", "Immunization"):
        assert {"patient", "code", "date"} <= {p["name"] for p in resources[rtype]["searchParam"]}


def test_unknown_fact_and_missing_patient(server):
    response = requests.get(f"{server.base_url}/fhir/Observation/999999", timeout=30)
    assert response.status_code == 404
    assert requests.get(f"{server.base_url}/fhir/Condition", timeout=30).status_code == 400


def test_patient_summary_is_an_ips_like_document_bundle(server):
    bundle = _get(server, f"{server.patient}/$summary")
    _valid(bundle)
    assert bundle["type"] == "document"
    composition = bundle["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition"
    sections = {s["title"]: s for s in composition["section"]}
    assert list(sections)[0] == "Synthèse"
    urls = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    [synthesis] = sections["Synthèse"]["entry"]
    assert urls[synthesis["reference"]]["resourceType"] == "DocumentReference"
    allergies = [urls[e["reference"]] for e in sections["Allergies et intolérances"]["entry"]]
    assert [a["code"]["text"] for a in allergies] == ["PARACETAMOL"]
    results = [urls[e["reference"]] for e in sections["Résultats récents"]["entry"]]
    assert {"3016-3", "40193-5"} <= {r["code"]["coding"][0]["code"] for r in results}
    treatments = [urls[e["reference"]] for e in sections["Traitements en cours"]["entry"]]
    assert treatments and all(t["status"] in ("active", "intended") for t in treatments)
    assert sections["Vaccinations"]["entry"]
    for entry in bundle["entry"][1:]:
        resource = entry["resource"]
        if resource["resourceType"] not in ("DocumentReference", "Patient"):   # the facts say their source
            assert "/DocumentReference/" in resource["meta"]["source"]


def test_keyword_search_over_http(server):
    bundle = _get(server, "DocumentReference", patient=server.patient, _content="créatinine")
    assert bundle["total"] == 1   # the PDF says "creatinine": the embedded default folds accents
    bundle = _get(server, "DocumentReference", patient=server.patient, _content="creatinine")
    assert bundle["total"] == 1
    entry = bundle["entry"][0]
    _valid(entry["resource"])
    assert entry["resource"]["content"][0]["attachment"]["contentType"] == "application/pdf"
    [excerpt] = entry["search"]["extension"]
    assert "<mark>creatinine</mark>" in excerpt["valueString"]
    vaccines = _get(server, "DocumentReference", patient=server.patient, _content="tétanique")
    assert vaccines["total"] == 2
    assert vaccines["entry"][0]["search"]["score"] == 1.0
    dated = _get(server, "DocumentReference", patient=server.patient, _content="creatinine", date="lt2024-01-01")
    assert dated["total"] == 0


# --- the professional's page ------------------------------------------------------------------
def _html(server, path: str, **params):
    response = requests.get(f"{server.base_url}{path}", params=params, timeout=30)
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    return html.fromstring(response.text)


def _text(page, element_id: str) -> str:
    return " ".join(page.get_element_by_id(element_id).text_content().split())


def test_the_page_shows_the_record_at_a_glance(server):
    page = _html(server, server.dossier)
    assert "PARACETAMOL" in _text(page, "allergies")
    assert "LEVOTHYROX" in _text(page, "treatments")
    assert "Thyroïdite auto-immune" in _text(page, "synthesis")
    results = _text(page, "results")
    assert "Thyréostimuline" in results and "Glucose" in results
    tsh = page.xpath("//tr[@class='result'][@data-code='3016-3']")[0]
    cells = [" ".join(td.text_content().split()) for td in tsh.xpath("td")]
    assert cells[1] == "1,95 mUI/L" and cells[4] == "0,27–4,2 mUI/L", cells   # as a clinician writes them
    assert not page.xpath("//*[contains(@id, 'results')]//td[contains(., '.000')]")
    history = requests.get(server.base_url + tsh.xpath(".//a/@href")[0], timeout=30)
    assert history.status_code == 200
    plot = html.fromstring(history.text)
    assert plot.xpath("//*[local-name()='svg']//*[local-name()='circle'][@class='point']"), \
        "TSH has two values: its history is drawn"
    rows = page.xpath("//section[@id='timeline']//tr[@class='doc']")
    assert len(rows) == len(FILED) + 1
    assert not page.xpath("//script")


def test_the_page_filters_documents_and_searches(server):
    page = _html(server, server.dossier, **{"from": "2024-05-01"})
    titles = [" ".join(r.text_content().split()) for r in page.xpath("//tr[@class='doc']")]
    assert len(titles) == 1 and "Compte rendu PDF" in titles[0]
    page = _html(server, server.dossier, author="AUTEUR")
    assert len(page.xpath("//tr[@class='doc']")) == len(FILED)    # the CDA ones name their author so
    page = _html(server, server.dossier, type="11502-2")     # lab reports
    assert len(page.xpath("//tr[@class='doc']")) == 3
    page = _html(server, server.dossier, **{"class": "31"})
    assert page.xpath("//tr[@class='doc']") == []
    page = _html(server, server.dossier, q="tétanique")
    assert len(page.xpath("//section[@id='search-results']//li[@class='hit']")) == 2
    assert page.xpath("//section[@id='search-results']//mark")


def test_documents_open_readable(server):
    page = _html(server, server.dossier)
    links = {a.text_content().strip(): a.get("href") for a in page.xpath("//tr[@class='doc']//a")}
    base = server.base_url
    assert all(href.startswith(server.dossier + "/documents/") for href in links.values())
    cda = _html(server, links["SYNTHESE MEDICALE"])
    assert "Thyroïdite auto-immune" in cda.text_content()
    assert cda.xpath("//div[@class='cda']//table")
    assert not cda.xpath("//script | //*[@onload] | //img")
    pdf_page = _html(server, links["Compte rendu PDF"])
    [frame] = pdf_page.xpath("//iframe")
    assert frame.get("src") == links["Compte rendu PDF"] + "/content"
    content = requests.get(base + frame.get("src"), timeout=30)
    assert content.status_code == 200 and content.headers["Content-Type"] == "application/pdf"
    assert content.content.startswith(b"%PDF")
    raw_cda = requests.get(base + links["SYNTHESE MEDICALE"] + "/content", timeout=30)
    assert raw_cda.status_code == 200 and raw_cda.content.startswith(b"<?xml")
    assert raw_cda.headers["Content-Disposition"] == "attachment"             # never rendered as a page
    assert raw_cda.headers["Content-Security-Policy"] == "sandbox"
    assert requests.get(f"{server.base_url}/dossier/unknown-patient", timeout=30).status_code == 404
    unconfigured = requests.get(f"{server.base_url}/connexion", timeout=30)   # no OpenID provider configured
    assert unconfigured.status_code == 404 and "Connexion indisponible" in unconfigured.text   # not an outage
