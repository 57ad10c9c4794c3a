"""MTOM/XOP over multipart/related, streamed both ways.

XDS.b documents travel as binary MIME parts referenced from the SOAP envelope by
xop:Include. A repository receives and sends documents of any size, so neither
direction holds a document whole: incoming parts are read in chunks into spooled
temporary files (SHA-1 and size computed on the way), outgoing attachments are read
in chunks from bytes, a path or a file. Only the root part (the envelope) is kept in
memory, bounded by the caller's limit.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import IO, Protocol, runtime_checkable
from urllib.parse import unquote

from lxml import etree

from ..failures import TooLarge
from . import constants as C

CHUNK = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_PREAMBLE = 64 * 1024
MAX_BOUNDARY = 70            # RFC 2046 5.1.1: boundary := 0*69<bchars> bcharsnospace
MAX_PARTS = 10000   # a submission holds at most PARTAGE_MAX_DOCUMENTS_PER_SUBMISSION (1000) documents
XOP_INCLUDE = f"{{{C.XOP}}}Include"
SOAP_HEADER = f"{{{C.SOAP12}}}Header"
SOAP_BODY = f"{{{C.SOAP12}}}Body"
SOAP_CONTENT_TYPES = ("application/soap+xml", "text/xml", "application/xml")


class MtomError(ValueError):
    """The multipart message cannot be used (the message says why)."""


class MtomTooLarge(MtomError, TooLarge):
    """The message, or its SOAP envelope, exceeds its size limit (HTTP 413)."""


@dataclass
class Part:
    """A non-root MIME part, spooled: read `file` from position 0."""

    content_type: str
    size: int
    sha1_hex: str
    file: IO[bytes]
    content_id: str = ""

    def read(self) -> bytes:
        """The whole part (small parts only: tests, short documents)."""
        self.file.seek(0)
        data = self.file.read()
        self.file.seek(0)
        return data


@dataclass
class MultipartMessage:
    """The root part (the SOAP envelope) and the other parts by normalised Content-ID."""

    root: bytes
    root_content_type: str
    parts: dict[str, Part] = field(default_factory=dict)

    def part(self, cid: str) -> Part:
        """The part an xop:Include href names, or MtomError when there is none."""
        key = normalize_cid(cid)
        found = self.parts.get(key)
        if found is None:
            raise MtomError(f"xop:Include references cid:{key}, which is not a part of this message "
                            f"(parts: {', '.join(sorted(self.parts)) or 'none'})")
        return found

    def close(self) -> None:
        for part in self.parts.values():
            part.file.close()

    def __enter__(self) -> MultipartMessage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Readable(Protocol):
    """A stream an attachment's bytes are read from (a file, a blob store's stream)."""

    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


@runtime_checkable
class _Seekable(Protocol):
    def seekable(self) -> bool: ...

    def tell(self) -> int: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


@dataclass
class Attachment:
    """An outgoing part. `source` is bytes, a filesystem path, or a binary file object.

    build_multipart takes ownership of file objects: each is closed once streamed (or
    when the chunk iterator is closed early).
    """

    cid: str
    content_type: str
    source: bytes | str | os.PathLike[str] | Readable


# --------------------------------------------------------------------------- helpers
def normalize_cid(value: str) -> str:
    """A Content-ID or cid: URL in one comparable form: no <>, no cid:, URL-unquoted."""
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if text[:4].lower() == "cid:":
        text = text[4:]
    return unquote(text)


def content_type_params(content_type: str) -> tuple[str, dict[str, str]]:
    """(media type in lower case, parameters with lower-case names) of a Content-Type value."""
    message = Message()
    message["Content-Type"] = content_type
    params = message.get_params(header="content-type") or []
    media = (params[0][0] if params else "").strip().lower()
    values = {}
    for name, value in params[1:]:
        if isinstance(value, tuple):   # RFC 2231 encoded
            value = value[2]
        values[name.strip().lower()] = (value or "").strip()
    return media, values


def xop_includes(element: etree._Element) -> list[tuple[etree._Element, str]]:
    """Every xop:Include at or under `element`, with the normalised cid it references."""
    found = []
    for include in element.iter(XOP_INCLUDE):
        href = include.get("href")
        if not href:
            raise MtomError("xop:Include without an href attribute")
        found.append((include, normalize_cid(href)))
    return found


# --------------------------------------------------------------------------- reading
def read_soap_request(content_type: str, stream: IO[bytes], *, max_total: int,
                      spool_threshold: int = 1 << 20,
                      on_root: Callable[[bytes], None] | None = None,
                      max_root: int | None = None,
                      on_header: Callable[[etree._Element | None], None] | None = None) -> MultipartMessage:
    """An MTOM message, or a plain SOAP message (inline base64) as a message with no parts.

    The SOAP envelope (the plain body, or the MTOM root part) is held in memory: at most
    `max_root` bytes (default max_total); attachments stream to spooled files.

    `on_root` sees the root part (the SOAP envelope) as soon as it is read, before any
    attachment is spooled: what it raises stops the reading (credentials are checked there).
    `on_header` sees a plain message's soap:Header (None when the Body comes first) as soon as
    it has streamed in, before the rest is read: credentials are checked before megabytes of
    inline documents are.
    """
    media, _ = content_type_params(content_type or "")
    if media == "multipart/related":
        return parse_multipart(content_type, stream, max_total=max_total,
                               spool_threshold=spool_threshold, on_root=on_root, max_root=max_root)
    if media not in SOAP_CONTENT_TYPES:
        raise MtomError(f"unsupported Content-Type {content_type!r}: expected application/soap+xml "
                        "or multipart/related (MTOM/XOP)")
    data = bytearray()
    watch = _HeaderWatch(on_header) if on_header is not None else None
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            break
        data += chunk
        if watch is not None and not watch.done:
            watch.feed(chunk)
        if len(data) > min(max_total, max_root or max_total):
            max_total = min(max_total, max_root or max_total)
            raise MtomTooLarge(f"SOAP message exceeds the size limit of {max_total} bytes")
    if on_root is not None:
        on_root(bytes(data))
    return MultipartMessage(root=bytes(data), root_content_type=content_type)


class _HeaderWatch:
    """Parses the start of a plain SOAP message as it streams, until its Header has ended.

    The parser is as hardened as `partage.xmlsafe` (no network, no DTD, no entity
    expansion); a message it cannot read is left to the full parse, which says why.
    """

    def __init__(self, on_header: Callable[[etree._Element | None], None]) -> None:
        self.on_header = on_header
        self.done = False
        self._parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False, no_network=True,
                                           load_dtd=False, huge_tree=False)

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.feed(chunk)
            events = list(self._parser.read_events())
        except etree.XMLSyntaxError:
            self.done = True
            return
        for event, element in events:
            if not isinstance(element, etree._Element):   # start/end events carry elements
                continue
            if event == "end" and element.tag == SOAP_HEADER:
                self.done = True
                self.on_header(element)
                return
            if event == "start" and element.tag == SOAP_BODY:
                self.done = True
                self.on_header(None)
                return


def parse_multipart(content_type: str, stream: IO[bytes], *, max_total: int,
                    spool_threshold: int = 1 << 20,
                    on_root: Callable[[bytes], None] | None = None,
                    max_root: int | None = None) -> MultipartMessage:
    """Parse a multipart/related body from `stream`, reading it in chunks.

    The root part is the one named by the `start` parameter, else the first part.
    Every other part goes to a SpooledTemporaryFile (in memory up to spool_threshold
    bytes, on disk beyond), with its SHA-1 and size computed while it streams.
    """
    media, params = content_type_params(content_type)
    if media != "multipart/related":
        raise MtomError(f"expected multipart/related, got {media or 'no media type'}")
    boundary = params.get("boundary")
    if not boundary:
        raise MtomError("multipart/related Content-Type has no boundary parameter")
    if len(boundary) > MAX_BOUNDARY or boundary.endswith(" "):   # RFC 2046 5.1.1: 1 to 70 characters
        raise MtomError(f"multipart boundary of {len(boundary)} characters: RFC 2046 allows 1 to "
                        f"{MAX_BOUNDARY}, not ending with a space")
    start = normalize_cid(params["start"]) if params.get("start") else None
    reader = _PartReader(stream, boundary.encode("latin-1"), max_total)
    message = MultipartMessage(root=b"", root_content_type="")
    root_found = False
    try:
        for index, headers in enumerate(reader.parts()):
            if index >= MAX_PARTS:
                raise MtomError(f"more than {MAX_PARTS} MIME parts")
            cid = normalize_cid(headers.get("content-id", ""))
            part_type = headers.get("content-type", "application/octet-stream")
            encoding = headers.get("content-transfer-encoding", "binary").strip().lower()
            if encoding not in ("binary", "8bit", "7bit"):
                raise MtomError(f"part {cid or index + 1} uses Content-Transfer-Encoding {encoding}; "
                                "MTOM parts must be binary")
            is_root = (cid == start) if start else index == 0
            if is_root:
                root = bytearray()
                for chunk in reader.body():
                    root += chunk
                    if max_root is not None and len(root) > max_root:
                        raise MtomTooLarge(f"the SOAP envelope (root part) exceeds {max_root} bytes")
                message.root, message.root_content_type = bytes(root), part_type
                root_found = True
                if on_root is not None:
                    on_root(message.root)
                continue
            if not cid:
                raise MtomError(f"MIME part {index + 1} has no Content-ID, so nothing can reference it")
            if cid in message.parts:
                raise MtomError(f"two MIME parts have Content-ID <{cid}>")
            spool = tempfile.SpooledTemporaryFile(max_size=spool_threshold)
            message.parts[cid] = Part(part_type, 0, "", spool, cid)
            digest, size = hashlib.sha1(), 0
            for chunk in reader.body():
                digest.update(chunk)
                size += len(chunk)
                spool.write(chunk)
            spool.seek(0)
            message.parts[cid] = Part(part_type, size, digest.hexdigest(), spool, cid)
    except BaseException:
        message.close()
        raise
    if not root_found:
        message.close()
        if start:
            raise MtomError(f"missing root part: no MIME part has the start Content-ID <{start}>")
        raise MtomError("missing root part: the multipart message has no parts")
    return message


class _PartReader:
    """Splits a multipart stream at its delimiters, one chunk at a time.

    A delimiter is CRLF "--" boundary at the start of a line (a bare LF is tolerated);
    the stream is read in CHUNK pieces and only a delimiter's length is held back
    between reads.
    """

    def __init__(self, stream: IO[bytes], boundary: bytes, max_total: int) -> None:
        self.stream = stream
        self.delimiter = b"\n--" + boundary
        self.max_total = max_total
        self.total = 0
        self.buffer = bytearray(b"\n")   # lets a first delimiter at offset 0 match
        self.eof = False
        self.finished = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.stream.read(CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.total += len(chunk)
        if self.total > self.max_total:
            raise MtomTooLarge(f"message exceeds the size limit of {self.max_total} bytes")
        self.buffer += chunk
        return True

    def _skip_preamble(self) -> None:
        """Up to the first delimiter; a preamble is a line or two, so at most MAX_PREAMBLE bytes."""
        while True:
            at = self.buffer.find(self.delimiter)
            if at >= 0:
                del self.buffer[:at]
                return
            keep = len(self.delimiter)
            if len(self.buffer) > keep:
                del self.buffer[:-keep]
            if self.total > MAX_PREAMBLE:
                raise MtomError(f"no multipart boundary in the first {MAX_PREAMBLE} bytes (wrong boundary "
                                "parameter?)")
            if not self._fill():
                raise MtomError("no multipart boundary found in the body (wrong boundary parameter?)")

    def _after_delimiter(self) -> bool:
        """Consume a delimiter line; True if a part follows, False at the close delimiter."""
        need = len(self.delimiter) + 2
        while len(self.buffer) < need and self._fill():
            pass
        del self.buffer[:len(self.delimiter)]
        if self.buffer.startswith(b"--"):
            self.finished = True
            return False
        while True:   # transport padding, then the line break
            eol = self.buffer.find(b"\n")
            if eol >= 0:
                if self.buffer[:eol].strip(b" \t\r"):
                    raise MtomError("unexpected characters after a multipart boundary")
                del self.buffer[:eol + 1]
                return True
            if len(self.buffer) > 1024 or not self._fill():
                raise MtomError("truncated multipart message: boundary line not terminated")

    def _headers(self) -> dict[str, str]:
        while True:
            if self.buffer.startswith(b"\r\n") or self.buffer.startswith(b"\n"):
                end, sep = 0, 2 if self.buffer.startswith(b"\r\n") else 1   # no headers at all
                break
            end, sep = self.buffer.find(b"\r\n\r\n"), 4
            lf_end = self.buffer.find(b"\n\n")
            if lf_end >= 0 and (end < 0 or lf_end < end):
                end, sep = lf_end, 2
            if end >= 0:
                break
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise MtomError(f"MIME part headers longer than {MAX_HEADER_BYTES} bytes")
            if not self._fill():
                raise MtomError("truncated multipart message: part headers not terminated")
        raw = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[:end + sep]
        headers: dict[str, str] = {}
        name = None
        for line in raw.replace("\r\n", "\n").split("\n"):
            if not line:
                continue
            if line[0] in " \t" and name:   # folded continuation
                headers[name] += " " + line.strip()
                continue
            name, colon, value = line.partition(":")
            if not colon:
                raise MtomError(f"malformed MIME header line {line[:80]!r}")
            name = name.strip().lower()
            headers[name] = value.strip()
        return headers

    def parts(self) -> Iterator[dict[str, str]]:
        """Headers of each part in turn; read its content with body() before the next."""
        self._skip_preamble()
        while self._after_delimiter():
            yield self._headers()
        if not self.finished:
            raise MtomError("truncated multipart message: no closing boundary")

    def body(self) -> Iterator[bytes]:
        """Content of the current part in chunks, up to (not including) the next delimiter."""
        keep = len(self.delimiter)
        while True:
            at = self.buffer.find(self.delimiter)
            if at >= 0:
                end = at - 1 if at > 0 and self.buffer[at - 1:at] == b"\r" else at
                if end:
                    yield bytes(self.buffer[:end])
                del self.buffer[:at]
                return
            # Hold back what could be the start of a delimiter (and its CR).
            if len(self.buffer) > keep + 1:
                cut = len(self.buffer) - keep - 1
                yield bytes(self.buffer[:cut])
                del self.buffer[:cut]
            if not self._fill():
                raise MtomError("truncated multipart message: a part is not followed by a boundary")


# --------------------------------------------------------------------------- writing
def build_multipart(root_xml: bytes, attachments: list[Attachment], *,
                    root_content_type: str = "application/soap+xml; charset=UTF-8",
                    action: str | None = None) -> tuple[str, Iterator[bytes], int | None]:
    """(Content-Type header, body chunks, body length or None) of an MTOM message.

    Attachments are streamed in CHUNK pieces; the length is known when every
    attachment's size is (bytes, paths, seekable files).
    """
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    root_cid = f"root.{uuid.uuid4().hex}@partage"
    start_info, root_params = content_type_params(root_content_type)
    charset = root_params.get("charset", "UTF-8")
    type_param = start_info
    if action:
        type_param += f'; action=\\"{action}\\"'
    content_type = (f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; '
                    f'start="<{root_cid}>"; start-info="{start_info}"')
    if action:
        content_type += f'; action="{action}"'
    dash = f"--{boundary}".encode()
    root_head = (dash + b"\r\n"
                 + f'Content-Type: application/xop+xml; charset={charset}; type="{type_param}"\r\n'
                   f"Content-Transfer-Encoding: binary\r\n"
                   f"Content-ID: <{root_cid}>\r\n\r\n".encode())
    heads = []
    length: int | None = len(root_head) + len(root_xml)
    for attachment in attachments:
        head = (b"\r\n" + dash + b"\r\n"
                + f"Content-Type: {attachment.content_type}\r\n"
                  f"Content-Transfer-Encoding: binary\r\n"
                  f"Content-ID: <{normalize_cid(attachment.cid)}>\r\n\r\n".encode())
        heads.append(head)
        size = _source_size(attachment.source)
        length = None if length is None or size is None else length + len(head) + size
    tail = b"\r\n" + dash + b"--\r\n"
    if length is not None:
        length += len(tail)
    return content_type, _chunks(root_head, root_xml, heads, attachments, tail), length


def _source_size(source: bytes | str | os.PathLike[str] | Readable) -> int | None:
    if isinstance(source, bytes | bytearray | memoryview):
        return len(source)
    if isinstance(source, str | os.PathLike):
        return os.path.getsize(source)
    if not isinstance(source, _Seekable):   # a stream that cannot tell its length
        return None
    try:
        if source.seekable():
            here = source.tell()
            end = source.seek(0, os.SEEK_END)
            source.seek(here)
            return end - here
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _chunks(root_head: bytes, root_xml: bytes, heads: list[bytes], attachments: list[Attachment],
            tail: bytes) -> Iterator[bytes]:
    opened: list[Readable] = [a.source for a in attachments
                              if not isinstance(a.source, bytes | bytearray | memoryview | str | os.PathLike)]
    try:
        yield root_head + root_xml
        for head, attachment in zip(heads, attachments, strict=True):
            yield head
            source = attachment.source
            if isinstance(source, bytes | bytearray | memoryview):
                view = memoryview(source)
                for offset in range(0, len(view), CHUNK):
                    yield bytes(view[offset:offset + CHUNK])
                continue
            handle = open(source, "rb") if isinstance(source, str | os.PathLike) else source
            try:
                while True:
                    chunk = handle.read(CHUNK)
                    if not chunk:
                        break
                    yield chunk
            finally:
                handle.close()
        yield tail
    finally:
        for handle in opened:
            try:
                handle.close()
            except Exception:   # closing is best effort; the response is already on its way
                pass
