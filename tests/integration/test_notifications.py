"""Notifications through real sockets: a `partage serve` WITHOUT --insecure-dev (a CA made by
the tests), subscribers' HTTP endpoints and an SMTP server run by the test.

DSUB (ITI-52 / ITI-53) and DSUBm (FHIR Subscription, rest-hook) after ITI-41 and ITI-65; the
one visibility gate at delivery time (masked documents, a block made after registration);
the patients' e-mails on bris de glace and centre 15 accesses; credentials; rollbacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from email.message import EmailMessage

import pytest
import requests
from lxml import etree

from partage.access import audit, saml
from partage.access.credentials import sample_actors
from partage.config import Settings
from partage.ebxml import constants as C
from partage.ebxml.ebrim import read_object_list
from partage.hl7.mllp import MllpClient
from partage.metadata.datatypes import XCN, XON
from partage.metadata.model import Code, DocumentEntry
from partage.registry import outbox
from partage.registry.access_state import Records
from partage.services import Services
from tests import factories as F
from tests.integration.test_mhd import provide_bundle
from tests.notify_support import (
    LCM,
    RIM,
    WSNT,
    Endpoint,
    SmtpServer,
    fhir_subscription,
    notified_documents,
    subscribe,
    subscribe_body,
    subscription_address,
    unsubscribe,
)
from tests.support import LiveServer
from tests.xdsclient import XdsClient

CONF = "1.2.250.1.213.1.1.4.13"
SOAP = "{http://www.w3.org/2003/05/soap-envelope}"
# How long a delivery is waited for: a bound that a loaded machine cannot break, not the
# latency (the 2 s), which each test prints and docs/performance.md measures.
DELIVERY_S = 30.0
QUIET_S = 2.5             # how long "nothing more arrives" is watched, once what was due came
FHIR_JSON = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}


def wait_for_log(live: LiveServer, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in live.log():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the server log:\n{live.log()}")


@pytest.fixture(scope="module")
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory, authority, module_database_url, smtp):
    data = tmp_path_factory.mktemp("notify") / "data"
    url = module_database_url
    env = {"PARTAGE_SMTP_HOST": "127.0.0.1", "PARTAGE_SMTP_PORT": str(smtp.port),
           "PARTAGE_MAIL_FROM": "dmp-notifications@example.org"}
    with contextlib.ExitStack() as stack:
        live = stack.enter_context(LiveServer(data, insecure_dev=False, database_url=url, env=env,
                                              extra_args=["--trust", str(authority.directory / "ca.pem")]))
        live.services = Services.open(Settings(data_dir=data, database_url=url), migrate=False)
        stack.callback(live.services.close)
        wait_for_log(live, "notification sender started")
        yield live


# ------------------------------------------------------------------ helpers
def _actor(name: str, pid, **changes):
    actor = sample_actors(pid)[name]
    return dataclasses.replace(actor, **changes) if changes else actor


def _soap(server, authority, actor) -> XdsClient:
    return XdsClient(server.base_url, security=lambda: saml.security_header(authority.saml_assertion(actor)))


def _bearer(authority, actor) -> dict:
    return {"Authorization": f"Bearer {authority.jwt(actor)}"}


def _patient(server, *, email: str = ""):
    """A patient fed by ITI-8 over MLLP (PID-13 carrying the e-mail), record opened, GP as
    médecin traitant."""
    pid = F.patient_id()
    telecom = f"^NET^Internet^{email}" if email else ""
    message = "\r".join([
        f"MSH|^~\\&|DPI|HOPITAL|PARTAGE|PARTAGE|20240101120000||ADT^A01^ADT_A01|{uuid.uuid4().hex[:10]}|P|2.5",
        "EVN|A01|20240101120000",
        f"PID|||{pid.format()}||DUPONT^JEANNE||19700101|F|||||{telecom}",
        "PV1||O"]) + "\r"
    with MllpClient("127.0.0.1", server.mllp_port) as mllp:
        assert "MSA|AA" in mllp.send(message)
    Records(server.services.registry).open(pid, medecin_traitant=_actor("gp", pid).id)
    return pid


def _doc(pid, entry_id, author, *, conf: str = "", title: str = "Compte rendu") -> DocumentEntry:
    doc = F.document(pid, entry_id, title=title)
    doc.authors[0].person = XCN.parse(f"{author.id}^AUTEUR^Test^^^Dr^^^&1.2.250.1.71.4.2.1&ISO")
    if conf:
        doc.confidentiality_codes = [Code("N", "2.16.840.1.113883.5.25", "Normal"), Code(conf, CONF, conf)]
    return doc


def _submit(server, authority, author, pid, docs) -> float:
    """ITI-41 by `author`; returns the time the registration was answered."""
    reply = _soap(server, authority, author).provide_and_register(
        F.submission(pid, docs, contents=False), {d.entry_uuid: f"<doc>{d.unique_id}</doc>".encode() for d in docs})
    assert reply.status == "Success", reply.error_codes
    return time.monotonic()


def _subscribe(server, authority, actor, endpoint, pid, **kw) -> str:
    reply = subscribe(_soap(server, authority, actor), server.base_url, endpoint.url, patient=pid.format(), **kw)
    assert reply.http_status == 200 and reply.body.tag == f"{WSNT}SubscribeResponse", _text(reply)
    return subscription_address(reply)


def _text(reply) -> str:
    return " ".join(reply.body.itertext())


def _fault(reply) -> str:
    assert reply.body.tag == f"{SOAP}Fault", reply.body.tag
    return reply.body.findtext(f"{SOAP}Code/{SOAP}Subcode/{SOAP}Value") or ""


def _unique_ids(received) -> list[str]:
    envelope = received.soap()
    objects = envelope.body.find(f"{WSNT}NotificationMessage/{WSNT}Message/{LCM}SubmitObjectsRequest/{RIM}RegistryObjectList")
    return [d.unique_id for d in read_object_list(objects).documents]


# ------------------------------------------------------------------ DSUB
def test_dsub_notify_within_two_seconds_of_iti41(server, authority):
    pid = _patient(server)
    gp, doctor = _actor("gp", pid), _actor("doctor", pid)
    with Endpoint() as full, Endpoint() as minimal:
        address = _subscribe(server, authority, gp, full, pid)
        assert address.startswith(f"{server.base_url}/xds/subscription/")
        _subscribe(server, authority, gp, minimal, pid, topic="ihe:MinimalDocumentEntry")
        doc = _doc(pid, "d1", doctor, title="Lettre de liaison")
        answered = _submit(server, authority, doctor, pid, [doc])
        got = full.wait(1, DELIVERY_S)
        assert len(got) == 1, "no ITI-53 Notify after the ITI-41 answer"
        print(f"ITI-41 answered -> Notify received: {got[0].at - answered:.3f} s")
        envelope = got[0].soap()
        assert envelope.action == C.ACTION_NOTIFY and envelope.message_id.startswith("urn:uuid:")
        topic, ids = notified_documents(got[0])
        assert topic == "ihe:FullDocumentEntry" and len(ids) == 1
        assert _unique_ids(got[0]) == [doc.unique_id]
        message = envelope.body.find(f"{WSNT}NotificationMessage")
        assert message.findtext(f"{WSNT}SubscriptionReference/{{{C.WSA}}}Address") == address
        small = minimal.wait(1, DELIVERY_S)
        assert len(small) == 1
        topic, refs = notified_documents(small[0])
        assert topic == "ihe:MinimalDocumentEntry" and refs == ids
        assert small[0].soap().body.find(f".//{RIM}ExtrinsicObject") is None   # minimal: ObjectRefs only
        assert small[0].message_id != got[0].message_id                       # one id per (event, subscriber)
    # the delivery is audited: the GP read this document, by ITI-53 (written once the endpoint answered)
    deadline = time.monotonic() + DELIVERY_S
    while len(rows := [r for r in audit.events(server.services, patient_id=pid, limit=100)
                       if r["action"] == "ITI-53"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(rows) == 2 and {r["actor_id"] for r in rows} == {gp.id}
    assert all(r["objects"] == [doc.unique_id] and r["outcome"] == 0 for r in rows)
    assert all(full.url in r["detail"] or minimal.url in r["detail"] for r in rows)


def test_dsub_notify_carries_the_consumer_reference_parameters(server, authority):
    """WS-Addressing 1.0 SOAP Binding 2.3: a message sent to an endpoint reference carries each
    of its reference parameters as a header block marked wsa:IsReferenceParameter="true" (the
    consumer routes its notifications on them); one too large is refused at Subscribe."""
    pid = _patient(server)
    gp, doctor = _actor("gp", pid), _actor("doctor", pid)
    with Endpoint() as endpoint:
        body = subscribe_body(endpoint.url, patient=pid.format())
        params = etree.SubElement(body.find(f"{WSNT}ConsumerReference"), f"{{{C.WSA}}}ReferenceParameters")
        route = etree.SubElement(params, "{urn:example:dmp}Route", nsmap={"ex": "urn:example:dmp"}, lane="cardio")
        route.text = "boîte-42"
        etree.SubElement(route, "{urn:example:dmp}Inner").text = "x"
        etree.SubElement(params, "{urn:example:other}Tenant").text = "t1"
        reply = _soap(server, authority, gp).call(f"{server.base_url}/xds/notification-broker",
                                                  C.ACTION_SUBSCRIBE, body)
        assert reply.http_status == 200 and reply.body.tag == f"{WSNT}SubscribeResponse", _text(reply)
        _submit(server, authority, doctor, pid, [_doc(pid, "rp1", doctor)])
        got = endpoint.wait(1, DELIVERY_S)
        assert len(got) == 1
        header = got[0].soap().header
        routed = header.find("{urn:example:dmp}Route")
        assert routed is not None and routed.text == "boîte-42" and routed.get("lane") == "cardio"
        assert routed.findtext("{urn:example:dmp}Inner") == "x"
        assert routed.get(f"{{{C.WSA}}}IsReferenceParameter") == "true"
        tenant = header.find("{urn:example:other}Tenant")
        assert tenant is not None and tenant.get(f"{{{C.WSA}}}IsReferenceParameter") == "true"
    big = subscribe_body("http://127.0.0.1:9/n", patient=pid.format())
    params = etree.SubElement(big.find(f"{WSNT}ConsumerReference"), f"{{{C.WSA}}}ReferenceParameters")
    etree.SubElement(params, "{urn:example:dmp}Blob").text = "x" * 5000
    reply = _soap(server, authority, gp).call(f"{server.base_url}/xds/notification-broker", C.ACTION_SUBSCRIBE, big)
    assert _fault(reply) == "wsnt:SubscribeCreationFailedFault", _text(reply)


def test_masked_document_not_notified_to_who_may_not_see_it(server, authority):
    """MASQUE_PS hides a document from professionals other than its authors and the médecin
    traitant: a nurse following the record is not told of it; its author is."""
    pid = _patient(server)
    nurse, doctor = _actor("nurse", pid), _actor("doctor", pid)
    with Endpoint() as nurse_endpoint, Endpoint() as author_endpoint:
        _subscribe(server, authority, nurse, nurse_endpoint, pid)
        _subscribe(server, authority, doctor, author_endpoint, pid)
        masked = _doc(pid, "masked", doctor, conf="MASQUE_PS", title="Document masqué")
        _submit(server, authority, doctor, pid, [masked])
        assert len(author_endpoint.wait(1, DELIVERY_S)) == 1            # its author sees it: notified
        normal = _doc(pid, "normal", doctor, title="Document visible")
        _submit(server, authority, doctor, pid, [normal])
        assert len(author_endpoint.wait(2, DELIVERY_S)) == 2
        assert len(nurse_endpoint.wait(1, DELIVERY_S)) == 1
        got = nurse_endpoint.wait(2, QUIET_S)
        assert [_unique_ids(r) for r in got] == [[normal.unique_id]]     # never the masked one
        assert masked.title not in b"".join(r.body for r in got).decode()
    # two registrations x two subscribers: the nurse's row for the masked document was skipped, unsent
    states = sorted(r.state for r in outbox.rows(server.services.registry, outbox.EVENTS)
                    if r.patient_id == pid.format())
    assert states == ["delivered", "delivered", "delivered", "skipped"]


def test_visibility_is_judged_at_delivery_time(server, authority):
    """A professional blocked by the patient after the registration, before the delivery,
    is not told about it."""
    pid = _patient(server)
    nurse, doctor = _actor("nurse", pid), _actor("doctor", pid)
    endpoint = Endpoint()                          # not started: the first attempts fail
    _subscribe(server, authority, nurse, endpoint, pid)
    doc = _doc(pid, "d1", doctor)
    _submit(server, authority, doctor, pid, [doc])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pending = [r for r in outbox.rows(server.services.registry, outbox.EVENTS) if r.patient_id == pid.format()]
        if pending and pending[0].last_error and pending[0].claimed_by is None:   # an attempt failed
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the sender never tried the unreachable endpoint")
    Records(server.services.registry).block(pid, nurse.id)
    with endpoint:
        deadline = time.monotonic() + DELIVERY_S   # the next attempt, whenever the sender makes it
        while time.monotonic() < deadline:
            [row] = [r for r in outbox.rows(server.services.registry, outbox.EVENTS) if r.patient_id == pid.format()]
            if row.state != "pending":
                break
            time.sleep(0.2)
        assert endpoint.received == []
    assert (row.state, row.last_error) == ("skipped", "nothing the subscriber may see matches")


def test_unsubscribe_stops_notifications_and_only_the_subscriber_may(server, authority):
    pid = _patient(server)
    gp, doctor = _actor("gp", pid), _actor("doctor", pid)
    with Endpoint() as endpoint:
        address = _subscribe(server, authority, gp, endpoint, pid)
        stranger = unsubscribe(_soap(server, authority, doctor), address)
        assert stranger.http_status == 400 and _fault(stranger) == "wsrf-r:ResourceUnknownFault"
        _submit(server, authority, doctor, pid, [_doc(pid, "d1", doctor)])
        assert len(endpoint.wait(1, DELIVERY_S)) == 1
        reply = unsubscribe(_soap(server, authority, gp), address)
        assert reply.http_status == 200 and reply.body.tag == f"{WSNT}UnsubscribeResponse"
        _submit(server, authority, doctor, pid, [_doc(pid, "d2", doctor)])
        assert len(endpoint.wait(2, QUIET_S)) == 1


def test_subscriptions_need_the_credentials_of_a_query(server, authority):
    pid = _patient(server)
    gp = _actor("gp", pid)
    url = "http://127.0.0.1:9/never"
    anonymous = subscribe(XdsClient(server.base_url), server.base_url, url, patient=pid.format())
    assert anonymous.http_status == 400 and _fault(anonymous) == "wsse:FailedAuthentication"
    emergency = subscribe(_soap(server, authority, _actor("emergency", pid)), server.base_url, url,
                          patient=pid.format())
    assert _fault(emergency) == "wsnt:SubscribeCreationFailedFault" and "standing" in _text(emergency)
    closed = F.patient_id()                       # known, but no record opened: like an unknown one
    with server.services.registry.write() as conn:
        server.services.registry.upsert_patient(conn, [closed])
    unknown = F.patient_id()
    answers = [subscribe(_soap(server, authority, gp), server.base_url, url, patient=p.format())
               for p in (closed, unknown)]
    assert [_fault(a) for a in answers] == ["wsnt:SubscribeCreationFailedFault"] * 2
    assert _text(answers[0]).replace(closed.format(), "X") == _text(answers[1]).replace(unknown.format(), "X")
    occupational = subscribe(_soap(server, authority, _actor("occupational", pid)), server.base_url, url,
                             patient=pid.format())
    assert _fault(occupational) == "wsnt:SubscribeCreationFailedFault"
    bad = [subscribe(_soap(server, authority, gp), server.base_url, url, patient=pid.format(), **kw)
           for kw in ({"topic": "ihe:FolderMetadata"}, {"slots": {"$XDSDocumentEntryTitle": ["'x'"]}},
                      {"termination": "2001-01-01T00:00:00Z"}, {"termination": "P1D"})]
    assert [_fault(b) for b in bad] == ["wsnt:TopicNotSupportedFault", "wsnt:InvalidFilterFault",
                                        "wsnt:UnacceptableInitialTerminationTimeFault",
                                        "wsnt:UnacceptableInitialTerminationTimeFault"]
    local = subscribe(_soap(server, authority, gp), server.base_url, "file:///etc/passwd", patient=pid.format())
    assert _fault(local) == "wsnt:SubscribeCreationFailedFault"
    metadata = subscribe(_soap(server, authority, gp), server.base_url, "http://169.254.169.254/latest/meta-data/",
                         patient=pid.format())              # link-local: never a destination by default
    assert _fault(metadata) == "wsnt:SubscribeCreationFailedFault" and "allowed" in _text(metadata)
    r = requests.post(f"{server.base_url}/fhir/Subscription", timeout=30, headers=FHIR_JSON,
                      json=fhir_subscription(url, f"DocumentReference?patient.identifier={F.token(pid)}"))
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"


def test_filters_narrow_the_notifications(server, authority):
    pid = _patient(server)
    gp, doctor = _actor("gp", pid), _actor("doctor", pid)
    with Endpoint() as by_type, Endpoint() as by_institution, Endpoint() as by_class:
        _subscribe(server, authority, gp, by_type, pid,
                   slots={"$XDSDocumentEntryTypeCode": ["('11488-4^^2.16.840.1.113883.6.1')"]})
        _subscribe(server, authority, gp, by_institution, pid,
                   slots={"$XDSDocumentEntryAuthorInstitution": ["'Clinique des Lilas'"]})
        _subscribe(server, authority, gp, by_class, pid,
                   slots={"$XDSDocumentEntryClassCode": ["('10^^1.2.250.1.213.1.1.4.1')"]})
        plain = _doc(pid, "plain", doctor)                       # type 11490-0, author at Hopital X
        typed = _doc(pid, "typed", doctor)
        typed.type_code = Code("11488-4", "2.16.840.1.113883.6.1", "Note de consultation")
        clinic = _doc(pid, "clinic", doctor)
        clinic.authors[0].institutions = [XON.parse("Clinique des Lilas", strict=False)]
        _submit(server, authority, doctor, pid, [plain, typed, clinic])
        assert [_unique_ids(r) for r in by_type.wait(1, DELIVERY_S)] == [[typed.unique_id]]
        assert [_unique_ids(r) for r in by_institution.wait(1, DELIVERY_S)] == [[clinic.unique_id]]
        assert sorted(_unique_ids(by_class.wait(1, DELIVERY_S)[0])) == sorted(
            d.unique_id for d in (plain, typed, clinic))


def test_rolled_back_registration_sends_nothing(server, authority):
    pid = _patient(server)
    gp, doctor = _actor("gp", pid), _actor("doctor", pid)
    with Endpoint() as endpoint:
        _subscribe(server, authority, gp, endpoint, pid)
        first = _doc(pid, "d1", doctor)
        _submit(server, authority, doctor, pid, [first])
        again = _doc(pid, "d2", doctor)
        again.unique_id = first.unique_id                 # same uniqueId, other bytes: refused in the transaction
        reply = _soap(server, authority, doctor).provide_and_register(
            F.submission(pid, [again], contents=False), {"d2": b"<doc>other bytes</doc>"})
        assert reply.status == "Failure" and "XDSNonIdenticalHash" in reply.error_codes
        assert len(endpoint.wait(1, DELIVERY_S)) == 1
        got = endpoint.wait(2, QUIET_S)
        assert [_unique_ids(r) for r in got] == [[first.unique_id]]
    # the refused registration's outbox row was rolled back with it
    assert len([r for r in outbox.rows(server.services.registry, outbox.EVENTS) if r.patient_id == pid.format()]) == 1


# ------------------------------------------------------------------ DSUBm (FHIR)
def _wait_status(server, authority, actor, rid: str, status: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = requests.get(f"{server.base_url}/fhir/Subscription/{rid}", headers=_bearer(authority, actor), timeout=30)
        assert r.status_code == 200, r.text
        if r.json()["status"] == status or time.monotonic() > deadline:
            return r.json()
        time.sleep(0.1)


def test_fhir_rest_hook_after_iti65(server, authority):
    pid = _patient(server)
    gp, doctor = _actor("gp", pid), _actor("doctor", pid)
    with Endpoint() as endpoint:
        resource = fhir_subscription(endpoint.url, f"DocumentReference?patient.identifier={F.token(pid)}",
                                     headers=["X-Recipient-Key: s3cret"])
        r = requests.post(f"{server.base_url}/fhir/Subscription", json=resource, timeout=30,
                          headers={**FHIR_JSON, **_bearer(authority, gp)})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["status"] == "requested" and created["end"] and r.headers["Location"].endswith(created["id"])
        handshake = endpoint.wait(1, 10)[0]
        bundle = json.loads(handshake.body)
        status = bundle["entry"][0]["resource"]
        assert bundle["type"] == "history" and status["resourceType"] == "Parameters"
        assert {p["name"]: p.get("valueCode") for p in status["parameter"]}["type"] == "handshake"
        assert handshake.headers["X-Recipient-Key"] == "s3cret"
        assert _wait_status(server, authority, gp, created["id"], "active")["status"] == "active"

        doc = _doc(pid, "d1", doctor, title="Compte rendu de consultation")
        r = requests.post(f"{server.base_url}/fhir", json=provide_bundle(doc, b"<doc>mhd</doc>", pid.id),
                          headers={**FHIR_JSON, **_bearer(authority, doctor)}, timeout=60)
        assert r.status_code == 200, r.text
        answered = time.monotonic()
        got = endpoint.wait(2, DELIVERY_S)
        assert len(got) == 2, "no ITI-112 notification after the ITI-65 answer"
        print(f"ITI-65 answered -> rest-hook notified: {got[1].at - answered:.3f} s")
        event = json.loads(got[1].body)
        assert got[1].headers["Content-Type"].startswith("application/fhir+json")
        assert event["type"] == "history" and event["id"]
        parameters = {p["name"]: p for p in event["entry"][0]["resource"]["parameter"]}
        assert parameters["type"]["valueCode"] == "event-notification"
        assert parameters["events-since-subscription-start"]["valueString"] == "1"
        parts = {p["name"]: p for p in parameters["notification-event"]["part"]}
        assert parts["event-number"]["valueString"] == "1"
        reference = event["entry"][1]["resource"]
        assert reference["resourceType"] == "DocumentReference"
        assert reference["masterIdentifier"]["value"].removeprefix("urn:oid:") == doc.unique_id
        assert parts["focus"]["valueReference"]["reference"] == event["entry"][1]["fullUrl"]
        status = requests.get(f"{server.base_url}/fhir/Subscription/{created['id']}/$status", timeout=30,
                              headers=_bearer(authority, gp)).json()
        assert {p["name"]: p.get("valueString") for p in status["parameter"]}["events-since-subscription-start"] == "1"

        # unsubscribe (status off): nothing more
        off = {**created, "status": "off"}
        r = requests.put(f"{server.base_url}/fhir/Subscription/{created['id']}", json=off, timeout=30,
                         headers={**FHIR_JSON, **_bearer(authority, gp)})
        assert r.status_code == 200 and r.json()["status"] == "off"
        _submit(server, authority, doctor, pid, [_doc(pid, "d2", doctor)])
        assert len(endpoint.wait(3, QUIET_S)) == 2


def test_fhir_subscription_refusals(server, authority):
    pid = _patient(server)
    gp, doctor = _actor("gp", pid), _actor("doctor", pid)
    headers = {**FHIR_JSON, **_bearer(authority, gp)}
    base = f"{server.base_url}/fhir/Subscription"
    criteria = f"DocumentReference?patient.identifier={F.token(pid)}"
    cases = [
        (fhir_subscription("http://127.0.0.1:9/x", criteria, topic="DSUBm-SubscriptionTopic-Folder-Subscription"), 400),
        (fhir_subscription("http://127.0.0.1:9/x", criteria + "&title=x"), 400),          # not a filter of the topic
        (fhir_subscription("http://127.0.0.1:9/x", "DocumentReference?type=x"), 400),     # patient-dependent: no patient
        (fhir_subscription("ftp://127.0.0.1/x", criteria), 400),
        (fhir_subscription("http://169.254.169.254/latest/meta-data/", criteria), 400),
        (fhir_subscription("http://127.0.0.1:9/x", criteria, end="2001-01-01T00:00:00Z"), 400),
        (fhir_subscription("http://127.0.0.1:9/x", criteria, payload="everything"), 400),
        (fhir_subscription("http://127.0.0.1:9/x", f"DocumentReference?patient.identifier={F.token(F.patient_id())}"), 403),
    ]
    for resource, status in cases:
        r = requests.post(base, json=resource, headers=headers, timeout=30)
        assert r.status_code == status, (resource, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    created = requests.post(base, json=fhir_subscription("http://127.0.0.1:9/x", criteria), headers=headers,
                            timeout=30).json()
    other = _bearer(authority, doctor)
    assert requests.get(f"{base}/{created['id']}", headers=other, timeout=30).status_code == 404
    assert requests.delete(f"{base}/{created['id']}", headers=other, timeout=30).status_code == 404
    mine = requests.get(base, headers=_bearer(authority, gp), timeout=30).json()
    assert created["id"] in {e["resource"]["id"] for e in mine["entry"]}
    theirs = requests.get(base, headers=other, timeout=30).json()
    assert created["id"] not in {e["resource"]["id"] for e in theirs.get("entry", [])}
    # an unreachable endpoint: the handshake fails and the subscription goes to error (DSUBm);
    # once the endpoint answers, the subscriber re-activates it (status requested)
    assert _wait_status(server, authority, gp, created["id"], "error")["status"] == "error"
    endpoint = Endpoint()                                  # not listening yet
    late = requests.post(base, json=fhir_subscription(endpoint.url, criteria), headers=headers, timeout=30).json()
    assert _wait_status(server, authority, gp, late["id"], "error")["error"].startswith("handshake")
    with endpoint:
        r = requests.put(f"{base}/{late['id']}", json={**late, "status": "requested"}, headers=headers, timeout=30)
        assert r.status_code == 200 and r.json()["status"] == "requested"
        assert _wait_status(server, authority, gp, late["id"], "active")["status"] == "active"


# ------------------------------------------------------------------ the patient's e-mails
def _mails_to(smtp, address: str) -> list[EmailMessage]:
    return [m for m in smtp.messages if m["To"] == address]


def _wait_mails(smtp, address: str, count: int, timeout: float) -> list[EmailMessage]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(_mails_to(smtp, address)) < count:
        smtp.wait(len(smtp.messages) + 1, 0.2)
    return _mails_to(smtp, address)


def test_bris_de_glace_read_emails_the_patient_once(server, authority, smtp):
    address = f"patient-{uuid.uuid4().hex[:8]}@example.org"
    pid = _patient(server, email=address)
    doctor, emergency = _actor("doctor", pid), _actor("emergency", pid)
    shown = _doc(pid, "shown", doctor, title="Compte rendu des urgences")
    hidden = _doc(pid, "hidden", doctor, conf="INVISIBLE_PATIENT", title="Annonce diagnostique en attente")
    _submit(server, authority, doctor, pid, [shown, hidden])
    reply = _soap(server, authority, emergency).stored_query("FindDocuments", {
        "$XDSDocumentEntryPatientId": [f"'{pid.format()}'"],
        "$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]})
    assert reply.status == "Success"
    mails = _wait_mails(smtp, address, 1, 15)
    assert len(mails) == 1, "no e-mail to the patient after a bris de glace read"
    mail = mails[0]
    body = mail.get_content()
    assert mail["From"] == "dmp-notifications@example.org"
    assert "bris de glace" in mail["Subject"] and "bris de glace" in body
    assert emergency.name in body and emergency.id in body and emergency.reason in body
    assert "heure de Paris" in body or "UTC" in body
    assert shown.title in body
    assert hidden.title not in body and hidden.unique_id not in body   # nothing of a document the patient may not see
    time.sleep(QUIET_S)
    assert len(_mails_to(smtp, address)) == 1                            # one e-mail, not one per retry

    # centre 15: one more, saying so
    regulator = _actor("regulator", pid)
    _soap(server, authority, regulator).stored_query("FindDocuments", {
        "$XDSDocumentEntryPatientId": [f"'{pid.format()}'"],
        "$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]})
    mails = _wait_mails(smtp, address, 2, 15)
    assert len(mails) == 2 and "centre 15" in mails[1]["Subject"] and regulator.name in mails[1].get_content()
    # the patient's trail shows the e-mails (written just after the SMTP exchange)
    deadline = time.monotonic() + 5
    while True:
        notices = [r for r in audit.events(server.services, patient_id=pid, limit=100)
                   if r["action"] == "patient-notice"]
        if len(notices) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(notices) == 2 and all(r["outcome"] == 0 for r in notices)
    assert notices[-1]["objects"] == [shown.unique_id]      # the documents the first e-mail named


def test_a_patient_without_address_gets_nothing_and_nothing_is_lost(server, authority, smtp):
    pid = _patient(server)
    before = len(smtp.messages)
    _soap(server, authority, _actor("emergency", pid)).stored_query("FindDocuments", {
        "$XDSDocumentEntryPatientId": [f"'{pid.format()}'"],
        "$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]})
    deadline = time.monotonic() + 10
    with server.services.registry.read() as conn:
        pk = server.services.registry.patient_pk(conn, pid)
    while time.monotonic() < deadline:
        rows = outbox.rows(server.services.registry, outbox.NOTICES, patient_pk=pk)
        if rows and rows[0].state != "pending":
            break
        time.sleep(0.1)
    assert [(r.kind, r.state, r.last_error) for r in rows] == [
        ("bris_de_glace", "skipped", "the patient has no e-mail address")]
    assert len(smtp.messages) == before
