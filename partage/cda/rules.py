"""Layer 2: Partage's own CI-SIS "structuration minimale" rules for the CDA header.

Written by the project from the CI-SIS specification (not generated from the ANS
schematrons): a table of rules, each with a stable id, checking the tree by direct
element navigation (no XPath compilation per document, no walk of the body). Rule ids
follow the vocabulary of the negative corpus (expected.json) where it names one.

Each rule is a generator of Issues; `check_rules` turns them into Findings. Messages are
French, like the ANS schematrons' (docs/cda-rules.md, "Language of the reports"); rule ids
and titles are identifiers and documentation, in English.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Protocol

from lxml import etree

from ..terminology.svs import ValueSet
from .constants import (
    BINARY_MEDIA_TYPES,
    CONFIDENTIALITY_SYSTEM,
    CUSTODIAN_ROOTS,
    HL7,
    INS_ROOTS,
    MEDIA_MAGIC,
    NONXML_MEDIA_TYPES,
    TEMPLATE_CISIS,
    TEMPLATE_HL7_FRANCE,
    TEMPLATE_XDS_SD,
    TYPE_ID_EXTENSION,
    TYPE_ID_ROOT,
    VS_TYPE_CODE,
)
from .findings import ERROR, INFO, RULES, WARNING, Finding
from .locate import child_path, elements, line_of, text_of, xpath_of

_H = f"{{{HL7}}}"
_NONE: list[etree._Element] = []   # shared empty answer of RuleContext.all (callers only read it)

# HL7 data-type syntaxes (the uid / oid / ts forms of the CDA R2 data types).
_OID = re.compile(r"[0-2](\.(0|[1-9]\d*))*\Z")
_UUID = re.compile(r"[A-Fa-f\d]{8}-[A-Fa-f\d]{4}-[A-Fa-f\d]{4}-[A-Fa-f\d]{4}-[A-Fa-f\d]{12}\Z")
_RUID = re.compile(r"[A-Za-z][A-Za-z\d\-]*\Z")
_TS = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,4})?)?)?)?)?)?([+-]\d{4})?\Z")
_TS_PREFIX = re.compile(r"\d{4}")
_INT = re.compile(r"[1-9]\d*\Z")
_TELECOM_SCHEMES = ("tel", "fax", "mailto", "http", "ftp", "mllp")   # as the CI-SIS lists them
_TELECOM_USES = frozenset({"H", "HP", "HV", "WP", "DIR", "PUB", "EC", "MC", "PG"})
_ADDR_USES = frozenset({"H", "HP", "HV", "WP", "TMP"})
_NAME_QUALIFIERS = frozenset({"BR", "CL"})
_CONFIDENTIALITY = frozenset({"N", "R", "V"})
_B64_WS = b" \t\r\n"


def is_uid(value: str) -> bool:
    return bool(_OID.match(value) or _UUID.match(value) or _RUID.match(value))


def is_oid(value: str) -> bool:
    return bool(_OID.match(value))


def is_ts(value: str) -> bool:
    return bool(_TS.match(value))


class ValueSetSource(Protocol):
    """Where rules read value sets from (the terminology layer's Terminology)."""

    def get(self, oid: str) -> ValueSet | None: ...


@dataclass(frozen=True, slots=True)
class Issue:
    message: str
    location: str
    line: int | None
    rule: str = ""          # set by checks that report several rule ids


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: str
    title: str
    check: Callable[[RuleContext], Iterator[Issue]]


class RuleContext:
    """The ClinicalDocument with its children indexed by local name (one pass, shared by rules)."""

    __slots__ = ("doc", "children", "terminology", "_cache", "_buckets")

    def __init__(self, doc: etree._Element, terminology: ValueSetSource | None = None) -> None:
        self.doc = doc
        self.terminology = terminology
        self._cache: dict[str, object] = {}
        self._buckets: dict[etree._Element, dict[str, list[etree._Element]]] = {}
        index: dict[str, list[etree._Element]] = {}
        for child in doc.iterchildren(tag=etree.Element):
            tag = child.tag
            if tag.startswith(_H):
                index.setdefault(tag[len(_H):], []).append(child)
        self.children = index

    @property
    def buckets(self) -> dict[etree._Element, dict[str, list[etree._Element]]]:
        """The child index built so far ({element: {local name: [hl7 children]}}), to share."""
        return self._buckets

    def kids(self, name: str) -> list[etree._Element]:
        return self.children.get(name, [])

    def present(self, name: str) -> list[etree._Element]:
        """Children of that name without a nullFlavor (what the CI-SIS counts as "given")."""
        return [e for e in self.children.get(name, []) if e.get("nullFlavor") is None]

    # child lookups: each element's children are bucketed by name once, then dict lookups -
    def _bucket(self, el: etree._Element) -> dict[str, list[etree._Element]]:
        bucket = self._buckets.get(el)
        if bucket is None:
            bucket = self._buckets[el] = {}
            n = len(_H)
            for child in el.iterchildren(tag=etree.Element):
                tag = child.tag
                if tag.startswith(_H):
                    bucket.setdefault(tag[n:], []).append(child)
        return bucket

    def all(self, el: etree._Element | None, name: str) -> list[etree._Element]:
        """The hl7 children of `el` with that local name ([] when el is None; do not modify)."""
        if el is None:
            return _NONE
        bucket = self._buckets.get(el)
        if bucket is None:
            bucket = self._bucket(el)
        return bucket.get(name, _NONE)

    def one(self, el: etree._Element | None, path: str) -> etree._Element | None:
        """The first element at a relative path of hl7 steps written a/b/c, or None."""
        buckets = self._buckets
        for step in path.split("/"):
            if el is None:
                return None
            bucket = buckets.get(el)
            if bucket is None:
                bucket = self._bucket(el)
            found = bucket.get(step)
            el = found[0] if found else None
        return el

    # shared lookups, computed once per document --------------------------------------
    @property
    def patient_role(self) -> etree._Element | None:
        if "role" not in self._cache:
            self._cache["role"] = self.one(_first(self.present("recordTarget")), "patientRole")
        return self._cache["role"]  # type: ignore[return-value]

    @property
    def patient(self) -> etree._Element | None:
        if "patient" not in self._cache:
            self._cache["patient"] = self.one(self.patient_role, "patient")
        return self._cache["patient"]  # type: ignore[return-value]

    @property
    def has_ins(self) -> bool:
        if "ins" not in self._cache:
            self._cache["ins"] = any(i.get("root") in INS_ROOTS for i in self.all(self.patient_role, "id"))
        return self._cache["ins"]  # type: ignore[return-value]

    # Issue builders -------------------------------------------------------------------
    def at(self, el: etree._Element, message: str, attribute: str = "", rule: str = "") -> Issue:
        path = xpath_of(el)
        return Issue(message, f"{path}/@{attribute}" if attribute else path, line_of(el), rule)

    def missing(self, parent: etree._Element | None, step: str, message: str, rule: str = "") -> Issue:
        return Issue(message, child_path(parent, step), line_of(parent), rule)


def _attr(el: etree._Element | None, name: str) -> str | None:
    return el.get(name) if el is not None else None


RULE_TABLE: dict[str, Rule] = {}
CHECKS: list[tuple[str, Callable[[RuleContext], Iterator[Issue]]]] = []


Check = Callable[["RuleContext"], Iterator[Issue]]


def rule(rule_id: str, title: str, severity: str = ERROR,
         also: dict[str, tuple[str, str]] | None = None) -> Callable[[Check], Check]:
    """Register a check under a stable rule id (the id is the contract, the code may change).

    `also` declares further ids (id -> (title, severity)) the same check reports through
    Issue.rule, when one pass over the elements serves several rules.
    """
    def register(fn: Check) -> Check:
        RULE_TABLE[rule_id] = Rule(rule_id, severity, title, fn)
        for other, (other_title, other_severity) in (also or {}).items():
            RULE_TABLE[other] = Rule(other, other_severity, other_title, fn)
        CHECKS.append((rule_id, fn))
        return fn
    return register


def _required_attribute(ctx: RuleContext, el: etree._Element, what: str, name: str,
                        valid: Callable[[str], bool], invalid: str) -> Iterator[Issue]:
    """`el/@name` is given and `valid`; `invalid` says what a bad value is not."""
    value = el.get(name)
    if not value:
        yield ctx.at(el, f"{what} : @{name} est obligatoire", name)
    elif not valid(value):
        yield ctx.at(el, f"{what} : @{name} « {value} » {invalid}", name)


def _ii_issues(ctx: RuleContext, el: etree._Element, what: str, need_extension: bool = False) -> Iterator[Issue]:
    if el.get("nullFlavor") is not None and el.get("root") is None:
        return
    yield from _required_attribute(ctx, el, what, "root", is_uid, "n'est ni un OID, ni un UUID, ni un RUID")
    if need_extension and not el.get("extension"):
        yield ctx.at(el, f"{what} : @extension est obligatoire", "extension")
    elif el.get("extension") is not None and not el.get("extension"):
        yield ctx.at(el, f"{what} : @extension ne doit pas être vide", "extension")


def _once(ctx: RuleContext, found: list[etree._Element], step: str, missing: str, label: str,
          parent: etree._Element | None = None, why: str = "") -> Generator[Issue, None, etree._Element | None]:
    """An element the document must carry exactly once: the issue for its absence (at `step`
    under `parent`, the document by default) or its repetition; then the first one, if any."""
    if not found:
        yield ctx.missing(ctx.doc if parent is None else parent, step, missing)
        return None
    if len(found) > 1:
        yield ctx.at(found[1], f"{label} ne doit figurer qu'une fois{why}")
    return found[0]


def _exactly_one_id(ctx: RuleContext, owner: etree._Element, what: str, need_extension: bool = False) -> Iterator[Issue]:
    """`owner` (named `what` in messages) carries exactly one id given (no nullFlavor), well-formed."""
    ids = [i for i in ctx.all(owner, "id") if i.get("nullFlavor") is None]
    if len(ids) != 1:
        yield ctx.missing(owner, "hl7:id", f"{what} doit porter exactement un id")
    for el in ids:
        yield from _ii_issues(ctx, el, f"{what}/id", need_extension)


# --- document identity -------------------------------------------------------------------

@rule("realm-not-fr", "exactly one realmCode, with code FR")
def _realm(ctx: RuleContext) -> Iterator[Issue]:
    realms = ctx.kids("realmCode")
    if not realms:
        yield ctx.missing(ctx.doc, "hl7:realmCode", "realmCode est obligatoire et doit valoir « FR »")
    for el in realms:
        if el.get("code") != "FR":
            yield ctx.at(el, f"realmCode doit valoir « FR » ; trouvé : « {el.get('code', '')} »", "code")
    if len(realms) > 1:
        yield ctx.at(realms[1], "realmCode ne doit figurer qu'une fois")


@rule("missing-typeId", "typeId root 2.16.840.1.113883.1.3, extension POCD_HD000040")
def _type_id(ctx: RuleContext) -> Iterator[Issue]:
    type_ids = ctx.kids("typeId")
    if not type_ids:
        yield ctx.missing(ctx.doc, "hl7:typeId", "typeId (root 2.16.840.1.113883.1.3, extension "
                          "POCD_HD000040) est obligatoire")
        return
    el = type_ids[0]
    if el.get("root") != TYPE_ID_ROOT or el.get("extension") != TYPE_ID_EXTENSION:
        yield ctx.at(el, f"typeId doit avoir la racine {TYPE_ID_ROOT} et l'extension {TYPE_ID_EXTENSION} ; trouvé : "
                     f"« {el.get('root', '')} » / « {el.get('extension', '')} »")
    if len(type_ids) > 1:
        yield ctx.at(type_ids[1], "typeId ne doit figurer qu'une fois")


def _template(ctx: RuleContext, root: str, label: str) -> Iterator[Issue]:
    found = [t for t in ctx.kids("templateId") if t.get("root") == root]
    yield from _once(ctx, found, f"hl7:templateId[@root='{root}']", f"le templateId {label} {root} est obligatoire",
                     f"le templateId {label} {root}")


@rule("missing-hl7fr-templateId", "templateId 2.16.840.1.113883.2.8.2.1 (HL7 France), once")
def _template_hl7fr(ctx: RuleContext) -> Iterator[Issue]:
    yield from _template(ctx, TEMPLATE_HL7_FRANCE, "HL7 France")


@rule("missing-cisis-templateId", "templateId 1.2.250.1.213.1.1.1.1 (CI-SIS), once")
def _template_cisis(ctx: RuleContext) -> Iterator[Issue]:
    yield from _template(ctx, TEMPLATE_CISIS, "CI-SIS")


@rule("missing-model-templateId", "a document-model templateId besides the two generic ones")
def _template_model(ctx: RuleContext) -> Iterator[Issue]:
    others = [t for t in ctx.kids("templateId") if t.get("root") not in (TEMPLATE_CISIS, TEMPLATE_HL7_FRANCE)]
    if not others:
        yield ctx.missing(ctx.doc, "hl7:templateId", "un templateId désignant le modèle de document (volet) "
                          "est obligatoire en plus de 2.16.840.1.113883.2.8.2.1 et 1.2.250.1.213.1.1.1.1")
    for t in others:
        yield from _ii_issues(ctx, t, "templateId")


def _carried_once(tag: str, what: str, missing: str,
                  check_value: Callable[[RuleContext, etree._Element, str], Iterator[Issue]]) -> Check:
    """The check of a header element carried once (`missing` when absent) whose value
    `check_value` reads, its messages naming it `what`."""
    def check(ctx: RuleContext) -> Iterator[Issue]:
        el = yield from _once(ctx, ctx.present(tag), f"hl7:{tag}", missing, what)
        if el is not None:
            yield from check_value(ctx, el, what)
    return check


rule("missing-id", "ClinicalDocument/id, once, with a uid root")(_carried_once(
    "id", "ClinicalDocument/id", "l'identifiant du document (ClinicalDocument/id) est obligatoire",
    _ii_issues))


def _coded_attributes(ctx: RuleContext, el: etree._Element, what: str, display: bool = True) -> Iterator[Issue]:
    if not el.get("code"):
        yield ctx.at(el, f"{what} : @code est obligatoire", "code")
    yield from _required_attribute(ctx, el, what, "codeSystem", is_oid, "n'est pas un OID")
    if display and not el.get("displayName"):
        yield ctx.at(el, f"{what} : @displayName est obligatoire", "displayName")


rule("missing-code", "ClinicalDocument/code with @code, @codeSystem (OID) and @displayName")(_carried_once(
    "code", "ClinicalDocument/code", "le code du type de document (ClinicalDocument/code) est obligatoire",
    _coded_attributes))


@rule("code-not-in-typecode-jdv", "ClinicalDocument/code in JDV_J07_XdsTypeCode_CISIS")
def _code_in_jdv(ctx: RuleContext) -> Iterator[Issue]:
    codes = ctx.present("code")
    if not codes or not codes[0].get("code"):
        return
    el = codes[0]
    code, system = el.get("code", ""), el.get("codeSystem", "")
    value_set = ctx.terminology.get(VS_TYPE_CODE) if ctx.terminology is not None else None
    if value_set is None:
        return   # reported once by the profile as "value set not configured"
    if not value_set.contains(code, system):
        yield ctx.at(el, f"le code du type de document {code} ({system}) n'appartient pas au jeu de valeurs "
                     f"{value_set.name or VS_TYPE_CODE} ({VS_TYPE_CODE})", "code")


def _title_not_empty(ctx: RuleContext, title: etree._Element, _what: str) -> Iterator[Issue]:
    if not text_of(title).strip():
        yield ctx.at(title, "le titre du document ne doit pas être vide")


def _value_given(ctx: RuleContext, el: etree._Element, what: str) -> Iterator[Issue]:
    if not el.get("value"):
        yield ctx.at(el, f"{what}/@value est obligatoire", "value")


def _system_and_display_given(ctx: RuleContext, el: etree._Element, what: str) -> Iterator[Issue]:
    for name in ("codeSystem", "displayName"):
        if not el.get(name):
            yield ctx.at(el, f"{what} : @{name} est obligatoire", name)


rule("missing-title", "ClinicalDocument/title, once, not empty")(_carried_once(
    "title", "title", "le titre du document (title) est obligatoire", _title_not_empty))
rule("missing-effectiveTime", "ClinicalDocument/effectiveTime with a TS @value")(_carried_once(
    "effectiveTime", "effectiveTime", "la date de création du document (effectiveTime) est obligatoire",
    _value_given))
rule("missing-confidentialityCode", "confidentialityCode with @code, @codeSystem, @displayName")(_carried_once(
    "confidentialityCode", "confidentialityCode", "confidentialityCode est obligatoire", _system_and_display_given))


@rule("bad-confidentialityCode", "confidentialityCode N, R or V of 2.16.840.1.113883.5.25")
def _confidentiality_value(ctx: RuleContext) -> Iterator[Issue]:
    codes = ctx.present("confidentialityCode")
    if not codes:
        return
    el = codes[0]
    code, system = el.get("code", ""), el.get("codeSystem", "")
    if code not in _CONFIDENTIALITY:
        yield ctx.at(el, f"confidentialityCode doit valoir N, R ou V ; trouvé : « {code} »", "code")
    elif system and system != CONFIDENTIALITY_SYSTEM:
        yield ctx.at(el, f"le codeSystem de confidentialityCode doit être {CONFIDENTIALITY_SYSTEM} ; trouvé : « {system} »",
                     "codeSystem")


@rule("missing-languageCode", "languageCode with @code")
def _language_present(ctx: RuleContext) -> Iterator[Issue]:
    yield from _once(ctx, ctx.present("languageCode"), "hl7:languageCode", "languageCode est obligatoire",
                     "languageCode")


@rule("languageCode-not-fr", "languageCode fr-FR")
def _language_fr(ctx: RuleContext) -> Iterator[Issue]:
    codes = ctx.present("languageCode")
    if codes and codes[0].get("code") != "fr-FR":
        yield ctx.at(codes[0], f"languageCode doit valoir « fr-FR » ; trouvé : « {codes[0].get('code', '')} »", "code")


rule("missing-setId", "setId, once, with a uid root")(_carried_once(
    "setId", "setId", "setId (identifiant commun à toutes les versions du document) est obligatoire",
    _ii_issues))


def _positive_integer(ctx: RuleContext, el: etree._Element, what: str) -> Iterator[Issue]:
    value = el.get("value", "")
    if not _INT.match(value):
        yield ctx.at(el, f"{what}/@value doit être un entier positif ; trouvé : « {value} »", "value")


rule("missing-versionNumber", "versionNumber, once, a positive integer")(_carried_once(
    "versionNumber", "versionNumber", "versionNumber est obligatoire", _positive_integer))


@rule("ts-invalid", "header dates start with at least a 4-digit year (HL7 TS)",
      also={"ts-malformed": ("header dates are well-formed HL7 TS: YYYY[MM[DD[HH[MM[SS]]]]][+/-ZZZZ]", WARNING)})
def _timestamps(ctx: RuleContext) -> Iterator[Issue]:
    for el, what in _header_times(ctx):
        value = el.get("value")
        if value is None or el.get("nullFlavor") is not None or is_ts(value):
            continue
        if not _TS_PREFIX.match(value):
            yield ctx.at(el, f"{what} : « {value} » n'est pas une date au format HL7 TS", "value")
        else:
            yield ctx.at(el, f"{what} : « {value} » n'est pas une date HL7 TS bien formée (AAAAMMJJ[HHMM[SS]][+/-ZZZZ]) ; "
                         "son fuseau horaire risque d'être mal lu", "value", rule="ts-malformed")


_TIME_OWNERS = (("author", ("time",)), ("legalAuthenticator", ("time",)), ("authenticator", ("time",)),
                ("documentationOf", ("serviceEvent", "effectiveTime")),
                ("componentOf", ("encompassingEncounter", "effectiveTime")))


def _header_times(ctx: RuleContext) -> Iterator[tuple[etree._Element, str]]:
    """The header's point-in-time values (not the body's), with a label for messages."""
    for el in ctx.kids("effectiveTime"):
        yield el, "effectiveTime"
    birth = ctx.one(ctx.patient, "birthTime")
    if birth is not None:
        yield birth, "patient/birthTime"
    for owner, steps in _TIME_OWNERS:
        for parent in ctx.kids(owner):
            nodes = [parent]
            for step in steps:
                nodes = [c for n in nodes for c in ctx.all(n, step)]
            label = owner + "/" + "/".join(steps)
            for el in nodes:
                yield el, label
                for bound in ("low", "high"):
                    for b in ctx.all(el, bound):
                        yield b, label


def _first(items: list[etree._Element]) -> etree._Element | None:
    return items[0] if items else None


# --- patient -------------------------------------------------------------------------------

@rule("missing-recordTarget", "exactly one recordTarget/patientRole/patient")
def _record_target(ctx: RuleContext) -> Iterator[Issue]:
    target = yield from _once(ctx, ctx.present("recordTarget"), "hl7:recordTarget",
                              "recordTarget (le patient) est obligatoire", "recordTarget",
                              why=" (un seul patient par document)")
    if target is None:
        return
    roles = ctx.all(target, "patientRole")
    if len(roles) != 1 or ctx.patient is None:
        yield ctx.missing(target, "hl7:patientRole/hl7:patient", "recordTarget doit contenir un patientRole avec un patient")


@rule("missing-patient-id", "patientRole/id with @root and @extension",
      also={"ins-nir-key": ("an INS-NIR carries a valid control key", WARNING)})
def _patient_ids(ctx: RuleContext) -> Iterator[Issue]:
    role = ctx.patient_role
    if role is None:
        return
    ids = [i for i in ctx.all(role, "id") if i.get("nullFlavor") is None]
    if not ids:
        yield ctx.missing(role, "hl7:id", "le patient doit avoir au moins un identifiant (patientRole/id)")
    for el in ids:
        yield from _ii_issues(ctx, el, "patientRole/id", need_extension=True)
        if el.get("root") in _NIR_ROOTS and not _nir_key_ok(el.get("extension", "")):
            yield ctx.at(el, f"l'INS-NIR « {el.get('extension', '')} » n'a pas 13 caractères suivis d'une clé de "
                         "contrôle valide à 2 chiffres", "extension", rule="ins-nir-key")


_NIR_ROOTS = frozenset({"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.10"})


def _nir_key_ok(value: str) -> bool:
    if len(value) != 15 or not value[13:].isdigit():
        return False
    body = value[:13].upper().replace("2A", "19").replace("2B", "18")
    return body.isdigit() and 97 - int(body) % 97 == int(value[13:])


@rule("patient-name-missing", "patient/name with family and given",
      also={"patient-name-qualifier": ("family/@qualifier BR (birth name) or CL (used name); given "
                                       "@qualifier BR or CL", ERROR)})
def _patient_name(ctx: RuleContext) -> Iterator[Issue]:
    patient = ctx.patient
    if patient is None:
        return
    names = [n for n in ctx.all(patient, "name") if n.get("nullFlavor") is None]
    first = yield from _once(ctx, names, "hl7:name", "le nom du patient (patient/name) est obligatoire", "patient/name",
                             parent=patient)
    if first is None:
        return
    families = [f for f in ctx.all(first, "family") if f.get("nullFlavor") is None]
    givens = [g for g in ctx.all(first, "given") if g.get("nullFlavor") is None]
    if not families:
        yield ctx.missing(first, "hl7:family", "le nom de famille du patient (family) est obligatoire")
    if not givens:
        yield ctx.missing(first, "hl7:given", "le prénom du patient (given) est obligatoire")
    for name in names:
        for fam in ctx.all(name, "family"):
            if fam.get("nullFlavor") is not None:
                continue
            qualifier = fam.get("qualifier")
            if qualifier is None:
                yield ctx.at(fam, "le nom de famille du patient doit porter @qualifier : BR (nom de naissance) ou CL (nom utilisé)",
                             rule="patient-name-qualifier")
            elif qualifier not in _NAME_QUALIFIERS:
                yield ctx.at(fam, f"le @qualifier du nom de famille du patient doit valoir BR (nom de naissance) ou CL "
                             f"(nom utilisé) ; trouvé : « {qualifier} »", "qualifier", rule="patient-name-qualifier")
        for giv in ctx.all(name, "given"):
            qualifier = giv.get("qualifier")
            if qualifier is not None and qualifier not in _NAME_QUALIFIERS:
                yield ctx.at(giv, f"le @qualifier du prénom du patient doit valoir BR ou CL ; trouvé : « {qualifier} »",
                             "qualifier", rule="patient-name-qualifier")


# INS identity traits (CI-SIS): birth name, first birth given name, birth given names, birth
# date, birth place (INSEE COG code) and sex, required when the patient id is an INS.
_INS_TRAITS = {
    "ins-without-birthTime": ("hl7:birthTime", "date de naissance"),
    "ins-without-birthName": ("hl7:name/hl7:family[@qualifier='BR']", "nom de naissance"),
    "ins-without-firstGivenName": ("hl7:name/hl7:given[@qualifier='BR']", "premier prénom de l'acte de naissance"),
    "ins-without-givenNames": ("hl7:name/hl7:given[not(@qualifier)]", "prénoms de l'acte de naissance"),
    "ins-without-birthplace": ("hl7:birthplace/hl7:place/hl7:addr/hl7:county", "lieu de naissance (code COG)"),
    "ins-without-gender": ("hl7:administrativeGenderCode", "sexe"),
}


@rule("missing-patient-birthTime", "patient/birthTime (non-INS patients; INS: ins-without-birthTime)",
      also={"missing-patient-gender": ("patient/administrativeGenderCode with @code", ERROR),
            **{rid: (f"INS patient: {step}", ERROR) for rid, (step, _) in _INS_TRAITS.items()}})
def _patient_traits(ctx: RuleContext) -> Iterator[Issue]:
    patient = ctx.patient
    if patient is None:
        return
    birth = gender = county = None
    families: list[etree._Element] = []
    givens: list[etree._Element] = []
    for el in patient.iterchildren(tag=etree.Element):
        tag = el.tag
        if tag == _H + "birthTime":
            birth = el
        elif tag == _H + "administrativeGenderCode":
            gender = el
        elif tag == _H + "name":
            families.extend(el.iterchildren(_H + "family"))
            givens.extend(el.iterchildren(_H + "given"))
        elif tag == _H + "birthplace":
            county = ctx.one(el, "place/addr/county")
    if gender is None:
        yield ctx.missing(patient, "hl7:administrativeGenderCode", "le sexe du patient (administrativeGenderCode) est obligatoire",
                          rule="missing-patient-gender")
    elif not gender.get("code") and gender.get("nullFlavor") is None:
        yield ctx.at(gender, "administrativeGenderCode/@code est obligatoire", "code", rule="missing-patient-gender")
    if not ctx.has_ins:
        if birth is None:
            yield ctx.missing(patient, "hl7:birthTime", "la date de naissance du patient (birthTime) est obligatoire")
        return
    present = {
        "ins-without-birthTime": birth is not None and bool(birth.get("value")),
        "ins-without-birthName": any(f.get("qualifier") == "BR" for f in families),
        "ins-without-firstGivenName": any(g.get("qualifier") == "BR" for g in givens),
        "ins-without-givenNames": any(g.get("qualifier") is None for g in givens),
        "ins-without-birthplace": county is not None,
        "ins-without-gender": gender is not None and bool(gender.get("code")),
    }
    for rule_id, ok in present.items():
        if not ok:
            step, what = _INS_TRAITS[rule_id]
            yield ctx.missing(patient, step, f"le patient est identifié par son INS : le trait d'identité « {what} » est "
                              f"obligatoire ({step})", rule=rule_id)


# --- participants --------------------------------------------------------------------------

@rule("missing-author", "at least one author with assignedAuthor")
def _author(ctx: RuleContext) -> Iterator[Issue]:
    authors = [a for a in ctx.present("author") if ctx.one(a, "assignedAuthor") is not None]
    if not authors:
        yield ctx.missing(ctx.doc, "hl7:author", "au moins un auteur (author avec assignedAuthor) est obligatoire")


@rule("author-incomplete", "author: time, assignedAuthor/id (root, extension), a person name or a device")
def _author_content(ctx: RuleContext) -> Iterator[Issue]:
    for author in ctx.present("author"):
        assigned = ctx.one(author, "assignedAuthor")
        if assigned is None:
            continue
        times = ctx.all(author, "time")
        if len(times) != 1:
            yield ctx.missing(author, "hl7:time", "author/time est obligatoire, une seule fois")
        elif times[0].get("nullFlavor") is None and not times[0].get("value"):
            yield ctx.at(times[0], "author/time/@value est obligatoire", "value")
        ids = ctx.all(assigned, "id")
        if not ids:
            yield ctx.missing(assigned, "hl7:id", "assignedAuthor/id est obligatoire")
        for el in ids:
            if el.get("nullFlavor") is None:
                yield from _ii_issues(ctx, el, "assignedAuthor/id", need_extension=True)
        person, device = ctx.one(assigned, "assignedPerson"), ctx.one(assigned, "assignedAuthoringDevice")
        if person is not None and device is not None:
            yield ctx.at(device, "un auteur est une personne ou un dispositif, pas les deux")
        if person is not None and len([n for n in ctx.all(person, "name") if ctx.one(n, "family") is not None]) != 1:
            yield ctx.missing(person, "hl7:name/hl7:family", "assignedPerson doit porter un nom (name) avec un nom de famille (family)")
        if device is not None:
            for part in ("manufacturerModelName", "softwareName"):
                if ctx.one(device, part) is None:
                    yield ctx.missing(device, f"hl7:{part}", f"assignedAuthoringDevice/{part} est obligatoire")


@rule("missing-custodian", "custodian/assignedCustodian/representedCustodianOrganization/id")
def _custodian(ctx: RuleContext) -> Iterator[Issue]:
    custodians = [c for c in ctx.present("custodian") if ctx.one(c, "assignedCustodian") is not None]
    custodian = yield from _once(ctx, custodians, "hl7:custodian",
                                 "custodian (l'organisation qui conserve le document) est obligatoire", "custodian")
    if custodian is None:
        return
    org = ctx.one(custodian, "assignedCustodian/representedCustodianOrganization")
    if org is None:
        yield ctx.missing(ctx.one(custodian, "assignedCustodian"), "hl7:representedCustodianOrganization",
                          "custodian doit contenir un representedCustodianOrganization")
        return
    yield from _exactly_one_id(ctx, org, "representedCustodianOrganization")


@rule("custodian-bad-id-root", "custodian organisation id root 1.2.250.1.71.4.2.2 or 1.2.250.1.213.4.1")
def _custodian_root(ctx: RuleContext) -> Iterator[Issue]:
    for custodian in ctx.present("custodian"):
        org = ctx.one(custodian, "assignedCustodian/representedCustodianOrganization")
        for el in ctx.all(org, "id"):
            if el.get("nullFlavor") is None and el.get("root") not in CUSTODIAN_ROOTS:
                yield ctx.at(el, f"la racine de l'identifiant de l'organisation custodian doit être 1.2.250.1.71.4.2.2 "
                             f"(structure de santé) ou 1.2.250.1.213.4.1 (hébergeur du DMP) ; trouvé : "
                             f"« {el.get('root', '')} »", "root")


@rule("missing-legalAuthenticator", "legalAuthenticator with signatureCode S, once")
def _legal(ctx: RuleContext) -> Iterator[Issue]:
    legal = ctx.kids("legalAuthenticator")
    signed = [el for el in legal if _attr(ctx.one(el, "signatureCode"), "code") == "S"]
    if not legal:
        yield ctx.missing(ctx.doc, "hl7:legalAuthenticator", "legalAuthenticator (le signataire du document) est obligatoire")
    elif not signed:
        yield ctx.missing(legal[0], "hl7:signatureCode[@code='S']", "legalAuthenticator/signatureCode doit valoir « S »")
    elif len(legal) > 1:
        yield ctx.at(legal[1], "legalAuthenticator ne doit figurer qu'une fois")


@rule("legalAuthenticator-incomplete", "legalAuthenticator: time, assignedEntity/id (root, extension), name")
def _legal_content(ctx: RuleContext) -> Iterator[Issue]:
    for legal in ctx.kids("legalAuthenticator"):
        time = ctx.one(legal, "time")
        if time is None:
            yield ctx.missing(legal, "hl7:time", "legalAuthenticator/time est obligatoire")
        elif time.get("nullFlavor") is None and not time.get("value"):
            yield ctx.at(time, "legalAuthenticator/time/@value est obligatoire", "value")
        entities = ctx.all(legal, "assignedEntity")
        if len(entities) != 1:
            yield ctx.missing(legal, "hl7:assignedEntity", "legalAuthenticator doit contenir un assignedEntity")
            continue
        yield from _exactly_one_id(ctx, entities[0], "legalAuthenticator/assignedEntity", need_extension=True)
        person = ctx.one(entities[0], "assignedPerson")
        if person is not None and len([n for n in ctx.all(person, "name")
                                       if n.get("nullFlavor") is None and ctx.one(n, "family") is not None]) != 1:
            yield ctx.missing(person, "hl7:name/hl7:family", "le signataire (legalAuthenticator) doit porter un nom avec un nom de famille (family)")


@rule("missing-documentationOf", "documentationOf/serviceEvent; the first one with one performer and effectiveTime")
def _documentation_of(ctx: RuleContext) -> Iterator[Issue]:
    docs = [d for d in ctx.present("documentationOf") if ctx.one(d, "serviceEvent") is not None]
    if not docs:
        yield ctx.missing(ctx.doc, "hl7:documentationOf/hl7:serviceEvent",
                          "documentationOf/serviceEvent (l'acte principal) est obligatoire")
        return
    first = ctx.kids("documentationOf")[0]
    event = ctx.one(first, "serviceEvent")
    if event is None:
        yield ctx.missing(first, "hl7:serviceEvent", "le premier documentationOf doit contenir un serviceEvent")
        return
    if len(ctx.all(event, "performer")) != 1:
        yield ctx.missing(event, "hl7:performer", "l'acte principal (premier serviceEvent) doit avoir exactement un performer")
    if len(ctx.all(event, "effectiveTime")) != 1:
        yield ctx.missing(event, "hl7:effectiveTime", "l'acte principal (premier serviceEvent) doit avoir exactement un effectiveTime")


def _given_in_each(ctx: RuleContext, owner: str, child: str) -> Iterator[etree._Element]:
    """The `child` of each header `owner` present, where it is given (no nullFlavor)."""
    for parent in ctx.present(owner):
        el = ctx.one(parent, child)
        if el is not None and el.get("nullFlavor") is None:
            yield el


@rule("serviceEvent-incomplete", "serviceEvent: effectiveTime/low, performer PRF with assignedEntity/representedOrganization")
def _service_events(ctx: RuleContext) -> Iterator[Issue]:
    for event in _given_in_each(ctx, "documentationOf", "serviceEvent"):
        for interval in ctx.all(event, "effectiveTime"):
            if interval.get("nullFlavor") is None and ctx.one(interval, "low") is None:
                yield ctx.missing(interval, "hl7:low", "serviceEvent/effectiveTime doit avoir une borne de début (low)")
        for performer in ctx.all(event, "performer"):
            if performer.get("typeCode") == "PRF" and ctx.one(performer, "assignedEntity") is not None:
                if ctx.one(performer, "assignedEntity/representedOrganization") is None:
                    yield ctx.missing(ctx.one(performer, "assignedEntity"), "hl7:representedOrganization",
                                      "l'exécutant (performer) de l'acte principal doit porter son representedOrganization")


@rule("relatedDocument-invalid", "relatedDocument: at most one RPLC, parentDocument with one id")
def _related(ctx: RuleContext) -> Iterator[Issue]:
    related = ctx.kids("relatedDocument")
    replaces = [r for r in related if r.get("typeCode") == "RPLC"]
    if len(replaces) > 1:
        yield ctx.at(replaces[1], "un document en remplace au plus un (un seul relatedDocument RPLC)")
    for rel in related:
        if rel.get("typeCode") not in ("RPLC", "APND", "XFRM"):
            yield ctx.at(rel, f"relatedDocument/@typeCode doit valoir RPLC, APND ou XFRM ; trouvé : "
                         f"« {rel.get('typeCode', '')} »", "typeCode")
        parent = ctx.one(rel, "parentDocument")
        if parent is None:
            yield ctx.missing(rel, "hl7:parentDocument", "relatedDocument doit contenir un parentDocument")
            continue
        yield from _exactly_one_id(ctx, parent, "parentDocument")


@rule("missing-componentOf", "componentOf/encompassingEncounter, once")
def _component_of(ctx: RuleContext) -> Iterator[Issue]:
    comps = [c for c in ctx.present("componentOf") if ctx.one(c, "encompassingEncounter") is not None]
    yield from _once(ctx, comps, "hl7:componentOf",
                     "componentOf/encompassingEncounter (la prise en charge) est obligatoire", "componentOf")


@rule("encounter-incomplete", "encompassingEncounter: effectiveTime, location/healthCareFacility/code")
def _encounter(ctx: RuleContext) -> Iterator[Issue]:
    for enc in _given_in_each(ctx, "componentOf", "encompassingEncounter"):
        if len(ctx.all(enc, "effectiveTime")) != 1:
            yield ctx.missing(enc, "hl7:effectiveTime", "encompassingEncounter/effectiveTime est obligatoire, une seule fois")
        for ident in ctx.all(enc, "id"):
            yield from _ii_issues(ctx, ident, "encompassingEncounter/id")
        facility = ctx.one(enc, "location/healthCareFacility")
        if facility is None or facility.get("nullFlavor") is not None:
            yield ctx.missing(enc, "hl7:location/hl7:healthCareFacility",
                              "encompassingEncounter/location/healthCareFacility est obligatoire")
            continue
        codes = [c for c in ctx.all(facility, "code") if c.get("nullFlavor") is None]
        if len(codes) != 1:
            yield ctx.missing(facility, "hl7:code", "healthCareFacility/code (cadre d'exercice) est obligatoire, une seule fois")
        else:
            yield from _coded_attributes(ctx, codes[0], "healthCareFacility/code")


# --- communication data in the header -----------------------------------------------------

# Header telecoms and addresses (the body has its own rules): a descendant scan is faster in
# libxml2 than a walk in Python; the checks are then on a few dozen elements.
_HEADER_TELECOMS = etree.XPath("*[not(self::hl7:component)]/descendant::hl7:telecom", namespaces={"hl7": HL7})
_HEADER_ADDRS = etree.XPath("*[not(self::hl7:component)]/descendant::hl7:addr[@use]", namespaces={"hl7": HL7})


@rule("telecom-invalid", "header telecom: scheme:value (tel, fax, mailto, http, ftp, mllp) or nullFlavor",
      also={"addr-invalid": ("header addr/@use: H, HP, HV, WP or TMP", ERROR)})
def _communication(ctx: RuleContext) -> Iterator[Issue]:
    for el in elements(_HEADER_TELECOMS(ctx.doc)):
        value, null, use = el.get("value"), el.get("nullFlavor"), el.get("use")
        if (value is None) == (null is None):
            yield ctx.at(el, "telecom doit porter soit @value, soit @nullFlavor (exactement l'un des deux)")
            continue
        if value is not None:
            scheme, _, rest = value.partition(":")
            if scheme not in _TELECOM_SCHEMES or not rest:
                yield ctx.at(el, f"telecom « {value} » n'est pas de la forme schéma:adresse, avec un schéma tel, fax, "
                             "mailto, http, ftp ou mllp", "value")
        if use is not None and use not in _TELECOM_USES:
            yield ctx.at(el, f"telecom/@use « {use} » ne fait pas partie de {', '.join(sorted(_TELECOM_USES))}", "use")
    for el in elements(_HEADER_ADDRS(ctx.doc)):
        use = el.get("use")
        if use not in _ADDR_USES:
            yield ctx.at(el, f"addr/@use « {use} » ne fait pas partie de H, HP, HV, WP, TMP", "use", rule="addr-invalid")


# --- body ----------------------------------------------------------------------------------

def _body(ctx: RuleContext) -> tuple[etree._Element | None, etree._Element | None]:
    component = _first(ctx.kids("component"))
    if component is None:
        return None, None
    return component, _first([c for c in component.iterchildren(_H + "structuredBody", _H + "nonXMLBody")])


@rule("missing-body", "one component with a structuredBody or a nonXMLBody")
def _body_present(ctx: RuleContext) -> Iterator[Issue]:
    component = yield from _once(ctx, ctx.kids("component"), "hl7:component",
                                 "le corps du document (component) est obligatoire", "component")
    if component is not None and _body(ctx)[1] is None:
        yield ctx.missing(component, "hl7:structuredBody", "component doit contenir un structuredBody ou un nonXMLBody")


@rule("nonxml-templateIds", "nonXMLBody documents carry exactly the three templateIds (HL7 France, CI-SIS, XDS-SD)")
def _nonxml_templates(ctx: RuleContext) -> Iterator[Issue]:
    _, body = _body(ctx)
    roots = [t.get("root") for t in ctx.kids("templateId")]
    if body is None or body.tag != _H + "nonXMLBody":
        return
    expected = {TEMPLATE_HL7_FRANCE, TEMPLATE_CISIS, TEMPLATE_XDS_SD}
    if TEMPLATE_XDS_SD not in roots:
        yield ctx.missing(ctx.doc, f"hl7:templateId[@root='{TEMPLATE_XDS_SD}']",
                          f"un document non structuré (nonXMLBody) doit porter le templateId {TEMPLATE_XDS_SD} (XDS-SD)")
    elif len(roots) != 3 or set(roots) != expected:
        extra = sorted(set(r or "" for r in roots) - expected)
        yield ctx.at(ctx.kids("templateId")[0], "un document non structuré porte exactement les templateIds "
                     f"{TEMPLATE_HL7_FRANCE}, {TEMPLATE_CISIS} et {TEMPLATE_XDS_SD}"
                     + (f" ; retirer {', '.join(extra)}" if extra else ""))


def _nonxml_text(ctx: RuleContext) -> etree._Element | None:
    _, body = _body(ctx)
    if body is None or body.tag != _H + "nonXMLBody":
        return None
    return ctx.one(body, "text")


@rule("nonxml-bad-mediaType", "nonXMLBody/text/@mediaType: application/pdf, text/plain, text/rtf, image/jpeg, image/tiff")
def _nonxml_media(ctx: RuleContext) -> Iterator[Issue]:
    _, body = _body(ctx)
    if body is None or body.tag != _H + "nonXMLBody":
        return
    text = ctx.one(body, "text")
    if text is None:
        yield ctx.missing(body, "hl7:text", "nonXMLBody/text (le contenu du document) est obligatoire")
        return
    media = text.get("mediaType", "")
    if media not in NONXML_MEDIA_TYPES:
        yield ctx.at(text, f"nonXMLBody/text/@mediaType « {media} » n'est pas un format accepté "
                     f"({', '.join(sorted(NONXML_MEDIA_TYPES))})", "mediaType")


@rule("nonxml-not-base64", "nonXMLBody/text: inline content, base64 (B64) for binary formats, decodable")
def _nonxml_payload(ctx: RuleContext) -> Iterator[Issue]:
    text = _nonxml_text(ctx)
    if text is None:
        return
    reference = ctx.one(text, "reference")
    if reference is not None:
        yield ctx.at(reference, "nonXMLBody/text doit contenir le document lui-même, pas une référence (reference)")
        return
    media, representation = text.get("mediaType", ""), text.get("representation", "TXT")
    if media in BINARY_MEDIA_TYPES and representation != "B64":
        yield ctx.at(text, f"un corps {media} doit être encodé en base64 (representation='B64')", "representation")
        return
    payload = (text.text or "").encode("ascii", "replace") if representation == "B64" else None
    if payload is None:
        if not (text.text or "").strip():
            yield ctx.at(text, "nonXMLBody/text est vide")
        return
    try:
        decoded = binascii.a2b_base64(payload.translate(None, _B64_WS), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        yield ctx.at(text, f"nonXMLBody/text est déclaré B64 mais n'est pas du base64 valide (message du décodeur : {exc})")
        return
    if not decoded:
        yield ctx.at(text, "nonXMLBody/text est vide")
        return
    magic = MEDIA_MAGIC.get(media)
    if magic and not decoded.startswith(magic):
        yield ctx.at(text, f"le contenu décodé n'a pas la signature d'un fichier {media}", "mediaType")


def check_rules(doc: etree._Element, terminology: ValueSetSource | None = None, only: set[str] | None = None,
                ctx: RuleContext | None = None) -> list[Finding]:
    """Run the rule table on a ClinicalDocument element (`only`: a subset of rule ids)."""
    ctx = ctx if ctx is not None and ctx.doc is doc else RuleContext(doc, terminology)
    findings: list[Finding] = []
    for default_id, check in CHECKS:
        for issue in check(ctx):
            rule_id = issue.rule or default_id
            if only is not None and rule_id not in only:
                continue
            r = RULE_TABLE[rule_id]
            findings.append(Finding(rule_id, r.severity, RULES, issue.message, issue.location, issue.line))
    return findings


def auto_presentable_finding(doc: etree._Element) -> Finding:
    return Finding("auto-presentable", INFO, RULES, "document auto-présentable : le ClinicalDocument inclus "
                   "dans la feuille xsl:stylesheet a été validé", xpath_of(doc), line_of(doc))
