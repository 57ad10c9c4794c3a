"""XDS.b on the wire, judged by SOAP 1.2, WS-Addressing 1.0 and IHE ITI TF-2/TF-3 (review, round 2).

What the NIST kit does not send: requests without wsa:MessageID, a Content-Type action
parameter that is not the message's wsa:Action, header blocks for another SOAP role, the
addressing faults' [action] on the wire, languageCode/mimeType values that are not what
ITI TF-3 4.2.3.2 says; and, as regression guards, the MTOM/XOP and ITI-43 cases already right.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
import requests
from lxml import etree

from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID
from partage.ebxml import constants as C
from partage.ebxml.mtom import Attachment, build_multipart, content_type_params, read_soap_request
from partage.ebxml.soap import build_envelope, parse_envelope
from tests import factories as F
from tests.support import served_with_services
from tests.xdsclient import XdsClient, objects_of, provide_and_register_body

SOAP = f"{{{C.SOAP12}}}"
WSA = f"{{{C.WSA}}}"
RS = f"{{{C.RS}}}"
RIM = f"{{{C.RIM}}}"
Q = f"{{{C.QUERY}}}"
XDSB = f"{{{C.XDSB}}}"
WSA_FAULT = "http://www.w3.org/2005/08/addressing/fault"
SOAP_CT = "application/soap+xml; charset=UTF-8"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served_with_services(tmp_path_factory.mktemp("xdswire") / "data", mllp=False) as live:
        yield live


def _patient(server):
    pid = F.patient_id()
    with server.services.registry.write() as conn:
        server.services.registry.upsert_patient(conn, [pid])
    return pid


def _query_body(unique_id: str = "1.2.3.4") -> etree._Element:
    body = etree.Element(Q + "AdhocQueryRequest", nsmap={"query": C.QUERY, "rim": C.RIM})
    etree.SubElement(body, Q + "ResponseOption", returnType="LeafClass")
    adhoc = etree.SubElement(body, RIM + "AdhocQuery", id=C.STORED_QUERY_IDS["GetDocuments"])
    slot = etree.SubElement(adhoc, RIM + "Slot", name="$XDSDocumentEntryUniqueId")
    etree.SubElement(etree.SubElement(slot, RIM + "ValueList"), RIM + "Value").text = f"('{unique_id}')"
    return body


def _post(server, path: str, data: bytes, content_type: str = SOAP_CT) -> requests.Response:
    return requests.post(f"{server.base_url}{path}", data=data, headers={"Content-Type": content_type}, timeout=30)


def _answer(response: requests.Response):
    """(envelope, body payload) of an answer, plain or MTOM."""
    message = read_soap_request(response.headers.get("Content-Type", ""), _Stream(response.content),
                                max_total=1 << 26)
    envelope = parse_envelope(message.root, require_action=False)
    return envelope, envelope.body


class _Stream:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def read(self, n: int = -1) -> bytes:
        chunk = self.data[self.at:] if n < 0 else self.data[self.at:self.at + n]
        self.at += len(chunk)
        return chunk


def _fault_codes(body: etree._Element) -> list[str]:
    """Code, Subcode, Subsubcode values of a soap:Fault, in order."""
    assert body.tag == SOAP + "Fault", etree.tostring(body)[:400]
    values, code = [], body.find(SOAP + "Code")
    while code is not None:
        values.append((code.findtext(SOAP + "Value") or "").strip())
        code = code.find(SOAP + "Subcode")
    return values


def _errors(body: etree._Element) -> list[tuple[str, str]]:
    return [(e.get("errorCode"), e.get("location") or "") for e in body.iter(RS + "RegistryError")]


def _without_header(envelope: bytes, local: str) -> bytes:
    root = etree.fromstring(envelope)
    for header in root.iter(WSA + local):
        header.getparent().remove(header)
    return etree.tostring(root)


# --------------------------------------------------------------------------- WS-Addressing
@pytest.mark.parametrize("path, action, body", [
    ("/xds/registry", C.ACTION_STORED_QUERY, _query_body),
    ("/xds/repository", C.ACTION_RETRIEVE, lambda: etree.Element(XDSB + "RetrieveDocumentSetRequest")),
])
def test_a_request_without_message_id_is_refused_with_message_addressing_header_required(server, path,
                                                                                             action, body):
    """WS-Addressing 1.0 Metadata 5.2 (request-response: the request's [message id] is required,
    the reply's [relationship] names it; Core 3.4) and IHE ITI TF-2 Appendix V (wsa:MessageID in
    every request): a request without it gets the SOAP Binding 6.4.2 fault, Sender /
    wsa:MessageAddressingHeaderRequired, naming wsa:MessageID, with the addressing fault action.
    It was answered 200 with a response relating to nothing."""
    data = _without_header(build_envelope(action, body()), "MessageID")
    response = _post(server, path, data)
    envelope, fault = _answer(response)
    assert response.status_code == 400, response.text[:300]
    assert _fault_codes(fault) == ["soap:Sender", "wsa:MessageAddressingHeaderRequired"]
    assert fault.findtext(f"{SOAP}Detail/{WSA}ProblemHeaderQName").strip() == "wsa:MessageID"
    assert envelope.action == WSA_FAULT


def test_an_addressing_fault_says_the_same_action_in_its_envelope_and_its_content_type(server):
    """RFC 3902 (the action parameter of application/soap+xml) and WS-Addressing 1.0 SOAP Binding
    (the SOAP 1.2 action and [action] are one value; 6.4: addressing faults have the [action]
    .../addressing/fault): the envelope said .../addressing/fault, the Content-Type
    .../addressing/soap/fault. And wsa:ActionNotSupported carries wsa:ProblemAction (6.4.4)."""
    wrong = C.ACTION_PNR   # a repository action, posted to the registry
    response = _post(server, "/xds/registry", build_envelope(wrong, _query_body(), message_id="urn:uuid:an-1"))
    envelope, fault = _answer(response)
    assert response.status_code == 400
    assert _fault_codes(fault) == ["soap:Sender", "wsa:ActionNotSupported"]
    assert envelope.action == WSA_FAULT and envelope.relates_to == "urn:uuid:an-1"
    assert content_type_params(response.headers["Content-Type"])[1].get("action") == envelope.action
    assert fault.findtext(f"{SOAP}Detail/{WSA}ProblemAction/{WSA}Action").strip() == wrong


def test_a_content_type_action_that_is_not_the_wsa_action_is_an_action_mismatch(server):
    """WS-Addressing 1.0 SOAP Binding 6.4.1: the SOAP 1.2 action parameter (RFC 3902) and the
    message's [action] differ -> Sender / wsa:InvalidAddressingHeader / wsa:ActionMismatch.
    A message announcing a stored query in its Content-Type and registering documents in its
    envelope (what a proxy or firewall filters on) was processed as the envelope said."""
    data = build_envelope(C.ACTION_STORED_QUERY, _query_body(), message_id="urn:uuid:mm-1")
    content_type = f'{SOAP_CT}; action="{C.ACTION_REGISTER}"'
    response = _post(server, "/xds/registry", data, content_type)
    envelope, fault = _answer(response)
    assert response.status_code == 400, response.text[:300]
    assert _fault_codes(fault) == ["soap:Sender", "wsa:InvalidAddressingHeader", "wsa:ActionMismatch"]
    assert envelope.relates_to == "urn:uuid:mm-1"
    # the same action in both places, or none in the Content-Type, is served
    for content_type in (f'{SOAP_CT}; action="{C.ACTION_STORED_QUERY}"', SOAP_CT):
        response = _post(server, "/xds/registry", data, content_type)
        assert response.status_code == 200
        envelope, body = _answer(response)
        assert body.tag == Q + "AdhocQueryResponse" and envelope.relates_to == "urn:uuid:mm-1"


def test_a_duplicated_addressing_header_is_invalid_cardinality(server):
    """WS-Addressing 1.0 SOAP Binding 6.4.1: two wsa:MessageID -> InvalidAddressingHeader with
    the subsubcode wsa:InvalidCardinality."""
    root = etree.fromstring(build_envelope(C.ACTION_STORED_QUERY, _query_body(), message_id="urn:uuid:dup-1"))
    etree.SubElement(root.find(SOAP + "Header"), WSA + "MessageID").text = "urn:uuid:dup-2"
    envelope, fault = _answer(_post(server, "/xds/registry", etree.tostring(root)))
    assert _fault_codes(fault) == ["soap:Sender", "wsa:InvalidAddressingHeader", "wsa:InvalidCardinality"]


@pytest.mark.parametrize("header", ["ReplyTo", "FaultTo"])
def test_a_reply_address_other_than_anonymous_is_only_anonymous_address_supported(server, header):
    """IHE ITI TF-2 Appendix V: the synchronous exchange answers on the HTTP response, so the
    reply address is anonymous (Partage has no Asynchronous Web Services Exchange option);
    WS-Addressing 1.0 SOAP Binding 6.4.1 / Metadata 3.1: a non-anonymous wsa:ReplyTo or
    wsa:FaultTo -> Sender / wsa:InvalidAddressingHeader / wsa:OnlyAnonymousAddressSupported.
    The request was processed and answered on the back channel, not where it asked."""
    root = etree.fromstring(build_envelope(C.ACTION_STORED_QUERY, _query_body(), message_id="urn:uuid:rt-1"))
    reply = etree.SubElement(root.find(SOAP + "Header"), WSA + header)
    etree.SubElement(reply, WSA + "Address").text = "http://client.example/xds/replies"
    response = _post(server, "/xds/registry", etree.tostring(root))
    envelope, fault = _answer(response)
    assert response.status_code == 400, response.text[:300]
    assert _fault_codes(fault) == ["soap:Sender", "wsa:InvalidAddressingHeader",
                                   "wsa:OnlyAnonymousAddressSupported"]
    assert envelope.relates_to == "urn:uuid:rt-1"
    # anonymous (and none: no reply wanted) are served
    for address in ("http://www.w3.org/2005/08/addressing/anonymous",):
        reply.find(WSA + "Address").text = address
        response = _post(server, "/xds/registry", etree.tostring(root))
        assert response.status_code == 200 and _answer(response)[1].tag == Q + "AdhocQueryResponse"


# --------------------------------------------------------------------------- SOAP 1.2 processing model
def _with_header(role: str | None) -> bytes:
    root = etree.fromstring(build_envelope(C.ACTION_STORED_QUERY, _query_body(), message_id="urn:uuid:mu-1"))
    block = etree.SubElement(root.find(SOAP + "Header"), "{urn:example:other}Routing")
    block.set(SOAP + "mustUnderstand", "true")
    if role is not None:
        block.set(SOAP + "role", role)
    return etree.tostring(root)


@pytest.mark.parametrize("role", [f"{C.SOAP12}/role/none", "urn:example:role:audit-proxy"])
def test_a_mandatory_header_for_another_role_is_not_a_must_understand_fault(server, role):
    """SOAP 1.2 Part 1 2.2/2.4/5.2.3: only header blocks targeted at the node (no role, next,
    ultimateReceiver) are checked for mustUnderstand; a block for the role "none" (which no
    node plays) or for an intermediary's role is not processed, so it is no fault. Both were
    answered env:MustUnderstand."""
    response = _post(server, "/xds/registry", _with_header(role))
    envelope, body = _answer(response)
    assert response.status_code == 200, response.text[:400]
    assert body.tag == Q + "AdhocQueryResponse"


@pytest.mark.parametrize("role", [None, f"{C.SOAP12}/role/next", f"{C.SOAP12}/role/ultimateReceiver"])
def test_a_mandatory_header_for_this_node_is_still_a_must_understand_fault(server, role):
    response = _post(server, "/xds/registry", _with_header(role))
    envelope, fault = _answer(response)
    assert response.status_code == 500   # SOAP 1.2 Part 2 7.5.2.2: not Sender -> 500
    assert _fault_codes(fault) == ["soap:MustUnderstand"]
    assert envelope.relates_to == "urn:uuid:mu-1"


def test_a_soap11_envelope_is_a_version_mismatch(server):
    data = (b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><x/></s:Body>'
            b'</s:Envelope>')
    response = _post(server, "/xds/registry", data, "text/xml; charset=UTF-8")
    envelope, fault = _answer(response)
    assert response.status_code == 500 and _fault_codes(fault) == ["soap:VersionMismatch"]


# --------------------------------------------------------------------------- ITI-41 metadata values
@pytest.mark.parametrize("attribute, value", [
    ("language_code", "fr_FR"), ("language_code", "fr FR"), ("language_code", "français"),
    ("mime_type", "text xml"), ("mime_type", "text/"), ("mime_type", "xml"),
])
def test_language_code_and_mime_type_must_have_their_syntax(server, attribute, value):
    """ITI TF-3 4.2.3.2.12 (languageCode: an RFC 5646 tag) and 4.2.3.2.13 (mimeType: a MIME type,
    RFC 2045/6838 type/subtype): a value that is neither is XDSRepositoryMetadataError at the
    DocumentEntry, and nothing is registered. Both were stored as sent (and served back in the
    ITI-43 mimeType element and the MHD contentType)."""
    client = XdsClient(server.base_url)
    pid = _patient(server)
    doc = F.document(pid, "doc1", **{attribute: value})
    reply = client.provide_and_register(F.submission(pid, [doc], contents=False), {"doc1": b"<a>1</a>"})
    assert reply.status == "Failure"
    assert ("XDSRepositoryMetadataError", "doc1") in _errors(reply.body), _errors(reply.body)
    found = client.stored_query("GetDocuments", {"$XDSDocumentEntryUniqueId": [f"('{doc.unique_id}')"]})
    assert objects_of(found) == []


@pytest.mark.parametrize("attribute, value", [
    ("language_code", "en"), ("language_code", "zh-Hant-TW"), ("mime_type", "application/pdf"),
    ("mime_type", "application/hl7-v3+xml"),
])
def test_well_formed_language_codes_and_mime_types_are_accepted(server, attribute, value):
    client = XdsClient(server.base_url)
    pid = _patient(server)
    doc = F.document(pid, "doc1", **{attribute: value})
    reply = client.provide_and_register(F.submission(pid, [doc], contents=False), {"doc1": b"<a>1</a>"})
    assert reply.status == "Success", _errors(reply.body)


@pytest.mark.parametrize("name, second", [("languageCode", "en-US"), ("creationTime", "20200101"),
                                           ("sourcePatientId", "999^^^&1.2.250.1.213.1.4.10&ISO")])
def test_a_slot_given_twice_on_one_object_is_refused(server, name, second):
    """ebRIM 3.0 (a Slot's name is unique within its RegistryObject; ITI TF-3 4.2.3.1.7 reads
    each metadata slot once): a DocumentEntry with two languageCode (or creationTime,
    sourcePatientId) slots was registered with the last one, silently; an unknown slot given
    twice was already refused. Now XDS*MetadataError at that slot, nothing registered."""
    client = XdsClient(server.base_url)
    pid = _patient(server)
    doc = F.document(pid, "doc1")
    body, attachments = provide_and_register_body(F.submission(pid, [doc], contents=False), {"doc1": b"<a>1</a>"})
    extrinsic = next(body.iter(RIM + "ExtrinsicObject"))
    slot = etree.SubElement(extrinsic, RIM + "Slot", name=name)
    etree.SubElement(etree.SubElement(slot, RIM + "ValueList"), RIM + "Value").text = second
    extrinsic.insert(0, slot)   # slots come first (rim.xsd)
    reply = client.call(client.repository, C.ACTION_PNR, body, attachments)
    assert reply.status == "Failure"
    codes = _errors(reply.body)
    assert any(code in ("XDSRegistryMetadataError", "XDSRepositoryMetadataError") and name in location
               for code, location in codes), codes
    found = client.stored_query("GetDocuments", {"$XDSDocumentEntryUniqueId": [f"('{doc.unique_id}')"]})
    assert objects_of(found) == []


# --------------------------------------------------------------------------- MTOM / XOP (already right)
def _pnr(server, pid, documents: dict[str, str | tuple[str, str]], parts: list[tuple[str, bytes]]):
    """An ITI-41 whose Documents are inline text (str) or xop:Include hrefs (("cid", href))."""
    docs = [F.document(pid, doc_id) for doc_id in documents]
    request = F.submission(pid, docs, contents=False)
    body, _ = provide_and_register_body(request, {})
    for doc_id, spec in documents.items():
        element = etree.SubElement(body, XDSB + "Document", id=doc_id)
        if isinstance(spec, tuple):
            etree.SubElement(element, f"{{{C.XOP}}}Include", href=spec[1])
        else:
            element.text = spec
    envelope = build_envelope(C.ACTION_PNR, body)
    content_type, chunks, _ = build_multipart(envelope, [Attachment(cid, "text/xml", data) for cid, data in parts],
                                              action=C.ACTION_PNR)
    response = _post(server, "/xds/repository", b"".join(chunks), content_type)
    return request, response


def _retrieved(server, unique_ids: list[str]) -> dict[str, bytes]:
    _, documents = XdsClient(server.base_url).retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, unique_ids)
    return {uid: part.read() for uid, part in documents.items()}


def test_xop_include_with_percent_encoded_cid_names_its_part(server):
    """RFC 2392: a cid: URL is the Content-ID percent-encoded."""
    pid = _patient(server)
    request, response = _pnr(server, pid, {"doc1": ("cid", "cid:doc%2F1%40x@test")},
                             [("doc/1@x@test", b"<doc>encoded</doc>")])
    assert _errors(_answer(response)[1]) == []
    assert _retrieved(server, [request.documents[0].unique_id]) == {request.documents[0].unique_id:
                                                                     b"<doc>encoded</doc>"}


def test_xop_include_of_a_missing_part_is_missing_document(server):
    pid = _patient(server)
    _, response = _pnr(server, pid, {"doc1": ("cid", "cid:absent@test")}, [("other@test", b"<a/>")])
    assert [code for code, _ in _errors(_answer(response)[1])] == ["XDSMissingDocument"]


def test_one_part_included_by_two_documents_gives_both_its_bytes(server):
    pid = _patient(server)
    request, response = _pnr(server, pid, {"doc1": ("cid", "cid:p@test"), "doc2": ("cid", "cid:p@test")},
                             [("p@test", b"<doc>same</doc>")])
    assert _errors(_answer(response)[1]) == []
    uids = [d.unique_id for d in request.documents]
    assert _retrieved(server, uids) == {uid: b"<doc>same</doc>" for uid in uids}


def test_inline_base64_with_line_breaks_is_decoded(server):
    pid = _patient(server)
    payload = b"<doc>" + b"y" * 300 + b"</doc>"
    request, response = _pnr(server, pid, {"doc1": "\n  " + base64.encodebytes(payload).decode() + "\n"}, [])
    assert _errors(_answer(response)[1]) == []
    found = objects_of(XdsClient(server.base_url).stored_query(
        "GetDocuments", {"$XDSDocumentEntryUniqueId": [f"('{request.documents[0].unique_id}')"]}))
    assert [(d.size, d.hash) for d in found] == [(len(payload), hashlib.sha1(payload).hexdigest())]


# --------------------------------------------------------------------------- ITI-43 (already right)
def test_retrieve_answers_each_missing_document_in_the_order_asked(server):
    client = XdsClient(server.base_url)
    pid = _patient(server)
    d1, d2 = F.document(pid, "doc1"), F.document(pid, "doc2")
    assert client.provide_and_register(F.submission(pid, [d1, d2], contents=False),
                                       {"doc1": b"<a>1</a>", "doc2": b"<a>2</a>"}).status == "Success"
    reply, documents = client.retrieve(DEFAULT_REPOSITORY_UNIQUE_ID,
                                       ["1.2.3.999.9", d1.unique_id, "1.2.3.999.8", d2.unique_id])
    assert reply.status == "PartialSuccess"
    assert _errors(reply.body) == [("XDSDocumentUniqueIdError", "1.2.3.999.9"),
                                   ("XDSDocumentUniqueIdError", "1.2.3.999.8")]
    assert {uid: part.read() for uid, part in documents.items()} == {d1.unique_id: b"<a>1</a>",
                                                                     d2.unique_id: b"<a>2</a>"}
    reply, documents = client.retrieve("1.2.3.999.7", [d1.unique_id])
    assert reply.status == "Failure" and [c for c, _ in _errors(reply.body)] == ["XDSUnknownRepositoryId"]
    assert documents == {}


def test_unknown_stored_query_id(server):
    body = _query_body()
    body.find(RIM + "AdhocQuery").set("id", "urn:uuid:00000000-0000-0000-0000-000000000000")
    envelope, answer = _answer(_post(server, "/xds/registry", build_envelope(C.ACTION_STORED_QUERY, body)))
    assert [c for c, _ in _errors(answer)] == ["XDSUnknownStoredQuery"]


def test_a_remove_documents_request_naming_no_document_is_an_error(server):
    """ITI-86: the RemoveDocumentsRequest schema has one DocumentRequest at least; one with none
    was answered Success (a removal of nothing reported as done)."""
    body = etree.Element(f"{{{C.RMD}}}RemoveDocumentsRequest", nsmap={"rmd": C.RMD})
    response = _post(server, "/xds/repository", build_envelope(C.ACTION_REMOVE_DOCUMENTS, body,
                                                               to=f"{server.base_url}/xds/repository"))
    _envelope, answer = _answer(response)
    assert answer.get("status", "").endswith(":Failure"), etree.tostring(answer)[:400]
    assert [code for code, _ in _errors(answer)] == ["XDSRepositoryError"]
