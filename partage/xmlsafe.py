"""The one hardened XML parsing policy: SOAP, ebRIM, FHIR XML, SVS files, CDA documents.

Input comes from anyone, so parsing must never reach the network, load a DTD, expand an
entity or build an unbounded tree. lxml is configured for that (no network, no DTD
loading, no entity resolution, huge_tree off, which keeps libxml2's own limits: depth 256,
text nodes under 10 MB), and on top of it:

- any DOCTYPE is refused before libxml2 sees the bytes (no message or document of ours
  needs one; XXE and "billion laughs" both need one), including in UTF-16/32 input;
- the byte size is bounded, and so is the element depth.

Every refusal is an `XmlInputError` carrying a stable `rule` id (the ids of the CDA
validation reports: `not-well-formed`, `xml-doctype-forbidden`, `xml-bomb`,
`xxe-external-entity`, `xml-too-large`, `xml-too-deep`) and, when known, the line.
`partage.cda.parser` turns them into validation findings; the SOAP and FHIR doors into
their own faults.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from lxml import etree

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_DEPTH = 128
# Elements cost libxml2 about 120 bytes each and `<a/>` is 4 bytes on the wire: beyond a
# base, a document may have one tag per MARKUP_BYTES bytes (real CDA, SOAP and FHIR XML
# have one per 30 bytes or more), so that a tree stays a small multiple of its bytes.
MARKUP_BASE = 20000
MARKUP_BYTES = 16
LIBXML2_MAX_DEPTH = 256   # libxml2's limit without XML_PARSE_HUGE; deeper is refused anyway

NOT_WELL_FORMED = "not-well-formed"
DOCTYPE_FORBIDDEN = "xml-doctype-forbidden"
XML_BOMB = "xml-bomb"
XXE = "xxe-external-entity"
TOO_LARGE = "xml-too-large"
TOO_DEEP = "xml-too-deep"
RULES = (NOT_WELL_FORMED, DOCTYPE_FORBIDDEN, XML_BOMB, XXE, TOO_LARGE, TOO_DEEP)


class XmlInputError(ValueError):
    """The bytes are not acceptable XML input: `rule` says which policy refused them."""

    def __init__(self, message: str, line: int | None = None, rule: str = NOT_WELL_FORMED) -> None:
        super().__init__(message)
        self.line = line
        self.rule = rule


class UnsafeXmlError(XmlInputError):
    """Well-formed or not, the input uses something refused on purpose (DOCTYPE, size, depth)."""


class XmlSyntaxError(XmlInputError):
    """The input is not well-formed XML."""


_local = threading.local()


def _parser() -> etree.XMLParser:
    """One parser per thread: lxml parsers carry state and must not be shared across threads.

    (Validating against an XSD while parsing was measured for CDA: no faster than parse
    then validate, so the two stay separate.)
    """
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                                 dtd_validation=False, huge_tree=False, collect_ids=False,
                                 remove_blank_text=False)
        _local.parser = parser
    return parser


# The prolog before the root element: BOM, XML declaration, PIs, comments, white space.
_PROLOG = re.compile(rb"(?:\xef\xbb\xbf)?(?:\s+|<\?.*?\?>|<!--.*?-->)*", re.S)
_EXTERNAL_ENTITY = re.compile(rb"<!ENTITY\s+(?:%\s*)?[^\s>]+\s+(?:SYSTEM|PUBLIC)\b")
_DOCTYPE_EXTERNAL = re.compile(rb"<!DOCTYPE\s+[^\s\[>]+\s+(?:SYSTEM|PUBLIC)\b")
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00")


def _ascii_view(data: bytes) -> bytes:
    """The bytes as an ASCII-compatible view, so the DOCTYPE scan also works on UTF-16/32."""
    head = data[:4]
    if head.startswith(_WIDE_BOMS) or b"\x00" in head:
        for codec in ("utf-32", "utf-16", "utf-16-le", "utf-16-be"):
            try:
                return data.decode(codec).encode("utf-8", "replace")
            except UnicodeDecodeError:
                continue
    return data


def _check_doctype(data: bytes) -> None:
    """Refuse a DOCTYPE in the prolog (the only place one can be); scans the prolog only."""
    view = _ascii_view(data)
    match = _PROLOG.match(view)
    at = match.end() if match else 0
    if not view.startswith(b"<!DOCTYPE", at):
        return
    line = view.count(b"\n", 0, at) + 1
    end = view.find(b"]>", at, at + 1_000_000)
    declaration = view[at:end if end > 0 else at + 65536]
    if _EXTERNAL_ENTITY.search(declaration):
        raise UnsafeXmlError("the DOCTYPE declares an external entity (XXE attempt); DOCTYPEs are refused "
                             "and nothing is resolved", line, XXE)
    if b"<!ENTITY" in declaration:
        raise UnsafeXmlError("the DOCTYPE declares entities (entity expansion, 'billion laughs'); DOCTYPEs "
                             "are refused and no entity is expanded", line, XML_BOMB)
    what = "an external DTD" if _DOCTYPE_EXTERNAL.match(declaration) else "a DOCTYPE"
    raise UnsafeXmlError(f"the input declares {what}; DOCTYPE declarations are not accepted "
                         "(no DTD, no entities)", line, DOCTYPE_FORBIDDEN)


def _syntax_error(exc: etree.XMLSyntaxError) -> XmlInputError:
    """libxml2's refusal as our error: its resource limits are policy, the rest is syntax."""
    message = str(exc.msg or exc)
    line = exc.lineno or (exc.position[0] if exc.position else None)
    lowered = message.lower()
    if "amplification" in lowered or ("entity" in lowered and "loop" in lowered):
        return UnsafeXmlError(f"XML entity expansion refused: {message}", line, XML_BOMB)
    if "excessive depth" in lowered:
        return UnsafeXmlError(f"XML nesting deeper than {LIBXML2_MAX_DEPTH} levels", line, TOO_DEEP)
    if "too long" in lowered or "huge" in lowered or "resource limit" in lowered:
        return UnsafeXmlError(f"XML input exceeds a size limit: {message}", line, TOO_LARGE)
    if "network entity" in lowered or "failed to load" in lowered:
        return UnsafeXmlError(f"external resources are not loaded: {message}", line, XXE)
    return XmlSyntaxError(f"malformed XML: {message}", line, NOT_WELL_FORMED)


def parse_xml(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES,
              max_depth: int = DEFAULT_MAX_DEPTH) -> etree._Element:
    """The root element of `data`, or UnsafeXmlError / XmlSyntaxError saying what is wrong."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("parse_xml takes bytes (the input as received), not text")
    data = bytes(data)
    if len(data) > max_bytes:
        raise UnsafeXmlError(f"XML input of {len(data)} bytes exceeds the limit of {max_bytes} bytes",
                             None, TOO_LARGE)
    if not data.strip():
        raise XmlSyntaxError("empty input where an XML document was expected", 1)
    too_many = markup_excess(data)   # counted on the bytes, before a tree is built
    if too_many:
        raise UnsafeXmlError(too_many, None, TOO_LARGE)
    _check_doctype(data)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(exc) from None
    if root is None:
        raise XmlSyntaxError("no root element", 1)
    docinfo: Any = root.getroottree().docinfo   # lxml-stubs lack DocInfo.doctype
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise UnsafeXmlError("DOCTYPE declarations are not accepted (no DTD, no entities)", None,
                             DOCTYPE_FORBIDDEN)   # belt and braces: the scan above refuses first
    if _deeper_than(root, max_depth):
        raise UnsafeXmlError(f"XML nesting deeper than {max_depth} levels", None, TOO_DEEP)
    return root


def markup_excess(data: bytes, base: int = MARKUP_BASE, per: int = MARKUP_BYTES) -> str:
    """Why `data` holds too many tags to be parsed (counted on the bytes, before any tree), or ""."""
    allowed = base + len(data) // per
    count = data.count(b"<")
    if count <= allowed:
        return ""
    return (f"{count} tags in {len(data)} bytes: more than the {allowed} allowed "
            f"({base} + one per {per} bytes)")


_DEPTH_CHECKS: dict[int, etree.XPath] = {}


def _deeper_than(root: etree._Element, max_depth: int) -> bool:
    """True when an element sits deeper than max_depth (the root is depth 1).

    One XPath walk in C, `/*/*/.../*` with max_depth+1 steps, compiled once per limit:
    cheap next to the parse. libxml2 refuses anything deeper than its own limit already.
    """
    if max_depth >= LIBXML2_MAX_DEPTH:
        return False
    check = _DEPTH_CHECKS.get(max_depth)
    if check is None:
        check = _DEPTH_CHECKS[max_depth] = etree.XPath("boolean(/" + "/".join(["*"] * (max_depth + 1)) + ")")
    return bool(check(root))


_NOT_XML_CHAR = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    """`value` made writable into XML: characters XML 1.0 forbids become U+FFFD.

    Error messages quote what a client sent, and what a client sent may hold NUL or
    control bytes; the answer must still be a well-formed message.
    """
    return _NOT_XML_CHAR.sub("\ufffd", value)
