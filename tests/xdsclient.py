"""A small XDS.b SOAP client for the integration tests (the real wire format: SOAP 1.2,
WS-Addressing, MTOM/XOP), built on the project's own transport modules."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import requests
from lxml import etree

from partage.ebxml import constants as C
from partage.ebxml import ebrim
from partage.ebxml.mtom import Attachment, build_multipart, read_soap_request, xop_includes
from partage.ebxml.soap import build_envelope, parse_envelope

RIM, LCM, RS, Q, X = (f"{{{ns}}}" for ns in (C.RIM, C.LCM, C.RS, C.QUERY, C.XDSB))


@dataclass
class Reply:
    http_status: int
    body: etree._Element
    parts: dict

    @property
    def status(self) -> str:
        element = self.body if self.body.get("status") else self.body.find(f"{RS}RegistryResponse")
        return (element.get("status") or "").rsplit(":", 1)[-1]

    @property
    def error_codes(self) -> list[str]:
        return [e.get("errorCode") for e in self.body.iter(f"{RS}RegistryError")]


def provide_and_register_body(request, documents: dict[str, bytes]) -> tuple[etree._Element, list[Attachment]]:
    """The ITI-41 body and its MTOM attachments (one per document, referenced by xop:Include)."""
    body = etree.Element(X + "ProvideAndRegisterDocumentSetRequest", nsmap={"xdsb": C.XDSB})
    submit = etree.SubElement(body, LCM + "SubmitObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
    ebrim.write_object_list(request.objects(), submit)
    attachments = []
    for i, (doc_id, data) in enumerate(documents.items()):
        element = etree.SubElement(body, X + "Document", id=doc_id)
        cid = f"doc{i}@test"
        etree.SubElement(element, f"{{{C.XOP}}}Include", href=f"cid:{cid}")
        attachments.append(Attachment(cid, "application/octet-stream", data))
    return body, attachments


class XdsClient:
    def __init__(self, base_url: str, *, mtom: bool = True, headers: dict | None = None,
                 security=None) -> None:
        # a wsse:Security header (partage.access.saml.security_header), or a function making
        # a fresh one for each request (assertions are single-use by default)
        self.security = security
        self.registry = f"{base_url}/xds/registry"
        self.repository = f"{base_url}/xds/repository"
        self.mtom = mtom
        self.session = requests.Session()
        self.session.headers.update(headers or {})

    def call(self, url: str, action: str, body: etree._Element, attachments=()) -> Reply:
        security = self.security() if callable(self.security) else self.security
        extra = [copy.deepcopy(security)] if security is not None else []
        envelope = build_envelope(action, body, to=url, extra_headers=extra)
        if self.mtom or attachments:
            content_type, chunks, length = build_multipart(envelope, list(attachments), action=action)
            data = chunks     # streamed: a 100 MB document is never held whole by the client
        else:
            content_type, data = f'application/soap+xml; charset=UTF-8; action="{action}"', envelope
        response = self.session.post(url, data=data, headers={"Content-Type": content_type},
                                     timeout=300, stream=True)
        response.raw.decode_content = True
        message = read_soap_request(response.headers.get("Content-Type", ""), response.raw,
                                    max_total=1 << 31)
        parsed = parse_envelope(message.root, require_action=False)
        return Reply(response.status_code, parsed.body, message.parts)

    # --- transactions -------------------------------------------------------------
    def provide_and_register(self, request, documents: dict[str, bytes]) -> Reply:
        return self.call(self.repository, C.ACTION_PNR, *provide_and_register_body(request, documents))

    def register(self, request) -> Reply:
        submit = etree.Element(LCM + "SubmitObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
        ebrim.write_object_list(request.objects(), submit)
        return self.call(self.registry, C.ACTION_REGISTER, submit)

    def stored_query(self, name: str, params: dict[str, list[str]], return_type: str = "LeafClass") -> Reply:
        body = etree.Element(Q + "AdhocQueryRequest", nsmap={"query": C.QUERY, "rim": C.RIM})
        etree.SubElement(body, Q + "ResponseOption", returnType=return_type, returnComposedObjects="true")
        adhoc = etree.SubElement(body, RIM + "AdhocQuery", id=C.STORED_QUERY_IDS[name])
        for key, values in params.items():
            slot = etree.SubElement(adhoc, RIM + "Slot", name=key)
            value_list = etree.SubElement(slot, RIM + "ValueList")
            for value in values:
                etree.SubElement(value_list, RIM + "Value").text = value
        return self.call(self.registry, C.ACTION_STORED_QUERY, body)

    def retrieve(self, repository_id: str, unique_ids: list[str]) -> tuple[Reply, dict[str, bytes]]:
        body = etree.Element(X + "RetrieveDocumentSetRequest", nsmap={"xdsb": C.XDSB})
        for uid in unique_ids:
            item = etree.SubElement(body, X + "DocumentRequest")
            etree.SubElement(item, X + "RepositoryUniqueId").text = repository_id
            etree.SubElement(item, X + "DocumentUniqueId").text = uid
        reply = self.call(self.repository, C.ACTION_RETRIEVE, body)
        documents = {}
        for response in reply.body.findall(X + "DocumentResponse"):
            uid = response.findtext(X + "DocumentUniqueId")
            document = response.find(X + "Document")
            includes = xop_includes(document)
            documents[uid] = reply.parts[includes[0][1]] if includes else None
        return reply, documents


def objects_of(reply: Reply) -> list:
    object_list = reply.body.find(f"{RIM}RegistryObjectList")
    if object_list is None:
        return []
    return ebrim.read_object_list(object_list).objects()
