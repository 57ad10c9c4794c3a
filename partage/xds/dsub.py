"""IHE DSUB on the wire: ITI-52 Subscribe / Unsubscribe in, ITI-53 Notify out.

WS-BaseNotification 1.3 over SOAP 1.2 with WS-Addressing, as ITI TF-2 3.52 / 3.53 say:

- Subscribe (`wsa:Action` .../NotificationProducer/SubscribeRequest) at `/xds/notification-broker`:
  `wsnt:ConsumerReference/wsa:Address` is where notifications go; `wsnt:Filter` holds a
  `wsnt:TopicExpression` (`ihe:FullDocumentEntry`, `ihe:MinimalDocumentEntry`,
  `ihe:SubmissionSetMetadata`, namespace urn:ihe:iti:dsub:2009) and a `rim:AdhocQuery` whose
  id says the kind of subscription and whose slots are its filters (FindDocuments' and
  FindSubmissionSets' syntax, read by `sqparams`); `wsnt:InitialTerminationTime` (an
  xsd:dateTime) is when it ends. The answer's `wsnt:SubscriptionReference` is the
  subscription's own address, `/xds/subscription/<id>`.
- Unsubscribe (.../SubscriptionManager/UnsubscribeRequest) at that address.
- Notify (.../NotificationConsumer/Notify), sent by the outbox sender through `NotifyRenderer`:
  the topic, and in `wsnt:Message` an `lcm:SubmitObjectsRequest` holding the DocumentEntries
  (full: ExtrinsicObjects; minimal: ObjectRefs) or the SubmissionSet with its contents.

Refusals are SOAP 1.2 Faults with the WS-BaseNotification fault as subcode
(wsnt:InvalidFilterFault, wsnt:TopicNotSupportedFault, wsnt:UnacceptableInitialTerminationTimeFault,
wsnt:SubscribeCreationFailedFault, wsrf-r:ResourceUnknownFault); a request without valid
credentials gets wsse:FailedAuthentication, as every XDS.b request does.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from ..access import audit
from ..access.actor import Actor
from ..ebxml import constants as C
from ..ebxml.ebrim import write_object_list
from ..ebxml.soap import SoapError, build_envelope, header_of
from ..metadata.datatypes import CX, DatatypeError
from ..metadata.errors import XdsErrors
from ..metadata.model import DocumentEntry, ObjectRef
from ..notify.channels import Event, Outgoing
from ..notify.model import (
    DOCUMENT,
    DSUB,
    FULL,
    MINIMAL,
    OFF,
    SUBMISSION_SET,
    Filter,
    Subscription,
)
from ..notify.subscriptions import SubscriptionError, Subscriptions
from ..services import Services
from ..xmlsafe import XmlInputError, parse_xml
from .sqparams import Params
from .storedquery import adhoc_slots, codes_of, document_filter, like_pattern

WSNT, WSA, RIM, LCM = (f"{{{ns}}}" for ns in (C.WSNT, C.WSA, C.RIM, C.LCM))
BROKER_PATH = "/xds/notification-broker"
SUBSCRIPTION_PATH = "/xds/subscription"
TOPICS = {C.TOPIC_FULL_DOCUMENT_ENTRY: (DOCUMENT, FULL), C.TOPIC_MINIMAL_DOCUMENT_ENTRY: (DOCUMENT, MINIMAL),
          C.TOPIC_SUBMISSION_SET: (SUBMISSION_SET, FULL)}
QUERY_TOPIC = {"SubscriptionForDocumentEntry": DOCUMENT, "SubscriptionForPatientIndependentDocumentEntry": DOCUMENT,
               "SubscriptionForSubmissionSet": SUBMISSION_SET,
               "SubscriptionForPatientIndependentSubmissionSet": SUBMISSION_SET}
PATIENT_SLOT = {"SubscriptionForDocumentEntry": "$XDSDocumentEntryPatientId",
                "SubscriptionForSubmissionSet": "$XDSSubmissionSetPatientId"}
FAULT_OF = {SubscriptionError.INVALID: "wsnt:SubscribeCreationFailedFault",
            SubscriptionError.FORBIDDEN: "wsnt:SubscribeCreationFailedFault",
            SubscriptionError.TERMINATION: "wsnt:UnacceptableInitialTerminationTimeFault",
            SubscriptionError.UNSUPPORTED: "wsnt:SubscribeCreationFailedFault",
            SubscriptionError.NOT_FOUND: "wsrf-r:ResourceUnknownFault"}
# xsd:dateTime (XML Schema 1.0 Part 2, 3.2.7): a date AND a time, seconds required, zone optional.
_XSD_DATETIME = re.compile(r"-?\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?")
_NOBODY = Actor(id="", kind="unknown")   # until the engine names the authenticated subscriber
# The consumer's wsa:ReferenceParameters, kept to be sent back with every Notify: bounded,
# as everything a subscriber makes the server store and repeat.
MAX_REFERENCE_PARAMETERS_BYTES = 4096
REFERENCE_PARAMETERS = "referenceParameters"   # their key in Subscription.resource


def _fault(code: str, reason: str) -> SoapError:
    return SoapError("Sender", code, reason)


# --------------------------------------------------------------------------- reading
def _topic(element: etree._Element | None) -> tuple[str, str]:
    """(topic, payload) of the wsnt:TopicExpression."""
    if element is None:
        raise _fault("wsnt:InvalidFilterFault", "wsnt:Filter has no wsnt:TopicExpression")
    dialect = element.get("Dialect", C.TOPIC_DIALECT_SIMPLE)
    if dialect not in (C.TOPIC_DIALECT_SIMPLE, C.TOPIC_DIALECT_CONCRETE):
        raise _fault("wsnt:TopicExpressionDialectUnknownFault", f"topic expression dialect {dialect!r} is not known")
    prefix, _, local = (element.text or "").strip().rpartition(":")
    if prefix and prefix not in element.nsmap:   # WS-Topics 1.3 7.1: a QName, its prefix bound in scope
        raise _fault("wsnt:InvalidTopicExpressionFault",
                     f"topic expression {(element.text or '').strip()!r}: the prefix {prefix!r} is not declared")
    namespace = element.nsmap.get(prefix) if prefix else None
    if namespace not in (None, C.DSUB) or local not in TOPICS:
        raise _fault("wsnt:TopicNotSupportedFault",
                     f"topic {(element.text or '').strip()!r} is not served; this broker serves "
                     f"{', '.join('ihe:' + t for t in TOPICS)} (namespace {C.DSUB})")
    return TOPICS[local]


def _termination(element: etree._Element | None) -> float | None:
    if element is None or not (element.text or "").strip():
        return None
    text = (element.text or "").strip()
    if text.startswith(("P", "-P")):
        raise _fault("wsnt:UnacceptableInitialTerminationTimeFault",
                     f"InitialTerminationTime {text!r}: give an absolute xsd:dateTime (durations are not accepted)")
    try:
        if not _XSD_DATETIME.fullmatch(text):
            raise ValueError(text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _fault("wsnt:UnacceptableInitialTerminationTimeFault",
                     f"InitialTerminationTime {text!r} is not an xsd:dateTime") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def read_subscribe(body: etree._Element) -> tuple[Subscription, float | None]:
    """A wsnt:Subscribe as a subscription to create (actor, status, id filled by the engine)
    and the termination time asked for; SoapError (a WS-BaseNotification fault) if unusable."""
    if body.tag != WSNT + "Subscribe":
        raise _fault("", f"expected wsnt:Subscribe in the body, got {body.tag}")
    endpoint = (body.findtext(f"{WSNT}ConsumerReference/{WSA}Address") or "").strip()
    if not endpoint:
        raise _fault("wsnt:SubscribeCreationFailedFault",
                     "wsnt:ConsumerReference/wsa:Address (where notifications go) is required")
    reference_parameters = _reference_parameters(body.find(f"{WSNT}ConsumerReference/{WSA}ReferenceParameters"))
    filter_element = body.find(f"{WSNT}Filter")
    if filter_element is None:
        raise _fault("wsnt:InvalidFilterFault", "wsnt:Filter (topic and AdhocQuery) is required")
    # ITI TF-2 3.52.4.1.2: one topic, one filter query; a second one would be ignored.
    if len(filter_element.findall(f"{WSNT}TopicExpression")) > 1 or len(filter_element.findall(f"{RIM}AdhocQuery")) > 1:
        raise _fault("wsnt:InvalidFilterFault", "wsnt:Filter holds exactly one wsnt:TopicExpression and one rim:AdhocQuery")
    # WS-BaseNotification 1.3 4.2: a filter component the producer does not understand is a
    # fault, never ignored (ignored, it would notify more than was asked); so is a policy.
    unknown = [child.tag for child in filter_element
               if isinstance(child.tag, str) and child.tag not in (WSNT + "TopicExpression", RIM + "AdhocQuery")]
    if unknown:
        raise _fault("wsnt:InvalidFilterFault", f"wsnt:Filter component {unknown[0]} is not served (a "
                                                "wsnt:TopicExpression and a rim:AdhocQuery are)")
    _policy(body.find(f"{WSNT}SubscriptionPolicy"))
    topic, payload = _topic(filter_element.find(f"{WSNT}TopicExpression"))
    adhoc = filter_element.find(f"{RIM}AdhocQuery")
    if adhoc is None:
        raise _fault("wsnt:InvalidFilterFault", "wsnt:Filter has no rim:AdhocQuery")
    query = C.DSUB_QUERIES.get(adhoc.get("id", ""))
    if query is None or query not in QUERY_TOPIC:
        raise _fault("wsnt:InvalidFilterFault" if query is None else "wsnt:TopicNotSupportedFault",
                     f"subscription filter {adhoc.get('id', '')!r} is not served (DocumentEntry and "
                     "SubmissionSet subscriptions, patient-dependent or not)")
    if QUERY_TOPIC[query] != topic:
        raise _fault("wsnt:InvalidFilterFault", f"the topic and the filter {query} do not agree")
    try:
        params = Params(query, adhoc_slots(adhoc))
    except XdsErrors as exc:
        raise _fault("wsnt:InvalidFilterFault", "; ".join(e.context for e in exc.errors)) from exc
    if params.warnings:   # an ignored filter would notify more than was asked: refuse it
        raise _fault("wsnt:InvalidFilterFault", "; ".join(e.context for e in params.warnings))
    patient = None
    if query in PATIENT_SLOT:
        try:
            patient = CX.parse(params.value(PATIENT_SLOT[query]), strict=False)
        except DatatypeError as exc:
            raise _fault("wsnt:InvalidFilterFault", f"{PATIENT_SLOT[query]}: {exc}") from exc
    if topic == DOCUMENT:
        documents = document_filter(params)
        chosen = Filter(codes=documents.codes, author_persons=documents.author_persons,
                        author_institutions=params.values("$XDSDocumentEntryAuthorInstitution"))
    else:
        content = params.values("$XDSSubmissionSetContentType")
        chosen = Filter(source_ids=params.values("$XDSSubmissionSetSourceId"),
                        author_persons=[like_pattern(v) for v in params.values("$XDSSubmissionSetAuthorPerson")],
                        content_types=[codes_of(content)] if content else [])
    sub = Subscription(door=DSUB, topic=topic, payload=payload, endpoint=endpoint, actor=_NOBODY,
                       ends_at=0.0, patient_id=patient, filter=chosen, mime_type="application/soap+xml",
                       resource={REFERENCE_PARAMETERS: reference_parameters} if reference_parameters else {})
    return sub, _termination(body.find(f"{WSNT}InitialTerminationTime"))


def _policy(element: etree._Element | None) -> None:
    """wsnt:SubscriptionPolicy: none is served. UseRaw (WS-BaseNotification 1.3 4.2) is known
    but not supported (ITI-53 is a wrapped wsnt:Notify); anything else is not recognized."""
    for child in element if element is not None else ():
        if not isinstance(child.tag, str):
            continue
        if child.tag == WSNT + "UseRaw":
            raise _fault("wsnt:UnsupportedPolicyRequestFault",
                         "wsnt:UseRaw is not supported: ITI-53 notifications are wrapped (wsnt:Notify)")
        raise _fault("wsnt:UnrecognizedPolicyRequestFault", f"subscription policy {child.tag} is not recognized")


def _reference_parameters(element: etree._Element | None) -> list[str]:
    """The consumer EPR's reference parameters, each serialized with its in-scope namespaces:
    WS-Addressing 1.0 SOAP Binding 2.3 has every message sent to that EPR carry them as
    header blocks (the consumer routes or correlates its notifications on them)."""
    if element is None:
        return []
    blocks = [etree.tostring(child, encoding="unicode") for child in element if isinstance(child.tag, str)]
    if sum(len(b.encode()) for b in blocks) > MAX_REFERENCE_PARAMETERS_BYTES:
        raise _fault("wsnt:SubscribeCreationFailedFault",
                     f"wsnt:ConsumerReference/wsa:ReferenceParameters exceed {MAX_REFERENCE_PARAMETERS_BYTES} bytes")
    return blocks


def reference_headers(sub: Subscription) -> list[etree._Element]:
    """The header blocks a Notify to `sub`'s consumer carries: its reference parameters,
    each marked wsa:IsReferenceParameter="true" (WS-Addressing 1.0 SOAP Binding 2.3)."""
    headers = []
    for text in sub.resource.get(REFERENCE_PARAMETERS) or []:
        try:
            block = parse_xml(str(text).encode())
        except XmlInputError:   # read and serialized by lxml at Subscribe: not expected
            continue
        block.set(WSA + "IsReferenceParameter", "true")
        headers.append(block)
    return headers


# --------------------------------------------------------------------------- writing
def _time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def subscription_address(sub: Subscription) -> str:
    return f"{sub.base_url}{SUBSCRIPTION_PATH}/{sub.id}"


def _reference(parent: etree._Element, tag: str, address: str, subscription_id: str = "") -> None:
    ref = etree.SubElement(parent, WSNT + tag)
    etree.SubElement(ref, WSA + "Address").text = address
    if subscription_id:
        params = etree.SubElement(ref, WSA + "ReferenceParameters")
        etree.SubElement(params, f"{{{C.DSUB}}}SubscriptionId", nsmap={"dsub": C.DSUB}).text = subscription_id


def subscribe_response(sub: Subscription) -> etree._Element:
    root = etree.Element(WSNT + "SubscribeResponse", nsmap={"wsnt": C.WSNT, "wsa": C.WSA})
    _reference(root, "SubscriptionReference", subscription_address(sub), sub.id)
    etree.SubElement(root, WSNT + "CurrentTime").text = _time(time.time())
    etree.SubElement(root, WSNT + "TerminationTime").text = _time(sub.ends_at)
    return root


def notify_body(event: Event) -> etree._Element:
    """ITI-53: the wsnt:Notify of one event."""
    sub = event.subscription
    root = etree.Element(WSNT + "Notify", nsmap={"wsnt": C.WSNT, "wsa": C.WSA, "ihe": C.DSUB,
                                                 "lcm": C.LCM, "rim": C.RIM})
    message = etree.SubElement(root, WSNT + "NotificationMessage")
    _reference(message, "SubscriptionReference", subscription_address(sub), sub.id)
    topic = next(name for name, kind in TOPICS.items() if kind == (sub.topic, sub.payload))
    etree.SubElement(message, WSNT + "Topic", Dialect=C.TOPIC_DIALECT_SIMPLE).text = f"ihe:{topic}"
    _reference(message, "ProducerReference", f"{sub.base_url}{BROKER_PATH}")
    submit = etree.SubElement(etree.SubElement(message, WSNT + "Message"), LCM + "SubmitObjectsRequest")
    if sub.payload == MINIMAL:
        objects: list[Any] = [ObjectRef(o.entry_uuid, o.home_community_id) for o in event.objects
                              if isinstance(o, DocumentEntry)]
    else:
        objects = list(event.objects)
    write_object_list(objects, submit)
    return root


class NotifyRenderer:
    """The sender's DSUB channel (partage.notify.channels.Renderer)."""

    action = "ITI-53"

    def event(self, services: Services, event: Event) -> Outgoing:  # noqa: ARG002 — the Renderer protocol's signature
        envelope = build_envelope(C.ACTION_NOTIFY, notify_body(event), message_id=f"urn:uuid:{event.delivery_id}",
                                  to=event.subscription.endpoint, extra_headers=reference_headers(event.subscription))
        return Outgoing(envelope, f'application/soap+xml; charset=UTF-8; action="{C.ACTION_NOTIFY}"')


# --------------------------------------------------------------------------- the operations
# The doors' transport (partage.xds.endpoints.dispatch) reads the request within the routes'
# limits, checks the credentials as soon as the Header has streamed in, and answers a
# SoapError raised here as a SOAP Fault; these only read the body and answer it.
def _header_subscription_id(payload: etree._Element) -> str:
    header = header_of(payload)
    if header is None:
        return ""
    return (header.findtext(f"{{{C.DSUB}}}SubscriptionId") or "").strip()


def _refused(exc: SubscriptionError) -> SoapError:
    if exc.kind == SubscriptionError.FORBIDDEN:
        audit.note_denied(exc.message)
    return _fault(FAULT_OF.get(exc.kind, "wsnt:SubscribeCreationFailedFault"), exc.message)


def subscribe(services: Services, actor: Actor, body: etree._Element, base_url: str) -> etree._Element:
    """ITI-52 Subscribe by an authenticated actor: the wsnt:SubscribeResponse, or SoapError."""
    try:
        subscriptions = Subscriptions(services, actor)
        wanted, ends = read_subscribe(body)
        wanted.base_url = base_url
        wanted.ends_at = subscriptions.end_time(ends)
        return subscribe_response(subscriptions.create(wanted, handshake=False))
    except SubscriptionError as exc:
        raise _refused(exc) from None


def unsubscribe(services: Services, actor: Actor, body: etree._Element, subscription_id: str) -> etree._Element:
    """ITI-52 Unsubscribe of the subscription at `subscription_id` (the address it was given)
    or named by the dsub:SubscriptionId header: the wsnt:UnsubscribeResponse, or SoapError."""
    subscription_id = subscription_id or _header_subscription_id(body)
    if not subscription_id:
        raise _fault("wsrf-r:ResourceUnknownFault", "Unsubscribe goes to the subscription's address (its "
                                                    "SubscriptionReference) or carries its dsub:SubscriptionId")
    if body.tag != WSNT + "Unsubscribe":
        raise _fault("", f"expected wsnt:Unsubscribe in the body, got {body.tag}")
    try:
        subscriptions = Subscriptions(services, actor)
        # WS-BaseNotification 1.3 6.1.2: Unsubscribe destroys the subscription resource; once
        # unsubscribed (or ended) it is unknown, as one that never existed.
        current = subscriptions.get(subscription_id)
        if current.status == OFF or current.ends_at <= time.time():
            raise SubscriptionError(SubscriptionError.NOT_FOUND, f"no subscription {subscription_id} is yours")
        subscriptions.cancel(subscription_id)
    except SubscriptionError as exc:
        raise _refused(exc) from None
    return etree.Element(WSNT + "UnsubscribeResponse", nsmap={"wsnt": C.WSNT})
