"""Hardened XML parsing: documents come from anyone, so parsing must never reach out or blow up.

lxml is set up with no network, no DTD loading, no entity resolution and libxml2's default
resource limits (huge_tree off: depth 256, text nodes under 10 MB). On top of that, any
DOCTYPE is refused before libxml2 sees the bytes (no CDA needs one; billion laughs and XXE
both need one), and the byte size and element depth are bounded. Every refusal is a
Finding of layer "parse", so callers report it like any other rule.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from lxml import etree

from ..xmlsafe import markup_excess
from .constants import CLINICAL_DOCUMENT, HL7
from .findings import ERROR, PARSE, Finding

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
LIBXML2_MAX_DEPTH = 256   # libxml2's own limit without XML_PARSE_HUGE


@dataclass(frozen=True, slots=True)
class ParseLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = LIBXML2_MAX_DEPTH


DEFAULT_LIMITS = ParseLimits()


class XmlRejected(ValueError):
    """The bytes were refused; `finding` says why (rule id, message, line)."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


@dataclass(slots=True)
class ParsedCda:
    """A parsed document: the tree, and the ClinicalDocument in it (None if there is none)."""

    root: etree._Element
    clinical_document: etree._Element | None
    auto_presentable: bool = False   # a CDA wrapped in an xsl:stylesheet ("auto-présentable")
    size: int = 0


_local = threading.local()


def _parser() -> etree.XMLParser:
    """One parser per thread: lxml parsers keep state and must not be shared across threads.

    (Validating against the XSD while parsing was measured: no faster than parse then
    validate, so the two layers stay separate.)
    """
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
            huge_tree=False, collect_ids=False)
    return parser


def _reject(rule: str, message: str, line: int | None = None) -> XmlRejected:
    return XmlRejected(Finding(rule, ERROR, PARSE, message, "/", line))


# A prolog is the XML declaration, processing instructions, comments and white space.
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
    at = _PROLOG.match(view).end()
    if not view.startswith(b"<!DOCTYPE", at):
        return
    line = view.count(b"\n", 0, at) + 1
    end = view.find(b"]>", at, at + 1_000_000)
    declaration = view[at:end if end > 0 else at + 65536]
    if _EXTERNAL_ENTITY.search(declaration):
        raise _reject("xxe-external-entity",
                      "the DOCTYPE declares an external entity (XXE attempt); DOCTYPEs are refused "
                      "and nothing is resolved", line)
    if b"<!ENTITY" in declaration:
        raise _reject("xml-bomb",
                      "the DOCTYPE declares entities (entity expansion, 'billion laughs'); DOCTYPEs "
                      "are refused and no entity is expanded", line)
    what = "an external DTD" if _DOCTYPE_EXTERNAL.match(declaration) else "a DOCTYPE"
    raise _reject("xml-doctype-forbidden", f"the document declares {what}; CDA documents must not "
                  "carry a DOCTYPE", line)


def _syntax_rule(message: str) -> str:
    if "amplification" in message or "entity" in message.lower() and "loop" in message.lower():
        return "xml-bomb"
    if "Excessive depth" in message:
        return "xml-too-deep"
    if "too long" in message or "huge" in message.lower() or "Resource limit" in message:
        return "xml-too-large"
    return "not-well-formed"


_DEPTH_CHECKS: dict[int, etree.XPath] = {}


def _too_deep(root: etree._Element, max_depth: int) -> bool:
    """True when an element sits deeper than max_depth (only checked below libxml2's own limit)."""
    check = _DEPTH_CHECKS.get(max_depth)
    if check is None:
        check = _DEPTH_CHECKS[max_depth] = etree.XPath("boolean(/" + "/*" * (max_depth + 1) + ")")
    return bool(check(root))


def parse_xml(data: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> etree._Element:
    """Parse untrusted bytes into an element tree, or raise XmlRejected."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("parse_xml takes bytes (the document as received), not text")
    data = bytes(data)
    if len(data) > limits.max_bytes:
        raise _reject("xml-too-large", f"document is {len(data)} bytes; the limit is {limits.max_bytes}")
    if not data or data.isspace():
        raise _reject("not-well-formed", "the document is empty")
    _check_doctype(data)
    too_many = markup_excess(data)   # counted on the bytes, before a tree is built
    if too_many:
        raise _reject("xml-too-large", too_many)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        message = str(exc.msg or exc)
        raise _reject(_syntax_rule(message), f"XML parse error: {message}", exc.lineno) from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:   # belt and braces: never reached
        raise _reject("xml-doctype-forbidden", "CDA documents must not carry a DOCTYPE")
    if limits.max_depth < LIBXML2_MAX_DEPTH and _too_deep(root, limits.max_depth):
        raise _reject("xml-too-deep", f"elements nest deeper than {limits.max_depth} levels")
    return root


_FIND_EMBEDDED = etree.XPath("descendant::hl7:ClinicalDocument[1]", namespaces={"hl7": HL7})


def parse_cda(data: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> ParsedCda:
    """Parse a CDA document; an auto-présentable wrapper (xsl:stylesheet) yields its embedded CDA."""
    root = parse_xml(data, limits)
    if root.tag == CLINICAL_DOCUMENT:
        return ParsedCda(root, root, False, len(data))
    embedded = _FIND_EMBEDDED(root) if root.tag.endswith("}stylesheet") else []
    if embedded:
        return ParsedCda(root, embedded[0], True, len(data))
    return ParsedCda(root, None, False, len(data))
