"""Audit completeness (docs/access.md: "Every request on /xds, /fhir and the /dossier pages
leaves one audit record"; fail closed): an oracle over the Flask URL map. Every read route that
can return patient data is called once (insecure-dev actor), and must leave exactly one audit row
naming the patient, the actor, the action and the outcome; with the audit store refusing writes,
the same request must serve nothing of the patient. In-process (SQLite, Flask test client)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import func, select

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.clinical.queue import drain
from partage.config import Settings
from partage.ingest import IngestService
from partage.registry import audit_log
from partage.registry.access_state import Records
from partage.services import Services
from tests import clinical_support as C
from tests.conftest import corpus_path

pytestmark = pytest.mark.corpus

NIR = "279035121518989"
PID = C.patient_cx(NIR)
INS = f"urn:oid:1.2.250.1.213.1.4.10|{NIR}"
FHIR_JSON = {"Accept": "application/fhir+json"}
SOAP = {"Content-Type": "application/soap+xml"}
# Routes that hold no patient data, or write (the write doors are covered by open_record).
NOT_PATIENT_DATA = {"/healthz", "/static/<path:filename>", "/validate", "/fhir/metadata", "/connexion",
                    "/connexion/au-revoir", "/connexion/deconnexion", "/connexion/retour"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = tmp_path_factory.mktemp("audit-review") / "data"
    services = Services.open(Settings(data_dir=data, insecure_dev=True))
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [PID])
    Records(services.registry).open(PID)
    uids = []
    for i, name in enumerate(["IPS-FR_2024.01_DLU.xml", "BIO-CR-BIO_2024.01_TSH_1.xml", "VAC_2023.01.xml"]):
        cda = C.for_patient(corpus_path("cda", "valid", name).read_bytes(), NIR)
        request = C.submission(cda, f"doc{i}")
        IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(request)
        uids.append(request.documents[0].unique_id)
    NIR2 = "179035121518944"
    pid2 = C.patient_cx(NIR2)
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid2])
    Records(services.registry).open(pid2)
    cda = C.for_patient(corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_2.xml").read_bytes(), NIR2)
    other = IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(C.submission(cda, "docx"))
    mine = IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(
        C.submission(C.for_patient(corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_Glycemie_mole.xml").read_bytes(),
                                   NIR), "docy"))
    drain(services)
    from partage.server.app import create_app
    client = create_app(services=services).test_client()
    rid = C.public_id(services, PID)
    w = {"services": services, "client": client, "rid": rid, "uids": uids, "db": data / "registry.sqlite3",
         "pid2": pid2, "uuid2": other.assigned_ids["docx"], "uuid1": mine.assigned_ids["docy"]}
    # ids of the resources to read
    b = client.get("/fhir/DocumentReference", query_string={"patient.identifier": INS, "status": "current"}, headers=FHIR_JSON).get_json()
    doc = b["entry"][0]["resource"]
    w["doc"], w["binary"] = doc["id"], doc["content"][0]["attachment"]["url"].split("/fhir/", 1)[1]
    w["doc_vid"] = doc.get("meta", {}).get("versionId", "1")
    lst = client.get("/fhir/List", query_string={"patient.identifier": INS, "status": "current"}, headers=FHIR_JSON).get_json()
    w["list"] = lst["entry"][0]["resource"]["id"]
    for rtype in ("Observation", "Condition", "AllergyIntolerance", "MedicationStatement", "Immunization"):
        bundle = client.get(f"/fhir/{rtype}", query_string={"patient": f"Patient/{rid}"}, headers=FHIR_JSON).get_json()
        w[rtype] = bundle["entry"][0]["resource"]["id"] if bundle.get("entry") else None
    yield w
    services.close()


def _soap(name: str, world) -> bytes:
    body = open(f"examples/{name}", "rb").read()
    body = body.replace(b"270017512345615^^^&amp;1.2.250.1.213.1.4.10&amp;ISO",
                        str(PID).replace("&", "&amp;").encode())
    body = body.replace(b"1.2.250.1.999.1.2024.1", world["uids"][1].encode())
    body = body.replace(b"2.25.211310386435413264734375473219935735845",
                        world["services"].settings.repository_unique_id.encode())
    return body


def _requests(world) -> dict[str, tuple]:
    """rule -> (method, path, kwargs, patient data marker)."""
    rid, doc = world["rid"], world["doc"]
    q = {"patient.identifier": INS, "status": "current"}
    get = lambda path, **kw: ("GET", path, {"headers": FHIR_JSON, **kw})  # noqa: E731
    out = {
        "/fhir/DocumentReference": get("/fhir/DocumentReference", query_string=q),
        "/fhir/DocumentReference/_search": ("POST", "/fhir/DocumentReference/_search", {"data": q, "headers": FHIR_JSON}),
        "/fhir/DocumentReference/<rid>": get(f"/fhir/DocumentReference/{doc}"),
        "/fhir/DocumentReference/<rid>/_history/<vid>": get(f"/fhir/DocumentReference/{doc}/_history/{world['doc_vid']}"),
        "/fhir/Binary/<rid>": get(f"/fhir/{world['binary']}"),
        "/fhir/List": get("/fhir/List", query_string=q),
        "/fhir/List/_search": ("POST", "/fhir/List/_search", {"data": q, "headers": FHIR_JSON}),
        "/fhir/List/<rid>": get(f"/fhir/List/{world['list']}"),
        "/fhir/List/<rid>/_history/<vid>": get(f"/fhir/List/{world['list']}/_history/1"),
        "/fhir/Patient": get("/fhir/Patient", query_string={"identifier": INS}),
        "/fhir/Patient/_search": ("POST", "/fhir/Patient/_search", {"data": {"identifier": INS}, "headers": FHIR_JSON}),
        "/fhir/Patient/<rid>": get(f"/fhir/Patient/{rid}"),
        "/fhir/Patient/<rid>/_history/<vid>": get(f"/fhir/Patient/{rid}/_history/1"),
        "/fhir/Patient/<rid>/$summary": get(f"/fhir/Patient/{rid}/$summary"),
        "/fhir/AuditEvent": get("/fhir/AuditEvent", query_string={"patient.identifier": INS}),
        "/fhir/Consent": get("/fhir/Consent", query_string={"patient.identifier": INS}),
        "/dossier/<rid>": ("GET", f"/dossier/{rid}", {}),
        "/dossier/<rid>/documents/<doc_rid>": ("GET", f"/dossier/{rid}/documents/{doc}", {}),
        "/dossier/<rid>/documents/<doc_rid>/content": ("GET", f"/dossier/{rid}/documents/{doc}/content", {}),
        "/dossier/<rid>/resultats": ("GET", f"/dossier/{rid}/resultats", {"query_string": {"code": "3016-3"}}),
        "/xds/registry": ("POST", "/xds/registry", {"data": _soap("iti18-find-documents.xml", world), "headers": SOAP}),
        "/xds/repository": ("POST", "/xds/repository", {"data": _soap("iti43-retrieve.xml", world), "headers": SOAP}),
    }
    for rtype in ("Observation", "Condition", "AllergyIntolerance", "MedicationStatement", "Immunization"):
        out[f"/fhir/{rtype}"] = get(f"/fhir/{rtype}", query_string={"patient": f"Patient/{rid}"})
        if world[rtype]:
            out[f"/fhir/{rtype}/<rid>"] = get(f"/fhir/{rtype}/{world[rtype]}")
    return out


def _rows(world, since: int) -> list[dict]:
    with world["services"].registry.read() as conn:
        return [r for r in audit_log.events(conn, since_pk=since, limit=50)]


def _last_pk(world) -> int:
    with world["services"].registry.read() as conn:
        return conn.execute(select(func.max(audit_log.EVENTS.c.pk))).scalar() or 0


def test_oracle_covers_every_read_route(world):
    """Every GET route under an audited prefix is in the oracle (or knowingly skipped)."""
    app = world["client"].application
    reads = {r.rule for r in app.url_map.iter_rules() if "GET" in r.methods} - NOT_PATIENT_DATA
    skipped = {"/fhir/AuditEvent/<rid>", "/fhir/Subscription", "/fhir/Subscription/<rid>",
               "/fhir/Subscription/<rid>/$status"}
    covered = set(_requests(world)) | skipped
    missing = {r for r in reads if r not in covered and not r.endswith("/<rid>")}
    assert not missing, missing


@pytest.mark.parametrize("rule", sorted([
    "/fhir/DocumentReference", "/fhir/DocumentReference/_search", "/fhir/DocumentReference/<rid>",
    "/fhir/DocumentReference/<rid>/_history/<vid>", "/fhir/Binary/<rid>", "/fhir/List", "/fhir/List/_search",
    "/fhir/List/<rid>", "/fhir/List/<rid>/_history/<vid>", "/fhir/Patient", "/fhir/Patient/_search",
    "/fhir/Patient/<rid>", "/fhir/Patient/<rid>/_history/<vid>", "/fhir/Patient/<rid>/$summary",
    "/fhir/AuditEvent", "/fhir/Consent", "/dossier/<rid>", "/dossier/<rid>/documents/<doc_rid>",
    "/dossier/<rid>/documents/<doc_rid>/content", "/dossier/<rid>/resultats", "/xds/registry", "/xds/repository",
    "/fhir/Observation", "/fhir/Observation/<rid>", "/fhir/Condition", "/fhir/Condition/<rid>",
    "/fhir/AllergyIntolerance", "/fhir/AllergyIntolerance/<rid>", "/fhir/MedicationStatement",
    "/fhir/MedicationStatement/<rid>", "/fhir/Immunization", "/fhir/Immunization/<rid>"]))
def test_every_read_leaves_one_record_naming_the_patient(world, rule):
    cases = _requests(world)
    if rule not in cases:
        pytest.skip(f"no resource for {rule}")
    method, path, kwargs = cases[rule]
    since = _last_pk(world)
    r = world["client"].open(path, method=method, **kwargs)
    assert r.status_code == 200, (r.status_code, r.get_data(as_text=True)[:300])
    rows = _rows(world, since)
    assert len(rows) == 1, [(x["action"], x["request"]) for x in rows]
    row = rows[0]
    assert row["actor_id"] == INSECURE_DEV_ACTOR.id
    assert row["outcome"] == 0, row
    assert row["patient_id"] == str(PID) or row["patient_id"].startswith(f"{NIR}^^^"), row
    assert row["patient_pk"] is not None, row


@pytest.mark.parametrize("path", ["/fhir/DocumentReference/999999", "/fhir/Binary/999999", "/fhir/Observation/999999",
                                  "/fhir/Patient/999999/$summary"])
def test_a_refused_read_is_audited_with_its_outcome(world, path):
    since = _last_pk(world)
    r = world["client"].get(path, headers=FHIR_JSON)
    assert r.status_code in (403, 404), r.status_code
    rows = _rows(world, since)
    assert len(rows) == 1 and rows[0]["outcome"] == 4, rows


@pytest.fixture
def audit_down(world):
    db = sqlite3.connect(world["db"])
    db.execute("CREATE TRIGGER audit_down BEFORE INSERT ON audit_events "
               "BEGIN SELECT RAISE(ABORT, 'audit store down'); END")
    db.commit()
    yield
    db.execute("DROP TRIGGER audit_down")
    db.commit()
    db.close()


MARKERS = [NIR.encode(), b"Observation", b"DocumentReference", b"ClinicalDocument", b"Immunization",
           b"ExtrinsicObject", b"Document>", b"<html"]


@pytest.mark.parametrize("rule", sorted([
    "/fhir/DocumentReference", "/fhir/DocumentReference/_search", "/fhir/DocumentReference/<rid>",
    "/fhir/DocumentReference/<rid>/_history/<vid>", "/fhir/Binary/<rid>", "/fhir/List", "/fhir/List/<rid>",
    "/fhir/List/<rid>/_history/<vid>", "/fhir/Patient", "/fhir/Patient/<rid>",
    "/fhir/Patient/<rid>/_history/<vid>", "/fhir/Patient/<rid>/$summary", "/fhir/AuditEvent", "/fhir/Consent",
    "/dossier/<rid>", "/dossier/<rid>/documents/<doc_rid>", "/dossier/<rid>/documents/<doc_rid>/content",
    "/dossier/<rid>/resultats", "/xds/registry", "/xds/repository", "/fhir/Observation", "/fhir/Observation/<rid>",
    "/fhir/Condition", "/fhir/Immunization", "/fhir/Immunization/<rid>", "/fhir/MedicationStatement",
    "/fhir/AllergyIntolerance"]))
def test_nothing_is_served_when_the_audit_cannot_be_written(world, rule, audit_down):
    cases = _requests(world)
    if rule not in cases:
        pytest.skip(f"no resource for {rule}")
    method, path, kwargs = cases[rule]
    r = world["client"].open(path, method=method, **kwargs)
    body = r.get_data()
    assert r.status_code == 503 or (rule.startswith("/xds") and b"XDSRegistryBusy" in body), (r.status_code, body[:300])
    leaked = [m for m in MARKERS if m in body and not (m == b"<html" and rule.startswith("/dossier"))]
    assert not leaked, (leaked, body[:300])


FIND_BY_UUID = """<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://www.w3.org/2005/08/addressing">
  <soap:Header><wsa:Action soap:mustUnderstand="true">urn:ihe:iti:2007:RegistryStoredQuery</wsa:Action>
    <wsa:MessageID>urn:uuid:0d9c2b7a-5e44-4d52-8c1e-9a0b1c2d3e4f</wsa:MessageID></soap:Header>
  <soap:Body>
    <query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
      <query:ResponseOption returnType="LeafClass" returnComposedObjects="true"/>
      <rim:AdhocQuery id="urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4">
        <rim:Slot name="$XDSDocumentEntryEntryUUID"><rim:ValueList><rim:Value>('{a}','{b}')</rim:Value></rim:ValueList></rim:Slot>
      </rim:AdhocQuery>
    </query:AdhocQueryRequest>
  </soap:Body>
</soap:Envelope>"""


def _patients_named(world, since):
    rows = _rows(world, since)
    return rows, {r["patient_pk"] for r in rows}


def _pks(world):
    reg = world["services"].registry
    with reg.read() as conn:
        return reg.patient_pk(conn, PID), reg.patient_pk(conn, world["pid2"])


@pytest.mark.parametrize("how", ["iti18-GetDocuments", "fhir-DocumentReference-_id", "fhir-Patient-identifier"])
def test_an_answer_about_two_patients_is_in_both_trails(world, how):
    """docs/access.md: the audit row names "the patient"; `GET /fhir/AuditEvent` gives a patient
    "the accesses to their own record". A read whose answer holds two patients' data must be
    traceable from both records (one row each, or refused); it writes one row naming the first."""
    client, since = world["client"], _last_pk(world)
    if how == "iti18-GetDocuments":
        body = FIND_BY_UUID.format(a=world["uuid1"], b=world["uuid2"]).encode()
        r = client.post("/xds/registry", data=body, headers=SOAP)
        served = r.get_data().count(b"<rim:ExtrinsicObject")
    elif how == "fhir-DocumentReference-_id":
        r = client.get("/fhir/DocumentReference", headers=FHIR_JSON,
                       query_string={"_id": f"{world['uuid1'].split(':')[-1]},{world['uuid2'].split(':')[-1]}"})
        served = len(r.get_json().get("entry", [])) if r.status_code == 200 else 0
    else:
        other = str(world["pid2"]).split("^")[0]
        r = client.get("/fhir/Patient", headers=FHIR_JSON,
                       query_string={"identifier": f"{INS},urn:oid:1.2.250.1.213.1.4.10|{other}"})
        served = len(r.get_json().get("entry", [])) if r.status_code == 200 else 0
    if served < 2:
        return   # held: this door refuses an answer about two patients (XDSResultNotSinglePatient)
    rows, named = _patients_named(world, since)
    assert set(_pks(world)) <= named, (f"{served} objects of two patients served; audit rows name patient(s) "
                                        f"{[(x['patient_id'], x['action']) for x in rows]}")


@pytest.mark.parametrize("method,path,kwargs,expected", [
    ("POST", "/fhir/List/_search", {"data": {"patient.identifier": INS, "status": "current"}}, "ITI-66"),
    ("HEAD", "/fhir/DocumentReference", {"query_string": {"patient.identifier": INS, "status": "current"}}, "ITI-67"),
    ("HEAD", "/fhir/Patient", {"query_string": {"identifier": INS}}, "ITI-78"),
])
def test_the_action_is_the_transaction_whatever_the_http_form(world, method, path, kwargs, expected):
    """docs/access.md: the row's action is the transaction (ITI-66, ITI-67, ITI-78...), which the
    AuditEvent read maps to its DICOM event type. POST .../_search of a List is ITI-66 as POST
    DocumentReference/_search is ITI-67 (FHIR R4 http.html#search), and HEAD is a GET without body
    (RFC 9110 9.3.2); both are recorded as raw "METHOD /path" (110100 Application Activity)."""
    since = _last_pk(world)
    r = world["client"].open(path, method=method, headers=FHIR_JSON, **kwargs)
    assert r.status_code == 200
    rows = _rows(world, since)
    assert len(rows) == 1 and rows[0]["action"] == expected, [(x["action"], x["request"]) for x in rows]


def test_reading_one_audit_event_is_audited_naming_its_patient(world):
    """GET /fhir/AuditEvent/<id> reads who looked at a patient's record: its own row names that patient."""
    world["client"].get(f"/fhir/Patient/{world['rid']}", headers=FHIR_JSON)
    target = _last_pk(world)
    r = world["client"].get(f"/fhir/AuditEvent/{target}", headers=FHIR_JSON)
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    rows = _rows(world, target)
    assert len(rows) == 1 and rows[0]["action"] == "ITI-81" and rows[0]["outcome"] == 0, rows
    assert rows[0]["patient_pk"] == _pks(world)[0], rows[0]


def test_subscription_reads_are_audited_and_fail_closed(world):
    """A DSUBm Subscription names its patient (its filter criteria): its reads leave one row
    naming the patient and serve nothing when the audit cannot be written."""
    from tests.notify_support import fhir_subscription
    client = world["client"]
    body = fhir_subscription("http://127.0.0.1:9/hook", f"DocumentReference?patient.identifier={INS}")
    r = client.post("/fhir/Subscription", json=body, headers=FHIR_JSON)
    if r.status_code not in (200, 201):
        pytest.skip(f"subscription refused: {r.status_code} {r.get_data(as_text=True)[:200]}")
    sid = r.get_json()["id"]
    problems = []
    for path in ("/fhir/Subscription", f"/fhir/Subscription/{sid}", f"/fhir/Subscription/{sid}/$status"):
        since = _last_pk(world)
        r = client.get(path, headers=FHIR_JSON)
        rows = _rows(world, since)
        if r.status_code != 200 or len(rows) != 1 or rows[0]["outcome"] != 0:
            problems.append((path, r.status_code, [(x["action"], x["outcome"]) for x in rows]))
        elif NIR.encode() in r.get_data() and rows[0]["patient_pk"] != _pks(world)[0]:
            problems.append((path, "serves the patient's id; the row names", rows[0]["patient_id"]))
    db = sqlite3.connect(world["db"])
    db.execute("CREATE TRIGGER audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'down'); END")
    db.commit()
    try:
        for path in ("/fhir/Subscription", f"/fhir/Subscription/{sid}", f"/fhir/Subscription/{sid}/$status"):
            r = client.get(path, headers=FHIR_JSON)
            if r.status_code != 503 or NIR.encode() in r.get_data():
                problems.append((path, "audit down", r.status_code))
    finally:
        db.execute("DROP TRIGGER audit_down")
        db.commit()
        db.close()
    assert not problems, problems


# --------------------------------------------------------------------------- refused reads, real actors
@pytest.fixture(scope="module")
def guarded(tmp_path_factory, authority):
    import dataclasses

    from partage.access.credentials import sample_actors
    from partage.metadata.datatypes import XCN
    from partage.metadata.model import Author
    from partage.server.app import create_app
    data = tmp_path_factory.mktemp("audit-guarded") / "data"
    services = Services.open(Settings(data_dir=data, trust=authority.ca_file))
    actors = sample_actors(PID)
    actors["other"] = dataclasses.replace(actors["emergency"], purpose="normal", reason="")
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [PID])
    Records(services.registry).open(PID, medecin_traitant=actors["gp"].id)
    doctor = actors["doctor"]
    author = [Author(person=XCN.parse(f"{doctor.id}^CARDIOLOGUE^Paul^^^^^^&1.2.250.1.71.4.2.1&ISO"))]
    cda = C.for_patient(corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_1.xml").read_bytes(), NIR, author=doctor.id)
    request = C.submission(cda, "doc0", authors=author, extra_confidentiality=[C.MASQUE_PS])
    result = IngestService(services, doctor).provide_and_register(request)
    drain(services)
    client = create_app(services=services).test_client()
    yield {"services": services, "client": client, "actors": actors, "rid": C.public_id(services, PID),
           "doc": result.assigned_ids["doc0"].split(":")[-1], "uid": request.documents[0].unique_id}
    services.close()


def test_a_hidden_document_refused_is_audited_naming_the_patient(guarded, authority):
    """A professional the policy keeps from a masked document gets 403/404 on every door; each
    refusal leaves one row naming the patient, the actor and outcome 4 (docs/access.md)."""
    g, other = guarded, guarded["actors"]["other"]
    auth = {"Authorization": f"Bearer {authority.jwt(other)}", **FHIR_JSON}
    paths = [f"/fhir/DocumentReference/{g['doc']}", f"/fhir/Binary/{g['doc']}",
             f"/fhir/DocumentReference/{g['doc']}/_history/1"]
    with g["services"].registry.read() as conn:
        pk = g["services"].registry.patient_pk(conn, PID)
    problems = []
    for path in paths:
        with g["services"].registry.read() as conn:
            since = conn.execute(select(func.max(audit_log.EVENTS.c.pk))).scalar() or 0
        r = g["client"].get(path, headers=auth)
        with g["services"].registry.read() as conn:
            rows = audit_log.events(conn, since_pk=since)
        if r.status_code not in (403, 404) or b"3016-3" in r.get_data():
            problems.append((path, "served", r.status_code))
        if len(rows) != 1 or rows[0]["outcome"] != 4 or rows[0]["actor_id"] != other.id or rows[0]["patient_pk"] != pk:
            problems.append((path, r.status_code, [(x["outcome"], x["actor_id"], x["patient_pk"], x["decision"])
                                                   for x in rows]))
    assert not problems, problems


@pytest.mark.parametrize("rule", ["/fhir/Binary/<rid>", "/fhir/DocumentReference/<rid>", "/xds/repository",
                                  "/dossier/<rid>/documents/<doc_rid>", "/dossier/<rid>/documents/<doc_rid>/content",
                                  "/fhir/DocumentReference/<rid>/_history/<vid>"])
def test_a_document_read_names_the_document(world, rule):
    """docs/access.md: the row holds "the uniqueIds of the documents returned"."""
    method, path, kwargs = _requests(world)[rule]
    since = _last_pk(world)
    r = world["client"].open(path, method=method, **kwargs)
    assert r.status_code == 200
    rows = _rows(world, since)
    assert len(rows) == 1 and rows[0]["objects"], (rule, rows[0]["objects"] if rows else None)


@pytest.mark.parametrize("method,path_of", [
    ("DELETE", lambda w: f"/fhir/DocumentReference/{w['doc']}"),
    ("PATCH", lambda w: f"/fhir/DocumentReference/{w['doc']}"),
    ("POST", lambda w: f"/dossier/{w['rid']}/acces"),
])
def test_a_write_does_not_run_when_the_audit_cannot_be_written(world, audit_down, method, path_of):
    path = path_of(world)
    kwargs = {"json": [{"op": "replace", "path": "/status", "value": "entered-in-error"}],
              "headers": {"Content-Type": "application/json-patch+json"}} if method == "PATCH" else {}
    r = world["client"].open(path, method=method, **kwargs)
    assert r.status_code == 503, (r.status_code, r.get_data(as_text=True)[:200])
    with world["services"].registry.read() as conn:
        assert conn.execute(select(func.count()).select_from(audit_log.EVENTS)).scalar() > 0
    got = world["client"].get(f"/fhir/DocumentReference/{world['doc']}", headers=FHIR_JSON)
    assert got.status_code == 503   # still down; the document is checked once it is back, below


def test_the_document_survived_the_refused_writes(world):
    got = world["client"].get(f"/fhir/DocumentReference/{world['doc']}", headers=FHIR_JSON)
    assert got.status_code == 200 and got.get_json()["status"] == "current", got.get_data(as_text=True)[:200]


def test_a_search_partly_withheld_is_filtered_not_denied(guarded, authority):
    """A Patient search by patient A (kind patient), naming A and B: A is served (200),
    B withheld. ATNA outcome of a served answer is 0 with decision `filtered` (docs/access.md:
    "filtered when objects were withheld"); a row saying `deny`/4 for the served patient misstates it."""
    g = guarded
    pid2 = C.patient_cx("179035121518944")
    with g["services"].registry.write() as conn:
        g["services"].registry.upsert_patient(conn, [pid2])
    Records(g["services"].registry).open(pid2)
    doctor = g["actors"]["patient"]
    auth = {"Authorization": f"Bearer {authority.jwt(doctor)}", **FHIR_JSON}
    with g["services"].registry.read() as conn:
        since = conn.execute(select(func.max(audit_log.EVENTS.c.pk))).scalar() or 0
        pk = g["services"].registry.patient_pk(conn, PID)
    r = g["client"].get("/fhir/Patient", headers=auth,
                        query_string={"identifier": f"{INS},urn:oid:1.2.250.1.213.1.4.10|179035121518944"})
    assert r.status_code == 200
    served = len(r.get_json().get("entry", []))
    with g["services"].registry.read() as conn:
        rows = audit_log.events(conn, since_pk=since)
    mine = [x for x in rows if x["patient_pk"] == pk]
    assert served == 1 and mine, (served, rows)
    assert mine[0]["outcome"] == 0, [(x["patient_id"], x["outcome"], x["decision"], x["detail"]) for x in rows]
