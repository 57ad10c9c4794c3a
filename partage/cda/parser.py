"""CDA documents read with the one hardened XML policy (`partage.xmlsafe`), refusals as findings.

The policy itself (no network, no DTD, no entity, any DOCTYPE refused, bounded size and
depth) lives in `partage.xmlsafe`; this module gives CDA its limits (20 MB, libxml2's depth)
and turns a refusal into a Finding of layer "parse", so callers report it like any other
rule. It also finds the ClinicalDocument in an auto-présentable wrapper (an xsl:stylesheet
embedding a CDA).
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from ..xmlsafe import LIBXML2_MAX_DEPTH, TOO_LARGE, XmlInputError
from ..xmlsafe import parse_xml as _parse_xml
from .constants import CLINICAL_DOCUMENT, HL7
from .findings import ERROR, PARSE, Finding
from .messages import parse_message

DEFAULT_MAX_BYTES = 20 * 1024 * 1024


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


def too_large(size: int, limits: ParseLimits = DEFAULT_LIMITS) -> Finding | None:
    """The parse refusal of a document of `size` bytes over the limit (None within it): the
    finding the parser gives, for a caller that knows the size before reading the bytes."""
    if size <= limits.max_bytes:
        return None
    message = parse_message(TOO_LARGE, size=size, limits=(limits.max_bytes, limits.max_depth), detail="")
    return Finding(TOO_LARGE, ERROR, PARSE, message, "/")


def parse_xml(data: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> etree._Element:
    """Parse untrusted bytes into an element tree, or raise XmlRejected."""
    try:
        return _parse_xml(data, max_bytes=limits.max_bytes, max_depth=limits.max_depth)
    except XmlInputError as exc:
        message = parse_message(exc.rule, size=len(data), limits=(limits.max_bytes, limits.max_depth),
                                detail=str(exc))
        raise XmlRejected(Finding(exc.rule, ERROR, PARSE, message, "/", exc.line)) from None


_FIND_EMBEDDED = etree.XPath("descendant::hl7:ClinicalDocument[1]", namespaces={"hl7": HL7})


def parse_cda(data: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> ParsedCda:
    """Parse a CDA document; an auto-présentable wrapper (xsl:stylesheet) yields its embedded CDA."""
    root = parse_xml(data, limits)
    if root.tag == CLINICAL_DOCUMENT:
        return ParsedCda(root, root, False, len(data))
    embedded = _FIND_EMBEDDED(root) if str(root.tag).endswith("}stylesheet") else []
    if isinstance(embedded, list) and embedded and isinstance(embedded[0], etree._Element):
        return ParsedCda(root, embedded[0], True, len(data))
    return ParsedCda(root, None, False, len(data))
