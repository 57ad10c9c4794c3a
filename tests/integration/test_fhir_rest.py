"""FHIR R4 REST on /fhir through a generic FHIR client (fhirclient) and plain HTTP, against a
real `partage serve` (SQLite and PostgreSQL). Every JSON answer of the module, from either
client, is validated with the fhir.resources R4B models (a response hook), errors included.

Covered: OperationOutcome for every error; search parameter types, prefixes and partial
dates; DocumentReference.date (registration, MHD) apart from creation; token system|value,
|value, system| and value; Patient family/given folding, birthdate ranges, value-only
identifier; Prefer: handling strict/lenient and self links; _format (and Binary); meta,
ETag, Last-Modified, If-None-Match, If-Modified-Since, vread; Location of creates; _count,
_sort, _total and keyset paging; the CapabilityStatement against what the routes accept; the
door's limits (a repeated single-valued element, ids that cannot be keys, `_count` not a plain number).
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from fhir.resources.R4B import get_fhir_model_class
from fhirclient import client as fhir_client
from fhirclient.models.bundle import Bundle as ClientBundle
from fhirclient.models.documentreference import DocumentReference as ClientDocumentReference
from fhirclient.models.patient import Patient as ClientPatient
from lxml import etree

from partage.metadata.datatypes import CX, DTM, HD, XCN
from partage.metadata.model import Author, Code
from tests import factories as F
from tests.integration.test_mhd import submit_iti41, text_doc
from tests.support import LiveServer

NIR = f"urn:oid:{F.INS_NIR_TEST}"
LOCAL = "urn:oid:1.2.250.1.999.7"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
URI = "urn:ietf:rfc:3986"
JSON = {"Accept": "application/fhir+json"}
FHIR_NS = {"f": "http://hl7.org/fhir"}
VALIDATED: list[str] = []


def _validate(response: requests.Response, *args, **kwargs) -> None:
    """Every JSON FHIR answer must be a valid R4B resource (errors are OperationOutcomes)."""
    if "json" not in response.headers.get("Content-Type", "") or not response.content:
        return
    body = response.json()
    assert isinstance(body, dict) and "resourceType" in body, response.text[:300]
    get_fhir_model_class(body["resourceType"]).model_validate(body)
    VALIDATED.append(body["resourceType"])


def _session() -> requests.Session:
    session = requests.Session()
    session.hooks["response"].append(_validate)
    return session


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_database_url):
    data = tmp_path_factory.mktemp("fhir-rest") / "data"
    with LiveServer(data, mllp=False, database_url=module_database_url) as live:
        live.fhir = f"{live.base_url}/fhir"
        live.http = _session()
        smart = fhir_client.FHIRClient(settings={"app_id": "partage-tests", "api_base": live.fhir + "/"})
        smart.server.session.hooks["response"].append(_validate)
        live.client = smart.server
        yield live


def get(server, path: str, params=None, **headers) -> requests.Response:
    return server.http.get(f"{server.fhir}/{path}", params=params, headers={**JSON, **headers}, timeout=30)


def ids(bundle: dict) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"}


def outcome(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"], body
    return body


# --- the world ----------------------------------------------------------------------------------
def _create_patient(server, family: str, given: list[str], birth: str, *identifiers: tuple[str, str]) -> str:
    patient = ClientPatient({"resourceType": "Patient", "name": [{"family": family, "given": given}],
                             "birthDate": birth,
                             "identifier": [{"system": s, "value": v} for s, v in identifiers]})
    created = patient.create(server.client)
    assert created and created["resourceType"] == "Patient"
    return created["id"]


@pytest.fixture(scope="module")
def world(server):
    """Three patients with names and birth dates that fold or overlap, and three documents of
    the first one that differ in every attribute searched."""
    tag = uuid.uuid4().hex[:6]
    nir = {k: str(279035121500000 + uuid.uuid4().int % 10**8) for k in "abc"}
    out = {"tag": tag, "nir": nir}
    out["A"] = _create_patient(server, f"Lévêque{tag}", ["Éloïse", "Bérénice"], "1970-05-15",
                               (NIR, nir["a"]), (LOCAL, f"LOCAL-{tag}"))
    out["B"] = _create_patient(server, f"Levesque{tag}", ["Eloi"], "1970", (NIR, nir["b"]))
    out["C"] = _create_patient(server, f"Martin{tag}", ["Ève"], "1985-11-02", (NIR, nir["c"]))
    pid = CX(nir["a"], HD.iso(F.INS_NIR_TEST))
    docs = [
        text_doc(pid, "d1", creation_time=DTM("20240110100000"), service_start_time=DTM("20231201"),
                 service_stop_time=DTM("20231215"), class_code=Code("10", "1.2.250.1.213.1.1.4.1"),
                 reference_ids=[CX.parse_reference_id("ACC1^^^&1.2.3.9&ISO^urn:ihe:iti:xds:2013:accession")],
                 authors=[Author(person=XCN.parse("811111111111^LÉVÊQUE^Émile^^^^^^&1.2.250.1.71.4.2.1&ISO"))]),
        text_doc(pid, "d2", creation_time=DTM("20240601100000"), service_start_time=DTM("20240501"),
                 service_stop_time=DTM("20240502"), class_code=Code("11", "1.2.250.1.213.1.1.4.1"),
                 confidentiality_codes=[Code("R", "2.16.840.1.113883.5.25")],
                 authors=[Author(person=XCN.parse("822222222222^Durand^Zoé^Anaïs^^^^^&1.2.250.1.71.4.2.1&ISO"))]),
        text_doc(pid, "d3", creation_time=DTM("20241201"), service_start_time=DTM("20241130"),
                 service_stop_time=None, class_code=Code("10", "1.2.250.1.213.1.1.4.1")),
    ]
    submit_iti41(server, pid, docs, {"d1": b"premier", "d2": b"second", "d3": b"troisieme"})
    bundle = get(server, "DocumentReference", {"patient.identifier": f"{NIR}|{nir['a']}", "status": "current"}).json()
    by_uid = {e["resource"]["masterIdentifier"]["value"]: e["resource"] for e in bundle["entry"]}
    for d in docs:
        out[d.entry_uuid] = by_uid[f"urn:oid:{d.unique_id}"]
    out["uid"] = {d.entry_uuid: d.unique_id for d in docs}
    out["query"] = {"patient.identifier": f"{NIR}|{nir['a']}", "status": "current"}
    return out


def found(server, world, **params) -> set[str]:
    """Which of d1, d2, d3 a DocumentReference search finds."""
    r = get(server, "DocumentReference", {**world["query"], **params})
    assert r.status_code == 200, r.text
    names = {world[k]["id"]: k for k in ("d1", "d2", "d3")}
    return {names[i] for i in ids(r.json())}


# --- DocumentReference.date is the registration; creation is attachment.creation -----------------
def test_date_is_when_the_entry_was_registered(server, world):
    d1 = world["d1"]
    assert d1["content"][0]["attachment"]["creation"] == "2024-01-10T10:00:00Z"
    registered = datetime.fromisoformat(d1["date"].replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - registered) < timedelta(hours=1)
    assert d1["date"] == d1["meta"]["lastUpdated"]          # never changed since
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    assert found(server, world, date=f"ge{yesterday}") == {"d1", "d2", "d3"}
    assert found(server, world, date="2024-01") == set()     # the creation month: not the date
    assert found(server, world, creation="2024-01") == {"d1"}
    assert found(server, world, date=f"lt{yesterday}") == set()
    assert found(server, world, date=today[:4]) == {"d1", "d2", "d3"}


@pytest.mark.parametrize("value, expected", [
    ("2024", "d1 d2 d3"), ("eq2024-06", "d2"), ("ne2024-06", "d1 d3"), ("gt2024-06", "d3"),
    ("lt2024-06", "d1"), ("ge2024-06-01", "d2 d3"), ("le2024-06-01", "d1 d2"), ("sa2024-06-01", "d3"),
    ("eb2024-06-01", "d1"), ("2024-06-01T10:00:00Z", "d2"), ("2024-06-01T12:00:00+02:00", "d2"),
    ("2024-06-01T10:00:01Z", ""), ("2024-12", "d3"), ("2024-12-01T12:00:00Z", ""),   # d3: a day
    ("ge2024-12-01T12:00:00Z", "d3"), ("2023", ""),
])
def test_creation_prefixes_and_partial_dates(server, world, value, expected):
    assert found(server, world, creation=value) == set(expected.split())


@pytest.mark.parametrize("value, expected", [
    ("2023-12", "d1"), ("ne2023-12", "d2 d3"), ("ge2024-05-02", "d2 d3"), ("gt2024-05-02", "d3"),
    ("le2023-12-01", "d1"), ("sa2024-01", "d2 d3"), ("sa2024-05-01", "d3"), ("eb2024-05-01", "d1"), ("2030", ""),
])
def test_period_prefixes_on_the_service_period(server, world, value, expected):
    assert found(server, world, period=value) == set(expected.split())


# --- tokens --------------------------------------------------------------------------------------
@pytest.mark.parametrize("params, expected", [
    ({"category": f"{TRE_A03}|10"}, "d1 d3"),
    ({"category": "urn:oid:1.2.250.1.213.1.1.4.1|10"}, "d1 d3"),   # the same system, spelt as an OID
    ({"category": "http://example.org/other|10"}, ""),               # another system: not the same code
    ({"category": "|10"}, ""),                                       # no system: the codes all have one
    ({"category": f"{TRE_A03}|"}, "d1 d2 d3"),
    ({"category": "10"}, "d1 d3"),
    ({"category": "10,11"}, "d1 d2 d3"),
    ({"category": ["10", "11"]}, ""),                                # repeated: AND
    ({"category": r"10\,11"}, ""),                                   # an escaped comma is a character
    ({"security-label": f"{CONF}|R"}, "d2"),
    ({"security-label": "|R"}, ""),
    ({"related:identifier": "urn:oid:1.2.3.9|ACC1"}, "d1"),   # related is a reference (MHD 4.2 ITI-67)
    ({"related:identifier": "urn:oid:1.2.3.8|ACC1"}, ""),
    ({"related:identifier": "ACC1"}, "d1"),
    ({"author.family": "leveque"}, "d1"),
    ({"author.family": "LÉVÊ"}, "d1"),
    ({"author.family": "evequ"}, ""),                                # a prefix, not a substring
    ({"author.given": "anais"}, "d2"),                               # a further given name
    ({"author.given": "zoe,emile"}, "d1 d2"),
])
def test_tokens_and_strings(server, world, params, expected):
    assert found(server, world, **params) == set(expected.split())


def test_identifier_honours_the_system(server, world):
    uid = world["uid"]["d1"]
    entry_uuid = world["d1"]["identifier"][0]["value"]
    assert found(server, world, identifier=f"{URI}|urn:oid:{uid}") == {"d1"}
    assert found(server, world, identifier=f"urn:oid:{uid}") == {"d1"}
    assert found(server, world, identifier=f"http://example.org/ids|urn:oid:{uid}") == set()
    assert found(server, world, identifier=f"|urn:oid:{uid}") == set()
    assert found(server, world, identifier=f"{URI}|") == {"d1", "d2", "d3"}
    assert found(server, world, identifier=entry_uuid) == {"d1"}
    assert found(server, world, _id=world["d2"]["id"]) == {"d2"}


# --- Patient -------------------------------------------------------------------------------------
def patients(server, world, **params) -> set[str]:
    r = get(server, "Patient", params)
    assert r.status_code == 200, r.text
    names = {world[k]: k for k in "ABC"}
    return {names[i] for i in ids(r.json()) if i in names}


@pytest.mark.parametrize("template, expected", [
    ({"family": "lévêque{tag}"}, "A"), ({"family": "LEVEQUE{tag}"}, "A"), ({"family": "levesque{tag}"}, "B"),
    ({"family": "Lévêque{tag}", "given": "ber"}, "A"), ({"family": "lévêque{tag}", "given": "zz"}, ""),
    ({"family:exact": "Lévêque{tag}"}, "A"), ({"family:exact": "leveque{tag}"}, ""),
    ({"name": "martin{tag}"}, "C"), ({"name": "eve", "family": "martin{tag}"}, "C"),
    ({"given": "élo", "family": "lev"}, "AB"),
])
def test_patient_names_fold_accents_and_case(server, world, template, expected):
    params = {k: v.format(tag=world["tag"]) for k, v in template.items()}
    assert patients(server, world, **params) == set(expected)


@pytest.mark.parametrize("value, expected", [
    ("1970", "AB"), ("1970-05", "A"), ("1970-05-15", "A"), ("ge1970-05", "ABC"), ("lt1970-05", "B"),
    ("gt1980", "C"), ("le1969", ""), ("eb1971", "AB"), ("sa1970", "C"), ("ne1970", "C"),
])
def test_patient_birthdate_prefixes_and_partial_dates(server, world, value, expected):
    assert patients(server, world, birthdate=value) & set("ABC") == set(expected)


def test_patient_identifier_system_and_value(server, world):
    nir = world["nir"]["a"]
    assert patients(server, world, identifier=nir) == {"A"}                      # value alone
    assert patients(server, world, identifier=f"{NIR}|{nir}") == {"A"}
    assert patients(server, world, identifier=f"urn:oid:1.2.3.4.5|{nir}") == set()
    assert patients(server, world, identifier=f"|{nir}") == set()
    assert patients(server, world, identifier=f"{LOCAL}|") == {"A"}
    assert patients(server, world, _id=world["B"]) == {"B"}
    # fhirclient's own search, as a generic client writes it
    found_by_client = ClientPatient.where(struct={"identifier": nir}).perform_resources_iter(server.client)
    assert [p.id for p in found_by_client] == [world["A"]]


def test_patient_sort_on_birthdate(server, world):
    bundle = get(server, "Patient", {"_sort": "-birthdate", "_count": "100"}).json()
    order = [e["resource"]["id"] for e in bundle["entry"] if e["resource"]["id"] in {world[k] for k in "ABC"}]
    assert order == [world["C"], world["A"], world["B"]]   # 1985, 1970-05-15, 1970 (from its first day)


# --- Prefer: handling ------------------------------------------------------------------------------
@pytest.mark.parametrize("resource, extra", [
    ("DocumentReference", {"nonsense": "1"}), ("DocumentReference", {"_sort": "title"}),
    ("DocumentReference", {"category:not": "10"}), ("DocumentReference", {"_total": "maybe"}),
    ("List", {"author.family": "x"}), ("Patient", {"gender": "male"}), ("Patient", {"_sort": "family"}),
])
def test_strict_handling_refuses_what_lenient_ignores(server, world, resource, extra):
    base = world["query"] if resource != "Patient" else {"family": f"lévêque{world['tag']}"}
    strict = get(server, resource, {**base, **extra}, Prefer="handling=strict")
    issue = outcome(strict, 400)["issue"][0]
    assert issue["code"] == "not-supported" and list(extra)[0].split(":")[0] in issue["diagnostics"]
    lenient = get(server, resource, {**base, **extra}, Prefer="handling=lenient")
    assert lenient.status_code == 200
    bundle = lenient.json()
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    query = parse_qs(urlsplit(self_link).query)
    key = list(extra)[0]
    assert extra[key] not in query.get(key, []), self_link       # not applied, not shown
    assert set(base) <= set(query)
    warnings = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert warnings and warnings[0]["issue"][0]["severity"] == "warning"
    if resource == "Patient":
        assert ids(bundle) == {world["A"]}


def test_required_parameters_and_bad_values_are_operation_outcomes(server, world):
    outcome(get(server, "DocumentReference", {"status": "current"}), 400)
    outcome(get(server, "DocumentReference", {**world["query"], "creation": "yesterday"}), 400)
    outcome(get(server, "DocumentReference", {**world["query"], "_count": "-1"}), 400)
    outcome(get(server, "DocumentReference", {**world["query"], "_cursor": "not-a-cursor"}), 400)
    outcome(get(server, "DocumentReference", {**world["query"], "status": "sideways"}), 400)
    outcome(get(server, "Patient", {"birthdate": "ap1970"}), 400)
    outcome(get(server, "DocumentReference", {**world["query"], "_format": "text/turtle"}), 406)
    outcome(get(server, f"DocumentReference/{uuid.uuid4()}"), 404)
    outcome(get(server, f"Patient/{world['A']}/_history/99"), 404)
    outcome(get(server, "Nonsense"), 404)


# --- _format --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["xml", "application/fhir+xml", "text/xml"])
def test_format_xml(server, world, fmt):
    r = server.http.get(f"{server.fhir}/DocumentReference", params={**world["query"], "_format": fmt}, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/fhir+xml")
    get_fhir_model_class("Bundle").model_validate_xml(r.content)
    read = server.http.get(f"{server.fhir}/Patient/{world['A']}", params={"_format": fmt}, timeout=30)
    root = etree.fromstring(read.content)
    assert root.tag == "{http://hl7.org/fhir}Patient"


def test_format_json_wins_over_accept(server, world):
    r = server.http.get(f"{server.fhir}/DocumentReference", params={**world["query"], "_format": "json"},
                        headers={"Accept": "application/fhir+xml"}, timeout=30)
    assert r.headers["Content-Type"].startswith("application/fhir+json") and r.json()["type"] == "searchset"


def test_binary_bytes_or_binary_resource(server, world):
    url = world["d1"]["content"][0]["attachment"]["url"]
    raw = server.http.get(url, timeout=30)
    assert raw.content == b"premier" and raw.headers["Content-Type"].startswith("text/plain")
    for params, headers in (({"_format": "json"}, {}), ({}, {"Accept": "application/fhir+json"})):
        r = server.http.get(url, params=params, headers=headers, timeout=30)
        binary = r.json()
        assert binary["resourceType"] == "Binary" and base64.b64decode(binary["data"]) == b"premier"
        assert binary["contentType"].startswith("text/plain")
    xml = server.http.get(url, params={"_format": "xml"}, timeout=30)
    assert etree.fromstring(xml.content).tag == "{http://hl7.org/fhir}Binary"
    etag = raw.headers["ETag"]
    assert server.http.get(url, headers={"If-None-Match": etag}, timeout=30).status_code == 304
    assert server.http.get(url, params={"_format": "json"}, headers={"If-None-Match": etag},
                           timeout=30).status_code == 200   # another representation, another tag


# --- versions, conditional reads, creates ------------------------------------------------------------
def test_read_meta_etag_and_conditional_reads(server, world):
    path = f"DocumentReference/{world['d1']['id']}"
    r = get(server, path)
    meta = r.json()["meta"]
    assert r.headers["ETag"] == f'W/"{meta["versionId"]}"' == 'W/"1"'
    modified = r.headers["Last-Modified"]
    assert datetime.fromisoformat(meta["lastUpdated"].replace("Z", "+00:00")) == \
        datetime.strptime(modified, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=UTC)
    assert get(server, path, **{"If-None-Match": 'W/"1"'}).status_code == 304
    assert get(server, path, **{"If-None-Match": '"1"'}).status_code == 304     # weak comparison
    assert get(server, path, **{"If-None-Match": 'W/"0", W/"1"'}).status_code == 304
    assert get(server, path, **{"If-None-Match": 'W/"0"'}).status_code == 200
    assert get(server, path, **{"If-Modified-Since": modified}).status_code == 304
    past = format_datetime(datetime.now(UTC) - timedelta(days=2), usegmt=True)
    assert get(server, path, **{"If-Modified-Since": past}).status_code == 200
    assert get(server, f"{path}/_history/1").json()["id"] == world["d1"]["id"]
    lst = get(server, "List", {**world["query"], "code": "submissionset"}).json()["entry"][0]["resource"]
    read = get(server, f"List/{lst['id']}")
    assert read.headers["ETag"] == 'W/"1"' and read.json()["meta"]["versionId"] == "1"


def test_a_status_change_is_a_new_version(server):
    pid = CX(str(279035121600000 + uuid.uuid4().int % 10**8), HD.iso(F.INS_NIR_TEST))
    _create_patient(server, "Version", ["Vera"], "1990-01-01", (NIR, pid.id))
    doc = text_doc(pid, "v1")
    submit_iti41(server, pid, [doc], {"v1": b"v"})
    bundle = get(server, "DocumentReference", {"patient.identifier": f"{NIR}|{pid.id}", "status": "current"}).json()
    rid = bundle["entry"][0]["resource"]["id"]
    before = get(server, f"DocumentReference/{rid}")
    patch = [{"op": "replace", "path": "/status", "value": "superseded"}]
    stale = server.http.patch(f"{server.fhir}/DocumentReference/{rid}", json=patch, timeout=30,
                              headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"2"'})
    outcome(stale, 412)
    r = server.http.patch(f"{server.fhir}/DocumentReference/{rid}", json=patch, timeout=30,
                          headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    after = get(server, f"DocumentReference/{rid}", **{"If-None-Match": before.headers["ETag"]})
    assert after.status_code == 200 and after.json()["status"] == "superseded"
    assert after.headers["ETag"] == 'W/"2"' and after.json()["meta"]["versionId"] == "2"
    assert after.json()["meta"]["lastUpdated"] >= before.json()["meta"]["lastUpdated"]
    assert after.json()["date"] == before.json()["date"]           # still when it was registered
    outcome(get(server, f"DocumentReference/{rid}/_history/1"), 404)
    assert get(server, f"DocumentReference/{rid}/_history/2").status_code == 200


def test_creates_and_updates_name_their_version(server):
    body = {"resourceType": "Patient", "name": [{"family": "Création", "given": ["Célia"]}],
            "identifier": [{"system": NIR, "value": str(279035121700000 + uuid.uuid4().int % 10**8)}]}
    r = server.http.post(f"{server.fhir}/Patient", json=body, headers=JSON, timeout=30)
    assert r.status_code == 201
    rid = r.json()["id"]
    assert r.headers["Location"] == f"{server.fhir}/Patient/{rid}/_history/1"
    assert r.headers["ETag"] == 'W/"1"' and r.headers["Last-Modified"]
    body["birthDate"] = "1999-09-09"
    body["id"] = rid
    r = server.http.put(f"{server.fhir}/Patient/{rid}", json=body, headers=JSON, timeout=30)
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"
    assert r.headers["Location"] == f"{server.fhir}/Patient/{rid}/_history/2" and r.headers["ETag"] == 'W/"2"'
    assert get(server, f"Patient/{rid}", **{"If-None-Match": 'W/"1"'}).status_code == 200
    assert get(server, f"Patient/{rid}", **{"If-None-Match": 'W/"2"'}).status_code == 304
    assert get(server, "Patient", {"birthdate": "1999-09", "family": "creation"}).json()["total"] == 1


# --- _count, _sort, _total, paging ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def heavy(server):
    """A patient with 45 documents, one a day, in three submissions of three days."""
    pid = CX(str(279035121800000 + uuid.uuid4().int % 10**8), HD.iso(F.INS_NIR_TEST))
    _create_patient(server, "Paging", ["Paul"], "1960-01-01", (NIR, pid.id))
    start = datetime(2023, 1, 1, 8, tzinfo=UTC)
    for part in range(3):
        docs = [text_doc(pid, f"p{part}-{i}", creation_time=DTM((start + timedelta(days=15 * part + i))
                                                                .strftime("%Y%m%d%H%M%S")))
                for i in range(15)]
        submit_iti41(server, pid, docs, {d.entry_uuid: b"p" for d in docs},
                     submission_time=DTM(f"2024{part + 1:02d}01120000"))
    return {"patient.identifier": f"{NIR}|{pid.id}", "status": "current"}


def walk(server, first: dict) -> tuple[list[dict], list[dict]]:
    """Every page from a first search: (resources in order, bundles)."""
    bundles = [get(server, "DocumentReference", first).json()]
    while nxt := [link["url"] for link in bundles[-1]["link"] if link["relation"] == "next"]:
        r = server.http.get(nxt[0], headers=JSON, timeout=30)
        assert r.status_code == 200, r.text
        bundles.append(r.json())
        assert len(bundles) < 50
    return [e["resource"] for b in bundles for e in b.get("entry", [])], bundles


def test_pages_follow_the_sort_without_gaps_or_repeats(server, heavy):
    resources, bundles = walk(server, {**heavy, "_count": "10", "_sort": "creation"})
    assert [len(b.get("entry", [])) for b in bundles] == [10, 10, 10, 10, 5]
    creations = [r["content"][0]["attachment"]["creation"] for r in resources]
    assert creations == sorted(creations) and len(set(r["id"] for r in resources)) == 45
    assert all("total" not in b for b in bundles)          # not asked, not known for free
    for b in bundles[1:]:
        self_query = parse_qs(urlsplit(next(link["url"] for link in b["link"] if link["relation"] == "self")).query)
        assert self_query["_cursor"] and self_query["_sort"] == ["creation"] and self_query["_count"] == ["10"]
    newest, _ = walk(server, {**heavy, "_count": "7", "_sort": "-creation"})
    assert [r["id"] for r in newest] == [r["id"] for r in reversed(resources)]
    default, _ = walk(server, {**heavy, "_count": "20"})   # newest registration first
    dates = [r["date"] for r in default]
    assert dates == sorted(dates, reverse=True) and len(default) == 45


def test_generic_client_follows_the_next_links(server, heavy):
    search = ClientDocumentReference.where(struct={**heavy, "_count": "8"})
    found_ = list(search.perform_resources_iter(server.client))
    assert len(found_) == len({d.id for d in found_}) == 45
    pages = list(ClientDocumentReference.where(struct={**heavy, "_count": "8"}).perform_iter(server.client))
    assert [len(p.entry or []) for p in pages] == [8, 8, 8, 8, 8, 5]
    assert all(isinstance(p, ClientBundle) for p in pages)


@pytest.mark.parametrize("params, total, entries", [
    ({"_total": "accurate", "_count": "10"}, 45, 10), ({"_total": "estimate", "_count": "10"}, 45, 10),
    ({"_total": "none"}, None, 20), ({"_count": "0"}, 45, 0), ({"_count": "100"}, 45, 45),
    ({"_count": "100", "_total": "none"}, None, 45), ({"_count": "5000"}, 45, 45),
    ({"creation": "2023-01", "_count": "100"}, 31, 31), ({"creation": "2023-01"}, None, 20),
])
def test_count_and_total(server, heavy, params, total, entries):
    bundle = get(server, "DocumentReference", {**heavy, **params}).json()
    assert bundle.get("total") == total and len(bundle.get("entry", [])) == entries


def test_a_tampered_or_foreign_cursor_is_refused(server, heavy):
    first = get(server, "DocumentReference", {**heavy, "_count": "10"}).json()
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    cursor = parse_qs(urlsplit(nxt).query)["_cursor"][0]
    outcome(get(server, "DocumentReference", {**heavy, "_cursor": cursor, "_sort": "creation"}), 400)
    outcome(get(server, "DocumentReference", {**heavy, "_cursor": cursor[:-3]}), 400)
    assert get(server, "DocumentReference", {**heavy, "_cursor": cursor}).status_code == 200


def test_lists_are_sorted_and_paged_by_the_database(server, heavy):
    bundle = get(server, "List", {**heavy, "code": "submissionset", "_count": "1", "_sort": "date"}).json()
    dates = []
    while True:
        dates += [e["resource"]["date"] for e in bundle["entry"]]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            break
        bundle = server.http.get(nxt[0], headers=JSON, timeout=30).json()
    assert dates == sorted(dates) and len(dates) == 3
    assert get(server, "List", {**heavy, "date": "ge2024-02", "_total": "accurate"}).json()["total"] == 2


# --- the CapabilityStatement is what the routes answer ---------------------------------------------------
SAMPLE = {"token": "x", "date": "2024", "string": "a", "number": "5", "uri": "urn:x"}


def test_capability_statement_lists_what_strict_search_accepts(server, world):
    r = get(server, "metadata")
    cs = r.json()
    resources = {res["type"]: res for res in cs["rest"][0]["resource"]}
    types = {p["name"]: p["type"] for p in resources["DocumentReference"]["searchParam"]}
    assert types["patient"] == "reference" and types["date"] == "date" and types["creation"] == "date"
    assert types["author.family"] == "string" and types["_content"] == "string"
    assert types["_count"] == "number" and types["_sort"] == "special" and types["category"] == "token"
    patient_types = {p["name"]: p["type"] for p in resources["Patient"]["searchParam"]}
    assert patient_types["birthdate"] == "date" and patient_types["family"] == "string"
    assert patient_types["identifier"] == "token"
    for rtype, base, sortable in (("DocumentReference", world["query"], "date"),
                                  ("List", world["query"], "date"), ("Patient", {}, "birthdate")):
        for param in resources[rtype]["searchParam"]:
            name = param["name"]
            value = {"reference": f"Patient/{world['A']}", "special": sortable}.get(param["type"]) \
                or SAMPLE[param["type"]]
            if name == "_total":
                value = "accurate"
            if name in ("status",):
                value = "current"
            if name == "isArchived":
                value = "false"
            if name == "code" and rtype == "List":
                value = "folder"
            r = get(server, rtype, {**base, name: value}, Prefer="handling=strict")
            assert r.status_code == 200, (rtype, name, r.text[:300])


# --- the doors' limits: repeated elements, ids and numbers that name nothing --------------------------
def test_a_repeated_single_valued_element_is_a_400_outcome(server):
    """The models would keep the last of two values silently: the door refuses the resource."""
    created_before = get(server, "Patient", {"family": "Doublon", "_total": "accurate"}).json()["total"]
    body = b'{"resourceType": "Patient", "name": [{"family": "Doublon"}], "birthDate": "1970-01-01", ' \
           b'"birthDate": "1980-01-01"}'
    r = server.http.post(f"{server.fhir}/Patient", data=body, timeout=30,
                         headers={**JSON, "Content-Type": "application/fhir+json"})
    issue = outcome(r, 400)["issue"][0]
    assert issue["code"] == "structure" and issue["expression"] == ["Patient.birthDate"]
    xml = ('<Patient xmlns="http://hl7.org/fhir"><name><family value="Doublon"/></name>'
           '<gender value="male"/><gender value="female"/></Patient>')
    r = server.http.post(f"{server.fhir}/Patient", data=xml.encode(), timeout=30,
                         headers={**JSON, "Content-Type": "application/fhir+xml"})
    assert outcome(r, 400)["issue"][0]["expression"] == ["Patient.gender"]
    # the generic client sees the refusal as an HTTP error carrying the outcome
    with pytest.raises(requests.HTTPError) as refused:
        server.client.post_json("Patient", {"resourceType": "Patient", "gender": ["male", "female"]})
    assert refused.value.response.status_code == 400
    assert get(server, "Patient", {"family": "Doublon", "_total": "accurate"}).json()["total"] == created_before


@pytest.mark.parametrize("path", [
    "DocumentReference/99999999999999999999999", "List/99999999999999999999999",
    "Patient/99999999999999999999999", "Patient/pk-99999999999999999999999",
    "Observation/99999999999999999999999", "Observation/\u00b2", "AuditEvent/99999999999999999999999",
    "DocumentReference/x/_history/99999999999999999999999",
])
def test_ids_that_cannot_be_keys_are_404_outcomes(server, path):
    outcome(get(server, path), 404)


@pytest.mark.parametrize("count", ["\uff11\uff12", "9" * 30, "1_0", "1e3", "ten"])
def test_count_must_be_a_plain_number(server, world, count):
    outcome(get(server, "DocumentReference", {**world["query"], "_count": count}), 400)
    outcome(get(server, "Patient", {"family": "x", "_count": count}), 400)


def test_prefer_handling_is_read_among_other_preferences(server, world):
    strict = get(server, "DocumentReference", {**world["query"], "nonsense": "1"},
                 Prefer='return=representation, handling="strict"')
    outcome(strict, 400)
    assert get(server, "DocumentReference", {**world["query"], "nonsense": "1"},
               Prefer="return=minimal").status_code == 200     # lenient by default


def test_every_answer_was_validated():
    assert len(VALIDATED) > 200 and {"Bundle", "OperationOutcome", "Patient", "DocumentReference",
                                     "List", "Binary", "CapabilityStatement"} <= set(VALIDATED)


@pytest.mark.parametrize("position", [["-date", 5, 1], ["-date", "20240101000000", "x"],
                                      ["-date", "2024\u0000", 1], ["-date", "2024", 2 ** 80],
                                      ["-date", "2024", -1], ["-date", None, 1], ["-date", ["a"], 1]])
def test_crafted_cursors_are_400_on_every_database(server, heavy, position):
    cursor = base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")
    outcome(get(server, "DocumentReference", {**heavy, "_cursor": cursor}), 400)


@pytest.mark.parametrize("params", [{"family": "a\u0000b"}, {"identifier": "\u0000"}, {"birthdate": "1970\u0000"},
                                    {"given\u0000": "x"}, {"family": "x" * 3000}, {"identifier": "|" * 300}])
def test_hostile_patient_parameters_are_answered_on_every_database(server, params):
    r = get(server, "Patient", params)
    assert r.status_code in (200, 400), r.text[:300]
    if r.status_code == 400:
        outcome(r, 400)


@pytest.mark.parametrize("resource, query", [
    ("Patient", "&".join(f"family=a{i}" for i in range(2000))),
    ("Patient", "birthdate=" + ",".join(["ne1970"] * 2000)),
    ("DocumentReference", "&".join(f"category=c{i}" for i in range(2000))),
    ("DocumentReference", "author.family=" + ",".join(f"x{i}" for i in range(2000))),
])
def test_thousands_of_criteria_are_400_not_an_outage_on_every_database(server, heavy, resource, query):
    """Bounded before the SQL is built: SQLite refuses such a statement, which read as a 503."""
    if resource == "DocumentReference":
        query += "&" + "&".join(f"{k}={v}" for k, v in heavy.items())
    r = server.http.post(f"{server.fhir}/{resource}/_search", data=query, timeout=60,
                         headers={**JSON, "Content-Type": "application/x-www-form-urlencoded"})
    assert outcome(r, 400)["issue"][0]["code"] == "too-costly"


def test_the_most_a_search_may_combine_is_answered(server, heavy):
    query = "&".join("category=" + ",".join(f"s{j}|c{i}" for i in range(100)) for j in range(60))
    query += "&" + "&".join(f"{k}={v}" for k, v in heavy.items())
    r = server.http.post(f"{server.fhir}/DocumentReference/_search", data=query, timeout=60,
                         headers={**JSON, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["total"] == 0
