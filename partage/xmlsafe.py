"""Hardened XML parsing for everything that arrives on the wire: SOAP, ebRIM, SVS.

Messages come from anyone, so parsing must never reach the network, load a DTD,
expand an entity or build an unbounded tree. lxml is configured for that (no network,
no DTD loading, no entity resolution, huge_tree off, which keeps libxml2's own limits:
depth 256, text nodes under 10 MB), and on top of it any DOCTYPE is refused (no SOAP
or ebRIM message needs one; XXE and "billion laughs" both need one), the byte size is
bounded and so is the element depth.

CDA documents have their own parser in `partage.cda.parser`, which reports refusals
as validation findings; this one raises.
"""

from __future__ import annotations

import re
import threading

from lxml import etree

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_DEPTH = 128
# Elements cost libxml2 about 120 bytes each and `<a/>` is 4 bytes on the wire: beyond a
# base, a document may have one tag per MARKUP_BYTES bytes (real CDA, SOAP and FHIR XML
# have one per 30 bytes or more), so that a tree stays a small multiple of its bytes.
MARKUP_BASE = 20000
MARKUP_BYTES = 16
LIBXML2_MAX_DEPTH = 256   # libxml2's limit without XML_PARSE_HUGE; deeper is refused anyway


class XmlInputError(ValueError):
    """The bytes are not acceptable XML input (the message says why)."""


class UnsafeXmlError(XmlInputError):
    """Well-formed or not, the input uses something refused on purpose (DOCTYPE, size, depth)."""


class XmlSyntaxError(XmlInputError):
    """The input is not well-formed XML."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


_local = threading.local()

# The prolog before the root element: BOM, XML declaration, PIs, comments, white space.
_PROLOG_ITEM = re.compile(rb"\s+|<\?.*?\?>|<!--.*?-->", re.S)


def _parser() -> etree.XMLParser:
    """One parser per thread: lxml parsers carry state and must not be shared across threads."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                                 dtd_validation=False, huge_tree=False, collect_ids=False,
                                 remove_blank_text=False)
        _local.parser = parser
    return parser


def parse_xml(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES,
              max_depth: int = DEFAULT_MAX_DEPTH) -> etree._Element:
    """The root element of `data`, or UnsafeXmlError / XmlSyntaxError saying what is wrong."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("parse_xml takes bytes (the message as received), not text")
    if len(data) > max_bytes:
        raise UnsafeXmlError(f"XML input of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    if not data.strip():
        raise XmlSyntaxError("empty input where an XML document was expected", 1)
    data = bytes(data)
    too_many = markup_excess(data)
    if too_many:
        raise UnsafeXmlError(too_many)
    if _declares_doctype(data):
        raise UnsafeXmlError("DOCTYPE declarations are not accepted (no DTD, no entities)")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        line = exc.position[0] if exc.position else None
        message = str(exc.msg or exc)
        if "Excessive depth" in message:
            raise UnsafeXmlError(f"XML nesting deeper than {LIBXML2_MAX_DEPTH} levels") from exc
        if "network entity" in message or "failed to load" in message:
            raise UnsafeXmlError(f"external resources are not loaded: {message}") from exc
        raise XmlSyntaxError(f"malformed XML: {message}", line) from exc
    if root is None:
        raise XmlSyntaxError("no root element", 1)
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None or tree.docinfo.externalDTD is not None:
        raise UnsafeXmlError("DOCTYPE declarations are not accepted (no DTD, no entities)")
    if _deeper_than(root, max_depth):
        raise UnsafeXmlError(f"XML nesting deeper than {max_depth} levels")
    return root


def markup_excess(data: bytes, base: int = MARKUP_BASE, per: int = MARKUP_BYTES) -> str:
    """Why `data` holds too many tags to be parsed (counted on the bytes, before any tree), or ""."""
    allowed = base + len(data) // per
    count = data.count(b"<")
    if count <= allowed:
        return ""
    return (f"{count} tags in {len(data)} bytes: more than the {allowed} allowed "
            f"({base} + one per {per} bytes)")


def _declares_doctype(data: bytes) -> bool:
    """True when a DOCTYPE comes before the root element (checked before libxml2 sees it)."""
    pos = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    while True:
        match = _PROLOG_ITEM.match(data, pos)
        if match is None or match.end() == pos:
            break
        pos = match.end()
    return data.startswith(b"<!DOCTYPE", pos)


def _deeper_than(root: etree._Element, max_depth: int) -> bool:
    """True when an element sits deeper than max_depth (the root is depth 1).

    One XPath walk in C, `/*/*/.../*` with max_depth+1 steps: cheap next to the parse.
    """
    if max_depth >= LIBXML2_MAX_DEPTH:
        return False
    return bool(root.xpath("boolean(/" + "/".join(["*"] * (max_depth + 1)) + ")"))


_NOT_XML_CHAR = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    """`value` made writable into XML: characters XML 1.0 forbids become U+FFFD.

    Error messages quote what a client sent, and what a client sent may hold NUL or
    control bytes; the answer must still be a well-formed message.
    """
    return _NOT_XML_CHAR.sub("\ufffd", value)
