"""Layer 4: membership of the header's coded values in the CI-SIS value sets (JDV).

The value sets come from the one value-set loader (`partage.terminology.svs`: a directory
of SVS files, the official JDV, over Partage's own small defaults). A binding whose value
set is not loaded is not checked, and the layer says so, value set by value set (its parts,
`value_set_parts`), with the layer "partial": a terminology check that silently passes would
be worse than none.

Bindings are a table (element path from ClinicalDocument -> value set), walked through the
child index the rules layer already built for the document (no XPath per binding).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lxml import etree

from ..terminology.svs import ValueSet, ValueSets, load_value_sets, norm_system
from .constants import VS_TYPE_CODE
from .findings import ERROR, FAILED, INFO, NOT_RUN, PASSED, TERMINOLOGY, Finding, LayerPart
from .locate import line_of, text_of, xpath_of
from .rules import RuleContext

log = logging.getLogger("partage.cda")


class Terminology:
    """Value sets by OID: the configured directory over the shipped defaults."""

    def __init__(self, value_sets: ValueSets | None = None, directory: str | Path | None = None) -> None:
        self.directory = str(directory) if directory else ""
        self.value_sets = value_sets if value_sets is not None else ValueSets()
        self._compiled: dict[int, CompiledBindings] = {}   # per binding table, built on first use

    def get(self, oid: str) -> ValueSet | None:
        return self.value_sets.get(oid)

    def by_name(self, stem: str) -> ValueSet | None:
        return self.value_sets.by_name(stem)

    def __contains__(self, oid: str) -> bool:
        return oid in self.value_sets


@lru_cache(maxsize=8)
def load_terminology(directory: str | None = None) -> Terminology:
    """The one loader's value sets (configured directory over the defaults), once per directory."""
    return Terminology(load_value_sets(directory), directory)


@dataclass(frozen=True, slots=True)
class Binding:
    """Coded elements at `path` (hl7 child steps from ClinicalDocument, "hl7:a/hl7:b") must take
    their code from value set `oid`."""

    id: str
    path: str
    oid: str
    jdv: str
    attribute: str = "code"          # "code", another attribute, or "" for the element's text
    with_system: bool = True         # also match @codeSystem when the element carries one



_PERSONS = ("hl7:author/hl7:assignedAuthor/hl7:assignedPerson",
            "hl7:legalAuthenticator/hl7:assignedEntity/hl7:assignedPerson",
            "hl7:authenticator/hl7:assignedEntity/hl7:assignedPerson",
            "hl7:informant/hl7:assignedEntity/hl7:assignedPerson",
            "hl7:documentationOf/hl7:serviceEvent/hl7:performer/hl7:assignedEntity/hl7:assignedPerson",
            "hl7:componentOf/hl7:encompassingEncounter/hl7:encounterParticipant/hl7:assignedEntity/hl7:assignedPerson",
            "hl7:componentOf/hl7:encompassingEncounter/hl7:responsibleParty/hl7:assignedEntity/hl7:assignedPerson")


BINDINGS: tuple[Binding, ...] = (
    Binding("author-specialty-not-in-jdv", "hl7:author/hl7:assignedAuthor/hl7:code",
            "1.2.250.1.213.1.1.5.461", "JDV_J01_XdsAuthorSpecialty_CISIS"),
    Binding("author-function-not-in-jdv", "hl7:author/hl7:functionCode",
            "1.2.250.1.213.1.1.5.124", "JDV_J47_FunctionCode_CISIS"),
    Binding("legalAuthenticator-specialty-not-in-jdv", "hl7:legalAuthenticator/hl7:assignedEntity/hl7:code",
            "1.2.250.1.213.1.1.5.461", "JDV_J01_XdsAuthorSpecialty_CISIS"),
    Binding("performer-specialty-not-in-jdv",
            "hl7:documentationOf/hl7:serviceEvent/hl7:performer/hl7:assignedEntity/hl7:code",
            "1.2.250.1.213.1.1.5.461", "JDV_J01_XdsAuthorSpecialty_CISIS"),
    Binding("participant-specialty-not-in-jdv", "hl7:participant/hl7:associatedEntity/hl7:code",
            "1.2.250.1.213.1.1.5.461", "JDV_J01_XdsAuthorSpecialty_CISIS"),
    Binding("participant-function-not-in-jdv", "hl7:participant/hl7:functionCode",
            "1.2.250.1.213.1.1.5.124", "JDV_J47_FunctionCode_CISIS"),
    *(Binding("practice-setting-not-in-jdv", f"{owner}/hl7:assignedEntity/hl7:representedOrganization"
              "/hl7:standardIndustryClassCode", "1.2.250.1.213.1.1.5.467", "JDV_J04_XdsPracticeSettingCode_CISIS")
      for owner in ("hl7:documentationOf/hl7:serviceEvent/hl7:performer", "hl7:legalAuthenticator",
                    "hl7:informant")),
    Binding("gender-not-in-jdv",
            "hl7:recordTarget/hl7:patientRole/hl7:patient/hl7:administrativeGenderCode",
            "1.2.250.1.213.1.1.5.590", "JDV_J143_AdministrativeGender_CISIS"),
    Binding("encounter-code-not-in-jdv", "hl7:componentOf/hl7:encompassingEncounter/hl7:code",
            "1.2.250.1.213.1.1.5.589", "JDV_J142_TypeRencontre_CISIS"),
    Binding("facility-type-not-in-jdv",
            "hl7:componentOf/hl7:encompassingEncounter/hl7:location/hl7:healthCareFacility/hl7:code",
            "1.2.250.1.213.1.1.5.466", "JDV_J02_XdsHealthcareFacilityTypeCode_CISIS"),
    Binding("encounter-participation-not-in-jdv",
            "hl7:componentOf/hl7:encompassingEncounter/hl7:encounterParticipant",
            "1.2.250.1.213.1.1.5.528", "JDV_J140_EncounterParticipationType_CISIS", "typeCode", False),
    Binding("participant-type-not-in-jdv", "hl7:participant", "1.2.250.1.213.1.1.5.591",
            "JDV_J144_ParticipationType_CISIS", "typeCode", False),
    Binding("participant-class-not-in-jdv", "hl7:participant/hl7:associatedEntity", "1.2.250.1.213.1.1.5.588",
            "JDV_J141_RoleClass_CISIS", "classCode", False),
    Binding("informant-relation-not-in-jdv", "hl7:informant/hl7:relatedEntity/hl7:code",
            "1.2.250.1.213.3.3.16", "JDV_J11_RelationPatient_CISIS", "code", False),
    *(Binding("name-prefix-not-in-jdv", f"{person}/hl7:name/hl7:prefix",
              "1.2.250.1.213.1.1.5.718", "JDV_J245_Civilite_CISIS", "", False) for person in _PERSONS),
    *(Binding("name-suffix-not-in-jdv", f"{person}/hl7:name/hl7:suffix",
              "1.2.250.1.213.1.1.5.719", "JDV_J246_Titre_CISIS", "", False) for person in _PERSONS),
)

# Value sets the rules layer needs; listed so a missing one is reported once.
RULE_VALUE_SETS = {VS_TYPE_CODE: "JDV_J07_XdsTypeCode_CISIS"}


class CompiledBindings:
    """The bindings whose value set is loaded, with their paths as step lists (once per Terminology)."""

    def __init__(self, terminology: Terminology, bindings: tuple[Binding, ...]) -> None:
        self.missing: dict[str, str] = {}
        self.active: list[tuple[Binding, ValueSet, tuple[str, ...]]] = []
        for binding in bindings:
            value_set = terminology.get(binding.oid)
            if value_set is None:
                self.missing.setdefault(binding.oid, binding.jdv)
            else:
                steps = tuple(step.removeprefix("hl7:") for step in binding.path.split("/"))
                self.active.append((binding, value_set, steps))
        # Bindings share path prefixes (author/assignedAuthor/...): each prefix is walked once per
        # document. prefixes[i] = (index of the parent prefix, step); 0 is the ClinicalDocument.
        self.prefixes: list[tuple[int, str]] = [(-1, "")]
        self.targets: list[tuple[Binding, ValueSet, int]] = []
        index: dict[tuple[str, ...], int] = {(): 0}
        for binding, value_set, steps in self.active:
            for i in range(1, len(steps) + 1):
                if steps[:i] not in index:
                    index[steps[:i]] = len(self.prefixes)
                    self.prefixes.append((index[steps[:i - 1]], steps[i - 1]))
            self.targets.append((binding, value_set, index[steps]))


def _compiled(terminology: Terminology, bindings: tuple[Binding, ...]) -> CompiledBindings:
    key = id(bindings)
    compiled = terminology._compiled.get(key)
    if compiled is None:
        compiled = terminology._compiled[key] = CompiledBindings(terminology, bindings)
    return compiled


def _violation(binding: Binding, el: etree._Element) -> Finding:
    if binding.attribute:
        code = el.get(binding.attribute, "")
    else:
        code = " ".join(text_of(el).split())
    system = el.get("codeSystem") if binding.with_system and binding.attribute == "code" else None
    shown = f"{code} ({system})" if system else f"« {code} »"
    where = xpath_of(el) + (f"/@{binding.attribute}" if binding.attribute else "")
    return Finding(binding.id, ERROR, TERMINOLOGY,
                   f"{shown} n'appartient pas au jeu de valeurs {binding.jdv} ({binding.oid})", where, line_of(el))


def _member(binding: Binding, value_set: ValueSet, el: etree._Element) -> bool:
    if binding.attribute:
        code = el.get(binding.attribute)
        if code is None:
            return True
    else:
        code = " ".join(text_of(el).split())
    system = el.get("codeSystem") if binding.with_system and binding.attribute == "code" else None
    return value_set.contains(code, norm_system(system) if system else None)


def check_terminology(doc: etree._Element, terminology: Terminology,
                      bindings: tuple[Binding, ...] = BINDINGS, ctx: RuleContext | None = None) -> list[Finding]:
    """Check the bindings. With the rules layer's context, its child index is reused."""
    return terminology_layer(doc, terminology, bindings, ctx)[0]


def terminology_layer(doc: etree._Element, terminology: Terminology, bindings: tuple[Binding, ...] = BINDINGS,
                      ctx: RuleContext | None = None) -> tuple[list[Finding], list[LayerPart]]:
    """The layer's findings, and one part per value set: checked (how many elements) or not loaded."""
    compiled = _compiled(terminology, bindings)
    ctx = ctx if ctx is not None and ctx.doc is doc else RuleContext(doc)
    findings: list[Finding] = []
    children = ctx.all
    walked: list[list[etree._Element]] = [[doc]]
    for parent, step in compiled.prefixes[1:]:
        above = walked[parent]
        walked.append([child for node in above for child in children(node, step)] if above else above)
    checked: dict[str, int] = {}
    failed: dict[str, int] = {}
    for binding, value_set, target in compiled.targets:
        for el in walked[target]:
            if el.get("nullFlavor") is not None:
                continue
            checked[binding.oid] = checked.get(binding.oid, 0) + 1
            if not _member(binding, value_set, el):
                failed[binding.oid] = failed.get(binding.oid, 0) + 1
                findings.append(_violation(binding, el))
    if compiled.missing:
        names = ", ".join(f"{name} ({oid})" for oid, name in compiled.missing.items())
        findings.append(Finding("valueset-not-loaded", INFO, TERMINOLOGY,
                                f"jeux de valeurs non chargés, les éléments de l'en-tête qui en relèvent n'ont "
                                f"pas été vérifiés : {names}"))
    parts: list[LayerPart] = []
    for binding, value_set, _steps in compiled.active:
        if any(p.name.endswith(f"({binding.oid})") for p in parts):
            continue
        n, bad = checked.get(binding.oid, 0), failed.get(binding.oid, 0)
        origin = value_set.origin
        parts.append(LayerPart(f"{binding.jdv} ({binding.oid})", FAILED if bad else PASSED,
                               f"{n} élément(s) vérifié(s), {bad} hors du jeu de valeurs ; {origin}"))
    for oid, name in compiled.missing.items():
        parts.append(LayerPart(f"{name} ({oid})", NOT_RUN, "jeu de valeurs non chargé : éléments non vérifiés"))
    return findings, parts


def missing_value_sets(terminology: Terminology, bindings: tuple[Binding, ...] = BINDINGS) -> dict[str, str]:
    """Value sets the bindings and the rules need and the configuration does not give (oid -> name)."""
    out = dict(_compiled(terminology, bindings).missing)
    out.update({oid: name for oid, name in RULE_VALUE_SETS.items() if oid not in terminology})
    return out


def rule_value_set_parts(terminology: Terminology) -> list[LayerPart]:
    """The value sets the structuration-minimale rules read (JDV_J07 for ClinicalDocument/code)."""
    out: list[LayerPart] = []
    for oid, name in RULE_VALUE_SETS.items():
        value_set = terminology.get(oid)
        if value_set is None:
            out.append(LayerPart(f"{name} ({oid})", NOT_RUN, "jeu de valeurs non chargé : le code du document "
                                 "(ClinicalDocument/code) n'a pas été vérifié"))
        else:
            origin = value_set.origin
            out.append(LayerPart(f"{name} ({oid})", PASSED, f"lu par la structuration minimale ; {origin}"))
    return out


def missing_rule_value_sets(terminology: Terminology) -> list[Finding]:
    return [Finding("valueset-not-loaded", INFO, TERMINOLOGY,
                    f"jeu de valeurs {name} ({oid}) non chargé : l'appartenance de ClinicalDocument/code n'a "
                    "pas été vérifiée")
            for oid, name in RULE_VALUE_SETS.items() if oid not in terminology]
