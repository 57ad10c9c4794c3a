"""Layer 3: ISO Schematron (queryBinding xslt2) compiled by Partage and run with Saxon (saxonche).

Why not the usual skeleton: the standard ISO compiler turns every pattern into a mode that
walks the whole document and tests every node against every rule context, so a 600-rule
schematron costs tens of milliseconds per document. Most CI-SIS rule contexts are anchored
paths (`//hl7:ClinicalDocument[...]/hl7:author/hl7:time`): they can only match a handful of
header nodes. Here such a context is *selected* from its anchor (computed once per document)
instead of being *matched* against every node; the other ("floating") contexts keep the
match semantics, in one shared walk of the document. First-rule-wins inside a pattern is
kept: a rule's selection excludes the nodes an earlier rule of the same pattern can claim.

Supported: include, abstract rules + extends, abstract patterns (is-a + param), let at
schema / pattern / rule level, assert / report with role, value-of / name in messages,
diagnostics, phases (defaultPhase or #ALL), ns. doc()/document() paths resolve against the
.sch file, as with the ANS toolchain. Compiled once per file (and modification time).
"""

from __future__ import annotations

import copy
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import quoteattr

from lxml import etree

from .findings import ERROR, INFO, SCHEMATRON, WARNING, Finding
from .locate import xpath_of

SCH = "http://purl.oclc.org/dsdl/schematron"
XSLT = "http://www.w3.org/1999/XSL/Transform"
_S = f"{{{SCH}}}"
RESULT_NS = "urn:partage:schematron-result"


class SchematronError(ValueError):
    """The schematron cannot be compiled (unsupported construct, bad XPath, missing include)."""


# --- loading: includes, abstract rules, abstract patterns ---------------------------------

def _parse_file(path: Path) -> etree._Element:
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False, remove_comments=True)
    try:
        return etree.parse(str(path), parser).getroot()
    except (OSError, etree.XMLSyntaxError) as exc:
        raise SchematronError(f"cannot read {path}: {exc}") from None


def _resolve_includes(el: etree._Element, base: Path, depth: int = 0) -> None:
    if depth > 50:
        raise SchematronError("schematron includes nest too deeply (a cycle?)")
    for inc in list(el.iter(_S + "include")):
        href = inc.get("href", "")
        target = (base / href).resolve()
        if not target.is_file() or target.stat().st_size == 0:
            raise SchematronError(f"include {href} not found (from {base})")
        included = _parse_file(target)
        _resolve_includes(included, target.parent, depth + 1)
        parent = inc.getparent()
        if included.tag == _S + "schema":   # a whole schema included: take its patterns
            index = parent.index(inc)
            for child in list(included):
                parent.insert(index, child)
                index += 1
            parent.remove(inc)
        else:
            included.tail = inc.tail
            parent.replace(inc, included)


def _expand_abstract_rules(schema: etree._Element) -> None:
    abstract = {r.get("id"): r for r in schema.iter(_S + "rule") if r.get("abstract") == "true"}

    def expand(rule: etree._Element, seen: tuple[str, ...]) -> None:
        for ext in list(rule.iterchildren(_S + "extends")):
            name = ext.get("rule")
            if name not in abstract:
                raise SchematronError(f"extends: no abstract rule '{name}'")
            if name in seen:
                raise SchematronError(f"extends cycle through '{name}'")
            body = copy.deepcopy(abstract[name])
            expand(body, seen + (name,))
            index = rule.index(ext)
            for child in list(body):
                rule.insert(index, child)
                index += 1
            rule.remove(ext)

    for rule in list(schema.iter(_S + "rule")):
        if rule.get("abstract") != "true":
            expand(rule, ())
    for rule in abstract.values():
        if rule.getparent() is not None:
            rule.getparent().remove(rule)


_PARAM_ATTRS = ("context", "test", "select", "value", "path")


def _instantiate_patterns(schema: etree._Element) -> None:
    abstract = {p.get("id"): p for p in schema.iter(_S + "pattern") if p.get("abstract") == "true"}
    for pattern in list(schema.iter(_S + "pattern")):
        base = pattern.get("is-a")
        if not base:
            continue
        if base not in abstract:
            raise SchematronError(f"is-a: no abstract pattern '{base}'")
        params = {p.get("name"): p.get("value", "") for p in pattern.iterchildren(_S + "param")}
        names = sorted(params, key=len, reverse=True)
        concrete = copy.deepcopy(abstract[base])
        for key in ("abstract", "is-a"):
            concrete.attrib.pop(key, None)
        for attr, value in pattern.attrib.items():
            if attr != "is-a":
                concrete.set(attr, value)
        for el in concrete.iter():
            for attr in _PARAM_ATTRS:
                if attr in el.attrib:
                    text = el.get(attr)
                    for name in names:
                        text = re.sub(r"\$" + re.escape(name) + r"(?![\w.-])", lambda _m, v=params[name]: v, text)
                    el.set(attr, text)
        pattern.getparent().replace(pattern, concrete)
    for pattern in abstract.values():
        if pattern.getparent() is not None:
            pattern.getparent().remove(pattern)


# --- context analysis ------------------------------------------------------------------------

def _split_top(expr: str, sep: str) -> list[str]:
    """Split at top-level occurrences of `sep` ('/' or '|'), outside strings and brackets."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(expr):
        ch = expr[i]
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
        i += 1
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
    branches = [b.strip() for b in _split_top(context, "|")]
    out = []
    for branch in branches:
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
        tests = []
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


def _message(el: etree._Element) -> str:
    """The XSLT producing an assert/report/diagnostic message."""
    out = [_text(el.text)]
    for child in el:
        if not isinstance(child.tag, str):
            out.append(_text(child.tail))
            continue
        local = etree.QName(child).localname
        if local == "value-of":
            out.append(f"<xsl:value-of select={quoteattr(child.get('select', '.'))}/>")
        elif local == "name":
            out.append(f"<xsl:value-of select={quoteattr('name(' + child.get('path', '.') + ')')}/>")
        else:   # emph, dir, span, ...: their content
            out.append(_message(child))
        out.append(_text(child.tail))
    return "".join(out)


def _text(text: str | None) -> str:
    if not text:
        return ""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _let(el: etree._Element) -> str:
    name = el.get("name")
    if el.get("value") is not None:
        return f"<xsl:variable name={quoteattr(name)} select={quoteattr(el.get('value'))}/>"
    body = "".join(etree.tostring(c, encoding="unicode") for c in el)
    return f"<xsl:variable name={quoteattr(name)}>{body}</xsl:variable>"


_LOCATION = ("string-join((for $a in ancestor-or-self::* return concat('/*[', count($a/preceding-sibling::*) + 1, ']'),"
             " if (. instance of attribute()) then concat('/@', local-name()) else ()), '')")


class _Generator:
    def __init__(self, schema: etree._Element) -> None:
        self.schema = schema
        self.diagnostics = {d.get("id"): d for d in schema.iter(_S + "diagnostic")}
        self.patterns: list[_Pattern] = []
        self.anchors: dict[str, str] = {}

    def body(self, rule: _Rule) -> str:
        parts = []
        rule_role = rule.element.get("role")
        for child in rule.element:
            if not isinstance(child.tag, str):
                continue
            local = etree.QName(child).localname
            if local == "let":
                parts.append(_let(child))
            elif local in ("assert", "report"):
                test = child.get("test", "true()")
                condition = f"not({test})" if local == "assert" else f"({test})"
                message = _message(child)
                for diag in (child.get("diagnostics") or "").split():
                    if diag in self.diagnostics:
                        message += " " + _message(self.diagnostics[diag])
                role = child.get("role") or rule_role or ""
                attrs = (f'k="{local[0]}" r="{rule.index}" p={quoteattr(rule.pattern)} role={quoteattr(role)}'
                         f" id={quoteattr(child.get('id', ''))}")
                parts.append(f"<xsl:if test={quoteattr(condition)}><f {attrs}>"
                             f"<xsl:attribute name=\"loc\" select=\"{_LOCATION}\"/>{message}</f></xsl:if>")
        body = "".join(parts)
        return (f"<xsl:try>{body}<xsl:catch><f k=\"e\" r=\"{rule.index}\" p={quoteattr(rule.pattern)} role=\"error\" id=\"\">"
                f"<xsl:attribute name=\"loc\" select=\"{_LOCATION}\"/>"
                "<xsl:value-of select=\"$err:code, $err:description\"/></f></xsl:catch></xsl:try>")

    def anchor_var(self, anchored: Anchored) -> str:
        if anchored.anchor == "/":
            return "root"
        if anchored.anchor not in self.anchors:
            self.anchors[anchored.anchor] = f"a{len(self.anchors)}"
        return self.anchors[anchored.anchor]

    def anchored_pattern(self, pattern: _Pattern) -> str:
        out = []
        earlier: list[tuple[_Rule, Anchored]] = []
        for rule in pattern.rules:
            selections = [a.select(self.anchor_var(a)) if a.steps else "$" + self.anchor_var(a)
                          for a in rule.anchored]
            selection = " | ".join(selections)
            claimed = sorted({r.index for r, a in earlier for b in rule.anchored if _may_overlap(a, b)})
            if claimed:
                selection = f"({selection}) except ({' | '.join(f'$c{i}' for i in claimed)})"
            out.append(f"<xsl:variable name=\"c{rule.index}\" select={quoteattr(selection)}/>")
            out.append(f"<xsl:for-each select=\"$c{rule.index}\">{self.body(rule)}</xsl:for-each>")
            earlier.extend((rule, a) for a in rule.anchored)
        return "".join(out)

    def floating_pattern(self, pattern: _Pattern, mode: str) -> str:
        out = []
        for n, rule in enumerate(pattern.rules):
            context = " ".join(rule.element.get("context", "").split())
            out.append(f"<xsl:template match={quoteattr(context)} mode=\"{mode}\" priority=\"{100000 - n}\">"
                       f"{self.body(rule)}</xsl:template>")
        out.append(f"<xsl:template match=\"node() | @*\" mode=\"{mode}\" priority=\"-100000\"/>")
        return "".join(out)

    def stylesheet(self, base_uri: str) -> str:
        namespaces = dict(self.schema.nsmap)
        namespaces.pop(None, None)
        for ns in self.schema.iter(_S + "ns"):
            namespaces[ns.get("prefix")] = ns.get("uri")
        for reserved in ("xsl", "err", "f"):
            namespaces.pop(reserved, None)
        decls = " ".join(f"xmlns:{p}={quoteattr(u)}" for p, u in namespaces.items())
        globals_ = "".join(_let(let) for let in self.schema.iterchildren(_S + "let"))
        for pattern in self.patterns:
            globals_ += "".join(_let(let) for let in pattern.element.iterchildren(_S + "let"))
        anchored_calls, templates, modes = [], [], []
        for n, pattern in enumerate(self.patterns):
            if pattern.floating:
                mode = f"m{n}"
                modes.append(mode)
                templates.append(self.floating_pattern(pattern, mode))
            else:
                templates.append(f"<xsl:template name=\"p{n}\"><xsl:param name=\"root\"/>"
                                 f"{{ANCHORS}}{self.anchored_pattern(pattern)}</xsl:template>")
                anchored_calls.append(f"<xsl:call-template name=\"p{n}\"><xsl:with-param name=\"root\" "
                                      "select=\"$root\"/>{ANCHOR_PARAMS}</xsl:call-template>")
        anchor_decls = "".join(f"<xsl:variable name=\"{v}\" select={quoteattr(a)}/>" for a, v in self.anchors.items())
        anchor_params = "".join(f"<xsl:param name=\"{v}\"/>" for v in self.anchors.values())
        anchor_pass = "".join(f"<xsl:with-param name=\"{v}\" select=\"${v}\"/>" for v in self.anchors.values())
        templates = [t.replace("{ANCHORS}", anchor_params) for t in templates]
        anchored_calls = [c.replace("{ANCHOR_PARAMS}", anchor_pass) for c in anchored_calls]
        walk = ""
        if modes:
            dispatch = "".join(f"<xsl:apply-templates select=\".\" mode=\"{m}\"/>" for m in modes)
            walk = f"<xsl:for-each select=\"(., descendant::*, descendant::*/@*)\">{dispatch}</xsl:for-each>"
        return (f"<xsl:stylesheet version=\"3.0\" xmlns:xsl=\"{XSLT}\" "
                f"xmlns:err=\"http://www.w3.org/2005/xqt-errors\" xmlns=\"{RESULT_NS}\" {decls} "
                f"exclude-result-prefixes=\"#all\" xml:base={quoteattr(base_uri)}>"
                f"<xsl:output method=\"xml\" indent=\"no\"/>{globals_}"
                f"<xsl:template match=\"/\"><xsl:variable name=\"root\" select=\".\"/>{anchor_decls}"
                f"<r>{''.join(anchored_calls)}{walk}</r></xsl:template>"
                f"{''.join(templates)}</xsl:stylesheet>")


def compile_to_xslt(sch_path: str | Path) -> tuple[str, dict]:
    """The XSLT 3.0 stylesheet for a schematron, and statistics about the compilation."""
    path = Path(sch_path).resolve()
    schema = _parse_file(path)
    if schema.tag != _S + "schema":
        raise SchematronError(f"{path} is not an ISO schematron (root {schema.tag})")
    binding = (schema.get("queryBinding") or "xslt").lower()
    if binding not in ("xslt2", "xslt3", "xpath2", "xpath3", "xpath31"):
        raise SchematronError(f"queryBinding {binding!r} is not supported (xslt2 / xslt3 are)")
    _resolve_includes(schema, path.parent)
    _expand_abstract_rules(schema)
    _instantiate_patterns(schema)

    active = None
    phase_id = schema.get("defaultPhase")
    if phase_id and phase_id != "#ALL":
        phase = next((p for p in schema.iter(_S + "phase") if p.get("id") == phase_id), None)
        if phase is None:
            raise SchematronError(f"defaultPhase '{phase_id}' is not defined")
        active = {a.get("pattern") for a in phase.iterchildren(_S + "active")}

    gen = _Generator(schema)
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
    stats = {"patterns": len(gen.patterns), "rules": index,
             "floating_patterns": sum(p.floating for p in gen.patterns),
             "anchored_rules": sum(len(p.rules) for p in gen.patterns if not p.floating),
             "anchors": len(gen.anchors)}
    return xslt, stats


# --- running ------------------------------------------------------------------------------------

_SEVERITY = {"error": ERROR, "fatal": ERROR, "warning": WARNING, "warn": WARNING,
             "info": INFO, "information": INFO}


class CompiledSchematron:
    """A schematron ready to run: compiled once; `check` is thread-safe (one run at a time)."""

    def __init__(self, sch_path: str | Path) -> None:
        from saxonche import (
            PySaxonProcessor,  # imported here: only deployments using layer 3 need it
        )

        self.path = Path(sch_path).resolve()
        self.xslt, self.stats = compile_to_xslt(self.path)
        self._processor = PySaxonProcessor(license=False)
        compiler = self._processor.new_xslt30_processor()
        compiler.set_cwd(str(self.path.parent))
        try:
            self._executable = compiler.compile_stylesheet(stylesheet_text=self.xslt)
        except Exception as exc:   # saxonche raises PySaxonApiError
            raise SchematronError(f"{self.path.name}: the generated XSLT does not compile: {exc}") from None
        if self._executable is None:
            raise SchematronError(f"{self.path.name}: the generated XSLT does not compile")
        self._lock = threading.Lock()

    def run(self, root: etree._Element) -> etree._Element:
        """The raw result (<r><f .../></r>) for a parsed document."""
        text = etree.tostring(root.getroottree(), encoding="unicode")
        with self._lock:
            node = self._processor.parse_xml(xml_text=text)
            result = self._executable.transform_to_string(xdm_node=node)
        return etree.fromstring(result.encode("utf-8"))

    def check(self, root: etree._Element) -> list[Finding]:
        findings = []
        tree = root.getroottree()
        for f in self.run(root):
            kind, role = f.get("k"), (f.get("role") or "").lower()
            if kind == "e":
                severity, rule = ERROR, "schematron-eval-error"
            else:
                severity = INFO if kind == "r" else _SEVERITY.get(role, ERROR)
                rule = f.get("id") or f"sch:{f.get('p')}"
            location, line = _locate(tree, f.get("loc", ""))
            message = " ".join("".join(f.itertext()).split())
            findings.append(Finding(rule, severity, SCHEMATRON, message, location, line))
        return findings


def _locate(tree: etree._ElementTree, loc: str) -> tuple[str, int | None]:
    if not loc:
        return "/", None
    attribute = ""
    if "/@" in loc:
        loc, attribute = loc.split("/@", 1)
    try:
        nodes = tree.xpath(loc)
    except etree.XPathError:
        return loc, None
    if not nodes:
        return loc, None
    el = nodes[0]
    return xpath_of(el) + (f"/@{attribute}" if attribute else ""), el.sourceline


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> CompiledSchematron:
    return CompiledSchematron(path)


def load_schematron(path: str | Path) -> CompiledSchematron:
    """Compiled once per file and modification time."""
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"schematron not found: {resolved}")
    return _load(str(resolved), resolved.stat().st_mtime)
