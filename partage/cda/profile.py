"""The profile engine: which layers run on a document, which of them block, and the verdict.

A Profile is configuration (frozen, hashable); a Validator holds what the profile needs
loaded once (compiled schema, value sets, schematrons, the catalogue of model schematrons)
and validates documents: parse once, share the tree between layers, time each layer.

Profiles shipped:
  cisis      (default) parse + XSD + structuration minimale (Partage's CI-SIS rules) + the
             document model's schematron (chosen per document) + terminology + metadata
             cross-check (when metadata are given) [+ a configured schematron, advisory].
             Blocks on errors of parse, schema, rules, model, terminology and metadata.
  ans        what the ANS reference pipeline decides: XSD + the ANS structuration-minimale
             schematron + the model schematron; any failed assert, whatever its role, fails.
  structure  parse + rules only (no schema, no value-set directory): the fast header check.

Every report lists every layer of its profile with its status; a profile whose resources
are not configured (no XSD, no model schematrons, value sets not loaded) says so when it is
loaded (a warning in the log) and in every report (`Report.missing`), and its verdict is
never "conforme".
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from lxml import etree

from .constants import GENERIC_TEMPLATES, HL7
from .crosscheck import cross_check
from .findings import (
    ERROR,
    FAILED,
    INFO,
    METADATA,
    MODEL,
    NOT_APPLICABLE,
    NOT_RUN,
    PARSE,
    PARTIAL,
    PASSED,
    RULES,
    SCHEMA,
    SCHEMATRON,
    TERMINOLOGY,
    WARNING,
    Finding,
    LayerPart,
    LayerResult,
    Report,
)
from .header import document_model, read_header_element
from .locate import line_of
from .models import (
    CHOSEN,
    NONE,
    ModelCatalog,
    ModelChoice,
    ModelEntry,
    find_strucmin,
    load_catalog,
    model_files,
    unusable_text,
)
from .parser import DEFAULT_LIMITS, ParseLimits, XmlRejected, parse_cda
from .rules import RuleContext, auto_presentable_finding, check_rules
from .saxon import SaxonDocument, SaxonInputError, SaxonRunError
from .schema import check_schema, find_schema, load_schema
from .schematron import CompiledSchematron, load_schematron
from .schematron_cache import default_cache_dir
from .schematron_compile import SchematronError
from .terminology import (
    Terminology,
    load_terminology,
    missing_rule_value_sets,
    missing_value_sets,
    rule_value_set_parts,
    terminology_layer,
)

log = logging.getLogger("partage.cda")

_TEMPLATE_ID = f"{{{HL7}}}templateId"
_CLINICAL_DOCUMENT = "/hl7:ClinicalDocument"


@dataclass(frozen=True)
class Profile:
    name: str = "cisis"
    layers: frozenset[str] = frozenset({SCHEMA, RULES, SCHEMATRON, MODEL, TERMINOLOGY, METADATA})
    # Layers that must be configured for the profile to be complete (a configured schematron
    # is optional in `cisis`; metadata are checked when given).
    required: frozenset[str] = frozenset({SCHEMA, RULES, MODEL, TERMINOLOGY})
    blocking: frozenset[str] = frozenset({PARSE, SCHEMA, RULES, MODEL, TERMINOLOGY, METADATA})
    blocking_severities: frozenset[str] = frozenset({ERROR})
    schema: str | None = None              # directory holding CDA_extended.xsd / CDA.xsd, or the .xsd
    valuesets: str | None = None           # directory of SVS files
    schematron: str | None = None          # an ISO Schematron .sch file
    model_schematrons: str | None = None   # a directory in the layout of ANS's TestContenuCDA
    model_required: bool = False           # a structured document without a model schematron is an error
    cache_dir: str | None = None           # compiled-schematron cache (default: the user's cache dir)
    limits: ParseLimits = DEFAULT_LIMITS
    description: str = ""

    def with_options(self, **changes: Any) -> Profile:
        """A copy with the non-None options replaced (CLI flags, settings)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PROFILES: dict[str, Profile] = {
    "cisis": Profile(description="Partage CI-SIS : XSD, structuration minimale, schematron du modèle (volet), "
                                 "terminologie, cohérence avec les métadonnées XDS"),
    "ans": Profile(name="ans", layers=frozenset({SCHEMA, SCHEMATRON, MODEL}),
                   required=frozenset({SCHEMA, SCHEMATRON, MODEL}),
                   blocking=frozenset({PARSE, SCHEMA, SCHEMATRON, MODEL}),
                   blocking_severities=frozenset({ERROR, WARNING}),
                   description="chaîne de référence ANS : XSD, schematron de structuration minimale et du "
                               "modèle ; toute assertion en échec refuse"),
    "structure": Profile(name="structure", layers=frozenset({RULES}), required=frozenset({RULES}),
                         blocking=frozenset({PARSE, RULES}),
                         description="structure de l'en-tête seulement (lecture + règles), sans configuration"),
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
class _Outcome:
    """What a layer function returns: its findings and, when it knows better, its status."""

    findings: list[Finding] = field(default_factory=list)
    status: str | None = None      # PARTIAL, NOT_RUN, NOT_APPLICABLE; None: from the findings
    reason: str = ""
    parts: list[LayerPart] = field(default_factory=list)


def profile_gaps(p: Profile) -> list[str]:
    """What the profile requires and the configuration does not give (French, for reports).

    Read from the configuration alone (nothing is compiled), so the upload form can say it
    for every profile; the Validator says the same at load and in each report.
    """
    out: list[str] = []
    if SCHEMA in p.required and not p.schema:
        out.append("schéma XML (XSD) du CDA non configuré (--cda-schema-dir)")
    models = Path(p.model_schematrons) if p.model_schematrons else None
    if SCHEMATRON in p.required and not p.schematron and not (models and find_strucmin(models)):
        out.append("schematron de structuration minimale non configuré (--cda-schematrons ou --cda-schematron)")
    if MODEL in p.required:
        if models is None:
            out.append("schematrons des modèles de documents (volets) non configurés (--cda-schematrons)")
        elif not model_files(models):
            out.append(f"aucun schematron de modèle CI-SIS_*.sch dans {models}")
    if TERMINOLOGY in p.required:
        missing = missing_value_sets(load_terminology(str(Path(p.valuesets).resolve()) if p.valuesets else None))
        if missing:
            out.append(f"{len(missing)} jeu(x) de valeurs non chargé(s) ({', '.join(missing.values())}) "
                       "(--cda-valuesets)")
    return out


class Validator:
    """A profile with its resources loaded: build once (per process), validate many."""

    def __init__(self, profile: Profile) -> None:
        self.profile = p = profile
        self.schema_path: Path | None = None
        if SCHEMA in p.layers and p.schema:
            self.schema_path = find_schema(p.schema)
            load_schema(self.schema_path)   # compile now: fail at start-up, not on a document
        self.terminology: Terminology = load_terminology(str(Path(p.valuesets).resolve()) if p.valuesets else None)
        cache = Path(p.cache_dir) if p.cache_dir else default_cache_dir()
        self.catalog: ModelCatalog | None = None
        if (MODEL in p.layers or SCHEMATRON in p.layers) and p.model_schematrons:
            self.catalog = load_catalog(p.model_schematrons, cache)
        schematron = p.schematron
        if not schematron and SCHEMATRON in p.required and self.catalog is not None and self.catalog.strucmin:
            schematron = str(self.catalog.strucmin)   # the ANS structuration minimale of the same directory
        self.schematron: CompiledSchematron | None = None
        if SCHEMATRON in p.layers and schematron:
            self.schematron = load_schematron(schematron, cache)
        self.listed = self._listed_layers()
        self.missing = profile_gaps(p)
        for part in self.missing:
            log.warning("CDA profile %s incomplete: %s", p.name, part)

    def validate(self, data: bytes, *, filename: str = "",
                 xds_metadata: Mapping[str, Any] | None = None) -> Report:
        p = self.profile
        report = Report(file=filename, profile=p.name, missing=list(self.missing))
        started = time.perf_counter()
        try:
            parsed = parse_cda(data, p.limits)
        except XmlRejected as exc:
            report.findings.append(exc.finding)
            report.layers[PARSE] = LayerResult(FAILED, exc.finding.message, _ms(started), PARSE in p.blocking)
            for layer in self.listed:
                report.layers[layer] = LayerResult(NOT_RUN, "le document n'a pas pu être lu",
                                                   blocking=layer in p.blocking)
            return self._verdict(report)
        report.layers[PARSE] = LayerResult(PASSED, "", _ms(started), PARSE in p.blocking)
        doc = parsed.clinical_document
        saxon_doc = SaxonDocument(parsed.root)   # handed to Saxon once, if a schematron layer runs
        if doc is None:
            report.findings.append(Finding("not-clinical-document", ERROR, RULES,
                                           f"l'élément racine est {parsed.root.tag}, pas un ClinicalDocument CDA",
                                           "/", line_of(parsed.root)))
        else:
            report._header_source = lambda: read_header_element(doc, parsed.auto_presentable)
            report.clinical_document = doc
            report.document_model = document_model(_model_templates(doc))

        self._run(report, SCHEMA, lambda: self._schema(parsed.root))
        if doc is not None:
            ctx = RuleContext(doc, self.terminology)   # child index shared by rules, terminology, header
            report._header_source = lambda: read_header_element(doc, parsed.auto_presentable, ctx.buckets)
            self._run(report, RULES, lambda: self._rules(ctx, parsed.auto_presentable))
            self._run(report, SCHEMATRON, lambda: self._schematron(saxon_doc))
            self._run(report, MODEL, lambda: self._model(report, doc, parsed.root, saxon_doc))
            self._run(report, TERMINOLOGY, lambda: self._terminology(doc, ctx))
            if METADATA in p.layers:
                self._run(report, METADATA, lambda: self._metadata(report, xds_metadata))
        else:
            for layer in self.listed:
                if layer != SCHEMA:
                    report.layers[layer] = LayerResult(NOT_RUN, "pas de ClinicalDocument",
                                                       blocking=layer in p.blocking)
        return self._verdict(report)

    def _listed_layers(self) -> list[str]:
        """The profile's layers a report lists: the required ones, and the optional ones configured."""
        p = self.profile
        listed = []
        for layer in (SCHEMA, RULES, SCHEMATRON, MODEL, TERMINOLOGY, METADATA):
            if layer in p.required or layer == METADATA and layer in p.layers or \
                    layer == SCHEMATRON and layer in p.layers and self.schematron is not None:
                listed.append(layer)
        return listed

    # layers -----------------------------------------------------------------------------
    def _run(self, report: Report, layer: str, run: Callable[[], _Outcome]) -> None:
        if layer not in self.listed:
            return
        started = time.perf_counter()
        outcome = run()
        elapsed = _ms(started)
        blocking = layer in self.profile.blocking
        report.findings.extend(outcome.findings)
        failed = any(f.severity in self.profile.blocking_severities for f in outcome.findings)
        status = outcome.status or PASSED
        if failed and status in (PASSED, PARTIAL):
            status = FAILED
        report.layers[layer] = LayerResult(status, outcome.reason, elapsed, blocking, outcome.parts)

    def _schema(self, root: etree._Element) -> _Outcome:
        if self.schema_path is None:
            return _Outcome([Finding("schema-not-run", INFO, SCHEMA, "validation par le schéma XML non exécutée : "
                                     "aucun schéma CDA configuré")], NOT_RUN,
                            "aucun schéma CDA configuré (--cda-schema-dir)")
        return _Outcome(check_schema(root, self.schema_path))

    def _rules(self, ctx: RuleContext, auto_presentable: bool) -> _Outcome:
        findings = check_rules(ctx.doc, self.terminology, ctx=ctx)
        if auto_presentable:
            findings.append(auto_presentable_finding(ctx.doc))
        return _Outcome(findings)

    def _schematron(self, saxon_doc: SaxonDocument) -> _Outcome:
        if self.schematron is None:
            return _Outcome([], NOT_RUN, "aucun schematron configuré (--cda-schematrons ou --cda-schematron)")
        try:
            findings = self.schematron.check(saxon_doc, SCHEMATRON)
        except SaxonInputError as exc:
            return _refused_by_saxon(exc, SCHEMATRON)
        except SaxonRunError as exc:
            return _failed_in_saxon(exc, SCHEMATRON, self.schematron.path.name)
        return _defects(self.schematron, findings, SCHEMATRON, [])

    def _terminology(self, doc: etree._Element, ctx: RuleContext) -> _Outcome:
        findings, parts = terminology_layer(doc, self.terminology, ctx=ctx)
        findings += missing_rule_value_sets(self.terminology)
        parts = rule_value_set_parts(self.terminology) + parts
        not_loaded = [part for part in parts if part.status == NOT_RUN]
        if not_loaded:
            return _Outcome(findings, PARTIAL, f"{len(not_loaded)} jeu(x) de valeurs non chargé(s)", parts)
        return _Outcome(findings, None, "", parts)

    def _metadata(self, report: Report, xds_metadata: Mapping[str, Any] | None) -> _Outcome:
        if xds_metadata is None:
            return _Outcome([], NOT_APPLICABLE, "aucune métadonnée XDS fournie avec le document (déposez une "
                            "requête ITI-41 ou un Bundle MHD pour les confronter à l'en-tête)")
        return _Outcome(cross_check(report.header, xds_metadata))

    def _model(self, report: Report, doc: etree._Element, root: etree._Element,
               saxon_doc: SaxonDocument) -> _Outcome:
        if self.catalog is None:
            return _Outcome([], NOT_RUN, "schematrons des modèles non configurés (--cda-schematrons)")
        choice = self.catalog.select(doc, root)
        if choice.status != CHOSEN:
            report.model_selection = choice.reason
            if choice.status == NONE:
                severity = ERROR if self.profile.model_required else INFO
                where = _CLINICAL_DOCUMENT + "/hl7:templateId"
                return _Outcome([Finding("model-schematron-unknown", severity, MODEL,
                                         f"{choice.reason} : le corps du document n'a pas été vérifié",
                                         where, line_of(doc))], NOT_RUN, choice.reason)
            return _Outcome([], NOT_APPLICABLE, choice.reason)
        return self._run_models(report, choice, saxon_doc)

    def _run_models(self, report: Report, choice: ModelChoice, saxon_doc: SaxonDocument) -> _Outcome:
        """Each model the document claims is checked (a templateId is a claim of conformance);
        the best fit is chosen only between versions of one model. A candidate that could not
        be compiled leaves the layer "partial": the check was not made against it."""
        runs: dict[str, list[tuple[ModelEntry, CompiledSchematron, list[Finding]]]] = {}
        parts: list[LayerPart] = []
        unusable: list[str] = []
        report.model_selection = choice.how
        for entry in choice.entries:
            if entry.problem:   # did not compile when the catalogue loaded
                parts.append(_unusable_part(entry))
                unusable.append(entry.name)
                continue
            try:
                compiled = self.catalog.compiled(entry) if self.catalog is not None else None
            except (SchematronError, OSError) as exc:
                parts.append(LayerPart(entry.name, NOT_RUN, f"le schematron ne compile pas : {exc}"))
                unusable.append(entry.name)
                continue
            if compiled is None:
                continue
            try:
                runs.setdefault(entry.model, []).append((entry, compiled, compiled.check(saxon_doc, MODEL)))
            except SaxonInputError as exc:
                outcome = _refused_by_saxon(exc, MODEL)
                outcome.parts = parts
                return outcome
            except SaxonRunError as exc:
                outcome = _failed_in_saxon(exc, MODEL, entry.name)
                outcome.parts = parts
                return outcome
        if not runs:
            # The volet's schematron exists but cannot be used: not "no schematron for the templateIds".
            reason = (f"schematron(s) du volet présent(s) mais inutilisable(s) : {', '.join(unusable)} ; le corps "
                      "du document n'a pas été vérifié")
            return _Outcome([_unusable(reason, ERROR if self.profile.model_required else INFO)],
                            NOT_RUN, reason, parts)

        def errors(findings: list[Finding]) -> int:
            return sum(f.severity in self.profile.blocking_severities for f in findings)
        kept = []
        for model_runs in runs.values():
            # Best fit (several versions tried): complete schematrons first, then fewest errors, then latest.
            best = min(model_runs, key=lambda r: (bool(r[1].missing_includes), errors(r[2]),
                                                  _descending(r[0].version)))
            kept.append(best)
            if len(model_runs) > 1:
                for other, _c, other_findings in model_runs:
                    chosen = other is best[0]
                    parts.append(LayerPart(other.name, PASSED if chosen else NOT_APPLICABLE,
                                           f"{errors(other_findings)} erreur(s) ; "
                                           + ("retenu" if chosen else "écarté (moins bonne correspondance)")))
        report.model_schematron = ", ".join(entry.name for entry, _c, _f in kept)
        outcome = _Outcome([], None, "", parts)
        for _entry, compiled, findings in kept:
            one = _defects(compiled, findings, MODEL, parts)
            outcome.findings += one.findings
            if one.status is not None:
                outcome.status, outcome.reason = one.status, one.reason
        if unusable:
            message = (f"schematron(s) retenu(s) qui ne compile(nt) pas : {', '.join(unusable)} ; le document "
                       "n'a pas été vérifié par ceux-ci")
            outcome.findings.append(_unusable(message))
            outcome.status, outcome.reason = PARTIAL, message
        if choice.unsure:
            # A templateId of the document no usable schematron names may claim one of these.
            message = f"{unusable_text(choice.unsure)}, le document relève peut-être de l'un d'eux"
            parts += [_unusable_part(e) for e in choice.unsure]
            outcome.findings.append(_unusable(message))
            outcome.status, outcome.reason = PARTIAL, message
        return outcome

    def _verdict(self, report: Report) -> Report:
        p = self.profile
        report.valid = not any(f.severity in p.blocking_severities and f.layer in p.blocking
                               for f in report.findings)
        return report


def _refused_by_saxon(exc: SaxonInputError, layer: str) -> _Outcome:
    """The schematron engine could not read the document: the layer did not run, and says why."""
    reason = "le moteur de schematrons (Saxon) refuse de lire le document"
    return _Outcome([Finding("schematron-input-refused", ERROR, layer,
                             f"{reason} : aucune règle de cette couche n'a été vérifiée (message de Saxon : {exc})",
                             "/")], NOT_RUN, reason)


def _unusable(message: str, severity: str = INFO) -> Finding:
    """A model schematron retained for the document could not be used (the layer says so)."""
    return Finding("model-schematron-unusable", severity, MODEL, message, _CLINICAL_DOCUMENT)


def _unusable_part(entry: ModelEntry) -> LayerPart:
    """The part of the layer a schematron that did not compile when the catalogue loaded would have run."""
    return LayerPart(entry.name, NOT_RUN, f"le schematron ne peut pas être utilisé : {entry.problem}")


def _failed_in_saxon(exc: SaxonRunError, layer: str, name: str) -> _Outcome:
    """The schematron failed on the document as a whole: the layer did not run, and says why
    (a layer that did not run is never "passed")."""
    reason = f"le schematron {name} a échoué sur ce document (erreur du moteur Saxon)"
    return _Outcome([Finding("schematron-eval-error", ERROR, layer,
                             f"{reason} : aucune règle de cette couche n'a été vérifiée (message de Saxon : {exc})",
                             "/")], NOT_RUN, reason)


def _defects(compiled: CompiledSchematron, findings: list[Finding], layer: str,
             parts: list[LayerPart]) -> _Outcome:
    """A schematron's upstream defects, said in its layer: missing includes make the check partial."""
    name = compiled.path.name
    for defect in compiled.missing_documents:
        parts.append(LayerPart(defect.href, NOT_RUN, f"fichier de jeu de valeurs nommé par {name} absent : les "
                               "assertions qui le lisent testent un ensemble vide (comme l'outil ANS)"))
    missing = compiled.missing_includes
    if not missing:
        return _Outcome(findings, None, "", parts)
    message = (f"le schematron {name} est défectueux : {len(missing)} fichier(s) inclus absent(s) "
               f"({', '.join(d.href for d in missing)}) ; leurs règles n'ont pas été exécutées")
    findings = [*findings, Finding("schematron-defect", INFO, layer, message, "/")]
    return _Outcome(findings, PARTIAL, f"schematron défectueux : {len(missing)} inclusion(s) absente(s)", parts)


def _descending(version: str) -> tuple[int, ...]:
    """Sort key putting the latest version first ("2024.01" before "2021.01")."""
    return tuple(-int(x) for x in version.split(".") if x.isdigit())


def _model_templates(doc: etree._Element) -> list[tuple[str, str]]:
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
    """Validate one document. `options` override the profile (schema=, valuesets=, schematron=, ...)."""
    return get_validator(get_profile(profile, **options)).validate(
        data, filename=filename, xds_metadata=xds_metadata)
