"""What the professional's page shows, built from one read of the record (the synthesis of
`partage.query.clinical.summary_content`): the identity strip, the volet de synthèse,
allergies, current treatments, the latest result of each analyte grouped by panel with its
trend, and the timeline of documents. Presentation only: every fact here was read through
the one gate by the query flow.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ..metadata.datatypes import XPN, DatatypeError
from ..metadata.model import DocumentEntry
from ..query.clinical import FactRow
from ..registry.patients import PatientRecord
from ..terminology.labels import (
    CRITICALITY_SYSTEM,
    GENDER_SYSTEM,
    INTERPRETATION_SYSTEM,
    LOINC,
    Labels,
)
from . import formatting as fmt

ABNORMAL = {"H", "HH", "L", "LL", "A", "AA", "HU", "LU", ">", "<", "POS", "R"}
ASIP_TERMINOLOGY = "1.2.250.1.213.1.1.4.322"   # TA_ASIP: GEN-* codes are placeholders ("Autre(s) traitement(s)")
_PLACEHOLDER = re.compile(r"texte libre|^autres? traitements?|^aucun traitement", re.IGNORECASE)
WEIGHT, HEIGHT, BMI = "29463-7", "8302-2", "39156-5"


@dataclass
class Identity:
    name: str
    sex: str = ""              # F, M, UN, ''
    sex_label: str = ""
    birth: str = ""            # dd/mm/yyyy
    age: str = ""
    ins: list[tuple[str, str]] = field(default_factory=list)
    medecin_traitant: str = ""
    vitals: list[tuple[str, str, str]] = field(default_factory=list)   # (label, value, date)

    @property
    def born_word(self) -> str:
        return {"F": "née", "M": "né"}.get(self.sex, "né(e)")


@dataclass
class ResultLine:
    label: str
    full_name: str
    code: str
    system: str
    value: str
    flag: str = ""            # French label of an abnormal interpretation
    flag_note: str = ""
    trend: str = ""           # ↗ ↘ →
    trend_title: str = ""
    reference: str = ""
    date: str = ""
    sort: str = ""
    seq: int = 0
    count: int = 1            # values in the history


@dataclass
class Panel:
    name: str
    lines: list[ResultLine]


@dataclass
class Treatment:
    name: str
    dose: str
    since: str
    document: DocumentEntry


@dataclass
class Allergy:
    agent: str
    kind: str
    criticality: str
    reaction: str
    since: str


@dataclass
class Synthesis:
    document: DocumentEntry | None
    problems: list[FactRow]
    history: list[FactRow]
    from_synthesis: bool


@dataclass
class Glance:
    identity: Identity
    synthesis: Synthesis
    allergies: list[Allergy]
    treatments: list[Treatment]
    panels: list[Panel]
    incomplete: bool


# --- identity ------------------------------------------------------------------------------------
def identity(record: PatientRecord, labels: Labels, medecin_traitant: str, documents: list[DocumentEntry],
             vitals: list[FactRow], today: date) -> Identity:
    """Name, sex, birth date and age from the identity feed (ITI-8 demographics, or the FHIR
    Patient a client stored), the INS among the patient's identifiers."""
    demo = record.demographics
    stored = demo.get("fhir") if isinstance(demo.get("fhir"), dict) else None
    family = given = sex = birth_text = ""
    if stored is not None:
        name = (stored.get("name") or [{}])[0]
        family, given = name.get("family", ""), " ".join(name.get("given", []))
        sex = {"female": "F", "male": "M", "other": "UN", "unknown": ""}.get(stored.get("gender", ""), "")
        birth_text = stored.get("birthDate", "")
    else:
        try:
            xpn = XPN.parse(demo.get("name") or "") if demo.get("name") else XPN()
        except DatatypeError:
            xpn = XPN()
        family, given = xpn.family_name, xpn.given_name
        sex = {"F": "F", "M": "M", "U": "", "O": "UN", "A": "UN"}.get(demo.get("sex") or "", "")
        birth_text = demo.get("birth_date") or ""
    born = fmt.birth_date(birth_text)
    out = Identity(name=" ".join(p for p in (family.upper(), given) if p), sex=sex,
                   sex_label=labels(GENDER_SYSTEM, sex) if sex else "",
                   birth=born.strftime("%d/%m/%Y") if born else "", age=fmt.age(born, today) if born else "")
    for cx in record.identifiers:
        labelled = fmt.ins(cx)
        if labelled is not None:
            out.ins.append(labelled)
    if medecin_traitant:
        named = next((a.person for d in documents for a in d.authors
                      if a.person is not None and a.person.id_number == medecin_traitant
                      and (a.person.family_name or a.person.given_name)), None)
        out.medecin_traitant = fmt.person(named) if named else fmt.professional_id(medecin_traitant)
    latest: dict[str, FactRow] = {}
    for f in vitals:
        latest.setdefault(f.code, f)
    for code, label in ((WEIGHT, "Poids"), (HEIGHT, "Taille"), (BMI, "IMC")):
        if code in latest and latest[code].value_num is not None:
            f = latest[code]
            out.vitals.append((label, fmt.quantity(f.value_num, f.unit), fmt.day(f.effective)))
    return out


# --- results ---------------------------------------------------------------------------------------
def analyte_key(f: FactRow) -> tuple[str, str]:
    return (f.code_system, f.code or f.display)


def _num(text: str) -> float | None:
    value, _unit = fmt.split_quantity(text)
    try:
        return float(value)
    except ValueError:
        return None


def reference(f: FactRow) -> str:
    """"7–12 mg/L", "< 4,2 mUI/L", or the range's own words."""
    low_v, low_u = fmt.split_quantity(f.ref_low)
    high_v, high_u = fmt.split_quantity(f.ref_high)
    shown_unit = fmt.unit(high_u or low_u)
    if low_v and high_v:
        return f"{fmt.number(low_v)}–{fmt.number(high_v)} {shown_unit}".strip()
    if high_v:
        return f"< {fmt.number(high_v)} {shown_unit}".strip()
    if low_v:
        return f"> {fmt.number(low_v)} {shown_unit}".strip()
    return f.ref_text


def value_text(f: FactRow) -> str:
    if f.value_num is not None:
        raw = f.value_text if f.value_text and f.value_text.split()[0].replace(".", "", 1).lstrip("-").isdigit() \
            else f.value_num
        return fmt.quantity(raw.split()[0] if isinstance(raw, str) else raw, f.unit)
    return fmt.result_text(f.value_text)


def flag(f: FactRow, labels: Labels) -> tuple[str, str]:
    """(label, note) when the result is out of range: the lab's interpretation, else its
    reference range (then the note says so); ("", "") otherwise."""
    code = f.interpretation
    if code in ABNORMAL:
        return labels(INTERPRETATION_SYSTEM, code, code), "interprétation du laboratoire"
    if f.value_num is not None:
        low, high = _num(f.ref_low), _num(f.ref_high)
        if high is not None and f.value_num > high:
            return labels(INTERPRETATION_SYSTEM, "H", "Élevé"), "au-dessus des valeurs de référence"
        if low is not None and f.value_num < low:
            return labels(INTERPRETATION_SYSTEM, "L", "Bas"), "au-dessous des valeurs de référence"
    return "", ""


def trend(series: list[FactRow]) -> tuple[str, str]:
    """The arrow of the latest value against the previous one (series newest first)."""
    latest = series[0]
    previous = next((f for f in series[1:] if f.value_num is not None and f.effective < latest.effective), None)
    if latest.value_num is None or previous is None or previous.value_num is None:
        return "", ""
    if fmt.unit(previous.unit) != fmt.unit(latest.unit):   # 10 mg/L then 1,1 mg/dL: not comparable as numbers
        return "", ""
    arrow = "↗" if latest.value_num > previous.value_num else "↘" if latest.value_num < previous.value_num else "→"
    return arrow, f"précédent : {value_text(previous)} le {fmt.day(previous.effective)}"


def panel_of(f: FactRow) -> str:
    name = str(f.detail.get("panel") or f.detail.get("section") or "").strip().rstrip(" :").strip()
    return name[:1].upper() + name[1:].lower() if name.isupper() else (name or "Autres résultats")


def panels(labs: list[FactRow], labels: Labels) -> list[Panel]:
    """One line per analyte (its latest value), grouped by panel; panels newest first."""
    series: dict[tuple[str, str], list[FactRow]] = {}
    for f in labs:   # newest first
        series.setdefault(analyte_key(f), []).append(f)
    grouped: dict[str, list[ResultLine]] = {}
    for (system, _code_or_name), values in series.items():
        latest = values[0]
        flag_label, flag_note = flag(latest, labels)
        arrow, arrow_title = trend(values)
        grouped.setdefault(panel_of(latest), []).append(ResultLine(
            label=fmt.short_label(latest.display or latest.code), full_name=latest.display or latest.code,
            code=latest.code, system=system, value=value_text(latest), flag=flag_label, flag_note=flag_note,
            trend=arrow, trend_title=arrow_title, reference=reference(latest), date=fmt.day(latest.effective),
            sort=fmt.sort_key(latest.effective), seq=latest.seq,
            count=sum(1 for v in values if v.value_num is not None) or len(values)))
    out = []
    for name, lines in grouped.items():
        lines.sort(key=lambda line: line.seq)
        lines.sort(key=lambda line: line.sort[:8], reverse=True)
        labels_seen: dict[str, int] = {}
        for line in lines:
            labels_seen[line.label] = labels_seen.get(line.label, 0) + 1
        for line in lines:   # two lines saying the same: their specimens (else full names) tell them apart
            if labels_seen[line.label] > 1:
                where = fmt.specimen(line.full_name)
                line.label = f"{line.label} ({where})" if where else line.full_name
        out.append(Panel(name, lines))
    out.sort(key=lambda p: max(line.sort for line in p.lines), reverse=True)
    return out


# --- treatments, allergies, synthesis -------------------------------------------------------------
def _folded(text: str) -> str:
    plain = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return " ".join(plain.casefold().split())


def is_placeholder(f: FactRow) -> bool:
    """An entry that says there is something without saying what ("Autre(s) traitement(s)")."""
    if f.code_system == ASIP_TERMINOLOGY and f.code.startswith("GEN-"):
        return True
    return bool(_PLACEHOLDER.search(f.display or "")) or not (f.display or f.code)


def treatments(current: list[FactRow]) -> list[Treatment]:
    """Current treatments, one per product (its newest mention), placeholders left out."""
    seen: set[str] = set()
    out: list[Treatment] = []
    for f in current:
        if is_placeholder(f):
            continue
        keys = {_folded(f.display)} | ({f"{f.code_system}|{f.code}"} if f.code else set())
        if keys & seen:
            continue
        seen |= keys
        parts = []
        if f.detail.get("dose"):
            parts.append(fmt.stored_quantity(str(f.detail["dose"])))
        if f.detail.get("route"):
            parts.append(str(f.detail["route"]).lower())
        text = str(f.detail.get("text") or "")
        if text and not _folded(text).startswith(_folded(f.display)):
            parts.append(text)
        since = f"depuis le {fmt.day(f.effective)}" if f.effective else \
            f"prescrit le {fmt.day(f.document.creation_time)}" if f.document.creation_time else ""
        out.append(Treatment(f.display or f.code, ", ".join(p for p in parts if p), since, f.document))
    return out


def allergies(facts: list[FactRow], labels: Labels) -> list[Allergy]:
    seen: set[str] = set()
    out: list[Allergy] = []
    for f in facts:
        key = _folded(f.display or f.code)
        if key in seen:
            continue
        seen.add(key)
        kind = str((f.detail.get("type") or {}).get("display") or "")
        crit = str(f.detail.get("criticality") or "")
        crit_words = str(f.detail.get("criticality_display") or "") or crit
        reaction = str((f.detail.get("reaction") or {}).get("display") or "")
        out.append(Allergy(agent=f.display or f.code, kind=kind,
                           criticality=labels(CRITICALITY_SYSTEM, crit, crit_words).lower() if crit else "",
                           reaction=reaction, since=fmt.day(f.effective)))
    return out


def synthesis(content: dict[str, Any]) -> Synthesis:
    """The latest synthesis document and what it says of the problems; without one, the
    problems every document gives as active."""
    doc: DocumentEntry | None = content["synthesis"]
    problems: list[FactRow] = content["problems"]
    if doc is not None:
        lid = doc.lid or doc.entry_uuid
        own = [f for f in problems if (f.document.lid or f.document.entry_uuid) == lid]
        return Synthesis(doc, [f for f in own if f.status not in ("resolved", "inactive", "remission")],
                         [f for f in own if f.status in ("resolved", "inactive", "remission")], True)
    return Synthesis(None, [f for f in problems if f.status in ("active", "recurrence", "relapse")], [], False)


def build(content: dict[str, Any], record: PatientRecord, labels: Labels, medecin_traitant: str,
          today: date) -> Glance:
    return Glance(identity=identity(record, labels, medecin_traitant, content["documents"], content["vitals"], today),
                  synthesis=synthesis(content), allergies=allergies(content["48765-2"], labels),
                  treatments=treatments(content["10160-0"]), panels=panels(content["labs"], labels),
                  incomplete=bool(content["incomplete"]))


# --- the timeline ----------------------------------------------------------------------------------
def document_type(doc: DocumentEntry, labels: Labels) -> str:
    code = doc.type_code
    if code is None:
        return ""
    return code.display or labels(code.scheme or LOINC, code.code, code.code)


@dataclass
class TimelineRow:
    document: DocumentEntry
    day: str
    title: str
    type_label: str
    authors: str
    pdf: bool

    @property
    def day_key(self) -> str:
        """yyyymmdd of the day shown (Paris), for the date filters."""
        return "".join(reversed(self.day.split("/"))) if self.day.count("/") == 2 else ""


def timeline(documents: list[DocumentEntry], labels: Labels) -> list[TimelineRow]:
    """The timeline's rows, each written once (the template only prints them)."""
    return [TimelineRow(d, fmt.day(d.creation_time), d.title or "Document", document_type(d, labels), authors(d),
                        (d.mime_type or "") == "application/pdf") for d in documents]


def filtered(rows: list[TimelineRow], *, type_code: str = "", class_code: str = "", author: str = "",
             low: str = "", high: str = "") -> list[TimelineRow]:
    """The rows the timeline's filters keep: a type, a class, an author (any part of the name as
    shown, or of the id), days from `low` to `high` (yyyymmdd, both included, as the page shows
    them). Applied to the documents already read for this actor: no second read."""
    wanted = _folded(author)
    out = []
    for r in rows:
        d = r.document
        if type_code and (d.type_code is None or d.type_code.code != type_code):
            continue
        if class_code and (d.class_code is None or d.class_code.code != class_code):
            continue
        if wanted and wanted not in _folded(r.authors) and not any(
                a.person is not None and wanted in _folded(a.person.id_number) for a in d.authors):
            continue
        if (low or high) and not r.day_key:
            continue
        if (low and r.day_key < low) or (high and r.day_key > high):
            continue
        out.append(r)
    return out


def authors(doc: DocumentEntry) -> str:
    names = []
    for author in doc.authors:
        name = fmt.person(author.person) if author.person and (author.person.family_name or
                                                               author.person.given_name) else ""
        if not name and author.institutions:
            name = author.institutions[0].organization_name
        if name and name not in names:
            names.append(name)
    return ", ".join(names)
