"""FHIR search pages are cut after the one gate: against a real `partage serve` with
authentication on, a record where masked documents sit between visible ones in every sort
order. Each actor's pages are full, hold only what the actor may see, chain without gaps,
and their totals count only that; the audit record names what a page returned, nothing
the server judged on the way."""

from __future__ import annotations

import contextlib
import dataclasses
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from partage.access import audit, saml
from partage.access.credentials import sample_actors
from partage.config import Settings
from partage.metadata.datatypes import DTM, XCN
from partage.metadata.model import Code
from partage.registry.access_state import Records
from partage.services import Services
from tests import factories as F
from tests.support import LiveServer
from tests.xdsclient import XdsClient

CONF = "1.2.250.1.213.1.1.4.13"
DOCUMENTS = 24
JSON = {"Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, authority, module_database_url):
    data = tmp_path_factory.mktemp("fhir-gate") / "data"
    url = module_database_url
    with contextlib.ExitStack() as stack:
        live = stack.enter_context(LiveServer(data, insecure_dev=False, mllp=False, database_url=url,
                                              extra_args=["--trust", str(authority.directory / "ca.pem")]))
        live.services = Services.open(Settings(data_dir=data, database_url=url), migrate=False)
        stack.callback(live.services.close)
        yield live


def _code(i: int) -> str:
    """Every other document masked from professionals, every fifth invisible to the patient."""
    return "INVISIBLE_PATIENT" if i % 5 == 4 else "MASQUE_PS" if i % 2 else ""


@pytest.fixture(scope="module")
def record(server, authority):
    pid = F.patient_id()
    with server.services.registry.write() as conn:
        server.services.registry.upsert_patient(conn, [pid])
    Records(server.services.registry).open(pid, medecin_traitant="810001234567")
    doctor = sample_actors(pid)["doctor"]
    docs = []
    for i in range(DOCUMENTS):
        doc = F.document(pid, f"g{i}", creation_time=DTM(f"2024{1 + i % 12:02d}{1 + i:02d}080000"))
        doc.authors[0].person = XCN.parse(f"{doctor.id}^AUTEUR^Test^^^Dr^^^&1.2.250.1.71.4.2.1&ISO")
        doc.class_code = Code("11", "1.2.250.1.213.1.1.4.1", "synthese")
        if _code(i):
            doc.confidentiality_codes = [Code("N", "2.16.840.1.113883.5.25"), Code(_code(i), CONF, _code(i))]
        docs.append(doc)
    client = XdsClient(server.base_url, security=lambda: saml.security_header(authority.saml_assertion(doctor)))
    for part in range(0, DOCUMENTS, 6):   # several submissions: registrations at several times
        chunk = docs[part:part + 6]
        reply = client.provide_and_register(F.submission(pid, chunk, contents=False),
                                            {d.entry_uuid: b"x" for d in chunk})
        assert reply.status == "Success", reply.error_codes
    return {"pid": pid, "codes": {d.unique_id: _code(i) for i, d in enumerate(docs)}}


def _get(server, authority, actor, url: str, params: dict | None = None) -> requests.Response:
    """A fresh bearer token each time (a credential is used once)."""
    return requests.get(url, params=params, timeout=30,
                        headers={**JSON, "Authorization": f"Bearer {authority.jwt(actor)}"})


def _walk(server, authority, actor, params: dict) -> tuple[list[str], list[dict]]:
    r = _get(server, authority, actor, f"{server.base_url}/fhir/DocumentReference", params)
    assert r.status_code == 200, r.text
    bundles = [r.json()]
    while nxt := [link["url"] for link in bundles[-1]["link"] if link["relation"] == "next"]:
        r = _get(server, authority, actor, nxt[0])
        assert r.status_code == 200, r.text
        bundles.append(r.json())
        assert len(bundles) <= DOCUMENTS
    uids = [e["resource"]["masterIdentifier"]["value"].removeprefix("urn:oid:")
            for b in bundles for e in b.get("entry", [])]
    return uids, bundles


SEES = {"doctor": {"", "MASQUE_PS", "INVISIBLE_PATIENT"},      # the author
        "nurse": {"", "INVISIBLE_PATIENT"},
        "patient": {"", "MASQUE_PS"}}


@pytest.mark.parametrize("who", list(SEES))
@pytest.mark.parametrize("sort", ["creation", "-creation", "-date"])
def test_pages_hold_only_what_the_actor_sees_and_are_full(server, authority, record, who, sort):
    actor = sample_actors(record["pid"])[who]
    visible = {uid for uid, code in record["codes"].items() if code in SEES[who]}
    params = {"patient.identifier": F.token(record["pid"]), "status": "current", "_sort": sort,
              "_count": "4", "_total": "accurate"}
    uids, bundles = _walk(server, authority, actor, params)
    assert len(uids) == len(set(uids)) and set(uids) == visible
    assert all(b["total"] == len(visible) for b in bundles)
    sizes = [len(b.get("entry", [])) for b in bundles]
    assert sizes[:-1] == [4] * (len(sizes) - 1) and 1 <= sizes[-1] <= 4   # the gate before the cut
    only_count = _get(server, authority, actor, f"{server.base_url}/fhir/DocumentReference",
                      {**params, "_count": "0"}).json()
    assert only_count["total"] == len(visible) and "entry" not in only_count


def test_a_first_page_that_holds_everything_has_its_total(server, authority, record):
    nurse = sample_actors(record["pid"])["nurse"]
    visible = sum(1 for code in record["codes"].values() if code in SEES["nurse"])
    r = _get(server, authority, nurse, f"{server.base_url}/fhir/DocumentReference",
             {"patient.identifier": F.token(record["pid"]), "status": "current", "_count": "100"})
    assert r.json()["total"] == visible == len(r.json()["entry"])


def test_the_audit_names_what_the_page_returned(server, authority, record):
    nurse = sample_actors(record["pid"])["nurse"]
    since = (audit.events(server.services, limit=1) or [{"pk": 0}])[0]["pk"]
    r = _get(server, authority, nurse, f"{server.base_url}/fhir/DocumentReference",
             {"patient.identifier": F.token(record["pid"]), "status": "current", "_count": "3",
              "_sort": "creation"})
    shown = {e["resource"]["masterIdentifier"]["value"].removeprefix("urn:oid:") for e in r.json()["entry"]}
    rows = [row for row in audit.events(server.services, limit=20) if row["pk"] > since]
    assert len(rows) == 1 and set(rows[0]["objects"]) == shown and len(shown) == 3
    assert rows[0]["decision"] == "filtered"   # masked documents were passed over on the way


def test_a_cursor_cannot_open_what_the_gate_hides(server, authority, record):
    """A next link handed to another actor continues that actor's own view."""
    doctor, nurse = (sample_actors(record["pid"])[k] for k in ("doctor", "nurse"))
    params = {"patient.identifier": F.token(record["pid"]), "status": "current", "_count": "4",
              "_sort": "creation"}
    first = _get(server, authority, doctor, f"{server.base_url}/fhir/DocumentReference", params).json()
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    page = _get(server, authority, nurse, nxt).json()
    for e in page.get("entry", []):
        uid = e["resource"]["masterIdentifier"]["value"].removeprefix("urn:oid:")
        assert record["codes"][uid] in SEES["nurse"]
    assert parse_qs(urlsplit(nxt).query)["_cursor"]


def test_without_credentials_a_search_is_401(server, record):
    r = requests.get(f"{server.base_url}/fhir/DocumentReference", headers=JSON, timeout=30,
                     params={"patient.identifier": F.token(record["pid"]), "status": "current"})
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    r = requests.get(f"{server.base_url}/fhir/Patient", headers=JSON, timeout=30, params={"family": "x"})
    assert r.status_code == 401


def test_patient_search_counts_only_whom_the_actor_may_know(server, authority, record):
    stranger = dataclasses.replace(sample_actors(record["pid"])["patient"], id="someone-else",
                                   patient_id=F.patient_id())
    r = _get(server, authority, stranger, f"{server.base_url}/fhir/Patient",
             {"identifier": record["pid"].id, "_total": "accurate"})
    assert r.status_code == 200 and r.json()["total"] == 0 and "entry" not in r.json()
    me = sample_actors(record["pid"])["patient"]
    r = _get(server, authority, me, f"{server.base_url}/fhir/Patient", {"identifier": record["pid"].id,
                                                                        "_total": "accurate"})
    assert r.status_code == 200 and r.json()["total"] == 1 and len(r.json()["entry"]) == 1
