"""Partage's own model-level mutation kinds, to check that refusing `model-invalid/` is general.

The corpus's 68 negative cases are of 10 kinds, and other kinds are held back. These kinds
are not those: each one reads what a document's model schematron demands (its own asserts)
and breaks one such demand in a valid example, so the expected failure is known without
the ANS pipeline, and where it is reported (the rule's context element):

  required-section-removed    a section the model requires (count(section[templateId=X]) = 1 or > 0)
                              removed with its component -> reported on structuredBody
  single-section-duplicated   a section required exactly once, copied -> reported on structuredBody
  coded-value-out-of-set      an element the model binds to a value set (the ANS abstract pattern
                              dansJeuDeValeurs) given a code outside it -> reported on that element
  model-templateId-removed    the document's model templateId removed (the model found through
                              the document's own declaration) -> reported on ClinicalDocument
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from partage.cda.locate import xpath_of
from partage.cda.schematron_compile import active_patterns, expanded_schema

SCH = "{http://purl.oclc.org/dsdl/schematron}"
HL7 = "urn:hl7-org:v3"
NS = {"cda": HL7, "hl7": HL7}
_COUNT = re.compile(r"^count\(cda:component/cda:section\[cda:templateId/@root\s*=\s*'([\d.]+)'\]\)\s*"
                    r"(=\s*1|>\s*0|&gt;\s*0|>=\s*1)\s*$")
KINDS = ("required-section-removed", "single-section-duplicated", "coded-value-out-of-set",
         "model-templateId-removed")


@dataclass(frozen=True)
class Mutation:
    kind: str
    source: str
    data: bytes
    location: str          # where the model schematron must report (positional, hl7 prefix)
    what: str


@dataclass(frozen=True)
class Demands:
    required_sections: list[tuple[str, bool]]   # (section templateId root, exactly once?)
    coded_contexts: list[str]                    # rule contexts of value-set bindings
    document_template_ids: list[str]


def demands(sch: Path) -> Demands:
    schema, _defects = expanded_schema(sch)
    active = active_patterns(schema)
    sections: list[tuple[str, bool]] = []
    coded: list[str] = []
    roots: list[str] = []
    for pattern in schema.iter(SCH + "pattern"):
        if active is not None and pattern.get("id") not in active:
            continue
        for rule in pattern.iter(SCH + "rule"):
            context = " ".join((rule.get("context") or "").split())
            tests = [" ".join(a.get("test", "").split()) for a in rule.iter(SCH + "assert")]
            if context.endswith("structuredBody"):
                for test in tests:
                    m = _COUNT.match(test)
                    if m:
                        sections.append((m.group(1), m.group(2).replace(" ", "") == "=1"))
            if any("svs:Concept[@code=$att_code" in t for t in tests) and "$" not in context:
                coded.append(context)
            if re.search(r"(^|/)cda:ClinicalDocument$", context):
                for test in tests:
                    m = re.match(r"^(?:\./)?cda:templateId\[@root\s*=\s*['\"]([\d.]+)['\"]\]$", test)
                    if m:
                        roots.append(m.group(1))
    return Demands(sections, coded, roots)


def _serialise(tree: etree._ElementTree) -> bytes:
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8")


def mutations(path: Path, sch: Path) -> Iterator[Mutation]:
    """At most one mutation of each kind for one valid document and its model schematron."""
    d = demands(sch)
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    original = etree.parse(str(path), parser)

    def fresh() -> tuple[etree._ElementTree, etree._Element]:
        tree = copy.deepcopy(original)
        root = tree.getroot()
        doc = root if root.tag == f"{{{HL7}}}ClinicalDocument" else root.find(f".//{{{HL7}}}ClinicalDocument")
        assert doc is not None
        return tree, doc

    body_path = "cda:component/cda:structuredBody"
    for root_oid, _once in d.required_sections:
        tree, doc = fresh()
        sections = doc.xpath(f"{body_path}/cda:component[cda:section/cda:templateId/@root='{root_oid}']",
                             namespaces=NS)
        body = doc.find(f"{{{HL7}}}component/{{{HL7}}}structuredBody")
        if not sections or body is None:
            continue
        for component in sections:
            body.remove(component)
        yield Mutation(KINDS[0], path.name, _serialise(tree), xpath_of(body), f"section {root_oid} removed")
        break
    for root_oid, once in d.required_sections:
        if not once:
            continue
        tree, doc = fresh()
        sections = doc.xpath(f"{body_path}/cda:component[cda:section/cda:templateId/@root='{root_oid}']",
                             namespaces=NS)
        if len(sections) != 1:
            continue
        sections[0].addnext(copy.deepcopy(sections[0]))
        body = sections[0].getparent()
        yield Mutation(KINDS[1], path.name, _serialise(tree), xpath_of(body), f"section {root_oid} twice")
        break
    for context in d.coded_contexts:
        tree, doc = fresh()
        try:
            found = doc.xpath(f"//{context}", namespaces=NS)
        except etree.XPathError:
            continue
        xsi_type = "{http://www.w3.org/2001/XMLSchema-instance}type"
        usable = [el for el in found if isinstance(el, etree._Element) and el.get("code")
                  and el.get("nullFlavor") is None and el.get(xsi_type, "CD").split(":")[-1] in ("CD", "CE")]
        if not usable:
            continue
        usable[0].set("code", "PARTAGE-HORS-JDV")
        yield Mutation(KINDS[2], path.name, _serialise(tree), xpath_of(usable[0]), f"{context} out of its set")
        break
    for root_oid in d.document_template_ids:
        tree, doc = fresh()
        found = doc.findall(f"{{{HL7}}}templateId[@root='{root_oid}']")
        if not found or not root_oid.startswith("1.2.250.1.213.1.1.1."):
            continue
        for el in found:
            doc.remove(el)
        yield Mutation(KINDS[3], path.name, _serialise(tree), xpath_of(doc), f"templateId {root_oid} removed")
        break
