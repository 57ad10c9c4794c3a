"""Notifications, round 4: what the earlier rounds missed (docs/notifications.md).

- A subscription's status is the subscriber's to end: a handshake answered, or a notification
  given up, while the subscriber was unsubscribing must not write `active` (or `error`) over
  the `off` the subscriber set: a subscription revived behind its subscriber's back sends
  them notifications after they unsubscribed (WS-BaseNotification 1.3 6.1.2, DSUBm ITI-110).
- Re-activating a FHIR subscription (PUT status=requested) is subscribing again: it is held to
  the rules of a new subscription (the bound on live subscriptions per scope, the `normal`
  access mode, the record open to the subscriber).
- Cloud metadata services answer on addresses outside 169.254.0.0/16 too (AWS's IPv6
  fd00:ec2::254, Alibaba's 100.100.100.200, Oracle's 192.0.0.192): never a destination unless
  listed as a network, and 192.0.0.0/24 is not `public` (IANA: not globally reachable).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lxml import etree

from partage.access.actor import BRIS_DE_GLACE, CENTRE_15
from partage.access.credentials import sample_actors
from partage.config import Settings
from partage.ebxml import constants as C
from partage.ebxml.soap import build_envelope
from partage.fhir.subscriptions import FhirRenderer
from partage.metadata.ids import assign_uuids
from partage.notify.destinations import DEFAULT, Destinations
from partage.notify.model import DOCUMENT, FHIR, OFF, Subscription
from partage.notify.sender import Sender
from partage.notify.subscriptions import MAX_LIVE_PER_SCOPE, SubscriptionError, Subscriptions
from partage.registry import outbox
from partage.registry.access_state import Records
from partage.registry.register import register
from partage.server.app import create_app
from partage.services import Services
from partage.xds.dsub import NotifyRenderer
from partage.xmlsafe import parse_xml
from tests import factories as F
from tests.notify_support import WSNT, subscribe_body
from tests.support import free_port

RENDERERS = {"dsub": NotifyRenderer(), "fhir": FhirRenderer()}


@pytest.fixture
def svc(tmp_path, database_url):
    services = Services.open(Settings(data_dir=tmp_path / "data", database_url=database_url,
                                      notify_timeout=2.0, notify_max_attempts=3))
    yield services
    services.close()


class Hook:
    """A subscriber's endpoint that runs `before_answer` on each POST (what the subscriber
    does while the server waits for the answer), then answers `status`."""

    def __init__(self, before_answer: Callable[[bytes], None] = lambda body: None, status: int = 200) -> None:
        self.port = free_port()
        self.before_answer = before_answer
        self.status = status
        self.bodies: list[bytes] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.bodies.append(body)
                owner.before_answer(body)
                self.send_response(owner.status)
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


def _patient(svc):
    pid = F.patient_id()
    with svc.registry.write() as conn:
        svc.registry.upsert_patient(conn, [pid])
    Records(svc.registry).open(pid, medecin_traitant=sample_actors(pid)["gp"].id)
    return pid


def _fhir(svc, actor, url, pid, *, handshake=True) -> Subscription:
    subs = Subscriptions(svc, actor)
    wanted = Subscription(door=FHIR, topic=DOCUMENT, payload="id-only", endpoint=url, actor=actor,
                          ends_at=subs.end_time(None), patient_id=pid, base_url="http://partage.test",
                          mime_type="application/fhir+json",
                          resource={"criteria": "https://profiles.ihe.net/ITI/DSUBm/SubscriptionTopic/x",
                                    "channel": {}})
    return subs.create(wanted, handshake=handshake)


def _register(svc, pid, name="d1"):
    request = F.submission(pid, [F.document(pid, name)], contents=False)
    assign_uuids(request)
    with svc.registry.write() as conn:
        outbox.enqueue_registration(conn, request)
        register(svc.registry, conn, request, {})
    return request


# --------------------------------------------------------------------------- status races
def test_a_subscription_cancelled_during_its_handshake_stays_off_and_is_sent_nothing(svc):
    """The subscriber unsubscribes while the handshake is on the wire (its endpoint answers
    after the cancellation): the handshake's 2xx must not write `active` over `off`, or the
    next registration is notified to a subscriber who unsubscribed."""
    pid = _patient(svc)
    gp = sample_actors(pid)["gp"]
    made: dict[str, str] = {}

    def unsubscribe_first(body: bytes) -> None:
        if b'"handshake"' in body:
            Subscriptions(svc, gp).cancel(made["id"])

    with Hook(unsubscribe_first) as hook:
        made["id"] = _fhir(svc, gp, hook.url, pid).id
        sender = Sender(svc, RENDERERS)
        sender.drain()
        assert len(hook.bodies) == 1                                   # the handshake went out
        assert Subscriptions(svc, gp).get(made["id"]).status == OFF    # before: active again
        _register(svc, pid)
        sender.drain()
        assert len(hook.bodies) == 1                                   # before: the event was sent
    assert [r.state for r in outbox.rows(svc.registry, outbox.EVENTS)] == ["delivered"]   # the handshake only


def test_a_subscription_cancelled_during_a_refused_notification_stays_off(svc):
    """A notification given up (a 4xx) while its subscriber was unsubscribing puts nothing in
    `error`: the subscription the subscriber ended stays `off`, as they left it."""
    pid = _patient(svc)
    gp = sample_actors(pid)["gp"]
    made: dict[str, str] = {}

    def unsubscribe_then_refuse(body: bytes) -> None:
        if b'"event-notification"' in body:
            hook.status = 410
            Subscriptions(svc, gp).cancel(made["id"])

    with Hook(unsubscribe_then_refuse) as hook:
        made["id"] = _fhir(svc, gp, hook.url, pid).id
        sender = Sender(svc, RENDERERS)
        sender.drain()                                                 # the handshake: active
        _register(svc, pid)
        sender.drain()
        assert len(hook.bodies) == 2
    sub = Subscriptions(svc, gp).get(made["id"])
    assert (sub.status, sub.error) == (OFF, "")                        # before: error


# --------------------------------------------------------------------------- re-activation
def test_reactivation_is_held_to_the_bound_on_live_subscriptions(svc):
    """MAX_LIVE_PER_SCOPE live subscriptions per scope: re-activating one that is off, when
    the subscriber already holds that many, is refused as a new one would be."""
    pid = _patient(svc)
    gp = sample_actors(pid)["gp"]
    url = "http://127.0.0.1:9/hook"
    first = _fhir(svc, gp, url, pid)
    Subscriptions(svc, gp).cancel(first.id)
    for _ in range(MAX_LIVE_PER_SCOPE):
        _fhir(svc, gp, url, pid)
    with pytest.raises(SubscriptionError) as refused:
        _fhir(svc, gp, url, pid)
    assert refused.value.kind == SubscriptionError.FORBIDDEN
    with pytest.raises(SubscriptionError) as caught:                   # before: a 21st live one
        Subscriptions(svc, gp).reactivate(first.id)
    assert caught.value.kind == SubscriptionError.FORBIDDEN
    assert Subscriptions(svc, gp).get(first.id).status == OFF


@pytest.mark.parametrize("purpose", [BRIS_DE_GLACE, CENTRE_15])
def test_reactivation_in_an_emergency_mode_is_refused(svc, purpose):
    """A subscription is a standing access: re-activating one in bris de glace or centre 15
    makes a standing access in a mode that is for one access."""
    pid = _patient(svc)
    gp = sample_actors(pid)["gp"]
    sub = _fhir(svc, gp, "http://127.0.0.1:9/hook", pid)
    Subscriptions(svc, gp).cancel(sub.id)
    urgent = dataclasses.replace(gp, purpose=purpose, reason="patient unconscious")
    with pytest.raises(SubscriptionError) as caught:
        Subscriptions(svc, urgent).reactivate(sub.id)
    assert caught.value.kind == SubscriptionError.FORBIDDEN
    assert Subscriptions(svc, gp).get(sub.id).status == OFF


def test_reactivation_needs_the_record_open_to_the_subscriber(svc):
    """Blocked by the patient since, a professional cannot make their subscription live again:
    refused as a new subscription to that record is."""
    pid = _patient(svc)
    doctor = sample_actors(pid)["doctor"]
    sub = _fhir(svc, doctor, "http://127.0.0.1:9/hook", pid)
    Subscriptions(svc, doctor).cancel(sub.id)
    Records(svc.registry).block(pid, doctor.id)
    with pytest.raises(SubscriptionError) as new:
        _fhir(svc, doctor, "http://127.0.0.1:9/hook", pid)
    assert new.value.kind == SubscriptionError.FORBIDDEN
    with pytest.raises(SubscriptionError) as caught:
        Subscriptions(svc, doctor).reactivate(sub.id)
    assert caught.value.kind == SubscriptionError.FORBIDDEN
    assert Subscriptions(svc, doctor).get(sub.id).status == OFF


# --------------------------------------------------------------------------- SSRF
@pytest.mark.parametrize(("setting", "address"), [
    (DEFAULT, "fd00:ec2::254"),          # AWS instance metadata (IMDS), IPv6, in fc00::/7
    (DEFAULT, "100.100.100.200"),        # Alibaba Cloud metadata, in 100.64.0.0/10
    (DEFAULT, "192.0.0.192"),            # Oracle Cloud metadata, 192.0.0.0/24
    ("public", "192.0.0.192"),           # 192.0.0.0/24 is not globally reachable (IANA)
    ("public", "192.0.0.8"),
])
def test_cloud_metadata_services_are_not_destinations(svc, setting, address):
    """docs/notifications.md: link-local is never a destination because cloud metadata
    services answer there; those that answer elsewhere are not destinations either."""
    assert not Destinations.parse(setting).allows(ipaddress.ip_address(address))
    svc.settings = dataclasses.replace(svc.settings, notify_destinations=setting)
    pid = _patient(svc)
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(SubscriptionError) as caught:
        _fhir(svc, sample_actors(pid)["gp"], f"http://{host}/latest/meta-data/", pid)
    assert caught.value.kind == SubscriptionError.INVALID


def test_listed_networks_still_reach_a_metadata_address(svc):
    """What a deployment lists explicitly as a network is allowed, as for link-local."""
    assert Destinations.parse("public,private,100.100.100.200/32").allows(
        ipaddress.ip_address("100.100.100.200"))


# --------------------------------------------------------------------------- DSUB filters
ANY_PATIENT = "urn:uuid:742790e0-aba6-43d6-9f1f-e43ed9790b79"
SOAP = "{http://www.w3.org/2003/05/soap-envelope}"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    services = Services.open(Settings(data_dir=tmp_path_factory.mktemp("dsub4") / "data", insecure_dev=True,
                                      mllp_port=0, text_indexer=False))
    yield create_app(services=services).test_client()
    services.close()


def _subscribe_with(app, change: Callable[[etree._Element], None]):
    body = subscribe_body("http://127.0.0.1:9/dsub/notify", query=ANY_PATIENT)
    change(body)
    envelope = build_envelope(C.ACTION_SUBSCRIBE, body, message_id=f"urn:uuid:{uuid.uuid4()}",
                              to="http://localhost/xds/notification-broker")
    r = app.post("/xds/notification-broker", data=envelope,
                 headers={"Content-Type": f'application/soap+xml; charset=UTF-8; action="{C.ACTION_SUBSCRIBE}"'})
    answer = parse_xml(r.data).find(f"{SOAP}Body")[0]
    return r.status_code, answer.findtext(f"{SOAP}Code/{SOAP}Subcode/{SOAP}Value") or ""


def _message_content(body: etree._Element) -> None:
    content = etree.SubElement(body.find(f"{WSNT}Filter"), WSNT + "MessageContent",
                               Dialect="http://www.w3.org/TR/1999/REC-xpath-19991116")
    content.text = "//*[local-name()='Classification'][@nodeRepresentation='11488-4']"


def _foreign_filter(body: etree._Element) -> None:
    etree.SubElement(body.find(f"{WSNT}Filter"), "{urn:example:filters}OnlyUrgent").text = "true"


def _use_raw(body: etree._Element) -> None:
    policy = etree.Element(WSNT + "SubscriptionPolicy")
    etree.SubElement(policy, WSNT + "UseRaw")
    body.find(f"{WSNT}Filter").addnext(policy)


def _foreign_policy(body: etree._Element) -> None:
    policy = etree.Element(WSNT + "SubscriptionPolicy")
    etree.SubElement(policy, "{urn:example:policy}MaxMessagesPerDay").text = "3"
    body.find(f"{WSNT}Filter").addnext(policy)


@pytest.mark.parametrize(("change", "fault"), [
    (_message_content, "wsnt:InvalidFilterFault"),
    (_foreign_filter, "wsnt:InvalidFilterFault"),
    (_use_raw, "wsnt:UnsupportedPolicyRequestFault"),
    (_foreign_policy, "wsnt:UnrecognizedPolicyRequestFault"),
])
def test_a_filter_or_policy_the_broker_does_not_apply_is_refused_not_ignored(app, change, fault):
    """WS-BaseNotification 1.3 4.2 (Subscribe): a filter component the producer does not
    understand faults InvalidFilterFault; a policy element it does not recognize, or does not
    support (UseRaw: the Notify would not be the raw message asked for), faults. Ignored, the
    subscription would notify more (or otherwise) than was asked (docs/notifications.md: "A
    filter Partage cannot apply is refused, never ignored")."""
    status, subcode = _subscribe_with(app, change)
    assert (status, subcode) == (400, fault)                           # before: 200, subscribed
