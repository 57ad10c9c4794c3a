"""MTOM/XOP multipart: streaming build -> parse round trips and malformed inputs."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from lxml import etree

from partage.ebxml import constants as C
from partage.ebxml.mtom import (
    CHUNK,
    Attachment,
    MtomError,
    build_multipart,
    content_type_params,
    normalize_cid,
    parse_multipart,
    read_soap_request,
    xop_includes,
)
from partage.ebxml.soap import build_envelope, parse_envelope


class CountingReader(io.RawIOBase):
    """A lazy stream over chunks that records the largest read, to prove reading happens in chunks."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._pending = b""
        self.largest_read = 0
        self.reads = 0

    def readable(self):
        return True

    def read(self, size=-1):
        self.reads += 1
        self.largest_read = max(self.largest_read, size if size and size > 0 else 1 << 62)
        while len(self._pending) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._pending += chunk
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


class ChunkIterator:
    """Records the largest chunk a generator yields."""

    def __init__(self, chunks):
        self.chunks = chunks
        self.largest = 0

    def __iter__(self):
        for chunk in self.chunks:
            self.largest = max(self.largest, len(chunk))
            yield chunk


def _envelope_with_include(cid: str) -> bytes:
    body = etree.Element(f"{{{C.XDSB}}}ProvideAndRegisterDocumentSetRequest", nsmap={"xdsb": C.XDSB})
    document = etree.SubElement(body, f"{{{C.XDSB}}}Document", id="Document01")
    etree.SubElement(document, f"{{{C.XOP}}}Include", href=f"cid:{cid}")
    return build_envelope(C.ACTION_PNR, body)


def test_round_trip_of_a_5_mb_attachment_streams_in_chunks(tmp_path):
    payload = os.urandom(5 * 1024 * 1024 + 17)
    path = tmp_path / "doc.bin"
    path.write_bytes(payload)
    root = _envelope_with_include("doc1@test")
    content_type, chunks, length = build_multipart(
        root, [Attachment("doc1@test", "application/pdf", path)], action=C.ACTION_PNR)
    assert content_type.startswith("multipart/related")
    media, params = content_type_params(content_type)
    assert params["type"] == "application/xop+xml"
    assert params["start-info"] == "application/soap+xml"
    assert params["action"] == C.ACTION_PNR
    produced = ChunkIterator(chunks)
    stream = CountingReader(produced)
    message = parse_multipart(content_type, stream, max_total=6 * 1024 * 1024, spool_threshold=1 << 20)
    assert produced.largest <= max(CHUNK, len(root) + 1024)   # the 5 MB never came out whole
    assert stream.largest_read <= CHUNK
    assert stream.reads > 5 * 1024 * 1024 // CHUNK
    total = len(b"".join(build_multipart(root, [Attachment("doc1@test", "application/pdf", payload)],
                                         action=C.ACTION_PNR)[1]))
    assert length == total
    with message:
        envelope = parse_envelope(message.root)
        [(include, cid)] = xop_includes(envelope.body)
        part = message.part(cid)
        assert part.size == len(payload)
        assert part.sha1_hex == hashlib.sha1(payload).hexdigest()
        assert part.content_type == "application/pdf"
        assert part.file._rolled   # above the spool threshold: on disk, not in memory
        assert part.read() == payload


@pytest.mark.parametrize("source_kind", ["bytes", "path", "file"])
def test_sources_of_every_kind(tmp_path, source_kind):
    data = b"hello\r\n--not-a-boundary\r\nworld" * 1000
    path = tmp_path / "d.txt"
    path.write_bytes(data)
    source = {"bytes": data, "path": str(path), "file": open(path, "rb")}[source_kind]
    content_type, chunks, length = build_multipart(b"<root/>", [Attachment("<a@b>", "text/plain", source)])
    body = b"".join(chunks)
    assert length == len(body)
    message = parse_multipart(content_type, io.BytesIO(body), max_total=len(body))
    assert message.root == b"<root/>"
    assert message.parts["a@b"].read() == data
    if source_kind == "file":
        assert source.closed


def test_unseekable_file_gives_unknown_length():
    class Pipe(io.RawIOBase):
        def __init__(self):
            self.inner = io.BytesIO(b"x" * 100)

        def readable(self):
            return True

        def read(self, size=-1):
            return self.inner.read(size)

        def seekable(self):
            return False

    content_type, chunks, length = build_multipart(b"<r/>", [Attachment("p", "text/plain", Pipe())])
    assert length is None
    assert parse_multipart(content_type, io.BytesIO(b"".join(chunks)), max_total=10_000).parts["p"].size == 100


def test_empty_and_several_parts_and_first_part_as_root_without_start():
    body = (b"preamble\r\n--B\r\nContent-Type: application/xop+xml\r\n\r\n<root/>\r\n"
            b"--B\r\nContent-ID: <one>\r\n\r\n\r\n"
            b"--B  \r\nContent-ID: <two>\r\nContent-Type: text/plain\r\n\r\n2\r\n--B--\r\nepilogue")
    message = parse_multipart('multipart/related; boundary=B', io.BytesIO(body), max_total=1000)
    assert message.root == b"<root/>"
    assert message.parts["one"].size == 0
    assert message.parts["two"].read() == b"2"
    assert message.parts["two"].content_type == "text/plain"


def test_lf_only_line_breaks_are_tolerated():
    body = b"--B\nContent-ID: <r>\n\n<root/>\n--B\nContent-ID: <x>\n\ndata\n--B--\n"
    message = parse_multipart('multipart/related; boundary="B"; start="<r>"', io.BytesIO(body), max_total=1000)
    assert message.root == b"<root/>"
    assert message.parts["x"].read() == b"data"


@pytest.mark.parametrize("value, expected", [
    ("<abc@x>", "abc@x"), ("cid:abc@x", "abc@x"), ("CID:abc%40x", "abc@x"), (" <cid:a%20b> ", "a b"),
])
def test_cid_normalisation(value, expected):
    assert normalize_cid(value) == expected


def test_unknown_cid_is_an_error():
    content_type, chunks, _ = build_multipart(b"<r/>", [Attachment("known", "text/plain", b"1")])
    message = parse_multipart(content_type, io.BytesIO(b"".join(chunks)), max_total=10_000)
    with pytest.raises(MtomError, match="unknown|not a part"):
        message.part("cid:other")


def test_include_without_href_is_an_error():
    element = etree.fromstring(f'<d xmlns:xop="{C.XOP}"><xop:Include/></d>'.encode())
    with pytest.raises(MtomError, match="href"):
        xop_includes(element)


@pytest.mark.parametrize("content_type, body, message", [
    ("multipart/related", b"--B\r\n\r\nx\r\n--B--", "boundary"),
    ("multipart/related; boundary=B", b"no delimiter at all", "no multipart boundary"),
    ('multipart/related; boundary=B; start="<root>"',
     b"--B\r\nContent-ID: <other>\r\n\r\nx\r\n--B--\r\n", "missing root part"),
    ("multipart/related; boundary=B", b"--B\r\nContent-ID: <r>\r\n\r\n<r/>\r\n--B\r\n\r\nx\r\n--B--",
     "no Content-ID"),
    ("multipart/related; boundary=B",
     b"--B\r\n\r\n<r/>\r\n--B\r\nContent-ID: <a>\r\n\r\n1\r\n--B\r\nContent-ID: <a>\r\n\r\n2\r\n--B--",
     "two MIME parts"),
    ("multipart/related; boundary=B", b"--B\r\nContent-ID: <r>\r\n\r\n<r/> and no end", "truncated"),
    ("multipart/related; boundary=B", b"--B\r\nContent-ID: <r>\r\n\r\n<r/>\r\n--B\r\n", "truncated"),
    ("multipart/related; boundary=B", b"--B\r\nContent-ID: <r>\r\nno blank line", "truncated"),
    ("multipart/related; boundary=B",
     b"--B\r\n\r\n<r/>\r\n--B\r\nContent-ID: <a>\r\nContent-Transfer-Encoding: base64\r\n\r\nAA==\r\n--B--",
     "binary"),
    ("multipart/related; boundary=B", b"--B\r\nbad header line\r\n\r\nx\r\n--B--", "malformed MIME header"),
    ("multipart/related; boundary=B", b"--B junk\r\n\r\nx\r\n--B--", "unexpected characters"),
    ("text/html", b"<html/>", "unsupported Content-Type"),
    ("multipart/related; boundary=" + "B" * 71, b"--" + b"B" * 71 + b"\r\n\r\nx\r\n--" + b"B" * 71 + b"--",
     "RFC 2046 allows 1 to 70"),
])
def test_malformed_inputs_raise_mtom_error(content_type, body, message):
    with pytest.raises(MtomError, match=message):
        read_soap_request(content_type, io.BytesIO(body), max_total=10_000)


def test_size_limit_is_enforced_while_streaming():
    content_type, chunks, _ = build_multipart(b"<r/>", [Attachment("a", "text/plain", b"x" * 200_000)])
    with pytest.raises(MtomError, match="size limit"):
        parse_multipart(content_type, io.BytesIO(b"".join(chunks)), max_total=100_000)


def test_plain_soap_request_has_no_parts_and_a_size_limit():
    envelope = build_envelope(C.ACTION_REGISTER, b"<x/>")
    message = read_soap_request("application/soap+xml; charset=UTF-8", io.BytesIO(envelope),
                                max_total=len(envelope))
    assert message.root == envelope and message.parts == {}
    with pytest.raises(MtomError, match="size limit"):
        read_soap_request("application/soap+xml", io.BytesIO(envelope), max_total=10)


def test_closing_the_chunk_iterator_early_closes_files(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"z" * (3 * CHUNK))
    handle = open(path, "rb")
    _, chunks, _ = build_multipart(b"<r/>", [Attachment("a", "text/plain", handle)])
    next(chunks)
    chunks.close()
    assert handle.closed
