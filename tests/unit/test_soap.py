"""SOAP 1.2 + WS-Addressing envelopes, and the hardened XML parser under them."""

from __future__ import annotations

import pytest
from lxml import etree

from partage.ebxml import constants as C
from partage.ebxml.soap import (
    ACTION_SOAP_FAULT,
    ACTION_WSA_FAULT,
    SOAP11,
    WSA_ANONYMOUS,
    SoapError,
    build_envelope,
    fault_envelope,
    fault_of,
    parse_envelope,
)
from partage.xmlsafe import UnsafeXmlError, XmlInputError, XmlSyntaxError, parse_xml

S = f"{{{C.SOAP12}}}"
A = f"{{{C.WSA}}}"


def _query() -> etree._Element:
    root = etree.Element(f"{{{C.QUERY}}}AdhocQueryRequest", nsmap={"query": C.QUERY})
    etree.SubElement(root, f"{{{C.QUERY}}}ResponseOption", returnType="LeafClass")
    return root


def test_round_trip_keeps_addressing_and_body():
    data = build_envelope(C.ACTION_STORED_QUERY, _query(), message_id="urn:uuid:1",
                          to="http://example/xds/registry", reply_to=WSA_ANONYMOUS)
    message = parse_envelope(data)
    assert message.action == C.ACTION_STORED_QUERY
    assert message.message_id == "urn:uuid:1"
    assert message.to == "http://example/xds/registry"
    assert message.reply_to == WSA_ANONYMOUS
    assert message.body.tag == f"{{{C.QUERY}}}AdhocQueryRequest"
    assert not message.is_fault


def test_action_is_must_understand_and_message_id_is_a_urn_uuid():
    root = etree.fromstring(build_envelope(C.ACTION_REGISTER, _query()))
    action = root.find(f"{S}Header/{A}Action")
    assert action.get(f"{S}mustUnderstand") == "true"
    assert root.findtext(f"{S}Header/{A}MessageID").startswith("urn:uuid:")
    assert root.find(f"{S}Header/{A}RelatesTo") is None


def test_response_relates_to_the_request():
    message = parse_envelope(build_envelope("urn:x:Response", b"<r/>", relates_to="urn:uuid:42"))
    assert message.relates_to == "urn:uuid:42"
    assert message.body.tag == "r"


def test_bytes_body_is_spliced_without_its_xml_declaration():
    data = build_envelope("urn:a", b'<?xml version="1.0" encoding="UTF-8"?>\n<b xmlns="urn:b">x</b>')
    assert data.count(b"<?xml") == 1
    assert parse_envelope(data).body.text == "x"


def test_soap11_envelope_is_a_version_mismatch():
    data = (f'<e:Envelope xmlns:e="{SOAP11}"><e:Body><q/></e:Body></e:Envelope>').encode()
    with pytest.raises(SoapError) as caught:
        parse_envelope(data)
    assert caught.value.code == "VersionMismatch"


@pytest.mark.parametrize("data, subcode", [
    (b"<notsoap/>", ""),
    (f'<s:Envelope xmlns:s="{C.SOAP12}"><s:Header/></s:Envelope>'.encode(), ""),
    (f'<s:Envelope xmlns:s="{C.SOAP12}"><s:Body/></s:Envelope>'.encode(), ""),
    (f'<s:Envelope xmlns:s="{C.SOAP12}"><s:Body><q/></s:Body></s:Envelope>'.encode(),
     "wsa:MessageAddressingHeaderRequired"),
])
def test_unusable_envelopes_are_sender_faults(data, subcode):
    with pytest.raises(SoapError) as caught:
        parse_envelope(data)
    assert caught.value.code == "Sender"
    assert caught.value.subcode == subcode


def test_missing_action_is_allowed_when_the_caller_says_so():
    data = f'<s:Envelope xmlns:s="{C.SOAP12}"><s:Body><q/></s:Body></s:Envelope>'.encode()
    assert parse_envelope(data, require_action=False).action == ""


def test_two_actions_are_refused():
    data = (f'<s:Envelope xmlns:s="{C.SOAP12}" xmlns:a="{C.WSA}"><s:Header><a:Action>x</a:Action>'
            f'<a:Action>y</a:Action></s:Header><s:Body><q/></s:Body></s:Envelope>').encode()
    with pytest.raises(SoapError) as caught:
        parse_envelope(data)
    assert caught.value.subcode == "wsa:InvalidAddressingHeader"


def test_unknown_must_understand_header_is_refused():
    extra = etree.Element("{urn:other}Thing")
    extra.set(f"{S}mustUnderstand", "1")
    with pytest.raises(SoapError) as caught:
        parse_envelope(build_envelope("urn:a", b"<q/>", extra_headers=[extra]))
    assert caught.value.code == "MustUnderstand"


def test_security_header_is_understood():
    extra = etree.Element(f"{{{C.WSSE}}}Security")
    extra.set(f"{S}mustUnderstand", "true")
    assert parse_envelope(build_envelope("urn:a", b"<q/>", extra_headers=[extra])).action == "urn:a"


def test_fault_envelope_round_trip():
    data = fault_envelope(SoapError("Sender", "wsa:ActionNotSupported", "no such action"),
                          relates_to="urn:uuid:7")
    message = parse_envelope(data)
    assert message.is_fault
    assert message.action == ACTION_WSA_FAULT
    assert message.relates_to == "urn:uuid:7"
    error = fault_of(message)
    assert (error.code, error.subcode, error.reason) == ("Sender", "wsa:ActionNotSupported", "no such action")
    subcode = message.body.find(f"{S}Code/{S}Subcode/{S}Value")
    assert subcode.nsmap["wsa"] == C.WSA


def test_plain_fault_uses_the_soap_fault_action():
    message = parse_envelope(fault_envelope(SoapError("Receiver", "", "boom")))
    assert message.action == ACTION_SOAP_FAULT
    assert fault_of(message).code == "Receiver"


def test_fault_codes_are_checked():
    with pytest.raises(ValueError):
        SoapError("Client", "", "SOAP 1.1 code")


def test_fault_of_a_normal_body_is_none():
    assert fault_of(parse_envelope(build_envelope("urn:a", b"<q/>"))) is None


# --------------------------------------------------------------------------- xmlsafe
def test_doctype_is_refused_before_parsing():
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>')
    with pytest.raises(UnsafeXmlError, match="DOCTYPE"):
        parse_xml(bomb)


def test_external_entity_in_envelope_is_refused():
    xxe = (b'<!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&x;</s:Body></s:Envelope>')
    with pytest.raises(XmlInputError):
        parse_envelope(xxe)


def test_utf16_doctype_is_refused():
    with pytest.raises(UnsafeXmlError):
        parse_xml('<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>'.encode("utf-16"))


def test_size_and_depth_limits():
    with pytest.raises(UnsafeXmlError, match="exceeds"):
        parse_xml(b"<a>" + b"x" * 100 + b"</a>", max_bytes=50)
    deep = b"<a>" * 20 + b"</a>" * 20
    assert parse_xml(deep, max_depth=20).tag == "a"
    with pytest.raises(UnsafeXmlError, match="deeper"):
        parse_xml(deep, max_depth=19)
    with pytest.raises(UnsafeXmlError, match="deeper"):
        parse_xml(b"<a>" * 300 + b"</a>" * 300)


@pytest.mark.parametrize("data", [b"", b"   ", b"<a>", b"<a></b>", b"<a>&undefined;</a>", b"not xml"])
def test_malformed_input_is_a_syntax_error(data):
    with pytest.raises(XmlSyntaxError):
        parse_xml(data)


def test_parse_xml_takes_bytes_only():
    with pytest.raises(TypeError):
        parse_xml("<a/>")
