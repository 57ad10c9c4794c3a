"""Findings and reports of the CDA profile engine, and their JSON / SVRL / HTML renderings.

One shape for every layer (parse, schema, rules, schematron, terminology, metadata), so the
/validate endpoint, the CLI and ingest speak the same vocabulary.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from lxml.builder import ElementMaker

ERROR = "error"
WARNING = "warning"
INFO = "info"
SEVERITIES = (ERROR, WARNING, INFO)

# Layer names, in the order they run (numbers as in the issue: 1 schema ... 5 metadata).
PARSE = "parse"
SCHEMA = "schema"
RULES = "rules"
SCHEMATRON = "schematron"
TERMINOLOGY = "terminology"
METADATA = "metadata"
LAYERS = (PARSE, SCHEMA, RULES, SCHEMATRON, TERMINOLOGY, METADATA)

# Layer statuses.
PASSED = "passed"
FAILED = "failed"
NOT_RUN = "not run"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (or note) about one place of one document."""

    rule: str
    severity: str
    layer: str
    message: str
    location: str = ""
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "severity": self.severity, "layer": self.layer,
                "message": self.message, "location": self.location, "line": self.line}


@dataclass(slots=True)
class LayerResult:
    """What one layer did: passed / failed / not run (and why), and how long it took."""

    status: str
    reason: str = ""
    duration_ms: float = 0.0
    blocking: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "blocking": self.blocking,
                               "duration_ms": round(self.duration_ms, 3)}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(slots=True)
class Report:
    """The verdict on one document: valid unless a blocking layer reported an error."""

    file: str = ""
    valid: bool = True
    document_model: str = ""
    profile: str = ""
    findings: list[Finding] = field(default_factory=list)
    layers: dict[str, LayerResult] = field(default_factory=dict)
    clinical_document: Any = field(default=None, repr=False)   # the parsed tree, for reuse after validation
    _header: Any = field(default=None, repr=False)
    _header_source: Any = field(default=None, repr=False)   # callable reading it on demand

    @property
    def header(self) -> Any:
        """The CdaHeader (read on first access: validation alone does not need it)."""
        if self._header is None and self._header_source is not None:
            self._header = self._header_source()
            self._header_source = None
        return self._header

    @header.setter
    def header(self, value: Any) -> None:
        self._header, self._header_source = value, None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    def rules(self) -> set[str]:
        return {f.rule for f in self.findings}

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "valid": self.valid,
            "document_model": self.document_model,
            "profile": self.profile,
            "findings": [f.to_dict() for f in self.findings],
            "layers": {name: result.to_dict() for name, result in self.layers.items()},
        }


def to_json(reports: Sequence[Report], indent: int | None = 2) -> str:
    return json.dumps([r.to_dict() for r in reports], ensure_ascii=False, indent=indent)


# --- SVRL -------------------------------------------------------------------------------

SVRL = "http://purl.oclc.org/dsdl/svrl"


def to_svrl(report: Report) -> bytes:
    """ISO Schematron Validation Report Language: what schematron-minded tools read."""
    E = ElementMaker(namespace=SVRL, nsmap={"svrl": SVRL})
    root = E("schematron-output", title=f"Partage CDA validation: {report.file}",
             schemaVersion=report.profile or "")
    root.append(E("ns-prefix-in-attribute-values", uri="urn:hl7-org:v3", prefix="hl7"))
    for layer, result in report.layers.items():
        root.append(E("active-pattern", id=layer, name=f"{layer}: {result.status}"))
    for f in report.findings:
        # Notes (severity info) are reports, not failed assertions: a tool counting
        # failed-asserts counts problems only.
        kind = "successful-report" if f.severity == INFO else "failed-assert"
        failed = E(kind, E("text", f.message),
                   id=f.rule, role=f.severity, location=f.location or "/", test=f.layer)
        if f.line is not None:
            failed.set("line", str(f.line))
        root.append(failed)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def to_svrl_many(reports: Sequence[Report]) -> bytes:
    """Several documents: one SVRL per document, in a wrapper element."""
    wrapper = etree.Element("reports")
    for report in reports:
        wrapper.append(etree.fromstring(to_svrl(report)))
    return etree.tostring(wrapper, xml_declaration=True, encoding="UTF-8", pretty_print=True)


# --- HTML -------------------------------------------------------------------------------

_CSS = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:2em}
td,th{border:1px solid #ccc;padding:.25em .5em;vertical-align:top;text-align:left}
.error{color:#a00}.warning{color:#a60}.info{color:#555}.ok{color:#070}code{font-size:90%}"""


def to_html(reports: Sequence[Report]) -> str:
    """A self-contained page; every value is escaped (documents are untrusted input)."""
    e = html.escape
    parts = ["<!DOCTYPE html><html lang='fr'><head><meta charset='utf-8'>",
             "<title>Partage - validation CDA</title><style>", _CSS, "</style></head><body>",
             "<h1>Validation CDA</h1>"]
    for r in reports:
        verdict = "<span class='ok'>conforme</span>" if r.valid else "<span class='error'>non conforme</span>"
        parts.append(f"<h2>{e(r.file or '(document)')} : {verdict}</h2>")
        parts.append(f"<p>Modèle : <code>{e(r.document_model or '-')}</code> ; profil : "
                     f"<code>{e(r.profile)}</code></p>")
        parts.append("<table><tr><th>couche</th><th>statut</th><th>bloquante</th><th>ms</th></tr>")
        for name, layer in r.layers.items():
            parts.append(f"<tr><td>{e(name)}</td><td>{e(layer.status)} {e(layer.reason)}</td>"
                         f"<td>{'oui' if layer.blocking else 'non'}</td><td>{layer.duration_ms:.2f}</td></tr>")
        parts.append("</table>")
        if r.findings:
            parts.append("<table><tr><th>sévérité</th><th>règle</th><th>couche</th><th>message</th>"
                         "<th>emplacement</th><th>ligne</th></tr>")
            for f in r.findings:
                parts.append(f"<tr class='{e(f.severity)}'><td>{e(f.severity)}</td><td>{e(f.rule)}</td>"
                             f"<td>{e(f.layer)}</td><td>{e(f.message)}</td><td><code>{e(f.location)}</code></td>"
                             f"<td>{'' if f.line is None else f.line}</td></tr>")
            parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


def count_by_severity(findings: Iterable[Finding]) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for f in findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    return counts
