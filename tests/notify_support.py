"""Test support for notifications: a subscriber's endpoint and an SMTP server, both real
servers on free ports run by the test, and the DSUB / FHIR subscription requests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from lxml import etree

from partage.ebxml import constants as C
from partage.ebxml.soap import parse_envelope
from tests.support import free_port

WSNT, WSA, RIM, LCM = (f"{{{ns}}}" for ns in (C.WSNT, C.WSA, C.RIM, C.LCM))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float                     # time.monotonic() on arrival

    def soap(self):
        return parse_envelope(self.body)

    @property
    def message_id(self) -> str:
        return self.soap().message_id or ""


@dataclass
class Endpoint:
    """A subscriber's HTTP endpoint: records every POST, answers `status` (or refuses the
    connection when not started)."""

    port: int = field(default_factory=free_port)
    status: int = 200
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notify"

    def start(self) -> Endpoint:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with owner._cond:
                    owner.received.append(Received(self.path, dict(self.headers.items()), body, time.monotonic()))
                    owner._cond.notify_all()
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait(self, count: int, timeout: float) -> list[Received]:
        """The first `count` requests, waiting at most `timeout` s for them (fewer if they never come)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return list(self.received)

    def __enter__(self) -> Endpoint:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Inbox:
    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.cond = threading.Condition()
        self.refuse = refuse

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.cond:
            self.messages.append(message_from_bytes(envelope.original_content or envelope.content,
                                                    policy=policy.default))
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self.cond.notify_all()
        return "250 OK"


class SmtpServer:
    """A real SMTP server (aiosmtpd) on a free port, keeping what it receives."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.port = free_port()
        self.inbox = _Inbox(refuse)
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[EmailMessage]:
        return list(self.inbox.messages)

    def wait(self, count: int, timeout: float) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        with self.inbox.cond:
            while len(self.inbox.messages) < count and (left := deadline - time.monotonic()) > 0:
                self.inbox.cond.wait(left)
            return list(self.inbox.messages)


# --------------------------------------------------------------------------- DSUB requests
def subscribe_body(endpoint: str, *, patient: str = "", topic: str = "ihe:FullDocumentEntry",
                   query: str = "urn:uuid:aa2332d0-f8fe-11e0-be50-0800200c9a66",
                   slots: dict[str, list[str]] | None = None, termination: str = "") -> etree._Element:
    body = etree.Element(WSNT + "Subscribe", nsmap={"wsnt": C.WSNT, "wsa": C.WSA, "rim": C.RIM, "ihe": C.DSUB})
    etree.SubElement(etree.SubElement(body, WSNT + "ConsumerReference"), WSA + "Address").text = endpoint
    filter_element = etree.SubElement(body, WSNT + "Filter")
    etree.SubElement(filter_element, WSNT + "TopicExpression", Dialect=C.TOPIC_DIALECT_SIMPLE).text = topic
    adhoc = etree.SubElement(filter_element, RIM + "AdhocQuery", id=query)
    all_slots = dict(slots or {})
    if patient:
        name = "$XDSDocumentEntryPatientId" if "DocumentEntry" in topic else "$XDSSubmissionSetPatientId"
        all_slots[name] = [f"'{patient}'"]
    for name, values in all_slots.items():
        value_list = etree.SubElement(etree.SubElement(adhoc, RIM + "Slot", name=name), RIM + "ValueList")
        for value in values:
            etree.SubElement(value_list, RIM + "Value").text = value
    if termination:
        etree.SubElement(body, WSNT + "InitialTerminationTime").text = termination
    return body


def subscribe(client, base_url: str, endpoint: str, **kw):
    """ITI-52 Subscribe through an XdsClient (its security header); returns the reply."""
    return client.call(f"{base_url}/xds/notification-broker", C.ACTION_SUBSCRIBE, subscribe_body(endpoint, **kw))


def subscription_address(reply) -> str:
    return reply.body.findtext(f"{WSNT}SubscriptionReference/{WSA}Address") or ""


def unsubscribe(client, address: str):
    return client.call(address, C.ACTION_UNSUBSCRIBE, etree.Element(WSNT + "Unsubscribe", nsmap={"wsnt": C.WSNT}))


def notified_documents(received: Received) -> tuple[str, list[str]]:
    """(topic, ids) of an ITI-53 Notify: ExtrinsicObject ids (full) or ObjectRef ids (minimal)."""
    envelope = received.soap()
    assert envelope.action == C.ACTION_NOTIFY, envelope.action
    message = envelope.body.find(f"{WSNT}NotificationMessage")
    topic = message.findtext(f"{WSNT}Topic")
    objects = message.find(f"{WSNT}Message/{LCM}SubmitObjectsRequest/{RIM}RegistryObjectList")
    ids = [o.get("id") for o in objects if isinstance(o.tag, str)
           and o.tag in (RIM + "ExtrinsicObject", RIM + "ObjectRef", RIM + "RegistryPackage")]
    return topic, ids


# --------------------------------------------------------------------------- FHIR subscriptions
DSUBM = "https://profiles.ihe.net/ITI/DSUBm/SubscriptionTopic/"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"


def fhir_subscription(endpoint: str, criteria: str, *, topic: str = "DSUBm-SubscriptionTopic-DocumentReference-PatientDependent",
                      payload: str = "full-resource", mime: str = "application/fhir+json",
                      end: str = "", headers: list[str] | None = None) -> dict:
    resource = {"resourceType": "Subscription", "status": "requested", "reason": "test",
                "criteria": DSUBM + topic,
                "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": criteria}]},
                "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": mime,
                            "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content",
                                                        "valueCode": payload}]}}}
    if end:
        resource["end"] = end
    if headers:
        resource["channel"]["header"] = headers
    return resource
