"""CDA narrative -> safe HTML for reading a document in the browser.

A whitelist walk, not an XSLT: CDA narrative elements map to their HTML equivalents
(table, list, paragraph, content...), text is escaped by lxml's serialiser, and no
attribute survives but colspan/rowspan. Links, images and styles from the document are
not rendered (a document from anyone must not be able to run script or call out).
"""

from __future__ import annotations

from lxml import etree, html
from lxml.html import builder as E

from ..cda.locate import text_of
from .cdaread import HL7, child, clean

_H = f"{{{HL7}}}"
_SAME = {"table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption", "sub", "sup", "col", "colgroup"}
_MAP = {"paragraph": "p", "item": "li", "footnote": "small", "content": "span", "linkHtml": "span",
        "footnoteRef": "span"}
MAX_DEPTH = 40


def _convert(el: etree._Element, depth: int = 0) -> html.HtmlElement | None:
    if not isinstance(el.tag, str) or not el.tag.startswith(_H) or depth > MAX_DEPTH:
        return None
    name = el.tag[len(_H):]
    if name == "br":
        out = E.BR()
        out.tail = el.tail
        return out
    if name == "renderMultiMedia":
        out = E.SPAN("[image]", E.CLASS("media"))
        out.tail = el.tail
        return out
    if name == "list":
        tag = "ol" if el.get("listType") == "ordered" else "ul"
    elif name in _SAME:
        tag = name
    else:
        tag = _MAP.get(name, "span")
    out = html.Element(tag)
    if name == "content" and "bold" in (el.get("styleCode") or "").lower():
        out.set("class", "bold")
    for attr in ("colspan", "rowspan"):
        value = el.get(attr, "")
        if value.isdigit():
            out.set(attr, value)
    out.text = el.text
    for sub in el:
        converted = _convert(sub, depth + 1)
        if converted is not None:
            out.append(converted)
        elif sub.tail:   # comments and foreign elements: keep the text that follows them
            if len(out):
                out[-1].tail = (out[-1].tail or "") + sub.tail
            else:
                out.text = (out.text or "") + sub.tail
    out.tail = el.tail
    return out


def _section(section: etree._Element, level: int, depth: int = 0) -> html.HtmlElement:
    out = E.SECTION()
    title = child(section, "title")
    if title is not None:
        out.append(html.Element(f"h{min(level, 6)}"))
        out[-1].text = clean(text_of(title))
    text = child(section, "text")
    if text is not None:
        body = _convert(text, depth)
        if body is not None:
            body.tag = "div"
            body.set("class", "narrative")
            body.tail = None
            out.append(body)
    for comp in section.findall(_H + "component"):
        sub = child(comp, "section")
        if sub is not None and depth < MAX_DEPTH:
            out.append(_section(sub, level + 1, depth + 1))
    return out


def render(doc: etree._Element) -> str:
    """The narrative of a ClinicalDocument as an HTML fragment (a <div>)."""
    root = E.DIV(E.CLASS("cda"))
    title = child(doc, "title")
    if title is not None:
        root.append(E.H2(clean(text_of(title))))
    structured = child(doc, "component", "structuredBody")
    if structured is not None:
        for comp in structured.findall(_H + "component"):
            section = child(comp, "section")
            if section is not None:
                root.append(_section(section, 3))
    nonxml = child(doc, "component", "nonXMLBody", "text")
    if nonxml is not None and (nonxml.get("mediaType") or "").startswith("text/") \
            and nonxml.get("representation") != "B64":
        root.append(E.PRE(text_of(nonxml)))
    page = html.tostring(root, encoding="unicode")
    assert isinstance(page, str)   # encoding="unicode" gives text (lxml types it as Any)
    return page
