"""XPath locations for findings, in the `hl7:` prefixed form ANS reports and expected.json use.

Computed only when a finding is made (rare), by walking up the ancestors: a position
predicate is written only when siblings share the name, so paths stay readable.
"""

from __future__ import annotations

import re

from lxml import etree

# The prefixes locations are written with (declared in every SVRL report, `findings.to_svrl`).
PREFIXES = {
    "urn:hl7-org:v3": "hl7",
    "urn:hl7-org:sdtc": "sdtc",
    "http://www.w3.org/1999/XSL/Transform": "xsl",
    "urn:oid:1.3.6.1.4.1.19376.1.3.2": "lab",
    "urn:dicom-org:ps3-20": "ps3-20",
}


def _step(el: etree._Element) -> str:
    qname = etree.QName(el)
    prefix = PREFIXES.get(qname.namespace or "")
    if prefix:
        name = f"{prefix}:{qname.localname}"
    elif qname.namespace:
        name = f"*:{qname.localname}"
    else:
        name = qname.localname
    parent = el.getparent()
    if parent is None:
        return name
    if prefix or not qname.namespace:
        same = [c for c in parent.iterchildren(el.tag)]
    else:   # `*:name` selects that local name in any namespace: count them all
        same = [c for c in parent.iterchildren(tag=etree.Element) if etree.QName(c).localname == qname.localname]
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


_LIBXML2_STEP = re.compile(r"(?:(?P<any>\*)|(?:(?P<prefix>[^:\[\]/]+):)?(?P<name>[^:\[\]/]+))(?:\[(?P<n>\d+)\])?\Z")


def element_at_node_path(tree: etree._ElementTree, path: str) -> etree._Element | None:
    """The element a libxml2 node path names (xmlGetNodePath: what a schema error's `path` is).

    Its steps are written in the document's own prefixes (`v3:entry[3]`), or `*[n]` (the n-th
    element child) for an element of a default namespace: they are resolved by walking the tree,
    never evaluated as XPath (a prefix means nothing outside the document). The deepest element
    reached is returned (a text() or attribute step stops the walk); None if the path is not one.
    """
    if not path.startswith("/"):
        return None
    node: etree._Element | None = None
    for step in path[1:].split("/"):
        m = _LIBXML2_STEP.match(step)
        if m is None:
            return node
        if node is None:
            candidates = [tree.getroot()]
        else:
            candidates = [c for c in node.iterchildren(tag=etree.Element)]
        if not m.group("any"):
            candidates = [c for c in candidates if etree.QName(c).localname == m.group("name")
                          and (c.prefix or None) == (m.group("prefix") or None)]
        index = int(m.group("n") or 1) - 1
        if not 0 <= index < len(candidates):
            return node
        node = candidates[index]
    return node


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
