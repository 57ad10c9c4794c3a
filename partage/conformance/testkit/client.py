"""A small XDS.b SOAP client: one request, one parsed response.

Requests are SOAP 1.2 with WS-Addressing; with attachments they go out as MTOM,
streamed. Responses are read as MTOM or plain SOAP; a SOAP Fault is returned (not
raised) because a test may expect one. Transport failures raise TransportError.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import requests
from lxml import etree

from ...ebxml.mtom import Attachment, MtomError, Part, build_multipart, read_soap_request
from ...ebxml.soap import WSA_ANONYMOUS, SoapError, build_envelope, fault_of, parse_envelope
from ...xmlsafe import XmlInputError

MAX_RESPONSE = 512 * 1024 * 1024


class TransportError(RuntimeError):
    """No usable SOAP answer: connection refused, timeout, HTTP error without SOAP, garbage."""


@dataclass
class SoapResponse:
    http_status: int
    body: etree._Element | None
    fault: SoapError | None = None
    parts: dict[str, Part] = field(default_factory=dict)
    action: str = ""


class _Body:
    """Streams build_multipart's chunks with a known length, so no chunked encoding is needed."""

    def __init__(self, chunks: Iterable[bytes], length: int) -> None:
        self._chunks = chunks
        self._length = length

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    def __len__(self) -> int:
        return self._length


class SoapClient:
    def __init__(self, timeout: float = 60.0, verify: bool | str = True) -> None:
        self.timeout = timeout
        self.http = requests.Session()
        self.http.verify = verify

    def call(self, url: str, action: str, body: etree._Element,
             attachments: list[Attachment] | None = None, *, mtom: bool = False) -> SoapResponse:
        envelope = build_envelope(action, body, to=url, reply_to=WSA_ANONYMOUS)
        if attachments or mtom:
            content_type, chunks, length = build_multipart(envelope, attachments or [], action=action)
            data = _Body(chunks, length) if length is not None else b"".join(chunks)
        else:
            content_type, data = f'application/soap+xml; charset=UTF-8; action="{action}"', envelope
        try:
            response = self.http.post(url, data=data, headers={"Content-Type": content_type},
                                      timeout=self.timeout, stream=True)
        except requests.RequestException as exc:
            raise TransportError(f"{action.rpartition(':')[2]} to {url} failed: {exc}") from exc
        with response:
            return self._read(url, response)

    def _read(self, url: str, response: requests.Response) -> SoapResponse:
        content_type = response.headers.get("Content-Type", "")
        response.raw.decode_content = True
        try:
            message = read_soap_request(content_type, response.raw, max_total=MAX_RESPONSE)
        except MtomError as exc:
            snippet = ""
            if "multipart" not in content_type.lower():
                snippet = (response.content or b"")[:200].decode("utf-8", "replace")
            raise TransportError(f"HTTP {response.status_code} from {url} is not a SOAP response "
                                 f"({exc}) {snippet}".rstrip()) from exc
        try:
            envelope = parse_envelope(message.root, require_action=False)
        except (SoapError, XmlInputError) as exc:
            message.close()
            raise TransportError(f"HTTP {response.status_code} from {url}: unreadable SOAP response: {exc}") from exc
        return SoapResponse(response.status_code, envelope.body, fault_of(envelope), message.parts,
                            envelope.action)

    def close(self) -> None:
        self.http.close()
