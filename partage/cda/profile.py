"""The profile engine: which layers run on a document, which of them block, and the verdict.

A Profile is configuration (frozen, hashable); a Validator holds what the profile needs
loaded once (compiled schema, value sets, compiled schematron) and validates documents:
parse once, share the tree between layers, time each layer.

Profiles shipped:
  cisis      (default) parse + XSD (when a schema is configured) + Partage's CI-SIS rules +
             schematron (when one is configured, advisory) + terminology + metadata cross-check
             (when metadata are given). Blocks on errors of parse, schema, rules,
             terminology and metadata.
  ans        what the ANS reference pipeline decides: XSD + the configured schematron, and
             any failed assert, whatever its role, fails the document.
  structure  parse + rules only (no schema, no value-set directory): the fast header check.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .constants import GENERIC_TEMPLATES, HL7
from .crosscheck import cross_check
from .findings import (
    ERROR,
    FAILED,
    INFO,
    METADATA,
    NOT_RUN,
    PARSE,
    PASSED,
    RULES,
    SCHEMA,
    SCHEMATRON,
    TERMINOLOGY,
    WARNING,
    Finding,
    LayerResult,
    Report,
)
from .header import document_model, read_header_element
from .parser import DEFAULT_LIMITS, ParseLimits, XmlRejected, parse_cda
from .rules import RuleContext, auto_presentable_finding, check_rules
from .schema import check_schema, find_schema, load_schema
from .terminology import Terminology, check_terminology, load_terminology, missing_rule_value_sets

_TEMPLATE_ID = f"{{{HL7}}}templateId"


@dataclass(frozen=True)
class Profile:
    name: str = "cisis"
    layers: frozenset[str] = frozenset({SCHEMA, RULES, SCHEMATRON, TERMINOLOGY, METADATA})
    blocking: frozenset[str] = frozenset({PARSE, SCHEMA, RULES, TERMINOLOGY, METADATA})
    blocking_severities: frozenset[str] = frozenset({ERROR})
    schema: str | None = None          # directory holding CDA_extended.xsd / CDA.xsd, or the .xsd
    valuesets: str | None = None       # directory of SVS files
    schematron: str | None = None      # an ISO Schematron .sch file
    limits: ParseLimits = DEFAULT_LIMITS
    description: str = ""

    def with_options(self, **changes: Any) -> Profile:
        """A copy with the non-None options replaced (CLI flags, settings)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PROFILES: dict[str, Profile] = {
    "cisis": Profile(description="Partage CI-SIS profile: XSD, structuration minimale rules, "
                                 "terminology, metadata cross-check; schematron advisory"),
    "ans": Profile(name="ans", layers=frozenset({SCHEMA, SCHEMATRON}),
                   blocking=frozenset({PARSE, SCHEMA, SCHEMATRON}),
                   blocking_severities=frozenset({ERROR, WARNING}),
                   description="ANS reference pipeline: XSD + schematron, any failed assert fails"),
    "structure": Profile(name="structure", layers=frozenset({RULES}), blocking=frozenset({PARSE, RULES}),
                         description="header structure only (parse + rules), no configuration needed"),
}
DEFAULT_PROFILE = "cisis"


def get_profile(name: str | Profile | None = None, **options: Any) -> Profile:
    if isinstance(name, Profile):
        return name.with_options(**options)
    try:
        base = PROFILES[name or DEFAULT_PROFILE]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None
    return base.with_options(**options)


@dataclass
class Validator:
    """A profile with its resources loaded: build once (per process), validate many."""

    profile: Profile
    schema_path: Path | None = field(init=False, default=None)
    terminology: Terminology = field(init=False)
    schematron: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        p = self.profile
        if SCHEMA in p.layers and p.schema:
            self.schema_path = find_schema(p.schema)
            load_schema(self.schema_path)   # compile now: fail at start-up, not on a document
        self.terminology = load_terminology(str(Path(p.valuesets).resolve()) if p.valuesets else None)
        if SCHEMATRON in p.layers and p.schematron:
            from .schematron import load_schematron  # saxonche only when a schematron is used
            self.schematron = load_schematron(p.schematron)

    def validate(self, data: bytes, *, filename: str = "",
                 xds_metadata: Mapping[str, Any] | None = None) -> Report:
        p = self.profile
        report = Report(file=filename, profile=p.name)
        started = time.perf_counter()
        try:
            parsed = parse_cda(data, p.limits)
        except XmlRejected as exc:
            report.findings.append(exc.finding)
            report.layers[PARSE] = LayerResult(FAILED, exc.finding.message, _ms(started), PARSE in p.blocking)
            for layer in (SCHEMA, RULES, SCHEMATRON, TERMINOLOGY, METADATA):
                if layer in p.layers:
                    report.layers[layer] = LayerResult(NOT_RUN, "the document could not be parsed")
            return self._verdict(report)
        report.layers[PARSE] = LayerResult(PASSED, "", _ms(started), PARSE in p.blocking)
        doc = parsed.clinical_document
        if doc is None:
            report.findings.append(Finding("not-clinical-document", ERROR, RULES,
                                           f"the root element is {parsed.root.tag}, not a CDA ClinicalDocument",
                                           "/", parsed.root.sourceline))
        else:
            report._header_source = lambda: read_header_element(doc, parsed.auto_presentable)
            report.clinical_document = doc
            report.document_model = document_model(_model_templates(doc))

        self._run(report, SCHEMA, lambda: self._schema(parsed.root))
        if doc is not None:
            ctx = RuleContext(doc, self.terminology)   # child index shared by rules, terminology, header
            report._header_source = lambda: read_header_element(doc, parsed.auto_presentable, ctx.buckets)
            self._run(report, RULES, lambda: self._rules(ctx, parsed.auto_presentable))
            self._run(report, SCHEMATRON, lambda: self._schematron(parsed.root))
            self._run(report, TERMINOLOGY, lambda: check_terminology(doc, self.terminology, ctx=ctx)
                      + missing_rule_value_sets(self.terminology))
            if xds_metadata is not None:
                self._run(report, METADATA, lambda: cross_check(report.header, xds_metadata))
            elif METADATA in p.layers:
                report.layers[METADATA] = LayerResult(NOT_RUN, "no XDS metadata given")
        else:
            for layer in (RULES, SCHEMATRON, TERMINOLOGY, METADATA):
                if layer in p.layers:
                    report.layers[layer] = LayerResult(NOT_RUN, "no ClinicalDocument")
        return self._verdict(report)

    # layers -----------------------------------------------------------------------------
    def _run(self, report: Report, layer: str, run) -> None:
        if layer not in self.profile.layers:
            return
        started = time.perf_counter()
        findings = run()
        elapsed = _ms(started)
        blocking = layer in self.profile.blocking
        if findings is None:    # the layer had nothing to run with
            reason = {SCHEMA: "no CDA schema configured (--schema-dir)",
                      SCHEMATRON: "no schematron configured (--schematron)"}.get(layer, "not configured")
            report.layers[layer] = LayerResult(NOT_RUN, reason, elapsed, blocking)
            if layer == SCHEMA:
                report.findings.append(Finding("schema-not-run", INFO, SCHEMA,
                                               "XML Schema validation not run: no CDA schema configured"))
            return
        report.findings.extend(findings)
        failed = any(f.severity in self.profile.blocking_severities for f in findings)
        report.layers[layer] = LayerResult(FAILED if failed else PASSED, "", elapsed, blocking)

    def _schema(self, root) -> list[Finding] | None:
        if self.schema_path is None:
            return None
        return check_schema(root, self.schema_path)

    def _rules(self, ctx: RuleContext, auto_presentable: bool) -> list[Finding]:
        findings = check_rules(ctx.doc, self.terminology, ctx=ctx)
        if auto_presentable:
            findings.append(auto_presentable_finding(ctx.doc))
        return findings

    def _schematron(self, root) -> list[Finding] | None:
        if self.schematron is None:
            return None
        return self.schematron.check(root)

    def _verdict(self, report: Report) -> Report:
        p = self.profile
        report.valid = not any(f.severity in p.blocking_severities and f.layer in p.blocking
                               for f in report.findings)
        return report


def _model_templates(doc) -> list[tuple[str, str]]:
    return [(t.get("root", ""), t.get("extension", "")) for t in doc.iterchildren(_TEMPLATE_ID)
            if t.get("root") not in GENERIC_TEMPLATES]


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


@lru_cache(maxsize=16)
def get_validator(profile: Profile) -> Validator:
    """One Validator per profile per process (resources are loaded once)."""
    return Validator(profile)


def validate(data: bytes, profile: str | Profile | None = None, *, filename: str = "",
             xds_metadata: Mapping[str, Any] | None = None, **options: Any) -> Report:
    """Validate one document. `options` override the profile (schema=, valuesets=, schematron=)."""
    return get_validator(get_profile(profile, **options)).validate(
        data, filename=filename, xds_metadata=xds_metadata)
