"""DSUB (ITI-52 / ITI-53) on the wire, checked against ITI TF-2 3.52 / 3.53 and
WS-BaseNotification 1.3 (in-process Flask client, --insecure-dev)."""

from __future__ import annotations

import uuid

import pytest
from lxml import etree

from partage.config import Settings
from partage.ebxml import constants as C
from partage.ebxml.soap import build_envelope
from partage.server.app import create_app
from partage.services import Services
from partage.xmlsafe import parse_xml
from tests.notify_support import WSA, WSNT, subscribe_body

SOAP = "{http://www.w3.org/2003/05/soap-envelope}"
ANY_PATIENT = "urn:uuid:742790e0-aba6-43d6-9f1f-e43ed9790b79"
ENDPOINT = "http://127.0.0.1:9/dsub/notify"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    services = Services.open(Settings(data_dir=tmp_path_factory.mktemp("dsubwire") / "data", insecure_dev=True,
                                      mllp_port=0, text_indexer=False))
    yield create_app(services=services).test_client()
    services.close()


def _post(app, path, action, body, extra=()):
    mid = f"urn:uuid:{uuid.uuid4()}"
    env = build_envelope(action, body, message_id=mid, to=f"http://localhost{path}", extra_headers=extra)
    r = app.post(path, data=env, headers={"Content-Type": f'application/soap+xml; charset=UTF-8; action="{action}"'})
    root = parse_xml(r.data)
    return r, mid, root


def _parts(root):
    header = root.find(f"{SOAP}Header")
    body = root.find(f"{SOAP}Body")[0]
    return header, body


def _sub(app, **kw):
    kw.setdefault("query", ANY_PATIENT)
    return _post(app, "/xds/notification-broker", C.ACTION_SUBSCRIBE, subscribe_body(ENDPOINT, **kw))


def _subcode(body):
    return body.findtext(f"{SOAP}Code/{SOAP}Subcode/{SOAP}Value") or ""


def test_subscribe_response_addressing_and_content_hold(app):
    r, mid, root = _sub(app)
    header, body = _parts(root)
    assert r.status_code == 200, r.data
    assert header.findtext(f"{WSA}Action") == C.ACTION_SUBSCRIBE_RESPONSE
    assert header.findtext(f"{WSA}RelatesTo") == mid and header.findtext(f"{WSA}MessageID")
    ref = body.find(f"{WSNT}SubscriptionReference")
    assert ref.findtext(f"{WSA}Address").startswith("http://localhost/xds/subscription/")
    assert ref.findtext(f"{WSA}ReferenceParameters/{{{C.DSUB}}}SubscriptionId")
    assert body.findtext(f"{WSNT}CurrentTime") and body.findtext(f"{WSNT}TerminationTime")


def test_two_topic_expressions_are_refused(app):
    """ITI TF-2 3.52.4.1.2 / Gazelle DSUB validator: each Subscribe SHALL contain exactly one
    wsnt:TopicExpression. A second one (another topic) is silently ignored today."""
    body = subscribe_body(ENDPOINT, query=ANY_PATIENT)
    topic = body.find(f"{WSNT}Filter/{WSNT}TopicExpression")
    extra = etree.Element(WSNT + "TopicExpression", Dialect=C.TOPIC_DIALECT_SIMPLE)
    extra.text = "ihe:MinimalDocumentEntry"
    topic.addnext(extra)
    r, _mid, root = _post(app, "/xds/notification-broker", C.ACTION_SUBSCRIBE, body)
    _header, answer = _parts(root)
    assert r.status_code == 400 and _subcode(answer) == "wsnt:InvalidFilterFault", r.data[:600]


def test_two_adhoc_queries_are_refused(app):
    """ITI TF-2 3.52.4.1.2: the wsnt:Filter holds one rim:AdhocQuery (the filter); a second one
    (here one patient's, with a class code) is silently ignored today."""
    body = subscribe_body(ENDPOINT, query=ANY_PATIENT)
    adhoc = body.find(f"{WSNT}Filter/{{{C.RIM}}}AdhocQuery")
    second = etree.SubElement(body.find(f"{WSNT}Filter"), f"{{{C.RIM}}}AdhocQuery", id=ANY_PATIENT)
    slot = etree.SubElement(etree.SubElement(second, f"{{{C.RIM}}}Slot", name="$XDSDocumentEntryClassCode"),
                            f"{{{C.RIM}}}ValueList")
    etree.SubElement(slot, f"{{{C.RIM}}}Value").text = "('10^^1.2.250.1.213.1.1.4.1')"
    assert adhoc is not None
    r, _mid, root = _post(app, "/xds/notification-broker", C.ACTION_SUBSCRIBE, body)
    assert r.status_code == 400 and _subcode(_parts(root)[1]) == "wsnt:InvalidFilterFault", r.data[:600]


@pytest.mark.parametrize(("change", "fault"), [
    ("no-consumer", "wsnt:SubscribeCreationFailedFault"), ("no-filter", "wsnt:InvalidFilterFault"),
    ("dialect", "wsnt:TopicExpressionDialectUnknownFault"), ("past", "wsnt:UnacceptableInitialTerminationTimeFault"),
    ("duration", "wsnt:UnacceptableInitialTerminationTimeFault")])
def test_subscribe_refusals_hold(app, change, fault):
    body = subscribe_body(ENDPOINT, query=ANY_PATIENT,
                          termination={"past": "2001-01-01T00:00:00Z", "duration": "PT1H"}.get(change, ""))
    if change == "no-consumer":
        body.remove(body.find(f"{WSNT}ConsumerReference"))
    if change == "no-filter":
        body.remove(body.find(f"{WSNT}Filter"))
    if change == "dialect":
        body.find(f"{WSNT}Filter/{WSNT}TopicExpression").set("Dialect", "urn:example:xpath")
    r, mid, root = _post(app, "/xds/notification-broker", C.ACTION_SUBSCRIBE, body)
    header, answer = _parts(root)
    assert r.status_code == 400 and _subcode(answer) == fault
    assert answer.findtext(f"{SOAP}Code/{SOAP}Value") == "soap:Sender" and header.findtext(f"{WSA}RelatesTo") == mid


def test_date_only_initial_termination_time_is_not_an_xsd_datetime(app):
    """WS-BaseNotification 1.3 4.2: InitialTerminationTime is an xsd:dateTime or xsd:duration;
    the broker refuses what it cannot read with UnacceptableInitialTerminationTimeFault (the broker's
    own doc: 'not an xsd:dateTime' is refused). '2030-06-30' is an xsd:date and is accepted today."""
    r, _mid, root = _sub(app, termination="2030-06-30")
    _header, answer = _parts(root)
    assert r.status_code == 400 and _subcode(answer) == "wsnt:UnacceptableInitialTerminationTimeFault", r.data[:600]


def test_second_unsubscribe_is_resource_unknown(app):
    """WS-BaseNotification 1.3 6.1.2 (Unsubscribe): a successful Unsubscribe destroys the
    Subscription resource; a message to a destroyed resource gets wsrf-r:ResourceUnknownFault.
    Today the second Unsubscribe of the same subscription answers UnsubscribeResponse again."""
    _r, _mid, root = _sub(app)
    address = _parts(root)[1].findtext(f"{WSNT}SubscriptionReference/{WSA}Address")
    path = address.replace("http://localhost", "")
    unsub = etree.Element(WSNT + "Unsubscribe", nsmap={"wsnt": C.WSNT})
    first, mid, root1 = _post(app, path, C.ACTION_UNSUBSCRIBE, unsub)
    header1, body1 = _parts(root1)
    assert first.status_code == 200 and body1.tag == WSNT + "UnsubscribeResponse"
    assert header1.findtext(f"{WSA}Action") == C.ACTION_UNSUBSCRIBE_RESPONSE and header1.findtext(f"{WSA}RelatesTo") == mid
    second, _mid2, root2 = _post(app, path, C.ACTION_UNSUBSCRIBE, etree.Element(WSNT + "Unsubscribe"))
    assert second.status_code == 400 and _subcode(_parts(root2)[1]) == "wsrf-r:ResourceUnknownFault", second.data[:600]


def test_unsubscribe_by_header_at_broker_and_unknown_id(app):
    _r, _mid, root = _sub(app)
    sid = _parts(root)[1].findtext(f"{WSNT}SubscriptionReference/{WSA}ReferenceParameters/{{{C.DSUB}}}SubscriptionId")
    hdr = etree.Element(f"{{{C.DSUB}}}SubscriptionId", nsmap={"dsub": C.DSUB})
    hdr.text = sid
    r, _m, root2 = _post(app, "/xds/notification-broker", C.ACTION_UNSUBSCRIBE,
                         etree.Element(WSNT + "Unsubscribe"), extra=[hdr])
    assert r.status_code == 200 and _parts(root2)[1].tag == WSNT + "UnsubscribeResponse"
    r, mid, root3 = _post(app, "/xds/subscription/nope", C.ACTION_UNSUBSCRIBE, etree.Element(WSNT + "Unsubscribe"))
    header, body = _parts(root3)
    assert r.status_code == 400 and _subcode(body) == "wsrf-r:ResourceUnknownFault"
    assert body.findtext(f"{SOAP}Code/{SOAP}Value") == "soap:Sender" and header.findtext(f"{WSA}RelatesTo") == mid


def test_action_not_supported_fault_relates_to_the_request(app):
    """WS-Addressing 1.0 SOAP Binding 6 / Core 3.4: a fault is a reply; its wsa:RelatesTo is the
    request's wsa:MessageID. A Subscribe sent to a subscription's address (wrong action there) is
    refused in the Header check, before the envelope is parsed, and the fault loses RelatesTo."""
    r, mid, root = _post(app, "/xds/subscription/abc", C.ACTION_SUBSCRIBE, subscribe_body(ENDPOINT, query=ANY_PATIENT))
    header, body = _parts(root)
    assert _subcode(body) == "wsa:ActionNotSupported"
    assert header.findtext(f"{WSA}RelatesTo") == mid
