"""Notifications, round 5: what the earlier rounds missed (docs/notifications.md).

- The patient's new-document e-mail announces only what is still a new document when it is
  sent: a document deprecated (replaced by ITI-57) before the e-mail goes out is no longer
  "un nouveau document", as the DSUB / FHIR deliveries of the same registration (Approved
  only, ITI-18 FindDocuments) already decide.
- A retried notification is judged again; when what it carries differs from an earlier
  attempt, it is another message and cannot reuse that attempt's id: WS-Addressing 1.0 Core
  3.2 (`wsa:MessageID` uniquely identifies the message), FHIR R4 Bundle.id (a different
  resource content under one id is another version, and recipients deduplicate on it). A
  retry with the same content keeps its id (the recipient's deduplication, test_notify_crash).
- A subscription's notifications are delivered in order (docs/notifications.md "A
  subscription's rows go out in order"; DSUBm/R5 backport `eventNumber`): a failed row is
  not overtaken by a later one of the same subscription while it is retried.
- WS-Topics 1.3 7.1: a Simple TopicExpression is a QName whose prefix must be bound in scope;
  `foo:FullDocumentEntry` with no `xmlns:foo` is not a topic expression at all
  (WS-BaseNotification 1.3 4.2 `wsnt:InvalidTopicExpressionFault`).
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import update

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.access.credentials import sample_actors
from partage.config import Settings
from partage.ebxml import constants as C
from partage.ebxml.soap import build_envelope
from partage.fhir.subscriptions import FhirRenderer
from partage.lifecycle import update_document_set
from partage.metadata.datatypes import DTM
from partage.metadata.ids import assign_uuids
from partage.metadata.kinds import KIND_DOCUMENT
from partage.metadata.model import (
    Association,
    AssociationType,
    Code,
    SubmissionRequest,
    SubmissionSet,
)
from partage.notify.model import DOCUMENT, DSUB, FHIR, FULL, Subscription
from partage.notify.sender import Sender
from partage.notify.subscriptions import Subscriptions
from partage.query import QueryService
from partage.registry import outbox, schema
from partage.registry.access_state import Records
from partage.registry.register import register
from partage.server.app import create_app
from partage.services import Services
from partage.xds.dsub import NotifyRenderer
from partage.xmlsafe import parse_xml
from tests import factories as F
from tests.notify_support import SmtpServer, subscribe_body
from tests.support import free_port

RENDERERS = {"dsub": NotifyRenderer(), "fhir": FhirRenderer()}
SOAP = "{http://www.w3.org/2003/05/soap-envelope}"
STORED = {"hash": "da39a3ee5e6b4b0d3255bfef95601890afd80709", "size": 0, "repository_unique_id": "1.2.250.1.999.3"}
ANY_PATIENT = "urn:uuid:742790e0-aba6-43d6-9f1f-e43ed9790b79"   # ITI-52 multi-patient DocumentEntry filter
MASQUE_PS = [Code("N", "2.16.840.1.113883.5.25"), Code("MASQUE_PS", "1.2.250.1.213.1.1.4.13")]


class Hook:
    """A subscriber's endpoint answering the given statuses in turn (then 200), keeping every body."""

    def __init__(self, statuses: list[int]) -> None:
        self.port = free_port()
        self.statuses = list(statuses)
        self.bodies: list[bytes] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                owner.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(owner.statuses.pop(0) if owner.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> Hook:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _services(tmp_path, database_url, **settings) -> Services:
    return Services.open(Settings(data_dir=tmp_path / "data", database_url=database_url, notify_timeout=2.0,
                                  notify_max_attempts=5, **settings))


def _patient(svc, **demographics):
    pid = F.patient_id()
    with svc.registry.write() as conn:
        svc.registry.upsert_patient(conn, [pid], demographics or None)
    Records(svc.registry).open(pid, medecin_traitant=sample_actors(pid)["gp"].id)
    return pid


def _register(svc, pid, docs):
    request = F.submission(pid, docs, contents=False)
    assign_uuids(request)
    with svc.registry.write() as conn:
        outbox.enqueue_registration(conn, request, patient_documents=svc.settings.notify_patient_documents)
        register(svc.registry, conn, request, {})
    return request


def _subscribe(svc, actor, url, pid, door):
    subs = Subscriptions(svc, actor)
    wanted = Subscription(door=door, topic=DOCUMENT, payload=FULL if door == DSUB else "id-only", endpoint=url,
                          actor=actor, ends_at=subs.end_time(None), patient_id=pid, base_url="http://partage.test",
                          mime_type="application/fhir+json" if door == FHIR else "application/soap+xml")
    if door == FHIR:
        wanted.resource = {"criteria": "https://profiles.ihe.net/ITI/DSUBm/SubscriptionTopic/x", "channel": {}}
    sub = subs.create(wanted, handshake=False)
    if door == FHIR:
        with svc.registry.write() as conn:   # active, as after its handshake
            conn.execute(update(schema.subscriptions).where(schema.subscriptions.c.pk == sub.pk)
                         .values(status="active"))
    return sub


def _replace(svc, pid, entry_uuid, **changes):
    """ITI-57: the next version of the registered document (the first one becomes Deprecated)."""
    doc = QueryService(svc, INSECURE_DEV_ACTOR).get_objects(KIND_DOCUMENT, entry_uuids=[entry_uuid]).objects[0]
    new = copy.deepcopy(doc)
    new.lid, new.entry_uuid, new.version = doc.entry_uuid, "newversion", ""
    for key, value in changes.items():
        setattr(new, key, value)
    ss = SubmissionSet(entry_uuid="ss", unique_id=F.oid(), source_id="1.2.250.1.999.2", patient_id=pid,
                       submission_time=DTM("20240401"), content_type_code=Code("04", "1.2.250.1.213.1.1.4.2.2"))
    update_document_set(svc, INSECURE_DEV_ACTOR, SubmissionRequest(ss, [new], [], [Association(
        entry_uuid="hm", association_type=AssociationType.HAS_MEMBER, source_uuid="ss", target_uuid="newversion",
        submission_set_status="Original", previous_version="1")]))


def _due_now(svc):
    """The rows waiting for their next attempt are due now (instead of waiting out the backoff)."""
    with svc.registry.write() as conn:
        conn.execute(update(schema.notification_outbox).where(schema.notification_outbox.c.state == "pending")
                     .values(next_attempt_at=0.0))


# --------------------------------------------------------------------------- the patient's e-mail
@pytest.mark.parametrize("change", ["replaced", "moved to another patient"])
def test_a_document_replaced_before_its_email_is_sent_is_not_announced_as_new(tmp_path, database_url, change):
    """The new-document e-mail is judged when it is sent, as the DSUB/FHIR deliveries are
    (Filter.document_filter: Approved only): version 1 deprecated by ITI-57 meanwhile is no
    longer a new document of the record. Before: GetDocuments by entryUUID, any status, and
    the e-mail announced "Un nouveau document" naming the replaced version."""
    with SmtpServer() as smtp:
        svc = _services(tmp_path, database_url, notify_patient_documents=True, smtp_host="127.0.0.1",
                        smtp_port=smtp.port, mail_from="dmp@example.org",
                        insecure_dev=True)   # the ITI-57 below is made as the development actor
        try:
            pid = _patient(svc, telecom=["^NET^Internet^jeanne@example.fr"])
            request = _register(svc, pid, [F.document(pid, "d1", title="Compte rendu provisoire", **STORED)])
            if change == "replaced":
                _replace(svc, pid, request.documents[0].entry_uuid, title="Compte rendu définitif")
            else:   # ITI-57 naming another patient: the first version stays, Deprecated, in this record
                other = _patient(svc)
                _replace(svc, other, request.documents[0].entry_uuid, patient_id=other, source_patient_id=other)
            Sender(svc, RENDERERS).drain()
            assert [n.state for n in outbox.rows(svc.registry, outbox.NOTICES)] == ["skipped"]
            assert [m.get_content() for m in smtp.messages] == []     # before: "Compte rendu provisoire"
        finally:
            svc.close()


# --------------------------------------------------------------------------- retries: the message id
@pytest.mark.parametrize("door", [DSUB, FHIR])
def test_a_retry_that_carries_more_is_another_message_with_another_id(tmp_path, database_url, door):
    """Attempt 1 (answered 503) carries the one document the subscriber may see; the patient
    then names the subscriber médecin traitant, so the retry also carries the MASQUE_PS one.
    Under the same wsa:MessageID / Bundle.id a recipient that deduplicates on it (as
    docs/notifications.md tells it to) drops the retry and never hears of the second document.
    A retry with the same content keeps the id (the crash guarantee)."""
    svc = _services(tmp_path, database_url)
    try:
        pid = _patient(svc)
        doctor = sample_actors(pid)["doctor"]
        with Hook([503, 503]) as hook:
            _subscribe(svc, doctor, hook.url, pid, door)
            request = _register(svc, pid, [F.document(pid, "open"),
                                           F.document(pid, "masked", confidentiality_codes=MASQUE_PS)])
            sender = Sender(svc, RENDERERS)
            sender.drain()
            _due_now(svc)
            sender.drain()                                       # the same content, refused again
            Records(svc.registry).set_medecin_traitant(pid, doctor.id)
            _due_now(svc)
            sender.drain()
        assert len(hook.bodies) == 3
        masked = request.documents[1].entry_uuid
        shows = [masked.removeprefix("urn:uuid:").encode() in body for body in hook.bodies]
        assert shows == [False, False, True]
        ids = [_message_id(body, door) for body in hook.bodies]
        assert ids[0] == ids[1]                                  # a retransmission: the same message
        assert ids[2] != ids[0]                                  # before: the same id, other content
        row = outbox.rows(svc.registry, outbox.EVENTS)[0]
        assert row.state == "delivered" and row.delivery_id == ids[2]
    finally:
        svc.close()


def _message_id(body: bytes, door: str) -> str:
    if door == FHIR:
        return str(json.loads(body)["id"])
    header = parse_xml(body).find(f"{SOAP}Header")
    return (header.findtext(f"{{{C.WSA}}}MessageID") or "").removeprefix("urn:uuid:")


# --------------------------------------------------------------------------- order
@pytest.mark.parametrize("door", [DSUB, FHIR])
def test_a_failed_notification_is_not_overtaken_by_the_next_one(tmp_path, database_url, door):
    """Two registrations, the first notification answered 503: the second must wait for it
    (docs: "A subscription's rows go out in order, one at a time"), and the FHIR event numbers
    arrive 1 then 2. Before: the second was delivered in the same batch, then the first, so
    the subscriber saw event 2 before event 1 and d2 before d1."""
    svc = _services(tmp_path, database_url)
    try:
        pid = _patient(svc)
        gp = sample_actors(pid)["gp"]
        with Hook([503]) as hook:
            _subscribe(svc, gp, hook.url, pid, door)
            first = _register(svc, pid, [F.document(pid, "d1")])
            second = _register(svc, pid, [F.document(pid, "d2")])
            sender = Sender(svc, RENDERERS)
            sender.drain()
            _due_now(svc)
            sender.drain()
        delivered = hook.bodies[1:]                              # after the refused first attempt
        order = [[r.documents[0].entry_uuid.removeprefix("urn:uuid:").encode() in body for r in (first, second)]
                 for body in delivered]
        assert order == [[True, False], [False, True]]           # before: d2 first, then d1
        if door == FHIR:
            numbers = [_event_number(body) for body in delivered]
            assert numbers == ["1", "2"]
        assert [r.state for r in outbox.rows(svc.registry, outbox.EVENTS)] == ["delivered", "delivered"]
    finally:
        svc.close()


def _event_number(body: bytes) -> str:
    parameters = json.loads(body)["entry"][0]["resource"]["parameter"]
    event = next(p for p in parameters if p["name"] == "notification-event")
    return str(next(part["valueString"] for part in event["part"] if part["name"] == "event-number"))


# --------------------------------------------------------------------------- DSUB topic expression
@pytest.fixture(scope="module")
def app(tmp_path_factory):
    services = Services.open(Settings(data_dir=tmp_path_factory.mktemp("dsub5") / "data", insecure_dev=True,
                                      mllp_port=0, text_indexer=False))
    yield create_app(services=services).test_client()
    services.close()


def _subscribe_with_topic(app, topic: bytes, declare: bytes = b""):
    """Subscribe with this topic expression text, its element declaring `declare` (xmlns:...)."""
    body = subscribe_body("http://127.0.0.1:9/dsub/notify", query=ANY_PATIENT)
    envelope = build_envelope(C.ACTION_SUBSCRIBE, body, message_id=f"urn:uuid:{uuid.uuid4()}",
                              to="http://localhost/xds/notification-broker")
    envelope = envelope.replace(b">ihe:FullDocumentEntry<", b">" + topic + b"<")
    envelope = envelope.replace(b"<wsnt:TopicExpression ", b"<wsnt:TopicExpression " + declare + b" ")
    assert topic in envelope and declare in envelope
    r = app.post("/xds/notification-broker", data=envelope,
                 headers={"Content-Type": f'application/soap+xml; charset=UTF-8; action="{C.ACTION_SUBSCRIBE}"'})
    answer = parse_xml(r.data).find(f"{SOAP}Body")[0]
    return r.status_code, answer.findtext(f"{SOAP}Code/{SOAP}Subcode/{SOAP}Value") or ""


def test_an_undeclared_topic_prefix_is_an_invalid_topic_expression(app):
    """WS-Topics 1.3 7.1: the QName's prefix must be bound. `foo:FullDocumentEntry` without
    `xmlns:foo` names no topic; before, the unbound prefix was read as "no namespace" and
    the subscription made (200) for ihe:FullDocumentEntry."""
    status, subcode = _subscribe_with_topic(app, b"foo:FullDocumentEntry")
    assert (status, subcode) == (400, "wsnt:InvalidTopicExpressionFault")
    status, subcode = _subscribe_with_topic(app, b"foo:FullDocumentEntry", b'xmlns:foo="urn:ihe:iti:dsub:2009"')
    assert status == 200, subcode                                        # bound to the DSUB namespace: served
    status, subcode = _subscribe_with_topic(app, b"foo:FullDocumentEntry", b'xmlns:foo="urn:example:topics"')
    assert (status, subcode) == (400, "wsnt:TopicNotSupportedFault")     # bound elsewhere: another topic
