"""XPath locations for findings, in the `hl7:` prefixed form ANS reports and expected.json use.

Computed only when a finding is made (rare), by walking up the ancestors: a position
predicate is written only when siblings share the name, so paths stay readable.
"""

from __future__ import annotations

from lxml import etree

_PREFIXES = {
    "urn:hl7-org:v3": "hl7",
    "urn:hl7-org:sdtc": "sdtc",
    "http://www.w3.org/1999/XSL/Transform": "xsl",
    "urn:oid:1.3.6.1.4.1.19376.1.3.2": "lab",
    "urn:dicom-org:ps3-20": "ps3-20",
}


def _step(el: etree._Element) -> str:
    qname = etree.QName(el)
    prefix = _PREFIXES.get(qname.namespace or "")
    if prefix:
        name = f"{prefix}:{qname.localname}"
    elif qname.namespace:
        name = f"*:{qname.localname}"
    else:
        name = qname.localname
    parent = el.getparent()
    if parent is None:
        return name
    same = [c for c in parent.iterchildren(el.tag)]
    if len(same) > 1:
        return f"{name}[{same.index(el) + 1}]"
    return name


def xpath_of(el: etree._Element | None) -> str:
    """Absolute XPath of an element, e.g. /hl7:ClinicalDocument/hl7:author[2]/hl7:time."""
    if el is None or not isinstance(el.tag, str):
        return "/"
    steps = []
    node: etree._Element | None = el
    while node is not None:
        if isinstance(node.tag, str):
            steps.append(_step(node))
        node = node.getparent()
    return "/" + "/".join(reversed(steps))


def child_path(parent: etree._Element | None, step: str) -> str:
    """Location of a child that should exist (and may not): the parent's path + the step."""
    base = xpath_of(parent)
    return (base.rstrip("/") + "/" + step) if step else base


def line_of(el: etree._Element | None) -> int | None:
    """The source line of an element (None for no element, or a tree built in memory)."""
    line = el.sourceline if el is not None else None
    return line if isinstance(line, int) else None


def text_of(el: etree._Element) -> str:
    """The element's text content (its text nodes, in order)."""
    return "".join(t for t in el.itertext() if isinstance(t, str))


def elements(result: object) -> list[etree._Element]:
    """The elements of an XPath result (lxml types it as any XPath value)."""
    return [n for n in result if isinstance(n, etree._Element)] if isinstance(result, list) else []
