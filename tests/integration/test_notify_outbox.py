"""The outbox and the sender in-process, on SQLite and PostgreSQL: what a registration writes
(and what a rollback leaves), leases, retries and their limits, the FHIR criteria, and the
patients' new-document notices (a real SMTP server, real HTTP endpoints)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from partage.access.credentials import sample_actors
from partage.config import Settings
from partage.fhir.subscriptions import FhirRenderer, read_subscription
from partage.metadata.ids import assign_uuids
from partage.metadata.model import Code
from partage.mhd import formats
from partage.mhd.outcome import FhirError
from partage.notify.model import ACTIVE, DOCUMENT, DSUB, ERROR, FULL, Subscription
from partage.notify.sender import Sender
from partage.notify.subscriptions import SubscriptionError, Subscriptions
from partage.registry import outbox, schema
from partage.registry import subscriptions as rows
from partage.registry.access_state import Records
from partage.registry.register import register
from partage.services import Services
from partage.xds.dsub import NotifyRenderer
from tests import factories as F
from tests.notify_support import Endpoint, SmtpServer, fhir_subscription

RENDERERS = {"dsub": NotifyRenderer(), "fhir": FhirRenderer()}
NOTIFY_TABLES = ("subscriptions", "notification_outbox", "access_notifications")


@pytest.fixture
def svc(tmp_path, database_url):
    services = Services.open(Settings(data_dir=tmp_path / "data", database_url=database_url,
                                      notify_timeout=2.0, notify_max_attempts=3))
    yield services
    services.close()


def _patient(svc, **demographics):
    pid = F.patient_id()
    with svc.registry.write() as conn:
        svc.registry.upsert_patient(conn, [pid], demographics or None)
    Records(svc.registry).open(pid, medecin_traitant=sample_actors(pid)["gp"].id)
    return pid


def _subscribe(svc, actor, endpoint, pid, *, handshake=False, door=DSUB, payload=FULL, **kw) -> Subscription:
    subs = Subscriptions(svc, actor)
    wanted = Subscription(door=door, topic=DOCUMENT, payload=payload, endpoint=endpoint.url, actor=actor,
                          ends_at=subs.end_time(None), patient_id=pid, base_url="http://partage.test",
                          mime_type="application/fhir+json" if door == "fhir" else "application/soap+xml", **kw)
    if door == "fhir":
        wanted.resource = {"criteria": "https://profiles.ihe.net/ITI/DSUBm/SubscriptionTopic/x", "channel": {}}
    return subs.create(wanted, handshake=handshake)


def _register(svc, pid, docs=None):
    """A registration as the ingest flow writes it: outbox rows, then the objects, one transaction."""
    request = F.submission(pid, docs or [F.document(pid, "d1")], contents=False)
    assign_uuids(request)
    with svc.registry.write() as conn:
        outbox.enqueue_registration(conn, request, patient_documents=svc.settings.notify_patient_documents)
        register(svc.registry, conn, request, {})
    return request


def test_migration_matches_the_schema(svc):
    with svc.registry.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert [d for d in diff if any(t in repr(d) for t in NOTIFY_TABLES)] == []


def test_a_rolled_back_registration_leaves_no_outbox_row(svc):
    pid = _patient(svc)
    _subscribe(svc, sample_actors(pid)["gp"], Endpoint(), pid)
    request = F.submission(pid, contents=False)
    with pytest.raises(RuntimeError), svc.registry.write() as conn:
        assert outbox.enqueue_registration(conn, request) == 1
        raise RuntimeError("the registration fails after the outbox row was written")
    assert outbox.rows(svc.registry, outbox.EVENTS) == []
    _register(svc, pid)
    assert len(outbox.rows(svc.registry, outbox.EVENTS)) == 1


def test_only_live_subscriptions_of_the_patient_get_rows(svc):
    pid, other = _patient(svc), _patient(svc)
    gp = sample_actors(pid)["gp"]
    mine = _subscribe(svc, gp, Endpoint(), pid)
    cancelled = _subscribe(svc, gp, Endpoint(), pid)
    Subscriptions(svc, gp).cancel(cancelled.id)
    ended = _subscribe(svc, gp, Endpoint(), pid)
    with svc.registry.write() as conn:
        rows.update_fields(conn, ended.pk, ends_at=time.time() - 1)
    _subscribe(svc, sample_actors(other)["gp"], Endpoint(), other)      # another patient's
    everyone = _subscribe(svc, gp, Endpoint(), None)                       # multi-patient
    _register(svc, pid)
    assert sorted(r.subscription_pk for r in outbox.rows(svc.registry, outbox.EVENTS)) == sorted([mine.pk, everyone.pk])


def test_leases_are_exclusive_and_expire_with_the_same_delivery_id(svc):
    pid = _patient(svc)
    _subscribe(svc, sample_actors(pid)["gp"], Endpoint(), pid)
    _register(svc, pid)
    now = time.time()
    token, claimed = outbox.claim(svc.registry, outbox.EVENTS, lease_s=60, now=now)
    assert len(claimed) == 1
    assert outbox.claim(svc.registry, outbox.EVENTS, lease_s=60, now=now + 1) == ("", [])   # leased
    later, again = outbox.claim(svc.registry, outbox.EVENTS, lease_s=60, now=now + 61)     # the holder died
    assert [r.delivery_id for r in again] == [claimed[0].delivery_id]
    assert (claimed[0].attempts, again[0].attempts) == (0, 1)   # rows as they were before each claim
    assert not outbox.settle(svc.registry, outbox.EVENTS, claimed[0].pk, token, "delivered")   # lost its lease
    assert outbox.settle(svc.registry, outbox.EVENTS, again[0].pk, later, "delivered")
    assert outbox.rows(svc.registry, outbox.EVENTS)[0].state == "delivered"


def test_sender_retries_then_gives_up_and_a_refusal_is_final(svc):
    pid = _patient(svc)
    gp = sample_actors(pid)["gp"]
    down = Endpoint()
    refusing = Endpoint(status=400)
    with refusing:
        _subscribe(svc, gp, down, pid)
        _subscribe(svc, gp, refusing, pid)
        _register(svc, pid)
        sender = Sender(svc, RENDERERS)
        for _ in range(40):
            sender.drain()
            states = {r.subscription_pk: (r.state, r.attempts) for r in outbox.rows(svc.registry, outbox.EVENTS)}
            if all(state != "pending" for state, _ in states.values()):
                break
            time.sleep(0.3)
        assert len(refusing.received) == 1                       # a 4xx is not retried
    final = {r.subscription_pk: r for r in outbox.rows(svc.registry, outbox.EVENTS)}
    assert sorted((r.state, r.attempts) for r in final.values()) == [("failed", 1), ("failed", 3)]
    assert all("attempt" in r.last_error for r in final.values())


def test_fhir_subscription_in_error_after_failures_and_handshake_first(svc):
    pid = _patient(svc)
    gp = sample_actors(pid)["gp"]
    with Endpoint() as endpoint:
        sub = _subscribe(svc, gp, endpoint, pid, handshake=True, door="fhir")
        _register(svc, pid)
        sender = Sender(svc, RENDERERS)
        for _ in range(20):
            sender.drain()
            if len(endpoint.received) == 2:
                break
            time.sleep(0.2)
        kinds = [json.loads(r.body)["entry"][0]["resource"]["parameter"][3]["valueCode"] for r in endpoint.received]
        assert kinds == ["handshake", "event-notification"]       # the handshake first, then the event
    assert Subscriptions(svc, gp).get(sub.id).status == ACTIVE
    _register(svc, pid, [F.document(pid, "d2")])                   # the endpoint is gone now
    for _ in range(40):
        sender.drain()
        if Subscriptions(svc, gp).get(sub.id).status == ERROR:
            break
        time.sleep(0.3)
    assert Subscriptions(svc, gp).get(sub.id).status == ERROR


def test_subscriptions_are_their_subscribers(svc):
    pid = _patient(svc)
    actors = sample_actors(pid)
    sub = _subscribe(svc, actors["gp"], Endpoint(), pid)
    for stranger in ("doctor", "patient", "connector"):
        with pytest.raises(SubscriptionError) as caught:
            Subscriptions(svc, actors[stranger]).cancel(sub.id)
        assert caught.value.kind == SubscriptionError.NOT_FOUND
    assert [s.id for s in Subscriptions(svc, actors["auditor"]).mine()] == [sub.id]   # an administrator sees all
    assert Subscriptions(svc, actors["gp"]).cancel(sub.id).status == "off"
    with pytest.raises(SubscriptionError) as caught:
        Subscriptions(svc, actors["gp"]).end_time(time.time() - 5)
    assert caught.value.kind == SubscriptionError.TERMINATION
    longest = Subscriptions(svc, actors["gp"]).end_time(time.time() + 10 * 365 * 86400)
    assert longest <= time.time() + svc.settings.subscription_max_days * 86400 + 5


def test_multi_patient_subscription_sees_only_what_the_gate_lets_through(svc):
    opened, closed = _patient(svc), F.patient_id()
    with svc.registry.write() as conn:
        svc.registry.upsert_patient(conn, [closed])                       # no record opened: nothing visible
    gp = sample_actors(opened)["gp"]
    with Endpoint() as endpoint:
        _subscribe(svc, gp, endpoint, None)
        _register(svc, closed)
        _register(svc, opened)
        Sender(svc, RENDERERS).drain()
        assert len(endpoint.wait(1, 5)) == 1
        assert opened.id.encode() in endpoint.received[0].body and closed.id.encode() not in endpoint.received[0].body
    assert sorted(r.state for r in outbox.rows(svc.registry, outbox.EVENTS)) == ["delivered", "skipped"]


def test_new_document_notices_name_only_what_the_patient_may_see(tmp_path, database_url):
    with SmtpServer() as smtp:
        settings = Settings(data_dir=tmp_path / "data", database_url=database_url, notify_patient_documents=True,
                            smtp_host="127.0.0.1", smtp_port=smtp.port, mail_from="dmp@example.org")
        svc = Services.open(settings)
        try:
            pid = _patient(svc, telecom=["^NET^Internet^jeanne@example.fr"])
            silent = _patient(svc)                                           # no address: no row at all
            hidden = F.document(pid, "hidden", title="Résultat en attente d'annonce")
            hidden.confidentiality_codes = [Code("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13")]
            _register(svc, pid, [hidden])
            _register(svc, pid, [F.document(pid, "seen", title="Bilan biologique")])
            _register(svc, silent)
            Sender(svc, RENDERERS).drain()
            messages = smtp.wait(1, 5)
            assert len(messages) == 1 and messages[0]["To"] == "jeanne@example.fr"
            assert "Bilan biologique" in messages[0].get_content()
            assert "annonce" not in messages[0].get_content()
            notices = outbox.rows(svc.registry, outbox.NOTICES)
            assert sorted(n.state for n in notices) == ["sent", "skipped"]
            time.sleep(0.5)
            Sender(svc, RENDERERS).drain()
            assert len(smtp.messages) == 1
        finally:
            svc.close()


# ------------------------------------------------------------------ DSUBm criteria
def _read(svc, criteria, **kw):
    return read_subscription(svc, fhir_subscription("http://r.example/hook", criteria, **kw))


def test_fhir_criteria_become_the_engines_filter(svc):
    pid = _patient(svc)
    sub, end = _read(svc, f"DocumentReference?patient.identifier={F.token(pid)}&type=http://loinc.org|11488-4,"
                          "http://loinc.org|11490-0&category=urn:oid:1.2.250.1.213.1.1.4.1|10&author.family=Mar",
                     end="2031-01-01T00:00:00Z")
    assert sub.patient_id == pid and end is not None
    assert sub.filter.codes == {"type": [[Code("11488-4", "2.16.840.1.113883.6.1"), Code("11490-0", "2.16.840.1.113883.6.1")]],
                                "class": [[Code("10", "1.2.250.1.213.1.1.4.1")]]}
    assert sub.filter.author_names == [("family", ["Mar"])]
    multi, _ = _read(svc, "List?code=submissionset&sourceId=urn:oid:1.2.3",
                     topic="DSUBm-SubscriptionTopic-SubmissionSet-MultiPatient")
    assert multi.patient_id is None and multi.filter.source_ids == ["1.2.3"] and multi.topic == "submission_set"


@pytest.mark.parametrize(("criteria", "kw"), [
    ("DocumentReference?type=x", {}),                                            # patient-dependent, no patient
    ("DocumentReference?patient.identifier=urn:oid:1.2|1&title=x", {}),          # not a parameter of the topic
    ("DocumentReference?patient.identifier=urn:oid:1.2|1&status=superseded", {}),
    ("List?patient.identifier=urn:oid:1.2|1", {}),                               # the wrong resource type
    ("DocumentReference?patient.identifier=urn:oid:1.2|1", {"payload": "all"}),
    ("DocumentReference?patient.identifier=urn:oid:1.2|1", {"mime": "text/html"}),
    ("DocumentReference?patient.identifier=urn:oid:1.2|1", {"headers": ["Content-Type: text/plain"]}),
    ("DocumentReference?patient.identifier=urn:oid:1.2|1", {"headers": ["bad header"]}),
    ("DocumentReference?patient.identifier=urn:oid:1.2|1&patient.identifier=urn:oid:1.2|2", {}),
    ("DocumentReference?patient.identifier=urn:oid:1.2|1",
     {"topic": "DSUBm-SubscriptionTopic-DocumentReference-MultiPatient"}),       # multi-patient takes no patient
])
def test_fhir_criteria_refused(svc, criteria, kw):
    with pytest.raises(FhirError) as caught:
        _read(svc, criteria, **kw)
    assert caught.value.status == 400


def test_unknown_patient_reference_is_answered_like_a_closed_record(svc):
    with pytest.raises(SubscriptionError) as caught:
        _read(svc, "DocumentReference?patient=Patient/does-not-exist")
    assert caught.value.kind == SubscriptionError.FORBIDDEN



@pytest.mark.parametrize(("mime", "payload"), [("application/fhir+xml", "id-only"), ("application/fhir+json", "empty")])
def test_fhir_event_payloads(svc, mime, payload):
    """XML notifications parse as FHIR; id-only names the resource without it; empty names nothing."""
    pid = _patient(svc)
    gp = sample_actors(pid)["gp"]
    with Endpoint() as endpoint:
        sub = _subscribe(svc, gp, endpoint, pid, handshake=True, door="fhir", payload=payload)
        with svc.registry.write() as conn:
            rows.update_fields(conn, sub.pk, mime_type=mime, payload=payload)
        request = _register(svc, pid)
        sender = Sender(svc, RENDERERS)
        for _ in range(20):
            sender.drain()
            if len(endpoint.received) == 2:
                break
            time.sleep(0.2)
        event = endpoint.received[1]
    assert event.headers["Content-Type"].startswith(mime)
    bundle = formats.parse_resource(event.body, mime.endswith("xml"), "Bundle")
    entries = bundle["entry"]
    uid = request.documents[0].entry_uuid.removeprefix("urn:uuid:")
    if payload == "empty":
        assert len(entries) == 1
        assert "notification-event" in {p["name"] for p in entries[0]["resource"]["parameter"]}
        assert uid.encode() not in event.body
    else:
        assert len(entries) == 2 and "resource" not in entries[1] and entries[1]["fullUrl"].endswith(uid)


class _StalledSmtp:
    """An SMTP peer that accepts connections and never says a word (a hung mail relay)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.server.accept()[0])

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            conn.close()


def test_a_stalled_mail_server_does_not_hold_back_the_subscribers_deliveries(tmp_path, database_url):
    """The patients' e-mails have their own lane: while the SMTP server holds an e-mail until the
    notification deadline, a registration made meanwhile is still notified to its subscriber at
    once (the sender's loop waited for the e-mail batch before claiming any more events)."""
    smtp = _StalledSmtp()
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, notify_patient_documents=True,
                        smtp_host="127.0.0.1", smtp_port=smtp.port, mail_from="dmp@example.org",
                        notify_timeout=30.0, notify_poll=0.2)
    svc = Services.open(settings)
    sender = None
    try:
        pid = _patient(svc, telecom=["^NET^Internet^jeanne@example.fr"])
        with Endpoint() as endpoint:
            _subscribe(svc, sample_actors(pid)["gp"], endpoint, pid)
            sender = Sender(svc, RENDERERS).start()
            _register(svc, pid, [F.document(pid, "first")])
            assert len(endpoint.wait(1, 10)) == 1
            deadline = time.monotonic() + 10
            while not smtp.held and time.monotonic() < deadline:   # the e-mail is being sent, and held
                time.sleep(0.05)
            assert smtp.held
            _register(svc, pid, [F.document(pid, "second")])
            assert len(endpoint.wait(2, 10)) == 2, "the second Notify waited for the stalled e-mail"
    finally:
        smtp.close()
        if sender is not None:
            sender.stop()
        svc.close()
