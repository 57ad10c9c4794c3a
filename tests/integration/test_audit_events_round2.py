"""The audit trail served as FHIR AuditEvent (ITI-81), judged as an ATNA / BALP conformance
reviewer would: each event valid R4, typed and subtyped as IHE says for its transaction, the
action code and outcome of what happened, the requestor agent with its purpose of use, paging.
In process (Flask test client), authentication on, SQLite.

References:
- IHE ITI TF-2 3.8.5.1 (ITI-8): EventID EV(110110, DCM, "Patient Record"), EventActionCode C
  for A01/A04/A05, U for A08/A40.
- IHE ITI TF-2 3.53.5.1.2 (ITI-53, Notification Broker): EventID EV(110106, DCM, "Export"),
  EventActionCode R.
- FHIR R4 AuditEvent.action (audit-event-action): C create, R read/view/print, U update,
  D delete, E execute.
- IHE BALP, IHE.BasicAudit.SAMLaccessTokenUse.Minimal: SAML ~subject:purposeofuse ->
  agent[user].purposeOfUse (IUA likewise); XUA ITI TF-2 3.40.4.2.
- FHIR R4 Bundle.total: "the total number of entries of type 'match' across all pages";
  R4 search paging (http.html#paging, search.html#count): the server returns links to the
  further pages.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlsplit

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from lxml import etree

from partage.access import audit, saml
from partage.access.actor import PATIENT_FEED_ACTOR
from partage.access.credentials import sample_actors
from partage.config import Settings
from partage.ebxml import constants as C
from partage.ebxml.mtom import build_multipart
from partage.ebxml.soap import build_envelope
from partage.hl7 import routing
from partage.ingest import IngestService
from partage.metadata.model import Code
from partage.registry.access_state import Records
from partage.server.app import create_app
from partage.services import Services
from tests import clinical_support
from tests import factories as F
from tests.xdsclient import provide_and_register_body

DCM = "http://dicom.nema.org/resources/ontology/DCM"
IHE_EVENT = "urn:ihe:event-type-code"


@pytest.fixture(scope="module")
def world(tmp_path_factory, authority):
    directory = tmp_path_factory.mktemp("audit-round2")
    services = Services.open(Settings(data_dir=directory / "data", trust=authority.ca_file, mllp_port=0,
                                      text_indexer=False))
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    Records(services.registry).open(pid, medecin_traitant="810001234567")
    doctor = sample_actors(pid)["doctor"]
    doc = F.document(pid, "d1")
    request = F.submission(pid, [doc])
    IngestService(services, PATIENT_FEED_ACTOR, document_checks=[]).provide_and_register(request)
    client = create_app(services=services).test_client()
    yield {"services": services, "client": client, "authority": authority, "pid": pid, "uid": doc.unique_id,
           "doctor": doctor}
    services.close()


def _headers(world, name: str, **changes) -> dict:
    actor = sample_actors(world["pid"])[name]
    if changes:
        actor = dataclasses.replace(actor, **changes)
    return {"Authorization": f"Bearer {world['authority'].jwt(actor)}", "Accept": "application/fhir+json"}


def _token(world) -> str:
    return F.token(F.cx(world["pid"]))


def _last_pk(world) -> int:
    rows = audit.events(world["services"], limit=1)
    return rows[0]["pk"] if rows else 0


def _event(world, pk: int) -> dict:
    response = world["client"].get(f"/fhir/AuditEvent/{pk}", headers=_headers(world, "auditor"))
    assert response.status_code == 200, response.data[:300]
    event = response.get_json()
    AuditEvent.model_validate(event)
    return event


def _rows_since(world, since: int) -> list[dict]:
    return [r for r in audit.events(world["services"], limit=50) if r["pk"] > since]


def _requestor(event: dict) -> dict:
    found = [a for a in event["agent"] if a.get("requestor")]
    assert len(found) == 1, event["agent"]
    return found[0]


# ----------------------------------------------------------------- type, subtype, action
def test_a_document_read_by_a_professional_is_an_export_read_event_valid_r4(world):
    since = _last_pk(world)
    client, token = world["client"], _token(world)
    bundle = client.get("/fhir/DocumentReference", query_string={"patient.identifier": token, "status": "current"},
                        headers=_headers(world, "gp")).get_json()
    binary = bundle["entry"][0]["resource"]["content"][0]["attachment"]["url"].split("/fhir/", 1)[1]
    assert client.get(f"/fhir/{binary}", headers=_headers(world, "gp")).status_code == 200
    rows = {r["action"]: r for r in _rows_since(world, since)}
    query, read = _event(world, rows["ITI-67"]["pk"]), _event(world, rows["ITI-68"]["pk"])
    assert (query["type"]["system"], query["type"]["code"], query["action"]) == (DCM, "110112", "E")
    assert (read["type"]["system"], read["type"]["code"], read["action"]) == (DCM, "110106", "R")
    assert {"system": IHE_EVENT, "code": "ITI-68"}.items() <= read["subtype"][0].items()
    assert read["outcome"] == "0"
    assert read["recorded"].endswith("Z") or "+" in read["recorded"][19:]
    who = _requestor(read)
    assert who["who"]["identifier"]["value"] == sample_actors(world["pid"])["gp"].id
    assert who["who"].get("display") or who.get("name")
    patient = [e for e in read["entity"] if e["role"]["code"] == "1"]
    assert patient and patient[0]["type"]["code"] == "1"
    documents = [e for e in read["entity"] if e["role"]["code"] == "3"]
    assert [d["what"]["identifier"]["value"] for d in documents] == [f"urn:oid:{world['uid']}"]


def test_the_patient_identity_feed_is_a_patient_record_create_event(world):
    """ITI TF-2 3.8.5.1: ITI-8 is EV(110110, DCM, "Patient Record"), action C for an A01."""
    since = _last_pk(world)
    pid = F.patient_id()
    text = (f"MSH|^~\\&|DPI|HOPITAL|PARTAGE|PARTAGE|20241120090000||ADT^A01^ADT_A01|MSGR2{pid.id}|P|2.3.1\r"
            f"EVN|A01|20241120090000\r"
            f"PID|||{pid.id}^^^&1.2.250.1.213.1.4.10&ISO||DUPONT^JEANNE||19700101|F\r"
            "PV1||O\r")
    assert "MSA|AA" in routing.route(world["services"], text)
    rows = [r for r in _rows_since(world, since) if r["action"] == "ITI-8"]
    assert len(rows) == 1
    event = _event(world, rows[0]["pk"])
    assert (event["type"]["system"], event["type"]["code"]) == (DCM, "110110"), event["type"]
    assert event["action"] == "C", event["action"]
    assert event["subtype"][0]["code"] == "ITI-8"


def test_an_update_feed_message_is_a_patient_record_update_event(world):
    """ITI TF-2 3.8.5.1: an A08 (update patient information) is action U."""
    since = _last_pk(world)
    pid = world["pid"]
    text = (f"MSH|^~\\&|DPI|HOPITAL|PARTAGE|PARTAGE|20241120090000||ADT^A08^ADT_A01|MSGR2U{pid.id}|P|2.3.1\r"
            f"EVN|A08|20241120090000\r"
            f"PID|||{pid.id}^^^&1.2.250.1.213.1.4.10&ISO||DUPONT^JEANNE||19700101|F\r"
            "PV1||O\r")
    routing.route(world["services"], text)
    rows = [r for r in _rows_since(world, since) if r["action"] == "ITI-8"]
    assert len(rows) == 1
    event = _event(world, rows[0]["pk"])
    assert (event["type"]["code"], event["action"]) == ("110110", "U")


def test_a_fhir_delete_of_a_document_is_a_delete_event(world):
    """R4 audit-event-action: D "Delete items". A PDSm DELETE (ITI-57 status Deleted) is
    recorded as D (as ITI-62/ITI-86 are), never E "Execute"."""
    since = _last_pk(world)
    pid = world["pid"]
    doctor = world["doctor"]
    doc = F.document(pid, "del1")
    doc.authors[0].person = doc.authors[0].person.__class__.parse(
        f"{doctor.id}^CARDIOLOGUE^Paul^^^Dr^^^&1.2.250.1.71.4.2.1&ISO")
    IngestService(world["services"], PATIENT_FEED_ACTOR, document_checks=[]).provide_and_register(
        F.submission(pid, [doc]))
    found = world["client"].get("/fhir/DocumentReference",
                                query_string={"patient.identifier": _token(world), "status": "current"},
                                headers=_headers(world, "doctor")).get_json()
    rid = next(e["resource"]["id"] for e in found["entry"]
               if e["resource"]["masterIdentifier"]["value"] == f"urn:oid:{doc.unique_id}")
    since = _last_pk(world)
    response = world["client"].delete(f"/fhir/DocumentReference/{rid}", headers=_headers(world, "doctor"))
    assert response.status_code in (200, 204), response.data[:300]
    rows = [r for r in _rows_since(world, since) if r["action"] == "PDSm-delete"]
    assert len(rows) == 1 and rows[0]["outcome"] == 0
    event = _event(world, rows[0]["pk"])
    assert event["action"] == "D", event["action"]
    assert event["type"]["code"] == "110110"


def test_a_dsub_notification_is_an_export_event(world):
    """ITI TF-2 3.53.5.1.2: the broker's ITI-53 is EV(110106, DCM, "Export"), action R."""
    row = audit.record(world["services"], "ITI-53", world["doctor"], patient_id=world["pid"])
    event = _event(world, row)
    assert (event["type"]["code"], event["action"]) == ("110106", "R"), (event["type"], event["action"])


def test_a_record_page_read_is_a_read_event(world):
    """R4 audit-event-action R: "Display or print data". The professional's record page shows
    the record's documents: it is a read, not E "Execute"."""
    since = _last_pk(world)
    public = clinical_support.public_id(world["services"], world["pid"])
    world["client"].get(f"/dossier/{public}", headers=_headers(world, "gp"))
    rows = [r for r in _rows_since(world, since) if r["action"] == "page-record"]
    assert rows
    assert _event(world, rows[0]["pk"])["action"] == "R"


# ----------------------------------------------------------------- purpose of use
def test_bris_de_glace_purpose_is_carried_by_the_requestor_agent(world):
    """BALP SAMLaccessTokenUse: ~subject:purposeofuse -> agent[user].purposeOfUse."""
    since = _last_pk(world)
    response = world["client"].get("/fhir/DocumentReference",
                                   query_string={"patient.identifier": _token(world), "status": "current"},
                                   headers=_headers(world, "emergency"))
    assert response.status_code == 200
    rows = [r for r in _rows_since(world, since) if r["action"] == "ITI-67"]
    assert rows and rows[0]["purpose"] == "bris_de_glace"
    event = _event(world, rows[0]["pk"])
    codes = [c["code"] for p in _requestor(event).get("purposeOfUse", []) for c in p.get("coding", [])]
    assert codes == ["bris_de_glace"], _requestor(event)


# ----------------------------------------------------------------- outcome
def test_a_refused_read_of_the_trail_is_recorded_as_a_failure(world):
    since = _last_pk(world)
    assert world["client"].get("/fhir/AuditEvent", headers=_headers(world, "gp")).status_code == 403
    rows = [r for r in _rows_since(world, since) if r["action"] == "ITI-81"]
    assert len(rows) == 1
    event = _event(world, rows[0]["pk"])
    assert event["outcome"] in ("4", "8") and (event["type"]["code"], event["action"]) == ("110112", "E")


# ----------------------------------------------------------------- ITI-81 search
def test_paging_reaches_every_event_and_total_counts_all_pages(world):
    """R4 Bundle.total counts the matches across all pages; a page smaller than the match set
    links to the next one, and following the links reaches every event exactly once."""
    client, auditor = world["client"], _headers(world, "auditor")
    token = _token(world)
    before = _last_pk(world)
    full = client.get("/fhir/AuditEvent", query_string={"patient.identifier": token, "_count": "1000",
                                                        "date": "ge2000-01-01"}, headers=auditor).get_json()
    Bundle.model_validate(full)
    everything = [e["resource"]["id"] for e in full["entry"] if int(e["resource"]["id"]) <= before]
    assert len(everything) >= 5
    seen: list[str] = []
    url = "/fhir/AuditEvent"
    params = {"patient.identifier": token, "_count": "2", "date": "ge2000-01-01"}
    for _ in range(200):
        page = client.get(url, query_string=params, headers=auditor).get_json()
        Bundle.model_validate(page)
        ids = [e["resource"]["id"] for e in page.get("entry", [])]
        assert len(ids) <= 2
        if "total" in page:
            assert page["total"] >= len([i for i in everything]), page["total"]
        seen += ids
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        parts = urlsplit(nxt[0])
        url, params = parts.path, dict(parse_qsl(parts.query))
    old = [i for i in seen if int(i) <= before]
    assert len(old) == len(set(old))
    assert set(everything) <= set(old), "events the paging never reaches"
    bad = client.get("/fhir/AuditEvent", query_string={"patient.identifier": token, "_cursor": "not-a-page"},
                     headers=auditor)
    assert bad.status_code == 400 and bad.get_json()["resourceType"] == "OperationOutcome"


def test_date_search_honours_the_time_zone_of_the_value(world):
    """R4 search (date): a value with a time zone names that instant; recorded is UTC."""
    client, auditor = world["client"], _headers(world, "auditor")
    pk = audit.record(world["services"], "ITI-18", world["doctor"], patient_id=world["pid"])
    recorded = _event(world, pk)["recorded"]   # e.g. 2026-12-04T21:30:00Z
    instant = datetime.fromisoformat(recorded.replace("Z", "+00:00"))
    in_paris = (instant - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=2))).strftime(
        "%Y-%m-%dT%H:%M:%S+02:00")
    found = client.get("/fhir/AuditEvent", query_string={"patient.identifier": _token(world),
                                                         "date": f"ge{in_paris}"}, headers=auditor).get_json()
    assert str(pk) in {e["resource"]["id"] for e in found.get("entry", [])}
    after = (instant + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=2))).strftime(
        "%Y-%m-%dT%H:%M:%S+02:00")
    found = client.get("/fhir/AuditEvent", query_string={"patient.identifier": _token(world),
                                                         "date": f"ge{after}"}, headers=auditor).get_json()
    assert str(pk) not in {e["resource"]["id"] for e in found.get("entry", [])}


def test_a_patient_sees_their_own_trail_only_and_professionals_none(world):
    client = world["client"]
    mine = client.get("/fhir/AuditEvent", headers=_headers(world, "patient")).get_json()
    Bundle.model_validate(mine)
    assert mine["entry"]
    ids = {e["resource"]["id"] for e in mine["entry"]}
    with world["services"].registry.read() as conn:
        own = world["services"].registry.patient_pk(conn, world["pid"])
    rows = {str(r["pk"]): r for r in audit.events(world["services"], limit=1000)}
    assert all(rows[i]["patient_pk"] == own for i in ids)
    for event in (e["resource"] for e in mine["entry"]):
        AuditEvent.model_validate(event)
        assert "outcomeDesc" not in event
    other = F.patient_id()
    with world["services"].registry.write() as conn:
        world["services"].registry.upsert_patient(conn, [other])
    assert client.get("/fhir/AuditEvent", query_string={"patient.identifier": _token(world)},
                      headers={**_headers(world, "patient"),
                               "Authorization": _headers(world, "patient", id=other.id,
                                                         patient_id=other)["Authorization"]}).status_code == 403
    assert client.get("/fhir/AuditEvent", headers=_headers(world, "nurse")).status_code == 403


# ----------------------------------------------------------------- outcome of refused XDS requests
def _soap(world, name: str, action: str, body, attachments=()) -> bytes:
    header = saml.security_header(world["authority"].saml_assertion(sample_actors(world["pid"])[name]))
    envelope = build_envelope(action, body, extra_headers=[header])
    content_type, chunks, _ = build_multipart(envelope, list(attachments), action=action)
    response = world["client"].post("/xds/repository", data=b"".join(chunks), content_type=content_type)
    assert response.status_code == 200, response.data[:500]
    return response.data


def test_a_refused_submission_is_not_audited_as_a_success(world):
    """docs/access.md: "the ATNA outcome (0 success, 4 refused, 8 server error)". An ITI-41 the
    repository answers with a Failure RegistryResponse (here a classCode outside the affinity
    domain) did not happen: its event is not outcome 0."""
    since = _last_pk(world)
    doc = F.document(world["pid"], "bad1", class_code=Code("77", "1.2.250.1.213.1.1.4.1", "inconnu"))
    body, attachments = provide_and_register_body(F.submission(world["pid"], [doc], contents=False),
                                                  {"bad1": b"<doc/>"})
    answer = _soap(world, "doctor", C.ACTION_PNR, body, attachments)
    assert b"ResponseStatusType:Failure" in answer
    rows = [r for r in _rows_since(world, since) if r["action"] == "ITI-41"]
    assert len(rows) == 1
    assert rows[0]["outcome"] in (4, 8), rows[0]
    assert _event(world, rows[0]["pk"])["outcome"] in ("4", "8")


def test_a_failed_stored_query_is_not_audited_as_a_success(world):
    """An ITI-18 answered with status Failure (its required patient id missing) is outcome 4."""
    since = _last_pk(world)
    body = etree.Element(f"{{{C.QUERY}}}AdhocQueryRequest", nsmap={"query": C.QUERY, "rim": C.RIM})
    etree.SubElement(body, f"{{{C.QUERY}}}ResponseOption", returnType="LeafClass", returnComposedObjects="true")
    adhoc = etree.SubElement(body, f"{{{C.RIM}}}AdhocQuery", id=C.STORED_QUERY_IDS["FindDocuments"])
    slot = etree.SubElement(adhoc, f"{{{C.RIM}}}Slot", name="$XDSDocumentEntryStatus")
    etree.SubElement(etree.SubElement(slot, f"{{{C.RIM}}}ValueList"), f"{{{C.RIM}}}Value").text = \
        "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
    answer = _soap(world, "gp", C.ACTION_STORED_QUERY, body)
    assert b"ResponseStatusType:Failure" in answer
    rows = [r for r in _rows_since(world, since) if r["action"] == "ITI-18"]
    assert len(rows) == 1 and rows[0]["outcome"] == 4, rows
