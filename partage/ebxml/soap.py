"""SOAP 1.2 envelopes with WS-Addressing, as IHE ITI TF-2 Appendix V requires.

One module for both sides: the server parses requests and writes responses and faults,
the test-kit client writes requests and parses responses. Requests carry wsa:Action
(mustUnderstand), wsa:MessageID and optionally wsa:ReplyTo / wsa:To; responses carry
wsa:Action and wsa:RelatesTo. XML is parsed with `partage.xmlsafe` only.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from ..xmlsafe import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, parse_xml, xml_text
from . import constants as C

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
XML_NS = "http://www.w3.org/XML/1998/namespace"
WSA_ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"
ACTION_SOAP_FAULT = "http://www.w3.org/2005/08/addressing/soap/fault"
ACTION_WSA_FAULT = "http://www.w3.org/2005/08/addressing/fault"
WSA_NONE = "http://www.w3.org/2005/08/addressing/none"
# The reply addresses a request may name: the back-channel (anonymous), or none (no reply wanted).
BACK_CHANNEL = frozenset({WSA_ANONYMOUS, WSA_NONE})

S = f"{{{C.SOAP12}}}"
A = f"{{{C.WSA}}}"
FAULT_CODES = ("VersionMismatch", "MustUnderstand", "DataEncodingUnknown", "Sender", "Receiver")
# Header namespaces this stack processes itself (wsse:Security goes to the access layer).
UNDERSTOOD = frozenset({C.WSA, C.WSSE})
# The roles this node plays (SOAP 1.2 Part 1 2.2): a header block is targeted at it when its
# env:role is absent or one of these; blocks for other roles ("none" included) are not processed.
ROLE_NEXT = f"{C.SOAP12}/role/next"
ROLE_ULTIMATE_RECEIVER = f"{C.SOAP12}/role/ultimateReceiver"
OUR_ROLES = frozenset({"", ROLE_NEXT, ROLE_ULTIMATE_RECEIVER})
# Prefixes a fault subcode may use, e.g. "wsa:ActionNotSupported".
SUBCODE_PREFIXES = {"wsa": C.WSA, "wsse": C.WSSE, "xdsb": C.XDSB, "wsnt": C.WSNT, "wsrf-r": C.WSRF_R}


class SoapError(Exception):
    """A SOAP fault to send (server side) or received (client side).

    code is one of the SOAP 1.2 fault codes ("Sender", "Receiver", "VersionMismatch",
    "MustUnderstand", "DataEncodingUnknown"); subcode is a prefixed name such as
    "wsa:ActionNotSupported" (or "" for none), subsubcode one more level of it
    ("wsa:ActionMismatch" under "wsa:InvalidAddressingHeader"); reason is for humans;
    detail, the elements of the fault's soap:Detail (WS-Addressing's ProblemAction...).
    """

    def __init__(self, code: str, subcode: str = "", reason: str = "", *, subsubcode: str = "",
                 detail: Iterable[etree._Element] = ()) -> None:
        if code not in FAULT_CODES:
            raise ValueError(f"{code!r} is not a SOAP 1.2 fault code ({', '.join(FAULT_CODES)})")
        super().__init__(reason or code)
        self.code = code
        self.subcode = subcode
        self.subsubcode = subsubcode
        self.reason = reason
        self.detail = list(detail)

    def __repr__(self) -> str:
        return f"SoapError({self.code!r}, {self.subcode!r}, {self.reason!r})"


@dataclass
class SoapRequest:
    """A parsed envelope: addressing headers, the Header element and the body payload."""

    action: str
    message_id: str | None
    reply_to: str | None
    to: str | None
    header: etree._Element | None
    body: etree._Element
    relates_to: str | None = None

    @property
    def is_fault(self) -> bool:
        return self.body.tag == S + "Fault"


def new_message_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


# --------------------------------------------------------------------------- writing
_XML_DECL = re.compile(rb"\A(?:\xef\xbb\xbf)?\s*<\?xml[^>]*\?>\s*")


def _body_bytes(body: etree._Element | bytes) -> bytes:
    if isinstance(body, bytes | bytearray):
        return _XML_DECL.sub(b"", bytes(body), count=1).strip()
    return etree.tostring(body, encoding="UTF-8", xml_declaration=False)


def build_envelope(action: str, body: etree._Element | bytes, *, message_id: str | None = None,
                   relates_to: str | None = None, to: str | None = None,
                   reply_to: str | None = None,
                   extra_headers: Iterable[etree._Element] = ()) -> bytes:
    """A serialized SOAP 1.2 envelope around `body` (an element, or the bytes of one).

    wsa:Action is marked mustUnderstand; wsa:MessageID is generated when not given.
    Bytes bodies are spliced in as they are (no re-parse), so a large response built
    elsewhere is not copied through a tree.
    """
    if not action:
        raise ValueError("a SOAP 1.2 / WS-Addressing message needs an action")
    envelope = etree.Element(S + "Envelope", nsmap={"soap": C.SOAP12, "wsa": C.WSA})
    header = etree.SubElement(envelope, S + "Header")
    action_el = etree.SubElement(header, A + "Action")
    action_el.set(S + "mustUnderstand", "true")
    action_el.text = action
    etree.SubElement(header, A + "MessageID").text = message_id or new_message_id()
    if relates_to:
        etree.SubElement(header, A + "RelatesTo").text = relates_to
    if reply_to:
        etree.SubElement(etree.SubElement(header, A + "ReplyTo"), A + "Address").text = reply_to
    if to:
        etree.SubElement(header, A + "To").text = to
    for extra in extra_headers:
        header.append(extra)
    marker = f"body-{uuid.uuid4().hex}"
    etree.SubElement(envelope, S + "Body").text = marker   # replaced by the body below
    head, found, tail = etree.tostring(envelope, encoding="UTF-8",
                                       xml_declaration=False).partition(marker.encode())
    if not found:
        raise AssertionError("body placeholder lost while serializing the envelope")
    return b'<?xml version="1.0" encoding="UTF-8"?>' + head + _body_bytes(body) + tail


def fault_action(error: SoapError) -> str:
    """The [action] of the fault message for `error` (WS-Addressing 1.0 SOAP Binding 6: the
    addressing faults' own action, else the SOAP fault action), in its envelope's wsa:Action
    and in the action parameter of its Content-Type alike."""
    is_wsa = bool(error.subcode) and _subcode_name(error.subcode)[0] == C.WSA
    return ACTION_WSA_FAULT if is_wsa else ACTION_SOAP_FAULT


def fault_envelope(error: SoapError, relates_to: str | None = None) -> bytes:
    """A SOAP 1.2 Fault for `error`, addressed as a reply to `relates_to` when known."""
    fault = etree.Element(S + "Fault", nsmap={"soap": C.SOAP12})
    code = etree.SubElement(fault, S + "Code")
    etree.SubElement(code, S + "Value").text = f"soap:{error.code}"
    parent = code
    for name in (error.subcode, error.subsubcode if error.subcode else ""):
        if not name:
            break
        namespace, local, prefix = _subcode_name(name)
        parent = etree.SubElement(parent, S + "Subcode")
        value = etree.SubElement(parent, S + "Value", nsmap={prefix: namespace} if namespace else None)
        value.text = f"{prefix}:{local}" if namespace else local
    reason = etree.SubElement(fault, S + "Reason")
    text = etree.SubElement(reason, S + "Text")
    text.set(f"{{{XML_NS}}}lang", "en")
    text.text = xml_text(error.reason or error.code)
    if error.detail:
        detail = etree.SubElement(fault, S + "Detail")
        for element in error.detail:
            detail.append(copy.deepcopy(element))
    return build_envelope(fault_action(error), fault, relates_to=relates_to)


def problem_action(action: str) -> etree._Element:
    """The [Detail] of wsa:ActionNotSupported and wsa:ActionMismatch (WS-Addressing 1.0 SOAP
    Binding 6.4): wsa:ProblemAction naming the action received."""
    problem = etree.Element(A + "ProblemAction", nsmap={"wsa": C.WSA})
    etree.SubElement(problem, A + "Action").text = action
    return problem


def problem_header(local: str) -> etree._Element:
    """The [Detail] of wsa:MessageAddressingHeaderRequired and wsa:InvalidAddressingHeader:
    wsa:ProblemHeaderQName naming the header (WS-Addressing 1.0 SOAP Binding 6.4)."""
    problem = etree.Element(A + "ProblemHeaderQName", nsmap={"wsa": C.WSA})
    problem.text = f"wsa:{local}"
    return problem


def _subcode_name(subcode: str) -> tuple[str, str, str]:
    """(namespace, local name, prefix) for "wsa:Name", "{ns}Name" or a bare "Name"."""
    if subcode.startswith("{"):
        namespace, _, local = subcode[1:].partition("}")
        prefix = next((p for p, ns in SUBCODE_PREFIXES.items() if ns == namespace), "ns1")
        return namespace, local, prefix
    prefix, sep, local = subcode.partition(":")
    if sep and prefix in SUBCODE_PREFIXES:
        return SUBCODE_PREFIXES[prefix], local, prefix
    return "", subcode, ""


# --------------------------------------------------------------------------- reading
def header_of(payload: etree._Element) -> etree._Element | None:
    """The soap:Header of the envelope a body payload (SoapRequest.body) was read from."""
    body = payload.getparent()
    envelope = body.getparent() if body is not None else None
    return envelope.find(S + "Header") if envelope is not None else None


def parse_envelope(data: bytes, *, require_action: bool = True,
                   understood: frozenset[str] = UNDERSTOOD,
                   max_bytes: int = DEFAULT_MAX_BYTES,
                   max_depth: int = DEFAULT_MAX_DEPTH,
                   action_parameter: str | None = None) -> SoapRequest:
    """The addressing headers and body payload of a SOAP 1.2 envelope.

    Raises XmlInputError for bytes that are not acceptable XML, SoapError for an XML
    document that is not a usable SOAP 1.2 message: VersionMismatch for SOAP 1.1,
    MustUnderstand for a mandatory header targeted at this node that this stack does not
    process, Sender with wsa:MessageAddressingHeaderRequired when wsa:Action or
    wsa:MessageID is missing from a request (require_action: a request, whose reply relates
    to its MessageID; a client reading responses says False), Sender with
    wsa:InvalidAddressingHeader / wsa:ActionMismatch when `action_parameter` (the action
    parameter of the message's Content-Type, RFC 3902) is not its wsa:Action.
    """
    root = parse_xml(data, max_bytes=max_bytes, max_depth=max_depth)
    if etree.QName(root).localname == "Envelope" and etree.QName(root).namespace == SOAP11:
        raise SoapError("VersionMismatch", "", "SOAP 1.1 envelope received; this endpoint speaks SOAP 1.2 "
                                               f"({C.SOAP12})")
    if root.tag != S + "Envelope":
        raise SoapError("Sender", "", f"not a SOAP 1.2 envelope: root element is {root.tag}")
    header = None
    body = None
    for child in root:
        if not isinstance(child.tag, str):
            continue
        if child.tag == S + "Header" and header is None and body is None:
            header = child
        elif child.tag == S + "Body" and body is None:
            body = child
        else:
            raise SoapError("Sender", "", f"unexpected {child.tag} in soap:Envelope")
    if body is None:
        raise SoapError("Sender", "", "soap:Envelope has no soap:Body")
    payload = next((c for c in body if isinstance(c.tag, str)), None)
    if payload is None:
        raise SoapError("Sender", "", "soap:Body is empty")

    headers = [h for h in header if isinstance(h.tag, str)] if header is not None else []
    for h in headers:
        if _must_understand(h) and _targeted(h) and etree.QName(h).namespace not in understood:
            raise SoapError("MustUnderstand", "", f"header {h.tag} is marked mustUnderstand "
                                                  "and is not processed here")
    action = _single_text(headers, "Action")
    message_id = _single_text(headers, "MessageID")
    if require_action and payload.tag != S + "Fault":
        for local, value in (("Action", action), ("MessageID", message_id)):
            if not value:
                raise SoapError("Sender", "wsa:MessageAddressingHeaderRequired",
                                f"the wsa:{local} header is required (WS-Addressing 1.0, namespace "
                                f"{C.WSA}; IHE ITI TF-2 Appendix V)", detail=[problem_header(local)])
    if action_parameter and action_parameter.strip() and action and action_parameter.strip() != action:
        raise SoapError("Sender", "wsa:InvalidAddressingHeader",
                        f"the Content-Type action parameter {action_parameter!r} is not the wsa:Action "
                        f"{action!r}", subsubcode="wsa:ActionMismatch", detail=[problem_action(action)])
    reply_to = None
    for h in headers:
        if h.tag in (A + "ReplyTo", A + "FaultTo"):
            address = h.find(A + "Address")
            text = (address.text or "").strip() if address is not None else None
            if h.tag == A + "ReplyTo":
                reply_to = text
            if require_action and text and text not in BACK_CHANNEL:
                local = etree.QName(h).localname
                raise SoapError("Sender", "wsa:InvalidAddressingHeader",
                                f"wsa:{local} {text!r}: this endpoint answers on the HTTP response only (IHE ITI "
                                f"TF-2 Appendix V synchronous exchange; wsa:{local} must be anonymous)",
                                subsubcode="wsa:OnlyAnonymousAddressSupported", detail=[problem_header(local)])
    return SoapRequest(action=action or "", message_id=message_id,
                       reply_to=reply_to, to=_single_text(headers, "To"), header=header,
                       body=payload, relates_to=_single_text(headers, "RelatesTo"))


def _must_understand(header: etree._Element) -> bool:
    value = (header.get(S + "mustUnderstand") or "").strip().lower()
    return value in ("true", "1")


def _targeted(header: etree._Element) -> bool:
    """Whether a header block is for this node: its env:role absent, next or ultimateReceiver
    (SOAP 1.2 Part 1 2.2, 5.2.2); a block for another role, or for "none", is not processed
    and so cannot fail as not understood (5.2.3)."""
    return (header.get(S + "role") or "").strip() in OUR_ROLES


def _single_text(headers: list[etree._Element], local: str) -> str | None:
    found = [h for h in headers if h.tag == A + local]
    if len(found) > 1:
        raise SoapError("Sender", "wsa:InvalidAddressingHeader", f"more than one wsa:{local} header",
                        subsubcode="wsa:InvalidCardinality", detail=[problem_header(local)])
    if not found:
        return None
    return (found[0].text or "").strip() or None


def fault_of(message: SoapRequest) -> SoapError | None:
    """The SoapError a received Fault body describes, or None when the body is not a Fault."""
    if not message.is_fault:
        return None
    fault = message.body
    value = fault.findtext(f"{S}Code/{S}Value") or ""
    code = value.rpartition(":")[2].strip() or "Receiver"
    subvalue = (fault.findtext(f"{S}Code/{S}Subcode/{S}Value") or "").strip()
    reason = " ".join((fault.findtext(f"{S}Reason/{S}Text") or "").split())
    return SoapError(code if code in FAULT_CODES else "Receiver", subvalue, reason)
