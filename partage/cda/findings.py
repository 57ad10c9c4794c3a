"""Findings and reports of the CDA profile engine, and their JSON and SVRL forms.

One shape for every layer (parse, schema, structuration minimale, schematron, model,
terminology, metadata), so the /validate endpoint, the CLI and ingest speak the same
vocabulary. A report is honest about what ran: every layer of the profile is listed with
its status (passed, failed, partial, not run, not applicable) and why; its verdict is
"conforme" only when the document is valid and every layer the profile requires ran in
full. The HTML form is `report_html.py`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from lxml.builder import ElementMaker

from ..xmlsafe import xml_text
from .locate import PREFIXES
from .messages import LAYER_NAMES, STATUS_NAMES

ERROR = "error"
WARNING = "warning"
INFO = "info"
SEVERITIES = (ERROR, WARNING, INFO)

# Layer names, in the order they run.
PARSE = "parse"
SCHEMA = "schema"
RULES = "rules"              # structuration minimale (Partage's own rules)
SCHEMATRON = "schematron"    # a configured ISO schematron (the ANS structuration minimale, or any)
MODEL = "model"              # the document model's ("volet") schematron, chosen per document
TERMINOLOGY = "terminology"
METADATA = "metadata"
LAYERS = (PARSE, SCHEMA, RULES, SCHEMATRON, MODEL, TERMINOLOGY, METADATA)

# Layer statuses.
PASSED = "passed"
FAILED = "failed"
PARTIAL = "partial"                  # ran, but part of it could not (a value set, an include missing)
NOT_RUN = "not run"
NOT_APPLICABLE = "not applicable"    # nothing to check for this input (no metadata, a level-1 CDA)

# Verdicts.
CONFORME = "conforme"
NON_CONFORME = "non conforme"
INCOMPLET = "incomplet"
INCOMPLETE_RULE = "validation-incomplete"   # SVRL: the failed assertion of an incomplete report


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (or note) about one place of one document."""

    rule: str
    severity: str
    layer: str
    message: str
    location: str = ""
    line: int | None = None
    test: str = ""          # a schematron assert's @test (SVRL); Partage's own rules have none

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "severity": self.severity, "layer": self.layer,
                "message": self.message, "location": self.location, "line": self.line}


@dataclass(frozen=True, slots=True)
class LayerPart:
    """One piece of a layer: a value set of the terminology layer, a schematron of the model layer."""

    name: str
    status: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass(slots=True)
class LayerResult:
    """What one layer did: passed / failed / partial / not run / not applicable (and why), and its time."""

    status: str
    reason: str = ""
    duration_ms: float = 0.0
    blocking: bool = False
    parts: list[LayerPart] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Ran in full (whatever it found), or had nothing to check."""
        return self.status in (PASSED, FAILED, NOT_APPLICABLE)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "blocking": self.blocking,
                               "duration_ms": round(self.duration_ms, 3)}
        if self.reason:
            out["reason"] = self.reason
        if self.parts:
            out["parts"] = [p.to_dict() for p in self.parts]
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
    model_schematron: str = ""       # the volet schematron(s) the document was checked against
    model_selection: str = ""        # how it was chosen (or why none)
    missing: list[str] = field(default_factory=list)   # parts of the profile not configured
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

    @property
    def complete(self) -> bool:
        """Every layer of the profile ran in full, and the profile lacks nothing. A report that
        lists no layer ran none: it is never "conforme"."""
        return bool(self.layers) and not self.missing and all(layer.complete for layer in self.layers.values())

    @property
    def verdict(self) -> str:
        if not self.valid:
            return NON_CONFORME
        return CONFORME if self.complete else INCOMPLET

    def incomplete_because(self) -> list[str]:
        """Why the verdict is not "conforme" although the document is valid (French)."""
        out = list(self.missing)
        if not self.layers and not out:
            out.append("aucune couche de validation n'a été exécutée")
        for name, layer in self.layers.items():
            if not layer.complete:
                out.append(f"{LAYER_NAMES.get(name, name)} : {STATUS_NAMES.get(layer.status, layer.status)}"
                           + (f" ({layer.reason})" if layer.reason else ""))
        return out

    def rules(self) -> set[str]:
        return {f.rule for f in self.findings}

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "valid": self.valid,
            "verdict": self.verdict,
            "document_model": self.document_model,
            "profile": self.profile,
            "profile_missing": list(self.missing),
            "model_schematron": self.model_schematron,
            "model_selection": self.model_selection,
            "findings": [f.to_dict() for f in self.findings],
            "layers": {name: result.to_dict() for name, result in self.layers.items()},
        }


def to_json(reports: Sequence[Report], indent: int | None = 2) -> str:
    return json.dumps([r.to_dict() for r in reports], ensure_ascii=False, indent=indent)


# --- SVRL -------------------------------------------------------------------------------

SVRL = "http://purl.oclc.org/dsdl/svrl"


def to_svrl(report: Report) -> bytes:
    """ISO Schematron Validation Report Language: what schematron-minded tools read. Every
    text is made writable into XML first: a file name or a Bundle's fullUrl comes from the
    client and may hold control characters (or, from a command line, undecodable bytes)."""
    E = ElementMaker(namespace=SVRL, nsmap={"svrl": SVRL})
    root = E("schematron-output", title=xml_text(f"Partage – validation CDA : {report.file}"),
             schemaVersion=xml_text(report.profile or ""))
    for uri, prefix in PREFIXES.items():   # every prefix a location may use, so that each can be evaluated
        root.append(E("ns-prefix-in-attribute-values", uri=uri, prefix=prefix))
    for layer, result in report.layers.items():
        name = f"{layer}: {result.status}" + (f" ({result.reason})" if result.reason else "")
        if layer == MODEL and report.model_schematron:
            name += f" [{report.model_schematron}]"
        root.append(E("active-pattern", id=xml_text(layer), name=xml_text(name)))
    for f in report.findings:
        # Notes (severity info) are reports, not failed assertions: a tool counting
        # failed-asserts counts problems only. @test is the schematron assert's test; a finding
        # of Partage's own checks (no XPath test) names its layer there.
        kind = "successful-report" if f.severity == INFO else "failed-assert"
        failed = E(kind, E("text", xml_text(f.message)), id=xml_text(f.rule), role=xml_text(f.severity),
                   location=xml_text(f.location or "/"), test=xml_text(f.test or f.layer))
        if f.line is not None:
            failed.set("line", str(f.line))
        root.append(failed)
    if report.verdict == INCOMPLET:
        # Valid, but not every layer of the profile ran in full: one failed assertion ("every
        # layer ran") per reason, so that a tool counting failed-asserts never reads it as valid.
        for why in report.incomplete_because():
            root.append(E("failed-assert", E("text", xml_text(f"vérification incomplète : {why}")),
                          id=INCOMPLETE_RULE, role=INCOMPLET, flag=INCOMPLET, location="/",
                          test="profile-layers-complete"))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def to_svrl_many(reports: Sequence[Report]) -> bytes:
    """Several documents: one SVRL per document, in a wrapper element."""
    wrapper = etree.Element("reports")
    for report in reports:
        wrapper.append(etree.fromstring(to_svrl(report)))
    return etree.tostring(wrapper, xml_declaration=True, encoding="UTF-8", pretty_print=True)


