"""DSUB on the wire without a server: ITI-52 Subscribe read into the model (and its faults),
ITI-53 Notify written from it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lxml import etree

from partage.access.actor import Actor
from partage.ebxml import constants as C
from partage.ebxml.ebrim import read_object_list
from partage.ebxml.soap import SoapError, parse_envelope
from partage.metadata.model import Code
from partage.notify.channels import Event
from partage.notify.model import DOCUMENT, DSUB, FULL, MINIMAL, SUBMISSION_SET, Subscription
from partage.xds.dsub import NotifyRenderer, read_subscribe, subscribe_response
from tests import factories as F
from tests.notify_support import LCM, RIM, WSNT, subscribe_body

PID = F.patient_id()
DOCS = "urn:uuid:aa2332d0-f8fe-11e0-be50-0800200c9a66"
ANY_PATIENT_DOCS = "urn:uuid:742790e0-aba6-43d6-9f1f-e43ed9790b79"
SETS = "urn:uuid:fbede94e-dbdc-4f6b-bc1f-d730e677cece"
FOLDERS = "urn:uuid:9376254e-da05-41f5-9af3-ac56d63d8ebd"
URL = "http://recipient.example/notify"


def test_a_full_document_subscription_with_filters():
    sub, ends = read_subscribe(subscribe_body(URL, patient=PID.format(), slots={
        "$XDSDocumentEntryClassCode": ["('10^^1.2.250.1.213.1.1.4.1','11^^1.2.250.1.213.1.1.4.1')"],
        "$XDSDocumentEntryEventCodeList": ["('E1^^1.2.3')", "('E2^^1.2.3')"],
        "$XDSDocumentEntryAuthorPerson": ["'%MARTIN%'"],
        "$XDSDocumentEntryAuthorInstitution": ["'Clinique des Lilas'"]}, termination="2030-05-31T00:00:00Z"))
    assert (sub.door, sub.topic, sub.payload, sub.endpoint) == (DSUB, DOCUMENT, FULL, URL)
    assert sub.patient_id == PID
    assert sub.filter.codes["class"] == [[Code("10", "1.2.250.1.213.1.1.4.1"), Code("11", "1.2.250.1.213.1.1.4.1")]]
    # the Values of one Slot are ORed, as in ITI-18 (ITI TF-2a 3.18.4.1.2.3.6; Slots of one name ANDed)
    assert sub.filter.codes["event"] == [[Code("E1", "1.2.3"), Code("E2", "1.2.3")]]
    assert sub.filter.author_persons == ["%MARTIN%"]
    assert sub.filter.author_institutions == ["Clinique des Lilas"]
    assert ends == datetime(2030, 5, 31, tzinfo=UTC).timestamp()


def test_minimal_multi_patient_and_submission_set_subscriptions():
    minimal, ends = read_subscribe(subscribe_body(URL, topic="ihe:MinimalDocumentEntry", query=ANY_PATIENT_DOCS))
    assert (minimal.topic, minimal.payload, minimal.patient_id, ends) == (DOCUMENT, MINIMAL, None, None)
    sets, _ = read_subscribe(subscribe_body(URL, patient=PID.format(), topic="ihe:SubmissionSetMetadata", query=SETS,
                                            slots={"$XDSSubmissionSetSourceId": ["'1.2.3'"]}))
    assert (sets.topic, sets.patient_id, sets.filter.source_ids) == (SUBMISSION_SET, PID, ["1.2.3"])


def test_the_topic_prefix_must_be_the_dsub_namespace():
    body = subscribe_body(URL, patient=PID.format())
    topic = body.find(f"{WSNT}Filter/{WSNT}TopicExpression")
    replaced = etree.Element(topic.tag, topic.attrib, nsmap={"x": "urn:other"})
    replaced.text = "x:FullDocumentEntry"
    topic.getparent().replace(topic, replaced)
    with pytest.raises(SoapError) as caught:
        read_subscribe(body)
    assert caught.value.subcode == "wsnt:TopicNotSupportedFault"


@pytest.mark.parametrize(("kw", "fault"), [
    ({"topic": "ihe:FolderMetadata"}, "wsnt:TopicNotSupportedFault"),
    ({"topic": "ihe:FullDocumentEntry", "query": FOLDERS}, "wsnt:TopicNotSupportedFault"),
    ({"query": "urn:uuid:00000000-0000-0000-0000-000000000000"}, "wsnt:InvalidFilterFault"),
    ({"query": SETS}, "wsnt:InvalidFilterFault"),                                     # topic and filter disagree
    ({"slots": {"$XDSDocumentEntryTitle": ["'x'"]}}, "wsnt:InvalidFilterFault"),      # not a DSUB filter: refused
    ({"slots": {"$XDSDocumentEntryClassCode": ["('10')"]}}, "wsnt:InvalidFilterFault"),   # code without scheme
    ({"patient": ""}, "wsnt:InvalidFilterFault"),                                     # patient-dependent: required
    ({"termination": "2001-01-01T00:00:00+02:00x"}, "wsnt:UnacceptableInitialTerminationTimeFault"),
    ({"termination": "P30D"}, "wsnt:UnacceptableInitialTerminationTimeFault"),
])
def test_refusals_are_ws_base_notification_faults(kw, fault):
    arguments = {"patient": PID.format(), **kw}
    with pytest.raises(SoapError) as caught:
        read_subscribe(subscribe_body(URL, **arguments))
    assert caught.value.code == "Sender" and caught.value.subcode == fault


def test_missing_parts():
    body = subscribe_body(URL, patient=PID.format())
    body.remove(body.find(f"{WSNT}ConsumerReference"))
    with pytest.raises(SoapError, match="ConsumerReference"):
        read_subscribe(body)
    body = subscribe_body(URL, patient=PID.format())
    body.remove(body.find(f"{WSNT}Filter"))
    with pytest.raises(SoapError) as caught:
        read_subscribe(body)
    assert caught.value.subcode == "wsnt:InvalidFilterFault"
    dialect = subscribe_body(URL, patient=PID.format())
    dialect.find(f"{WSNT}Filter/{WSNT}TopicExpression").set("Dialect", "urn:xpath")
    with pytest.raises(SoapError) as caught:
        read_subscribe(dialect)
    assert caught.value.subcode == "wsnt:TopicExpressionDialectUnknownFault"


def _subscription(payload: str = FULL, topic: str = DOCUMENT) -> Subscription:
    return Subscription(door=DSUB, topic=topic, payload=payload, endpoint=URL, actor=Actor(id="810001234567"),
                        ends_at=datetime(2030, 1, 1, tzinfo=UTC).timestamp(), patient_id=PID, id="abc",
                        base_url="https://partage.example")


def test_subscribe_response_names_the_subscription_and_its_end():
    response = subscribe_response(_subscription())
    assert response.findtext(f"{WSNT}SubscriptionReference/{{{C.WSA}}}Address") == \
        "https://partage.example/xds/subscription/abc"
    assert response.findtext(f"{WSNT}SubscriptionReference/{{{C.WSA}}}ReferenceParameters/{{{C.DSUB}}}SubscriptionId") == "abc"
    assert response.findtext(f"{WSNT}TerminationTime") == "2030-01-01T00:00:00Z"


@pytest.mark.parametrize("payload", [FULL, MINIMAL])
def test_notify_message(payload):
    doc = F.document(PID, "urn:uuid:5c7a7c34-87a8-4d1e-9a3c-6c2d0b8b0a01")
    event = Event("0b1e7a3c-1111-4222-8333-944455556666", _subscription(payload), [doc], 1, datetime.now(UTC))
    outgoing = NotifyRenderer().event(None, event)   # the renderer reads nothing for DSUB
    assert outgoing.content_type.startswith("application/soap+xml") and C.ACTION_NOTIFY in outgoing.content_type
    envelope = parse_envelope(outgoing.body)
    assert (envelope.action, envelope.message_id, envelope.to) == (
        C.ACTION_NOTIFY, "urn:uuid:0b1e7a3c-1111-4222-8333-944455556666", URL)
    message = envelope.body.find(f"{WSNT}NotificationMessage")
    topic = message.find(f"{WSNT}Topic")
    prefix, _, local = topic.text.partition(":")
    assert topic.nsmap[prefix] == C.DSUB and local == ("FullDocumentEntry" if payload == FULL else "MinimalDocumentEntry")
    assert message.findtext(f"{WSNT}ProducerReference/{{{C.WSA}}}Address") == \
        "https://partage.example/xds/notification-broker"
    objects = message.find(f"{WSNT}Message/{LCM}SubmitObjectsRequest/{RIM}RegistryObjectList")
    if payload == FULL:
        assert [d.unique_id for d in read_object_list(objects).documents] == [doc.unique_id]
    else:
        assert [(o.tag, o.get("id")) for o in objects] == [(f"{RIM}ObjectRef", doc.entry_uuid)]
        assert doc.unique_id.encode() not in outgoing.body


def test_submission_set_notification_carries_the_set_and_its_contents():
    request = F.submission(PID, [F.document(PID, "urn:uuid:5c7a7c34-87a8-4d1e-9a3c-6c2d0b8b0a02")], contents=False)
    event = Event("0b1e7a3c-1111-4222-8333-944455556667", _subscription(FULL, SUBMISSION_SET),
                  request.objects(), 1, datetime.now(UTC))
    envelope = parse_envelope(NotifyRenderer().event(None, event).body)
    assert envelope.body.findtext(f".//{WSNT}Topic") == "ihe:SubmissionSetMetadata"
    read = read_object_list(envelope.body.find(f".//{RIM}RegistryObjectList"))
    assert read.submission_set.unique_id == request.submission_set.unique_id and len(read.documents) == 1
