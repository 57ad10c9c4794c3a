"""Authentication, the DMP policy and the audit trail against a real `partage serve`
started WITHOUT --insecure-dev, trusting a development CA made by the tests."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
from lxml import etree

from partage.access import audit, saml
from partage.access.credentials import DevAuthority, sample_actors
from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID, Settings
from partage.metadata.datatypes import DTM, XCN
from partage.metadata.model import Code
from partage.registry.access_state import Records
from partage.services import Services
from tests import factories as F
from tests.support import LiveServer
from tests.xdsclient import XdsClient, objects_of

APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
CONF = "1.2.250.1.213.1.1.4.13"
SOAP = "{http://www.w3.org/2003/05/soap-envelope}"


@pytest.fixture(scope="module")
def server(tmp_path_factory, authority, module_database_url):
    """The real server on SQLite, and on PostgreSQL when it runs (always in CI)."""
    data = tmp_path_factory.mktemp("access") / "data"
    url = module_database_url
    with contextlib.ExitStack() as stack:
        live = stack.enter_context(LiveServer(data, insecure_dev=False, mllp=False, database_url=url,
                                              extra_args=["--trust", str(authority.directory / "ca.pem")]))
        live.services = Services.open(Settings(data_dir=data, database_url=url), migrate=False)
        stack.callback(live.services.close)
        yield live


# ------------------------------------------------------------------ helpers
def _patient(server, *, consent=True, medecin_traitant="810001234567") -> str:
    pid = F.patient_id()
    with server.services.registry.write() as conn:
        server.services.registry.upsert_patient(conn, [pid])
    if consent:
        Records(server.services.registry).open(pid, medecin_traitant=medecin_traitant)
    return pid


def _actor(name: str, pid: str, **changes):
    actor = sample_actors(pid)[name]
    return dataclasses.replace(actor, **changes) if changes else actor


def _soap(server, authority, actor, **kw) -> XdsClient:
    """A client sending a fresh assertion with each request (assertions are single-use)."""
    return XdsClient(server.base_url, security=lambda: saml.security_header(authority.saml_assertion(actor, **kw)))


def _bearer(authority, actor, **kw) -> dict:
    return {"Authorization": f"Bearer {authority.jwt(actor, **kw)}"}


def _doc(pid, entry_id, author_id, *, conf=None, class_code="10"):
    doc = F.document(pid, entry_id)
    doc.authors[0].person = XCN.parse(f"{author_id}^AUTEUR^Test^^^Dr^^^&1.2.250.1.71.4.2.1&ISO")
    doc.class_code = Code(class_code, "1.2.250.1.213.1.1.4.1", "classe")
    if conf:
        doc.confidentiality_codes = [Code("N", "2.16.840.1.113883.5.25", "Normal"), Code(conf, CONF, conf)]
    return doc


def _find(client, pid) -> list[str]:
    reply = client.stored_query("FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{pid}'"],
                                                  "$XDSDocumentEntryStatus": [APPROVED]})
    assert reply.status == "Success", reply.error_codes
    return sorted(o.unique_id for o in objects_of(reply))


def _mhd(server, headers, pid) -> dict:
    response = requests.get(f"{server.base_url}/fhir/DocumentReference", headers=headers, timeout=30,
                            params={"patient.identifier": F.token(F.cx(pid)), "status": "current"})
    assert response.status_code == 200, response.text
    return response.json()


def _mhd_uids(bundle) -> list[str]:
    return sorted(e["resource"]["masterIdentifier"]["value"].removeprefix("urn:oid:") for e in bundle.get("entry", []))


def _is_auth_fault(reply) -> bool:
    return (reply.http_status == 400 and reply.body.tag == f"{SOAP}Fault"
            and "FailedAuthentication" in (reply.body.findtext(f"{SOAP}Code/{SOAP}Subcode/{SOAP}Value") or ""))


@pytest.fixture(scope="module")
def record(server, authority):
    """A patient whose médecin traitant is the sample GP, with one normal document, one
    MASQUE_PS and one INVISIBLE_PATIENT, all submitted by the sample cardiologist."""
    pid = _patient(server)
    doctor = _actor("doctor", pid)
    docs = [_doc(pid, "normal", doctor.id), _doc(pid, "masked", doctor.id, conf="MASQUE_PS"),
            _doc(pid, "hidden", doctor.id, conf="INVISIBLE_PATIENT")]
    request = F.submission(pid, docs, contents=False)
    reply = _soap(server, authority, doctor).provide_and_register(
        request, {d.entry_uuid: f"<doc>{d.entry_uuid}</doc>".encode() for d in docs})
    assert reply.status == "Success", reply.error_codes
    return {"pid": pid, **{d.entry_uuid: d.unique_id for d in docs}}


# ------------------------------------------------------------------ authentication
def test_no_credentials_no_patient_data(server, record):
    client = XdsClient(server.base_url)
    reply = client.stored_query("FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{record['pid']}'"],
                                                  "$XDSDocumentEntryStatus": [APPROVED]})
    assert _is_auth_fault(reply)
    retrieved, documents = client.retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [record["normal"]])
    assert _is_auth_fault(retrieved) and not documents
    for path in ("/fhir/DocumentReference?status=current", "/fhir/List", "/fhir/Binary/x", "/fhir/Patient",
                 "/fhir/AuditEvent"):
        response = requests.get(server.base_url + path, timeout=30)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(server.base_url + "/healthz", timeout=30).status_code == 200
    assert requests.get(server.base_url + "/fhir/metadata", timeout=30).status_code == 200


def test_bad_credentials_refused(server, authority, record):
    pid = record["pid"]
    gp = _actor("gp", pid)
    stranger = DevAuthority.create()
    long_ago = datetime.now(UTC) - timedelta(hours=10)
    bad_saml = {
        "expired": authority.saml_assertion(gp, not_before=long_ago, hours=1),
        "not yet valid": authority.saml_assertion(gp, not_before=datetime.now(UTC) + timedelta(hours=1)),
        "wrong audience": authority.saml_assertion(gp, audience="another-service"),
        "untrusted CA": stranger.saml_assertion(gp),
        "tampered": authority.saml_assertion(gp).replace(b"810001234567", b"810000000002"),
    }
    for what, assertion in bad_saml.items():
        client = XdsClient(server.base_url, security=saml.security_header(assertion))
        reply = client.stored_query("FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{pid}'"],
                                                      "$XDSDocumentEntryStatus": [APPROVED]})
        assert _is_auth_fault(reply), what
    token = authority.jwt(gp)
    head, body, signature = token.split(".")
    bad_jwt = {
        "expired": authority.jwt(gp, not_before=long_ago, hours=1),
        "wrong audience": authority.jwt(gp, audience="another-service"),
        "untrusted CA": stranger.jwt(gp),
        "tampered": ".".join([head, body[:-4] + ("AAAA" if body[-4:] != "AAAA" else "BBBB"), signature]),
        "not a bearer": None,
    }
    for what, bad in bad_jwt.items():
        headers = {"Authorization": f"Bearer {bad}" if bad else f"Basic {token}"}
        response = requests.get(f"{server.base_url}/fhir/DocumentReference", headers=headers, timeout=30,
                                params={"status": "current"})
        assert response.status_code == 401, what
    # the same credentials, well formed, are accepted
    assert _find(_soap(server, authority, gp), pid)
    # ... once: a replayed assertion is refused
    replaying = XdsClient(server.base_url, security=saml.security_header(authority.saml_assertion(gp)))
    assert _find(replaying, pid)
    reply = replaying.stored_query("FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{pid}'"],
                                                     "$XDSDocumentEntryStatus": [APPROVED]})
    assert _is_auth_fault(reply) and b"replay" in etree.tostring(reply.body)
    assert _mhd(server, _bearer(authority, gp), pid)["entry"]


# ------------------------------------------------------------------ masking through every door
def test_masked_document_never_reaches_the_wrong_actor(server, authority, record):
    pid = record["pid"]
    normal, masked, hidden = record["normal"], record["masked"], record["hidden"]
    expected = {   # actor -> what it may see (docs/access.md)
        "gp": {normal, masked, hidden},          # médecin traitant sees MASQUE_PS
        "doctor": {normal, masked, hidden},      # the author sees their own masked document
        "nurse": {normal, hidden},               # class 10 allowed for nurses; MASQUE_PS is not
        "pharmacist": set(),                     # class 10 (compte rendu) not in the pharmacist's classes
        "occupational": set(),                   # occupational medicine: always refused
        "patient": {normal, masked},             # INVISIBLE_PATIENT hidden from the patient
        "guardian": {normal, masked},
    }
    for name, allowed in expected.items():
        actor = _actor(name, pid)
        soap = _soap(server, authority, actor)
        assert set(_find(soap, pid)) == allowed, f"ITI-18 for {name}"
        for uid in (normal, masked, hidden):
            retrieved, documents = soap.retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [uid])
            if uid in allowed:
                assert retrieved.status == "Success" and documents[uid] is not None, f"ITI-43 {name} {uid}"
            else:
                assert retrieved.status == "Failure", f"ITI-43 {name} {uid}"
                assert retrieved.error_codes == ["XDSDocumentUniqueIdError"]
                assert not documents
        bundle = _mhd(server, _bearer(authority, actor), pid)
        assert set(_mhd_uids(bundle)) == allowed, f"ITI-67 for {name}"
        assert bundle.get("total", len(bundle.get("entry", []))) == len(allowed), f"ITI-67 total for {name}"

    # ITI-68 and DocumentReference read of the masked document: the author has the URLs,
    # a nurse asking for them gets "not found", exactly as for an unknown document.
    author_view = _mhd(server, _bearer(authority, _actor("doctor", pid)), pid)
    by_uid = {e["resource"]["masterIdentifier"]["value"].removeprefix("urn:oid:"): e for e in author_view["entry"]}
    binary_url = by_uid[masked]["resource"]["content"][0]["attachment"]["url"]
    reference_url = by_uid[masked]["fullUrl"]
    nurse = _bearer(authority, _actor("nurse", pid))
    assert requests.get(binary_url, headers=nurse, timeout=30).status_code == 404
    assert requests.get(reference_url, headers=nurse, timeout=30).status_code == 404
    doctor = _bearer(authority, _actor("doctor", pid))
    assert requests.get(binary_url, headers=doctor, timeout=30).content == b"<doc>masked</doc>"
    assert requests.get(reference_url, headers=doctor, timeout=30).status_code == 200


def test_blocked_professional_and_closed_record(server, authority):
    pid = _patient(server)
    doctor = _actor("doctor", pid)
    docs = [_doc(pid, "d1", doctor.id)]
    reply = _soap(server, authority, doctor).provide_and_register(
        F.submission(pid, docs, contents=False), {"d1": b"<doc>d1</doc>"})
    assert reply.status == "Success", reply.error_codes
    nurse = _actor("nurse", pid)
    assert _find(_soap(server, authority, nurse), pid) == [docs[0].unique_id]
    records = Records(server.services.registry)
    records.block(pid, nurse.id)
    assert _find(_soap(server, authority, nurse), pid) == []
    assert _mhd(server, _bearer(authority, nurse), pid).get("entry", []) == []
    # a blocked professional cannot submit either
    more = [_doc(pid, "d2", nurse.id)]
    refused = _soap(server, authority, nurse).provide_and_register(
        F.submission(pid, more, contents=False), {"d2": b"<doc>d2</doc>"})
    assert refused.status == "Failure" and refused.error_codes == ["XDSPolicyViolation"]
    # a closed record is refused to every professional, the médecin traitant too
    records.close(pid)
    assert _find(_soap(server, authority, _actor("gp", pid)), pid) == []
    # the patient still reads their closed record
    assert _find(_soap(server, authority, _actor("patient", pid)), pid) == [docs[0].unique_id]


def test_no_consent_no_record(server, authority):
    pid = _patient(server, consent=False)
    gp = _actor("gp", pid)
    reply = _soap(server, authority, gp).provide_and_register(
        F.submission(pid, [_doc(pid, "d1", gp.id)], contents=False), {"d1": b"<doc>d1</doc>"})
    assert reply.status == "Failure" and reply.error_codes == ["XDSPolicyViolation"]
    Records(server.services.registry).open(pid)
    reply = _soap(server, authority, gp).provide_and_register(
        F.submission(pid, [_doc(pid, "d1", gp.id)], contents=False), {"d1": b"<doc>d1</doc>"})
    assert reply.status == "Success", reply.error_codes


# ------------------------------------------------------------------ emergency access and audit
def _audit_rows(server, pid, since):
    return [r for r in audit.events(server.services, patient_id=pid, limit=1000) if r["pk"] > since]


def _last_pk(server) -> int:
    rows = audit.events(server.services, limit=1)
    return rows[0]["pk"] if rows else 0


def test_emergency_access_allowed_and_audited(server, authority, record, capsys):
    pid = record["pid"]
    since = _last_pk(server)
    emergency = _actor("emergency", pid)
    # bris de glace: allowed (but MASQUE_PS stays masked), and audited with its reason
    assert set(_find(_soap(server, authority, emergency), pid)) == {record["normal"], record["hidden"]}
    rows = _audit_rows(server, pid, since)
    assert len(rows) == 1
    row = rows[0]
    assert (row["action"], row["actor_id"], row["purpose"], row["outcome"]) == \
        ("ITI-18", emergency.id, "bris_de_glace", 0)
    assert row["reason"] == emergency.reason and row["decision"] == "filtered"
    assert set(row["objects"]) == {record["normal"], record["hidden"]}
    notices = audit.notifications(server.services, row["patient_pk"])
    assert any(n["audit_pk"] == row["pk"] and n["kind"] == "bris_de_glace" for n in notices)
    from partage.cli import main
    command = ["access", "notifications", str(pid), "--data", str(server.data_dir), "--mark-sent"]
    if server.services.settings.database_url:
        command += ["--database", server.services.settings.database_url]
    capsys.readouterr()
    assert main(command) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["pk"] in {n["audit_pk"] for n in printed} and emergency.reason in printed[-1]["message"]
    assert main(command) == 0 and capsys.readouterr().out == ""     # sent: not owed any more

    # without a reason: refused
    assert _find(_soap(server, authority, dataclasses.replace(emergency, reason="")), pid) == []
    # centre 15 for the SAMU regulator
    assert record["normal"] in _find(_soap(server, authority, _actor("regulator", pid)), pid)

    # the patient reads "who looked at my record" through FHIR AuditEvent
    response = requests.get(f"{server.base_url}/fhir/AuditEvent", timeout=30,
                            headers=_bearer(authority, _actor("patient", pid)))
    assert response.status_code == 200
    events = [e["resource"] for e in response.json()["entry"]]
    mine = [e for e in events if e["id"] == str(row["pk"])]
    assert mine and mine[0]["agent"][0]["who"]["identifier"]["value"] == emergency.id
    assert mine[0]["purposeOfEvent"][0]["coding"][0]["code"] == "bris_de_glace"
    from fhir.resources.R4B.auditevent import AuditEvent
    AuditEvent.model_validate(mine[0])
    # an administrator reads any patient's trail
    admin = requests.get(f"{server.base_url}/fhir/AuditEvent", timeout=30,
                         params={"patient.identifier": F.token(F.cx(pid))},
                         headers=_bearer(authority, _actor("auditor", pid)))
    assert admin.status_code == 200
    assert str(row["pk"]) in {e["resource"]["id"] for e in admin.json()["entry"]}
    one = requests.get(f"{server.base_url}/fhir/AuditEvent/{row['pk']}", timeout=30,
                       headers=_bearer(authority, _actor("patient", pid)))
    assert one.status_code == 200 and one.json()["id"] == str(row["pk"])
    # a professional may not read the audit trail; another patient sees nothing of this one
    assert requests.get(f"{server.base_url}/fhir/AuditEvent", timeout=30,
                        headers=_bearer(authority, _actor("gp", pid))).status_code == 403
    other = _patient(server)
    theirs = requests.get(f"{server.base_url}/fhir/AuditEvent", timeout=30,
                          headers=_bearer(authority, _actor("patient", other))).json()
    assert all(e["resource"]["id"] != str(row["pk"]) for e in theirs.get("entry", []))
    assert requests.get(f"{server.base_url}/fhir/AuditEvent/{row['pk']}", timeout=30,
                        headers=_bearer(authority, _actor("patient", other))).status_code == 404

    # the patient opposes bris de glace: refused from then on, and the refusal is audited
    Records(server.services.registry).oppose_bris_de_glace(pid)
    try:
        since = _last_pk(server)
        assert _find(_soap(server, authority, emergency), pid) == []
        rows = _audit_rows(server, pid, since)
        assert len(rows) == 1 and rows[0]["decision"] == "deny" and rows[0]["outcome"] == 4
        assert "opposed" in rows[0]["detail"]
    finally:
        Records(server.services.registry).oppose_bris_de_glace(pid, False)


def test_the_audit_trail_is_searched_by_date_and_says_what_it_applied(server, authority, record):
    """AuditEvent?date=... (AuditEvent.recorded, FHIR prefixes); a parameter it does not know
    is refused under Prefer: handling=strict, else ignored and left out of the self link."""
    pid = record["pid"]
    auditor = _bearer(authority, _actor("auditor", pid))
    mine = {"patient.identifier": F.token(F.cx(pid))}

    def ids(params, headers=auditor):
        """The events found, among those before the test's first search (each search is an
        access to the record, audited too)."""
        answer = requests.get(f"{server.base_url}/fhir/AuditEvent", params=params, timeout=30, headers=headers)
        assert answer.status_code == 200, answer.text
        found = {e["resource"]["id"] for e in answer.json().get("entry", [])}
        return {i for i in found if before is None or int(i) <= before}, answer.json()

    before = None
    everything, _ = ids(mine)
    assert everything
    before = max(int(i) for i in everything)
    assert ids({**mine, "date": "ge2000-01-01"})[0] == everything
    assert ids({**mine, "date": "lt2000-01-01"})[0] == set()
    assert ids({**mine, "date": "ge2999-01-01"})[0] == set()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    on_the_day = ids({**mine, "date": today})[0]   # eq: the day's events, all of them (made today)
    if datetime.now(UTC).strftime("%Y-%m-%d") == today:   # not across midnight
        assert on_the_day == everything
    assert ids({**mine, "date": f"ne{today}"})[0].isdisjoint(on_the_day)
    assert ids({**mine, "date": ["ge2000-01-01", "lt2000-01-02"]})[0] == set()   # repeated: all hold
    bad = requests.get(f"{server.base_url}/fhir/AuditEvent", params={**mine, "date": "ge2024-99"},
                       timeout=30, headers=auditor)
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    found, bundle = ids({**mine, "actor": "someone"})   # unknown: ignored, not in the self link
    assert found == everything and "actor=" not in bundle["link"][0]["url"]
    assert "patient.identifier=" in bundle["link"][0]["url"]
    strict = requests.get(f"{server.base_url}/fhir/AuditEvent", params={**mine, "actor": "someone"}, timeout=30,
                          headers={**auditor, "Prefer": "handling=strict"})
    assert strict.status_code == 400 and "actor" in strict.text


def test_each_access_one_audit_record(server, authority, record):
    pid = record["pid"]
    nurse = _actor("nurse", pid)
    since = _last_pk(server)
    _find(_soap(server, authority, nurse), pid)
    _soap(server, authority, nurse).retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [record["masked"]])
    _mhd(server, _bearer(authority, nurse), pid)
    requests.get(f"{server.base_url}/fhir/DocumentReference", params={"status": "current"}, timeout=30)
    rows = [r for r in audit.events(server.services, limit=1000) if r["pk"] > since]
    assert [(r["action"], r["decision"]) for r in reversed(rows)] == [
        ("ITI-18", "filtered"), ("ITI-43", "filtered"), ("ITI-67", "filtered"),
        ("ITI-67", "unauthenticated")]
    assert all(r["actor_id"] == nurse.id for r in rows[1:])
    assert record["masked"] not in {u for r in rows for u in r["objects"]}


def test_wsse_header_with_two_assertions_refused(server, authority, record):
    gp = _actor("gp", record["pid"])
    header = saml.security_header(authority.saml_assertion(gp))
    header.append(etree.fromstring(authority.saml_assertion(gp)))
    reply = XdsClient(server.base_url, security=header).stored_query(
        "FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{record['pid']}'"],
                          "$XDSDocumentEntryStatus": [APPROVED]})
    assert _is_auth_fault(reply)


def test_patient_identity_follows_the_record_policy(server, authority, record):
    pid = record["pid"]
    params = {"identifier": F.token(F.cx(pid))}

    def search(name, for_pid=pid):
        response = requests.get(f"{server.base_url}/fhir/Patient", params=params, timeout=30,
                                headers=_bearer(authority, _actor(name, for_pid)))
        assert response.status_code == 200, response.text
        return response.json().get("entry", [])

    found = search("nurse")
    assert len(found) == 1
    rid = found[0]["resource"]["id"]
    assert len(search("patient")) == 1
    assert search("occupational") == [] and search("auditor") != []
    assert search("patient", for_pid=_patient(server)) == []    # another patient
    read = f"{server.base_url}/fhir/Patient/{rid}"
    assert requests.get(read, headers=_bearer(authority, _actor("gp", pid)), timeout=30).status_code == 200
    assert requests.get(read, headers=_bearer(authority, _actor("occupational", pid)), timeout=30).status_code == 404
    created = requests.post(f"{server.base_url}/fhir/Patient", timeout=30,
                            headers=_bearer(authority, _actor("pharmacist", pid)),
                            json={"resourceType": "Patient", "identifier": [
                                {"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "279035121519999"}]})
    assert created.status_code == 403
    # the record web page is a door too: refused without credentials, audited once per view
    assert requests.get(f"{server.base_url}/dossier/{rid}", timeout=30).status_code == 401
    since = _last_pk(server)
    page = requests.get(f"{server.base_url}/dossier/{rid}", timeout=30, headers=_bearer(authority, _actor("gp", pid)))
    assert page.status_code == 200
    rows = [r for r in audit.events(server.services, limit=20) if r["pk"] > since]
    assert [(r["action"], r["actor_id"], r["patient_id"] == str(pid)) for r in rows] == [
        ("page-record", _actor("gp", pid).id, True)]


def test_patient_feed_is_audited(tmp_path):
    """ITI-8 over MLLP: one audit record per message, accepted or refused."""
    from partage.hl7.routing import route

    services = Services.open(Settings(data_dir=tmp_path / "data"))
    try:
        pid = F.patient_id()
        ok = route(services, f"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|||{pid}||DOE^JOHN\r")
        bad = route(services, "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|2|P|2.5\rPID|||\r")
        assert "MSA|AA" in ok and "MSA|AA" not in bad
        rows = audit.events(services, limit=10)
        assert [(r["action"], r["outcome"], r["actor_id"]) for r in rows] == [
            ("ITI-8", 4, "patient-identity-feed"), ("ITI-8", 0, "patient-identity-feed")]
        assert rows[1]["patient_id"] == str(pid) and rows[1]["patient_pk"] is not None
    finally:
        services.close()


# ------------------------------------------------------------------ signed submission sets
def _signed(pid, author_id, authority, payloads):
    from partage.access.signatures import sign_submission

    docs = [_doc(pid, name, author_id) for name in payloads]
    request = F.submission(pid, docs, payload=None)
    for doc in docs:
        data = payloads[doc.entry_uuid]
        import hashlib
        import io

        from partage.metadata.model import DocumentContent
        request.contents[doc.entry_uuid] = DocumentContent(file=io.BytesIO(data), size=len(data),
                                                           sha1=hashlib.sha1(data).hexdigest())
        doc.hash, doc.size = "", None
    signature = sign_submission(request, authority.key, authority.cert)
    sent = {eid: c.file.getvalue() for eid, c in request.contents.items()}
    return request, signature, sent


def test_signed_submission_verified_and_tampering_refused(server, authority):
    pid = _patient(server)
    doctor = _actor("doctor", pid)
    payloads = {"s1": b"<doc>first</doc>", "s2": b"<doc>second</doc>"}
    request, signature, sent = _signed(pid, doctor.id, authority, payloads)
    reply = _soap(server, authority, doctor).provide_and_register(request, sent)
    assert reply.status == "Success", [e.get("codeContext") for e in reply.body.iter("{*}RegistryError")]
    assert signature.unique_id in _find(_soap(server, authority, _actor("gp", pid)), pid)

    # a document changed after signing: the whole submission is refused
    request, _, sent = _signed(pid, doctor.id, authority, payloads)
    sent["s2"] = b"<doc>tampered</doc>"
    reply = _soap(server, authority, doctor).provide_and_register(request, sent)
    assert reply.status == "Failure"
    assert reply.error_codes == ["XDSRepositoryMetadataError"]
    assert b"differs from the signed one" in etree.tostring(reply.body)
    # a document dropped from the set after signing
    request, _, sent = _signed(pid, doctor.id, authority, payloads)
    dropped = request.documents.pop(1)
    request.associations = [a for a in request.associations if dropped.entry_uuid not in (a.target_uuid,)]
    del sent[dropped.entry_uuid]
    reply = _soap(server, authority, doctor).provide_and_register(request, sent)
    assert reply.status == "Failure" and "XDSRepositoryMetadataError" in reply.error_codes
    # signed by a CA the server does not trust
    request, _, sent = _signed(pid, doctor.id, DevAuthority.create(), payloads)
    reply = _soap(server, authority, doctor).provide_and_register(request, sent)
    assert reply.status == "Failure" and "XDSRepositoryMetadataError" in reply.error_codes


# ------------------------------------------------------------------ the patient manages masking (ITI-57)
def _update(client, pid, new_doc):
    from partage.ebxml import constants as XC
    from partage.ebxml import ebrim
    from partage.metadata.model import (
        Association,
        AssociationType,
        SubmissionRequest,
        SubmissionSet,
    )
    ss = SubmissionSet(entry_uuid="ss", unique_id=F.oid(), source_id="1.2.250.1.999.2", patient_id=pid,
                       submission_time=DTM("20240401"), content_type_code=Code("04", "1.2.250.1.213.1.1.4.2.2"))
    new_doc = copy.deepcopy(new_doc)
    assoc = Association(entry_uuid="hm", association_type=AssociationType.HAS_MEMBER, source_uuid="ss",
                        target_uuid=new_doc.entry_uuid, submission_set_status="Original", previous_version="1")
    submit = etree.Element(f"{{{XC.LCM}}}SubmitObjectsRequest", nsmap={"lcm": XC.LCM, "rim": XC.RIM})
    ebrim.write_object_list(SubmissionRequest(ss, [new_doc], [], [assoc]).objects(), submit)
    return client.call(client.registry, XC.ACTION_UPDATE, submit)


def test_patient_masks_a_document_and_nothing_else(server, authority):
    pid = _patient(server)
    doctor = _actor("doctor", pid)
    reply = _soap(server, authority, doctor).provide_and_register(
        F.submission(pid, [_doc(pid, "m1", doctor.id)], contents=False), {"m1": b"<doc>m1</doc>"})
    assert reply.status == "Success", reply.error_codes
    patient = _soap(server, authority, _actor("patient", pid))
    reply = patient.stored_query("FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{pid}'"],
                                                   "$XDSDocumentEntryStatus": [APPROVED]})
    [current] = objects_of(reply)
    nurse = _soap(server, authority, _actor("nurse", pid))
    assert _find(nurse, pid) == [current.unique_id]

    def version(**changes):
        new = copy.deepcopy(current)
        new.lid, new.entry_uuid, new.version = current.lid or current.entry_uuid, "newversion", ""
        for key, value in changes.items():
            setattr(new, key, value)
        return new

    # a professional who is not the author may not update it
    refused = _update(nurse, pid, version(title="changed by the nurse"))
    assert refused.status == "Failure" and refused.error_codes == ["XDSPolicyViolation"]
    # anything but masking is refused to the patient
    retitled = _update(patient, pid, version(title="changed by the patient"))
    assert retitled.status == "Failure" and retitled.error_codes == ["XDSPolicyViolation"]
    unhidden = _update(patient, pid, version(confidentiality_codes=[
        *current.confidentiality_codes, Code("INVISIBLE_REPRESENTANTS_LEGAUX", CONF)]))
    assert unhidden.status == "Failure" and unhidden.error_codes == ["XDSPolicyViolation"]
    # masking is the patient's to decide: the nurse no longer sees the document
    masked = _update(patient, pid, version(confidentiality_codes=[*current.confidentiality_codes,
                                                                   Code("MASQUE_PS", CONF)]))
    assert masked.status == "Success", masked.error_codes
    assert _find(nurse, pid) == []
    assert _find(_soap(server, authority, _actor("gp", pid)), pid) == [current.unique_id]


# ------------------------------------------------------------------ the patient's Consent (FHIR)
def test_patient_manages_consent_blocks_and_emergency_opposition(server, authority):
    pid = _patient(server, consent=False)
    doctor, nurse = _actor("doctor", pid), _actor("nurse", pid)
    patient = _bearer(authority, _actor("patient", pid))
    url = f"{server.base_url}/fhir/Consent"

    def consent(headers=patient):
        response = requests.get(url, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["entry"][0]["resource"]

    current = consent()
    from fhir.resources.R4B.consent import Consent
    Consent.model_validate(current)
    assert current["status"] == "proposed"
    # the patient consents: the record opens, with a médecin traitant, one professional blocked
    # and no emergency access
    wanted = {**current, "status": "active",
              "performer": [{"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": _actor("gp", pid).id}}],
              "provision": {"type": "permit", "provision": [
                  {"type": "deny", "actor": [{"role": {"coding": [{"code": "PRCP"}]}, "reference": {
                      "identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": nurse.id}}}]},
                  {"type": "deny", "purpose": [{"system": "urn:oid:1.2.250.1.213.1.1.4.248",
                                                "code": "bris_de_glace"}]}]}}
    response = requests.put(f"{url}/{current['id']}", json=wanted, headers=patient, timeout=30)
    assert response.status_code == 200, response.text
    state = Records(server.services.registry).state(pid)
    assert (state.status, state.medecin_traitant, state.blocked, state.bdg_opposed) == \
        ("open", _actor("gp", pid).id, frozenset({nurse.id}), True)
    reply = _soap(server, authority, doctor).provide_and_register(
        F.submission(pid, [_doc(pid, "c1", doctor.id)], contents=False), {"c1": b"<doc>c1</doc>"})
    assert reply.status == "Success", reply.error_codes
    assert _find(_soap(server, authority, nurse), pid) == []                   # blocked
    assert _find(_soap(server, authority, _actor("emergency", pid)), pid) == []  # opposed
    assert len(_find(_soap(server, authority, doctor), pid)) == 1
    # the médecin traitant cannot be blocked; another patient cannot touch this record
    bad = {**wanted, "provision": {"type": "permit", "provision": [{"type": "deny", "actor": [{"role": {"coding": [{"code": "PRCP"}]}, "reference": {
        "identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": _actor("gp", pid).id}}}]}]}}
    assert requests.put(f"{url}/{current['id']}", json=bad, headers=patient, timeout=30).status_code == 422
    other = _bearer(authority, _actor("patient", _patient(server)))
    assert requests.put(f"{url}/{current['id']}", json=wanted, headers=other, timeout=30).status_code in (403, 404)
    assert requests.get(url, headers=_bearer(authority, doctor), timeout=30).status_code == 403
    # lifting the block and the opposition, then closing the record
    response = requests.put(f"{url}/{current['id']}", headers=patient, timeout=30,
                            json={**wanted, "status": "inactive", "provision": {"type": "permit"}})
    assert response.status_code == 200, response.text
    assert consent()["status"] == "inactive"
    state = Records(server.services.registry).state(pid)
    assert (state.status, state.blocked, state.bdg_opposed) == ("closed", frozenset(), False)
    assert _find(_soap(server, authority, doctor), pid) == []
    rows = audit.events(server.services, patient_id=pid, limit=100)
    updates = [(r["outcome"], r["actor_kind"]) for r in reversed(rows) if r["action"] == "consent-update"]
    assert updates == [(0, "patient"), (4, "patient"), (0, "patient")]   # the 422 too


def test_only_the_author_removes_a_document(server, authority):
    """ITI-86: the bytes of a document are removed by its author, not by another professional
    with access to the record, nor by the patient (who masks instead)."""
    from partage.ebxml import constants as XC

    pid = _patient(server)
    doctor = _actor("doctor", pid)
    docs = [_doc(pid, "r1", doctor.id)]
    reply = _soap(server, authority, doctor).provide_and_register(
        F.submission(pid, docs, contents=False), {"r1": b"<doc>r1</doc>"})
    assert reply.status == "Success", reply.error_codes

    def remove(name):
        body = etree.Element(f"{{{XC.RMD}}}RemoveDocumentsRequest", nsmap={"rmd": XC.RMD, "xdsb": XC.XDSB})
        item = etree.SubElement(body, f"{{{XC.XDSB}}}DocumentRequest")
        etree.SubElement(item, f"{{{XC.XDSB}}}RepositoryUniqueId").text = DEFAULT_REPOSITORY_UNIQUE_ID
        etree.SubElement(item, f"{{{XC.XDSB}}}DocumentUniqueId").text = docs[0].unique_id
        client = _soap(server, authority, _actor(name, pid))
        return client.call(client.repository, XC.ACTION_REMOVE_DOCUMENTS, body)

    for name in ("gp", "nurse", "patient"):
        refused = remove(name)
        assert refused.status == "Failure" and refused.error_codes == ["XDSPolicyViolation"], name
    assert _soap(server, authority, doctor).retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [docs[0].unique_id])[1]
    assert remove("doctor").status == "Success"
    retrieved, documents = _soap(server, authority, doctor).retrieve(DEFAULT_REPOSITORY_UNIQUE_ID,
                                                                     [docs[0].unique_id])
    assert retrieved.status == "Failure" and not documents
