"""ISO Schematron (queryBinding xslt2) -> one XSLT 3.0 stylesheet that walks a document once.

Why not the usual skeleton: the standard ISO compiler turns every pattern into a mode that
walks the whole document and tests every node against every rule context, so a 600-rule
schematron costs tens of milliseconds per document. Most CI-SIS rule contexts are anchored
paths (`//hl7:ClinicalDocument[...]/hl7:author/hl7:time`): they can only match a handful of
header nodes. Here such a context is *selected* from its anchor (computed once per document)
instead of being *matched* against every node; the other ("floating") contexts keep the
match semantics, in one shared walk of the document dispatching each node to the patterns'
rules (Saxon indexes template rules by node name). First-rule-wins inside a pattern is
kept: a rule's selection excludes the nodes an earlier rule of the same pattern can claim.

Supported: include, abstract rules + extends, abstract patterns (is-a + param), let at
schema / pattern / rule level (pattern-level lets are global, as in the ANS skeleton),
assert / report with role, value-of / name in messages, diagnostics, phases (defaultPhase
or #ALL), ns. doc()/document() paths resolve against the main .sch file, as with the ANS
toolchain; the files they name are parsed once, when the stylesheet is loaded.

Defects of a schematron (an include or a value-set file that does not exist) do not stop
the compilation: they are listed in `Generated.defects`, as the ANS tool reports them and
compiles anyway. This module is pure (no Saxon): `schematron.py` runs what it produces.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from lxml import etree

SCH = "http://purl.oclc.org/dsdl/schematron"
XSLT = "http://www.w3.org/1999/XSL/Transform"
_S = f"{{{SCH}}}"
RESULT_NS = "urn:partage:schematron-result"
FN_NS = "urn:partage:schematron-function"
COMPILER_VERSION = "4"   # part of the on-disk cache key: bump when the generated XSLT changes

DEFECT_INCLUDE = "include"
DEFECT_DOCUMENT = "document"


class SchematronError(ValueError):
    """The schematron cannot be compiled at all (not a schematron, unsupported binding, bad XML)."""


@dataclass(frozen=True, slots=True)
class Defect:
    """Something the schematron names and that does not exist (upstream defect)."""

    kind: str       # DEFECT_INCLUDE (its rules are not run) or DEFECT_DOCUMENT (a value-set file)
    href: str       # as written in the schematron
    source: str     # the file that names it, relative to the main .sch


@dataclass(frozen=True, slots=True)
class AssertInfo:
    """What the stylesheet does not carry about one assert/report: read back in Python."""

    kind: str                   # "a" assert, "r" report
    pattern: str
    role: str
    id: str
    message: tuple[tuple[str, str], ...]
    test: str = ""              # the assert's @test as written (SVRL failed-assert/@test)


@dataclass
class Generated:
    """A compiled schematron: the stylesheet and what is kept beside it (cacheable as JSON)."""

    xslt: str
    asserts: list[AssertInfo]
    body_patterns: list[str]               # pattern of each body template (evaluation errors)
    documents: dict[str, str]              # stylesheet parameter -> file, relative to the .sch
    patterns: list[str]
    defects: list[Defect]
    document_template_ids: list[str]       # ClinicalDocument templateId roots the schematron asserts
    document_codes: list[str]              # ClinicalDocument/code values it asserts
    stats: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"xslt": self.xslt,
                "asserts": [[a.kind, a.pattern, a.role, a.id, [list(m) for m in a.message], a.test]
                            for a in self.asserts],
                "body_patterns": self.body_patterns, "documents": self.documents, "patterns": self.patterns,
                "defects": [[d.kind, d.href, d.source] for d in self.defects],
                "document_template_ids": self.document_template_ids, "document_codes": self.document_codes,
                "stats": self.stats}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Generated:
        return cls(xslt=data["xslt"],
                   asserts=[AssertInfo(k, p, r, i, tuple((m[0], m[1]) for m in msg), t)
                            for k, p, r, i, msg, t in data["asserts"]],
                   body_patterns=list(data["body_patterns"]), documents=dict(data["documents"]),
                   patterns=list(data["patterns"]), defects=[Defect(*d) for d in data["defects"]],
                   document_template_ids=list(data["document_template_ids"]),
                   document_codes=list(data["document_codes"]), stats=dict(data["stats"]))


# --- loading: includes, abstract rules, abstract patterns ---------------------------------

def parse_schematron_file(path: Path) -> etree._Element:
    """A schematron source file: local configuration, read without network, DTD or entities."""
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False, remove_comments=True)
    try:
        return etree.parse(str(path), parser).getroot()
    except (OSError, etree.XMLSyntaxError) as exc:
        raise SchematronError(f"cannot read {path.name}: {exc}") from None


_INCLUDE_HREF = re.compile(rb"<(?:[\w.-]+:)?include\b[^>]*?\bhref\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")


def include_closure(path: Path) -> list[Path]:
    """The .sch and every file it includes, transitively (a byte scan: no XML parse).

    What the on-disk cache key hashes. Includes that do not exist are left out (they are
    defects; the key still changes if one appears, through the including file's bytes).
    """
    seen: list[Path] = []
    todo = [path.resolve()]
    while todo:
        current = todo.pop()
        if current in seen or not current.is_file():
            continue
        seen.append(current)
        for m in _INCLUDE_HREF.finditer(current.read_bytes()):
            href = (m.group(1) or m.group(2) or b"").decode("utf-8", "replace")
            todo.append((current.parent / href).resolve())
    return seen


def _resolve_includes(el: etree._Element, base: Path, main_dir: Path, defects: list[Defect],
                      depth: int = 0) -> None:
    if depth > 50:
        raise SchematronError("schematron includes nest too deeply (a cycle?)")
    for inc in list(el.iter(_S + "include")):
        href = inc.get("href", "")
        target = (base / href).resolve()
        parent = inc.getparent()
        if parent is None:
            continue
        if not target.is_file() or target.stat().st_size == 0:
            defects.append(Defect(DEFECT_INCLUDE, href, _relative(base, main_dir)))
            parent.remove(inc)
            continue
        included = parse_schematron_file(target)
        _resolve_includes(included, target.parent, main_dir, defects, depth + 1)
        if included.tag == _S + "schema":   # a whole schema included: take its patterns
            index = parent.index(inc)
            for child in list(included):
                parent.insert(index, child)
                index += 1
            parent.remove(inc)
        else:
            included.tail = inc.tail
            parent.replace(inc, included)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base)) or "."
    except ValueError:
        return path.name


def _expand_abstract_rules(schema: etree._Element) -> None:
    abstract = {r.get("id"): r for r in schema.iter(_S + "rule") if r.get("abstract") == "true"}

    def expand(rule: etree._Element, seen: tuple[str, ...]) -> None:
        for ext in list(rule.iterchildren(_S + "extends")):
            name = ext.get("rule", "")
            if name not in abstract:
                raise SchematronError(f"extends: no abstract rule '{name}'")
            if name in seen:
                raise SchematronError(f"extends cycle through '{name}'")
            body = copy.deepcopy(abstract[name])
            expand(body, (*seen, name))
            index = rule.index(ext)
            for child in list(body):
                rule.insert(index, child)
                index += 1
            rule.remove(ext)

    for rule in list(schema.iter(_S + "rule")):
        if rule.get("abstract") != "true":
            expand(rule, ())
    for rule in abstract.values():
        parent = rule.getparent()
        if parent is not None:
            parent.remove(rule)


_PARAM_ATTRS = ("context", "test", "select", "value", "path")


def _instantiate_patterns(schema: etree._Element) -> None:
    abstract = {p.get("id"): p for p in schema.iter(_S + "pattern") if p.get("abstract") == "true"}
    for pattern in list(schema.iter(_S + "pattern")):
        base = pattern.get("is-a")
        if not base:
            continue
        if base not in abstract:
            raise SchematronError(f"is-a: no abstract pattern '{base}'")
        params = {p.get("name", ""): p.get("value", "") for p in pattern.iterchildren(_S + "param")}
        names = sorted(params, key=len, reverse=True)
        concrete = copy.deepcopy(abstract[base])
        for key in ("abstract", "is-a"):
            if key in concrete.attrib:
                del concrete.attrib[key]
        for attr, value in pattern.attrib.items():
            if attr != "is-a":
                concrete.set(attr, value)
        for el in concrete.iter():
            for attr in _PARAM_ATTRS:
                text = el.get(attr)
                if text is None:
                    continue
                for name in names:
                    text = re.sub(r"\$" + re.escape(name) + r"(?![\w.-])", _literal_replacement(params[name]), text)
                el.set(attr, text)
        parent = pattern.getparent()
        if parent is not None:
            parent.replace(pattern, concrete)
    for pattern in abstract.values():
        parent = pattern.getparent()
        if parent is not None:
            parent.remove(pattern)


def _literal_replacement(value: str) -> Callable[[re.Match[str]], str]:
    """A re.sub replacement inserting `value` as it is (no backslash processing)."""
    return lambda _m: value


# --- context analysis ------------------------------------------------------------------------

def _split_top(expr: str, sep: str) -> list[str]:
    """Split at top-level occurrences of `sep` ('/' or '|'), outside strings and brackets."""
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(expr):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        elif depth == 0 and ch == sep:
            parts.append(expr[start:i])
            start = i + 1
    parts.append(expr[start:])
    return parts


_NAME_TEST = re.compile(r"(?:@)?(?:\*|[\w.-]+:\*|\*:[\w.-]+|[\w.-]+(?::[\w.-]+)?|text\(\)|node\(\)|comment\(\))\Z")


def _step_test(step: str) -> str | None:
    """The node test of a simple child/attribute step, or None when the step is not simple."""
    step = step.strip()
    for axis, short in (("child::", ""), ("attribute::", "@")):
        if step.startswith(axis):
            step = short + step[len(axis):]
    test = step[:step.index("[")] if "[" in step else step
    test = test.strip()
    if not _NAME_TEST.match(test) or test in (".", ".."):
        return None
    return test


@dataclass(frozen=True)
class Anchored:
    anchor: str                 # "/" (document node) or "//step" or "/step"
    anchor_test: str
    steps: tuple[str, ...]      # the child/attribute steps after the anchor, as written
    tests: tuple[str, ...]

    def select(self, anchor_var: str) -> str:
        return "$" + anchor_var + "".join("/" + s for s in self.steps)


def analyse_context(context: str) -> list[Anchored] | None:
    """Anchored branches of a rule context, or None if it must be matched (floating)."""
    context = " ".join(context.split())
    if "current()" in context:
        return None
    out: list[Anchored] = []
    for branch in (b.strip() for b in _split_top(context, "|")):
        if branch == "/":
            out.append(Anchored("/", "/", (), ()))
            continue
        segments = _split_top(branch, "/")
        if len(segments) < 2 or segments[0].strip() != "":
            return None
        if segments[1] == "":                   # "//step..."
            if len(segments) < 3:
                return None
            anchor, rest = "//" + segments[2].strip(), segments[3:]
        else:
            anchor, rest = "/" + segments[1].strip(), segments[2:]
        anchor_test = _step_test(anchor.lstrip("/"))
        if anchor_test is None or anchor_test.startswith("@"):
            return None
        tests: list[str] = []
        for i, step in enumerate(rest):
            test = _step_test(step) if step.strip() else None
            if test is None or (test.startswith("@") and i != len(rest) - 1):
                return None
            tests.append(test)
        out.append(Anchored(anchor, anchor_test, tuple(s.strip() for s in rest), tuple(tests)))
    return out


def _compatible(a: str, b: str) -> bool:
    if a == b or "node()" in (a, b):
        return True
    if a.startswith("@") != b.startswith("@"):
        return False
    a, b = a.lstrip("@"), b.lstrip("@")
    return a == "*" or b == "*" or a.endswith(":*") or b.endswith(":*") or a.startswith("*:") or b.startswith("*:")


def _may_overlap(x: Anchored, y: Anchored) -> bool:
    if x.anchor == "/" or y.anchor == "/":
        return x.anchor == y.anchor and not x.steps and not y.steps
    if len(x.steps) != len(y.steps) or not _compatible(x.anchor_test, y.anchor_test):
        return False
    return all(_compatible(a, b) for a, b in zip(x.tests, y.tests, strict=True))


# --- what a model schematron requires of the ClinicalDocument (for model selection) --------------

_DOC_CONTEXT = re.compile(r"(?:^|[/:])ClinicalDocument(?:\[[^\]]*\])?$")
_TEMPLATE_TEST = re.compile(r"^(?:count\()?\s*(?:\./)?(?:[\w-]+:)?templateId\[\s*@root\s*=\s*['\"]([\d.]+)['\"]")
_CODE_TEST = re.compile(r"^(?:\./)?(?:[\w-]+:)?code\[\s*\(?\s*@code\s*=")
_CODE_VALUE = re.compile(r"@code\s*=\s*['\"]([^'\"]+)['\"]")


def _document_facts(schema: etree._Element) -> tuple[list[str], list[str]]:
    """The ClinicalDocument templateId roots and document codes the schematron's asserts require.

    Read from the asserts of rules on ClinicalDocument whose test begins with
    `templateId[@root='X']` (or counts them) or `code[@code='Y' ...]`: the model schematrons'
    own statement of which documents they are for.
    """
    roots: list[str] = []
    codes: list[str] = []
    for rule in schema.iter(_S + "rule"):
        if not _DOC_CONTEXT.search(" ".join((rule.get("context") or "").split())):
            continue
        for check in rule.iter(_S + "assert"):
            test = " ".join(check.get("test", "").split())
            template = _TEMPLATE_TEST.match(test)
            if template and template.group(1) not in roots:
                roots.append(template.group(1))
            elif _CODE_TEST.match(test):
                head = test.split("]", 1)[0]
                codes.extend(c for c in _CODE_VALUE.findall(head) if c not in codes)
    return roots, codes


def document_facts(path: Path) -> tuple[list[str], list[str]]:
    """What a schematron that cannot be compiled still says of the documents it is for (the
    templateId roots and codes above), best effort: nothing when its file cannot be read, its
    own rules when an include cannot be."""
    try:
        schema = parse_schematron_file(path)
    except SchematronError:
        return [], []
    try:
        _resolve_includes(schema, path.parent, path.parent, [])
    except (SchematronError, OSError):
        pass
    return _document_facts(schema)


# --- XSLT generation ---------------------------------------------------------------------------

@dataclass
class _Rule:
    index: int
    pattern: str
    element: etree._Element
    anchored: list[Anchored] | None


@dataclass
class _Pattern:
    id: str
    element: etree._Element
    rules: list[_Rule] = field(default_factory=list)

    @property
    def floating(self) -> bool:
        return any(r.anchored is None for r in self.rules)


def _message_parts(el: etree._Element) -> list[tuple[str, str]]:
    """An assert/report/diagnostic message as ("t", static text) and ("x", XPath) parts.

    Only the XPath parts are evaluated by the stylesheet; the static text stays in Python
    (a stylesheet carrying thousands of messages is that much slower to compile).
    """
    out = [("t", el.text or "")]
    for child in el:
        if isinstance(child.tag, str):
            local = etree.QName(child).localname
            if local == "value-of":
                out.append(("x", child.get("select", ".")))
            elif local == "name":
                out.append(("x", "name(" + child.get("path", ".") + ")"))
            else:   # emph, dir, span, ...: their content
                out += _message_parts(child)
        out.append(("t", child.tail or ""))
    return [part for part in out if part[1]]


# Where a failed assert is: one function, called from every assert (not an expression copied
# into each of them: thousands of copies make the stylesheet slow to compile).
_LOCATION = "pfn:loc(.)"
_LOCATION_FUNCTION = (
    "<xsl:function name=\"pfn:loc\"><xsl:param name=\"n\"/><xsl:sequence select=\"string-join(("
    "for $a in $n/ancestor-or-self::* return concat('/*[', count($a/preceding-sibling::*) + 1, ']'), "
    "if ($n instance of attribute()) then concat('/@', local-name($n)) else ()), '')\"/></xsl:function>")

_DOC_CALL = re.compile(r"""\b(?:fn:)?doc(?:ument)?\(\s*(?:'([^']*)'|"([^"]*)"|\$([\w.-]+))\s*\)""")
_STRING_LITERAL = re.compile(r"""\s*(?:'([^']*)'|"([^"]*)")\s*\Z""")


class _Generator:
    def __init__(self, schema: etree._Element, base: Path, defects: list[Defect]) -> None:
        self.schema = schema
        self.base = base
        self.defects = defects
        self.diagnostics = {d.get("id"): d for d in schema.iter(_S + "diagnostic")}
        self.patterns: list[_Pattern] = []
        self.anchors: dict[str, str] = {}
        self.asserts: list[AssertInfo] = []
        self.bodies: dict[tuple[str, str, tuple[AssertInfo, ...]], str] = {}   # identical bodies share one template
        self.body_templates: list[str] = []
        self.body_patterns: list[str] = []           # pattern of each body template
        self.documents: dict[str, Path] = {}          # stylesheet parameter -> file parsed once
        self.lets = self.global_lets()
        self.literals = {let.get("name", ""): self._literal(let) for let in self.lets}

    @staticmethod
    def _literal(let: etree._Element) -> str | None:
        m = _STRING_LITERAL.match(let.get("value") or "")
        if m is None:
            return None
        return m.group(1) if m.group(1) is not None else m.group(2)

    def global_lets(self) -> list[etree._Element]:
        """Schema-level lets, then the lets of every pattern, active or not, as global variables.

        The ANS skeleton (iso_svrl_for_xslt2) emits pattern-level lets as global variables
        whatever the phase, and the ANS schematrons rely on it: a value-set path declared in
        pattern `variables` is read by other patterns.
        """
        seen: dict[str, etree._Element] = {}
        pattern_lets = [let for p in self.schema.iter(_S + "pattern") for let in p.iterchildren(_S + "let")]
        for let in [*self.schema.iterchildren(_S + "let"), *pattern_lets]:
            seen.setdefault(let.get("name", ""), let)
        return list(seen.values())

    def expr(self, xpath: str) -> str:
        """doc()/document() of a file (a literal, or a global let holding one) -> a parameter parsed once.

        Saxon caches doc() per transformation only: a value-set file would be parsed again for
        every document validated. A file that does not exist is a defect of the schematron; its
        call becomes the empty sequence, which is what the ANS tool's Saxon gives (a warning
        and no node).
        """
        if "doc" not in xpath:
            return xpath

        def replace(m: re.Match[str]) -> str:
            href = m.group(1) if m.group(1) is not None else m.group(2)
            if href is None:
                href = self.literals.get(m.group(3) or "")
                if href is None:          # a variable that is not a literal file name
                    return m.group(0)
            if ":" in href.split("/", 1)[0]:      # an absolute URI: leave it to Saxon
                return m.group(0)
            target = (self.base / href).resolve()
            if not target.is_file():
                defect = Defect(DEFECT_DOCUMENT, href, ".")
                if defect not in self.defects:
                    self.defects.append(defect)
                return "()"
            for name, path in self.documents.items():
                if path == target:
                    return "$" + name
            name = f"partage_doc_{len(self.documents)}"
            self.documents[name] = target
            return "$" + name
        return _DOC_CALL.sub(replace, xpath)

    def let(self, el: etree._Element) -> str:
        name = el.get("name", "")
        value = el.get("value")
        if value is not None:
            return f"<xsl:variable name={quoteattr(name)} select={quoteattr(self.expr(value))}/>"
        body = "".join(etree.tostring(c, encoding="unicode") for c in el)
        return f"<xsl:variable name={quoteattr(name)}>{body}</xsl:variable>"

    def body(self, rule: _Rule) -> str:
        """The name of the template checking one node against the rule's lets and asserts.

        Rules instantiated from the same abstract rule often have identical bodies (the
        ART-DECOR data-type checks: 766 rules, 341 distinct bodies in the ANS structuration
        minimale); they share one template, which makes the stylesheet a third of the size.
        """
        parts: list[str] = []
        infos: list[AssertInfo] = []
        rule_role = rule.element.get("role")
        for child in rule.element:
            if not isinstance(child.tag, str):
                continue
            local = etree.QName(child).localname
            if local == "let":
                parts.append(self.let(child))
            elif local in ("assert", "report"):
                test = self.expr(child.get("test", "true()"))
                condition = f"not({test})" if local == "assert" else f"({test})"
                message = _message_parts(child)
                for diag in (child.get("diagnostics") or "").split():
                    if diag in self.diagnostics:
                        message += [("t", " "), *_message_parts(self.diagnostics[diag])]
                role = child.get("role") or rule_role or ""
                infos.append(AssertInfo(local[0], rule.pattern, role, child.get("id", ""), tuple(message),
                                        " ".join(child.get("test", "").split())))
                values = "".join(f"<v><xsl:value-of select={quoteattr(self.expr(x))}/></v>"
                                 for kind, x in message if kind == "x")
                parts.append(f"<xsl:if test={quoteattr(condition)}><f a=\"\x00{len(infos) - 1}\x00\">"
                             f"<xsl:attribute name=\"loc\" select=\"{_LOCATION}\"/>{values}</f></xsl:if>")
        body = "".join(parts)
        key = (rule.pattern, body, tuple(infos))
        name = self.bodies.get(key)
        if name is not None:
            return name
        k = len(self.body_templates)
        name = self.bodies[key] = f"pfn:b{k}"
        first = len(self.asserts)
        self.asserts += infos
        body = re.sub("\x00(\\d+)\x00", lambda m: str(first + int(m.group(1))), body)
        self.body_patterns.append(rule.pattern)
        self.body_templates.append(
            f"<xsl:template name=\"{name}\"><xsl:try>{body}<xsl:catch><e b=\"{k}\">"
            f"<xsl:attribute name=\"loc\" select=\"{_LOCATION}\"/>"
            "<xsl:value-of select=\"$err:code, $err:description\"/></e></xsl:catch></xsl:try></xsl:template>")
        return name

    def anchor_var(self, anchored: Anchored) -> str:
        if anchored.anchor == "/":
            return "pfn:root"
        if anchored.anchor not in self.anchors:
            self.anchors[anchored.anchor] = f"pfn:a{len(self.anchors)}"
        return self.anchors[anchored.anchor]

    def anchored_pattern(self, pattern: _Pattern) -> tuple[list[str], list[str]]:
        """Per rule: a global variable holding its nodes, and the call to its body on each.

        A rule's nodes are its selection minus the nodes of the earlier rules of the pattern
        that may claim the same nodes (first rule wins). Anchors and rule node sets are global
        variables: evaluated once per document, on first use, against the document (XSLT 3.0
        global context item). Keeping them out of one big template matters: a template with a
        local variable per rule nests hundreds of let-expressions, which Saxon compiles in
        quadratic time (minutes for the ANS structuration minimale).
        """
        variables: list[str] = []
        calls: list[str] = []
        earlier: list[tuple[_Rule, Anchored]] = []
        for rule in pattern.rules:
            anchored = rule.anchored or []
            selections = [a.select(self.anchor_var(a)) if a.steps else "$" + self.anchor_var(a)
                          for a in anchored]
            selection = self.expr(" | ".join(selections))
            claimed = sorted({r.index for r, a in earlier for b in anchored if _may_overlap(a, b)})
            if claimed:
                selection = f"({selection}) except ({' | '.join(f'$pfn:c{i}' for i in claimed)})"
            variables.append(f"<xsl:variable name=\"pfn:c{rule.index}\" select={quoteattr(selection)}/>")
            calls.append(f"<xsl:for-each select=\"$pfn:c{rule.index}\">"
                         f"<xsl:call-template name=\"{self.body(rule)}\"/></xsl:for-each>")
            earlier.extend((rule, a) for a in anchored)
        return variables, calls

    def floating_pattern(self, pattern: _Pattern, mode: str) -> str:
        out: list[str] = []
        for n, rule in enumerate(pattern.rules):
            context = self.expr(" ".join(rule.element.get("context", "").split()))
            out.append(f"<xsl:template match={quoteattr(context)} mode=\"{mode}\" priority=\"{100000 - n}\">"
                       f"<xsl:call-template name=\"{self.body(rule)}\"/></xsl:template>")
        # The catch-all names document-node() too: without it, XSLT's built-in rule for the
        # document node applies templates to its children, and a rule on the root element
        # would fire twice (once from there, once from the walk).
        out.append(f"<xsl:template match=\"document-node() | node() | @*\" mode=\"{mode}\" "
                   "priority=\"-100000\"/>")
        return "".join(out)

    def stylesheet(self, base_uri: str) -> str:
        namespaces = {k: v for k, v in self.schema.nsmap.items() if k is not None}
        for ns in self.schema.iter(_S + "ns"):
            namespaces[ns.get("prefix", "")] = ns.get("uri", "")
        for reserved in ("xsl", "err", "f", "pfn", ""):
            namespaces.pop(reserved, None)
        decls = " ".join(f"xmlns:{p}={quoteattr(u)}" for p, u in namespaces.items())
        globals_ = "".join(self.let(let) for let in self.lets)
        anchored_calls: list[str] = []
        templates: list[str] = []
        modes: list[str] = []
        variables: list[str] = []
        for n, pattern in enumerate(self.patterns):
            if pattern.floating:
                mode = f"m{n}"
                modes.append(mode)
                templates.append(self.floating_pattern(pattern, mode))
            else:
                rule_variables, calls = self.anchored_pattern(pattern)
                variables += rule_variables
                anchored_calls += calls
        anchors = "<xsl:variable name=\"pfn:root\" select=\"/\"/>" + "".join(
            f"<xsl:variable name=\"{v}\" select={quoteattr(self.expr(a))}/>" for a, v in self.anchors.items())
        params = "".join(f"<xsl:param name=\"{name}\"/>" for name in self.documents)
        walk = ""
        if modes:
            dispatch = "".join(f"<xsl:apply-templates select=\".\" mode=\"{m}\"/>" for m in modes)
            walk = f"<xsl:for-each select=\"(., descendant::*, descendant::*/@*)\">{dispatch}</xsl:for-each>"
        return (f"<xsl:stylesheet version=\"3.0\" xmlns:xsl=\"{XSLT}\" xmlns:pfn=\"{FN_NS}\" "
                f"xmlns:err=\"http://www.w3.org/2005/xqt-errors\" xmlns=\"{RESULT_NS}\" {decls} "
                f"exclude-result-prefixes=\"#all\" xml:base={quoteattr(base_uri)}>"
                f"<xsl:output method=\"xml\" indent=\"no\"/>{params}{globals_}{_LOCATION_FUNCTION}{anchors}"
                f"{''.join(variables)}"
                f"<xsl:template match=\"/\"><r><xsl:call-template name=\"pfn:run\"/>{walk}</r></xsl:template>"
                f"<xsl:template name=\"pfn:run\">{''.join(anchored_calls)}</xsl:template>"
                f"{''.join(templates)}{''.join(self.body_templates)}</xsl:stylesheet>")


def expanded_schema(path: Path) -> tuple[etree._Element, list[Defect]]:
    """The schematron with its includes resolved, abstract rules and patterns expanded."""
    schema = parse_schematron_file(path)
    if schema.tag != _S + "schema":
        raise SchematronError(f"{path.name} is not an ISO schematron (root {schema.tag})")
    binding = (schema.get("queryBinding") or "xslt").lower()
    if binding not in ("xslt2", "xslt3", "xpath2", "xpath3", "xpath31"):
        raise SchematronError(f"queryBinding {binding!r} is not supported (xslt2 / xslt3 are)")
    defects: list[Defect] = []
    _resolve_includes(schema, path.parent, path.parent, defects)
    _expand_abstract_rules(schema)
    _instantiate_patterns(schema)
    return schema, defects


def active_patterns(schema: etree._Element) -> set[str] | None:
    """The pattern ids of the default phase (None: every pattern)."""
    phase_id = schema.get("defaultPhase")
    if not phase_id or phase_id == "#ALL":
        return None
    phase = next((p for p in schema.iter(_S + "phase") if p.get("id") == phase_id), None)
    if phase is None:
        raise SchematronError(f"defaultPhase '{phase_id}' is not defined")
    return {a.get("pattern", "") for a in phase.iterchildren(_S + "active")}


def generate(sch_path: str | Path) -> Generated:
    """Compile a schematron file into its stylesheet and the metadata kept beside it."""
    path = Path(sch_path).resolve()
    schema, defects = expanded_schema(path)
    active = active_patterns(schema)

    gen = _Generator(schema, path.parent, defects)
    index = 0
    for n, pat in enumerate(schema.iter(_S + "pattern")):
        pid = pat.get("id") or pat.findtext(_S + "title") or f"pattern-{n}"
        if active is not None and pat.get("id") not in active:
            continue
        pattern = _Pattern(" ".join(pid.split()), pat)
        for rule in pat.iterchildren(_S + "rule"):
            if rule.get("abstract") == "true" or not rule.get("context"):
                continue
            pattern.rules.append(_Rule(index, pattern.id, rule, analyse_context(rule.get("context", ""))))
            index += 1
        if pattern.rules:
            gen.patterns.append(pattern)
    xslt = gen.stylesheet(path.as_uri())
    roots, codes = _document_facts(schema)
    stats = {"patterns": len(gen.patterns), "rules": index,
             "floating_patterns": sum(p.floating for p in gen.patterns),
             "anchored_rules": sum(len(p.rules) for p in gen.patterns if not p.floating),
             "anchors": len(gen.anchors), "asserts": len(gen.asserts), "preloaded_documents": len(gen.documents),
             "xslt_chars": len(xslt)}
    return Generated(xslt=xslt, asserts=gen.asserts, body_patterns=gen.body_patterns,
                     documents={name: os.path.relpath(p, path.parent) for name, p in gen.documents.items()},
                     patterns=[p.id for p in gen.patterns], defects=defects,
                     document_template_ids=roots, document_codes=codes, stats=stats)


def compile_to_xslt(sch_path: str | Path) -> tuple[str, dict[str, int]]:
    """The XSLT 3.0 stylesheet for a schematron, and statistics about the compilation."""
    generated = generate(sch_path)
    return generated.xslt, generated.stats
